"""Time is timezone-aware UTC everywhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from payhub.errors import InvalidRecord

Period = Literal["month", "quarter", "year"]


def system_now() -> datetime:
    """The system clock, timezone-aware UTC."""
    return datetime.now(UTC)


source: Callable[[], datetime] = system_now
"""Where :func:`utcnow` reads the time: :func:`system_now`. Only ``payhub.testing.ManualClock`` replaces it (and
puts it back), so that tests can move time forward past backoffs and windows."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return source()


def isoformat(moment: datetime) -> str:
    """Canonical text of an instant in UTC: ``2026-01-31T09:00:00.000000Z``.

    An aware ``moment`` is converted to UTC; a naive one is taken as UTC already (what SQLite gives back).
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(value: object, default_tz: tzinfo | str | None = None) -> datetime:
    """Parse an ISO 8601 date or date-time into aware UTC.

    A date alone means midnight UTC. A date-time without offset is a wall time in ``default_tz`` (a tzinfo, or an
    IANA time zone name such as ``"Europe/Berlin"``) or is refused. A wall time that a daylight-saving change skips
    (a gap) or repeats (a fold) is resolved as :mod:`zoneinfo` does with ``fold=0``: with the offset in force before
    the change (a ``datetime`` passed in keeps its own ``fold``). Anything else, and a time that leaves the calendar
    once moved to UTC (``9999-12-31T23:59:59-05:00``), raises InvalidRecord. A ``default_tz`` that is not a tzinfo
    or a known zone name raises TypeError or ValueError, whatever ``value`` is.
    """
    zone = _zone(default_tz)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time(0), UTC)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRecord(f"timestamp {_shown(value)} is not ISO 8601") from None
    elif value is None or isinstance(value, str):
        raise InvalidRecord("timestamp is missing")
    else:
        raise InvalidRecord(f"timestamp must be ISO 8601 text or a date-time, not {type(value).__name__}")
    try:
        if moment.tzinfo is None or moment.utcoffset() is None:
            if zone is None:
                raise InvalidRecord(f"timestamp {_shown(value)} has no timezone offset")
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidRecord(f"timestamp {_shown(value)} is outside the calendar once moved to UTC") from None


def _zone(zone: object) -> tzinfo | None:
    """``zone`` as a tzinfo: itself, or the IANA zone it names."""
    if zone is None or isinstance(zone, tzinfo):
        return zone
    if not isinstance(zone, str):
        raise TypeError(f"default_tz must be a tzinfo or an IANA time zone name, not {type(zone).__name__}")
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"default_tz {_shown(zone)} is not an IANA time zone name (like 'Europe/Berlin')") from None


def _shown(value: object) -> str:
    """A bounded, printable form of a value for a reason."""
    text = ascii(value) if isinstance(value, str) else ascii(str(value))
    return text if len(text) <= 100 else text[:97] + "..."


def period_bounds(moment: datetime, period: Period) -> tuple[datetime, datetime, str]:
    """The calendar period (UTC) holding ``moment``: (start, end exclusive, label like ``2026-Q3``)."""
    moment = moment.astimezone(UTC)
    year = moment.year
    if period == "year":
        first, months, label = 1, 12, f"{year}"
    elif period == "quarter":
        quarter = (moment.month - 1) // 3
        first, months, label = quarter * 3 + 1, 3, f"{year}-Q{quarter + 1}"
    else:
        first, months, label = moment.month, 1, f"{year}-{moment.month:02d}"
    start = datetime(year, first, 1, tzinfo=UTC)
    end_month = first + months
    end = datetime(year + (end_month - 1) // 12, (end_month - 1) % 12 + 1, 1, tzinfo=UTC)
    return start, end, label
