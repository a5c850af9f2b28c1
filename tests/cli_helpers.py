"""Driving payhub from tests as its users do: settings files, the ``payhub`` command (in-process or in a
subprocess), and the rows it wrote.

Test modules import from here, never from ``conftest``: when plugin tests run in the same session, ``conftest`` may
name another directory's module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import Result

from payhub.testing import invoke_cli as invoke
from payhub.testing import migrate_database

PAYHUB = [sys.executable, "-c", "from payhub.cli import main; main()"]
"""The command line of ``payhub`` in a new process of this interpreter."""

FILE_SITE = """\
[payees]
file = "payees.csv"

[sources.deals]
plugin = "file"
path = "deals.csv"
settle_seconds = 0
"""
"""Settings reading payees from ``payees.csv`` and deals from ``deals.csv`` (the file source ``deals``)."""

PAY_10_PERCENT = """\
[programs.pct]
calculator = "percentage"
percent = "10"

[rails.export]
plugin = "csv_export"
directory = "out"

[routing]
default_rail = "export"
"""
"""Settings of the program ``pct``, 10 % of each deal, paid through the csv_export rail ``export`` (into ``out``)."""


def write_config(directory: Path, db_url: str, body: str) -> Path:
    """Write a settings file with ``[database] url = db_url`` followed by ``body``; return its path."""
    path = directory / "payhub.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\n\n' + textwrap.dedent(body))
    return path


def write_site(directory: Path, db_url: str, body: str, *, deals: str, payees: str) -> Path:
    """Write ``deals.csv``, ``payees.csv`` and a settings file of :data:`FILE_SITE` followed by ``body``; return
    the settings file's path."""
    (directory / "deals.csv").write_text(deals)
    (directory / "payees.csv").write_text(payees)
    return write_config(directory, db_url, FILE_SITE + textwrap.dedent(body))


def migrated(db_url: str) -> None:
    """Create or upgrade payhub's tables in the database at ``db_url``: a new database is a copy of a template
    migrated once per test process (:func:`payhub.testing.migrate_database`)."""
    migrate_database(db_url)


def sql(db_url: str, query: str, **params: Any) -> list[Any]:
    """Run one statement with named ``params`` on the database at ``db_url``, committed; return its rows (tuples
    for comparison), or ``[]`` for a statement that returns none. A plain engine: on SQLite, a read takes no write
    lock from a daemon running on the same file."""
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(query), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def run_payhub(*args: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``payhub *args`` in a new process with exactly ``env`` (for the test plugins, the ``subprocess_env``
    fixture); its output is captured as text."""
    return subprocess.run([*PAYHUB, *args], env=dict(env), capture_output=True, text=True, timeout=timeout,
                          check=False)


class CliSite:
    """A directory holding ``payhub.toml``: ``cli(...)`` runs payhub on it in-process, ``ok(...)`` also asserts
    that it exited 0, ``json(...)`` parses the ``--format json`` output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "payhub.toml"

    def cli(self, *args: str, actor: str | None = None) -> Result:
        return invoke("-c", str(self.config), *(["--actor", actor] if actor else []), *args)

    def ok(self, *args: str, actor: str | None = None) -> Result:
        result = self.cli(*args, actor=actor)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--format", "json").stdout)
