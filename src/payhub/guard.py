"""Run plugin calls with a timeout, so a plugin that hangs stalls only its own work.

Python cannot stop a running thread: a call that times out is abandoned and keeps its thread until it returns;
meanwhile further calls to the same plugin are refused, so a hung plugin never piles up threads. :meth:`Guard.wait`
lets a process that is about to exit wait for an abandoned call first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from payhub.errors import PluginTimeout

T = TypeVar("T")


class Guard:
    """Serialises calls to one plugin and enforces ``timeout`` seconds on each."""

    def __init__(self, label: str, timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        self._stuck: threading.Thread | None = None
        self.stuck_on = ""  # what the abandoned call was doing, as the caller described it
        self.stuck_sending = False  # whether the abandoned call may hand money to a provider
        self._started = 0.0  # monotonic time the abandoned call started

    @property
    def busy(self) -> bool:
        """True while an abandoned call is still running; new calls would be refused."""
        return self._stuck is not None and self._stuck.is_alive()

    @property
    def stuck_for(self) -> float:
        """Seconds since the abandoned call started (0 when there is none)."""
        return time.monotonic() - self._started if self.busy else 0.0

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait up to ``seconds`` (less if ``stop`` is set) for the abandoned call to return; return whether it has."""
        deadline = time.monotonic() + seconds
        while self.busy and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0 or self._stuck is None:
                break
            self._stuck.join(min(left, 0.2))  # short slices, so that a stop request is seen
        return not self.busy

    def call(self, fn: Callable[..., T], /, *args: Any, doing: str = "", sending: bool = False, **kwargs: Any) -> T:
        """Return ``fn(*args, **kwargs)`` or re-raise its exception; raise PluginTimeout if it runs too long.

        ``doing`` describes the call (for example ``send of payouts 17, 18``) and ``sending`` says whether it may
        hand money to a provider; an abandoned call keeps them in :attr:`stuck_on` and :attr:`stuck_sending`."""
        if self._stuck is not None:
            if self._stuck.is_alive():
                raise PluginTimeout(f"{self.label}: an earlier call has not returned yet")
            self._stuck = None
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"plugin:{self.label}", daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._stuck, self._started, self.stuck_on, self.stuck_sending = thread, started, doing, sending
            raise PluginTimeout(f"{self.label} did not answer within {self.timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]
