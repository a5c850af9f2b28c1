"""``/metrics`` through httpx's ASGI transport, on SQLite and PostgreSQL: the text parses as Prometheus text, the
gauges read from the database match its rows after a pipeline run, the in-process counters count what the run did,
and the database's counts are kept between refreshes and say how old they are."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cli_helpers import sql
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from payhub import metrics
from payhub.api import PermanentSourceError, SourceRecord, TransientSourceError
from payhub.clock import utcnow
from payhub.http.app import create_app
from payhub.http.metrics import CONTENT_TYPE, DbMetrics
from payhub.http.probes import reader_engine
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll, reset_failed_sources
from payhub.pipeline.schedule import schedule_batch
from payhub.runtime import Runtime
from payhub.testing import FakeRail, FakeSource
from payhub.worker import Worker

SITE = """
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [rails.r]
    plugin = "fake"
    max_attempts = 3
    retry_initial_seconds = 0
    retry_max_seconds = 0
    lookup_settle_seconds = 0
    [routing]
    default_rail = "r"
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(app: FastAPI) -> Samples:
    """``/metrics`` parsed: value by (sample name, labels)."""

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payhub") as client:
            return await client.get("/metrics")

    answer = anyio.run(call)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def of(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def labelled(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name`` by the values of its labels ``keys``."""
    return {tuple(dict(labels)[k] for k in keys): value for (sample, labels), value in samples.items()
            if sample == name}


def counted(name: str, **labels: str) -> float:
    """An in-process instrument's current value (0 before its first use)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def as_utc(value: Any) -> datetime:
    """A time read with :func:`sql` (text on SQLite) as an aware UTC datetime."""
    found = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def deal(object_id: str, payee: str, amount: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-10-01T00:00:00Z", payee, amount, "EUR")


Site = Callable[..., tuple[Runtime, FakeSource, FakeRail]]


@pytest.fixture
def site(make_runtime: Callable[..., Runtime], tmp_path: Path) -> Site:
    """``site(extra="")``: a runtime over a fake source ``s``, the program ``full`` (100 %) and a fake rail ``r``."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\np3,Three,IT\n")

    def factory(extra: str = "", refresh: float = 0) -> tuple[Runtime, FakeSource, FakeRail]:
        rt = make_runtime(SITE + extra + f"[http]\nmetrics_refresh_seconds = {refresh}\n")
        source, rail = rt.plugins.sources["s"], rt.plugins.rails["r"]
        assert isinstance(source, FakeSource) and isinstance(rail, FakeRail)
        return rt, source, rail

    return factory


IN_PROCESS = [("payhub_payout_attempts_total", {"rail": "r", "kind": "send"}),
              ("payhub_payout_attempts_total", {"rail": "r", "kind": "lookup"}),
              ("payhub_payout_retries_total", {"rail": "r"}),
              ("payhub_rail_call_seconds_count", {"rail": "r", "call": "send"}),
              ("payhub_audit_entries_total", {}),
              *(("payhub_stage_items_total", {"stage": stage})
                for stage in ("ingested", "calculated", "scheduled", "disbursed", "settled"))]


def test_metrics_match_the_database_after_a_run(site: Site, db_url: str) -> None:
    rt, source, rail = site()
    source.push(deal("a", "p1", "10"), deal("b", "p2", "20"), deal("c", "p3", "30"), deal("d", "p1", "40"),
                deal("e", "nobody", "50"),  # no such payee: its reward is held
                deal("f", "p2", "not a number"))  # quarantined
    rail.plan("retryable", "timeout_after_accept")  # every payout is sent again, then looked up
    before = {(name, tuple(labels.items())): counted(name, **labels) for name, labels in IN_PROCESS}
    [(head_before,)] = sql(db_url, "SELECT seq FROM audit_head")
    worker = Worker(rt)
    worker.start()
    summary = worker.run_once()
    worker.stop()
    started = utcnow()
    samples = scrape(create_app(rt))
    ended = utcnow()

    assert labelled(samples, "payhub_events", "source", "status") == {
        (source_, status): float(n) for source_, status, n in
        sql(db_url, "SELECT source, status, count(*) FROM events GROUP BY source, status")}
    assert set(labelled(samples, "payhub_events", "source", "status")) == {("s", "calculated"), ("s", "quarantined")}
    assert labelled(samples, "payhub_rewards", "status") == {
        (status,): float(n) for status, n in sql(db_url, "SELECT status, count(*) FROM rewards GROUP BY status")}
    assert {"sent", "held"} <= {status for (status,) in labelled(samples, "payhub_rewards", "status")}
    assert labelled(samples, "payhub_payouts", "rail", "status") == {
        (rail_, status): float(n) for rail_, status, n in
        sql(db_url, "SELECT rail, status, count(*) FROM payouts GROUP BY rail, status")} == {("r", "sent"): 3.0}
    [(head,)] = sql(db_url, "SELECT seq FROM audit_head")
    assert of(samples, "payhub_audit_log_entries") == head
    assert {status: value for (status,), value in
            labelled(samples, "payhub_oldest_payout_age_seconds", "status").items()} == dict.fromkeys(
        ("scheduled", "retrying", "sending", "unknown", "unresolved"), 0.0)

    [(polled,)] = sql(db_url, "SELECT last_polled_at FROM sources WHERE name = 's'")
    polled = as_utc(polled)
    lag = of(samples, "payhub_source_lag_seconds", source="s")
    assert lag is not None and (started - polled).total_seconds() - 0.001 <= lag <= (ended - polled).total_seconds()
    assert of(samples, "payhub_source_error", source="s") == 0.0
    assert of(samples, "payhub_source_failed", source="s") == 0.0
    assert of(samples, "payhub_db_metrics_ok") == 1.0
    assert of(samples, "payhub_plugin_failed", kind="rail", section="r") == 0.0

    # What this process did, counted as it did it.
    grew = {key: (of(samples, key[0], **dict(key[1])) or 0.0) - value for key, value in before.items()}
    [(sends,)] = sql(db_url, "SELECT count(*) FROM attempts WHERE kind = 'send'")
    [(resends,)] = sql(db_url, "SELECT count(*) FROM attempts WHERE kind = 'send' AND number > 1")
    [(lookups,)] = sql(db_url, "SELECT count(*) FROM attempts WHERE kind = 'lookup'")
    assert (sends, resends, lookups) == (6, 3, 3)  # refused (retryable), sent again (unknown), then looked up
    assert grew[("payhub_payout_attempts_total", (("rail", "r"), ("kind", "send")))] == sends
    assert grew[("payhub_payout_retries_total", (("rail", "r"),))] == resends
    assert grew[("payhub_payout_attempts_total", (("rail", "r"), ("kind", "lookup")))] == lookups
    assert grew[("payhub_rail_call_seconds_count", (("rail", "r"), ("call", "send")))] == len(rail.calls)
    assert grew[("payhub_audit_entries_total", ())] == head - head_before
    for stage, n in summary.counts.items():
        assert grew[("payhub_stage_items_total", (("stage", stage),))] == n, stage
    assert "payhub_database_outage" not in {name for name, _labels in samples}  # no worker in this app


def test_events_by_source_and_status(site: Site, db_url: str) -> None:
    """Calculated events are counted as each source's total less its other events: exact for every status."""
    rt, source, _rail = site()
    app = create_app(rt)
    source.push(*(deal(f"o{i}", "p1", "10") for i in range(6)))
    poll(rt, "s")
    assert labelled(scrape(app), "payhub_events", "source", "status") == {("s", "ingested"): 6.0}
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass
    sql(db_url, "UPDATE events SET source = 't' WHERE object_id IN ('o0', 'o1', 'o2')")
    sql(db_url, "UPDATE events SET status = 'quarantined' WHERE object_id = 'o0'")
    sql(db_url, "UPDATE events SET status = 'waiting' WHERE object_id IN ('o3', 'o4')")
    expected = {(source_, status): float(n) for source_, status, n in
                sql(db_url, "SELECT source, status, count(*) FROM events GROUP BY source, status")}
    assert expected == {("s", "calculated"): 1.0, ("s", "waiting"): 2.0, ("t", "quarantined"): 1.0,
                        ("t", "calculated"): 2.0}
    assert labelled(scrape(app), "payhub_events", "source", "status") == expected


def schedule(rt: Runtime, source: FakeSource, *deals: SourceRecord) -> None:
    source.push(*deals)
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass
    sync_payees(rt)
    while schedule_batch(rt):
        pass


def test_ages_of_the_oldest_waiting_payouts(site: Site, db_url: str) -> None:
    rt, source, rail = site()
    app = create_app(rt)
    schedule(rt, source, deal("a", "p1", "10"))
    [(created,)] = sql(db_url, "SELECT created_at FROM payouts")
    created = as_utc(created)
    started = utcnow()
    samples = scrape(app)
    ended = utcnow()
    age = of(samples, "payhub_oldest_payout_age_seconds", status="scheduled")
    assert age is not None and (started - created).total_seconds() - 0.001 <= age <= (ended - created).total_seconds()
    assert of(samples, "payhub_oldest_payout_age_seconds", status="unknown") == 0.0

    rail.plan("timeout_after_accept")
    assert disburse_rail(rt, "r") == 1
    samples = scrape(app)
    assert of(samples, "payhub_oldest_payout_age_seconds", status="scheduled") == 0.0
    unknown = of(samples, "payhub_oldest_payout_age_seconds", status="unknown")
    assert unknown is not None and unknown >= (started - created).total_seconds() - 0.001
    assert labelled(samples, "payhub_payouts", "rail", "status") == {("r", "unknown"): 1.0}


def test_sources_failing(site: Site) -> None:
    rt, source, _rail = site()
    app = create_app(rt)
    samples = scrape(app)
    assert of(samples, "payhub_source_lag_seconds", source="s") is None  # never polled
    assert (of(samples, "payhub_source_error", source="s"), of(samples, "payhub_source_failed", source="s")) == (0, 0)
    source.error = TransientSourceError("CRM busy (503)")
    poll(rt, "s")
    samples = scrape(app)
    assert (of(samples, "payhub_source_error", source="s"), of(samples, "payhub_source_failed", source="s")) == (1, 0)
    source.error = PermanentSourceError("credentials refused (401)")
    poll(rt, "s")
    samples = scrape(app)
    assert (of(samples, "payhub_source_error", source="s"), of(samples, "payhub_source_failed", source="s")) == (1, 1)
    source.error = None
    reset_failed_sources(rt)  # as the daemon does when it starts again
    poll(rt, "s")
    samples = scrape(app)
    assert of(samples, "payhub_source_error", source="s") == 0.0


def test_plugin_failures(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = counted("payhub_plugin_failures_total", kind="hook", section="misspelt", reason="load")
    rt, source, rail = site("[hooks.misspelt]\n")
    samples = scrape(create_app(rt))
    assert of(samples, "payhub_plugin_failures_total", kind="hook", section="misspelt", reason="load") == loads + 1
    assert of(samples, "payhub_plugin_failed", kind="hook", section="misspelt") == 1.0
    assert of(samples, "payhub_plugin_failed", kind="source", section="s") == 0.0

    rt.plugins.statuses[:] = [s for s in rt.plugins.statuses if s.kind != "hook"]  # let payouts go out
    errors = counted("payhub_plugin_failures_total", kind="rail", section="r", reason="error")

    def broken(_instructions: Any) -> Any:
        raise RuntimeError("bug in the rail")

    monkeypatch.setattr(rail, "send", broken)
    schedule(rt, source, deal("a", "p1", "10"))
    assert disburse_rail(rt, "r") == 1
    samples = scrape(create_app(rt))
    assert of(samples, "payhub_plugin_failures_total", kind="rail", section="r", reason="error") == errors + 1


def test_outage_gauges_under_payhub_run(site: Site) -> None:
    rt, _source, _rail = site()
    worker = Worker(rt)
    app = create_app(rt, worker)
    samples = scrape(app)
    assert (of(samples, "payhub_database_outage"), of(samples, "payhub_database_outage_seconds")) == (0.0, 0.0)
    worker.outage.began, worker.outage.tries = time.monotonic() - 5, 3
    samples = scrape(app)
    assert of(samples, "payhub_database_outage") == 1.0
    assert (of(samples, "payhub_database_outage_seconds") or 0) >= 5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_counts_are_kept_until_due(site: Site) -> None:
    """Read at most every refresh_seconds, in a thread: a scrape before then gets the values it had."""
    rt, source, _rail = site()
    engine = reader_engine(rt.settings.database_url)
    stop = threading.Event()
    stop.set()  # each refresh thread reads once and ends, so the test decides when the next one starts
    clock = Clock()
    db = DbMetrics(engine, 15, stop, clock=clock)
    try:
        first = db.current()
        assert first is not None and first.events == [] and first.taken == 1000.0
        wait_for(lambda: not db.refreshing, "the refresh thread to end")
        source.push(deal("a", "p1", "10"))
        poll(rt, "s")
        clock.now += 14
        assert db.current() is first
        assert not db.refreshing and db.snapshot is first
        clock.now += 1
        assert db.current() is first  # due: answered at once with what it has, while a thread reads
        wait_for(lambda: db.snapshot is not first, "a refresh")
        assert db.snapshot is not None
        assert db.snapshot.events == [("s", "ingested", 1)] and db.snapshot.taken == 1015.0
    finally:
        engine.dispose()


def test_slow_reads_are_spaced_out(site: Site) -> None:
    """A read that took 3 s is followed by the next one 30 s later at the soonest, whatever refresh_seconds says:
    reading takes at most a tenth of the time."""
    rt, source, _rail = site()
    engine = reader_engine(rt.settings.database_url)
    stop = threading.Event()
    stop.set()
    clock = Clock()
    db = DbMetrics(engine, 15, stop, clock=clock)
    try:
        first = db.current()
        assert first is not None
        wait_for(lambda: not db.refreshing, "the refresh thread to end")
        slow = db.snapshot = dataclasses.replace(first, took=3.0)
        clock.now = first.taken + 29
        assert db.current() is slow
        assert not db.refreshing and db.snapshot is slow  # no read started (or it would run, or have replaced it)
        clock.now = first.taken + 30
        db.current()
        wait_for(lambda: db.snapshot is not slow, "a refresh")
    finally:
        engine.dispose()


def test_counts_are_not_read_again_within_the_refresh(site: Site) -> None:
    rt, source, _rail = site(refresh=3600)
    app = create_app(rt)
    samples = scrape(app)
    assert labelled(samples, "payhub_events", "source", "status") == {}
    assert (of(samples, "payhub_db_metrics_age_seconds") or 0) >= 0
    assert (of(samples, "payhub_db_metrics_read_seconds") or 0) > 0
    source.push(deal("a", "p1", "10"))
    poll(rt, "s")
    samples = scrape(app)
    assert labelled(samples, "payhub_events", "source", "status") == {}  # not read again within the hour


def test_a_failed_refresh_keeps_the_counts_and_says_so(site: Site, tmp_path: Path) -> None:
    rt, source, _rail = site()
    source.push(deal("a", "p1", "10"))
    poll(rt, "s")
    app = create_app(rt)
    samples = scrape(app)
    assert of(samples, "payhub_db_metrics_ok") == 1.0
    assert labelled(samples, "payhub_events", "source", "status") == {("s", "ingested"): 1.0}
    gone = tmp_path / "gone" / "payhub.db"
    app.state.probes.metrics.engine = reader_engine(f"sqlite:///{gone}")  # the database cannot be read any more
    samples = scrape(app)
    assert of(samples, "payhub_db_metrics_ok") == 0.0
    assert labelled(samples, "payhub_events", "source", "status") == {("s", "ingested"): 1.0}
    assert app.state.probes.metrics.failure == f"FileNotFoundError: the database file {gone} does not exist"
