"""``payhub run --once`` exits non-zero when something needs an admin: 4 when a configured plugin failed to load,
5 when a source failed permanently (4 when both). Everything else due is done first; the daemon keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_helpers import PAY_10_PERCENT, PAYHUB, invoke, run_payhub, sql, write_site

from payhub.cli.daemon import EXIT_PLUGIN_FAILED, EXIT_SOURCE_FAILED
from payhub.testing import write_distribution

DEALS = ("id,type,occurred_at,payee_id,amount,currency\n"
         "D-1,deal_won,2026-10-01T00:00:00Z,p1,1000.00,USD\n"
         "D-2,deal_won,2026-10-02T00:00:00Z,p2,200.00,USD\n")
PAYEES = "id,name,country\np1,Partner One,US\np2,Partner Two,DE\n"
REFUSED_SOURCE = '''
from payhub.api import PermanentSourceError, Source

class RefusedSource(Source):
    def fetch(self, cursor, limit):
        raise PermanentSourceError("the CRM refused the credentials (HTTP 401): invalid_client")
'''
REFUSAL = "PermanentSourceError: the CRM refused the credentials (HTTP 401): invalid_client"
BROKEN = "RuntimeError: this plugin is broken on purpose"
CRM = '[sources.crm]\nplugin = "refused"\n'
BAD_RAIL = '[rails.bad]\nplugin = "broken_rail"\n'  # from the test distribution: its import raises


@pytest.fixture
def refused_source(tmp_path: Path, plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution whose source ``refused`` fails permanently on every fetch; returns its PYTHONPATH."""
    site = write_distribution(tmp_path / "site-refused", "payhub-refused-source",
                              "[payhub.sources]\nrefused = payhub_refused_source:RefusedSource\n",
                              modules={"payhub_refused_source": REFUSED_SOURCE})
    monkeypatch.syspath_prepend(str(site))
    return os.pathsep.join([str(site), str(plugin_path)])


def make_site(directory: Path, db_url: str, extra: str = "") -> str:
    """Deals in a CSV file, paid 10 % through the csv_export rail, plus ``extra`` sections; migrated."""
    config = write_site(directory, db_url, PAY_10_PERCENT + extra, deals=DEALS, payees=PAYEES)
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    return str(config)


def payouts(db_url: str) -> list[tuple[str, str, int]]:
    return sql(db_url, "SELECT payee_id, status, amount_minor FROM payouts ORDER BY payee_id")


def source_state(db_url: str, name: str) -> tuple[str, str | None]:
    [(status, reason)] = sql(db_url, "SELECT status, reason FROM sources WHERE name = :n", n=name)
    return status, reason


PAID = [("p1", "sent", 10000), ("p2", "sent", 2000)]


def test_a_run_with_nothing_failed_exits_0(tmp_path: Path, db_url: str, refused_source: str) -> None:
    config = make_site(tmp_path, db_url)
    result = invoke("-c", config, "run", "--once", "--no-progress")
    assert result.exit_code == 0, result.output
    assert payouts(db_url) == PAID


def test_a_source_that_failed_permanently_exits_5_after_everything_else_is_done(
        tmp_path: Path, db_url: str, refused_source: str) -> None:
    config = make_site(tmp_path, db_url, CRM)
    result = invoke("-c", config, "run", "--once", "--no-progress")
    assert result.exit_code == EXIT_SOURCE_FAILED == 5, result.output
    assert f"error: source crm failed permanently: {REFUSAL}" in result.stderr
    assert "error: plugin" not in result.stderr
    assert "disbursed" in result.stdout  # the summary is printed first
    assert payouts(db_url) == PAID  # the other source's deals were paid
    assert source_state(db_url, "crm") == ("failed", REFUSAL)
    # The next run gives the source another chance, and exits 5 again while it still fails.
    again = invoke("-c", config, "run", "--once", "--no-progress")
    assert again.exit_code == EXIT_SOURCE_FAILED, again.output
    assert payouts(db_url) == PAID


SCHEDULED = [("p1", "scheduled", 10000), ("p2", "scheduled", 2000)]


@pytest.mark.parametrize(("extra", "line", "after"), [
    (BAD_RAIL, f"error: plugin rails.bad (broken_rail) failed to load payhub_broken_plugin:BrokenRail: {BROKEN}",
     PAID),
    ('[programs.bonus]\ncalculator = "broken_calc"\n',
     f"error: plugin programs.bonus (broken_calc) failed to load payhub_broken_plugin:BrokenCalculator: {BROKEN}",
     PAID),
    # A hook that fails to register: nothing is sent (fail closed), everything before sending is done.
    ("[hooks.misspelt]\n", "error: plugin hooks.misspelt (misspelt) failed to register: PluginValidationError",
     SCHEDULED),
], ids=["rail", "calculator", "hook"])
def test_a_plugin_that_failed_to_load_exits_4_after_everything_else_is_done(
        tmp_path: Path, db_url: str, refused_source: str, extra: str, line: str,
        after: list[tuple[str, str, int]]) -> None:
    config = make_site(tmp_path, db_url, extra)
    result = invoke("-c", config, "run", "--once", "--no-progress")
    assert result.exit_code == EXIT_PLUGIN_FAILED == 4, result.output
    assert line in result.stderr
    assert "error: source" not in result.stderr
    assert payouts(db_url) == after


def test_both_in_a_real_process_exit_4_naming_each(tmp_path: Path, db_url: str, refused_source: str) -> None:
    config = make_site(tmp_path, db_url, CRM + BAD_RAIL)
    proc = run_payhub("-c", config, "run", "--once", "--no-progress", env={**os.environ, "PYTHONPATH": refused_source})
    assert proc.returncode == EXIT_PLUGIN_FAILED, proc.stderr
    assert "error: plugin rails.bad (broken_rail) failed to load" in proc.stderr
    assert f"error: source crm failed permanently: {REFUSAL}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert payouts(db_url) == PAID


def test_the_daemon_keeps_running_after_a_source_failed(tmp_path: Path, refused_source: str) -> None:
    db_url = f"sqlite:///{tmp_path / 'payhub.db'}"
    config = make_site(tmp_path, db_url, CRM + BAD_RAIL)
    env = {**os.environ, "PYTHONPATH": refused_source}
    proc = subprocess.Popen([*PAYHUB, "-c", config, "run", "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                [(failed, sent)] = sql(db_url, "SELECT (SELECT count(*) FROM sources WHERE status = 'failed'), "
                                               "(SELECT count(*) FROM payouts WHERE status = 'sent')")
            except sa.exc.OperationalError:
                failed = sent = 0
            if failed and sent == len(PAID):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]  # still running with a failed source and plugin
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "error: source crm" not in err and "error: plugin" not in err
    assert payouts(db_url) == PAID
