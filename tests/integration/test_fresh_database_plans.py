"""Reads of the pipeline that the planner of a fresh database (no statistics: SQLite's, and PostgreSQL's before its
first ANALYZE, as in a first backlog) could turn into walks of whole tables, once per batch, read by key instead:

* the calculate stage's claim looks for an earlier waiting event of each claimed event's CRM object through the
  object's index ``ix_events_object``, never down the source's index ``ix_events_source_id`` (source, id), which
  reads every earlier event of the source for each event (PostgreSQL: 1.5 s per claim of 2,000 events at 10,000
  events, growing with the backlog);
* the check before each send reads its payouts' items, their rewards and the rewards' entries by their keys, never a
  hash of every reward and of every reward's entries (PostgreSQL: 45 ms per 500 payouts at 60,000 reward entries,
  growing with the log).

Each function runs for real; the statements it sent are explained (see :mod:`plans`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from plans import plans
from sqlalchemy import Connection

from payhub.db.queries import driver_sql, marks
from payhub.pipeline import presend
from payhub.runtime import Runtime
from payhub.store import events as event_store

HORIZON = datetime(2026, 3, 5, tzinfo=UTC)


@pytest.fixture
def runtime(make_runtime: Any) -> Runtime:
    rt: Runtime = make_runtime("")
    return rt


def test_the_claim_reads_earlier_events_of_an_object_by_object(runtime: Runtime) -> None:
    [plan] = plans(runtime, lambda conn: event_store.claim_ingested(conn, HORIZON, 2000), "earlier")
    assert "ix_events_object" in plan, plan
    assert "ix_events_source_id" not in plan, plan
    if runtime.engine.dialect.name == "sqlite":  # the object's earlier events only, bound by the id
        assert "ix_events_object (source=? AND object_type=? AND object_id=? AND rowid<?)" in plan, plan


def _check_reads(conn: Connection) -> None:
    """The statements of the check before a send (:func:`payhub.pipeline.presend._read`), for three payouts."""
    for sql, keys in ((presend._PAYOUT_ENTRIES, ["1", "2", "3"]), (presend._ITEMS, [1, 2, 3]),
                      (presend._REWARDS, [1, 2, 3]), (presend._REWARD_ENTRIES, ["1", "2", "3"])):
        conn.exec_driver_sql(driver_sql(conn, sql.format(marks(len(keys)))), tuple(keys)).all()


def test_the_check_before_a_send_reads_by_key(runtime: Runtime) -> None:
    found = plans(runtime, _check_reads, "FROM")
    assert len(found) == 4
    for plan in found:  # one table each, through an index on the keys given (SQLite: one SEARCH line)
        assert "Join" not in plan and "Nested Loop" not in plan and " / SEARCH" not in plan, plan
        assert "SCAN" not in plan and "Seq Scan" not in plan and "ix_audit_action" not in plan, plan
