"""Dialect-specific statements used by several stages."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]], key: str, *returning: Any) -> list[Any]:
    """Insert ``rows``, skipping those whose unique ``key`` exists; return ``returning`` columns of inserted rows."""
    if not rows:
        return []
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).on_conflict_do_nothing(index_elements=[key])
    if returning:
        return list(conn.execute(stmt.returning(*returning), rows))
    conn.execute(stmt, rows)
    return []


def for_update(conn: Connection, query: Select[Any]) -> Select[Any]:
    """Lock the selected rows so concurrent PostgreSQL replicas skip them; SQLite has one writer already."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query
