"""A payee whose line of the payees file is skipped (a bad form_date, say) is not in the registry: its rewards are
held ``no_payee`` with why the line was skipped, from the latest read of the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_program_rules import deal, reward_rows, run, schedule, world  # noqa: F401  (world is a fixture)

PAYEES = ("id,name,country,currency,tax_form,form_date\n"
          "p1,One,DE,USD,W-8BEN,2024-01-02\n"
          "h4,Four,DE,USD,W-8BEN,2023-02-30\n"
          "h5,Five,DE,USD,W 8,2023-02-01\n")


def held(rt: Any) -> dict[str, tuple[str, str]]:
    return {r.payee_id: (r.hold_code, r.hold_reason) for r in reward_rows(rt) if r.status == "held"}


def test_the_hold_says_why_the_payees_line_was_skipped(world: Any, tmp_path: Path) -> None:  # noqa: F811
    rt = world('[programs.p]\ncalculator = "percentage"\npercent = "100"\n', payees=PAYEES)
    run(rt, deal("a", "10.00", payee="h4"), deal("b", "10.00", payee="h5"), deal("c", "10.00", payee="ghost"))
    schedule(rt)
    assert held(rt) == {
        "h4": ("no_payee", "payee h4 has no payout details in the registry: the payees file's line 3 was skipped: "
                           "form_date: '2023-02-30' is not a date (YYYY-MM-DD)"),
        "h5": ("no_payee", "payee h5 has no payout details in the registry: the payees file's line 4 was skipped: "
                           "tax_form: 'W 8' is not one of W-9, W-8BEN, W-8BEN-E or none"),
        "ghost": ("no_payee", "payee ghost has no payout details in the registry"),
    }
