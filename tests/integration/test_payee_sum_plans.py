"""The reads of a payee's rewards in a program, which lost their index (program, payee_id) in revision 0012, read
the payee's rewards and filter the program, on both databases, before any statistics exist: never the walk of all
of a program's rewards through ``ix_rewards_program_id`` (on SQLite, the payee's index ``ix_rewards_payee_id`` is
read). The rewards of some events in a program are read through the events' index in the same way.

Each function runs for real; the statements it sent are explained with their parameters (SQLite: ``EXPLAIN QUERY
PLAN``; PostgreSQL: ``EXPLAIN`` with sequential scans priced out, so that the plan shows which index the planner
rates best).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from plans import plans
from sqlalchemy import Connection, inspect

from payhub import reports
from payhub.db.schema import rewards
from payhub.runtime import Runtime
from payhub.store import gift_totals
from payhub.store import rewards as reward_store


@pytest.fixture
def runtime(make_runtime: Any) -> Runtime:
    rt: Runtime = make_runtime("")
    return rt


SINCE, UNTIL = datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 19, tzinfo=UTC)  # not whole months: read rewards


@pytest.mark.parametrize("call", [
    pytest.param(lambda conn: reward_store.scope_total(conn, "bonus", "EUR", "payee", "p1", SINCE, UNTIL),
                 id="scope_total in a period"),
    pytest.param(lambda conn: reward_store.total(conn, "bonus", "p1", "EUR", SINCE), id="total since"),
    pytest.param(lambda conn: gift_totals.rewarded_to(conn, ["p1"], "EUR", SINCE, UNTIL, ["bonus"]),
                 id="gift cap of one payee in one program"),
    pytest.param(lambda conn: gift_totals.rewarded_to(conn, ["p1", "p2"], "EUR", SINCE, UNTIL, ["bonus", "spiff"]),
                 id="gift cap of payees in programs"),
    pytest.param(lambda conn: list(reports.rewards(conn, payee="p1", program="bonus", limit=51)), id="listing"),
    pytest.param(lambda conn: list(reports.rewards(conn, payee="p1", program="bonus", after=100, limit=51)),
                 id="listing, next page"),
    pytest.param(lambda conn: list(reports.rewards(conn, payee="p1", program="bonus", limit=51, newest_first=True,
                                                   before=100)), id="listing, newest first"),
])
def test_a_payees_rewards_in_a_program_are_read_by_payee(runtime: Runtime, call: Callable[[Connection], Any]) -> None:
    for plan in plans(runtime, call, rewards.name):
        assert "ix_rewards_program" not in plan, plan  # never the walk of the program's rewards
        if runtime.engine.dialect.name == "sqlite":  # PostgreSQL may rate the events of the period first
            assert "ix_rewards_payee_id" in plan, plan


def test_the_rewards_of_events_in_a_program_are_read_by_event(runtime: Runtime) -> None:
    [plan] = plans(runtime, lambda conn: reward_store.live_of_events(conn, "bonus", [1, 2, 3]), rewards.name)
    assert "ix_rewards_program" not in plan, plan
    assert "ix_rewards_event" in plan, plan


def test_the_sums_of_a_whole_program_still_read_it_by_program(runtime: Runtime) -> None:
    [plan] = plans(runtime, lambda conn: reward_store.scope_total(conn, "bonus", "EUR", "program", None, SINCE,
                                                                   UNTIL), rewards.name)
    assert "ix_rewards_program_id" in plan, plan


def test_the_index_of_program_and_payee_is_gone_and_the_payees_is_there(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn:
        found = {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes("rewards")}
    assert "ix_rewards_program_payee" not in found
    assert found["ix_rewards_payee_id"] == ["payee_id", "id"]
