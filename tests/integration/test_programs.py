"""The built-in program calculators: worked examples through the pipeline, the pure tier math, bad parameters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from payhub.api import Calculator, Event, NotEligible, RewardLine, SourceRecord
from payhub.audit import verify
from payhub.builtin.programs.deal_registration import DealRegistration, DealRegistrationParams
from payhub.builtin.programs.rebate import Rebate, RebateParams, Tier, marginal_rebate, retroactive_rebate
from payhub.db.schema import calculations, events, fund_entries, rewards
from payhub.errors import ConfigError
from payhub.money import from_minor, quantize
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll
from payhub.plugins import load_plugins
from payhub.runtime import Runtime
from payhub.settings import load_settings

SOURCE = """
    [sources.s]
    plugin = "fake"
"""

TIERS = '[{up_to = "500000", percent = "1"}, {up_to = "1000000", percent = "1.5"}, {percent = "2"}]'


def record(object_id: str, when: str, *, payee: str = "rep1", amount: str | None = "1000.00",
           currency: str | None = "USD", partner: str | None = "acme", **attributes: Any) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", when, payee, amount, currency, partner,
                        attributes)


def run(rt: Runtime, *records: SourceRecord, limit: int | None = None) -> None:
    """Ingest ``records`` and calculate them, ``limit`` events per batch (history read back from the database
    between batches, and from the batch itself within one)."""
    rt.plugins.sources["s"].push(*records)
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions, limit=limit):
        pass
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def results(rt: Runtime, program: str) -> dict[str, Any]:
    """object id -> calculation status, and the (payee, amount, details) of each reward, for one program."""
    with rt.engine.connect() as conn:
        calcs = conn.execute(select(events.c.object_id, calculations.c.status, calculations.c.reason).join(
            events, events.c.id == calculations.c.event_id).where(calculations.c.program == program)).all()
        paid = conn.execute(select(events.c.object_id, rewards.c.payee_id, rewards.c.amount_minor,
                                   rewards.c.currency, rewards.c.details).join(
            events, events.c.id == rewards.c.event_id).where(rewards.c.program == program)
            .order_by(rewards.c.id)).all()
    found: dict[str, Any] = {c.object_id: {"status": c.status, "reason": c.reason, "rewards": []} for c in calcs}
    for r in paid:
        found[r.object_id]["rewards"].append(
            (r.payee_id, str(from_minor(r.amount_minor, r.currency)), r.currency, json.loads(r.details)))
    return found


def paid(found: dict[str, Any], object_id: str) -> list[tuple[str, str]]:
    return [(payee, amount) for payee, amount, _cur, _details in found[object_id]["rewards"]]


class MemoryHistory:
    """The History contract in memory, for calling calculators directly (what DbHistory does over the database)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, datetime, RewardLine]] = []
        self.volume: list[tuple[str, Event]] = []

    def total_rewarded(self, program: str, payee_id: str, currency: str, since: datetime | None = None) -> Decimal:
        return sum((line.amount for p, _at, line in self.lines
                    if (p, line.payee_id, line.currency) == (program, payee_id, currency)), Decimal(0))

    def rewarded_between(self, program: str, payee_id: str, currency: str, since: datetime,
                         until: datetime) -> Decimal:
        return sum((line.amount for p, at, line in self.lines
                    if (p, line.payee_id, line.currency) == (program, payee_id, currency) and since <= at < until),
                   Decimal(0))

    def total_volume(self, program: str, partner_id: str, currency: str, since: datetime,
                     until: datetime, returns: tuple[str, ...] = ()) -> Decimal:
        return sum(((e.amount or Decimal(0)) * (-1 if e.event_type in returns else 1) for p, e in self.volume
                    if (p, e.partner_id, e.currency) == (program, partner_id, currency)
                    and since <= e.occurred_at < until), Decimal(0))

    def calculate(self, calculator: Calculator, event: Event) -> list[RewardLine]:
        """Run ``calculator`` as the core does: round each line once, drop zero lines, remember the results (a not
        eligible event pays nothing, and its volume counts)."""
        try:
            found = calculator.calculate(event, self)
        except NotEligible:
            found = []
        lines = [RewardLine(line.payee_id, quantize(line.amount, line.currency), line.currency, line.description,
                            line.details) for line in found]
        lines = [line for line in lines if line.amount != 0]
        self.lines.extend((calculator.program, event.occurred_at, line) for line in lines)
        self.volume.append((calculator.program, event))
        return lines


def event(number: int, amount: Decimal | None, currency: str | None = "USD", *, partner: str | None = "acme",
          when: datetime = datetime(2026, 8, 1, tzinfo=UTC), attributes: Mapping[str, Any] | None = None) -> Event:
    return Event(number, f"s:Opportunity:{number}:won", "s", "Opportunity", str(number), "won", "deal_won", when,
                 "rep1", partner, amount, currency, attributes or {})


# ------------------------------------------------------------------------------------------------------ spiff


def test_spiff_worked_example_caps_per_rep(make_runtime) -> None:
    """$50/unit, 24 units, cap $1,000 per rep: $1,000 paid, $200 logged as capped; then the rep earns nothing."""
    rt = make_runtime(SOURCE + """
        [programs.spring]
        calculator = "spiff"
        amount = "50"
        currency = "USD"
        per = "unit"
        products = ["router-x", "switch-y"]
        starts = 2026-03-01
        ends = 2026-05-31
        min_deal_amount = "500"
        cap_per_payee = "1000"
    """)
    run(rt,
        record("big", "2026-03-10T12:00:00Z", product="router-x", quantity=24),
        record("more", "2026-04-01T08:00:00Z", product="switch-y", quantity="2"),  # same batch as "big"
        record("again", "2026-05-01T08:00:00Z", product="router-x", quantity=1),  # the next batch
        record("other-rep", "2026-04-02T08:00:00Z", payee="rep2", product="switch-y", quantity=3),
        record("early", "2026-02-28T23:59:59Z", payee="rep3", product="router-x", quantity=1),
        record("late", "2026-06-01T00:00:00Z", payee="rep3", product="router-x", quantity=1),
        record("last-day", "2026-05-31T23:59:59Z", payee="rep3", product="router-x", quantity=1),
        record("wrong-product", "2026-04-02T08:00:00Z", payee="rep3", product="printer", quantity=1),
        record("small", "2026-04-02T08:00:00Z", payee="rep3", amount="499.99", product="router-x", quantity=1),
        record("no-quantity", "2026-04-02T08:00:00Z", payee="rep4", product="router-x"),
        limit=2)
    found = results(rt, "spring")
    assert found["big"]["rewards"] == [("rep1", "1000.00", "USD", {"earned": "1200.00", "capped": "200.00",
                                                                   "cap": "1000.00"})]
    assert found["more"]["status"] == found["again"]["status"] == "not_eligible"  # rep1 reached the cap
    assert found["again"]["reason"] == ("cap_per_payee for the window 2026-03-01 .. 2026-05-31 of 1000.00 USD is "
                                        "reached: rep1 already earned 1000.00 USD; this event would earn 50.00 USD")
    assert paid(found, "other-rep") == [("rep2", "150.00")]
    assert paid(found, "last-day") == [("rep3", "50.00")]
    window = "outside the program window 2026-03-01 .. 2026-05-31"
    for ineligible, reason in (
            ("early", f"the deal closed on 2026-02-28, {window}"), ("late", f"the deal closed on 2026-06-01, {window}"),
            ("wrong-product", "product 'printer' is not eligible (products: router-x, switch-y)"),
            ("small", "the deal amount 499.99 USD is below min_deal_amount 500 USD")):
        assert found[ineligible] == {"status": "not_eligible", "reason": reason, "rewards": []}
    assert found["no-quantity"]["status"] == "failed"
    assert "quantity" in found["no-quantity"]["reason"]


def test_spiff_per_deal_without_product_filter_pays_every_deal() -> None:
    from payhub.builtin.programs.spiff import Spiff, SpiffParams

    calc = Spiff("s", SpiffParams.model_validate({"amount": "75", "currency": "eur", "starts": "2026-01-01",
                                                  "ends": "2026-12-31", "cap_per_payee": "100"}))
    history = MemoryHistory()
    first = history.calculate(calc, event(1, None, None))
    second = history.calculate(calc, event(2, None, None))
    assert [(line.amount, line.currency, dict(line.details)) for line in first + second] == [
        (Decimal("75.00"), "EUR", {}),
        (Decimal("25.00"), "EUR", {"earned": "75.00", "capped": "50.00", "cap": "100.00"})]
    assert history.calculate(calc, event(3, None, None)) == []


# ----------------------------------------------------------------------------------------------------- rebate


def tiers(*rows: tuple[str | None, str]) -> list[Tier]:
    return [Tier.model_validate({"percent": pct} | ({"up_to": up} if up is not None else {})) for up, pct in rows]


WORKED_TIERS = tiers(("500000", "1"), ("1000000", "1.5"), (None, "2"))


def test_rebate_tier_math_worked_example() -> None:
    """$1.2M with 1% to $500k, 1.5% to $1M, 2% above: marginal $16,500, retroactive $24,000."""
    assert marginal_rebate(Decimal("1200000"), WORKED_TIERS) == Decimal("16500")
    assert retroactive_rebate(Decimal("1200000"), WORKED_TIERS) == Decimal("24000")


@pytest.mark.parametrize(("volume", "marginal", "retroactive"), [
    ("0", "0", "0"),
    ("500000", "5000", "5000"),  # a tier's up_to belongs to that tier
    ("500000.01", "5000.00015", "7500.00015"),
    ("1000000", "12500", "15000"),
    ("1000000.50", "12500.01", "20000.01"),
])
def test_rebate_tier_boundaries(volume: str, marginal: str, retroactive: str) -> None:
    assert marginal_rebate(Decimal(volume), WORKED_TIERS) == Decimal(marginal)
    assert retroactive_rebate(Decimal(volume), WORKED_TIERS) == Decimal(retroactive)


def test_rebate_worked_example_accrues_through_the_pipeline(make_runtime) -> None:
    """Three deals of one partner in Q3 (300k + 400k + 500k = 1.2M): the accruals sum to the period's rebate in
    both modes; Q4 starts again from zero, and another partner has its own volume."""
    rt = make_runtime(SOURCE + f"""
        [programs.marginal]
        calculator = "rebate"
        period = "quarter"
        mode = "marginal"
        tiers = {TIERS}

        [programs.retro]
        calculator = "rebate"
        period = "quarter"
        mode = "retroactive"
        tiers = {TIERS}
    """)
    run(rt,
        record("a", "2026-07-02T10:00:00Z", amount="300000"),
        record("b", "2026-08-15T10:00:00Z", amount="400000"),
        record("other", "2026-08-16T10:00:00Z", amount="600000", partner="globex"),
        record("c", "2026-09-30T23:59:59Z", amount="500000"),
        record("q4", "2026-10-01T00:00:00Z", amount="600000"),
        record("no-partner", "2026-08-01T00:00:00Z", amount="1000", partner=None),
        limit=2)
    marginal = results(rt, "marginal")
    assert [paid(marginal, x) for x in "abc"] == [[("acme", "3000.00")], [("acme", "5000.00")],
                                                   [("acme", "8500.00")]]
    assert sum(Decimal(paid(marginal, x)[0][1]) for x in "abc") == Decimal("16500")
    assert paid(marginal, "other") == [("globex", "6500.00")]
    assert paid(marginal, "q4") == [("acme", "6500.00")]
    assert marginal["c"]["rewards"][0][3] == {
        "period": "2026-Q3", "mode": "marginal", "volume_before": "700000", "volume_after": "1200000",
        "rebate_before": "8000.00", "rebate_after": "16500.00"}
    retro = results(rt, "retro")
    assert [paid(retro, x) for x in "abc"] == [[("acme", "3000.00")], [("acme", "7500.00")], [("acme", "13500.00")]]
    assert sum(Decimal(paid(retro, x)[0][1]) for x in "abc") == Decimal("24000")
    assert paid(retro, "q4") == [("acme", "9000.00")]
    assert retro["no-partner"]["status"] == "failed"


def test_rebate_return_trues_up_across_a_tier(make_runtime) -> None:
    """1.2M of retroactive volume has accrued 24,000 (2%); a 300k return drops the partner to 900k (1.5%), so the
    return takes back 24,000 - 13,500 = 10,500, and the period's accruals sum to the rebate of the net volume."""
    rt = make_runtime(SOURCE + f"""
        [programs.retro]
        calculator = "rebate"
        mode = "retroactive"
        tiers = {TIERS}
        return_event_types = ["order_returned"]
    """)
    returned = SourceRecord("Order", "c", "returned", "order_returned", "2026-09-20T00:00:00Z", "rep1", "300000",
                            "USD", "acme")
    run(rt, record("a", "2026-07-02T10:00:00Z", amount="700000"), record("b", "2026-08-15T10:00:00Z",
                                                                          amount="500000"), returned, limit=2)
    retro = results(rt, "retro")
    assert paid(retro, "c") == [("acme", "-10500.00")]
    assert retro["c"]["rewards"][0][3]["volume_after"] == "900000"
    assert sum(Decimal(paid(retro, x)[0][1]) for x in "abc") == Decimal("13500.00")


def test_rebate_volume_counts_events_whose_accrual_rounds_to_zero() -> None:
    """Accruals below a minor unit record no reward, yet their volume counts: 100 events of 0.40 USD at 1% pay
    0.40 USD in all, not nothing."""
    calc = Rebate("r", RebateParams.model_validate({"tiers": [{"percent": "1"}]}))
    history = MemoryHistory()
    total = sum((line.amount for n in range(100) for line in history.calculate(calc, event(n, Decimal("0.40")))),
                Decimal(0))
    assert total == Decimal("0.40")


def test_rebate_periods_by_year_and_currency_kept_apart() -> None:
    calc = Rebate("r", RebateParams.model_validate({"period": "year", "mode": "retroactive", "tiers": [
        {"up_to": "1000", "percent": "1"}, {"percent": "10"}]}))
    history = MemoryHistory()
    jan = history.calculate(calc, event(1, Decimal("800"), when=datetime(2026, 1, 5, tzinfo=UTC)))
    dec = history.calculate(calc, event(2, Decimal("800"), when=datetime(2026, 12, 31, 23, tzinfo=UTC)))
    yen = history.calculate(calc, event(3, Decimal("800"), "JPY", when=datetime(2026, 6, 1, tzinfo=UTC)))
    next_year = history.calculate(calc, event(4, Decimal("800"), when=datetime(2027, 1, 1, tzinfo=UTC)))
    assert [line.amount for line in jan + dec + yen + next_year] == [
        Decimal("8.00"), Decimal("152.00"), Decimal("8"), Decimal("8.00")]  # 1600 x 10% - 8 = 152


volumes = st.lists(st.decimals(min_value=0, max_value=400000, places=2), min_size=1, max_size=30)


@st.composite
def tier_tables(draw: st.DrawFn, ascending_rates: bool) -> list[Tier]:
    bounds = sorted(draw(st.sets(st.integers(1, 1_000_000), min_size=0, max_size=4)))
    rates = draw(st.lists(st.decimals(min_value=0, max_value=100, places=3), min_size=len(bounds) + 1,
                          max_size=len(bounds) + 1))
    if ascending_rates:
        rates.sort()
    return [Tier(up_to=Decimal(b), percent=r) for b, r in zip(bounds, rates[:-1], strict=True)] + \
        [Tier(percent=rates[-1])]


@settings(max_examples=150, deadline=None)
@given(amounts=volumes, table=tier_tables(ascending_rates=False), currency=st.sampled_from(["USD", "JPY", "BHD"]))
def test_marginal_accruals_sum_exactly_to_the_rebate_of_the_total(amounts: list[Decimal], table: list[Tier],
                                                                  currency: str) -> None:
    """However the period's volume is split into events, the rounded accruals add up to the rounded rebate of
    the whole volume, to the minor unit (each accrual is a difference of rounded cumulative rebates)."""
    calc = Rebate("r", RebateParams(mode="marginal", tiers=table))
    history = MemoryHistory()
    accrued = sum((line.amount for n, amount in enumerate(amounts)
                   for line in history.calculate(calc, event(n, amount, currency))), Decimal(0))
    assert accrued == quantize(marginal_rebate(sum(amounts, Decimal(0)), table), currency)


@settings(max_examples=100, deadline=None)
@given(amounts=volumes, table=tier_tables(ascending_rates=True))
def test_retroactive_accruals_sum_exactly_to_the_rebate_of_the_total(amounts: list[Decimal],
                                                                     table: list[Tier]) -> None:
    calc = Rebate("r", RebateParams(mode="retroactive", tiers=table))
    history = MemoryHistory()
    accrued = sum((line.amount for n, amount in enumerate(amounts)
                   for line in history.calculate(calc, event(n, amount))), Decimal(0))
    assert accrued == quantize(retroactive_rebate(sum(amounts, Decimal(0)), table), "USD")


# ------------------------------------------------------------------------------------------- deal registration


def test_deal_registration_bonus_split_with_second_partner(make_runtime) -> None:
    """A $500 bonus for deals closed within 90 days of registration; a second partner gets 30% of it."""
    rt = make_runtime(SOURCE + """
        [programs.dr]
        calculator = "deal_registration"
        bonus = "500"
        currency = "USD"
        protection_days = 90
        second_partner_share = "30"
    """)
    run(rt,
        record("shared", "2026-04-01T09:00:00Z", registered_at="2026-02-01", second_partner_id="globex"),
        record("alone", "2026-05-01T09:00:00Z", registered_at="2026-05-01T08:00:00Z"),
        record("last-day", "2026-05-01T23:00:00Z", registered_at="2026-01-31"),  # day 90
        record("too-late", "2026-05-02T00:00:00Z", registered_at="2026-01-31"),  # day 91
        record("unregistered", "2026-05-02T00:00:00Z"),
        record("bad-date", "2026-05-02T00:00:00Z", registered_at="yesterday"))
    found = results(rt, "dr")
    assert paid(found, "shared") == [("acme", "350.00"), ("globex", "150.00")]
    assert paid(found, "alone") == [("acme", "500.00")]
    assert paid(found, "last-day") == [("acme", "500.00")]
    assert found["too-late"]["status"] == found["unregistered"]["status"] == "not_eligible"
    assert found["bad-date"]["status"] == "failed"
    assert "registered_at" in found["bad-date"]["reason"]


@pytest.mark.parametrize(("amount", "currency", "first", "second"), [
    ("1000.01", "EUR", "66.67", "33.33"),  # uplift 100.001 -> 100.00; second 33.333.. -> 33.33; first the rest
    ("999", "JPY", "67", "33"),  # uplift 99.9 -> 100; second 33.33.. -> 33
    ("0.05", "EUR", "0.01", "0.00"),  # 0.005 -> 0.01; second 0.0033 -> 0.00 (the zero line is dropped by the core)
])
def test_deal_registration_uplift_shares_sum_to_the_reward(amount: str, currency: str, first: str,
                                                           second: str) -> None:
    calc = DealRegistration("dr", DealRegistrationParams.model_validate(
        {"percent": "10", "protection_days": 30, "second_partner_share": "33.333333"}))
    lines = calc.calculate(event(1, Decimal(amount), currency, when=datetime(2026, 3, 10, tzinfo=UTC),
                                 attributes={"registered_at": "2026-03-01", "second_partner_id": "globex"}),
                           MemoryHistory())
    assert [(line.payee_id, str(line.amount)) for line in lines] == [("acme", first), ("globex", second)]
    assert sum(line.amount for line in lines) == quantize(Decimal(amount) / 10, currency)


# --------------------------------------------------------------------------------------------------- activity


def test_activity_rewards_capped_per_payee_per_month(make_runtime) -> None:
    rt = make_runtime(SOURCE + """
        [programs.training]
        calculator = "activity"
        rewards = {certification = "100", webinar = "20"}
        currency = "EUR"
        cap_per_period = "130"
        period = "month"
    """)
    run(rt,
        record("cert", "2026-10-03T10:00:00Z", amount=None, currency=None, activity="certification"),
        record("web1", "2026-10-05T10:00:00Z", amount=None, currency=None, activity="webinar"),
        record("web2", "2026-10-31T23:59:59Z", amount=None, currency=None, activity="webinar"),
        record("web3", "2026-10-20T10:00:00Z", amount=None, currency=None, activity="webinar"),
        record("nov", "2026-11-02T10:00:00Z", amount=None, currency=None, activity="certification"),
        record("other", "2026-10-06T10:00:00Z", payee="rep2", amount=None, currency=None, activity="webinar"),
        record("demo", "2026-10-06T10:00:00Z", amount=None, currency=None, activity="demo"),
        record("web4", "2026-10-21T10:00:00Z", amount=None, currency=None, activity="webinar"),  # next batch
        limit=4)
    found = results(rt, "training")
    assert paid(found, "cert") == [("rep1", "100.00")]
    assert paid(found, "web1") == [("rep1", "20.00")]
    assert found["web2"]["rewards"] == [("rep1", "10.00", "EUR", {
        "activity": "webinar", "period": "2026-10", "earned": "20.00", "capped": "10.00", "cap": "130.00"})]
    assert found["web3"]["status"] == found["web4"]["status"] == "not_eligible"  # the month's cap is reached
    assert paid(found, "nov") == [("rep1", "100.00")]  # a new month
    assert paid(found, "other") == [("rep2", "20.00")]
    assert found["demo"]["status"] == "not_eligible"


# ------------------------------------------------------------------------------------------------------- coop


def test_coop_accrues_a_fund_and_pays_claims_from_it(make_runtime) -> None:
    """2% of $100,000 = $2,000 accrued to the partner's fund (not paid); a $1,800 claim at 50% pays $900 from it."""
    rt = make_runtime(SOURCE + """
        [programs.coop]
        calculator = "coop"
        percent = "2"
        participation_percent = "50"
        event_types = ["purchase", "coop_claim"]
    """)
    purchase = SourceRecord("Order", "o1", "booked", "purchase", "2026-06-01T00:00:00Z", "rep1", "100000", "USD",
                            "acme")
    odd = SourceRecord("Order", "o2", "booked", "purchase", "2026-06-01T00:00:00Z", "rep1", "333.33", "JPY", "acme")
    claim = SourceRecord("Claim", "c1", "approved", "coop_claim", "2026-07-01T00:00:00Z", "rep1", "1800", "USD",
                         "acme")
    run(rt, purchase, odd, record("deal", "2026-06-01T00:00:00Z"), claim)
    found = results(rt, "coop")
    assert found["o1"]["rewards"] == found["o2"]["rewards"] == []  # accruals are not payments
    assert found["c1"]["rewards"] == [("acme", "900.00", "USD", {
        "claimed": "1800", "participation_percent": "50", "share": "900.00", "balance": "2000.00",
        "limit": "share"})]
    assert "deal" not in found  # not a purchase event
    with rt.engine.connect() as conn:
        entries = conn.execute(select(events.c.object_id, fund_entries.c.holder_id, fund_entries.c.amount,
                                      fund_entries.c.unit).join(events, events.c.id == fund_entries.c.event_id)
                               .where(fund_entries.c.program == "coop").order_by(fund_entries.c.id)).all()
    assert [tuple(entry) for entry in entries] == [
        ("o1", "acme", "2000.00", "USD"), ("o2", "acme", "7", "JPY"),  # 6.6666 JPY rounds half-up once to 7
        ("c1", "acme", "-900.00", "USD")]


# ----------------------------------------------------------------------------------------------- bad params


def config_problems(tmp_path: Path, program: str) -> list[tuple[str, str]]:
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n\n[programs.p]\n{program}\n')
    with pytest.raises(ConfigError) as info:
        load_plugins(load_settings(path), kinds={"calculator"})
    return info.value.problems


@pytest.mark.parametrize(("program", "key", "words"), [
    ('calculator = "rebate"\ntiers = [{up_to = "1000000", percent = "1"}, {up_to = "500000", percent = "2"}, '
     '{percent = "3"}]', "programs.p.tiers", "ascending"),
    ('calculator = "rebate"\ntiers = [{up_to = "500000", percent = "1"}, {up_to = "500000", percent = "2"}, '
     '{percent = "3"}]', "programs.p.tiers", "overlap"),
    ('calculator = "rebate"\ntiers = [{percent = "1"}, {up_to = "500000", percent = "2"}]', "programs.p.tiers",
     "only the last tier may be open-ended"),
    ('calculator = "rebate"\ntiers = [{up_to = "500000", percent = "1"}]', "programs.p.tiers", "open-ended"),
    ('calculator = "rebate"\ntiers = [{up_to = "500000", percent = "1"}, {percent = "101"}]',
     "programs.p.tiers.1.percent", "100"),
    ('calculator = "rebate"\nmode = "retroactive"\ntiers = [{up_to = "5", percent = "2"}, {percent = "1"}]',
     "programs.p.tiers", "must not go down"),
    ('calculator = "rebate"\nmode = "cumulative"\ntiers = [{percent = "1"}]', "programs.p.mode", "marginal"),
    ('calculator = "rebate"\ntiers = []', "programs.p.tiers", "at least 1"),
    ('calculator = "spiff"\namount = "50"\ncurrency = "XYZ"\nstarts = 2026-01-01\nends = 2026-02-01',
     "programs.p.currency", "unknown currency"),
    ('calculator = "spiff"\namount = "50"\ncurrency = "USD"\nstarts = 2026-03-01\nends = 2026-02-01',
     "programs.p.ends", "before it starts"),
    ('calculator = "spiff"\namount = 50.5\ncurrency = "USD"\nstarts = 2026-01-01\nends = 2026-02-01',
     "programs.p.amount", "float"),
    ('calculator = "spiff"\namount = "50"\ncurrency = "USD"\nstarts = 2026-01-01\nends = 2026-02-01\n'
     'cap_per_payee = "0"', "programs.p.cap_per_payee", "greater than 0"),
    ('calculator = "deal_registration"\nbonus = "500"\nprotection_days = 90', "programs.p.currency", "currency"),
    ('calculator = "deal_registration"\nbonus = "500"\ncurrency = "USD"\npercent = "5"\nprotection_days = 90',
     "programs.p.percent", "not both"),
    ('calculator = "deal_registration"\nprotection_days = 90', "programs.p.percent", "either"),
    ('calculator = "deal_registration"\npercent = "5"\nprotection_days = 0', "programs.p.protection_days",
     "greater than 0"),
    ('calculator = "deal_registration"\npercent = "5"\nprotection_days = 9\nsecond_partner_share = "120"',
     "programs.p.second_partner_share", "100"),
    ('calculator = "activity"\nrewards = {webinar = "-5"}\ncurrency = "EUR"', "programs.p.rewards", "above 0"),
    ('calculator = "activity"\nrewards = {webinar = "5"}\ncurrency = "EUR"\nperiod = "week"', "programs.p.period",
     "month"),
    ('calculator = "coop"\npercent = "150"', "programs.p.percent", "100"),
    ('calculator = "coop"\npercent = "2"\nbogus = "5"', "programs.p.bogus", "unknown key"),
])
def test_bad_params_name_the_program_and_key(tmp_path: Path, program: str, key: str, words: str) -> None:
    problems = config_problems(tmp_path, program)
    assert [k for k, _msg in problems] == [key], problems
    assert words in problems[0][1], problems


def test_good_params_load(tmp_path: Path) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n\n[programs.r]\ncalculator = "rebate"\n'
                    f'tiers = {TIERS}\n[programs.d]\ncalculator = "deal_registration"\npercent = "2.5"\n'
                    'protection_days = 60\n')
    plugins = load_plugins(load_settings(path), kinds={"calculator"})
    assert set(plugins.calculators) == {"r", "d"}
    params = plugins.calculators["r"].params
    assert isinstance(params, RebateParams)
    assert [t.up_to for t in params.tiers] == [Decimal("500000"), Decimal("1000000"), None]
