"""The ``payhub`` command line in the test's process, and test distributions whose plugins payhub finds by name."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from click.testing import CliRunner, Result


def invoke_cli(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """Run ``payhub *args`` in this process, with ``env`` added to the environment; return click's result (exit code,
    ``stdout``, ``stderr``).

    Exceptions propagate as tracebacks (they are bugs, not exit codes). The logging handlers and level and the
    SIGTERM/SIGINT handlers a command installs (``run`` does) are restored afterwards, so one test can run many.
    Plugins load through entry points as in production: the plugin under test must be installed, or registered in a
    ``*.dist-info`` directory on ``sys.path``.
    """
    from payhub.cli import main  # the whole command line: imported when first used

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        root.handlers[:], root.level = handlers, level
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def write_distribution(directory: str | os.PathLike[str], name: str, entry_points: str, *, version: str = "1.0",
                       modules: Mapping[str, str] | None = None) -> Path:
    """Write the distribution ``name`` into ``directory`` (a ``str`` or path-like, created if missing) as pip would
    install it, and return ``directory`` as a :class:`~pathlib.Path`.

    ``<name>-<version>.dist-info`` holds ``METADATA`` (``Name`` and ``Version``) and ``entry_points.txt`` (the text
    ``entry_points``: a group header such as ``[payhub.rails]``, then lines such as
    ``fake = payhub.testing:FakeRail``); each item of ``modules`` is written as ``<module>.py`` next to it. Once
    ``directory`` is on ``sys.path`` (and on ``PYTHONPATH`` for ``payhub`` subprocesses), settings load its plugins
    by name, and ``payhub plugins list`` names ``name`` and ``version``.
    """
    directory = Path(directory)
    dist = directory / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for module, source in (modules or {}).items():
        (directory / f"{module}.py").write_text(source)
    return directory
