"""``payhub run --once`` in a real process against the gift-card simulator whose orders answer late and which does
not deduplicate: a send abandoned after ``timeout_seconds`` is still on its way, so the run waits for it instead of
exiting, and no later run sends the payout again. Exactly one order per key reaches the provider."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import migrated, run_payhub, sql, write_site
from payhub_simulators.giftcard import GiftCardSimulator

API_KEY = "test-key"
RAIL = """
[programs.pct]
calculator = "percentage"
percent = "10"

[rails.gift]
plugin = "giftcard"
base_url = "{url}"
api_key = "{key}"
timeout_seconds = {timeout}
http_timeout_seconds = 20
retry_initial_seconds = 0
retry_max_seconds = 0
{extra}

[routing]
default_rail = "gift"
"""
PAYEES = "id,name,country,email\np1,Partner One,US,p1@example.com\np2,Partner Two,US,p2@example.com\n"
DEALS = ("id,type,occurred_at,payee_id,amount,currency,object_type\n"
         "d1,deal_won,2026-10-01T12:00:00Z,p1,500,USD,opp\nd2,deal_won,2026-10-01T12:00:00Z,p2,700,USD,opp\n")


@pytest.fixture
def slow_provider():
    """A gift-card simulator whose orders take 6 s and which stores a repeated external_id as a new order."""
    sim = GiftCardSimulator(api_key=API_KEY, latency=6, dedup=False).start()
    yield sim
    sim.stop()


def site(tmp_path: Path, db_url: str, sim: GiftCardSimulator, timeout: float, extra: str = "") -> Path:
    migrated(db_url)
    body = RAIL.format(url=sim.url, key=API_KEY, timeout=timeout, extra=extra)
    return write_site(tmp_path, db_url, body, deals=DEALS, payees=PAYEES)


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return run_payhub("-c", str(config), "run", "--once", "--no-progress", env=os.environ)


@pytest.mark.slow
def test_runs_after_a_send_timeout_send_each_payout_once(tmp_path: Path, db_url: str, slow_provider) -> None:
    config = site(tmp_path, db_url, slow_provider, timeout=2, extra="max_batch = 1")
    first = run_once(config)
    assert first.returncode == 0, first.stderr
    assert "rail gift: waiting up to " in first.stderr
    assert "for its abandoned call (send of payouts 1) to return" in first.stderr
    # it waited for the send it abandoned, then sent the second payout (max_batch = 1) in the same run
    assert {s for (s,) in sql(db_url, "SELECT status FROM payouts")} <= {"sent", "paid"}
    time.sleep(2)
    assert run_once(config).returncode == 0
    time.sleep(2)
    assert run_once(config).returncode == 0
    keys = [k for (k,) in sql(db_url, "SELECT idempotency_key FROM payouts ORDER BY id")]
    assert len(keys) == 2
    assert [len(slow_provider.orders(k)) for k in keys] == [1, 1]  # exactly one order per key
    assert len(slow_provider.orders()) == 2
    assert [s for (s,) in sql(db_url, "SELECT status FROM payouts ORDER BY id")] == ["paid", "paid"]


@pytest.mark.slow
def test_a_call_still_running_past_the_bound_exits_6(tmp_path: Path, db_url: str, slow_provider) -> None:
    config = site(tmp_path, db_url, slow_provider, timeout=1, extra="lookup_settle_seconds = 2\nmax_batch = 1")
    proc = run_once(config)
    assert proc.returncode == 6, proc.stderr
    assert ("error: rail gift: an abandoned call (send of payouts 1) is still running; its payouts stay unknown "
            "and are looked up by their key on the next run") in proc.stderr
    assert [s for (s,) in sql(db_url, "SELECT status FROM payouts ORDER BY id")] == ["unknown", "scheduled"]
