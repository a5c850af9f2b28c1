"""Run plugin calls with a timeout, so a plugin that hangs stalls only its own work.

Python cannot stop a running thread: a call that times out is abandoned and keeps its thread until it returns;
meanwhile further calls to the same plugin are refused, so a hung plugin never piles up threads.
"""

from __future__ import annotations

import threading
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

    @property
    def busy(self) -> bool:
        """True while an abandoned call is still running; new calls would be refused."""
        return self._stuck is not None and self._stuck.is_alive()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Return ``fn(*args, **kwargs)`` or re-raise its exception; raise PluginTimeout if it runs too long."""
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
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._stuck = thread
            raise PluginTimeout(f"{self.label} did not answer within {self.timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]
