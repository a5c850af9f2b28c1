"""Tax-form rules at scheduling, through the real pipeline on SQLite: holds for a missing, wrong or expired form,
backup withholding lines with exact amounts paid once through a FakeRail past the pre-send check, holds clearing when
the payees file brings the form, and the TIN never written to logs or the audit log."""

from __future__ import annotations

import json
import logging
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from test_program_rules import (
    BASE,
    PCT,
    all_payouts,
    deal,
    items,
    pay,
    payout_money,
    reward_rows,
    run,
    schedule,
    verified,
)

from payhub.db.schema import audit_log
from payhub.runtime import Runtime
from payhub.states import RewardKind
from payhub.testing import ManualClock

HEADER = "id,name,country,currency,tax_form,form_date,tin\n"
SSN = "536-90-4399"  # well formed (python-stdnum accepts it); a TIN that must never show
TAX = '[compliance.tax]\nenabled = true\n'


@pytest.fixture
def taxed(make_runtime: Any, tmp_path: Path) -> Any:
    """``taxed(payees_rows, tax="")``: program ``p`` (the reward is the deal amount), FakeRail ``r``, tax rules on."""

    def factory(rows: str, tax: str = "") -> Runtime:
        (tmp_path / "payees.csv").write_text(HEADER + rows)
        body = (BASE + f"\n[programs.p]\n{PCT}\n[rails.r]\nplugin = \"fake\"\nsettle_interval_seconds = 0.001\n\n"
                + TAX + textwrap.dedent(tax))
        rt: Runtime = make_runtime(body)
        return rt

    return factory


def rewrite_payees(tmp_path: Path, rows: str) -> None:
    (tmp_path / "payees.csv").write_text(HEADER + rows)


def held(rt: Runtime) -> dict[str, tuple[str | None, str | None]]:
    return {r.object_id: (r.hold_code, r.hold_reason) for r in reward_rows(rt) if r.status == "held"}


def audit_text(rt: Runtime) -> str:
    with rt.engine.connect() as conn:
        return "\n".join(json.dumps(list(row)) for row in conn.execute(select(audit_log)).all())


def test_a_us_payee_without_a_w9_is_held_and_paid_once_the_form_arrives(
        taxed: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rt = taxed("p1,One,US,USD,,,\n")
    caplog.set_level(logging.DEBUG)
    run(rt, deal("d1", "1000.00"))
    schedule(rt)
    assert all_payouts(rt) == []
    assert held(rt) == {"d1": ("tax_form", "payee p1 (country US) has no W-9 on file; the reward waits for a W-9 "
                                           "with a valid TIN")}
    schedule(rt)  # nothing changed: still held, no new audit entry
    assert [e for e in audit_text(rt).splitlines() if "reward.held" in e].__len__() == 1

    rewrite_payees(tmp_path, f"p1,One,US,USD,W-9,2026-01-05,{SSN}\n")
    schedule(rt)
    [payout] = all_payouts(rt)
    assert payout_money(payout) == ("p1", "1000.00", "USD")
    pay(rt)
    verified(rt)
    for text in (audit_text(rt), caplog.text):
        assert SSN not in text and SSN.replace("-", "") not in text


def test_withholding_pays_gross_less_24_percent_with_its_own_line(taxed: Any, tmp_path: Path) -> None:
    rt = taxed("p1,One,US,USD,,,\n", tax='us_without_w9 = "withhold"\n')
    run(rt, deal("d1", "1000.00"), deal("d2", "0.10"), deal("d3", "333.33"))
    schedule(rt)
    [payout] = all_payouts(rt)
    # 240.00 of 1000.00; 0.024 -> 0.02 of 0.10; 79.9992 -> 80.00 of 333.33 (half up to the cent)
    assert payout_money(payout) == ("p1", "1013.41", "USD")  # 1333.43 - 320.02
    lines = {r.id: r for r in reward_rows(rt)}
    withholding = sorted((json.loads(r.details)["withholds"], r.amount_minor) for r in lines.values()
                         if r.kind == RewardKind.WITHHOLDING)
    by_object = {r.object_id: r.id for r in lines.values() if r.kind == RewardKind.REWARD}
    assert withholding == [(by_object["d1"], -24000), (by_object["d2"], -2), (by_object["d3"], -8000)]
    assert sum(Decimal(amount) for _id, amount, _fx in items(rt, payout.id)) == Decimal("1013.41")
    schedule(rt)  # a second pass adds nothing
    assert len([r for r in reward_rows(rt) if r.kind == RewardKind.WITHHOLDING]) == 3
    rail = rt.plugins.rails["r"]
    pay(rt)
    assert [p.status for p in all_payouts(rt)] == ["paid"]
    assert [(str(i.amount), i.currency) for i in rail.sent] == [("1013.41", "USD")]  # type: ignore[attr-defined]
    verified(rt)


def test_a_carried_withholding_line_is_cancelled_when_the_w9_arrives_before_payment(
        taxed: Any, tmp_path: Path) -> None:
    rt = taxed("p1,One,US,USD,,,\n", tax='us_without_w9 = "withhold"\n\n[rails.r.min_payout]\nUSD = "5000"\n')
    run(rt, deal("d1", "1000.00"))
    schedule(rt)
    lines = [r for r in reward_rows(rt) if r.kind == RewardKind.WITHHOLDING]
    assert [(r.status, r.amount_minor) for r in lines] == [("carried", -24000)]
    rewrite_payees(tmp_path, f"p1,One,US,USD,W-9,2026-01-05,{SSN}\n")
    run(rt, deal("d2", "4500.00"))
    schedule(rt)
    [payout] = all_payouts(rt)
    assert payout_money(payout) == ("p1", "5500.00", "USD")  # nothing withheld: the W-9 is on file when it is paid
    assert [r.status for r in reward_rows(rt) if r.kind == RewardKind.WITHHOLDING] == ["cancelled"]
    assert "backup withholding no longer applies" in audit_text(rt)
    pay(rt)
    verified(rt)


def test_wrong_forms_and_an_expired_w8_hold(taxed: Any, tmp_path: Path) -> None:
    rows = ("us,Wrong,US,USD,W-8BEN,2025-01-01,\nca,Also Wrong,CA,USD,W-9,2025-01-01,\n"
            "de,Current,DE,USD,W-8BEN,2023-05-01,\nat,Expired,AT,USD,W-8BEN-E,2022-12-31,\n")
    rt = taxed(rows, tax='us_without_w9 = "withhold"\n')
    with ManualClock("2026-12-31T10:00:00Z") as clock:
        run(rt, *(deal(f"d-{p}", "10.00", payee=p) for p in ("us", "ca", "de", "at")))
        schedule(rt)
        assert [p.payee_id for p in all_payouts(rt)] == ["de"]  # valid through 2026-12-31
        reasons = {k: v[1] for k, v in held(rt).items()}
        assert set(reasons) == {"d-us", "d-ca", "d-at"}
        assert "wrong form" in reasons["d-us"] and "wrong form" in reasons["d-ca"]
        assert "expired after 2025-12-31" in reasons["d-at"]
        clock.set("2027-01-01T00:00:01Z")
        run(rt, deal("d-de-2", "10.00", payee="de"))
        schedule(rt)
        assert "expired after 2026-12-31" in held(rt)["d-de-2"][1]
        rewrite_payees(tmp_path, rows.replace("W-8BEN,2023-05-01", "W-8BEN,2026-12-15"))
        schedule(rt)
        assert "d-de-2" not in held(rt) and len(all_payouts(rt)) == 2
    verified(rt)


def test_a_tax_hold_names_the_rule_the_form_and_its_date_in_the_audit_log(taxed: Any) -> None:
    rt = taxed("de,Deutsch,DE,USD,W-8BEN,2022-05-01,\n")  # expired after 2025-12-31
    with ManualClock("2026-06-01T00:00:00Z"):
        run(rt, deal("d1", "100.00", payee="de", when="2026-05-01T00:00:00Z"))
        schedule(rt)
    with rt.engine.connect() as conn:
        [detail] = [json.loads(d) for d in conn.execute(select(audit_log.c.detail).where(
            audit_log.c.action == "reward.held")).scalars()]
    assert detail == {"code": "tax_form", "rule": "non_us_without_w8", "form": "W-8BEN", "form_date": "2022-05-01",
                      "tin_status": "missing",
                      "reason": "payee de (country DE) has a W-8BEN signed on 2022-05-01, which expired after "
                                "2025-12-31; the reward waits for a current W-8"}
