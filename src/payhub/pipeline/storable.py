"""What the database can store, checked in Python before a row is written, identically on SQLite and PostgreSQL.

SQLite stores nearly anything; PostgreSQL refuses text longer than its ``VARCHAR(n)``, any NUL character, and
integers beyond 64 bits; neither driver can encode a lone surrogate (``"\\ud800"``) to UTF-8. A row that passes
:func:`problems` binds and stores on both. :func:`sanitise` turns any text into text that stores (for display
copies such as a quarantined record's raw text and its reason).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, Table, Text
from sqlalchemy import exc as sa_exc

from payhub.db.schema import UTCDateTime

TEXT_LIMIT = 1_000_000
"""The most characters a ``Text`` column takes from one value (attributes, raw text, reasons)."""

REASON_LIMIT = 2_000
"""The most characters of a stored reason (a quarantined event's, a calculation's)."""

RAW_LIMIT = 65_536
"""The most characters of a record's raw text that are kept; longer text is cut and marked with its digest."""

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Instants are stored in ``[EARLIEST, LATEST)``: wide enough for any business date, far enough from the ends of
Python's and the databases' calendars that periods, expiries and time-zone shifts computed from them never
overflow."""

INT64 = (-(2**63), 2**63 - 1)


def text_problem(value: str, limit: int | None) -> str | None:
    """Why ``value`` cannot be stored in a text column of ``limit`` characters (None: no limit), or None."""
    if "\x00" in value:
        return "holds a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"holds the unpaired surrogate U+{ord(value[exc.start]):04X}"
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long, more than the {limit} it may have"
    return None


def instant_problem(value: datetime) -> str | None:
    """Why ``value`` cannot be stored as an instant, or None."""
    if value.tzinfo is None or value.utcoffset() is None:
        return "has no time zone"
    try:
        moment = value.astimezone(UTC)
    except (OverflowError, ValueError):
        return "is outside the calendar once moved to UTC"
    if not EARLIEST <= moment < LATEST:
        return f"is outside {EARLIEST.date()} .. {LATEST.date()} (UTC)"
    return None


def column_limit(table: Table, name: str) -> int:
    """The most characters the text column ``name`` of ``table`` takes (TEXT_LIMIT for unbounded text)."""
    column_type = table.columns[name].type
    length = column_type.length if isinstance(column_type, String) else None
    return length if length is not None else TEXT_LIMIT


def value_problem(column_type: Any, value: object) -> str | None:
    """Why ``value`` cannot be stored in a column of ``column_type``, or None. None values are left to the schema."""
    if value is None:
        return None
    if isinstance(column_type, UTCDateTime | DateTime):
        if not isinstance(value, datetime):
            return f"is a {type(value).__name__}, not a date-time"
        return instant_problem(value)
    if isinstance(column_type, String | Text):  # Text is a String without length
        if not isinstance(value, str):
            return f"is a {type(value).__name__}, not text"
        limit = column_type.length if column_type.length is not None else TEXT_LIMIT
        return text_problem(value, limit)
    if isinstance(column_type, Integer | BigInteger):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"is a {type(value).__name__}, not an integer"
        if not INT64[0] <= value <= INT64[1]:
            return "does not fit in 64 bits"
    return None


@lru_cache(maxsize=64)
def _text_limits(table: Table) -> dict[str, int]:
    """The character limit of each text column of ``table``."""
    return {column.name: column_limit(table, column.name) for column in table.columns
            if isinstance(column.type, String)}


def problems(table: Table, row: Mapping[str, Any]) -> list[str]:
    """Each reason why ``row`` cannot be stored in ``table``, as ``"<column> <problem>"``; empty when it can."""
    found: list[str] = []
    limits = _text_limits(table)
    joined = "".join([value for value in row.values() if type(value) is str])
    plain = "\x00" not in joined and joined.isascii()  # the common case: only the lengths of the texts to check
    for name, value in row.items():
        if value is None:
            continue
        limit = limits.get(name)
        if limit is None or type(value) is not str:
            _check_other(table, name, value, found)
            continue
        problem = (None if len(value) <= limit else text_problem(value, limit)) if plain else text_problem(value, limit)
        if problem is not None:
            found.append(f"{name} {problem}")
    return found


def _check_other(table: Table, name: str, value: object, found: list[str]) -> None:
    column = table.columns.get(name)
    if column is None:
        found.append(f"{name} is not a column of {table.name}")
        return
    problem = value_problem(column.type, value)
    if problem is not None:
        found.append(f"{name} {problem}")


def sanitise(text: str, limit: int) -> str:
    """``text`` made storable for display: NUL and unpaired surrogates written as backslash escapes, and, beyond
    ``limit`` characters, cut and marked with its length and SHA-256 (so different long texts stay different)."""
    clean = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    mark = f"... [cut: {len(text)} characters, sha256 {digest}]"
    return clean[: max(limit - len(mark), 0)] + mark[: limit]


DATA_SQLSTATE_CLASSES = ("22", "23", "54")
"""PostgreSQL errors caused by the values written: data exception, integrity violation, program limit exceeded
(an index row too large)."""


def is_data_error(exc: BaseException) -> bool:
    """True if the database (or its driver) refused a statement for the values it was given, so that the same
    statement without the offending row would succeed. A lost connection, a lock or any other fault is not."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return False
        if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return sqlstate[:2] in DATA_SQLSTATE_CLASSES
    if isinstance(exc, sa_exc.StatementError):  # a bind processor refused a value
        return isinstance(exc.orig, ValueError | TypeError | OverflowError)
    # the drivers' own encoding: a lone surrogate (both), an integer beyond 64 bits (sqlite3)
    return isinstance(exc, UnicodeError | OverflowError)


def describe_error(exc: BaseException) -> str:
    """One line for a reason: the driver's message without the statement or its parameters, bounded."""
    orig = exc.orig if isinstance(exc, sa_exc.StatementError) and exc.orig is not None else exc
    text = " ".join(str(orig).split()) or "(no message)"
    text = text if len(text) <= 300 else text[:297] + "..."
    return sanitise(f"{type(orig).__name__}: {text}", 400)
