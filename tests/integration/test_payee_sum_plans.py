"""The reads that lost an index of their own (revision 0012) still go through an index, on both databases, before
any statistics exist: a payee's sums in a program never by walking the program's rewards (on SQLite, through the
payee's index, ``ix_rewards_payee_id``); the events of a CRM object through its id's (``ix_events_object_id``).

Each store function runs for real; the statements it sent are explained with their parameters (SQLite: ``EXPLAIN
QUERY PLAN``; PostgreSQL: ``EXPLAIN`` with sequential scans priced out, so that the plan shows which index the
planner rates best).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, event

from payhub.db.schema import rewards
from payhub.runtime import Runtime
from payhub.store import events as event_store
from payhub.store import gift_totals
from payhub.store import rewards as reward_store


@pytest.fixture
def runtime(make_runtime: Any) -> Runtime:
    rt: Runtime = make_runtime("")
    return rt


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
    with rt.engine.connect() as conn:
        with sent(conn) as statements:
            call(conn)
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")
        found = []
        for statement, parameters in statements:
            if table not in statement:
                continue
            rows = conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters)
            found.append(" / ".join(str(row[-1]) for row in rows))
        conn.rollback()
    assert found, "the call sent no statement on " + table
    return found


SINCE, UNTIL = datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 19, tzinfo=UTC)  # not whole months: read rewards


@pytest.mark.parametrize("call", [
    pytest.param(lambda conn: reward_store.scope_total(conn, "bonus", "EUR", "payee", "p1", SINCE, UNTIL),
                 id="scope_total in a period"),
    pytest.param(lambda conn: reward_store.total(conn, "bonus", "p1", "EUR", SINCE), id="total since"),
    pytest.param(lambda conn: gift_totals.rewarded_to(conn, ["p1"], "EUR", SINCE, UNTIL, ["bonus"]),
                 id="gift cap of one payee in one program"),
    pytest.param(lambda conn: gift_totals.rewarded_to(conn, ["p1", "p2"], "EUR", SINCE, UNTIL, ["bonus", "spiff"]),
                 id="gift cap of payees in programs"),
])
def test_a_payees_sums_in_a_program_read_the_payees_rewards(runtime: Runtime, call: Callable[[Connection], Any]
                                                             ) -> None:
    for plan in plans(runtime, call, rewards.name):
        assert "ix_rewards_program" not in plan, plan  # never the walk of the program's rewards
        if runtime.engine.dialect.name == "sqlite":  # PostgreSQL may rate the events of the period first
            assert "ix_rewards_payee_id" in plan, plan


def test_the_sums_of_a_whole_program_still_read_it_by_program(runtime: Runtime) -> None:
    [plan] = plans(runtime, lambda conn: reward_store.scope_total(conn, "bonus", "EUR", "program", None, SINCE,
                                                                   UNTIL), rewards.name)
    assert "ix_rewards_program_id" in plan, plan


def test_the_events_of_a_crm_object_are_read_through_its_id(runtime: Runtime) -> None:
    [plan] = plans(runtime, lambda conn: event_store.of_object(conn, "crm", "deal", "OPP-1", None), "events")
    assert "ix_events_object_id" in plan, plan


def test_the_dropped_indexes_are_gone_and_the_ones_read_instead_are_there(runtime: Runtime) -> None:
    from sqlalchemy import inspect

    with runtime.engine.connect() as conn:
        found = {table: {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes(table)}
                 for table in ("rewards", "events")}
    assert "ix_rewards_program_payee" not in found["rewards"] and "ix_events_object" not in found["events"]
    assert found["rewards"]["ix_rewards_payee_id"] == ["payee_id", "id"]
    assert found["events"]["ix_events_object_id"] == ["object_id"]
