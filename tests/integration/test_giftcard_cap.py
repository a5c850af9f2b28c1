"""The yearly gift-card cap of ``[compliance.gifts]``: a gift-card rail refuses a payout that would take the payee's
gift cards of the calendar year past the cap; routing falls back to the next rail, or the rewards wait (``no_rail``)
until a later pass finds room. Payouts are never split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from payhub.api import Payee, SourceRecord
from payhub.audit import verify
from payhub.db.schema import payouts, rewards
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import route, schedule_batch
from payhub.runtime import Runtime
from payhub.testing import ManualClock

SETTINGS = """
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [rails.gift]
    plugin = "fake"
    [rails.bank]
    plugin = "fake"
    currencies = ["EUR"]
    [compliance.gifts]
    giftcard_rails = ["gift"]
    giftcard_yearly_cap = {EUR = "300"}
"""
PAYEES = "id,name,country,rail\np1,Partner One,DE,gift\np2,Partner Two,FR,gift\n"


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Any:
    """``world(routing)``: a runtime whose payees prefer the gift-card rail ``gift``; ``routing`` is appended."""

    def factory(routing: str = "") -> Runtime:
        (tmp_path / "payees.csv").write_text(PAYEES)
        return make_runtime(SETTINGS + routing)

    return factory


def pay(rt: Runtime, *amounts: tuple[str, str], currency: str = "EUR") -> list[Any]:
    """Ingest one deal per (payee, amount), calculate and schedule; return the payouts created by this call."""
    source = rt.plugins.sources["s"]
    start = len(source.records)
    source.push(*(SourceRecord("Opportunity", f"o{start + i}", "won", "deal_won", "2026-10-01T00:00:00Z", payee,
                               amount, currency) for i, (payee, amount) in enumerate(amounts)))
    before = {p.id for p in all_payouts(rt)}
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass
    sync_payees(rt)
    while schedule_batch(rt):
        pass
    return [p for p in all_payouts(rt) if p.id not in before]


def all_payouts(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(conn.execute(select(payouts).order_by(payouts.c.id)))


def held(rt: Runtime) -> list[tuple[str, str, str | None, str | None]]:
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(rewards.c.payee_id, rewards.c.status, rewards.c.hold_code,
                                                      rewards.c.hold_reason).where(rewards.c.status == "held"))]


def test_past_the_cap_the_payout_goes_to_the_next_rail_whole(world: Any) -> None:
    rt = world('[routing]\ndefault_rail = "bank"\n')
    with ManualClock("2026-10-02T09:00:00Z"):
        [first] = pay(rt, ("p1", "200"))
        assert (first.rail, first.amount_minor) == ("gift", 20000)
        [second] = pay(rt, ("p1", "150"))  # 350 > 300: not split, the whole payout goes by bank
        assert (second.rail, second.amount_minor) == ("bank", 15000)
        assert second.route_reason == (
            "default rail bank (rail gift pays gift cards: the gift-card cap (compliance.gifts.giftcard_yearly_cap) "
            "of 300.00 EUR per recipient in 2026 would be exceeded: payee p1 received 200.00 EUR in gift cards in "
            "2026, this payout is 150.00 EUR (payouts are not split))")
        [third, other] = pay(rt, ("p1", "100"), ("p2", "300"))  # 200 + 100 fits exactly; p2 has its own cap
        assert [(p.payee_id, p.rail) for p in (third, other)] == [("p1", "gift"), ("p2", "gift")]
        [alone] = pay(rt, ("p2", "0.01"))
        assert alone.rail == "bank"
        # a gift card that did not pay gives its room back
        with rt.engine.begin() as conn:
            conn.execute(update(payouts).where(payouts.c.id == first.id).values(status="failed"))
        [again] = pay(rt, ("p1", "200"))
        assert again.rail == "gift"
        # routing asked without a connection of the caller's reads the same totals
        payee = Payee("p1", "Partner One", country="DE", rail="gift")
        rail, why = route(rt, payee, "EUR", 1)
        assert rail == "bank" and "received 300.00 EUR in gift cards in 2026, this payout is 0.01 EUR" in why
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def test_with_no_rail_left_the_rewards_wait_and_a_new_year_lifts_the_hold(world: Any) -> None:
    rt = world()
    with ManualClock("2026-12-31T12:00:00Z") as clock:
        [first] = pay(rt, ("p1", "250"))
        assert first.rail == "gift"
        assert pay(rt, ("p1", "100")) == []
        reason = ("rail gift pays gift cards: the gift-card cap (compliance.gifts.giftcard_yearly_cap) of 300.00 EUR "
                  "per recipient in 2026 would be exceeded: payee p1 received 250.00 EUR in gift cards in 2026, this "
                  "payout is 100.00 EUR (payouts are not split)")
        assert held(rt) == [("p1", "held", "no_rail", reason)]
        assert schedule_batch(rt) == 0  # rechecked: still no room, nothing changes
        clock.set("2027-01-01T00:00:01Z")
        assert schedule_batch(rt) == 1
        [_first, lifted] = all_payouts(rt)
        assert (lifted.rail, lifted.amount_minor) == ("gift", 10000)
        assert held(rt) == []
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def test_a_payout_above_the_cap_alone_and_a_currency_without_a_cap_are_refused(world: Any) -> None:
    rt = world()
    with ManualClock("2026-10-02T09:00:00Z"):
        assert pay(rt, ("p1", "300.01")) == []
        assert pay(rt, ("p2", "10"), currency="USD") == []
        [(_p, _s, _c, over), (_p2, _s2, _c2, usd)] = sorted(held(rt))
        assert "payee p1 received 0.00 EUR in gift cards in 2026, this payout is 300.01 EUR" in over
        assert usd == ("rail gift pays gift cards and compliance.gifts.giftcard_yearly_cap has no cap in USD (only "
                       "in EUR): gift cards in USD are not paid")
