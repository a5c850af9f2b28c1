"""``GET /metrics``: Prometheus text of what is in the database, of this process's plugins and worker, and of the
in-process instruments (:mod:`payhub.metrics`).

Each app has a registry of its own (never prometheus-client's global default). The values read from the database
(events, rewards and payouts by status, the oldest waiting payouts, the sources, the audit log's length) cost a
scan of large tables, so they are read at most every ``http.metrics_refresh_seconds`` (and at most a tenth of the
time), in a thread of their own, off the request path (:class:`DbMetrics`); ``payhub_db_metrics_age_seconds`` says
how old they are. Ages (source
lag, oldest payouts) are computed at the scrape from the times read, so they keep growing between refreshes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from payhub import __version__, metrics
from payhub.clock import utcnow
from payhub.db.faults import describe
from payhub.db.schema import audit_head, events, payouts, rewards, sources
from payhub.http.probes import probes, reading
from payhub.http.state import Face, face
from payhub.logs import Reminder

if TYPE_CHECKING:
    from payhub.worker import Worker

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

AGED_STATUSES = ("scheduled", "retrying", "sending", "unknown", "unresolved")
"""Payout statuses whose oldest payout's age is exported (``payhub_oldest_payout_age_seconds``)."""
SETTLED_EVENTS = "calculated"  # the status nearly every event ends in
REFRESH_TIMEOUT_SECONDS = 60.0  # a statement of a refresh (PostgreSQL)
FIRST_WAIT_SECONDS = 10.0  # how long a scrape waits for values when none were read yet
IDLE_SECONDS = 300.0  # the refresh thread ends after this long (or 10 refreshes) without a scrape
READ_SHARE = 10  # reads are at least this many times their own duration apart
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format every Prometheus version reads


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The database's counts at one moment (``taken``, monotonic seconds), read in ``took`` seconds."""

    taken: float
    took: float
    events: list[tuple[str, str, int]]  # source, status, count
    rewards: list[tuple[str, int]]  # status, count
    payouts: list[tuple[str, str, int]]  # rail, status, count
    oldest: dict[str, datetime]  # payout status -> creation time of its oldest payout
    sources: dict[str, tuple[str, str | None, datetime | None]]  # name -> status, reason, last polled
    audit_entries: int | None  # the audit log's last sequence number


def read_snapshot(conn: Connection, clock: Callable[[], float] = time.monotonic) -> Snapshot:
    """Read the counts /metrics exports from the database."""
    started = clock()
    by_source = _events_by_source(conn)
    by_reward = conn.execute(select(rewards.c.status, func.count()).group_by(rewards.c.status)).all()
    by_payout = conn.execute(select(payouts.c.rail, payouts.c.status, func.count())
                             .group_by(payouts.c.rail, payouts.c.status)).all()
    oldest = conn.execute(select(payouts.c.status, func.min(payouts.c.created_at))
                          .where(payouts.c.status.in_(AGED_STATUSES)).group_by(payouts.c.status)).all()
    polled = conn.execute(select(sources.c.name, sources.c.status, sources.c.reason, sources.c.last_polled_at)).all()
    head = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar()
    ended = clock()
    return Snapshot(
        taken=ended, took=ended - started,
        events=by_source,
        rewards=[(status, count) for status, count in by_reward],
        payouts=[(rail, status, count) for rail, status, count in by_payout],
        oldest={status: at for status, at in oldest if at is not None},
        sources={name: (status, reason, at) for name, status, reason, at in polled},
        audit_entries=head if isinstance(head, int) else None)


def _events_by_source(conn: Connection) -> list[tuple[str, str, int]]:
    """Events by source and status. Nearly all events end ``calculated``: counting those by source would read every
    row, so they are each source's total (an index scan) less its events in the other statuses, which the status
    index finds without reading the rest."""
    totals: dict[str, int] = {source: n for source, n in conn.execute(
        select(events.c.source, func.count()).group_by(events.c.source))}
    counts: list[tuple[str, str, int]] = []
    for other in (events.c.status < SETTLED_EVENTS, events.c.status > SETTLED_EVENTS):
        counts += [(source, status, n) for status, source, n in conn.execute(
            select(events.c.status, events.c.source, func.count()).where(other)
            .group_by(events.c.status, events.c.source))]
    for source, _status, n in counts:
        totals[source] = totals.get(source, 0) - n
    counts += [(source, SETTLED_EVENTS, n) for source, n in totals.items() if n > 0]
    return sorted(counts)


class DbMetrics:
    """The database's counts, read at most every ``refresh_seconds`` and kept for the scrapes.

    A scrape that finds them older starts a refresh in a thread and is answered with the values at hand; only a
    scrape finding none yet waits for the first (up to FIRST_WAIT_SECONDS). The thread refreshes every
    ``refresh_seconds``, or READ_SHARE times as long as the last read took if that is longer (so reading takes at
    most a tenth of the time), while scrapes come, and ends after a while without one, or when ``stop`` is set.
    ``refresh_seconds`` 0 reads on every scrape, on the request path. A failed refresh keeps the values it had and
    notes why (:attr:`failure`).
    """

    def __init__(self, engine: Engine, refresh_seconds: float, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self.stop = stop
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self.failure: str | None = None  # why the last refresh failed; None when it succeeded
        self._lock = threading.Lock()
        self._asked = 0.0
        self._running = False
        self._first = threading.Event()
        self._reminder = Reminder()

    @property
    def refreshing(self) -> bool:
        """Whether a refresh thread is running."""
        with self._lock:
            return self._running

    def current(self) -> Snapshot | None:
        """The latest counts (None when none could be read yet), starting a refresh when they are due."""
        if self.refresh_seconds == 0:
            self.refresh()
            return self.snapshot
        now = self.clock()
        with self._lock:
            self._asked = now
            found = self.snapshot
            if not self._running and (found is None or now - found.taken >= self._interval(found)):
                self._running = True
                threading.Thread(target=self._keep_fresh, name="payhub-metrics", daemon=True).start()
        if found is None:
            self._first.wait(FIRST_WAIT_SECONDS)
            found = self.snapshot
        return found

    def refresh(self) -> None:
        """Read the counts now."""
        try:
            with reading(self.engine, REFRESH_TIMEOUT_SECONDS) as conn:
                taken = read_snapshot(conn, self.clock)
        except Exception as exc:  # noqa: BLE001 - the scrape shows the failure (payhub_db_metrics_ok 0)
            self.failure = describe(exc)
            if self._reminder.due(self.failure):
                log.warning("metrics: the counts cannot be read from the database: %s", self.failure)
        else:
            self.snapshot, self.failure = taken, None
        finally:
            self._first.set()

    def _interval(self, taken: Snapshot | None) -> float:
        """Seconds from one read to the next."""
        return max(self.refresh_seconds, READ_SHARE * taken.took if taken is not None else 0.0)

    def _keep_fresh(self) -> None:
        idle = max(IDLE_SECONDS, 10 * self.refresh_seconds)
        try:
            while True:
                self.refresh()
                if self.stop.wait(self._interval(self.snapshot)):
                    return
                with self._lock:
                    if self.clock() - self._asked > idle:
                        return
        finally:
            with self._lock:
                self._running = False


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class StateCollector(Collector):
    """The gauges of one app: the database's counts (:class:`DbMetrics`), this process's plugins and, under
    ``payhub run``, its worker's database outage."""

    def __init__(self, state: Face, db: DbMetrics) -> None:
        self.state = state
        self.db = db

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("payhub_build", "The payhub version serving these metrics.")
        info.add_metric([], {"version": __version__})
        yield info
        yield from self._plugins()
        if self.state.worker is not None:
            yield from _outage(self.state.worker)
        yield from self._database(self.db.current())

    def _plugins(self) -> Iterator[Metric]:
        failed = _gauge("payhub_plugin_failed", "1 for a configured plugin that failed to load, start or register "
                        "in this process, else 0.", ["kind", "section"])
        for status in self.state.rt.plugins.statuses:
            failed.add_metric([status.kind, status.section], 1.0 if status.state == "failed" else 0.0)
        yield failed

    def _database(self, snap: Snapshot | None) -> Iterator[Metric]:
        ok = _gauge("payhub_db_metrics_ok", "1 when the last read of the database's counts succeeded, else 0.")
        ok.add_metric([], 0.0 if self.db.failure else 1.0)
        yield ok
        if snap is None:
            return
        age = _gauge("payhub_db_metrics_age_seconds", "How old the values read from the database are.")
        age.add_metric([], max(0.0, self.db.clock() - snap.taken))
        took = _gauge("payhub_db_metrics_read_seconds", "How long the last read of the database's counts took.")
        took.add_metric([], snap.took)
        yield from (age, took)
        yield from _counts(snap)
        now = utcnow()
        oldest = _gauge("payhub_oldest_payout_age_seconds", "Age (since its creation) of the oldest payout in the "
                        "status; 0 when there is none.", ["status"])
        for status in AGED_STATUSES:
            at = snap.oldest.get(status)
            oldest.add_metric([status], max(0.0, (now - at).total_seconds()) if at is not None else 0.0)
        yield oldest
        yield from _sources(snap, self._source_names(), now)
        if snap.audit_entries is not None:
            entries = _gauge("payhub_audit_log_entries", "Entries in the audit log (its head's sequence number).")
            entries.add_metric([], float(snap.audit_entries))
            yield entries

    def _source_names(self) -> list[str]:
        return sorted(name for name, section in self.state.rt.settings.sources.items() if section.enabled)


def _counts(snap: Snapshot) -> Iterator[Metric]:
    by_source = _gauge("payhub_events", "Events stored, by source and status.", ["source", "status"])
    for source, status, count in snap.events:
        by_source.add_metric([source, status], float(count))
    by_reward = _gauge("payhub_rewards", "Rewards stored, by status.", ["status"])
    for status, count in snap.rewards:
        by_reward.add_metric([status], float(count))
    by_payout = _gauge("payhub_payouts", "Payouts stored, by rail and status (the rail's outcome once sent).",
                       ["rail", "status"])
    for rail, status, count in snap.payouts:
        by_payout.add_metric([rail, status], float(count))
    yield from (by_source, by_reward, by_payout)


def _sources(snap: Snapshot, names: list[str], now: datetime) -> Iterator[Metric]:
    lag = _gauge("payhub_source_lag_seconds", "Seconds since the source was last polled (see payhub_source_error "
                 "for whether that poll succeeded); absent before its first poll.", ["source"])
    error = _gauge("payhub_source_error", "1 when the source's last poll failed (transiently or permanently).",
                   ["source"])
    failed = _gauge("payhub_source_failed", "1 when the source failed permanently (it is not polled until the daemon "
                    "restarts).", ["source"])
    for name in names:
        status, reason, polled = snap.sources.get(name, ("ok", None, None))
        if polled is not None:
            lag.add_metric([name], max(0.0, (now - polled).total_seconds()))
        error.add_metric([name], 1.0 if reason is not None or status == "failed" else 0.0)
        failed.add_metric([name], 1.0 if status == "failed" else 0.0)
    yield from (lag, error, failed)


def _outage(worker: Worker) -> Iterator[Metric]:
    outage = worker.outage
    waiting = _gauge("payhub_database_outage", "1 while the worker of this process waits for the database.")
    waiting.add_metric([], 1.0 if outage.active else 0.0)
    seconds = _gauge("payhub_database_outage_seconds", "How long the worker of this process has been waiting for "
                     "the database (0 when it is not).")
    began = outage.began
    seconds.add_metric([], time.monotonic() - began if began is not None else 0.0)
    yield from (waiting, seconds)


class _Instruments(Collector):
    """The in-process instruments of :mod:`payhub.metrics`, shown in an app's registry."""

    def collect(self) -> Iterable[Metric]:
        return metrics.REGISTRY.collect()


def app_registry(state: Face, db: DbMetrics) -> CollectorRegistry:
    """The registry of one app: its gauges, the in-process instruments and the process's own (CPU, memory)."""
    registry = CollectorRegistry()
    registry.register(StateCollector(state, db))
    registry.register(_Instruments())
    ProcessCollector(registry=registry)
    return registry


_made = threading.Lock()


def _registry(request: Request) -> CollectorRegistry:
    state = request.app.state
    found: CollectorRegistry | None = getattr(state, "metrics_registry", None)
    if found is None:
        with _made:
            found = getattr(state, "metrics_registry", None)
            if found is None:
                found = state.metrics_registry = app_registry(face(request), probes(request).metrics)
    return found


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}}}})
def metrics_text(request: Request) -> Response:
    """Counts only, no token: expose it to the monitoring system alone (docs/operations.md#monitoring)."""
    body = generate_latest(_registry(request))
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
