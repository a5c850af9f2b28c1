"""A clawback after backup withholding takes back the full gross: the withholding line is not something the payee
gave back. The withheld tax stays withheld, and the year's report nets the adjustment in box 1 and keeps box 4."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from sqlalchemy import select
from test_program_rules import BASE, CLAWBACK, deal, money, refund, run, schedule, verified
from test_tax_report import pay_on, rows

from payhub.db.schema import events, payouts, rewards
from payhub.pipeline import payout_actions
from payhub.runtime import Runtime
from payhub.testing import ManualClock


def test_a_refund_after_withholding_takes_back_the_gross(make_runtime: Any, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\nus,No Form,US\n")
    rt: Runtime = make_runtime(BASE + f"\n[programs.p]\n{CLAWBACK}event_types = [\"deal_won\"]\n"
                               '\n[rails.r]\nplugin = "fake"\nsettle_interval_seconds = 0.001\n' + textwrap.dedent("""
                               [compliance.tax]
                               enabled = true
                               us_without_w9 = "withhold"
                               [compliance.tax.boxes]
                               p = "1099-NEC-1"
                               """))
    with ManualClock("2026-02-01T00:00:00Z") as clock:
        pay_on(rt, clock, "2026-02-02", deal("a", "333.33", payee="us", when="2026-02-01T00:00:00Z"))
        pay_on(rt, clock, "2026-03-02", refund("a", "2026-03-01T00:00:00Z", payee="us"),
               deal("b", "1000.00", payee="us", when="2026-03-01T00:00:00Z"))
    with rt.engine.connect() as conn:
        found = [(r.object_id, r.transition, r.kind, money(r), r.status) for r in conn.execute(
            select(rewards, events.c.object_id, events.c.transition).join(events, events.c.id == rewards.c.event_id)
            .order_by(rewards.c.id))]
    assert found == [
        ("a", "won", "reward", "333.33", "paid"),
        ("a", "won", "withholding", "-80.00", "paid"),  # 24 % of 333.33, neither refunded nor reduced
        ("a", "refunded", "reward", "-333.33", "paid"),  # the gross, not the 253.33 the payee received
        ("b", "won", "reward", "1000.00", "paid"),
        ("b", "won", "withholding", "-240.00", "paid"),
    ]
    line = rows(rt, 2026, everyone=True)["us"]
    assert (line["nec_box1"], line["nec_box4"], line["reportable"]) == ("1000.00", "320.00", "1099-NEC")
    verified(rt)


def test_a_refund_of_an_unpaid_withheld_reward_cancels_it_and_its_withholding(make_runtime: Any,
                                                                              tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\nus,No Form,US\n")
    rt: Runtime = make_runtime(BASE + f"\n[programs.p]\n{CLAWBACK}event_types = [\"deal_won\"]\n"
                               '\n[rails.r]\nplugin = "fake"\n\n[compliance.tax]\nenabled = true\n'
                               'us_without_w9 = "withhold"\n')
    run(rt, deal("a", "333.33", payee="us"))
    schedule(rt)
    with rt.engine.connect() as conn:
        payout_id = conn.execute(select(payouts.c.id)).scalar_one()
    payout_actions.cancel(rt, payout_id, "wrong bank details, paid later")  # both lines held as owed
    run(rt, refund("a", "2026-01-11T00:00:00Z", payee="us"))
    with rt.engine.connect() as conn:
        found = [(r.kind, money(r), r.status) for r in conn.execute(select(rewards).order_by(rewards.c.id))]
    assert found == [("reward", "333.33", "cancelled"), ("withholding", "-80.00", "cancelled")]
    verified(rt)


def test_withholding_gives_no_room_back_under_program_and_flag_caps(make_runtime: Any, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country,flags\nus,No Form,US,official\n")
    rt: Runtime = make_runtime(BASE + "\n[programs.p]\n" + CLAWBACK.replace("deal_refunded", "never")
                               + 'event_types = ["deal_won"]\n[[programs.p.caps]]\nper = "payee"\namount = "1000"\n'
                               'currency = "USD"\n[programs.q]\n' + CLAWBACK.replace("deal_refunded", "never")
                               + 'event_types = ["deal_won"]\n'
                               '\n[rails.r]\nplugin = "fake"\nsettle_interval_seconds = 0.001\n'
                               '[compliance.tax]\nenabled = true\nus_without_w9 = "withhold"\n'
                               '[[compliance.gifts.flag_caps]]\nflag = "official"\namount = "1500"\ncurrency = "USD"\n'
                               'programs = ["q"]\n')
    with ManualClock("2026-02-01T00:00:00Z") as clock:
        pay_on(rt, clock, "2026-02-02", deal("a", "1000.00", payee="us", when="2026-02-01T00:00:00Z"))
        pay_on(rt, clock, "2026-02-03", deal("b", "1000.00", payee="us", when="2026-02-02T00:00:00Z"))
    with rt.engine.connect() as conn:
        found = [(r.program, r.kind, money(r)) for r in conn.execute(select(rewards).order_by(rewards.c.id))
                 if r.status != "cancelled"]
    # p: 1000.00 granted uses the whole cap, whatever was withheld; q: 1000.00 + 500.00 reach the flag cap of 1500
    assert [line for line in found if line[1] == "reward"] == [
        ("p", "reward", "1000.00"), ("q", "reward", "1000.00"), ("q", "reward", "500.00")]
