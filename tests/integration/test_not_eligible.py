"""Why nothing was paid: every ``not_eligible`` calculation records its reason, in ``calculations.reason`` and in the
``event.calculated`` audit entry, for each way each built-in calculator (and the core's rules) can pay nothing.

All the cases run through the real pipeline in one database per backend (each program takes only its own event
types), then each case checks its own calculation. A calculator called directly raises :class:`NotEligible`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import migrated, write_config
from sqlalchemy import select

from payhub.api import Calculator, Event, History, NotEligible, RewardLine, SourceRecord
from payhub.audit import verify
from payhub.builtin.calculators import FlatAmount, FlatParams
from payhub.builtin.programs.spiff import Spiff, SpiffParams
from payhub.db.schema import audit_log, calculations, events
from payhub.pipeline.calculate import NO_LINE, calculate_batch, register_program_versions
from payhub.pipeline.ingest import REASON_LIMIT, poll
from payhub.runtime import Runtime
from payhub.settings import load_settings

PROGRAMS = """
[sources.s]
plugin = "fake"

[programs.flat_round]
calculator = "flat"
amount = "0.001"
currency = "EUR"
event_types = ["flat_round"]

[programs.flat_capped]
calculator = "flat"
amount = "10"
currency = "EUR"
event_types = ["flat_capped"]
caps = [{per = "payee", amount = "10", currency = "EUR"}]

[programs.third_party]
calculator = "raising"
event_types = ["third_party"]

[programs.pct]
calculator = "percentage"
percent = "2.5"
event_types = ["pct"]

[programs.spiff]
calculator = "spiff"
amount = "50"
currency = "USD"
products = ["router-x"]
starts = 2026-03-01
ends = 2026-05-31
min_deal_amount = "500"
cap_per_payee = "60"
event_types = ["spiff"]

[programs.rebate]
calculator = "rebate"
tiers = [{up_to = "1000", percent = "0"}, {percent = "1"}]
event_types = ["rebate"]

[programs.dealreg]
calculator = "deal_registration"
bonus = "100"
currency = "USD"
protection_days = 90
event_types = ["dealreg"]

[programs.activity]
calculator = "activity"
rewards = {certification = "100"}
currency = "USD"
cap_per_period = "150"
event_types = ["activity"]

[programs.coop]
calculator = "coop"
percent = "2"
expiry_days = 30
claim_event_types = ["coop_claim"]
event_types = ["coop_purchase", "coop_claim"]

[programs.mdf]
calculator = "mdf"
allocation = "100"
currency = "USD"
cofunding_percent = "50"
claim_deadline_days = 30
event_types = ["mdf"]

[programs.referral]
calculator = "referral"
mode = "revenue_share"
percent = "10"
months = 12
event_types = ["referral"]

[programs.points_actions]
calculator = "loyalty_points"
points_per_action = {webinar = 10}
event_types = ["points_actions"]

[programs.points_spend]
calculator = "loyalty_points"
points_per_unit_amount = "0.001"
currency = "USD"
event_types = ["points_spend"]

[programs.once]
calculator = "flat"
amount = "10"
currency = "EUR"
once_per_object = true
event_types = ["once_won", "once_again"]

[programs.claw]
calculator = "flat"
amount = "10"
currency = "EUR"
clawback_event_types = ["claw_refund"]
event_types = ["claw_won"]
"""


@dataclass(frozen=True)
class Case:
    """One way to pay nothing: the events to ingest (in order); the last one's calculation by ``program``."""

    id: str
    program: str
    records: list[SourceRecord] = field(repr=False)
    reason: str


def rec(event_type: str, object_id: str, when: str, amount: str | None = "1000.00", currency: str | None = "USD",
        *, payee: str | None = None, partner: str | None = None, transition: str = "done",
        **attributes: Any) -> SourceRecord:
    """An event of type ``event_type`` on object ``object_id``; payee and partner default to the object id, so that
    the cases do not count against one another's caps, funds and volumes."""
    return SourceRecord("Thing", object_id, transition, event_type, when, payee or object_id,
                        amount, currency if amount is not None else None, partner or object_id, attributes)


CASES = [
    # the core, around any calculator
    Case("flat-zero-after-rounding", "flat_round", [rec("flat_round", "fr", "2026-02-01")],
         "the reward to fr of 0.001 EUR rounds to 0.00 EUR"),
    Case("flat-cap-cuts-everything", "flat_capped",
         [rec("flat_capped", "fc1", "2026-02-01", payee="capped"),
          rec("flat_capped", "fc2", "2026-02-02", payee="capped")],
         "cap per payee capped all of 10.00 EUR cut 10.00 EUR of capped's reward"),
    Case("third-party-returns-nothing", "third_party", [rec("third_party", "tp", "2026-02-01")], NO_LINE),
    Case("once-per-object", "once",
         [rec("once_won", "op", "2026-02-01", transition="won"),
          rec("once_again", "op", "2026-02-02", transition="again")],
         "Thing op is already rewarded by this program (10.00 EUR); a clawback must take that back first"),
    Case("clawback-nothing-rewarded", "claw", [rec("claw_refund", "cw", "2026-02-01")],
         "nothing to take back: no reward of this program on Thing cw is left"),
    Case("percentage-of-zero", "pct", [rec("pct", "pz", "2026-02-01", "0")], "the reward to pz is 0.00 USD"),
    # spiff
    Case("spiff-outside-window", "spiff", [rec("spiff", "sw", "2026-06-01", product="router-x")],
         "the deal closed on 2026-06-01, outside the program window 2026-03-01 .. 2026-05-31"),
    Case("spiff-product-not-eligible", "spiff", [rec("spiff", "sp", "2026-04-01", product="printer")],
         "product 'printer' is not eligible (products: router-x)"),
    Case("spiff-no-product", "spiff", [rec("spiff", "sn", "2026-04-01")],
         "the deal names no `product`; eligible products: router-x"),
    Case("spiff-below-min-deal-amount", "spiff", [rec("spiff", "sm", "2026-04-01", "499.99", product="router-x")],
         "the deal amount 499.99 USD is below min_deal_amount 500 USD"),
    Case("spiff-cap-reached", "spiff",
         [rec("spiff", f"sc{n}", f"2026-04-0{n}", payee="rep-sc", product="router-x") for n in (1, 2, 3)],
         "cap_per_payee for the window 2026-03-01 .. 2026-05-31 of 60.00 USD is reached: rep-sc already earned "
         "60.00 USD; this event would earn 50.00 USD"),
    # rebate
    Case("rebate-stays-in-a-zero-tier", "rebate", [rec("rebate", "rb", "2026-02-01", "500.00")],
         "the marginal rebate of rb for 2026-Q1 stays 0.00 USD: the volume goes from 0 to 500.00 USD"),
    # deal registration
    Case("dealreg-not-registered", "dealreg", [rec("dealreg", "dn", "2026-03-01")],
         "the deal was not registered (it has no `registered_at` attribute)"),
    Case("dealreg-closed-before-registration", "dealreg",
         [rec("dealreg", "db", "2026-03-01", registered_at="2026-03-10")],
         "the deal closed on 2026-03-01, before its registration on 2026-03-10"),
    Case("dealreg-after-protection", "dealreg", [rec("dealreg", "da", "2026-03-01", registered_at="2025-11-01")],
         "the deal closed on 2026-03-01, after its protection ended on 2026-01-30 (90 days after its registration "
         "on 2025-11-01)"),
    # activity
    Case("activity-not-rewarded", "activity", [rec("activity", "an", "2026-02-01", None, activity="webinar")],
         "activity 'webinar' earns nothing in this program (it rewards: certification)"),
    Case("activity-missing", "activity", [rec("activity", "am", "2026-02-01", None)],
         "the event names no `activity` (the program rewards: certification)"),
    Case("activity-cap-reached", "activity",
         [rec("activity", f"ac{n}", f"2026-02-0{n}", None, payee="rep-ac", activity="certification")
          for n in (1, 2, 3)],
         "cap_per_period for 2026-02 of 150.00 USD is reached: rep-ac already earned 150.00 USD; this event would "
         "earn 100.00 USD"),
    # coop
    Case("coop-zero-claim", "coop", [rec("coop_claim", "cz", "2026-02-01", "0")],
         "the claim is for 0 USD: 100% of it is 0.00 USD"),
    Case("coop-no-accruals", "coop", [rec("coop_claim", "cn", "2026-02-01", "50.00")],
         "the co-op fund of cn in USD is empty at the claim: no purchase accrued to it before"),
    Case("coop-accruals-expired", "coop",
         [rec("coop_purchase", "ce-buy", "2026-01-01", "1000.00", partner="ce"),
          rec("coop_claim", "ce-claim", "2026-03-01", "50.00", partner="ce")],
         "the co-op fund of ce in USD is empty at the claim: its accruals (20.00 USD) were spent or expired"),
    # mdf
    Case("mdf-after-claim-deadline", "mdf",
         [rec("mdf", "ml", "2026-05-15", "100.00", approved_amount="50", activity_date="2026-01-15")],
         "claimed on 2026-05-15, after the claim deadline 2026-04-30 for 2026-Q1 (claim_deadline_days = 30): the "
         "period's allocation is lost"),
    Case("mdf-approved-zero", "mdf", [rec("mdf", "ma", "2026-02-01", "100.00", approved_amount="0")],
         "the approved amount is 0.00 USD"),
    Case("mdf-no-eligible-cost", "mdf", [rec("mdf", "mc", "2026-02-01", "0", approved_amount="10")],
         "the eligible cost is 0 USD: 50% of it is 0.00 USD"),
    Case("mdf-allocation-used-up", "mdf",
         [rec("mdf", "mu1", "2026-02-01", "400.00", partner="mu", approved_amount="200"),
          rec("mdf", "mu2", "2026-02-02", "400.00", partner="mu", approved_amount="200")],
         "the allocation of mu for 2026-Q1 is used up: 0.00 USD left"),
    # referral
    Case("referral-before-the-referral", "referral",
         [rec("referral", "rs", "2026-02-01", "100.00", referred_at="2026-03-01")],
         "the revenue is dated 2026-02-01, before the referral started on 2026-03-01"),
    Case("referral-over-the-term", "referral",
         [rec("referral", "rt", "2026-02-01", "100.00", referred_at="2025-01-01")],
         "the revenue is dated 2026-02-01, after the 12-month term from 2025-01-01, which ended on 2025-12-31"),
    Case("referral-share-rounds-to-zero", "referral",
         [rec("referral", "rz", "2026-02-01", "0.04", referred_at="2026-01-01")],
         "10% of the revenue of 0.04 USD is 0.00 USD"),
    # loyalty points
    Case("points-action-not-listed", "points_actions",
         [rec("points_actions", "pa", "2026-02-01", None, activity="demo")],
         "activity 'demo' is not in points_per_action, and the program awards points per action only"),
    Case("points-no-amount", "points_spend", [rec("points_spend", "pn", "2026-02-01", None)],
         "the event names no `activity`, and the event has no amount to earn points_per_unit_amount on"),
    Case("points-round-to-zero", "points_spend", [rec("points_spend", "pr", "2026-02-01", "100.00")],
         "0.10000 points x 1 is 0 points once rounded to whole points"),
]


@dataclass(frozen=True)
class Found:
    """A calculation as stored, and what its event's audit entry says of it."""

    status: str
    reason: str | None
    audited: str | None


@pytest.fixture(scope="module")
def outcomes(module_db_url: str, tmp_path_factory: pytest.TempPathFactory,
             plugin_path: Path) -> Iterator[dict[tuple[str, str], Found]]:
    """Every case run through the pipeline in one fresh database: (program, object id) -> what was recorded."""
    migrated(module_db_url)
    rt = Runtime(load_settings(write_config(tmp_path_factory.mktemp("not-eligible"), module_db_url, PROGRAMS)))
    rt.load_plugins()
    try:
        rt.plugins.sources["s"].push(*(record for case in CASES for record in case.records))
        poll(rt, "s")
        versions = register_program_versions(rt)
        while calculate_batch(rt, versions):
            pass
        yield _recorded(rt)
    finally:
        rt.close()


def _recorded(rt: Runtime) -> dict[tuple[str, str], Found]:
    with rt.engine.connect() as conn:
        result = verify(conn)
        assert result.ok, result.problem
        calcs = conn.execute(select(events.c.id, events.c.object_id, calculations.c.program, calculations.c.status,
                                    calculations.c.reason).join(events, events.c.id == calculations.c.event_id)).all()
        entries = {int(subject): json.loads(detail)["programs"] for subject, detail in conn.execute(
            select(audit_log.c.subject_id, audit_log.c.detail).where(audit_log.c.action == "event.calculated"))}
    return {(c.program, c.object_id): Found(c.status, c.reason, entries.get(c.id, {}).get(c.program))
            for c in calcs}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_calculation_that_pays_nothing_records_why(outcomes: dict[tuple[str, str], Found], case: Case) -> None:
    found = outcomes[(case.program, case.records[-1].object_id)]
    assert found == Found("not_eligible", case.reason, f"not_eligible: {case.reason}")


def test_the_cases_cover_every_built_in_calculator(tmp_path: Path) -> None:
    programs = load_settings(write_config(tmp_path, "sqlite:///x.db", PROGRAMS)).programs
    assert {section.calculator for section in programs.values()} >= {
        "flat", "percentage", "spiff", "rebate", "deal_registration", "activity", "coop", "mdf", "referral",
        "loyalty_points"}
    assert {case.program for case in CASES} == set(programs)


# --------------------------------------------------------------------------------------- calculators called alone


def _event(when: datetime, **attributes: Any) -> Event:
    return Event(1, "s:Thing:1:done", "s", "Thing", "1", "done", "deal_won", when, "rep1", "acme", Decimal("1000"),
                 "USD", attributes)


def test_a_calculator_says_why_by_raising_not_eligible() -> None:
    spiff = Spiff("spiff", SpiffParams.model_validate({"amount": "50", "currency": "USD", "starts": "2026-03-01",
                                                        "ends": "2026-05-31"}))
    with pytest.raises(NotEligible) as raised:
        spiff.calculate(_event(datetime(2026, 6, 1, tzinfo=UTC)), history=None)  # type: ignore[arg-type]
    assert raised.value.reason == str(raised.value) == \
        "the deal closed on 2026-06-01, outside the program window 2026-03-01 .. 2026-05-31"
    flat = FlatAmount("flat", FlatParams.model_validate({"amount": "5", "currency": "USD"}))
    assert len(flat.calculate(_event(datetime(2026, 6, 1, tzinfo=UTC)), history=None)) == 1  # type: ignore[arg-type]


HOSTILE = "nul \x00 and a lone \ud800 surrogate " + "x" * 5000


class _Saying(Calculator):
    """Not eligible, with a reason a third party might give: text the databases cannot store, or blank."""

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        raise NotEligible(HOSTILE if event.object_id == "hostile" else "  ")


def test_a_calculators_reason_is_stored_bounded_on_every_backend(make_runtime: Any) -> None:
    rt = make_runtime('[sources.s]\nplugin = "fake"\n[programs.says]\ncalculator = "flat"\namount = "1"\n'
                      'currency = "EUR"\n')
    rt.plugins.calculators["says"] = _Saying("says", rt.plugins.calculators["says"].params)
    rt.plugins.sources["s"].push(rec("deal_won", "hostile", "2026-02-01"), rec("deal_won", "blank", "2026-02-01"))
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass
    found = _recorded(rt)
    stored = found[("says", "hostile")]
    assert stored.status == "not_eligible" and stored.reason is not None and len(stored.reason) == REASON_LIMIT
    assert stored.reason.startswith("nul \\x00 and a lone \\ud800 surrogate xxx")
    assert f"[cut: {len(HOSTILE)} characters" in stored.reason
    assert stored.audited == f"not_eligible: {stored.reason}"
    assert found[("says", "blank")].reason == "the calculator found the event not eligible and gave no reason"
