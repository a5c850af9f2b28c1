"""The calculate stage's claim looks for an earlier waiting event of each claimed event's CRM object through the
object's index ``ix_events_object``, on both databases, before any statistics exist: never down the source's index
``ix_events_source_id`` (source, id), which reads every earlier event of the source for each event (on PostgreSQL
before its first ANALYZE, as in a fresh database's first backlog: 1.5 s per claim of 2,000 events at 10,000 events,
growing with the backlog).

Each function runs for real; the statements it sent are explained (see :mod:`plans`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from plans import plans

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
