"""The core rules around every calculator, through the real pipeline on SQLite and PostgreSQL.

Splits, clawbacks, budgets and approvals (``payhub.pipeline.rules``, applied by calculate), then netting, carry-forward,
minimum payouts and FX conversion (``payhub.pipeline.schedule``), replays, and the settings keys of each rule.
Every pipeline test ends with the audit chain verified.
"""

from __future__ import annotations

import itertools
import json
import textwrap
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from payhub.api import Event, FxRate, Outcome, RailResult, RewardLine, SourceRecord, hookimpl
from payhub.audit import verify
from payhub.clock import utcnow
from payhub.db.schema import calculations, events, payout_items, payouts, rewards
from payhub.errors import CalculationError, ConfigError
from payhub.money import from_minor, minor_units, quantize, split
from payhub.payees import sync_payees
from payhub.pipeline import reward_actions
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.rules import ObjectReward, apply_splits, clawback
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.settings import ProgramSection, load_settings
from payhub.testing import FakeSource

BASE = """
[payees]
file = "payees.csv"

[sources.s]
plugin = "fake"

[routing]
default_rail = "r"
"""
PAYEES = "id,name,country,currency,min_payout\np1,One,DE,USD,\np2,Two,FR,USD,\np3,Three,IT,USD,\n"
PCT = 'calculator = "percentage"\npercent = "100"\n'  # the reward is the deal amount
CLAWBACK = PCT + 'clawback_event_types = ["deal_refunded"]\n'


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Any:
    """``world(programs, payees=PAYEES, rail="")``: a runtime with source ``s``, FakeRail ``r`` and the payees file."""

    def factory(programs: str, *, payees: str = PAYEES, rail: str = "") -> Runtime:
        (tmp_path / "payees.csv").write_text(payees)
        body = (BASE + textwrap.dedent(programs) + '\n[rails.r]\nplugin = "fake"\nsettle_interval_seconds = 0.001\n'
                + textwrap.dedent(rail))
        rt: Runtime = make_runtime(body)
        return rt

    return factory


def deal(object_id: str, amount: str | None = "1000.00", *, payee: str = "p1", when: str = "2026-01-10T00:00:00Z",
         currency: str | None = "USD", partner: str | None = "acme", **attributes: Any) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", when, payee, amount, currency, partner,
                        attributes)


def refund(object_id: str, when: str, *, payee: str = "p1", transition: str = "refunded") -> SourceRecord:
    """A refund of the same CRM object: same source, object type and id, another transition."""
    return SourceRecord("Opportunity", object_id, transition, "deal_refunded", when, payee, None, None, "acme")


def shares(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"payee_id": payee, "percent": percent} for payee, percent in pairs]


def run(rt: Runtime, *records: SourceRecord, limit: int | None = None) -> None:
    """Ingest ``records`` and calculate them, ``limit`` events per batch."""
    source = rt.plugins.sources["s"]
    assert isinstance(source, FakeSource)
    source.push(*records)
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions, limit=limit):
        pass


def schedule(rt: Runtime) -> None:
    sync_payees(rt)
    while schedule_batch(rt):
        pass


def pay(rt: Runtime) -> None:
    """Send every due payout through FakeRail ``r``, then settle them as paid."""
    rail = rt.plugins.rails["r"]
    while disburse_rail(rt, "r"):
        pass
    rail.lookup = lambda keys: {k: RailResult(k, Outcome.PAID, f"fake-{k[-8:]}") for k in keys}  # type: ignore
    time.sleep(0.01)  # past the rail's settle interval
    while settle_rail(rt, "r"):
        pass


def verified(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        result = verify(conn)
    assert result.ok, result.problem


def reward_rows(rt: Runtime, program: str | None = None) -> list[Any]:
    query = select(rewards, events.c.object_id, events.c.transition).join(
        events, events.c.id == rewards.c.event_id).order_by(rewards.c.id)
    if program is not None:
        query = query.where(rewards.c.program == program)
    with rt.engine.connect() as conn:
        return list(conn.execute(query).all())


def money(row: Any) -> str:
    return str(from_minor(row.amount_minor, row.currency))


def paid_lines(rt: Runtime, object_id: str, transition: str = "won",
               program: str | None = None) -> list[tuple[str, str]]:
    """(payee, amount) of the rewards of one event."""
    return [(r.payee_id, money(r)) for r in reward_rows(rt, program)
            if r.object_id == object_id and r.transition == transition]


def calculation(rt: Runtime, object_id: str, transition: str = "won", program: str = "p") -> tuple[str, str | None]:
    with rt.engine.connect() as conn:
        status, reason = conn.execute(select(calculations.c.status, calculations.c.reason).join(
            events, events.c.id == calculations.c.event_id).where(
            events.c.object_id == object_id, events.c.transition == transition,
            calculations.c.program == program)).one()
    return status, reason


def failure(rt: Runtime, object_id: str, transition: str = "won") -> str:
    """The reason of an event's failed calculation by program ``p``."""
    status, reason = calculation(rt, object_id, transition)
    assert status == "failed" and reason, (status, reason)
    return reason


def all_payouts(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(conn.execute(select(payouts).order_by(payouts.c.id)).all())


def items(rt: Runtime, payout_id: int) -> list[tuple[int, str, dict[str, str] | None]]:
    """(reward id, amount in the payout's currency, fx) of each item of a payout."""
    with rt.engine.connect() as conn:
        currency = conn.execute(select(payouts.c.currency).where(payouts.c.id == payout_id)).scalar_one()
        rows = conn.execute(select(payout_items).where(payout_items.c.payout_id == payout_id)
                            .order_by(payout_items.c.reward_id)).all()
    return [(r.reward_id, str(from_minor(r.amount_minor, currency)), json.loads(r.fx) if r.fx else None)
            for r in rows]


def payout_money(row: Any) -> tuple[str, str, str]:
    return row.payee_id, str(from_minor(row.amount_minor, row.currency)), row.currency


# ------------------------------------------------------------------------------------------------------ splits


def test_splits_share_the_reward_and_the_first_payee_listed_takes_the_remainder(world: Any) -> None:
    rt = world(f"""
        [programs.p]
        {PCT}splits = true

        [programs.plain]
        {PCT}event_types = ["deal_won"]
    """)
    thirds = shares(("p1", "33.33"), ("p2", "33.33"), ("p3", "33.34"))
    run(rt,
        deal("sixty", splits=shares(("p1", "60"), ("p2", "40"))),
        deal("thirds", splits=thirds),
        deal("odd", "1000.01", splits=shares(("p2", "60"), ("p1", "40"))),  # 400.004 -> 400.00, p2 the rest
        deal("dime", "0.10", splits=thirds),  # 0.0333 and 0.0333 -> 0.03 each; p1 takes 0.04
        deal("yen", "1000", currency="JPY", splits=thirds),  # 333.3 -> 333, 333.4 -> 333; p1 takes 334
        deal("json", "10.00", splits=json.dumps(shares(("p3", "50"), ("p1", "50")))),  # JSON text is accepted
        deal("alone", "10.00"))
    assert paid_lines(rt, "sixty", program="p") == [("p1", "600.00"), ("p2", "400.00")]
    assert paid_lines(rt, "thirds", program="p") == [("p1", "333.30"), ("p2", "333.30"), ("p3", "333.40")]
    assert paid_lines(rt, "odd", program="p") == [("p2", "600.01"), ("p1", "400.00")]
    assert paid_lines(rt, "dime", program="p") == [("p1", "0.04"), ("p2", "0.03"), ("p3", "0.03")]
    assert paid_lines(rt, "yen", program="p") == [("p1", "334"), ("p2", "333"), ("p3", "333")]
    assert paid_lines(rt, "json", program="p") == [("p3", "5.00"), ("p1", "5.00")]
    assert paid_lines(rt, "alone", program="p") == [("p1", "10.00")]
    # A program without `splits = true` pays the event's payee in full whatever the attribute says.
    assert paid_lines(rt, "odd", program="plain") == [("p1", "1000.01")]
    [first, second] = [r for r in reward_rows(rt, "p") if r.object_id == "odd"]
    assert json.loads(first.details) == {"split_of": "1000.01", "split_percent": "60", "split_primary": "p2"}
    assert json.loads(second.details) == {"split_of": "1000.01", "split_percent": "40", "split_primary": "p2"}
    verified(rt)


@pytest.mark.parametrize(("pairs", "total"), [
    ((("p1", "60"), ("p2", "30")), "90"),
    ((("p1", "60"), ("p2", "50")), "110"),
    ((("p1", "33.33"), ("p2", "33.33"), ("p3", "33.33")), "99.99"),
])
def test_split_shares_not_adding_up_to_100_fail_the_calculation(world: Any, pairs: Any, total: str) -> None:
    rt = world(f"[programs.p]\n{PCT}splits = true\n")
    run(rt, deal("bad", splits=shares(*pairs)), deal("good", splits=shares(("p1", "50"), ("p2", "50"))))
    reason = failure(rt, "bad")
    assert "`splits`" in reason and f"{total}%" in reason and "100%" in reason, reason
    assert paid_lines(rt, "bad") == []
    assert paid_lines(rt, "good") == [("p1", "500.00"), ("p2", "500.00")]  # the rest proceeds
    verified(rt)


def test_overlay_program_pays_each_share_in_full(world: Any) -> None:
    rt = world(f"[programs.p]\n{PCT}splits = true\nsplit_overlay = true\n")
    run(rt,
        deal("overlay", splits=shares(("p1", "100"), ("p2", "50"))),
        deal("cent", "0.01", splits=shares(("p1", "50"), ("p2", "50"))))  # each 0.005 rounds half up on its own
    assert paid_lines(rt, "overlay") == [("p1", "1000.00"), ("p2", "500.00")]
    assert paid_lines(rt, "cent") == [("p1", "0.01"), ("p2", "0.01")]
    verified(rt)


@pytest.mark.parametrize(("value", "words"), [
    ("[{not json", "`splits` is not valid JSON"),
    ('{"payee_id": "p2", "percent": "100"}', "must be a non-empty list"),
    ([], None),  # an empty attribute means no split
    ([{"percent": "60"}, {"payee_id": "p2", "percent": "40"}], "item 1 has no payee_id"),
    (shares(("p1", "60"), ("  ", "40")), "item 2 has no payee_id"),
    (shares(("p1", "50"), ("p1", "50")), "payee p1 is listed twice"),
    (shares(("p1", "sixty"), ("p2", "40")), "item 1: percent 'sixty' is not a number"),
    (shares(("p1", "100"), ("p2", "0")), "item 2: percent 0 is not above 0"),
    (shares(("p1", "150"), ("p2", "-50")), "item 1: percent 150 is not above 0 and at most 100"),
    ([{"payee_id": "p1", "percent": "NaN"}], "is not above 0"),
])
def test_malformed_splits_attribute_fails_with_a_clear_reason(world: Any, value: Any, words: str | None) -> None:
    rt = world(f"[programs.p]\n{PCT}splits = true\n")
    run(rt, deal("bad", splits=value), deal("good"))
    if words is None:
        assert calculation(rt, "bad") == ("rewarded", None)
        assert paid_lines(rt, "bad") == [("p1", "1000.00")]
    else:
        reason = failure(rt, "bad")
        assert words in reason, reason
        assert "event attribute `splits`" in reason
        assert paid_lines(rt, "bad") == []
    assert paid_lines(rt, "good") == [("p1", "1000.00")]
    verified(rt)


CURRENCIES = st.sampled_from(["USD", "JPY", "BHD", "EUR"])
AMOUNTS = st.decimals(min_value=-10**9, max_value=10**9, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def percent_lists(draw: st.DrawFn) -> list[Decimal]:
    """1 to 6 shares, each above 0 with up to 3 decimals, adding up to exactly 100."""
    count = draw(st.integers(1, 6))
    cuts = sorted(draw(st.sets(st.integers(1, 99_999), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, 100_000]
    return [Decimal(b - a).scaleb(-3) for a, b in itertools.pairwise(bounds)]


def _exact_in(part: Decimal, currency: str) -> bool:
    return part == quantize(part, currency) and int(part.as_tuple().exponent) >= -minor_units(currency)


@pytest.mark.slow  # many generated examples
@settings(max_examples=300, deadline=None)
@given(amount=AMOUNTS, currency=CURRENCIES, percents=percent_lists())
def test_split_parts_add_up_to_the_rounded_amount(amount: Decimal, currency: str, percents: list[Decimal]) -> None:
    parts = split(amount, currency, percents)
    assert len(parts) == len(percents)
    assert sum(parts, Decimal(0)) == quantize(amount, currency)
    assert all(_exact_in(part, currency) for part in parts), parts


@settings(max_examples=200, deadline=None)
@given(amount=AMOUNTS, currency=CURRENCIES, percents=percent_lists())
def test_apply_splits_lines_add_up_to_the_rounded_line(amount: Decimal, currency: str,
                                                       percents: list[Decimal]) -> None:
    payees = [f"x{n}" for n in range(len(percents))]
    attribute = [{"payee_id": p, "percent": str(pct)} for p, pct in zip(payees, percents, strict=True)]
    event = Event(1, "s:Opportunity:1:won", "s", "Opportunity", "1", "won", "deal_won",
                  datetime(2026, 1, 1, tzinfo=UTC), "rep", "acme", amount, currency, {"splits": attribute})
    other = RewardLine("someone-else", Decimal("1.5"), currency)  # lines for other payees are left alone
    section = ProgramSection(calculator="percentage", splits=True)
    lines = apply_splits(section, event, [RewardLine("rep", amount, currency), other])
    assert lines[-1] is other
    split_lines = [line for line in lines[:-1] if isinstance(line, RewardLine)]
    assert [line.payee_id for line in split_lines] == payees
    assert sum((line.amount for line in split_lines), Decimal(0)) == quantize(amount, currency)
    assert all(_exact_in(line.amount, currency) and line.currency == currency for line in split_lines)


def test_a_split_never_gives_a_payee_a_part_of_the_opposite_sign() -> None:
    parts = split(Decimal("1.00"), "USD", [Decimal("1"), Decimal("24.5"), Decimal("24.5"), Decimal("24.5"),
                                           Decimal("25.5")])
    assert sum(parts) == Decimal("1.00")
    assert all(part >= 0 for part in parts), parts


# --------------------------------------------------------------------------------------------------- clawbacks


@pytest.mark.parametrize("limit", [None, 1], ids=["one-batch", "batch-per-event"])
def test_full_clawback_takes_back_the_original_once(world: Any, limit: int | None) -> None:
    rt = world(f"[programs.p]\n{CLAWBACK}")
    run(rt,
        deal("o1", "1234.56"),
        deal("o2", "50.00", payee="p2"),
        refund("o1", "2026-02-01T00:00:00Z"),
        refund("o1", "2026-02-03T00:00:00Z", transition="refunded-again"),  # a second cancellation
        refund("never-won", "2026-02-01T00:00:00Z"),
        limit=limit)
    assert paid_lines(rt, "o1") == [("p1", "1234.56")]
    [original] = [r for r in reward_rows(rt) if (r.object_id, r.transition) == ("o1", "won")]
    # Not paid yet, whether stored (batch per event) or of the same batch: cancelled, and no adjustment.
    assert paid_lines(rt, "o1", "refunded") == []
    assert original.status == "cancelled"
    assert calculation(rt, "o1", "refunded") == ("rewarded", f"cancelled unpaid rewards {original.id}")
    assert calculation(rt, "o1", "refunded-again") == (  # nothing more to take back
        "not_eligible", "nothing to take back: no reward of this program on Opportunity o1 is left")
    assert calculation(rt, "never-won", "refunded") == (
        "not_eligible", "nothing to take back: no reward of this program on Opportunity never-won is left")
    assert paid_lines(rt, "o2") == [("p2", "50.00")]  # other objects keep their rewards
    verified(rt)


def test_prorated_clawback_takes_back_the_unused_share_of_the_term(world: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("payhub.pipeline.calculate.utcnow", lambda: datetime(2027, 2, 1, tzinfo=UTC))  # no refund waits
    rt = world(f"[programs.p]\n{CLAWBACK}clawback = \"prorated\"\nclawback_term_days = 365\n")
    start = "2026-01-01T00:00:00Z"
    run(rt, deal("quarter", when=start), deal("day90", when=start), deal("late", when=start))
    schedule(rt)
    pay(rt)  # paid: the clawbacks are adjustments
    run(rt,
        refund("quarter", "2026-04-02T06:00:00Z"),  # 91.25 days: exactly 3/4 of the term unused
        refund("day90", "2026-04-01T00:00:00Z"),  # 275/365 unused: 753.424657... -> 753.42
        refund("late", "2027-01-02T00:00:00Z"))  # past the term: nothing to take back
    assert paid_lines(rt, "quarter", "refunded") == [("p1", "-750.00")]
    assert paid_lines(rt, "day90", "refunded") == [("p1", "-753.42")]
    [back] = [r for r in reward_rows(rt) if (r.object_id, r.transition) == ("day90", "refunded")]
    assert json.loads(back.details) == {"clawback": "prorated", "granted": "1000.00", "already_taken_back": "0.00",
                                        "fraction": "0.753425"}
    assert calculation(rt, "late", "refunded") == ("not_eligible", "nothing to take back: the clawback term of 365 "
                                                   "days from 2026-01-01, when Opportunity late was first rewarded, "
                                                   "is over")
    # A second cancellation later in the term takes nothing more; the object keeps 246.58 of its 1000.00.
    run(rt, refund("day90", "2026-06-01T00:00:00Z", transition="cancelled"))
    assert calculation(rt, "day90", "cancelled") == (
        "not_eligible", "nothing to take back: what this program granted on Opportunity day90 is already taken back")
    kept = sum(r.amount_minor for r in reward_rows(rt) if r.object_id == "day90")
    assert kept == 24658
    verified(rt)


@pytest.mark.parametrize("same_batch", [False, True], ids=["stored", "same-batch"])
def test_prorated_clawback_of_an_unpaid_reward_cancels_it_and_keeps_the_used_share(world: Any,
                                                                                   same_batch: bool) -> None:
    """The reward waits for approval when its deal is cancelled after a quarter of the term: it is cancelled, and
    the payee keeps 250.00 as a new reward (approved like any other), so an approver never pays the refunded part;
    also when the deal and its cancellation are calculated in one batch."""
    rt = world(f"[programs.p]\n{CLAWBACK}clawback = \"prorated\"\nclawback_term_days = 365\n"
               'approval = {currency = "USD", threshold = "500"}\n'
               '[programs.p.budget]\namount = "1000"\ncurrency = "USD"\n')
    won, refunded = deal("quarter", when="2026-01-01T00:00:00Z"), refund("quarter", "2026-04-02T06:00:00Z")
    if same_batch:
        run(rt, won, refunded)
    else:
        run(rt, won)
        [original] = reward_rows(rt)
        assert original.status == "awaiting_approval"
        run(rt, refunded)
    rows = {r.transition: r for r in reward_rows(rt)}
    assert rows["won"].status == "cancelled"
    kept = rows["refunded"]
    assert (money(kept), kept.status, kept.approvals_needed) == ("250.00", "pending", 0)
    assert kept.budget_key == rows["won"].budget_key == "p:all"  # the kept share stays in the pool
    assert json.loads(kept.details)["cancelled_rewards"] == [rows["won"].id]
    run(rt, deal("next", "750.00", when="2026-05-01T00:00:00Z"))  # 250 + 750 fills the 1000 pool exactly
    assert [r.status for r in reward_rows(rt) if r.object_id == "next"] == ["awaiting_approval"]
    assert "share kept after the clawback" in kept.description
    schedule(rt)
    assert [payout_money(p) for p in all_payouts(rt)] == [("p1", "250.00", "USD")]
    verified(rt)


class OneReward:
    """A RulesHistory whose object holds one reward of 100.00 USD to p1."""

    def object_rewards(self, program: str, event: Event) -> list[ObjectReward]:
        return [ObjectReward(datetime(2026, 1, 1, tzinfo=UTC), "p1", "USD", 10000)]

    def budget_used(self, key: str) -> int:
        return 0

    def capped_total(self, program: str, per: str, scope_id: str | None, currency: str, since: datetime | None,
                     until: datetime | None) -> int:
        return 0


def test_prorated_clawback_without_a_term_fails_with_a_reason_naming_the_key() -> None:
    """Should a section without the term get past the settings, the rule names the key rather than guess a term."""
    section = ProgramSection.model_construct(calculator="percentage", clawback="prorated", clawback_term_days=None)
    event = Event(2, "s:Opportunity:o1:refunded", "s", "Opportunity", "o1", "refunded", "deal_refunded",
                  datetime(2026, 2, 1, tzinfo=UTC), "p1", "acme", None, None, {})
    with pytest.raises(CalculationError, match="clawback_term_days"):
        clawback("p", section, event, OneReward())
    full = ProgramSection(calculator="percentage")
    assert [(line.payee_id, line.amount) for line in clawback("p", full, event, OneReward()).lines] == [
        ("p1", Decimal("-100.00"))]


def test_clawback_of_a_split_deal_takes_back_from_each_payee(world: Any) -> None:
    rt = world(f"[programs.p]\n{CLAWBACK}splits = true\n")
    run(rt, deal("o1", "1000.01", splits=shares(("p1", "60"), ("p2", "40"))),
        deal("o2", "300.00", splits=shares(("p2", "50"), ("p3", "50"))))
    schedule(rt)
    pay(rt)
    run(rt, refund("o1", "2026-03-01T00:00:00Z"))  # the refund has no splits attribute
    assert paid_lines(rt, "o1") == [("p1", "600.01"), ("p2", "400.00")]
    assert sorted(paid_lines(rt, "o1", "refunded")) == [("p1", "-600.01"), ("p2", "-400.00")]
    assert paid_lines(rt, "o2") == [("p2", "150.00"), ("p3", "150.00")]  # untouched
    verified(rt)


def test_clawback_after_payment_is_netted_into_the_next_payout(world: Any) -> None:
    rt = world(f"[programs.p]\n{CLAWBACK}")
    run(rt, deal("o1", "1000.00"))
    schedule(rt)
    pay(rt)
    [first] = all_payouts(rt)
    assert (first.status, payout_money(first)) == ("paid", ("p1", "1000.00", "USD"))
    [original] = reward_rows(rt)
    assert original.status == "paid"

    run(rt, refund("o1", "2026-02-01T00:00:00Z"))
    schedule(rt)
    [back] = [r for r in reward_rows(rt) if r.transition == "refunded"]
    assert (money(back), back.status, back.payout_id) == ("-1000.00", "carried", None)
    assert back.hold_reason == "net balance -1000.00 USD: adjustments exceed rewards; carried forward"
    assert len(all_payouts(rt)) == 1  # no payout for a negative balance

    run(rt, deal("o2", "1500.00", when="2026-02-10T00:00:00Z"))
    schedule(rt)
    first_again, second = all_payouts(rt)
    assert payout_money(second) == ("p1", "500.00", "USD")
    new = [r for r in reward_rows(rt) if r.object_id == "o2"][0]
    assert items(rt, second.id) == [(back.id, "-1000.00", None), (new.id, "1500.00", None)]
    assert {r.status for r in reward_rows(rt) if r.payout_id == second.id} == {"scheduled"}
    # The paid payout is never rewritten.
    assert first_again == first
    assert items(rt, first.id) == [(original.id, "1000.00", None)]
    assert reward_rows(rt)[0].status == "paid"
    verified(rt)


# ----------------------------------------------------------------------------------- netting and carry-forward


def test_negative_balance_is_carried_then_netted_when_the_payee_earns_again(world: Any) -> None:
    rt = world(f"[programs.p]\n{CLAWBACK}")
    run(rt, deal("o1", "100.00"), deal("o9", "80.00", payee="p2"))
    schedule(rt)
    pay(rt)
    run(rt, refund("o1", "2026-02-01T00:00:00Z"), deal("o2", "30.00", when="2026-02-02T00:00:00Z"))
    schedule(rt)
    carried = [r for r in reward_rows(rt) if r.status == "carried"]
    assert [(r.object_id, money(r)) for r in carried] == [("o1", "-100.00"), ("o2", "30.00")]
    assert {r.hold_reason for r in carried} == {
        "net balance -70.00 USD: adjustments exceed rewards; carried forward"}
    assert len(all_payouts(rt)) == 2  # p1's first payout and p2's

    run(rt, deal("o3", "200.00", when="2026-03-01T00:00:00Z"))
    schedule(rt)
    *_, last = all_payouts(rt)
    assert (payout_money(last), last.item_count, last.status) == (("p1", "130.00", "USD"), 3, "scheduled")
    ids = {(r.object_id, r.transition): r.id for r in reward_rows(rt)}
    assert items(rt, last.id) == [(ids[("o1", "refunded")], "-100.00", None), (ids[("o2", "won")], "30.00", None),
                                  (ids[("o3", "won")], "200.00", None)]
    assert last.amount_minor == sum(r.amount_minor for r in reward_rows(rt) if r.payout_id == last.id)
    assert not [r for r in reward_rows(rt) if r.status in ("carried", "pending")]
    verified(rt)


def test_rail_minimum_payout_carries_small_balances_forward(world: Any) -> None:
    rt = world(f"[programs.p]\n{PCT}", rail='min_payout = {USD = "25"}\n')
    run(rt, deal("small", "10.00"), deal("exact", "25.00", payee="p2"), deal("eur", "5.00", payee="p3",
                                                                            currency="EUR"))
    schedule(rt)
    assert [payout_money(p) for p in all_payouts(rt)] == [("p2", "25.00", "USD"), ("p3", "5.00", "EUR")]
    [small] = [r for r in reward_rows(rt) if r.object_id == "small"]
    assert small.status == "carried"
    assert small.hold_reason == "net balance 10.00 USD is below the minimum payout 25 USD of rail r"
    schedule(rt)  # nothing new: still carried, nothing paid
    assert len(all_payouts(rt)) == 2

    run(rt, deal("more", "20.00", when="2026-01-20T00:00:00Z"))
    schedule(rt)
    *_, last = all_payouts(rt)
    assert (payout_money(last), last.item_count) == (("p1", "30.00", "USD"), 2)
    assert [amount for _id, amount, _fx in items(rt, last.id)] == ["10.00", "20.00"]
    verified(rt)


def test_payee_min_payout_column_raises_the_minimum(world: Any) -> None:
    payees = ("id,name,country,currency,min_payout\np1,One,DE,USD,50\np2,Two,FR,USD,\np3,Three,IT,USD,5\n"
              "p4,Four,ES,EUR,100\n")
    rt = world(f"[programs.p]\n{PCT}", payees=payees, rail='min_payout = {USD = "25"}\n')
    run(rt, deal("a", "30.00"), deal("b", "30.00", payee="p2"), deal("c", "20.00", payee="p3"),
        deal("d", "60.00", payee="p4"))  # p4's minimum is in EUR: it does not apply to a USD payout
    schedule(rt)
    assert [payout_money(p) for p in all_payouts(rt)] == [("p2", "30.00", "USD"), ("p4", "60.00", "USD")]
    reasons = {r.payee_id: r.hold_reason for r in reward_rows(rt) if r.status == "carried"}
    assert reasons == {"p1": "net balance 30.00 USD is below the minimum payout 50 USD of payee p1",
                       "p3": "net balance 20.00 USD is below the minimum payout 25 USD of rail r"}
    run(rt, deal("e", "19.99", when="2026-01-11T00:00:00Z"), deal("f", "5.00", payee="p3"))
    schedule(rt)
    assert [r.status for r in reward_rows(rt) if r.payee_id == "p1"] == ["carried", "carried"]  # 49.99 < 50
    assert [payout_money(p) for p in all_payouts(rt)][2:] == [("p3", "25.00", "USD")]
    run(rt, deal("g", "0.01", when="2026-01-12T00:00:00Z"))
    schedule(rt)
    assert payout_money(all_payouts(rt)[-1]) == ("p1", "50.00", "USD")
    verified(rt)


WIN = st.tuples(st.just("win"), st.integers(1, 6000))  # a deal of 0.01 to 60.00 USD
OPERATIONS = st.lists(st.one_of(
    WIN, WIN,
    st.tuples(st.just("refund"), st.integers(0, 50)),  # a full clawback of an earlier deal (by index)
    st.tuples(st.just("schedule"), st.just(0)),
), min_size=3, max_size=15)


@pytest.mark.slow  # many generated examples, each through the pipeline
def test_netting_never_creates_or_loses_a_minor_unit(world: Any) -> None:
    """Random rewards and clawbacks for one payee, scheduled at random moments, with a minimum payout of 25 USD:
    the payouts are exactly those of a running balance (paid when at least 25.00, else carried), the payouts plus
    the carried balance equal the rewards, and every payout is above zero and equals its items."""
    count = 2000
    payees = "id,name,country,currency\n" + "".join(f"h{n},H{n},DE,USD\n" for n in range(count))
    rt = world(f"[programs.p]\n{CLAWBACK}", payees=payees, rail='min_payout = {USD = "25"}\n')
    numbers = itertools.count()

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(operations=OPERATIONS)
    def check(operations: list[tuple[str, int]]) -> None:
        n = next(numbers)
        assert n < count
        payee = f"h{n}"
        won: list[str] = []
        # The model: each reward's amount and state (pending, carried, paid or cancelled), the payouts.
        entries: list[list[Any]] = []  # [object, amount, state]
        granted: dict[str, int] = {}
        expected: list[int] = []

        def net_pending() -> None:
            if any(state == "pending" for _o, _a, state in entries):  # else the carried balance waits
                open_ = [e for e in entries if e[2] in ("pending", "carried")]
                net = sum(amount for _o, amount, _s in open_)
                if net >= 2500:
                    expected.append(net)
                for entry in open_:
                    entry[2] = "paid" if net >= 2500 else "carried"

        for step, (kind, value) in enumerate([*operations, ("schedule", 0)]):
            if kind == "win":
                won.append(f"{payee}-d{step}")
                granted[won[-1]] = value
                entries.append([won[-1], value, "pending"])
                run(rt, deal(won[-1], str(Decimal(value).scaleb(-2)), payee=payee))
            elif kind == "refund" and won:
                target = won[value % len(won)]
                if granted[target]:
                    [original] = [e for e in entries if e[0] == target and e[1] > 0]
                    if original[2] == "paid":  # an adjustment
                        entries.append([target, -granted[target], "pending"])
                    else:  # not paid yet: cancelled
                        original[2] = "cancelled"
                    granted[target] = 0
                run(rt, refund(target, "2026-02-01T00:00:00Z", payee=payee, transition=f"refunded{step}"))
            elif kind == "schedule":
                schedule(rt)
                net_pending()
        carried = sum(amount for _o, amount, state in entries if state == "carried")
        mine = [r for r in reward_rows(rt) if r.payee_id == payee]
        with rt.engine.connect() as conn:
            made = conn.execute(select(payouts).where(payouts.c.payee_id == payee).order_by(payouts.c.id)).all()
            linked = {p.id: conn.execute(select(func.coalesce(func.sum(payout_items.c.amount_minor), 0)).where(
                payout_items.c.payout_id == p.id)).scalar_one() for p in made}
        assert [p.amount_minor for p in made] == expected
        assert {r.status for r in mine} <= {"scheduled", "carried", "cancelled"}
        mine = [r for r in mine if r.status != "cancelled"]
        assert sum(r.amount_minor for r in mine if r.status == "carried") == carried
        assert sum(p.amount_minor for p in made) + carried == sum(r.amount_minor for r in mine)
        for p in made:
            assert p.amount_minor > 0
            assert p.amount_minor == linked[p.id] == sum(r.amount_minor for r in mine if r.payout_id == p.id)
        for object_id, left in granted.items():  # a clawback takes back what its object still grants, no more
            assert sum(r.amount_minor for r in mine if r.object_id == object_id) == left

    check()
    verified(rt)


# ----------------------------------------------------------------------------------------------------- budgets


BUDGET = """
    [programs.p]
    calculator = "percentage"
    percent = "100"

    [programs.p.budget]
    amount = "1000"
    currency = "USD"
    period = "quarter"
"""


@pytest.mark.parametrize("limit", [None, 1], ids=["one-batch", "batch-per-event"])
def test_budget_holds_rewards_beyond_the_quarter_pool(world: Any, limit: int | None) -> None:
    rt = world(BUDGET)
    run(rt,
        deal("a", "600.00", when="2026-01-10T00:00:00Z"),
        deal("b", "300.00", when="2026-02-01T00:00:00Z", payee="p2"),
        deal("c", "200.00", when="2026-03-01T00:00:00Z"),  # 100.00 left: held
        deal("d", "100.00", when="2026-03-31T23:59:59Z", payee="p3"),  # fits exactly
        deal("e", "0.01", when="2026-03-15T00:00:00Z"),  # nothing left
        deal("f", "1000.00", when="2026-04-01T00:00:00Z", payee="p2"),  # a fresh pool in the next quarter
        limit=limit)
    found = {r.object_id: r for r in reward_rows(rt)}
    assert {k: (r.status, r.hold_code, r.budget_key) for k, r in found.items()} == {
        "a": ("pending", None, "p:2026-Q1"), "b": ("pending", None, "p:2026-Q1"),
        "c": ("held", "budget", "p:2026-Q1"), "d": ("pending", None, "p:2026-Q1"),
        "e": ("held", "budget", "p:2026-Q1"), "f": ("pending", None, "p:2026-Q2")}
    assert found["c"].hold_reason == ("budget p:2026-Q1 would be overdrawn: 100.00 USD left of 1000.00, "
                                      "the reward is 200.00 USD")
    assert "0.00 USD left of 1000.00" in found["e"].hold_reason
    schedule(rt)
    assert [payout_money(p) for p in all_payouts(rt)] == [
        ("p1", "600.00", "USD"), ("p2", "1300.00", "USD"), ("p3", "100.00", "USD")]
    assert [(r.status, r.payout_id) for r in reward_rows(rt) if r.hold_code == "budget"] == [
        ("held", None), ("held", None)]
    verified(rt)


def test_budget_per_partner_keeps_partners_apart(world: Any) -> None:
    rt = world(BUDGET.replace('period = "quarter"', 'period = "year"\nper = "partner"'))
    run(rt, deal("a", "800.00"), deal("b", "800.00", partner="globex"), deal("c", "300.00"),
        deal("d", "200.00", partner="globex"), deal("none", "1.00", partner=None))
    found = {r.object_id: r for r in reward_rows(rt)}
    assert {k: (r.status, r.budget_key) for k, r in found.items()} == {
        "a": ("pending", "p:2026:acme"), "b": ("pending", "p:2026:globex"), "c": ("held", "p:2026:acme"),
        "d": ("pending", "p:2026:globex")}
    assert "200.00 USD left of 1000.00" in found["c"].hold_reason
    assert "partner_id" in failure(rt, "none")
    verified(rt)


def test_budget_in_another_currency_fails_the_calculation(world: Any) -> None:
    rt = world(BUDGET.replace('currency = "USD"', 'currency = "EUR"'))
    run(rt, deal("usd", "10.00"), deal("eur", "10.00", currency="EUR"))
    reason = failure(rt, "usd")
    assert "budget.currency is EUR but the reward is in USD" in reason and "not compared" in reason, reason
    assert paid_lines(rt, "usd") == []
    assert [(r.object_id, r.status, r.budget_key) for r in reward_rows(rt)] == [("eur", "pending", "p:2026-Q1")]
    verified(rt)


def test_cancelling_a_reward_frees_its_budget(world: Any) -> None:
    rt = world(BUDGET)
    run(rt, deal("a", "800.00"), deal("b", "300.00"))
    a, b = reward_rows(rt)
    assert (a.status, b.status, b.hold_code) == ("pending", "held", "budget")
    run(rt, deal("c", "900.00", when="2026-01-11T00:00:00Z"))
    assert reward_rows(rt)[-1].status == "held"
    assert reward_actions.cancel(rt, [a.id], "deal lost before payment") == 1
    run(rt, deal("d", "900.00", when="2026-01-12T00:00:00Z"))
    found = {r.object_id: (r.status, r.hold_code) for r in reward_rows(rt)}
    assert found == {"a": ("cancelled", None), "b": ("held", "budget"), "c": ("held", "budget"), "d": ("pending", None)}
    run(rt, deal("e", "100.01", when="2026-01-13T00:00:00Z"))  # 900 + 100.01 > 1000 again
    assert reward_rows(rt)[-1].status == "held"
    verified(rt)


# --------------------------------------------------------------------------------------------------- approvals


def test_approval_thresholds_decide_how_rewards_start(world: Any) -> None:
    rt = world("""
        [programs.p]
        calculator = "percentage"
        percent = "100"
        event_types = ["deal_won"]

        [programs.p.approval]
        currency = "USD"
        threshold = "500"
        dual_threshold = "5000"

        [programs.cert]
        calculator = "flat"
        amount = "50"
        currency = "EUR"
        event_types = ["certified"]

        [programs.cert.approval]
        currency = "USD"
        threshold = "500"
    """)
    cert = SourceRecord("Person", "c1", "passed", "certified", "2026-01-10T00:00:00Z", "p3")
    run(rt, deal("400", "400.00"), deal("500", "500.00"), deal("600", "600.00", payee="p2"),
        deal("5000", "5000.00", payee="p2"), deal("6000", "6000.00", payee="p3"),
        deal("eur", "100.00", currency="EUR", payee="p3"), cert)
    found = {(r.program, r.object_id): (r.status, r.approvals_needed) for r in reward_rows(rt)}
    assert found == {
        ("p", "400"): ("pending", 0), ("p", "500"): ("pending", 0), ("p", "600"): ("awaiting_approval", 1),
        ("p", "5000"): ("awaiting_approval", 1), ("p", "6000"): ("awaiting_approval", 2),
        ("p", "eur"): ("awaiting_approval", 2),  # another currency is not compared: every approval
        ("cert", "c1"): ("awaiting_approval", 1)}
    schedule(rt)
    assert [payout_money(p) for p in all_payouts(rt)] == [("p1", "900.00", "USD")]
    awaiting = [r for r in reward_rows(rt) if r.status == "awaiting_approval"]
    assert len(awaiting) == 5 and all(r.payout_id is None for r in awaiting)
    verified(rt)


# --------------------------------------------------------------------------------------------------------- FX


class Rates:
    """A ``payhub_fx_rate`` provider answering from ``rates`` and remembering what it was asked."""

    def __init__(self, rates: dict[tuple[str, str, str], Decimal] | None = None) -> None:
        self.rates = dict(rates or {})
        self.asked: list[tuple[str, str, date, str]] = []

    @hookimpl
    def payhub_fx_rate(self, base: str, quote: str, on: date, rate_type: str) -> FxRate | None:
        self.asked.append((base, quote, on, rate_type))
        rate = self.rates.get((base, quote, rate_type))
        return None if rate is None else FxRate(base, quote, rate, "test rates", on)


FX_PAYEES = "id,name,country,currency\np1,One,DE,EUR\np2,Two,US,USD\np3,Three,FR,EUR\n"


def test_payee_currency_payout_converted_at_the_event_date_rate(world: Any) -> None:
    rt = world(f"""
        [programs.p]
        {PCT}payout_currency = "payee"
        fx_date = "event"
        event_types = ["deal_won"]

        [programs.keep]
        {PCT}event_types = ["deal_kept"]
    """, payees=FX_PAYEES)
    rates = Rates({("USD", "EUR", "reference"): Decimal("0.9123")})
    rt.plugins.hooks.register(rates, name="test_rates")
    kept = SourceRecord("Opportunity", "k1", "won", "deal_kept", "2026-03-10T00:00:00Z", "p3", "7.00", "USD")
    run(rt, deal("o1", "1234.56", when="2026-03-10T15:00:00Z"), deal("o2", "200.00", payee="p2"), kept)
    schedule(rt)
    eur, usd, keep = all_payouts(rt)
    assert payout_money(eur) == ("p1", "1126.29", "EUR")  # 1126.289088 rounded once
    assert payout_money(usd) == ("p2", "200.00", "USD")  # the payee's own currency: nothing to convert
    assert payout_money(keep) == ("p3", "7.00", "USD")  # payout_currency = "reward": paid as earned
    [(reward_id, amount, fx)] = items(rt, eur.id)
    assert amount == "1126.29"
    assert fx == {"from_currency": "USD", "from_amount": "1234.56", "rate": "0.9123", "rate_type": "reference",
                  "rate_date": "2026-03-10", "date_used": "event", "source": "test rates"}
    assert items(rt, usd.id)[0][2] is None and items(rt, keep.id)[0][2] is None
    reward = [r for r in reward_rows(rt) if r.id == reward_id][0]
    assert (money(reward), reward.currency, reward.status) == ("1234.56", "USD", "scheduled")  # stays in USD
    assert rates.asked == [("USD", "EUR", date(2026, 3, 10), "reference")]
    verified(rt)


def test_payout_date_rate_is_asked_for_the_day_of_the_payout(world: Any) -> None:
    rt = world(f'[programs.p]\n{PCT}payout_currency = "payee"\nfx_date = "payout"\n', payees=FX_PAYEES)
    rates = Rates({("USD", "EUR", "reference"): Decimal("0.5")})
    rt.plugins.hooks.register(rates, name="test_rates")
    run(rt, deal("o1", "0.05", when="2026-03-10T15:00:00Z"))
    before = utcnow().date()
    schedule(rt)
    after = utcnow().date()
    [p] = all_payouts(rt)
    assert payout_money(p) == ("p1", "0.03", "EUR")  # 0.025 rounds half up
    [(_base, _quote, on, _type)] = rates.asked
    assert before <= on <= after
    [(_id, _amount, fx)] = items(rt, p.id)
    assert fx is not None and fx["date_used"] == "payout"
    verified(rt)


def test_without_a_rate_the_reward_is_held_then_paid_once_a_rate_is_known(world: Any) -> None:
    rt = world(f'[programs.p]\n{CLAWBACK}payout_currency = "payee"\nfx_rate_type = "month_end"\n',
               payees=FX_PAYEES)
    run(rt, deal("o1", "100.00", when="2026-03-10T15:00:00Z"), deal("o2", "40.00", payee="p2"))
    schedule(rt)  # no FX provider at all
    [usd] = all_payouts(rt)
    assert payout_money(usd) == ("p2", "40.00", "USD")
    [held] = [r for r in reward_rows(rt) if r.payee_id == "p1"]
    assert (held.status, held.hold_code, held.payout_id) == ("held", "fx_rate", None)
    assert held.hold_reason == ("no month_end rate USD->EUR for 2026-03-10 (event date) from any FX provider; "
                                "the reward waits for one")
    assert schedule_batch(rt) == 0

    rates = Rates({("USD", "EUR", "reference"): Decimal("0.9")})  # a provider without a month_end rate
    rt.plugins.hooks.register(rates, name="test_rates")
    assert schedule_batch(rt) == 0  # re-checked, still no rate: nothing changes
    assert rates.asked == [("USD", "EUR", date(2026, 3, 10), "month_end")]
    assert [r.status for r in reward_rows(rt) if r.payee_id == "p1"] == ["held"]

    rates.rates[("USD", "EUR", "month_end")] = Decimal("0.95")
    schedule(rt)
    *_, eur = all_payouts(rt)
    assert payout_money(eur) == ("p1", "95.00", "EUR")
    [paid] = [r for r in reward_rows(rt) if r.payee_id == "p1"]
    assert (paid.status, paid.hold_code, paid.hold_reason, paid.payout_id) == ("scheduled", None, None, eur.id)
    [(_id, _amount, fx)] = items(rt, eur.id)
    assert fx is not None and fx["rate_type"] == "month_end"
    # A clawback is converted too (at the rate of its own event date) and nets against the payee's next reward.
    run(rt, refund("o1", "2026-03-20T00:00:00Z"), deal("o3", "300.00", when="2026-03-20T00:00:00Z"))
    rates.rates[("USD", "EUR", "month_end")] = Decimal("0.9")
    schedule(rt)
    *_, last = all_payouts(rt)
    assert payout_money(last) == ("p1", "180.00", "EUR")  # (300.00 - 100.00) x 0.9
    assert [amount for _id, amount, _fx in items(rt, last.id)] == ["-90.00", "270.00"]
    verified(rt)


# ------------------------------------------------------------------------------------------------------ replay


def snapshot(rt: Runtime) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        def count(table: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        def total(column: Any) -> int:
            return int(conn.execute(select(func.coalesce(func.sum(column), 0))).scalar_one())

        return {"events": count(events), "calculations": count(calculations), "rewards": count(rewards),
                "payouts": count(payouts), "items": count(payout_items), "rewarded": total(rewards.c.amount_minor),
                "paid": total(payouts.c.amount_minor),
                "states": sorted(conn.execute(select(rewards.c.id, rewards.c.status, rewards.c.payout_id)).all())}


def test_replaying_events_creates_no_new_reward_or_payout(world: Any) -> None:
    rt = world(f"""
        [programs.p]
        {CLAWBACK}splits = true

        [programs.p.budget]
        amount = "5000"
        currency = "USD"
        period = "year"

        [programs.p.approval]
        currency = "USD"
        threshold = "2000"
    """)
    records = [deal("o1", splits=shares(("p1", "60"), ("p2", "40"))), deal("o2", "3000.00", payee="p3"),
               deal("o3", "2500.00"), deal("o4", "10.00", payee="p2"), refund("o4", "2026-02-01T00:00:00Z",
                                                                            payee="p2")]
    run(rt, *records)
    schedule(rt)
    before = snapshot(rt)
    # o1 split in two; o2 awaiting; o3 held; o4 cancelled by its refund in the same batch
    assert (before["rewards"], before["payouts"]) == (5, 2)
    assert before["rewarded"] == 100000 + 300000 + 250000 + 1000
    for _ in range(2):
        run(rt, *records)
        run(rt, *reversed(records), limit=1)
        schedule(rt)
        assert snapshot(rt) == before
    assert calculate_batch(rt, register_program_versions(rt)) == 0
    verified(rt)


# ------------------------------------------------------------------------------------------ bad configuration


def config_problems(tmp_path: Path, program: str, rail: str = "") -> list[tuple[str, str]]:
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n\n[programs.p]\ncalculator = "percentage"\n'
                    f'percent = "1"\n{program}\n[rails.r]\nplugin = "fake"\n{rail}')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value.problems


@pytest.mark.parametrize(("program", "rail", "key", "words"), [
    ('clawback = "prorated"', "", "programs.p.clawback_term_days", "clawback_term_days"),
    ('clawback = "prorated"\nclawback_term_days = 0', "", "programs.p.clawback_term_days",
     "greater than or equal to 1"),
    ('clawback = "partial"', "", "programs.p.clawback", "'full' or 'prorated'"),
    ('[programs.p.approval]\ncurrency = "USD"\nthreshold = "500"\ndual_threshold = "499.99"', "",
     "programs.p.approval.dual_threshold", "dual_threshold 499.99 is below threshold 500"),
    ('[programs.p.approval]\ncurrency = "US"\nthreshold = "500"', "", "programs.p.approval.currency",
     "unknown currency"),
    ('[programs.p.budget]\namount = "1000"\ncurrency = "XYZ"', "", "programs.p.budget.currency",
     "unknown currency 'XYZ'"),
    ('[programs.p.budget]\namount = "0"\ncurrency = "USD"', "", "programs.p.budget.amount", "greater than 0"),
    ('[programs.p.budget]\namount = "10"\ncurrency = "USD"\nperiod = "week"', "", "programs.p.budget.period",
     "'month', 'quarter', 'year' or 'program'"),
    ('payout_currency = "partner"', "", "programs.p.payout_currency", "'reward' or 'payee'"),
    ('fx_date = "today"', "", "programs.p.fx_date", "'event' or 'payout'"),
    ("", 'min_payout = {USD = 25.5}', "rails.r.min_payout.USD", "float"),
])
def test_bad_rule_settings_name_the_key(tmp_path: Path, program: str, rail: str, key: str, words: str) -> None:
    problems = config_problems(tmp_path, program, rail)
    assert [k for k, _msg in problems] == [key], problems
    assert words in problems[0][1], problems


def test_good_rule_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n\n[programs.p]\ncalculator = "percentage"\n'
                    'percent = "1"\nclawback = "prorated"\nclawback_term_days = 365\nsplits = true\n'
                    '[programs.p.budget]\namount = "1000.50"\ncurrency = "usd"\n'
                    '[programs.p.approval]\ncurrency = "EUR"\nthreshold = "500"\ndual_threshold = "500"\n'
                    '[rails.r]\nplugin = "fake"\nmin_payout = {JPY = "1000", usd = "25"}\n')
    loaded = load_settings(path)
    p = loaded.programs["p"]
    assert (p.clawback, p.clawback_term_days, p.splits, p.split_overlay) == ("prorated", 365, True, False)
    assert p.budget is not None and (p.budget.amount, p.budget.currency, p.budget.period, p.budget.per) == (
        Decimal("1000.50"), "USD", "program", "program")
    assert p.approval is not None and p.approval.dual_threshold == Decimal("500")
    assert loaded.rails["r"].min_payout == {"JPY": Decimal("1000"), "USD": Decimal("25")}


def test_a_clawback_frees_budget_and_cap_room_for_later_events_of_its_batch(world: Any) -> None:
    """A stored unpaid reward cancelled by a refund stops counting at once: a deal later in the same batch gets the
    budget and the cap room it used."""
    rt = world(f"[programs.p]\n{CLAWBACK}"
               'caps = [{per = "partner", amount = "1000", currency = "USD"}]\n'
               '[programs.p.budget]\namount = "1000"\ncurrency = "USD"\n')
    run(rt, deal("a"))
    run(rt, refund("a", "2026-02-01T00:00:00Z"), deal("b", when="2026-02-02T00:00:00Z", payee="p2"))
    states = {(r.object_id, r.transition): (r.status, money(r)) for r in reward_rows(rt)}
    assert states == {("a", "won"): ("cancelled", "1000.00"), ("b", "won"): ("pending", "1000.00")}
    verified(rt)
