"""Shared fixtures: settings files, SQLite and PostgreSQL databases, and a test distribution of plugins; the rule that
says which tests are slow, and the report of tests that break it.

The test distribution is a real ``*.dist-info`` directory put on ``sys.path`` (and on ``PYTHONPATH`` for
subprocesses), so plugins are found through entry points exactly as a third party's would be, including one
whose import raises.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path[:0] = [str(Path(__file__).parent / kind) for kind in ("unit", "integration", "acceptance")]

RAM_DISK = Path("/dev/shm")
RAM_DISK_ROOM = 2 * 1024**3


def _temporary_files_in_memory() -> None:
    """Unless ``TMPDIR`` names a place, put temporary files (``tmp_path``, hence the SQLite databases) on the RAM disk
    when the machine has one with :data:`RAM_DISK_ROOM` bytes free: on a busy disk, most of a database test's time is
    spent waiting for SQLite's fsyncs. Subprocesses inherit the choice."""
    if "TMPDIR" in os.environ or not os.access(RAM_DISK, os.W_OK):
        return
    room = os.statvfs(RAM_DISK)
    if room.f_bavail * room.f_frsize >= RAM_DISK_ROOM:
        os.environ["TMPDIR"] = str(RAM_DISK)
        tempfile.tempdir = None  # tempfile reads TMPDIR again


_temporary_files_in_memory()

from cli_helpers import migrated, write_config  # noqa: E402

from payhub.runtime import Runtime  # noqa: E402
from payhub.settings import load_settings  # noqa: E402
from payhub.testing import throwaway_database, write_distribution  # noqa: E402

SLOW_SECONDS = 5.0
"""A test that takes longer (set-up, call and tear-down) must be marked slow; the run reports those that are not."""

ACCEPTANCE = Path(__file__).parent / "acceptance"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow, before ``-m`` selects, every test of ``tests/acceptance`` (subprocesses, daemons, crashes) and every
    test that runs on PostgreSQL (the ``postgres`` marker): ``-m "not slow"`` keeps the unit tests and the in-process
    tests on SQLite (README, "Run the tests")."""
    for item in items:
        if item.get_closest_marker("slow") is None and (
                item.path.is_relative_to(ACCEPTANCE) or item.get_closest_marker("postgres") is not None):
            item.add_marker(pytest.mark.slow)


_unmarked_seconds: dict[str, float] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the time of tests not marked slow; in a pytest-xdist worker, first make the captured output UTF-8 (the
    hostile-input tests log lone surrogates, which a worker cannot send)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                           for title, text in report.sections]
    if "slow" not in report.keywords:
        _unmarked_seconds[report.nodeid] = _unmarked_seconds.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Add a warning to the summary for each test not marked slow that took over :data:`SLOW_SECONDS`."""
    for nodeid, seconds in sorted(_unmarked_seconds.items(), key=lambda item: -item[1]):
        if seconds > SLOW_SECONDS:
            message = warnings.WarningMessage(
                pytest.PytestWarning(f"took {seconds:.1f} s, over {SLOW_SECONDS:g} s: mark it @pytest.mark.slow"),
                pytest.PytestWarning, __file__, 0)
            config.hook.pytest_warning_recorded.call_historic(
                kwargs={"warning_message": message, "when": "runtest", "nodeid": nodeid, "location": None})


ENTRY_POINTS = """\
[payhub.rails]
fake = payhub.testing:FakeRail
ledger = payhub.testing:LedgerRail
broken_rail = payhub_broken_plugin:BrokenRail
secret_rail = payhub_test_secret:SecretRail

[payhub.sources]
fake = payhub.testing:FakeSource

[payhub.calculators]
broken_calc = payhub_broken_plugin:BrokenCalculator
raising = payhub_test_calculators:Raising
capped = payhub_test_calculators:Capped

[payhub.hooks]
deny_big = payhub_test_hooks:DenyBig
misspelt = payhub_test_hooks:Misspelt
audit_sink = payhub_test_hooks:AuditSink
"""

BROKEN_MODULE = 'raise RuntimeError("this plugin is broken on purpose")\n'

TEST_CALCULATORS = '''
from decimal import Decimal
from payhub.api import Calculator, RewardLine

class Raising(Calculator):
    def calculate(self, event, history):
        if event.object_id.endswith("boom"):
            raise ZeroDivisionError("bug in calculator")
        return []

class Capped(Calculator):
    """10 EUR per event, at most 25 EUR per payee over the program's history."""
    def calculate(self, event, history):
        paid = history.total_rewarded(self.program, event.payee_id, "EUR")
        amount = min(Decimal("10"), Decimal("25") - paid)
        return [RewardLine(event.payee_id, amount, "EUR")] if amount > 0 else []
'''

TEST_HOOKS = '''
import json
from decimal import Decimal
from payhub.api import ConfigPath, PluginSettings, ScreenDecision, hookimpl

class Misspelt:
    def __init__(self, settings):
        pass

    @hookimpl
    def payhub_screen_payot(self, payout):
        return None


class AuditSinkSettings(PluginSettings):
    path: ConfigPath


class AuditSink:
    """Appends every committed audit entry to a JSON-lines file."""
    settings_model = AuditSinkSettings

    def __init__(self, settings):
        self.path = settings.path

    @hookimpl
    def payhub_audit_entry(self, entry):
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\\n")


class DenyBig:
    def __init__(self, settings):
        self.limit = Decimal("1000")

    @hookimpl
    def payhub_screen_payout(self, payout):
        if payout.amount > self.limit:
            return ScreenDecision(False, f"over screening limit {self.limit}")
        return ScreenDecision(True)
'''


TEST_SECRET = '''
from pydantic import SecretStr
from payhub.testing import FakeRail, FakeRailSettings

class SecretRailSettings(FakeRailSettings):
    api_key: SecretStr
    base_url: str = "http://127.0.0.1:9"

class SecretRail(FakeRail):
    settings_model = SecretRailSettings
'''


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the test distribution; on sys.path for the whole session."""
    root = write_distribution(tmp_path_factory.mktemp("site"), "payhub-test-plugins", ENTRY_POINTS, modules={
        "payhub_broken_plugin": BROKEN_MODULE, "payhub_test_calculators": TEST_CALCULATORS,
        "payhub_test_hooks": TEST_HOOKS, "payhub_test_secret": TEST_SECRET})
    sys.path.insert(0, str(root))
    return root


@pytest.fixture
def subprocess_env(plugin_path: Path) -> dict[str, str]:
    """Environment for running ``payhub`` in a subprocess with the test plugins visible."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    with throwaway_database(request.param, tmp_path, pytest.skip) as url:
        yield url


@pytest.fixture(scope="module", params=DATABASES)
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """As ``db_url``, one per test module: for modules whose tests all read what one set-up wrote."""
    with throwaway_database(request.param, tmp_path_factory.mktemp("database"), pytest.skip) as url:
        yield url


@pytest.fixture
def make_runtime(tmp_path: Path, db_url: str, plugin_path: Path) -> Iterator[Any]:
    """``make_runtime(body)``: a migrated database plus a Runtime with plugins loaded from ``body`` settings."""
    made: list[Runtime] = []

    def factory(body: str, *, migrate_db: bool = True) -> Runtime:
        config = write_config(tmp_path, db_url, body)
        if migrate_db:
            migrated(db_url)
        rt = Runtime(load_settings(config))
        rt.load_plugins()
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        rt.close()
