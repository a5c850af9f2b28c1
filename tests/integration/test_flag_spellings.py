"""A flag written with invisible or full-width characters, in the payees file or in the cap, is the same flag: the
cap cuts the payee's rewards (end to end: payees file, registry, calculation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_flag_caps import amounts, outcome, run, won, world  # noqa: F401  (world is a fixture)

from payhub.payees import sync_payees


@pytest.mark.parametrize(("payee_flag", "cap_flag"), [
    ("gov3\u200b", "gov3"), ("ｇｏｖ３", "gov3"), ("GOV3", "gov3\u200b"), ("gov3", "ｇｏｖ３"),
])
def test_a_differently_written_flag_is_capped(world: Any, tmp_path: Path,  # noqa: F811
                                              payee_flag: str, cap_flag: str) -> None:
    rt = world(f'[[compliance.gifts.flag_caps]]\nflag = "{cap_flag}"\namount = "150"\ncurrency = "USD"\n')
    (tmp_path / "payees.csv").write_text(f"id,name,country,flags\nx,Official,DE,{payee_flag}\n", encoding="utf-8")
    sync_payees(rt)
    run(rt, won("d1", "x"), won("d2", "x"))
    found = outcome(rt)
    assert amounts(found, "deals", "d1") == ["100.00"]
    assert amounts(found, "deals", "d2") == ["50.00"]  # 100 used of 150
