"""Dialect-specific statements used by several stages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Integer, Numeric, Select, Table, literal_column

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

T = TypeVar("T")

IN_LIST = 500
"""Values per ``IN (...)`` list: well under every backend's limit on bound parameters."""


def unindexed(column: ColumnElement[T]) -> ColumnElement[T]:
    """``column`` as an expression no index applies to, with the same value: ``column || ''`` for text, ``column + 0``
    for numbers.

    A condition on it filters the rows that an index on the statement's other conditions found. For a column that
    most rows share (a program) beside a selective one (a payee): a planner without statistics (SQLite's, and
    PostgreSQL's before its first ANALYZE) can rate both equally and walk all of the program's rows."""
    if isinstance(column.type, Integer | Numeric):
        return column + literal_column("0")
    return column.concat(literal_column("''"))


def in_chunks(values: Iterable[str], size: int = IN_LIST) -> Iterator[list[str]]:
    """The distinct ``values``, sorted, in lists of at most ``size`` (for ``column.in_(chunk)`` queries)."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


def insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]], key: str | Sequence[str] | None,
                  *returning: Any) -> list[Any]:
    """Insert ``rows``, skipping each one that conflicts with a stored (or concurrently inserted) row.

    ``key`` names the unique column(s) whose conflict skips a row; ``None`` skips a conflict on any unique
    constraint. On PostgreSQL a row that conflicts with another transaction's uncommitted insert waits for that
    transaction, so when this returns every skipped row's conflicting row is committed and visible to the next
    statement. Returns the ``returning`` columns of the rows actually inserted (empty without ``returning``).
    """
    if not rows:
        return []
    columns = None if key is None else [key] if isinstance(key, str) else list(key)
    stmt = dialect_insert(conn, table).on_conflict_do_nothing(index_elements=columns)
    if returning:
        return list(conn.execute(stmt.returning(*returning), rows))
    conn.execute(stmt, rows)
    return []


def dialect_insert(conn: Connection, table: Table) -> PostgresqlInsert | SqliteInsert:
    """An INSERT into ``table`` in ``conn``'s dialect (PostgreSQL's or SQLite's: with ON CONFLICT clauses); each
    dialect's module is imported when first used."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def for_update(conn: Connection, query: Select[Any]) -> Select[Any]:
    """Lock the selected rows so concurrent PostgreSQL replicas skip them; SQLite has one writer already."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


_DRIVER_SQL: dict[tuple[str, str], str] = {}


def driver_sql(conn: Connection, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, as the connection's driver takes it (``%s`` for psycopg)."""
    key = (conn.dialect.paramstyle, sql)
    found = _DRIVER_SQL.get(key)
    if found is None:
        found = _DRIVER_SQL[key] = sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")
    return found


def marks(count: int) -> str:
    """``?, ?, ...``: the placeholders of an IN list of ``count`` values."""
    return ", ".join("?" * count)


INSERT_CHUNK = 200
"""Rows per multi-row statement: each INSERT of :func:`insert_returning`, each UPDATE of the rewards scheduled into
payouts (a few thousand values: far below either database's limit on bound parameters)."""


def insert_returning(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                     returning: str) -> list[Any]:
    """Insert ``rows`` (values in the order of ``columns``) into ``table`` at the driver level, one multi-row
    ``INSERT … RETURNING returning`` per :data:`INSERT_CHUNK` rows (each chunk size compiled once); return the
    returned rows as the driver gives them. Their order is not guaranteed: match them by a returned key or sort
    them."""
    found: list[Any] = []
    row_marks = f"({marks(len(columns))})"
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start:start + INSERT_CHUNK]
        sql = driver_sql(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                               f"{', '.join([row_marks] * len(chunk))} RETURNING {returning}")
        found.extend(conn.exec_driver_sql(sql, tuple(value for row in chunk for value in row)))
    return found
