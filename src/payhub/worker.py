"""The worker loop behind ``payhub run``: poll sources when due and drive every stage until told to stop.

In daemon mode (:meth:`Worker.start_waiting`, :meth:`Worker.run_forever`) a database outage (see
:mod:`payhub.db.faults`) does not stop the worker: the transaction in progress rolled back, so the worker waits with
exponential backoff and jitter (``daemon.db_retry_*``), logs the outage once and then every
``daemon.db_outage_log_seconds``, and does the same work again when the database answers. ``run_once`` lets the
error propagate, so ``payhub run --once`` exits non-zero. ``run_once`` also reports the sources that failed
permanently during the run (:attr:`Summary.failed_sources`), for ``run --once``'s exit code.

``run_once`` does not end while a send it abandoned may still reach the provider: it waits for the call to return
(up to the rail's ``lookup_settle_seconds`` from its start) and then works what is due again, so the payouts of that
rail are looked up and sent in the same run; a call still running then is reported in :attr:`Summary.running_calls`.
An abandoned lookup or status check is waited for in the same way once per rail and run (a provider too slow for
every call must not keep the run going forever); its payouts stay ``unknown`` for the next run.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from filelock import FileLock
from sqlalchemy.exc import DBAPIError
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from payhub import metrics
from payhub.checkpoints import Checkpointer
from payhub.collector import tune_for_batches
from payhub.db.engine import lock_sqlite_file, sqlite_file
from payhub.db.faults import describe, is_transient
from payhub.db.statistics import Statistics
from payhub.logs import Reminder
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll_batches, reset_failed_sources
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.store import leases
from payhub.store.events import failed_sources

log = logging.getLogger(__name__)

STAGE_BATCHES = 10
CONFLICT_RETRIES = 3
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
CONFLICT_PAUSE_SECONDS = 0.05
LEASING_STAGES = frozenset({"disbursed", "settled"})  # stages that lease payouts (:meth:`Worker._release_own_leases`)

Observer = Callable[[str, int], None]
"""Called with (stage, count) as work is done, for progress displays."""

T = TypeVar("T")


class Stopped(Exception):
    """Raised to end the wait for the database when the worker is told to stop."""


class Outage:
    """Logs one database outage: a WARNING when it begins, a reminder every ``remind_every`` seconds while it
    lasts, and an INFO when the database answers again."""

    def __init__(self, remind_every: float) -> None:
        self.remind_every = remind_every
        self.began: float | None = None  # monotonic time of the first failure; None while the database answers
        self.tries = 0
        self.waited = 0.0  # seconds since the outage began, as of the last failure
        self._reminded = 0.0

    @property
    def active(self) -> bool:
        return self.began is not None

    def failed(self, state: RetryCallState) -> None:
        """Called by tenacity before it sleeps after a transient failure."""
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = describe(exc) if exc is not None else "unknown"
        wait = state.upcoming_sleep
        now = time.monotonic()
        self.tries += 1
        if self.began is None:
            self.began = self._reminded = now
            log.warning("database unavailable: %s; waiting for it (next try in %.1fs)", reason, wait)
            return
        self.waited = now - self.began
        if now - self._reminded >= self.remind_every:
            self._reminded = now
            log.warning("database still unavailable after %.0fs (%d tries): %s; next try in %.1fs",
                        self.waited, self.tries, reason, wait)
        else:
            log.debug("database still unavailable (try %d): %s", self.tries, reason)

    def over(self) -> None:
        """The database answered: log how long it was away and reset."""
        if self.began is not None:
            self.waited = time.monotonic() - self.began
            log.info("database available again after %.1fs (%d failed tries); resuming work",
                     self.waited, self.tries)
        self.began, self.tries = None, 0


@dataclass
class Summary:
    """What a run did, per stage, and the configured sources left failed (name -> reason; they need an admin)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("ingested", "calculated", "scheduled", "disbursed", "settled"), 0))
    failed_sources: dict[str, str] = field(default_factory=dict)
    running_calls: dict[str, str] = field(default_factory=dict)  # rail -> the abandoned call still running at the end

    def add(self, stage: str, n: int) -> None:
        self.counts[stage] = self.counts.get(stage, 0) + n


class Worker:
    """Runs the pipeline for one runtime. Call :meth:`start` first, then :meth:`run_once` or :meth:`run_forever`."""

    def __init__(self, rt: Runtime, observer: Observer | None = None) -> None:
        self.rt = rt
        self.observer = observer
        self.summary = Summary()
        if rt.settings.notify.statements != "off":
            self.summary.counts["statements"] = 0  # partner statements delivered, failed or skipped
        self.versions: dict[str, int] = {}
        self._next_poll: dict[str, float] = {}
        self._next_settle: dict[str, float] = {}
        self._more: set[str] = set()  # sources that had more records ready when their poll stopped
        self._lock: FileLock | None = None
        self.outage = Outage(rt.settings.daemon.db_outage_log_seconds)
        self.reminder = Reminder()  # conditions that last, logged when they begin and every REMIND_SECONDS
        self.checkpointer: Checkpointer | None = None  # signs the audit head when a key is configured
        self.statistics = Statistics(rt.engine, enabled=rt.settings.database.refresh_statistics)
        self._waited: set[str] = set()  # rails whose abandoned call run_once has waited for

    def start(self) -> None:
        """Check the schema, take the SQLite file lock, reclaim this file's leases and record program versions; set
        the process's garbage collector for batches (:func:`payhub.collector.tune_for_batches`)."""
        rt = self.rt
        tune_for_batches()
        rt.require_schema()
        database = sqlite_file(rt.settings.database_url)
        if database is not None:
            self._lock = lock_sqlite_file(database)  # by the real path; refuses hard links
            with rt.engine.begin() as conn:  # we are the only daemon: leases of dead processes are void
                leases.void(conn)
        self.versions = register_program_versions(rt)
        reset_failed_sources(rt)
        self.checkpointer = Checkpointer.for_daemon(rt)

    def start_waiting(self) -> bool:
        """:meth:`start`, waiting out database outages; False if told to stop before it could start."""

        def attempt() -> bool:
            self.stop()  # a try that failed after taking the SQLite file lock left it taken: take it afresh
            self.start()
            return True

        return self._until_available(attempt) is not None

    def stop(self) -> None:
        """Release the SQLite file lock, if taken. Safe to call more than once."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def waiting(self) -> bool:
        """True while the worker is waiting for the database to come back."""
        return self.outage.active

    def _until_available(self, step: Callable[[], T]) -> T | None:
        """``step()``, done again after each transient database fault until it succeeds; None if told to stop
        meanwhile. Other errors propagate at once."""
        settings = self.rt.settings.daemon
        stop_event = self.rt.stop_event

        def attempt() -> T:
            if stop_event.is_set():
                raise Stopped
            if self.outage.active:
                self._release_own_leases()  # work caught by the outage is resumable now, not after its lease
            result = step()
            self.outage.over()
            return result

        def sleep(seconds: float) -> None:
            stop_event.wait(seconds)  # a stop request ends the wait at once

        def stopped(_state: RetryCallState) -> None:
            if self.outage.active:
                log.info("stopping while the database is unavailable (for %.1fs, %d tries)",
                         time.monotonic() - (self.outage.began or 0), self.outage.tries)

        retrying: Retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, Stopped) or is_transient(exc)),
            wait=wait_exponential_jitter(multiplier=settings.db_retry_initial_seconds,
                                         max=settings.db_retry_max_seconds, jitter=settings.db_retry_initial_seconds),
            stop=lambda _state: stop_event.is_set(),
            sleep=sleep,
            before_sleep=self.outage.failed,
            retry_error_callback=stopped,
        )
        result: T | None = retrying(attempt)
        return result

    def _release_own_leases(self) -> None:
        """Free the payouts and sources this worker leased before an outage or a cancelled transaction: none of that
        work is in flight any more (the stage that held them was interrupted; rail calls are made only between
        committed transactions), so it may be claimed again at once. A payout left ``sending`` is looked up on its
        rail before anything is sent again, as after a crash."""
        me = self.rt.worker_id
        with self.rt.engine.begin() as conn:
            leases.void(conn, me)

    def _note(self, stage: str, n: int) -> None:
        if n:
            self.summary.add(stage, n)
            metrics.STAGE_ITEMS.labels(stage).inc(n)
            if self.observer:
                self.observer(stage, n)

    def run_once(self) -> Summary:
        """Poll every source and work every stage until nothing is left that is due now, waiting for abandoned rail
        calls (see the module docstring); then note the sources that failed permanently (:meth:`start` gave every
        failed source another chance, so they failed since)."""
        force = True
        while True:
            while self._pass(force=force) and not self.rt.stop_event.is_set():
                force = False
            if self.rt.stop_event.is_set() or not self._wait_for_abandoned_calls():
                break
        self.summary.failed_sources = self._failed_sources()
        return self.summary

    def _wait_for_abandoned_calls(self) -> bool:
        """Wait for the rails' abandoned calls; return whether any returned (so there may be work again). Calls
        still running past their bound are noted in :attr:`Summary.running_calls`."""
        returned = False
        for name in self.rt.plugins.rails:
            section = self.rt.settings.rails[name]
            guard = self.rt.guard(f"rail {name}", section.timeout_seconds)
            if not guard.busy or name in self.summary.running_calls:
                continue
            if name in self._waited and not guard.stuck_sending:
                continue  # a lookup cannot pay anything: it is not worth waiting for twice
            self._waited.add(name)
            bound = max(0.0, section.in_flight_seconds - guard.stuck_for)
            log.warning("rail %s: waiting up to %.0fs for its abandoned call (%s) to return before working its "
                        "payouts again", name, bound, guard.stuck_on or "a call")
            if guard.wait(bound, self.rt.stop_event):
                returned = True
            elif not self.rt.stop_event.is_set():
                self.summary.running_calls[name] = guard.stuck_on or "a call"
                log.error("rail %s: its abandoned call (%s) is still running after %.0fs; its payouts stay unknown "
                          "and are looked up by their key on the next run", name, self.summary.running_calls[name],
                          guard.stuck_for)
        return returned

    def _failed_sources(self) -> dict[str, str]:
        names = list(self.rt.plugins.sources)
        if not names:
            return {}
        with self.rt.engine.connect() as conn:
            return failed_sources(conn, names)

    def run_forever(self) -> None:
        """Work until the runtime's stop event is set; then return with all state resumable. A database outage is
        waited out (see the module docstring); any other error propagates."""
        while not self.rt.stop_event.is_set():
            busy = self._until_available(lambda: self._pass(force=False))
            if busy is None:  # told to stop while waiting for the database
                return
            if not busy:
                self.rt.stop_event.wait(self.rt.settings.daemon.idle_seconds)

    def _pass(self, force: bool) -> bool:
        """Give every stage up to STAGE_BATCHES batches, so a large backlog moves through all of them together
        (payouts go out while later events are still being read). Return whether anything was done."""
        rt = self.rt
        stopping = rt.stop_event.is_set
        busy = False
        sync_payees(rt)
        now = time.monotonic()
        for name in rt.plugins.sources:
            if stopping():
                return busy
            if force or name in self._more or now >= self._next_poll.get(name, 0):
                self._next_poll[name] = now + rt.settings.sources[name].poll_interval_seconds
                n, more = poll_batches(rt, name, STAGE_BATCHES)
                self.statistics.tick()
                self._more.discard(name)
                if more:
                    self._more.add(name)
                self._note("ingested", n)
                busy = busy or n > 0 or more
        for stage, step in (("calculated", lambda: calculate_batch(rt, self.versions)),
                            ("scheduled", lambda: schedule_batch(rt))):
            busy = self._repeat(stage, step) or busy
        failed_hooks = rt.plugins.failed_hooks()
        if failed_hooks and rt.plugins.rails and self.reminder.due(("failed hooks", *failed_hooks)):
            log.error("no payouts are sent while hook plugins %s have failed (see `payhub plugins list`); "
                      "logged again every %.0fs while they are", failed_hooks, self.reminder.every)
        for name in rt.plugins.rails:
            busy = self._repeat("disbursed", partial(disburse_rail, rt, name)) or busy
            if not stopping() and (force or now >= self._next_settle.get(name, 0)):
                self._next_settle[name] = now + rt.settings.rails[name].settle_interval_seconds
                busy = self._repeat("settled", partial(settle_rail, rt, name)) or busy
        if not stopping() and rt.settings.notify.statements != "off":  # off: the stage would do nothing
            from payhub.statements.stage import deliver_pass  # on first use: it imports Jinja2 and smtplib

            busy = self._repeat("statements", deliver_pass(rt)) or busy
        if self.checkpointer is not None:
            self.checkpointer.tick()
        return busy

    def _repeat(self, stage: str, step: Callable[[], int]) -> bool:
        """Run ``step`` up to STAGE_BATCHES times while it finds work; return whether it did any."""
        did = False
        for _ in range(STAGE_BATCHES):
            if self.rt.stop_event.is_set():
                break
            n = self._resolving_conflicts(stage, step)
            self._note(stage, n)
            self.statistics.tick()  # a fast-growing table is analyzed between batches, not only between passes
            if not n:
                break
            did = True
        return did

    def _resolving_conflicts(self, stage: str, step: Callable[[], int]) -> int:
        """``step()``, done again (up to CONFLICT_RETRIES times, after a short random pause) when PostgreSQL cancelled
        its transaction for a conflict with another replica's (deadlock, serialization failure). The transaction
        rolled back whole, as after a crash at that instant, so doing the step again is what the next pass would
        do; it is not an outage. Before it is done again, the payouts this worker leased in the step are freed
        (:meth:`_release_own_leases`), so the step finds them again instead of skipping them until their lease
        runs out. Returns 0 without doing it again when told to stop. Other errors, and a conflict past the
        retries, propagate."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                return step()
            except DBAPIError as exc:
                if attempt == CONFLICT_RETRIES or getattr(exc.orig, "sqlstate", None) not in CONFLICT_SQLSTATES:
                    raise
                log.info("%s: transaction cancelled for a conflict with another replica (%s); doing it again",
                         stage, describe(exc))
                if stage in LEASING_STAGES:
                    self._release_own_leases()
                if self.rt.stop_event.wait(random.uniform(0.0, CONFLICT_PAUSE_SECONDS * (attempt + 1))):
                    return 0  # stopping: the step's work waits for the next start (its leases are free)
        raise AssertionError("unreachable")
