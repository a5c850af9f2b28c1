"""Logging set-up: human-readable text or one JSON object per line (``log.format``); :class:`Reminder` keeps a
condition that lasts from filling the log."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable

from payhub.settings import LogSettings
from payhub.termsafe import VisibleFormatter


def setup_logging(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        from pythonjsonlogger.json import JsonFormatter  # here: text logs need none of it

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        # Messages quote CRM and provider text: control characters are shown escaped, never sent to the terminal.
        handler.setFormatter(VisibleFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("stevedore", "httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


REMIND_SECONDS = 60.0
"""How often a condition that lasts (a failed hook plugin, an FX rate provider failing) is logged again."""


class Reminder:
    """When to log conditions that last: at once when one begins (or changes, a changed one being another
    condition), then at most every ``every`` seconds while it stays the same. ``clock`` is monotonic seconds."""

    def __init__(self, every: float = REMIND_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._logged: dict[Hashable, float] = {}  # condition -> when it was last logged, within ``every``
        self._lock = threading.Lock()

    def due(self, condition: Hashable) -> bool:
        """Whether to log ``condition`` now: True when it was not logged in the last ``every`` seconds (and note
        that it is logged now)."""
        now = self._clock()
        with self._lock:
            self._logged = {seen: at for seen, at in self._logged.items() if now - at < self.every}
            if condition in self._logged:
                return False
            self._logged[condition] = now
            return True
