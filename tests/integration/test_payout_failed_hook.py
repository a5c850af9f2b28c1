"""``payhub_payout_failed`` is called, once the change is committed, for every status in which a payout stops
without being paid, with that status as ``outcome``: rejected, failed (retries exhausted), held (screening),
unresolved (a rail that cannot look it up) and cancelled by an operator through the CLI, in that command's process.
The hook is a real plugin, loaded by entry point from the settings."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from test_disburse import BASE, drain, payout, schedule

from payhub.runtime import Runtime
from payhub.testing import FakeRail

FAILED_LOG = '''
import json
from payhub.api import ConfigPath, PluginSettings, hookimpl

class FailedLogSettings(PluginSettings):
    path: ConfigPath

class FailedLog:
    """Appends each payhub_payout_failed call to a JSON-lines file."""
    settings_model = FailedLogSettings

    def __init__(self, settings):
        self.path = settings.path

    @hookimpl
    def payhub_payout_failed(self, payout, outcome, reason):
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"payout": payout.payout_id, "key": payout.idempotency_key, "outcome": outcome,
                                 "reason": reason}) + "\\n")
'''
RAILS = """
[rails.r]
plugin = "fake"
max_attempts = 1
retry_initial_seconds = 0
retry_max_seconds = 0
[rails.nl]
plugin = "fake"
lookup = false
retry_initial_seconds = 0
retry_max_seconds = 0
[hooks.deny_big]
[hooks.failed_log]
path = "failed.jsonl"
"""


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path, plugin_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, Path]:
    """A runtime with rails ``r`` (one attempt) and ``nl`` (no lookup, no dedup window), the screening hook
    ``deny_big`` and the hook plugin ``failed_log``; returns it and the settings file."""
    site = tmp_path / "site-failed-log"
    dist = site / "payhub_failed_log-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-failed-log\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[payhub.hooks]\nfailed_log = payhub_failed_log:FailedLog\n")
    (site / "payhub_failed_log.py").write_text(FAILED_LOG)
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "payees.csv").write_text("id,name,country,rail\np1,One,DE,\np2,Two,FR,\np3,Three,IT,\n"
                                         "p4,Four,DE,nl\np5,Five,FR,\n")
    rt = make_runtime(BASE + textwrap.dedent(RAILS))
    assert [s.section for s in rt.plugins.statuses if s.state != "loaded"] == []
    return rt, tmp_path / "payhub.toml"


def calls(directory: Path) -> list[dict[str, Any]]:
    path = directory / "failed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_stop_without_payment_calls_payout_failed(world: tuple[Runtime, Path]) -> None:
    rt, config = world
    directory = config.parent
    r: FakeRail = rt.plugins.rails["r"]  # type: ignore[assignment]
    nl: FakeRail = rt.plugins.rails["nl"]  # type: ignore[assignment]
    expected: list[tuple[int, str, str]] = []

    [p1] = schedule(rt, ("p1", "100"))
    r.plan("reject")
    drain(rt, "r")
    expected.append((p1.id, "rejected", "invalid beneficiary"))

    [_, p5] = schedule(rt, ("p5", "400"))
    r.plan("retryable")
    drain(rt, "r")
    expected.append((p5.id, "failed", "retries exhausted after 1 attempts: provider busy (503)"))

    *_, p3 = schedule(rt, ("p3", "5000"))
    drain(rt, "r")
    expected.append((p3.id, "held", "over screening limit 1000"))

    *_, p4 = schedule(rt, ("p4", "300"))
    assert p4.rail == "nl"
    nl.plan("timeout_before_accept")
    drain(rt, "nl")
    expected.append((p4.id, "unresolved", payout(rt, p4.id).reason))
    assert payout(rt, p4.id).reason.startswith("outcome unknown (read timeout); rail nl cannot look payouts up")

    *_, p2 = schedule(rt, ("p2", "200"))
    result = invoke("-c", str(config), "--actor", "ops:alice", "payouts", "cancel", str(p2.id),
                    "--reason", "duplicate claim")
    assert result.exit_code == 0, result.output
    expected.append((p2.id, "cancelled", "cancelled by operator: duplicate claim"))

    assert [(c["payout"], c["outcome"], c["reason"]) for c in calls(directory)] == expected
    keys = {c["payout"]: c["key"] for c in calls(directory)}
    assert keys == {payout(rt, pid).id: payout(rt, pid).idempotency_key for pid, _o, _r in expected}
    assert [payout(rt, pid).status for pid, _o, _r in expected] == [o for _p, o, _r in expected]
    # A payout that is paid does not call it.
    *_, p6 = schedule(rt, ("p1", "10"))
    drain(rt, "r")
    assert payout(rt, p6.id).status == "sent"
    assert len(calls(directory)) == len(expected)
