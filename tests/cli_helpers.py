"""Running the ``payhub`` CLI in-process from tests."""

from __future__ import annotations

import logging
import signal

from click.testing import CliRunner, Result

from payhub.cli import main


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in-process, leaving logging and signal handlers as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        root.handlers[:], root.level = handlers, level
        for sig, handler in saved.items():
            signal.signal(sig, handler)
