"""``routing.payout_cadence``: a payee's rewards become one payout per period (UTC day, ISO week, calendar month)
once the period in which they became payable has closed; nothing is lost, nothing is paid twice, and every payout is
audited with its cadence. Through the real pipeline on SQLite and PostgreSQL, with a manual clock.
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.db.schema import audit_log, payout_items, payouts, rewards
from payhub.payees import sync_payees
from payhub.pipeline import reward_actions, schedule
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import schedule_batch
from payhub.runtime import Runtime
from payhub.testing import ManualClock

BASE = """
[payees]
file = "payees.csv"

[sources.s]
plugin = "fake"

[rails.r]
plugin = "fake"

[programs.p]
calculator = "percentage"
percent = "100"
clawback_event_types = ["deal_lost"]

[routing]
default_rail = "r"
payout_cadence = "{cadence}"
"""
PAYEES = "id,name,country,currency,min_payout\np1,One,DE,USD,\np2,Two,FR,USD,50\n"
MONDAY = "2026-10-05T10:00:00Z"  # an ISO week starts on Monday 2026-10-05


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Any:
    """``world(cadence, extra="")``: a runtime with source ``s``, program ``p`` (100 %), rail ``r``, payees p1, p2
    (p2's minimum payout 50 USD)."""

    def factory(cadence: str, extra: str = "") -> Runtime:
        (tmp_path / "payees.csv").write_text(PAYEES)
        rt: Runtime = make_runtime(BASE.format(cadence=cadence) + textwrap.dedent(extra))
        sync_payees(rt)
        return rt

    return factory


class Feed:
    """Pushes deals through ingest and calculate; ``schedule()`` runs the schedule stage until it changes nothing."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.n = 0

    def won(self, payee: str, amount: str, when: str = "2026-10-01T00:00:00Z") -> str:
        self.n += 1
        object_id = f"o{self.n}"
        self.push(SourceRecord("Opportunity", object_id, "won", "deal_won", when, payee, amount, "USD"))
        return object_id

    def lost(self, object_id: str, payee: str, when: str = "2026-10-02T00:00:00Z") -> None:
        self.push(SourceRecord("Opportunity", object_id, "lost", "deal_lost", when, payee, None, None))

    def push(self, record: SourceRecord) -> None:
        self.rt.plugins.sources["s"].push(record)
        poll(self.rt, "s")
        versions = register_program_versions(self.rt)
        while calculate_batch(self.rt, versions):
            pass

    def schedule(self) -> int:
        total = 0
        while n := schedule_batch(self.rt):
            total += n
        return total


def payout_rows(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(payouts).order_by(payouts.c.id)).all()


def reward_rows(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(rewards).order_by(rewards.c.id)).all()


def paid_once(rt: Runtime) -> None:
    """Each reward is in at most one payout, each payout is the sum of its items, and the audit chain holds."""
    with rt.engine.connect() as conn:
        items = conn.execute(select(payout_items.c.reward_id, payout_items.c.payout_id,
                                    payout_items.c.amount_minor)).all()
        sums = Counter[int]()
        for _reward, payout_id, minor in items:
            sums[payout_id] += minor
        for row in conn.execute(select(payouts)).all():
            assert row.amount_minor == sums[row.id]
        assert max(Counter(r for r, _p, _m in items).values(), default=1) == 1
        result = verify(conn)
    assert result.ok, result.problem


def created_entries(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [json.loads(d) for d in conn.execute(select(audit_log.c.detail).where(
            audit_log.c.action == "payout.created").order_by(audit_log.c.seq)).scalars()]


@pytest.mark.parametrize(("cadence", "start", "still_open", "closed", "due_before"), [
    ("daily", MONDAY, "2026-10-05T23:59:59Z", "2026-10-06T00:00:00Z", "2026-10-06T00:00:00.000000Z"),
    ("weekly", MONDAY, "2026-10-11T23:59:59Z", "2026-10-12T00:00:00Z", "2026-10-12T00:00:00.000000Z"),
    ("monthly", MONDAY, "2026-10-31T23:59:59Z", "2026-11-01T00:00:00Z", "2026-11-01T00:00:00.000000Z"),
])
def test_one_payout_per_payee_once_the_period_closes(world: Any, cadence: str, start: str, still_open: str,
                                                      closed: str, due_before: str) -> None:
    with ManualClock(start) as clock:
        rt = world(cadence)
        feed = Feed(rt)
        for amount in ("10.00", "20.00", "30.00"):
            feed.won("p1", amount)
        feed.won("p2", "60.00")
        assert feed.schedule() == 0
        clock.set(still_open)
        feed.won("p1", "5.00")  # payable in the same period
        assert feed.schedule() == 0
        assert payout_rows(rt) == []
        clock.set(closed)
        feed.won("p1", "7.00")  # payable in the next period: waits for it
        assert feed.schedule() == 5
        made = payout_rows(rt)
        assert [(p.payee_id, p.amount_minor, p.item_count) for p in made] == [("p1", 6500, 4), ("p2", 6000, 1)]
        assert [e["cadence"] for e in created_entries(rt)] == [cadence, cadence]
        assert {e["due_before"] for e in created_entries(rt)} == {due_before}
        assert feed.schedule() == 0
        assert [r.status for r in reward_rows(rt)] == ["scheduled"] * 5 + ["pending"]
        paid_once(rt)


def test_pass_cadence_is_todays_behaviour(world: Any) -> None:
    with ManualClock(MONDAY):
        rt = world("pass")
        feed = Feed(rt)
        feed.won("p1", "10.00")
        assert feed.schedule() == 1
        feed.won("p1", "20.00")
        assert feed.schedule() == 1
        assert [p.amount_minor for p in payout_rows(rt)] == [1000, 2000]
        assert all("cadence" not in e for e in created_entries(rt))
        paid_once(rt)


def test_released_and_approved_rewards_wait_for_the_period_they_became_payable_in(world: Any) -> None:
    with ManualClock(MONDAY) as clock:
        rt = world("daily", "\n[programs.p.approval]\ncurrency = \"USD\"\nthreshold = \"100\"\n")
        feed = Feed(rt)
        feed.won("p1", "10.00")
        feed.won("p1", "500.00")  # needs an approval
        held = [r.id for r in reward_rows(rt)][0]
        ops = Runtime.for_cli(rt.settings, "ops:alice")
        try:
            reward_actions.hold(ops, [held], "checking the deal")
            clock.set("2026-10-06T09:00:00Z")  # Monday closed; nothing of it is pending
            assert feed.schedule() == 0
            reward_actions.release(ops, [held], "deal checked")
            reward_actions.approve(ops, [held + 1])
            feed.won("p1", "1.00")
            assert feed.schedule() == 0  # all three became payable on Tuesday
            clock.set("2026-10-07T00:00:01Z")
            assert feed.schedule() == 3
        finally:
            ops.close()
        assert [(p.amount_minor, p.item_count) for p in payout_rows(rt)] == [(51100, 3)]
        paid_once(rt)


def test_clawbacks_and_minimums_net_into_the_period_payout(world: Any) -> None:
    with ManualClock(MONDAY) as clock:
        rt = world("daily")
        feed = Feed(rt)
        deal = feed.won("p2", "60.00")
        clock.set("2026-10-06T01:00:00Z")
        assert feed.schedule() == 1  # Monday's 60.00
        while disburse_rail(rt, "r"):
            pass
        feed.lost(deal, "p2")  # -60.00 adjustment on Tuesday
        feed.won("p2", "100.00")
        clock.set("2026-10-07T01:00:00Z")
        assert feed.schedule() == 2  # 100 - 60 = 40 is below p2's minimum of 50: carried
        assert [r.status for r in reward_rows(rt)][-2:] == ["carried", "carried"]
        assert len(payout_rows(rt)) == 1
        feed.won("p2", "15.00")  # Wednesday
        clock.set("2026-10-08T00:00:00Z")
        assert feed.schedule() == 3  # 40 carried + 15 = 55: paid in one payout
        last = payout_rows(rt)[-1]
        assert (last.amount_minor, last.item_count) == (5500, 3)
        paid_once(rt)


def test_changing_the_cadence_loses_nothing(world: Any) -> None:
    with ManualClock("2026-10-14T10:00:00Z") as clock:
        rt = world("monthly")
        feed = Feed(rt)
        feed.won("p1", "10.00")
        clock.set("2026-10-15T10:00:00Z")
        feed.won("p1", "20.00")
        assert feed.schedule() == 0
        rt.settings.routing.payout_cadence = "daily"  # as a restart with the new setting does
        assert feed.schedule() == 1  # the 14th closed; the 15th has not
        clock.set("2026-10-16T00:00:00Z")
        rt.settings.routing.payout_cadence = "weekly"
        assert feed.schedule() == 0  # the week of the 12th is open
        rt.settings.routing.payout_cadence = "pass"
        assert feed.schedule() == 1
        assert [p.amount_minor for p in payout_rows(rt)] == [1000, 2000]
        paid_once(rt)


def test_a_reward_committed_late_is_found_within_the_recheck_interval(world: Any, monkeypatch: Any) -> None:
    """A pass that found nothing due skips the search for the rest of the period, but only for a bounded time: a
    reward whose transaction committed after that pass, dated before the period began, is not left behind."""
    with ManualClock("2026-10-06T00:00:05Z"):
        rt = world("daily")
        feed = Feed(rt)
        feed.won("p1", "10.00")  # payable on Tuesday: not due
        assert feed.schedule() == 0
        with rt.engine.begin() as conn:  # as if made payable just before midnight, committed just after
            conn.execute(update(rewards).values(updated_at=rt_now() - timedelta(minutes=1)))
        assert feed.schedule() == 0  # within the recheck interval
        monkeypatch.setattr(schedule, "NOTHING_DUE_RECHECK_SECONDS", 0.0)
        assert feed.schedule() == 1
        paid_once(rt)


def rt_now() -> Any:
    from payhub.clock import utcnow

    return utcnow()


@pytest.mark.postgres
def test_replicas_schedule_each_reward_once(world: Any, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    with ManualClock(MONDAY) as clock:
        rt = world("daily")
        feed = Feed(rt)
        for k in range(40):
            feed.won("p1" if k % 2 else "p2", f"{k + 1}.00")
        clock.set("2026-10-06T00:00:00Z")
        other = Runtime(rt.settings)
        other.load_plugins()
        counts: list[int] = []
        try:
            threads = [threading.Thread(target=lambda r=r: counts.append(Feed(r).schedule())) for r in (rt, other)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            other.close()
        assert sum(counts) == 40
        assert all(r.status == "scheduled" for r in reward_rows(rt))
        assert sorted(p.payee_id for p in payout_rows(rt)) == ["p1", "p2"]
        paid_once(rt)
