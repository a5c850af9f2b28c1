"""Backup withholding lines move with the reward they withhold from, on SQLite and PostgreSQL: a line left behind
by an operator's release leaves the work list (held ``with_reward``) instead of blocking the rechecks of held
rewards; an operator's hold on a line holds its reward back; a line locked by another transaction is waited for,
never skipped; holds rechecked while pending work exists; a W-8 dated in the future clears on its date without a
change of the payees file or a restart."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, text
from test_program_rules import all_payouts, deal, pay, payout_money, reward_rows, run, schedule, verified
from test_tax_rules import held, rewrite_payees
from test_tax_rules import taxed as taxed  # noqa: F401 - a fixture

from payhub.db.schema import audit_log
from payhub.payees import sync_payees
from payhub.pipeline import reward_actions
from payhub.pipeline.schedule import schedule_batch
from payhub.runtime import Runtime
from payhub.states import RewardKind
from payhub.testing import ManualClock

WITHHOLD = 'us_without_w9 = "withhold"\n\n[rails.r.min_payout]\nUSD = "800"\n'
P1 = "p1,One,US,USD,,,\n"  # no W-9: 24 % withheld
P2 = "p2,Two,DE,USD,W-8BEN,2025-01-01,\n"


def ids(rt: Runtime) -> tuple[int, int]:
    """The ids of reward d1 and of its withholding line."""
    rows = reward_rows(rt)
    [line] = [r for r in rows if r.kind == RewardKind.WITHHOLDING and r.object_id == "d1"]
    [reward] = [r for r in rows if r.kind == RewardKind.REWARD and r.object_id == "d1"]
    return reward.id, line.id


def status(rt: Runtime, reward_id: int) -> tuple[str, str | None]:
    [row] = [r for r in reward_rows(rt) if r.id == reward_id]
    return row.status, row.hold_code


def carried_d1(taxed: Any, rows: str = P1) -> tuple[Runtime, int, int]:
    """A runtime where d1 (1000.00 to p1) and its withholding line (-240.00) are carried: 760 is below 800."""
    rt: Runtime = taxed(rows, tax=WITHHOLD)
    run(rt, deal("d1", "1000.00"))
    schedule(rt)
    reward, line = ids(rt)
    assert status(rt, reward) == ("carried", None) and status(rt, line) == ("carried", None)
    return rt, reward, line


def test_a_line_released_without_its_reward_does_not_stop_the_rechecks(taxed: Any, tmp_path: Any) -> None:
    rt, reward, line = carried_d1(taxed)
    run(rt, deal("d2", "1000.00", payee="p2"))
    schedule(rt)
    assert held(rt)["d2"][0] == "no_payee"
    reward_actions.hold(rt, [reward, line], "checking the deal")
    reward_actions.release(rt, [line], "released by mistake")
    rewrite_payees(tmp_path, P1 + P2)
    schedule(rt)
    assert [payout_money(p) for p in all_payouts(rt)] == [("p2", "1000.00", "USD")]
    assert status(rt, line) == ("held", "with_reward")  # out of the work list, with its reward
    assert status(rt, reward) == ("held", "operator")
    reward_actions.release(rt, [reward], "deal checked")
    run(rt, deal("d3", "100.00"))
    schedule(rt)
    # 1000 + 100 less 24 % of each: the line came back with its reward
    assert [payout_money(p) for p in all_payouts(rt)][1:] == [("p1", "836.00", "USD")]
    assert status(rt, line)[0] == "scheduled"
    pay(rt)
    verified(rt)


def test_a_pass_with_pending_work_rechecks_held_rewards_too(taxed: Any, tmp_path: Any) -> None:
    rt: Runtime = taxed(P1, tax=WITHHOLD)
    run(rt, deal("d2", "1000.00", payee="p2"))
    schedule(rt)
    assert held(rt)["d2"][0] == "no_payee"
    run(rt, deal("d1", "1000.00"), deal("d4", "1000.00"))
    rewrite_payees(tmp_path, P1 + P2)
    sync_payees(rt)
    schedule_batch(rt, limit=1)  # one pending reward fills the batch: the hold is rechecked all the same
    assert "d2" not in held(rt)
    assert ("p2", "1000.00", "USD") in [payout_money(p) for p in all_payouts(rt)]


def test_an_operator_hold_on_a_line_holds_its_reward_back(taxed: Any) -> None:
    rt, reward, line = carried_d1(taxed)
    reward_actions.hold(rt, [line], "withholding under review")
    run(rt, deal("d3", "100.00"))
    schedule(rt)
    assert status(rt, line) == ("held", "operator")
    assert status(rt, reward) == ("held", "operator")  # not paid gross
    assert all_payouts(rt) == []
    with rt.engine.connect() as conn:
        details = [json.loads(d) for d in conn.execute(select(audit_log.c.detail).where(
            audit_log.c.action == "reward.held", audit_log.c.subject_id == str(reward))).scalars()]
    assert details[-1]["line"] == line and f"line {line} is held by an operator" in details[-1]["reason"]
    reward_actions.release(rt, [line, reward], "review done")
    schedule(rt)
    [payout] = all_payouts(rt)
    assert payout_money(payout) == ("p1", "836.00", "USD")
    pay(rt)
    verified(rt)


@pytest.mark.postgres
def test_a_line_locked_by_an_operator_is_waited_for_not_skipped(taxed: Any) -> None:
    rt, reward, line = carried_d1(taxed)
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("row locks that another connection holds: PostgreSQL")
    run(rt, deal("d3", "100.00"))
    operator = rt.engine.connect()
    transaction = operator.begin()
    operator.execute(text("SELECT id FROM rewards WHERE id = :id FOR UPDATE"), {"id": line})
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(schedule_batch(rt)))
    worker.start()
    time.sleep(0.5)
    assert not done, "the schedule pass did not wait for the locked withholding line"
    operator.execute(text("UPDATE rewards SET status = 'held', hold_code = 'operator', hold_reason = 'review' "
                          "WHERE id = :id"), {"id": line})
    transaction.commit()
    operator.close()
    worker.join(30)
    assert done
    assert status(rt, reward) == ("held", "operator")  # held back with its line, never paid gross
    assert all_payouts(rt) == []
    assert [r.status for r in reward_rows(rt) if r.kind == RewardKind.WITHHOLDING and r.id != line] == ["carried"]


def test_a_w8_dated_in_the_future_clears_on_its_date_without_a_restart(taxed: Any) -> None:
    rt: Runtime = taxed("de,Deutsch,DE,USD,W-8BEN,2026-03-05,\n")
    with ManualClock("2026-03-01T10:00:00Z") as clock:
        run(rt, deal("d1", "100.00", payee="de", when="2026-02-20T00:00:00Z"))
        schedule(rt)
        assert "a date in the future" in held(rt)["d1"][1]
        clock.set("2026-03-04T09:00:00Z")
        schedule(rt)
        assert "d1" in held(rt)
        clock.set("2026-03-05T00:00:01Z")
        schedule(rt)
        assert "d1" not in held(rt)
        assert [payout_money(p) for p in all_payouts(rt)] == [("de", "100.00", "USD")]


def test_a_w8_expiring_on_31_december_holds_a_carried_balance_in_january(taxed: Any) -> None:
    rt: Runtime = taxed("de,Deutsch,DE,USD,W-8BEN,2023-05-01,\n", tax='[rails.r.min_payout]\nUSD = "800"\n')
    with ManualClock("2026-12-31T12:00:00Z") as clock:
        run(rt, deal("d1", "500.00", payee="de", when="2026-12-30T00:00:00Z"))
        schedule(rt)
        assert [r.status for r in reward_rows(rt)] == ["carried"]
        clock.set("2027-01-02T08:00:00Z")
        run(rt, deal("d2", "500.00", payee="de", when="2027-01-01T00:00:00Z"))
        schedule(rt)
        assert all_payouts(rt) == []
        assert {k: "expired after 2026-12-31" in v[1] for k, v in held(rt).items()} == {"d1": True, "d2": True}
