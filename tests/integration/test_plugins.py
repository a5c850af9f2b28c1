"""Plugins: loaded by name only, listed with their distribution, and isolated when they fail to load."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from cli_helpers import PAY_10_PERCENT, invoke, write_site

from payhub.plugins import load_plugins
from payhub.settings import load_settings
from payhub.testing import write_distribution

BROKEN = "RuntimeError: this plugin is broken on purpose"
DEALS = (
    "id,type,occurred_at,payee_id,amount,currency\n"
    "D-1,deal_won,2026-10-01T00:00:00Z,p1,1000.00,USD\n"
    "D-2,deal_won,2026-10-02T00:00:00Z,p2,200.00,USD\n"
    "D-3,deal_won,2026-10-03T00:00:00Z,p1,50.00,USD\n"
)
PAYEES = "id,name,country,rail\np1,Partner One,US,export\np2,Partner Two,DE,\n"


def site(directory: Path, body: str) -> Path:
    """A settings file with a SQLite database, deals and payees files next to it."""
    return write_site(directory, "sqlite:///payhub.db", body, deals=DEALS, payees=PAYEES)


def rows(directory: Path, query: str) -> list[tuple]:
    db = sqlite3.connect(directory / "payhub.db")
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


# ------------------------------------------------------------------------------------------------ allow-list


def test_only_plugins_named_in_settings_are_loaded(tmp_path: Path, plugin_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    sys.modules.pop("payhub_test_secret", None)
    sys.modules.pop("payhub_test_hooks", None)
    config = site(tmp_path, '[rails.export]\nplugin = "csv_export"\ndirectory = "out"\n')
    with caplog.at_level(logging.WARNING):
        plugins = load_plugins(load_settings(config))
    try:
        assert [(s.section, s.kind, s.plugin, s.state) for s in plugins.statuses] == [
            ("deals", "source", "file", "loaded"), ("export", "rail", "csv_export", "loaded")]
        assert set(plugins.rails) == {"export"} and set(plugins.sources) == {"deals"}
        assert not plugins.calculators
        # Installed but not named: never imported, so neither their code nor their failures run.
        assert "payhub_test_secret" not in sys.modules and "payhub_test_hooks" not in sys.modules
        assert "broken" not in caplog.text
    finally:
        plugins.close()

    config = site(tmp_path, '[rails.s]\nplugin = "secret_rail"\napi_key = "k"\n'
                            '[hooks.deny_big]\n')
    plugins = load_plugins(load_settings(config))
    plugins.close()
    assert "payhub_test_secret" in sys.modules and "payhub_test_hooks" in sys.modules
    assert plugins.hooks.get_plugin("deny_big") is not None


def test_disabled_section_is_not_loaded(tmp_path: Path, plugin_path: Path) -> None:
    config = site(tmp_path, '[rails.bad]\nplugin = "broken_rail"\nenabled = false\n')
    plugins = load_plugins(load_settings(config))
    plugins.close()
    assert [s.section for s in plugins.statuses] == ["deals"]
    assert invoke("-c", str(config), "config", "check").exit_code == 0


# ------------------------------------------------------------------------------------------------ plugins list


LISTED = """
    [programs.pct]
    calculator = "percentage"
    percent = "10"
    [programs.bonus]
    calculator = "broken_calc"
    [rails.export]
    plugin = "csv_export"
    directory = "out"
    [rails.fake]
    [rails.bad]
    plugin = "broken_rail"
    [hooks.deny_big]
"""


def test_plugins_list_json(tmp_path: Path, plugin_path: Path) -> None:
    result = invoke("-c", str(site(tmp_path, LISTED)), "plugins", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = {row["section"]: row for row in json.loads(result.stdout)}
    core = version("payhub")
    expected = {
        "deals": ("source", "file", "payhub", core, "loaded"),
        "pct": ("calculator", "percentage", "payhub", core, "loaded"),
        "bonus": ("calculator", "broken_calc", "payhub-test-plugins", "1.0", "failed"),
        "export": ("rail", "csv_export", "payhub", core, "loaded"),
        "fake": ("rail", "fake", "payhub-test-plugins", "1.0", "loaded"),
        "bad": ("rail", "broken_rail", "payhub-test-plugins", "1.0", "failed"),
        "deny_big": ("hook", "deny_big", "payhub-test-plugins", "1.0", "loaded"),
    }
    assert {name: (r["kind"], r["plugin"], r["distribution"], r["version"], r["state"])
            for name, r in listed.items()} == expected
    for name in ("bonus", "bad"):
        assert listed[name]["reason"].startswith("failed to load payhub_broken_plugin:Broken")
        assert listed[name]["reason"].endswith(BROKEN)
    assert all(listed[name]["reason"] is None for name in expected if expected[name][-1] == "loaded")


def test_plugins_list_table_and_csv(tmp_path: Path, plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from payhub.cli import output

    monkeypatch.setattr(output.console, "width", 300)
    config = str(site(tmp_path, LISTED))
    table = invoke("-c", config, "plugins", "list")
    assert table.exit_code == 0
    header = next(line for line in table.stdout.splitlines() if "section" in line)
    assert [c.strip() for c in header.strip("┃ \n").split("┃")] == [
        "section", "kind", "plugin", "distribution", "version", "state", "reason"]
    bad = next(line for line in table.stdout.splitlines() if " bad " in line)
    assert "broken_rail" in bad and "payhub-test-plugins" in bad and "failed" in bad and BROKEN in bad
    text = invoke("-c", config, "plugins", "list", "--format", "csv").stdout
    assert text.splitlines()[0] == "section,kind,plugin,distribution,version,state,reason"
    assert "fake,rail,fake,payhub-test-plugins,1.0,loaded," in text


def test_config_check_names_failed_plugins(tmp_path: Path, plugin_path: Path) -> None:
    result = invoke("-c", str(site(tmp_path, LISTED)), "config", "check")
    assert result.exit_code == 2
    assert f"  rails.bad: failed to load payhub_broken_plugin:BrokenRail: {BROKEN}" in result.stderr
    assert f"  programs.bonus: failed to load payhub_broken_plugin:BrokenCalculator: {BROKEN}" in result.stderr
    assert "rails.export" not in result.stderr


# ------------------------------------------------------------------------------------------------- isolation


def test_broken_rail_affects_only_its_own_payouts(tmp_path: Path, plugin_path: Path) -> None:
    config = str(site(tmp_path, """
        [programs.pct]
        calculator = "percentage"
        percent = "10"
        [rails.export]
        plugin = "csv_export"
        directory = "out"
        [rails.bad]
        plugin = "broken_rail"
        [routing]
        default_rail = "bad"
    """))
    assert invoke("-c", config, "db", "upgrade").exit_code == 0
    result = invoke("-c", config, "run", "--once")
    assert result.exit_code == 4, result.output  # a plugin failed to load: the rest was done
    assert f"rail bad is disabled: failed to load payhub_broken_plugin:BrokenRail: {BROKEN}" in result.stderr
    # p1 prefers the working rail: both of its rewards are paid in one payout.
    assert rows(tmp_path, "SELECT payee_id, rail, status, amount_minor FROM payouts") == [
        ("p1", "export", "sent", 10500)]
    assert len(list((tmp_path / "out").glob("payouts-*.csv"))) == 1
    # p2 is routed to the broken rail: held with the reason, not lost and not failed.
    held = rows(tmp_path, "SELECT payee_id, status, hold_code, hold_reason FROM rewards WHERE payee_id = 'p2'")
    assert len(held) == 1
    assert held[0][:3] == ("p2", "held", "no_rail")
    assert "rail bad is not available" in held[0][3] and BROKEN in held[0][3]
    assert rows(tmp_path, "SELECT count(*) FROM events WHERE status = 'calculated'") == [(3,)]


def test_broken_calculator_fails_its_calculations_only(tmp_path: Path, plugin_path: Path) -> None:
    (tmp_path / "more.csv").write_text("id,type,occurred_at,payee_id,amount,currency\n"
                                       "X-boom,deal_won,2026-10-04T00:00:00Z,p2,70.00,USD\n")
    config = str(site(tmp_path, """
        [sources.more]
        plugin = "file"
        path = "more.csv"
        settle_seconds = 0
        [programs.pct]
        calculator = "percentage"
        percent = "10"
        [programs.bonus]
        calculator = "broken_calc"
        [programs.buggy]
        calculator = "raising"
        [rails.export]
        plugin = "csv_export"
        directory = "out"
        [routing]
        default_rail = "export"
    """))
    assert invoke("-c", config, "db", "upgrade").exit_code == 0
    result = invoke("-c", config, "run", "--once")
    assert result.exit_code == 4, result.output  # a plugin failed to load: the rest was done
    calcs = rows(tmp_path, "SELECT e.object_id, c.program, c.status, c.reason FROM calculations c "
                           "JOIN events e ON e.id = c.event_id ORDER BY e.object_id, c.program")
    by = {(obj, program): (status, reason) for obj, program, status, reason in calcs}
    assert len(by) == 12
    for obj in ("D-1", "D-2", "D-3", "X-boom"):
        assert by[(obj, "pct")] == ("rewarded", None)
        status, reason = by[(obj, "bonus")]
        assert status == "failed"
        assert reason == ("calculator plugin unavailable: failed to load payhub_broken_plugin:BrokenCalculator: "
                          + BROKEN)
    # A calculator that raises on one event fails that (program, event) only.
    assert by[("X-boom", "buggy")] == ("failed", "calculator error: ZeroDivisionError: bug in calculator")
    assert by[("D-1", "buggy")] == ("not_eligible", "the calculator returned no reward line")  # it says no more
    assert rows(tmp_path, "SELECT program, amount_minor FROM rewards ORDER BY id") == [
        ("pct", 10000), ("pct", 2000), ("pct", 500), ("pct", 700)]
    assert rows(tmp_path, "SELECT count(*), sum(amount_minor) FROM payouts WHERE status = 'sent'") == [(2, 13200)]
    # The failure is visible to people: in the audit log and in `audit trace`.
    details = [json.loads(d) for (d,) in rows(tmp_path, "SELECT detail FROM audit_log "
                                                           "WHERE action = 'event.calculated'")]
    assert len(details) == 4 and all(BROKEN in d["programs"]["bonus"] for d in details)
    trace = invoke("-c", config, "audit", "trace", "D-1")
    assert "program bonus: failed (calculator plugin unavailable: failed to load " in trace.stdout


CAPS_PLUGIN = """
from payhub.testing import FakeRail

class NoCapabilities(FakeRail):
    @property
    def capabilities(self):
        raise ConnectionError("provider metadata endpoint is down")
"""


def test_rail_whose_capabilities_fail_is_isolated_at_start(tmp_path: Path, plugin_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = str(site(tmp_path, """
        [programs.pct]
        calculator = "percentage"
        percent = "10"
        [rails.export]
        plugin = "csv_export"
        directory = "out"
        [rails.flaky]
        plugin = "no_caps"
        [routing]
        default_rail = "flaky"
    """))
    assert "no rail plugin named 'no_caps'" in invoke("-c", config, "config", "check").stderr
    # Installed after a first load in this process: the next load finds it.
    extra = write_distribution(tmp_path / "site-extra", "payhub-caps-plugin",
                               "[payhub.rails]\nno_caps = payhub_caps_plugin:NoCapabilities\n", version="2.0",
                               modules={"payhub_caps_plugin": CAPS_PLUGIN})
    monkeypatch.syspath_prepend(str(extra))
    listed = {r["section"]: r for r in json.loads(invoke("-c", config, "plugins", "list", "--format", "json").stdout)}
    assert (listed["flaky"]["distribution"], listed["flaky"]["version"], listed["flaky"]["state"]) == (
        "payhub-caps-plugin", "2.0", "failed")
    assert listed["flaky"]["reason"] == "failed to start: ConnectionError: provider metadata endpoint is down"
    assert invoke("-c", config, "db", "upgrade").exit_code == 0
    result = invoke("-c", config, "run", "--once")
    assert result.exit_code == 4, result.output  # a plugin failed to start: the rest was done
    assert rows(tmp_path, "SELECT payee_id, rail, status FROM payouts") == [("p1", "export", "sent")]
    assert rows(tmp_path, "SELECT payee_id, status, hold_code FROM rewards WHERE payee_id = 'p2'") == [
        ("p2", "held", "no_rail")]


EXPORT_WITH_SINK = PAY_10_PERCENT + '[hooks.audit_sink]\npath = "audit.jsonl"\n'


@pytest.mark.slow  # a whole pipeline run
def test_hook_with_an_unknown_hook_name_is_reported_and_the_rest_runs(tmp_path: Path, plugin_path: Path) -> None:
    config = site(tmp_path, EXPORT_WITH_SINK + "[hooks.misspelt]\n")
    loaded = load_plugins(load_settings(config))
    status = {s.section: s for s in loaded.statuses}
    assert status["misspelt"].state == "failed"
    assert "payhub_screen_payot" in (status["misspelt"].reason or "")
    assert status["audit_sink"].state == "loaded"
    loaded.close()
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    # Fail closed: while a configured hook is missing, rewards are calculated and scheduled but nothing is sent.
    assert invoke("-c", str(config), "run", "--once", "--no-progress").exit_code == 4
    assert not list((tmp_path / "out").glob("*.csv"))
    assert rows(tmp_path, "SELECT DISTINCT status FROM payouts") == [("scheduled",)]
    config.write_text(config.read_text().replace("[hooks.misspelt]\n", ""))
    assert invoke("-c", str(config), "run", "--once", "--no-progress").exit_code == 0
    assert len(list((tmp_path / "out").glob("*.csv"))) == 1
    assert rows(tmp_path, "SELECT DISTINCT status FROM payouts") == [("sent",)]


def test_audit_hook_sees_daemon_and_cli_entries(tmp_path: Path, plugin_path: Path) -> None:
    """Every committed audit entry reaches the audit hook, including those CLI commands write."""
    config = site(tmp_path, EXPORT_WITH_SINK)
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    assert invoke("-c", str(config), "run", "--once", "--no-progress").exit_code == 0
    assert invoke("-c", str(config), "--actor", "auditor:kim", "audit", "query", "--format", "json").exit_code == 0
    streamed = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    stored = rows(tmp_path, "SELECT seq, hash FROM audit_log ORDER BY seq")
    assert [(e["seq"], e["hash"]) for e in streamed] == stored
    assert streamed[-1]["action"] == "audit.query" and streamed[-1]["actor"] == "auditor:kim"
