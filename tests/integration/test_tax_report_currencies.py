"""Backup withholding in a currency other than USD: the payee is reportable on its program's form, and the gross and
the withheld amounts are listed per currency, not converted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_program_rules import deal
from test_tax_report import HEADER, pay_on, rows, site  # noqa: F401  (site is a fixture)

from payhub.runtime import Runtime
from payhub.testing import ManualClock


def test_withholding_in_yen_makes_the_payee_reportable_with_gross_and_withheld(site: Any,  # noqa: F811
                                                                               tmp_path: Path) -> None:
    rt: Runtime = site()
    (tmp_path / "payees.csv").write_text(HEADER + "jp,Yen Earner,US,,,,\neu,Euro Earner,US,,,,\n")
    with ManualClock("2026-02-01T00:00:00Z") as clock:
        pay_on(rt, clock, "2026-02-02", deal("y", "1001", payee="jp", currency="JPY"),
               deal("z", "10.00", payee="eu", currency="EUR"))
    found = rows(rt, 2026)
    jp = found["jp"]
    # 24 % of 1001 JPY is 240.24, withheld 240 (JPY has no minor units): the payout was 761 JPY
    assert (jp["reportable"], jp["other_currencies"], jp["other_withheld"]) == ("1099-NEC", "1001 JPY", "240 JPY")
    assert (jp["nec_box1"], jp["nec_box4"]) == ("0.00", "0.00")  # nothing in USD: nothing converted
    eu = found["eu"]
    assert (eu["reportable"], eu["other_currencies"], eu["other_withheld"]) == ("1099-NEC", "10.00 EUR", "2.40 EUR")
