"""The daemon analyzes payhub's tables on PostgreSQL as they grow (``database.refresh_statistics``): a table is
analyzed once it holds 1,000 rows without statistics, and again each time it has changed by as many rows as it held
at its last ANALYZE; never more often than every few seconds, never on SQLite, and a failure is a warning, once."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, make_url

import payhub.db.statistics
from payhub.api import SourceRecord
from payhub.db.engine import make_engine
from payhub.db.statistics import INTERVAL_SECONDS, Statistics
from payhub.runtime import Runtime
from payhub.worker import Worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _add_events(engine: Engine, first: int, count: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO events (key, source, object_type, object_id, transition, event_type, attributes, status, "
            "ingested_at) SELECT 'k' || g, 's', 'T', g::text, 'won', 'deal_won', '{}', 'calculated', now() "
            "FROM generate_series(%s::integer, %s::integer) g", (first, first + count - 1))
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")  # the counters, seen by other sessions at once


def _analyzed(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = %s", (table,)).scalar_one())


def _eventually(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    """``check()`` once it is true: the cumulative statistics reach other sessions within about a second."""
    deadline = time.monotonic() + seconds
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@pytest.fixture
def runtime(make_runtime: Any, db_url: str) -> Runtime:
    """A migrated PostgreSQL database (the tests that use it are skipped on SQLite)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("statistics are refreshed on PostgreSQL only")
    rt: Runtime = make_runtime("")
    return rt


def test_a_table_is_analyzed_when_it_fills_and_again_when_it_doubles(runtime: Runtime) -> None:
    stats = Statistics(runtime.engine, tables=["events"])
    _add_events(runtime.engine, 1, 999)
    time.sleep(1.2)  # past the counters' flush: 999 rows are not enough
    assert stats.refresh() == []
    _add_events(runtime.engine, 1000, 1)
    assert _eventually(stats.refresh) == ["events"]
    assert _analyzed(runtime.engine, "events") == 1
    assert stats.refresh() == []  # analyzed: nothing changed since
    _add_events(runtime.engine, 1001, 999)  # 999 changes on 1,000 rows: not yet
    time.sleep(1.2)
    assert stats.refresh() == []
    _add_events(runtime.engine, 2000, 1)
    assert _eventually(stats.refresh) == ["events"]
    assert _analyzed(runtime.engine, "events") == 2


def test_it_looks_at_most_every_few_seconds_and_only_when_enabled(runtime: Runtime) -> None:
    clock = Clock()
    stats = Statistics(runtime.engine, clock=clock, tables=["events"])
    off = Statistics(runtime.engine, enabled=False, clock=clock, tables=["events"])
    assert stats.tick() == []  # nothing due: the next look is INTERVAL_SECONDS away
    _add_events(runtime.engine, 1, 1500)
    time.sleep(1.2)
    clock.now += INTERVAL_SECONDS - 0.1
    assert stats.tick() == [] and off.tick() == []
    clock.now += 0.1
    assert stats.tick() == ["events"]
    assert off.tick() == [] and _analyzed(runtime.engine, "events") == 1


def test_a_failure_is_a_warning_once_and_the_looks_pause_longer(runtime: Runtime, caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    stats = Statistics(runtime.engine, clock=clock)
    monkeypatch.setattr(payhub.db.statistics, "_DUE", "SELECT relname FROM no_such_view WHERE %s IS NOT NULL "
                        "AND %s > 0")
    with caplog.at_level(logging.DEBUG, logger="payhub.db.statistics"):
        assert stats.tick() == []  # fails: a warning; the next look in 2 × INTERVAL_SECONDS
        clock.now += INTERVAL_SECONDS
        assert stats.tick() == []  # not yet: nothing logged
        clock.now += INTERVAL_SECONDS
        assert stats.tick() == []  # the same cause again: debug
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG], caplog.records
    assert "could not refresh the planner statistics" in caplog.records[0].getMessage()
    assert "tries again in 10s" in caplog.records[0].getMessage()


def test_analyze_gives_up_on_a_lock_a_migration_holds(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    """An open transaction holding an index of the table (as a migration does): ANALYZE waits a moment, then gives
    up until the next look; the other transaction is not disturbed."""
    _add_events(runtime.engine, 1, 1500)
    time.sleep(1.2)
    stats = Statistics(runtime.engine, tables=["events"])
    with runtime.engine.connect() as other:
        other.exec_driver_sql("ALTER INDEX ix_events_object SET (fillfactor = 80)")  # its transaction stays open
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG, logger="payhub.db.statistics"):
            assert stats.tick() == []
        assert time.monotonic() - started < 2.0
        assert [r.levelno for r in caplog.records] == [logging.DEBUG], caplog.records
        other.exec_driver_sql("ALTER INDEX ix_events_object RESET (fillfactor)")
        other.commit()
    assert _analyzed(runtime.engine, "events") == 0


def test_the_tables_are_found_where_the_search_path_finds_them(runtime: Runtime, db_url: str) -> None:
    """An empty schema first in the search path (say one named as the user): the tables are still found."""
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA first_in_path")
    _add_events(runtime.engine, 1, 1500)
    url = make_url(db_url).update_query_dict({"options": "-c search_path=first_in_path,public"})
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_schema()").scalar_one() == "first_in_path"
        assert _eventually(Statistics(engine, tables=["events"]).refresh) == ["events"]
    finally:
        engine.dispose()


def test_tables_another_role_owns_are_left_to_autovacuum(runtime: Runtime, db_url: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A user that does not own the tables: PostgreSQL would skip them with a notice, so they are not asked for
    (no "analyzed" claim, no ANALYZE every few seconds), and a warning says so once."""
    role = f"payhub_stats_{uuid.uuid4().hex[:8]}"
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    _add_events(runtime.engine, 1, 1500)
    engine = make_engine(make_url(db_url).set(username=role).render_as_string(hide_password=False))
    try:
        stats = Statistics(engine, tables=["events"])
        with caplog.at_level(logging.INFO, logger="payhub.db.statistics"):
            time.sleep(1.2)
            assert stats.refresh() == [] and stats.refresh() == []
        assert [r.levelno for r in caplog.records] == [logging.WARNING], caplog.records
        assert "does not own" in caplog.records[0].getMessage()
        assert _analyzed(runtime.engine, "events") == 0
    finally:
        engine.dispose()
        with runtime.engine.begin() as conn:
            conn.exec_driver_sql(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')


def test_the_daemon_looks_between_the_batches_of_every_stage(make_runtime: Any, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A backlog is analyzed as it is taken in, not after: the worker looks after each batch (the look itself is
    timed by :class:`Statistics`)."""
    looked: list[dict[str, int]] = []
    monkeypatch.setattr(Statistics, "tick", lambda self: looked.append(dict(worker.summary.counts)) or [])
    rt = make_runtime('[sources.s]\nplugin = "fake"\nbatch_size = 100\n[programs.flat]\ncalculator = "flat"\n'
                      'amount = "10"\ncurrency = "EUR"\nevent_types = ["deal_won"]\n')
    rt.settings.database.batch_size = 100
    rt.plugins.sources["s"].push(*(SourceRecord("Deal", f"d{n}", "won", "deal_won", "2026-02-01T00:00:00Z", "rep1",
                                                "100", "EUR", "acme") for n in range(300)))
    worker = Worker(rt)
    worker.start()
    try:
        worker.run_once()
    finally:
        worker.stop()
    calculated = [seen["calculated"] for seen in looked]
    assert calculated[0] == 0, looked  # after the source's poll, before the first calculation
    assert {100, 200, 300} <= set(calculated), looked  # after each calculate batch of 100
