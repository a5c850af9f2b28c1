"""A clock that moves only when the test says, standing in for payhub's clock (:func:`payhub.clock.utcnow`)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from types import TracebackType

from payhub import clock

_INSTALLING = threading.Lock()
"""Serialises :meth:`ManualClock.install` and :meth:`ManualClock.uninstall` across clocks."""


class ManualClock:
    """A controllable UTC clock. While installed (``with clock:``, or :meth:`install` / :meth:`uninstall`), every
    time payhub reads through :func:`payhub.clock.utcnow` (backoffs, ``next_attempt_at``, lookup settle windows,
    dedup and return windows, lease expiry on SQLite, audit timestamps) is this clock's :meth:`now`.

    It starts at ``start`` (an aware datetime, a date meaning midnight UTC, or ISO 8601 text with an offset such as
    ``"2026-01-01T09:00:00Z"`` or a date alone; default: the system time when created) and moves only by
    :meth:`advance` or :meth:`set`, never backwards. Waits payhub measures on the monotonic clock (a rail call
    abandoned after ``timeout_seconds``; the daemon loop's poll and settle intervals) are not affected, and
    PostgreSQL compares leases with its own clock. Installing is process-wide and stacks: clocks are uninstalled in
    the reverse order of their installs (the same clock may be installed again on top of itself), and uninstalling a
    clock that is not the one payhub reads now raises RuntimeError. Do not share a process with a daemon thread that
    must see real time. Thread-safe.
    """

    def __init__(self, start: datetime | date | str | None = None) -> None:
        self._now = clock.system_now() if start is None else _aware(start, "ManualClock(start)")
        self._lock = threading.Lock()
        self._previous: list[Callable[[], datetime]] = []

    def __repr__(self) -> str:
        return f"ManualClock({self.now().isoformat()!r})"

    def now(self) -> datetime:
        """The clock's time, aware UTC."""
        with self._lock:
            return self._now

    def advance(self, by: timedelta | float | Decimal) -> datetime:
        """Move forward by ``by`` (a timedelta, or seconds: int, float or Decimal); return the new time. A negative
        step raises ValueError, a boolean or anything else TypeError."""
        if isinstance(by, timedelta):
            step = by
        elif isinstance(by, int | float | Decimal) and not isinstance(by, bool):
            if not (by.is_finite() if isinstance(by, Decimal) else math.isfinite(by)):
                raise ValueError(f"a clock advances by a finite number of seconds, not {by}")
            step = timedelta(seconds=float(by))
        else:
            raise TypeError(f"advance takes a timedelta or a number of seconds, not {type(by).__name__} {by!r}")
        if step < timedelta(0):
            raise ValueError(f"a clock never goes backwards: advance by {_seconds(step)} s")
        with self._lock:
            self._now += step
            return self._now

    def set(self, moment: datetime | date | str) -> datetime:
        """Move forward to ``moment`` (as ``start`` is given); return it. An earlier moment raises ValueError."""
        target = _aware(moment, "ManualClock.set")
        with self._lock:
            if target < self._now:
                raise ValueError(f"a clock never goes backwards: set to {target.isoformat()}, before "
                                 f"{self._now.isoformat()}")
            self._now = target
            return self._now

    @property
    def installed(self) -> bool:
        """Whether payhub reads its time from this clock now."""
        return clock.source == self.now

    def install(self) -> None:
        """Make :func:`payhub.clock.utcnow` read this clock until :meth:`uninstall`."""
        with _INSTALLING:
            self._previous.append(clock.source)
            clock.source = self.now

    def uninstall(self) -> None:
        """Give payhub back the clock it read before the latest :meth:`install`. Raise RuntimeError when this clock
        is not installed, or when it is not the one payhub reads now (another was installed after it and is still
        installed: uninstall that one first)."""
        with _INSTALLING:
            if not self._previous:
                raise RuntimeError(f"{self!r} is not installed: uninstall only a clock that install() installed")
            if clock.source != self.now:
                current = clock.source
                shown = repr(getattr(current, "__self__", current))
                raise RuntimeError(f"{self!r} is not the clock payhub reads now ({shown} is): clocks are "
                                   "uninstalled in the reverse order of their installs")
            clock.source = self._previous.pop()

    def __enter__(self) -> ManualClock:
        self.install()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.uninstall()


def _aware(value: object, what: str) -> datetime:
    """``value`` (an aware datetime, a date, or ISO 8601 text) as aware UTC; TypeError or ValueError naming ``what``."""
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = (datetime.combine(date.fromisoformat(text), time(0), UTC) if len(text) == 10
                      else datetime.fromisoformat(text))
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not ISO 8601 text (e.g. '2026-01-01T09:00:00Z')") from None
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(0), UTC)
    else:
        raise TypeError(f"{what} takes an aware datetime, a date or ISO 8601 text, not {type(value).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} needs an aware time, with a UTC offset (datetime(..., tzinfo=UTC) or "
                         f"'2026-01-01T09:00:00Z'), not the naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _seconds(step: timedelta) -> str:
    seconds = step.total_seconds()
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)
