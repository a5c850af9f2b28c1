"""SOQL text: literals, and the incremental query every stream runs.

Every query has the same shape, so that it can resume from any position without a gap::

    SELECT <fields> FROM <object>
    WHERE <stream condition> [AND (<admin's where>)]                     -- where: on event streams only
      AND SystemModstamp >= <mark>                                       -- a new sync, or
      AND (SystemModstamp > <ts> OR (SystemModstamp = <ts> AND Id > '<id>'))  -- resuming after (ts, id)
    ORDER BY SystemModstamp ASC, Id ASC
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime


def quote(value: str) -> str:
    """A SOQL string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def datetime_literal(moment: datetime) -> str:
    """A SOQL dateTime literal in UTC, to the second (Salesforce stores date-times to the second)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: object) -> datetime | None:
    """A Salesforce dateTime (``2026-05-01T10:00:00.000+0000``) as aware UTC, to the second; None if unreadable."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            return None
        return moment.astimezone(UTC).replace(microsecond=0)
    except (ValueError, OverflowError):  # unreadable, or off the calendar once moved to UTC
        return None


def parse_date(value: object) -> date | None:
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def unique(fields: Iterable[str]) -> list[str]:
    """Fields in order, each once (SOQL refuses duplicates; field names are case-insensitive)."""
    seen: set[str] = set()
    out: list[str] = []
    for field in fields:
        if field.lower() not in seen:
            seen.add(field.lower())
            out.append(field)
    return out


def incremental(sobject: str, fields: Sequence[str], conditions: Sequence[str], mark: datetime | None,
                after: tuple[datetime, str] | None) -> str:
    """The stream's query from ``after`` (a position within a sync) or else from ``mark`` (inclusive)."""
    where = [c for c in conditions if c.strip()]
    if after is not None:
        ts = datetime_literal(after[0])
        where.append(f"(SystemModstamp > {ts} OR (SystemModstamp = {ts} AND Id > {quote(after[1])}))")
    elif mark is not None:
        where.append(f"SystemModstamp >= {datetime_literal(mark)}")
    text = f"SELECT {', '.join(fields)} FROM {sobject}"
    if where:
        text += " WHERE " + " AND ".join(where)
    return text + " ORDER BY SystemModstamp ASC, Id ASC"
