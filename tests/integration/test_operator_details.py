"""Operator details, through the CLI on SQLite and PostgreSQL: a refused approval is on the audit record; a carried
reward's reason follows its payee's balance (new rewards, a cancelled one) and ``explain`` calls it carried."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_provenance import new_site

pytestmark = pytest.mark.slow  # each case runs the pipeline and the CLI many times

CARRY = 'min_payout = {USD = "25"}\n'
BELOW = "is below the minimum payout 25 USD of rail export"


def deal(object_id: str, amount: str, payee: str = "p2", day: int = 1) -> tuple[str, ...]:
    return (object_id, "deal_won", f"2026-10-{day:02d}T00:00:00Z", payee, amount, "USD", "")


def test_a_refused_approval_is_audited(tmp_path: Path, db_url: str, plugin_path: Path) -> None:
    site = new_site(tmp_path, db_url, deals=[deal("A-1", "950.00", "p1"), deal("A-2", "100.00", "p1", 2)])
    site.ok("run", "--once")
    dual, plain = site.reward_of("A-1", "p1"), site.reward_of("A-2", "p1")
    site.ok("rewards", "approve", str(dual), actor="finance:ann")
    again = site.cli("rewards", "approve", str(dual), "--note", "once more", actor="finance:ann")
    assert again.exit_code == 1 and "already approved by finance:ann" in again.stderr
    mixed = site.cli("rewards", "approve", str(dual), str(plain), "999", actor="finance:bob")
    sent = f"reward {plain} is sent in payout {site.payout_of(plain)}, not awaiting approval"
    assert mixed.exit_code == 1 and sent in mixed.stderr

    entries = site.json("audit", "query", "--action", "reward.approval_refused")
    assert [(e["actor"], e["subject_id"], e["outcome"]) for e in entries] == [
        ("finance:ann", str(dual), "refused"), ("finance:bob", str(dual), "refused"),
        ("finance:bob", str(plain), "refused")]
    assert entries[0]["detail"] == {"approver": "finance:ann", "note": "once more", "reason": (
        f"reward {dual} is already approved by finance:ann; it needs a different second approver")}
    # The reward that was fine is named as refused with the others; reward 999 does not exist, so has no entry.
    assert entries[1]["detail"]["reason"] == (f"not approved: the command also named reward {plain}, reward 999, "
                                              "which were refused")
    assert entries[2]["detail"]["reason"] == sent
    assert site.sql("SELECT approver FROM approvals WHERE reward_id = :r", r=dual) == [("finance:ann",)]
    assert "audit log OK" in site.ok("audit", "verify").stdout


def test_a_carried_rewards_reason_follows_its_payees_balance(tmp_path: Path, db_url: str, plugin_path: Path) -> None:
    site = new_site(tmp_path, db_url, CARRY, deals=[deal("C-1", "100.00")])
    site.ok("run", "--once")
    first = site.reward_of("C-1", "p2")

    def reasons() -> dict[int, str]:
        return {r["id"]: r["reason"] for r in site.json("rewards", "list", "--payee", "p2")
                if r["status"] == "carried"}

    assert reasons() == {first: f"net balance 10.00 USD {BELOW}"}

    site.add(deal("C-2", "50.00", day=2))
    site.ok("run", "--once")
    second = site.reward_of("C-2", "p2")
    assert reasons() == {first: f"net balance 15.00 USD {BELOW}", second: f"net balance 15.00 USD {BELOW}"}
    carried = [(e["subject_id"], e["detail"]) for e in site.json("audit", "query", "--action", "reward.carried")]
    assert carried == [
        (str(first), {"reason": f"net balance 10.00 USD {BELOW}"}),
        (str(first), {"reason": f"net balance 15.00 USD {BELOW}",
                      "previous_reason": f"net balance 10.00 USD {BELOW}"}),
        (str(second), {"reason": f"net balance 15.00 USD {BELOW}"})]

    text = site.ok("explain", str(first)).stdout
    assert f"Carried forward: net balance 15.00 USD {BELOW}" in text and "Held" not in text
    assert f"reward {first} 10.00 USD to p2 [carried] net balance 15.00 USD {BELOW}" in \
        site.ok("audit", "trace", "C-1").stdout

    # A carried reward cancelled: the balance left is netted again on the next pass, and its reason follows.
    site.ok("rewards", "cancel", str(second), "--reason", "duplicate deal")
    site.ok("run", "--once")
    assert reasons() == {first: f"net balance 10.00 USD {BELOW}"}
    site.ok("run", "--once")  # nothing changed since: nothing to write
    assert len(site.json("audit", "query", "--action", "reward.carried")) == 4

    site.add(deal("C-3", "200.00", day=3))
    site.ok("run", "--once")
    third = site.reward_of("C-3", "p2")
    payout = site.payout_of(third)
    assert site.payout_of(first) == payout and reasons() == {}
    assert site.json("explain", f"payout:{payout}")["net"]["total"] == "30.00"
    assert "audit log OK" in site.ok("audit", "verify").stdout


def test_a_cancelled_adjustment_makes_a_carried_balance_payable(tmp_path: Path, db_url: str,
                                                                plugin_path: Path) -> None:
    """A negative carried balance whose adjustment is cancelled is netted again and paid, without a new reward."""
    lost = ("L-1", "deal_lost", "2026-10-05T00:00:00Z", "p2", "", "", "")
    site = new_site(tmp_path, db_url, CARRY, deals=[deal("L-1", "300.00")])
    site.ok("run", "--once")  # 30.00 paid
    site.add(lost, deal("L-2", "250.00", day=6))
    site.ok("run", "--once")  # -30.00 + 25.00: carried
    adjustment, kept = site.reward_of("L-1", "p2", "deal_lost"), site.reward_of("L-2", "p2")
    assert {r["id"]: r["status"] for r in site.json("rewards", "list", "--payee", "p2")}[kept] == "carried"
    site.ok("rewards", "cancel", str(adjustment), "--reason", "the deal was not lost after all")
    site.ok("run", "--once")
    assert site.json("explain", f"payout:{site.payout_of(kept)}")["payout"]["amount"] == "25.00"
