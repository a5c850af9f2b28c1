"""The fund and claim calculators (coop, mdf, loyalty_points) and referral: worked examples, properties, bad
parameters, called directly with an in-memory History."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from test_programs import run as run_pipeline

from payhub.api import Calculator, Event, FundMovement, NotEligible, RewardLine, SourceRecord
from payhub.builtin.programs.coop import Coop, CoopParams
from payhub.builtin.programs.loyalty_points import LoyaltyPoints, LoyaltyPointsParams
from payhub.builtin.programs.mdf import Mdf, MdfParams, fund_holder
from payhub.builtin.programs.referral import Referral, ReferralParams, add_months
from payhub.db.schema import calculations, events, fund_entries, rewards
from payhub.errors import CalculationError, ConfigError
from payhub.funds import POINTS, balance, round_unit
from payhub.money import from_minor, minor_units, quantize
from payhub.plugins import load_plugins
from payhub.runtime import Runtime
from payhub.settings import load_settings

Line = RewardLine | FundMovement


class Books:
    """The History protocol over lists in memory: the rewards and fund entries of the calculations run through
    :meth:`run`, each at its event's ``occurred_at`` (what the database holds for the pipeline)."""

    def __init__(self) -> None:
        self.rewards: list[tuple[str, datetime, RewardLine]] = []
        self.funds: list[tuple[str, datetime, FundMovement]] = []
        self.calculated: list[tuple[str, Event]] = []

    def total_rewarded(self, program: str, payee_id: str, currency: str, since: datetime | None = None) -> Decimal:
        return sum((line.amount for p, at, line in self.rewards if p == program and line.payee_id == payee_id
                    and line.currency == currency and (since is None or at >= since)), Decimal(0))

    def rewarded_between(self, program: str, payee_id: str, currency: str, since: datetime,
                         until: datetime) -> Decimal:
        return sum((line.amount for p, at, line in self.rewards if p == program and line.payee_id == payee_id
                    and line.currency == currency and since <= at < until), Decimal(0))

    def total_volume(self, program: str, partner_id: str, currency: str, since: datetime, until: datetime,
                     returns: Collection[str] = ()) -> Decimal:
        return sum((e.amount * (-1 if e.event_type in returns else 1) for p, e in self.calculated
                    if p == program and e.partner_id == partner_id and e.currency == currency
                    and e.amount is not None and since <= e.occurred_at < until), Decimal(0))

    def entries(self, program: str, holder_id: str, unit: str) -> list[tuple[datetime, Decimal, datetime | None]]:
        return [(at, move.amount, move.expires_at) for p, at, move in self.funds
                if (p, move.holder_id, move.unit) == (program, holder_id, unit)]

    def fund_balance(self, program: str, holder_id: str, unit: str, at: datetime) -> Decimal:
        return balance(self.entries(program, holder_id, unit), at)

    def fund_credited(self, program: str, holder_id: str, unit: str, since: datetime, until: datetime) -> Decimal:
        return sum((amount for at, amount, _expires in self.entries(program, holder_id, unit)
                    if amount > 0 and since <= at < until), Decimal(0))

    def run(self, calculator: Calculator, event: Event) -> list[Line]:
        """Calculate as the core does: round each line and movement once, drop zeros, remember the results (a not
        eligible event gives nothing)."""
        kept: list[Line] = []
        try:
            found = calculator.calculate(event, self)
        except NotEligible:
            found = []
        for item in found:
            if isinstance(item, RewardLine):
                item = RewardLine(item.payee_id, quantize(item.amount, item.currency), item.currency,
                                  item.description, item.details)
                if item.amount != 0:
                    self.rewards.append((calculator.program, event.occurred_at, item))
            else:
                item = FundMovement(item.holder_id, round_unit(item.amount, item.unit), item.unit, item.expires_at,
                                    item.description, item.details)
                if item.amount != 0:
                    self.funds.append((calculator.program, event.occurred_at, item))
            if item.amount != 0:
                kept.append(item)
        self.calculated.append((calculator.program, event))
        return kept


_numbers = iter(range(1, 10**9))


def make_event(event_type: str, when: datetime | str, amount: str | Decimal | None = None,
               currency: str | None = "USD", *, partner: str | None = "acme", payee: str = "rep1",
               object_id: str | None = None, **attributes: Any) -> Event:
    number = next(_numbers)
    if isinstance(when, str):
        when = datetime.fromisoformat(when).replace(tzinfo=UTC) if "T" in when else \
            datetime.combine(date.fromisoformat(when), datetime.min.time(), UTC)
    object_id = object_id or str(number)
    return Event(number, f"s:Thing:{object_id}:{event_type}", "s", "Thing", object_id, event_type, event_type, when,
                 payee, partner, Decimal(amount) if amount is not None else None,
                 currency if amount is not None else None, attributes)


def rewards_of(lines: Sequence[Line]) -> list[tuple[str, str, str]]:
    return [(line.payee_id, str(line.amount), line.currency) for line in lines if isinstance(line, RewardLine)]


def moves_of(lines: Sequence[Line]) -> list[tuple[str, str, str]]:
    return [(line.holder_id, str(line.amount), line.unit) for line in lines if isinstance(line, FundMovement)]


def at(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


# ------------------------------------------------------------------------------------------------------- coop


def coop(**params: Any) -> Coop:
    return Coop("coop", CoopParams.model_validate({"percent": "2", **params}))


def test_coop_worked_example_accrues_a_fund_and_pays_claims_from_it() -> None:
    """2% of $100,000 = $2,000 accrued (a fund, not a payment); a $1,800 claim at 50% pays $900 and spends it."""
    calc = coop(participation_percent="50")
    books = Books()
    accrual = books.run(calc, make_event("purchase", "2026-06-01", "100000"))
    assert moves_of(accrual) == [("acme", "2000.00", "USD")]
    assert rewards_of(accrual) == []  # accruing pays nothing
    claim = books.run(calc, make_event("coop_claim", "2026-07-01", "1800"))
    assert rewards_of(claim) == [("acme", "900.00", "USD")]
    assert moves_of(claim) == [("acme", "-900.00", "USD")]
    assert claim[0].details == {"claimed": "1800", "participation_percent": "50", "share": "900.00",
                                "balance": "2000.00", "limit": "share"}
    assert books.fund_balance("coop", "acme", "USD", at("2026-07-02")) == Decimal("1100.00")


def test_coop_claim_is_limited_to_the_balance_then_not_eligible() -> None:
    calc = coop(participation_percent="100", claim_event_types=["claim"])
    books = Books()
    books.run(calc, make_event("purchase", "2026-01-10", "10000"))  # 200 accrued
    first = books.run(calc, make_event("claim", "2026-02-01", "150"))
    second = books.run(calc, make_event("claim", "2026-02-02", "150"))
    assert rewards_of(first) == [("acme", "150.00", "USD")]
    assert rewards_of(second) == [("acme", "50.00", "USD")]
    assert second[0].details["limit"] == "balance"
    assert books.run(calc, make_event("claim", "2026-02-03", "150")) == []  # the fund is empty
    assert books.run(calc, make_event("claim", "2026-02-03", "150", "EUR")) == []  # no EUR fund
    assert books.run(calc, make_event("claim", "2026-02-03", "10", partner="globex")) == []  # another partner's
    assert books.run(calc, make_event("claim", "2026-02-04", "0")) == []


def test_coop_unclaimed_accruals_expire_oldest_spent_first() -> None:
    """Accruals lapse expiry_days after their purchase; a claim spends the oldest unexpired accrual first, so what
    lapses is what was left of the old one."""
    calc = coop(percent="10", expiry_days=365, participation_percent="100")
    books = Books()
    january = books.run(calc, make_event("purchase", "2026-01-01", "10000"))  # 1000, lapses 2027-01-01
    assert january[0].expires_at == at("2027-01-01")
    assert january[0].details["expires_at"] == "2027-01-01T00:00:00+00:00"
    books.run(calc, make_event("purchase", "2026-06-01", "10000"))  # 1000, lapses 2027-06-01
    assert rewards_of(books.run(calc, make_event("coop_claim", "2026-03-01", "600"))) == [("acme", "600.00", "USD")]
    assert books.fund_balance("coop", "acme", "USD", at("2026-12-31")) == Decimal("1400.00")
    assert books.fund_balance("coop", "acme", "USD", at("2027-01-01")) == Decimal("1000.00")  # 400 lapsed
    late = books.run(calc, make_event("coop_claim", "2027-01-02", "1500"))
    assert rewards_of(late) == [("acme", "1000.00", "USD")]
    assert books.run(calc, make_event("coop_claim", "2027-07-01", "1")) == []


def test_coop_all_unclaimed_funds_expire() -> None:
    calc = coop(expiry_days=90)
    books = Books()
    books.run(calc, make_event("purchase", "2026-01-01", "100000"))
    assert books.fund_balance("coop", "acme", "USD", at("2026-03-31")) == Decimal("2000.00")
    assert books.fund_balance("coop", "acme", "USD", at("2026-04-01")) == Decimal(0)
    assert books.run(calc, make_event("coop_claim", "2026-04-01", "1000")) == []


def test_coop_accrual_rounds_once_and_needs_amount_and_partner() -> None:
    calc = coop()
    books = Books()
    assert moves_of(books.run(calc, make_event("purchase", "2026-06-01", "333.33", "JPY"))) == [("acme", "7", "JPY")]
    with pytest.raises(CalculationError, match="partner"):
        calc.calculate(make_event("purchase", "2026-06-01", "100", partner=None), books)
    with pytest.raises(CalculationError, match="amount"):
        calc.calculate(make_event("coop_claim", "2026-06-01"), books)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(0, 400), st.decimals(0, 50000, places=2)),
                      min_size=1, max_size=25),
       participation=st.decimals(1, 100, places=1), expiry=st.none() | st.integers(1, 200))
def test_coop_never_pays_more_than_was_accrued(steps: list[tuple[bool, int, Decimal]], participation: Decimal,
                                               expiry: int | None) -> None:
    """Whatever the purchases, claims and expiry: each claim pays at most its share and at most the balance, the
    fund never goes negative, and the claims never pay more than the accruals."""
    calc = coop(participation_percent=str(participation), expiry_days=expiry)
    books = Books()
    paid = accrued = Decimal(0)
    for is_claim, day, amount in sorted(steps, key=lambda step: step[1]):
        when = at("2026-01-01") + timedelta(days=day)
        before = books.fund_balance("coop", "acme", "USD", when)
        lines = books.run(calc, make_event("coop_claim" if is_claim else "purchase", when, amount))
        got = sum((line.amount for line in lines if isinstance(line, RewardLine)), Decimal(0))
        accrued += sum((line.amount for line in lines if isinstance(line, FundMovement) and line.amount > 0),
                       Decimal(0))
        assert got <= min(before, quantize(amount * participation / 100, "USD"))
        paid += got
        assert books.fund_balance("coop", "acme", "USD", when) >= 0
    assert paid <= accrued


# -------------------------------------------------------------------------------------------------------- mdf


def mdf(**params: Any) -> Mdf:
    return Mdf("mdf", MdfParams.model_validate({"allocation": "10000", "currency": "USD", "period": "quarter",
                                                "cofunding_percent": "50", "claim_deadline_days": 30, **params}))


def claim(when: str, cost: str, approved: str | None, activity: str | None = None, **kw: Any) -> Event:
    attributes: dict[str, Any] = {}
    if approved is not None:
        attributes["approved_amount"] = approved
    if activity is not None:
        attributes["activity_date"] = activity
    return make_event("mdf_claim", when, cost, **kw, **attributes)


def test_mdf_worked_example_allocation_by_period_of_activity() -> None:
    """$10,000 per quarter, 50% co-funding, claims up to 30 days after the quarter. A Q1 activity claimed in April
    draws on Q1's allocation, not Q2's; Q1's allocation is lost after 30 April."""
    calc = mdf()
    books = Books()
    webinar = books.run(calc, claim("2026-02-20", "8000", "5000", "2026-02-10"))
    assert moves_of(webinar) == [("acme:2026-Q1", "10000.00", "USD"), ("acme:2026-Q1", "-4000.00", "USD")]
    assert rewards_of(webinar) == [("acme", "4000.00", "USD")]
    assert webinar[1].details == {
        "period": "2026-Q1", "activity_date": "2026-02-10", "approved": "5000.00", "eligible": "8000",
        "cofunding_percent": "50", "cofunded": "4000.00", "allocation_left": "10000.00", "limit": "cofunding",
        "claims_close": "2026-04-30"}
    assert webinar[0].expires_at == at("2026-05-01")  # the allocation lapses when Q1's claims close
    event = books.run(calc, claim("2026-04-10T09:00:00", "20000", "9000", "2026-03-20"))  # claimed in Q2
    assert rewards_of(event) == [("acme", "6000.00", "USD")]
    assert moves_of(event) == [("acme:2026-Q1", "-6000.00", "USD")]  # no second allocation for Q1
    assert (event[0].details["allocation_left"], event[0].details["limit"]) == ("6000.00", "allocation")
    assert books.run(calc, claim("2026-04-20", "1000", "500", "2026-03-25")) == []  # Q1 is used up
    q2 = books.run(calc, claim("2026-04-20", "1000", "300", "2026-04-15"))  # Q2 has its own allocation
    assert rewards_of(q2) == [("acme", "300.00", "USD")]
    assert q2[1].details["limit"] == "approved"
    assert books.fund_balance("mdf", fund_holder("acme", "2026-Q2"), "USD", at("2026-04-21")) == Decimal("9700.00")
    assert rewards_of(books.run(calc, claim("2026-04-21", "1000", "500", "2026-03-25", partner="globex"))) == [
        ("globex", "500.00", "USD")]  # each partner has its own allocation


def test_mdf_use_it_or_lose_it_deadline() -> None:
    """Q1 ends on 31 March; with 30 days a Q1 claim is eligible through 30 April (UTC), not on 1 May. What was left
    of Q1's allocation lapses."""
    calc = mdf(cofunding_percent="100")
    books = Books()
    assert rewards_of(books.run(calc, claim("2026-04-30T23:59:59", "100", "100", "2026-01-05"))) == [
        ("acme", "100.00", "USD")]
    assert books.run(calc, claim("2026-05-01T00:00:00", "100", "100", "2026-03-31")) == []
    last_second = datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC)
    assert books.fund_balance("mdf", "acme:2026-Q1", "USD", last_second) == Decimal("9900.00")
    assert books.fund_balance("mdf", "acme:2026-Q1", "USD", at("2026-05-01")) == Decimal(0)  # lost
    same_period_only = mdf(claim_deadline_days=0, period="month", cofunding_percent="100")
    assert books.run(same_period_only, claim("2026-02-01", "100", "100", "2026-01-31")) == []
    assert rewards_of(books.run(same_period_only, claim("2026-01-31T23:00:00", "100", "100"))) == [
        ("acme", "100.00", "USD")]  # without activity_date, the claim's own date is the activity's


def test_mdf_claims_calculated_out_of_order_still_respect_the_allocation() -> None:
    """A later claim calculated first (a backfill, another source) is counted by an earlier one calculated after it."""
    calc = mdf(cofunding_percent="100", allocation="1000")
    books = Books()
    assert rewards_of(books.run(calc, claim("2026-04-05", "700", "700", "2026-03-01"))) == [("acme", "700.00", "USD")]
    assert rewards_of(books.run(calc, claim("2026-03-02", "700", "700", "2026-03-01"))) == [("acme", "300.00", "USD")]
    assert books.run(calc, claim("2026-03-03", "700", "700", "2026-03-01")) == []
    assert books.rewarded_between("mdf", "acme", "USD", at("2026-01-01"), at("2026-05-01")) == Decimal("1000.00")


@pytest.mark.parametrize(("event", "words"), [
    (claim("2026-02-01", "100", "50", currency="EUR"), "different currencies"),
    (claim("2026-02-01", "100", None), "approved_amount"),
    (claim("2026-02-01", "100", "-5"), "negative"),
    (claim("2026-02-01", "100", "abc"), "approved_amount"),
    (make_event("mdf_claim", "2026-02-01", "100", approved_amount=50.5), "float"),
    (claim("2026-02-01", "100", "50", "2026-02-02"), "after the claim"),
    (claim("2026-02-01", "100", "50", "first of may"), "activity_date"),
    (claim("2026-02-01", "100", "50", partner=None), "partner"),
])
def test_mdf_bad_claims_fail_with_the_reason(event: Event, words: str) -> None:
    with pytest.raises(CalculationError, match=words):
        mdf().calculate(event, Books())


@settings(max_examples=150, deadline=None)
@given(claims=st.lists(st.tuples(st.integers(0, 250), st.integers(0, 60), st.decimals(0, 6000, places=2),
                                 st.decimals(0, 4000, places=2), st.sampled_from(["acme", "globex"])),
                       min_size=1, max_size=20),
       order=st.randoms(use_true_random=False))
def test_mdf_never_pays_more_than_the_allocation_of_a_period(claims: list[tuple[int, int, Decimal, Decimal, str]],
                                                             order: Any) -> None:
    """In whatever order claims are calculated, each pays at most its approved and co-funded amounts, and the
    claims for one partner and period add up to at most the allocation."""
    calc = mdf(allocation="5000", cofunding_percent="60", claim_deadline_days=20)
    books = Books()
    order.shuffle(claims)
    paid: dict[tuple[str, str], Decimal] = {}
    for activity_day, delay, cost, approved, who in claims:
        activity = date(2026, 1, 1) + timedelta(days=activity_day)
        when = at(activity.isoformat()) + timedelta(days=delay, hours=12)
        lines = books.run(calc, claim(when.isoformat(), str(cost), str(approved), activity.isoformat(),
                                      partner=who))
        for line in lines:
            if isinstance(line, RewardLine):
                assert line.amount <= approved
                assert line.amount <= quantize(cost * Decimal("0.6"), "USD")
                assert line.payee_id == who
                key = (who, line.details["period"])
                paid[key] = paid.get(key, Decimal(0)) + line.amount
    assert all(total <= Decimal(5000) for total in paid.values()), paid


# --------------------------------------------------------------------------------------------------- referral


def referral(**params: Any) -> Referral:
    return Referral("ref", ReferralParams.model_validate(params))


def test_referral_revenue_share_worked_example() -> None:
    """20% for 36 months of $800 MRR: $160 a month, $5,760 over 36 monthly payments; the 37th pays nothing."""
    calc = referral(mode="revenue_share", percent="20", months=36)
    books = Books()
    start = date(2026, 1, 15)
    lines = [books.run(calc, make_event("payment", at(add_months(start, n).isoformat()), "800",
                                        referred_at="2026-01-15")) for n in range(37)]
    assert [rewards_of(month) for month in lines[:36]] == [[("acme", "160.00", "USD")]] * 36
    assert lines[36] == []  # paid on 2029-01-15, 36 months after the start
    assert books.total_rewarded("ref", "acme", "USD") == Decimal("5760.00")
    assert lines[35][0].details == {"referred_at": "2026-01-15", "term_ends": "2029-01-14", "revenue": "800",
                                    "percent": "20"}


def test_referral_refund_recoups_the_share_as_a_negative_line() -> None:
    calc = referral(mode="revenue_share", percent="20", months=12)
    books = Books()
    books.run(calc, make_event("payment", "2026-03-01", "800", referred_at="2026-02-15"))
    refund = books.run(calc, make_event("payment", "2026-03-10", "-300", referred_at="2026-02-15"))
    assert rewards_of(refund) == [("acme", "-60.00", "USD")]
    assert refund[0].details["refund"] == "-300"
    assert books.total_rewarded("ref", "acme", "USD") == Decimal("100.00")
    assert books.run(calc, make_event("payment", "2027-02-15", "-800", referred_at="2026-02-15")) == []  # after


def test_referral_refund_event_types_take_a_positive_amount_back() -> None:
    """Ingest refuses negative amounts today, so a refund may also come as its own event type with the refunded
    amount: it counts negative."""
    calc = referral(mode="revenue_share", percent="20", months=12, refund_event_types=["refund"])
    books = Books()
    refund = books.run(calc, make_event("refund", "2026-03-10", "300", referred_at="2026-02-15"))
    assert rewards_of(refund) == [("acme", "-60.00", "USD")]
    assert refund[0].details == {"referred_at": "2026-02-15", "term_ends": "2027-02-14", "refund": "-300",
                                 "percent": "20"}
    with pytest.raises(CalculationError, match="negative amount"):
        calc.calculate(make_event("refund", "2026-03-10", "-300", referred_at="2026-02-15"), books)


def test_referral_revenue_share_term_and_attributes() -> None:
    calc = referral(mode="revenue_share", percent="10", months=1)
    books = Books()
    assert books.run(calc, make_event("payment", "2026-01-30", "100", referred_at="2026-01-31")) == []  # before
    assert rewards_of(books.run(calc, make_event("payment", "2026-02-27T23:59:59", "100",
                                                 referred_at="2026-01-31"))) == [("acme", "10.00", "USD")]
    assert books.run(calc, make_event("payment", "2026-02-28", "100", referred_at="2026-01-31")) == []  # a month on
    assert rewards_of(books.run(calc, make_event("payment", "2026-02-10", "999", "JPY",
                                                 referred_at="2026-02-01"))) == [("acme", "100", "JPY")]
    with pytest.raises(CalculationError, match="referred_at"):
        calc.calculate(make_event("payment", "2026-02-10", "100"), books)
    with pytest.raises(CalculationError, match="referred_at"):
        calc.calculate(make_event("payment", "2026-02-10", "100", referred_at="soon"), books)
    with pytest.raises(CalculationError, match="amount"):
        calc.calculate(make_event("payment", "2026-02-10", referred_at="2026-02-01"), books)
    with pytest.raises(CalculationError, match="partner"):
        calc.calculate(make_event("payment", "2026-02-10", "1", partner=None, referred_at="2026-02-01"), books)


@pytest.mark.parametrize(("start", "months", "end"), [
    ("2026-01-15", 36, "2029-01-15"), ("2026-01-31", 1, "2026-02-28"), ("2024-01-31", 1, "2024-02-29"),
    ("2026-12-31", 2, "2027-02-28"), ("2026-05-31", 12, "2027-05-31"), ("2026-11-30", 3, "2027-02-28"),
])
def test_add_months(start: str, months: int, end: str) -> None:
    assert add_months(date.fromisoformat(start), months) == date.fromisoformat(end)


def test_referral_flat_fee_to_the_partner() -> None:
    calc = referral(mode="flat", amount="250", currency="eur")
    lines = calc.calculate(make_event("referral_closed", "2026-05-01", object_id="ref-9"), Books())
    assert rewards_of(lines) == [("acme", "250.00", "EUR")]
    assert lines[0].details == {"referral": "Thing:ref-9"}
    with pytest.raises(CalculationError, match="partner"):
        calc.calculate(make_event("referral_closed", "2026-05-01", partner=None), Books())


payments = st.lists(st.tuples(st.integers(-40, 1500), st.decimals(-2000, 5000, places=2)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps=payments, percent=st.decimals(Decimal("0.1"), 100, places=3), months=st.integers(1, 36),
       currency=st.sampled_from(["USD", "JPY", "BHD"]))
def test_referral_revenue_share_is_bounded_by_the_term_revenue(steps: list[tuple[int, Decimal]], percent: Decimal,
                                                               months: int, currency: str) -> None:
    """Payments outside the term pay nothing; the lines of the payments inside add up to percent x the term's
    revenue, give or take the rounding of each line (at most half a minor unit each), and exactly when every
    share is a whole number of minor units."""
    calc = referral(mode="revenue_share", percent=str(percent), months=months)
    books = Books()
    start = date(2026, 3, 31)
    ends = add_months(start, months)
    revenue = Decimal(0)
    inside = 0
    for day, amount in steps:
        paid_on = start + timedelta(days=day)
        lines = books.run(calc, make_event("payment", at(paid_on.isoformat()), amount, currency,
                                           referred_at=start.isoformat()))
        if start <= paid_on < ends:
            revenue += amount
            inside += 1
            assert sum((line.amount for line in lines), Decimal(0)) == quantize(amount * percent / 100, currency)
        else:
            assert lines == []
    total = books.total_rewarded("ref", "acme", currency)
    half_unit = Decimal(1).scaleb(-minor_units(currency)) / 2
    assert abs(total - revenue * percent / 100) <= inside * half_unit


@settings(max_examples=100, deadline=None)
@given(mrr=st.integers(1, 100000), percent=st.integers(1, 100), months=st.integers(1, 48))
def test_referral_total_never_exceeds_percent_of_revenue_in_the_term(mrr: int, percent: int, months: int) -> None:
    """Whole-dollar monthly payments at a whole percent (shares exact in cents) for longer than the term: the total
    is exactly percent x the revenue of the term's payments, and later payments add nothing."""
    calc = referral(mode="revenue_share", percent=str(percent), months=months)
    books = Books()
    start = date(2026, 1, 31)
    for n in range(months + 3):
        books.run(calc, make_event("payment", at(add_months(start, n).isoformat()), str(mrr),
                                   referred_at=start.isoformat()))
    assert books.total_rewarded("ref", "acme", "USD") == Decimal(mrr * months * percent) / 100


# --------------------------------------------------------------------------------------------- loyalty points


def loyalty(**params: Any) -> LoyaltyPoints:
    return LoyaltyPoints("pts", LoyaltyPointsParams.model_validate(params))


TIERS = [{"name": "member", "min_points": 0, "multiplier": "1"},
         {"name": "silver", "min_points": 1000, "multiplier": "1.5"},
         {"name": "gold", "min_points": 5000, "multiplier": "2"}]


def test_loyalty_points_per_amount_with_tiers_by_points_credited_in_the_period() -> None:
    calc = loyalty(points_per_unit_amount="1", currency="USD", tiers=TIERS, tier_period="year", expiry_days=365)
    books = Books()
    first = books.run(calc, make_event("purchase", "2026-01-10", "1000.40"))
    assert moves_of(first) == [("rep1", "1000", "points")]
    assert first[0].expires_at == at("2027-01-10")
    assert first[0].details == {"amount": "1000.40 USD", "tier": "member", "tier_period": "2026",
                                "credited_in_period": "0", "multiplier": "1", "base_points": "1000.40",
                                "expires_at": "2027-01-10T00:00:00+00:00"}
    silver = books.run(calc, make_event("purchase", "2026-02-01", "3000"))
    assert moves_of(silver) == [("rep1", "4500", "points")]  # 1000 credited before: silver x1.5
    gold = books.run(calc, make_event("purchase", "2026-03-01", "10.25"))
    assert moves_of(gold) == [("rep1", "21", "points")]  # 5500 credited: gold x2, 20.5 rounds half up
    assert gold[0].details["tier"] == "gold"
    next_year = books.run(calc, make_event("purchase", "2027-01-02", "100"))
    assert moves_of(next_year) == [("rep1", "100", "points")]  # the tier period starts again
    assert moves_of(books.run(calc, make_event("purchase", "2026-03-02", "100", payee="rep2"))) == [
        ("rep2", "100", "points")]  # each holder has its own tier
    with pytest.raises(CalculationError, match="EUR"):
        calc.calculate(make_event("purchase", "2026-03-01", "10", "EUR"), books)


def test_loyalty_points_per_action_to_the_partner() -> None:
    calc = loyalty(points_per_action={"certification": 500, "webinar": 50}, holder="partner",
                   tiers=[{"name": "base", "min_points": 100, "multiplier": "3"}], tier_period="quarter")
    books = Books()
    assert moves_of(books.run(calc, make_event("training", "2026-04-01", activity="webinar"))) == [
        ("acme", "50", "points")]  # below the only tier: multiplier 1
    assert moves_of(books.run(calc, make_event("training", "2026-04-02", activity="webinar"))) == [
        ("acme", "50", "points")]
    assert moves_of(books.run(calc, make_event("training", "2026-04-03", activity="certification"))) == [
        ("acme", "1500", "points")]  # 100 credited this quarter: x3
    assert books.run(calc, make_event("training", "2026-04-04", activity="demo")) == []
    assert books.run(calc, make_event("purchase", "2026-04-04", "100")) == []  # no amount rule
    assert moves_of(books.run(calc, make_event("training", "2026-07-01", activity="webinar"))) == [
        ("acme", "50", "points")]  # a new quarter
    with pytest.raises(CalculationError, match="partner"):
        calc.calculate(make_event("training", "2026-04-04", partner=None, activity="webinar"), books)


def test_loyalty_redemption_pays_the_value_and_spends_the_points() -> None:
    calc = loyalty(points_per_unit_amount="1", currency="EUR", value_per_point="0.01",
                   redemption_event_types=["redeem"])
    books = Books()
    books.run(calc, make_event("purchase", "2026-01-10", "2500", "EUR"))
    redeemed = books.run(calc, make_event("redeem", "2026-02-01", points=2000))
    assert moves_of(redeemed) == [("rep1", "-2000", "points")]
    assert rewards_of(redeemed) == [("rep1", "20.00", "EUR")]
    assert redeemed[1].details == {"points": "2000", "balance_before": "2500", "value_per_point": "0.01"}
    with pytest.raises(CalculationError, match=r"balance 500 points, redemption 501 points"):
        calc.calculate(make_event("redeem", "2026-02-02", points="501"), books)
    assert rewards_of(books.run(calc, make_event("redeem", "2026-02-02", points="500"))) == [("rep1", "5.00", "EUR")]
    for bad in ({}, {"points": "0"}, {"points": "2.5"}, {"points": 2.0}, {"points": "many"}):
        with pytest.raises(CalculationError, match="points"):
            calc.calculate(make_event("redeem", "2026-02-03", **bad), books)


def test_loyalty_points_expire_and_redemption_without_value_only_spends() -> None:
    calc = loyalty(points_per_action={"demo": 300}, expiry_days=30)
    books = Books()
    books.run(calc, make_event("training", "2026-01-01", activity="demo"))
    books.run(calc, make_event("training", "2026-01-20", activity="demo"))
    spent = books.run(calc, make_event("points_redemption", "2026-01-25", points=400))
    assert moves_of(spent) == [("rep1", "-400", "points")] and rewards_of(spent) == []
    assert books.fund_balance("pts", "rep1", POINTS, at("2026-01-31")) == Decimal(200)
    with pytest.raises(CalculationError, match="balance 0 points, redemption 1 points"):
        calc.calculate(make_event("points_redemption", "2026-02-19", points=1), books)  # 20 Jan's lapsed


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(0, 300), st.integers(1, 3000)), min_size=1, max_size=30),
       expiry=st.none() | st.integers(1, 120))
def test_loyalty_fifo_never_lets_spending_exceed_credits(steps: list[tuple[bool, int, int]],
                                                         expiry: int | None) -> None:
    """Redemptions go through only while the balance covers them: the balance never goes negative, and what was
    spent never exceeds what was credited (nor, without expiry, the credits less what is left)."""
    calc = loyalty(points_per_unit_amount="1", currency="USD", tiers=TIERS, expiry_days=expiry)
    books = Books()
    credited = spent = Decimal(0)
    for redeem, day, number in sorted(steps, key=lambda step: step[1]):
        when = at("2026-01-01") + timedelta(days=day)
        if redeem:
            before = books.fund_balance("pts", "rep1", POINTS, when)
            try:
                lines = books.run(calc, make_event("points_redemption", when, points=number))
            except CalculationError:
                assert before < number
                continue
            assert before >= number
            spent += number
        else:
            lines = books.run(calc, make_event("purchase", when, str(number)))
            credited += sum((line.amount for line in lines), Decimal(0))
        assert books.fund_balance("pts", "rep1", POINTS, when) >= 0
    assert spent <= credited
    if expiry is None:
        assert books.fund_balance("pts", "rep1", POINTS, at("2027-01-01")) == credited - spent


# ----------------------------------------------------------------------------------------------- bad params


def config_errors(tmp_path: Path, program: str) -> list[tuple[str, str]]:
    """The (key, message) problems of loading a settings file with one program ``p``."""
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n\n[programs.p]\n{program}\n')
    with pytest.raises(ConfigError) as info:
        load_plugins(load_settings(path), kinds={"calculator"})
    return info.value.problems


MDF = 'calculator = "mdf"\ncurrency = "USD"\n'
FLAT = 'calculator = "referral"\nmode = "flat"\n'
SHARE = 'calculator = "referral"\nmode = "revenue_share"\n'
POINTS_ = 'calculator = "loyalty_points"\n'


@pytest.mark.parametrize(("program", "key", "words"), [
    (MDF + 'allocation = "0"\nclaim_deadline_days = 30', "programs.p.allocation", "greater than 0"),
    (MDF + 'allocation = 5000\nclaim_deadline_days = 30\ncofunding_percent = "120"', "programs.p.cofunding_percent",
     "100"),
    (MDF + 'allocation = 5000\nclaim_deadline_days = 30\ncofunding_percent = "0"', "programs.p.cofunding_percent",
     "greater than 0"),
    (MDF + 'allocation = "5000"', "programs.p.claim_deadline_days", "required"),
    (MDF + 'allocation = "5000"\nclaim_deadline_days = -1', "programs.p.claim_deadline_days", "greater than or equal"),
    (MDF + 'allocation = "5000"\nclaim_deadline_days = 9\nperiod = "week"', "programs.p.period", "quarter"),
    (MDF + 'allocation = 5000.5\nclaim_deadline_days = 9', "programs.p.allocation", "float"),
    ('calculator = "mdf"\ncurrency = "XYZ"\nallocation = "1"\nclaim_deadline_days = 1', "programs.p.currency",
     "unknown currency"),
    (FLAT + 'currency = "USD"', "programs.p.amount", 'mode = "flat" needs amount'),
    (FLAT + 'amount = "100"', "programs.p.currency", 'mode = "flat" needs currency'),
    (FLAT + 'amount = "100"\ncurrency = "USD"\npercent = "5"', "programs.p.percent",
     'belongs to mode = "revenue_share"'),
    (SHARE + 'percent = "20"', "programs.p.months", 'mode = "revenue_share" needs months'),
    (SHARE + 'months = 12', "programs.p.percent", "needs percent"),
    (SHARE + 'percent = "20"\nmonths = 12\namount = "5"', "programs.p.amount", 'belongs to mode = "flat"'),
    (SHARE + 'percent = "0"\nmonths = 12', "programs.p.percent", "greater than 0"),
    (FLAT + 'amount = "100"\ncurrency = "USD"\nrefund_event_types = ["refund"]', "programs.p.refund_event_types",
     "clawback_event_types"),
    (SHARE + 'percent = "20"\nmonths = 0', "programs.p.months", "greater than or equal to 1"),
    ('calculator = "referral"\nmode = "tiered"', "programs.p.mode", "flat"),
    (POINTS_ + 'points_per_unit_amount = "1"\ncurrency = "USD"\ntiers = [{name = "a", min_points = 0, '
     'multiplier = "1"}, {name = "b", min_points = 0, multiplier = "2"}]', "programs.p.tiers", "overlap"),
    (POINTS_ + 'points_per_unit_amount = "1"\ncurrency = "USD"\ntiers = [{name = "a", min_points = 10, '
     'multiplier = "1"}, {name = "b", min_points = 5, multiplier = "2"}]', "programs.p.tiers", "ascending"),
    (POINTS_ + 'points_per_unit_amount = "1"\ncurrency = "USD"\ntiers = [{name = "a", min_points = 0, '
     'multiplier = "1"}, {name = "a", min_points = 5, multiplier = "2"}]', "programs.p.tiers", "unique"),
    (POINTS_ + 'points_per_unit_amount = "1"\ncurrency = "USD"\ntiers = [{name = "a", min_points = 0, '
     'multiplier = "0"}]', "programs.p.tiers.0.multiplier", "greater than 0"),
    (POINTS_ + 'points_per_unit_amount = "1"\ncurrency = "USD"\ntiers = [{name = "a", min_points = -1, '
     'multiplier = "1"}]', "programs.p.tiers.0.min_points", "greater than or equal"),
    (POINTS_ + 'currency = "USD"', "programs.p.points_per_action", "give points_per_unit_amount"),
    (POINTS_ + 'points_per_unit_amount = "1"', "programs.p.currency", "points_per_unit_amount need a currency"),
    (POINTS_ + 'points_per_action = {demo = 5}\nvalue_per_point = "0.01"', "programs.p.currency",
     "value_per_point need a currency"),
    (POINTS_ + 'points_per_action = {demo = 0}', "programs.p.points_per_action.demo",
     "greater than or equal to 1"),
    (POINTS_ + 'points_per_action = {demo = 5}\nholder = "rep"', "programs.p.holder", "payee"),
    (POINTS_ + 'points_per_action = {demo = 5}\ntier_period = "month"', "programs.p.tier_period", "quarter"),
    (POINTS_ + 'points_per_action = {demo = 5}\nexpiry_days = 0', "programs.p.expiry_days",
     "greater than or equal to 1"),
    ('calculator = "coop"\npercent = "2"\nparticipation_percent = "0"', "programs.p.participation_percent",
     "greater than 0"),
    ('calculator = "coop"\npercent = "2"\nparticipation_percent = "101"', "programs.p.participation_percent", "100"),
    ('calculator = "coop"\npercent = "2"\nexpiry_days = 0', "programs.p.expiry_days", "greater than or equal to 1"),
    ('calculator = "coop"\npercent = "2"\nclaim_event_types = []', "programs.p.claim_event_types", "at least 1"),
])
def test_bad_params_name_the_program_and_key(tmp_path: Path, program: str, key: str, words: str) -> None:
    problems = config_errors(tmp_path, program)
    assert [k for k, _msg in problems] == [key], problems
    assert words in problems[0][1], problems


def test_good_params_load(tmp_path: Path) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n\n'
                    '[programs.m]\ncalculator = "mdf"\nallocation = "10000"\ncurrency = "usd"\n'
                    'cofunding_percent = "50"\nclaim_deadline_days = 30\n'
                    '[programs.r]\ncalculator = "referral"\nmode = "revenue_share"\npercent = "20"\nmonths = 36\n'
                    '[programs.f]\ncalculator = "referral"\nmode = "flat"\namount = "500"\ncurrency = "EUR"\n'
                    '[programs.l]\ncalculator = "loyalty_points"\npoints_per_unit_amount = "1"\ncurrency = "USD"\n'
                    'tiers = [{name = "member", min_points = 0, multiplier = "1"}, '
                    '{name = "gold", min_points = 5000, multiplier = "2"}]\n'
                    '[programs.c]\ncalculator = "coop"\npercent = "2"\n')
    plugins = load_plugins(load_settings(path), kinds={"calculator"})
    assert set(plugins.calculators) == {"m", "r", "f", "l", "c"}
    m = plugins.calculators["m"].params
    assert isinstance(m, MdfParams) and (m.currency, m.period, m.allocation) == ("USD", "quarter", Decimal(10000))
    c = plugins.calculators["c"].params
    assert isinstance(c, CoopParams)
    assert (c.claim_event_types, c.participation_percent, c.expiry_days) == (["coop_claim"], Decimal(100), None)


# ------------------------------------------------------------------------------------------ through the pipeline

SOURCE = """
    [sources.s]
    plugin = "fake"
"""


def source_record(object_id: str, event_type: str, when: str, amount: str | None = None, currency: str | None = "USD",
                  *, partner: str | None = "acme", payee: str = "rep1", transition: str | None = None,
                  **attributes: Any) -> SourceRecord:
    return SourceRecord("Thing", object_id, transition or event_type, event_type, when, payee, amount,
                        currency if amount is not None else None, partner, attributes)


def outcome(rt: Runtime, program: str) -> dict[str, Any]:
    """object id -> calculation status and reason, its rewards (payee, amount, currency) and fund entries
    (holder, amount, unit, expires_at), for one program."""
    with rt.engine.connect() as conn:
        calcs = conn.execute(select(events.c.object_id, calculations.c.status, calculations.c.reason).join(
            events, events.c.id == calculations.c.event_id).where(calculations.c.program == program)).all()
        paid = conn.execute(select(events.c.object_id, rewards.c.payee_id, rewards.c.amount_minor,
                                   rewards.c.currency).join(events, events.c.id == rewards.c.event_id)
                            .where(rewards.c.program == program).order_by(rewards.c.id)).all()
        moved = conn.execute(select(events.c.object_id, fund_entries.c.holder_id, fund_entries.c.amount,
                                    fund_entries.c.unit, fund_entries.c.expires_at).join(
            events, events.c.id == fund_entries.c.event_id).where(fund_entries.c.program == program)
            .order_by(fund_entries.c.id)).all()
    found: dict[str, Any] = {c.object_id: {"status": c.status, "reason": c.reason, "rewards": [], "funds": []}
                             for c in calcs}
    for r in paid:
        found[r.object_id]["rewards"].append((r.payee_id, str(from_minor(r.amount_minor, r.currency)), r.currency))
    for f in moved:
        found[f.object_id]["funds"].append((f.holder_id, f.amount, f.unit, f.expires_at))
    return found


@pytest.mark.parametrize("limit", [1, None])
def test_coop_accrual_then_claims_through_the_pipeline(make_runtime, limit: int | None) -> None:
    """Accruals are written as fund entries (not rewards); claims pay from the balance read back from the database
    (one event per batch) or from the batch itself; an accrual lapses unclaimed."""
    rt = make_runtime(SOURCE + """
        [programs.coop]
        calculator = "coop"
        percent = "2"
        participation_percent = "50"
        expiry_days = 180
        event_types = ["purchase", "coop_claim"]
    """)
    run_pipeline(rt,
                 source_record("p1", "purchase", "2026-01-10T00:00:00Z", "100000"),
                 source_record("c1", "coop_claim", "2026-02-01T00:00:00Z", "1800"),
                 source_record("c2", "coop_claim", "2026-03-01T00:00:00Z", "5000"),
                 source_record("c3", "coop_claim", "2026-03-02T00:00:00Z", "10"),
                 source_record("p2", "purchase", "2026-05-01T00:00:00Z", "10000"),
                 source_record("c4", "coop_claim", "2026-07-10T00:00:00Z", "1000"),  # p1's accrual lapsed 9 July
                 limit=limit)
    found = outcome(rt, "coop")
    assert found["p1"] == {"status": "rewarded", "reason": None, "rewards": [], "funds": [
        ("acme", "2000.00", "USD", datetime(2026, 7, 9, tzinfo=UTC))]}
    assert (found["c1"]["rewards"], found["c1"]["funds"]) == ([("acme", "900.00", "USD")],
                                                              [("acme", "-900.00", "USD", None)])
    assert found["c2"]["rewards"] == [("acme", "1100.00", "USD")]  # 2,500 claimed, 1,100 left
    assert found["c3"]["status"] == "not_eligible"
    assert found["c4"]["rewards"] == [("acme", "200.00", "USD")]  # only p2's 200 is left


@pytest.mark.parametrize("limit", [1, None])
def test_mdf_claims_through_the_pipeline_draw_on_the_activity_period(make_runtime, limit: int | None) -> None:
    rt = make_runtime(SOURCE + """
        [programs.mdf]
        calculator = "mdf"
        allocation = "10000"
        currency = "USD"
        period = "quarter"
        cofunding_percent = "50"
        claim_deadline_days = 30
        event_types = ["mdf_claim"]
    """)
    run_pipeline(rt,
                 source_record("a", "mdf_claim", "2026-02-20T00:00:00Z", "8000", approved_amount="5000",
                               activity_date="2026-02-10"),
                 source_record("b", "mdf_claim", "2026-04-10T09:00:00Z", "20000", approved_amount="9000",
                               activity_date="2026-03-20"),
                 source_record("c", "mdf_claim", "2026-04-12T00:00:00Z", "2000", approved_amount="1000",
                               activity_date="2026-04-01"),
                 source_record("d", "mdf_claim", "2026-04-13T00:00:00Z", "2000", approved_amount="1000",
                               activity_date="2026-03-01"),
                 source_record("late", "mdf_claim", "2026-05-01T00:00:00Z", "2000", approved_amount="1000",
                               activity_date="2026-01-15", partner="globex"),
                 source_record("no-approval", "mdf_claim", "2026-04-13T00:00:00Z", "2000"),
                 limit=limit)
    found = outcome(rt, "mdf")
    assert found["a"]["rewards"] == [("acme", "4000.00", "USD")]
    assert found["a"]["funds"] == [("acme:2026-Q1", "10000.00", "USD", datetime(2026, 5, 1, tzinfo=UTC)),
                                   ("acme:2026-Q1", "-4000.00", "USD", None)]
    assert found["b"]["rewards"] == [("acme", "6000.00", "USD")]  # claimed in Q2, drawn on Q1: 6,000 left
    assert found["b"]["funds"] == [("acme:2026-Q1", "-6000.00", "USD", None)]
    assert found["c"]["rewards"] == [("acme", "1000.00", "USD")]  # Q2's own allocation
    assert found["c"]["funds"][0][:2] == ("acme:2026-Q2", "10000.00")
    assert found["d"]["status"] == found["late"]["status"] == "not_eligible"
    assert found["no-approval"]["status"] == "failed"
    assert "approved_amount" in found["no-approval"]["reason"]


def test_loyalty_points_through_the_pipeline(make_runtime) -> None:
    rt = make_runtime(SOURCE + """
        [programs.points]
        calculator = "loyalty_points"
        points_per_unit_amount = "1"
        currency = "USD"
        value_per_point = "0.01"
        tiers = [
            {name = "member", min_points = 0, multiplier = "1"},
            {name = "gold", min_points = 1000, multiplier = "2"},
        ]
        expiry_days = 365
        event_types = ["purchase", "points_redemption"]
    """)
    run_pipeline(rt,
                 source_record("p1", "purchase", "2026-01-10T00:00:00Z", "1200"),
                 source_record("p2", "purchase", "2026-02-10T00:00:00Z", "300"),
                 source_record("r1", "points_redemption", "2026-03-01T00:00:00Z", points="1000"),
                 source_record("r2", "points_redemption", "2026-03-02T00:00:00Z", points="1000"),
                 limit=2)
    found = outcome(rt, "points")
    assert found["p1"]["funds"] == [("rep1", "1200", "points", datetime(2027, 1, 10, tzinfo=UTC))]
    assert found["p2"]["funds"][0][:2] == ("rep1", "600")  # gold: x2
    assert found["r1"]["funds"] == [("rep1", "-1000", "points", None)]
    assert found["r1"]["rewards"] == [("rep1", "10.00", "USD")]
    assert found["r2"]["status"] == "failed"
    assert "balance 800 points, redemption 1000 points" in found["r2"]["reason"]


def test_referral_through_the_pipeline_paid_once_per_referral(make_runtime, monkeypatch) -> None:
    """A re-sent closing of the same referral has the same dedup key and pays nothing; another referral pays."""
    monkeypatch.setattr("payhub.pipeline.calculate.utcnow", lambda: at("2029-02-01"))  # inv-37 is due
    rt = make_runtime(SOURCE + """
        [programs.ref]
        calculator = "referral"
        mode = "flat"
        amount = "500"
        currency = "USD"
        event_types = ["referral_closed"]

        [programs.share]
        calculator = "referral"
        mode = "revenue_share"
        percent = "20"
        months = 36
        refund_event_types = ["refund"]
        event_types = ["payment", "refund"]
    """)
    closed = source_record("ref-1", "referral_closed", "2026-01-15T00:00:00Z", transition="closed")
    run_pipeline(rt, closed, source_record("inv-1", "payment", "2026-01-15T00:00:00Z", "800",
                                           referred_at="2026-01-15"))
    run_pipeline(rt, closed, source_record("ref-2", "referral_closed", "2026-02-01T00:00:00Z", transition="closed"),
                 source_record("inv-37", "payment", "2029-01-15T00:00:00Z", "800", referred_at="2026-01-15"),
                 source_record("cn-1", "refund", "2026-01-20T00:00:00Z", "200", referred_at="2026-01-15"))
    found = outcome(rt, "ref")
    assert {key: value["rewards"] for key, value in found.items()} == {
        "ref-1": [("acme", "500.00", "USD")], "ref-2": [("acme", "500.00", "USD")]}
    with rt.engine.connect() as conn:
        assert len(conn.execute(select(events.c.id).where(events.c.object_id == "ref-1")).all()) == 1
    share = outcome(rt, "share")
    assert share["inv-1"]["rewards"] == [("acme", "160.00", "USD")]
    assert share["inv-37"]["status"] == "not_eligible"
    assert share["inv-37"]["reason"] == ("the revenue is dated 2029-01-15, after the 36-month term from 2026-01-15, "
                                         "which ended on 2029-01-14")
    assert share["cn-1"]["rewards"] == [("acme", "-40.00", "USD")]  # an adjustment against later payouts
