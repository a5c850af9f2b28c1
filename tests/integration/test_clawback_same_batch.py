"""A clawback that cancels rewards calculated in its own batch leaves the same record, and the same money, as one
that cancels rewards of an earlier batch: each cancellation audited (``reward.cancelled``), the calculation's reason
naming the cancelled rewards, and a cancelled reward never counting toward a cap, a budget or ``once_per_object``.

Through the real pipeline on SQLite and PostgreSQL; every test ends with the audit chain verified.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.db.schema import audit_log, calculations, events, rewards
from payhub.money import from_minor
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll
from payhub.runtime import Runtime
from payhub.testing import FakeSource

BASE = """
[payees]
file = "payees.csv"

[sources.s]
plugin = "fake"

[routing]
default_rail = "r"

[rails.r]
plugin = "fake"

[programs.p]
calculator = "percentage"
percent = "100"
splits = true
clawback_event_types = ["deal_lost"]
"""
PAYEES = "id,name,country,currency,min_payout\np1,One,DE,USD,\np2,Two,FR,USD,\n"
SPLITS = [{"payee_id": "p1", "percent": "60"}, {"payee_id": "p2", "percent": "40"}]
MONTH_CAP = 'caps = [{per = "payee", amount = "250", currency = "USD", period = "month"}]\n'


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Any:
    """``world(extra)``: a runtime with source ``s``, program ``p`` (plus ``extra`` keys) and payees p1, p2."""

    def factory(extra: str = "") -> Runtime:
        (tmp_path / "payees.csv").write_text(PAYEES)
        rt: Runtime = make_runtime(BASE + textwrap.dedent(extra))
        return rt

    return factory


def won(object_id: str, amount: str, when: str, *, split: bool = True) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", when, "p1", amount, "USD", "acme",
                        {"splits": SPLITS} if split else {})


def lost(object_id: str, when: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "lost", "deal_lost", when, "p1", None, None, "acme")


def run(rt: Runtime, *records: SourceRecord) -> None:
    """Ingest ``records`` in one poll and calculate them, in as many batches as the default batch size needs."""
    source = rt.plugins.sources["s"]
    assert isinstance(source, FakeSource)
    source.push(*records)
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass


def run_each(rt: Runtime, *polls: tuple[SourceRecord, ...]) -> None:
    for records in polls:
        run(rt, *records)


def reward_rows(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(conn.execute(select(rewards, events.c.object_id, events.c.transition).join(
            events, events.c.id == rewards.c.event_id).order_by(rewards.c.id)).all())


def outcome(rt: Runtime) -> list[tuple[str, str, str, str, str]]:
    """(object, transition, payee, amount, status) of every reward, in a form independent of ids and batches."""
    return sorted((r.object_id, r.transition, r.payee_id, str(from_minor(r.amount_minor, r.currency)), r.status)
                  for r in reward_rows(rt))


def calculation(rt: Runtime, object_id: str, transition: str) -> tuple[str, str | None]:
    with rt.engine.connect() as conn:
        status, reason = conn.execute(select(calculations.c.status, calculations.c.reason).join(
            events, events.c.id == calculations.c.event_id).where(
            events.c.object_id == object_id, events.c.transition == transition)).one()
    return status, reason


def audit_of(rt: Runtime, subject_type: str, subject_id: int) -> list[tuple[str, dict[str, Any]]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.action, audit_log.c.detail).where(
            audit_log.c.subject_type == subject_type, audit_log.c.subject_id == str(subject_id))
            .order_by(audit_log.c.seq)).all()
    return [(action, json.loads(detail)) for action, detail in rows]


def verified(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        result = verify(conn)
    assert result.ok, result.problem


# ------------------------------------------------------------------------------------------- the record


@pytest.mark.parametrize("same_batch", [True, False], ids=["same-batch", "two-batches"])
def test_a_clawback_audits_each_cancelled_reward_and_names_it(world: Any, same_batch: bool) -> None:
    """The win and the loss in one poll leave the record they leave in two: each split reward audited as
    calculated, then as cancelled with the clawback's reason; the loss's calculation names both rewards."""
    rt = world()
    win, loss = won("d1", "200.00", "2026-10-01T00:00:00Z"), lost("d1", "2026-10-02T00:00:00Z")
    run_each(rt, (win, loss)) if same_batch else run_each(rt, (win,), (loss,))
    rows = {r.payee_id: r for r in reward_rows(rt)}
    assert sorted((p, r.status) for p, r in rows.items()) == [("p1", "cancelled"), ("p2", "cancelled")]
    with rt.engine.connect() as conn:
        loss_event = conn.execute(select(events.c.id).where(events.c.transition == "lost")).scalar_one()
    for reward in rows.values():
        [(calculated, detail), (cancelled, why)] = audit_of(rt, "reward", reward.id)
        assert (calculated, cancelled) == ("reward.calculated", "reward.cancelled")
        assert "status" not in detail  # calculated pending, like any reward
        assert why == {"reason": f"clawed back by event {loss_event} before it was paid", "event": loss_event}
    ids = sorted(r.id for r in rows.values())
    assert calculation(rt, "d1", "lost") == ("rewarded", f"cancelled unpaid rewards {ids[0]}, {ids[1]}")
    verified(rt)


# ------------------------------------------------------------------------------------------------ money

D1_WON = won("d1", "200.00", "2026-10-01T00:00:00Z")
D1_LOST = lost("d1", "2026-10-02T00:00:00Z")
D2_WON = won("d2", "200.00", "2026-10-03T00:00:00Z", split=False)
# Each order of the three events, cut into polls every way: the same order gives the same money.
LOSS_FIRST = [((D1_WON, D1_LOST, D2_WON),), ((D1_WON,), (D1_LOST, D2_WON)), ((D1_WON, D1_LOST), (D2_WON,)),
              ((D1_WON,), (D1_LOST,), (D2_WON,))]
LOSS_LAST = [((D1_WON, D2_WON, D1_LOST),), ((D1_WON,), (D2_WON, D1_LOST)), ((D1_WON, D2_WON), (D1_LOST,)),
             ((D1_WON,), (D2_WON,), (D1_LOST,))]


@pytest.mark.parametrize("polls", LOSS_FIRST, ids=["one-poll", "win|loss+d2", "win+loss|d2", "three-polls"])
def test_a_reward_cancelled_before_a_cap_is_applied_does_not_count(world: Any, polls: Any) -> None:
    """D-1 (200.00 split 120/80) is lost before D-2 (200.00 to p1) is calculated: p1's month cap of 250.00 has all
    its room, in one poll or several."""
    rt = world(MONTH_CAP)
    run_each(rt, *polls)
    assert outcome(rt) == [("d1", "won", "p1", "120.00", "cancelled"), ("d1", "won", "p2", "80.00", "cancelled"),
                           ("d2", "won", "p1", "200.00", "pending")]
    [d2] = [r for r in reward_rows(rt) if r.object_id == "d2"]
    assert "capped" not in json.loads(d2.details)
    verified(rt)


@pytest.mark.parametrize("polls", LOSS_LAST, ids=["one-poll", "win|d2+loss", "win+d2|loss", "three-polls"])
def test_a_cap_applied_before_the_clawback_keeps_its_cut(world: Any, polls: Any) -> None:
    """D-2 is calculated while D-1's reward is live, so the cap cuts it to 130.00; the later loss cancels D-1 but
    does not recalculate D-2 (a calculation is never rewritten), in one poll or several."""
    rt = world(MONTH_CAP)
    run_each(rt, *polls)
    assert outcome(rt) == [("d1", "won", "p1", "120.00", "cancelled"), ("d1", "won", "p2", "80.00", "cancelled"),
                           ("d2", "won", "p1", "130.00", "pending")]
    [d2] = [r for r in reward_rows(rt) if r.object_id == "d2"]
    assert json.loads(d2.details)["capped"] == [
        {"cap": "per payee p1 2026-10", "limit": "250.00", "used": "120.00", "cut": "70.00"}]
    verified(rt)


BUDGET = '[programs.p.budget]\namount = "250"\ncurrency = "USD"\n'


@pytest.mark.parametrize(("order", "d2"), [((D1_WON, D1_LOST, D2_WON), ("pending", None)),
                                           ((D1_WON, D2_WON, D1_LOST), ("held", "budget"))],
                         ids=["loss-first", "loss-last"])
@pytest.mark.parametrize("cut", [None, 1, 2, 3], ids=["one-poll", "cut-1", "cut-2", "three-polls"])
def test_a_cancelled_reward_never_uses_budget(world: Any, order: Any, d2: tuple[str, str | None],
                                              cut: int | None) -> None:
    """Budget 250.00: D-1's 200.00 reserved then released by its loss leaves D-2 the pool when the loss comes
    first; when D-2 comes first it is held for the budget (its hold is not undone by the later loss)."""
    rt = world(BUDGET)
    polls = [order] if cut is None else [order[:cut], order[cut:]] if cut < 3 else [(r,) for r in order]
    run_each(rt, *polls)
    [row] = [r for r in reward_rows(rt) if r.object_id == "d2"]
    assert (row.status, row.hold_code) == d2
    verified(rt)


D1_AGAIN = SourceRecord("Opportunity", "d1", "won-again", "deal_won", "2026-10-04T00:00:00Z", "p1", "50.00", "USD",
                        "acme", {})


@pytest.mark.parametrize("cut", [None, 1, 2, 3], ids=["one-poll", "cut-1", "cut-2", "three-polls"])
def test_once_per_object_rewards_again_after_a_clawback_of_the_same_batch(world: Any, cut: int | None) -> None:
    """A deal won, lost, then won again is rewarded again, whether the three come in one poll or several."""
    rt = world("once_per_object = true\n")
    order = (D1_WON, D1_LOST, D1_AGAIN)
    polls = [order] if cut is None else [order[:cut], order[cut:]] if cut < 3 else [(r,) for r in order]
    run_each(rt, *polls)
    assert [(r.transition, r.status) for r in reward_rows(rt) if r.transition == "won-again"] == [
        ("won-again", "pending")]
    verified(rt)


PRORATED = ('clawback = "prorated"\nclawback_term_days = 365\n'
            '[programs.p.budget]\namount = "1000"\ncurrency = "USD"\n')
WON_JAN = won("q", "1000.00", "2026-01-01T00:00:00Z", split=False)
LOST_APR = lost("q", "2026-04-02T06:00:00Z")  # 3/4 of the term unused: the payee keeps 250.00
NEXT = won("n", "800.00", "2026-05-01T00:00:00Z", split=False)


@pytest.mark.parametrize("cut", [None, 1, 2, 3], ids=["one-poll", "cut-1", "cut-2", "three-polls"])
def test_a_kept_share_uses_its_budget_in_its_own_batch(world: Any, cut: int | None) -> None:
    """A prorated loss cancels the unpaid 1000.00 and keeps 250.00 in the 1000.00 pool: a next deal of 800.00
    finds 750.00 left and is held, whether it comes in the loss's poll or a later one."""
    rt = world(PRORATED)
    order = (WON_JAN, LOST_APR, NEXT)
    polls = [order] if cut is None else [order[:cut], order[cut:]] if cut < 3 else [(r,) for r in order]
    run_each(rt, *polls)
    assert outcome(rt) == [("n", "won", "p1", "800.00", "held"), ("q", "lost", "p1", "250.00", "pending"),
                           ("q", "won", "p1", "1000.00", "cancelled")]
    verified(rt)


FILL = won("f", "900.00", "2025-12-15T00:00:00Z", split=False)


@pytest.mark.parametrize("cut", [None, 1, 2, 3], ids=["one-poll", "cut-1", "cut-2", "three-polls"])
def test_the_share_kept_of_a_reward_held_for_its_budget_is_checked_against_the_pool(world: Any,
                                                                                      cut: int | None) -> None:
    """900.00 of the 1000.00 pool is used; the 1000.00 reward is held for its budget (it reserved nothing); its prorated
    loss keeps 250.00, which does not fit in the 100.00 left: the share is held for the budget too, never pending."""
    rt = world(PRORATED)
    order = (FILL, WON_JAN, LOST_APR)
    polls = [order] if cut is None else [order[:cut], order[cut:]] if cut < 3 else [(r,) for r in order]
    run_each(rt, *polls)
    assert outcome(rt) == [("f", "won", "p1", "900.00", "pending"), ("q", "lost", "p1", "250.00", "held"),
                           ("q", "won", "p1", "1000.00", "cancelled")]
    [share] = [r for r in reward_rows(rt) if r.transition == "lost"]
    assert share.hold_code == "budget"
    verified(rt)
