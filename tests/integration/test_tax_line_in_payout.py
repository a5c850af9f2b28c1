"""A backup withholding line already in a payout when the payee's W-9 arrives: the payout is never rewritten, so it
is paid net unless an operator cancels it; then the released reward is paid gross and the line cancelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_program_rules import all_payouts, deal, pay, payout_money, reward_rows, run, schedule, verified
from test_tax_rules import SSN, audit_text, rewrite_payees, taxed  # noqa: F401  (taxed is a fixture)

from payhub.pipeline import payout_actions, reward_actions
from payhub.states import RewardKind


def statuses(rt: Any) -> dict[str, tuple[str, str | None]]:
    return {r.kind: (r.status, r.hold_code) for r in reward_rows(rt)}


def test_a_scheduled_line_stays_and_a_cancelled_payout_pays_gross(taxed: Any, tmp_path: Path) -> None:  # noqa: F811
    rt = taxed("p1,One,US,USD,,,\n", tax='us_without_w9 = "withhold"\n')
    run(rt, deal("d1", "1000.00"))
    schedule(rt)
    [first] = all_payouts(rt)
    assert payout_money(first) == ("p1", "760.00", "USD")

    rewrite_payees(tmp_path, f"p1,One,US,USD,W-9,2026-01-05,{SSN}\n")
    schedule(rt)  # the payout is not rewritten: the line stays in it
    assert [payout_money(p) for p in all_payouts(rt)] == [("p1", "760.00", "USD")]
    assert statuses(rt) == {RewardKind.REWARD: ("scheduled", None), RewardKind.WITHHOLDING: ("scheduled", None)}

    payout_actions.cancel(rt, first.id, "W-9 received: pay gross")
    assert statuses(rt) == {RewardKind.REWARD: ("held", "payout_failed"),
                            RewardKind.WITHHOLDING: ("held", "payout_failed")}
    [reward] = [r.id for r in reward_rows(rt) if r.kind == RewardKind.REWARD]
    reward_actions.release(rt, [reward], "W-9 received")  # the reward alone: its line comes with it
    schedule(rt)
    assert statuses(rt)[RewardKind.WITHHOLDING] == ("cancelled", None)
    assert "backup withholding no longer applies" in audit_text(rt)
    second = all_payouts(rt)[-1]
    assert payout_money(second) == ("p1", "1000.00", "USD") and second.id != first.id
    pay(rt)
    assert [p.status for p in all_payouts(rt)] == ["cancelled", "paid"]
    verified(rt)
