"""The worker loop behind ``payhub run``: poll sources when due and drive every stage until told to stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from filelock import FileLock
from sqlalchemy import update

from payhub.db.engine import lock_sqlite_file, sqlite_file
from payhub.db.schema import payouts, sources
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll_batches, reset_failed_sources
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime

log = logging.getLogger(__name__)

STAGE_BATCHES = 10

Observer = Callable[[str, int], None]
"""Called with (stage, count) as work is done, for progress displays."""


@dataclass
class Summary:
    """What a run did, per stage."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("ingested", "calculated", "scheduled", "disbursed", "settled"), 0))

    def add(self, stage: str, n: int) -> None:
        self.counts[stage] += n


class Worker:
    """Runs the pipeline for one runtime. Call :meth:`start` first, then :meth:`run_once` or :meth:`run_forever`."""

    def __init__(self, rt: Runtime, observer: Observer | None = None) -> None:
        self.rt = rt
        self.observer = observer
        self.summary = Summary()
        self.versions: dict[str, int] = {}
        self._next_poll: dict[str, float] = {}
        self._next_settle: dict[str, float] = {}
        self._more: set[str] = set()  # sources that had more records ready when their poll stopped
        self._lock: FileLock | None = None

    def start(self) -> None:
        """Check the schema, take the SQLite file lock, reclaim this file's leases and record program versions."""
        rt = self.rt
        rt.require_schema()
        database = sqlite_file(rt.settings.database_url)
        if database is not None:
            self._lock = lock_sqlite_file(database)  # by the real path; refuses hard links
            with rt.engine.begin() as conn:  # we are the only daemon: leases of dead processes are void
                conn.execute(update(payouts).values(lease_owner=None, lease_until=None))
                conn.execute(update(sources).values(lease_owner=None, lease_until=None))
        self.versions = register_program_versions(rt)
        reset_failed_sources(rt)

    def stop(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _note(self, stage: str, n: int) -> None:
        if n:
            self.summary.add(stage, n)
            if self.observer:
                self.observer(stage, n)

    def run_once(self) -> Summary:
        """Poll every source and work every stage until nothing is left that is due now."""
        force = True
        while self._pass(force=force) and not self.rt.stop_event.is_set():
            force = False
        return self.summary

    def run_forever(self) -> None:
        """Work until the runtime's stop event is set; then return with all state resumable."""
        while not self.rt.stop_event.is_set():
            busy = self._pass(force=False)
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
                self._more.discard(name)
                if more:
                    self._more.add(name)
                self._note("ingested", n)
                busy = busy or n > 0 or more
        for stage, step in (("calculated", lambda: calculate_batch(rt, self.versions)),
                            ("scheduled", lambda: schedule_batch(rt))):
            busy = self._repeat(stage, step) or busy
        for name in rt.plugins.rails:
            busy = self._repeat("disbursed", partial(disburse_rail, rt, name)) or busy
            if not stopping() and (force or now >= self._next_settle.get(name, 0)):
                self._next_settle[name] = now + rt.settings.rails[name].settle_interval_seconds
                busy = self._repeat("settled", partial(settle_rail, rt, name)) or busy
        return busy

    def _repeat(self, stage: str, step: Callable[[], int]) -> bool:
        """Run ``step`` up to STAGE_BATCHES times while it finds work; return whether it did any."""
        did = False
        for _ in range(STAGE_BATCHES):
            if self.rt.stop_event.is_set():
                break
            n = step()
            self._note(stage, n)
            if not n:
                break
            did = True
        return did
