"""The plans of the statements a call sends, for tests that pin which index a query reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, event

from payhub.runtime import Runtime


@contextmanager
def sent(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``conn`` sends meanwhile, with their parameters."""
    found: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        found.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", record)
    try:
        yield found
    finally:
        event.remove(conn, "before_cursor_execute", record)


def plans(rt: Runtime, call: Callable[[Connection], Any], table: str) -> list[str]:
    """The plans of the statements on ``table`` that ``call`` sends, each as one line."""
    with rt.engine.connect() as conn, sent(conn) as statements:
        call(conn)
    found = []
    with rt.engine.connect() as conn:  # a connection of its own: ``call`` may have set its to stream results
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in statements:
            if table in statement:
                rows = conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement,
                                            parameters)
                found.append(" / ".join(str(row[-1]) for row in rows))
        conn.rollback()
    assert found, "the call sent no statement on " + table
    return found
