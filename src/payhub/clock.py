"""Time is timezone-aware UTC everywhere."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from payhub.errors import InvalidRecord


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """Canonical text of a UTC instant: ``2026-01-31T09:00:00.000000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(value: object, default_tz: object = None) -> datetime:
    """Parse an ISO 8601 date or date-time into aware UTC.

    A date alone means midnight UTC. A date-time without offset takes ``default_tz`` (a tzinfo) or is refused.
    """
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
            raise InvalidRecord(f"timestamp {value!r} is not ISO 8601") from None
    else:
        raise InvalidRecord("timestamp is missing")
    if moment.tzinfo is None:
        if default_tz is None:
            raise InvalidRecord(f"timestamp {value!r} has no timezone offset")
        moment = moment.replace(tzinfo=default_tz)  # type: ignore[arg-type]
    return moment.astimezone(UTC)
