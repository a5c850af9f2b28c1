"""A clock that moves only when the test says, standing in for payhub's clock (:func:`payhub.clock.utcnow`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType

from payhub import clock


class ManualClock:
    """A controllable UTC clock. While installed (``with clock:``, or :meth:`install` / :meth:`uninstall`), every
    time payhub reads through :func:`payhub.clock.utcnow` (backoffs, ``next_attempt_at``, lookup settle windows,
    dedup and return windows, lease expiry on SQLite, audit timestamps) is this clock's :meth:`now`.

    It starts at ``start`` (aware; default: the system time when created) and moves only by :meth:`advance` or
    :meth:`set`, never backwards. Waits payhub measures on the monotonic clock (a rail call abandoned after
    ``timeout_seconds``; the daemon loop's poll and settle intervals) are not affected, and PostgreSQL compares
    leases with its own clock. Installing is process-wide, so do not share a process with a daemon thread that must
    see real time. Thread-safe.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and (start.tzinfo is None or start.utcoffset() is None):
            raise ValueError("ManualClock needs an aware start time (UTC)")
        self._now = (start or clock.system_now()).astimezone(UTC)
        self._lock = threading.Lock()
        self._previous: list[Callable[[], datetime]] = []

    def now(self) -> datetime:
        """The clock's time, aware UTC."""
        with self._lock:
            return self._now

    def advance(self, by: timedelta | float) -> datetime:
        """Move forward by ``by`` (a timedelta, or seconds); return the new time."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"a clock does not go backwards (advance by {step})")
        with self._lock:
            self._now += step
            return self._now

    def set(self, moment: datetime) -> datetime:
        """Move forward to ``moment`` (aware); return it."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("ManualClock.set needs an aware time (UTC)")
        with self._lock:
            if moment < self._now:
                raise ValueError(f"a clock does not go backwards ({moment.isoformat()} < {self._now.isoformat()})")
            self._now = moment.astimezone(UTC)
            return self._now

    @property
    def installed(self) -> bool:
        """Whether payhub reads its time from this clock now."""
        return clock.source == self.now

    def install(self) -> None:
        """Make :func:`payhub.clock.utcnow` read this clock until :meth:`uninstall`."""
        self._previous.append(clock.source)
        clock.source = self.now

    def uninstall(self) -> None:
        """Give payhub back the clock it read before :meth:`install`."""
        if not self._previous:
            raise RuntimeError("this ManualClock is not installed")
        clock.source = self._previous.pop()

    def __enter__(self) -> ManualClock:
        self.install()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.uninstall()
