"""Logging set-up: human-readable text or one JSON object per line (``log.format``)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from payhub.settings import LogSettings
from payhub.termsafe import VisibleFormatter


def setup_logging(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
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
