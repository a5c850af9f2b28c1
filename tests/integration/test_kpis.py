"""The KPIs of a period (payhub.kpis), on SQLite and PostgreSQL: each figure of the data set of
``kpi_seed.seed_q4`` checked against the numbers worked out by hand in its docstring, percentiles by the nearest
rank, currencies kept apart, an empty period, budgets from the settings, and one run through the real pipeline
(ingest, calculate, schedule, send, settle) on a manual clock, whose paid moment is the one its audit entry records.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kpi_seed import Seed, at, seed_q4
from sqlalchemy import select

from payhub.api import Outcome, SourceRecord
from payhub.clock import parse_instant
from payhub.db.schema import audit_log, payouts
from payhub.kpis import (
    Budget,
    Flow,
    Fund,
    HeldRewards,
    OpenGroup,
    Period,
    RailRate,
    Revenue,
    Timing,
    figures,
    kpis,
    tiles,
)
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.testing import ManualClock

Q4 = Period.parse("2026-Q4")


@pytest.fixture
def rt(make_runtime: Any) -> Any:
    return make_runtime("")


def read(rt: Any, period: Period = Q4, **kwargs: Any) -> Any:
    with rt.engine.connect() as conn:
        return kpis(conn, period, **kwargs)


def test_accrued_approved_and_paid_by_program_month_and_currency(rt: Any) -> None:
    seed_q4(rt)
    k = read(rt)
    assert k.accrued == [
        Flow("accrued", "rebate", "2026-10", "USD", 1, 25000),  # R7 cancelled: not counted
        Flow("accrued", "rebate", "2026-11", "EUR", 1, 38750),
        Flow("accrued", "spiff", "2026-10", "USD", 2, 60005),  # R1 + R3; the withholding line R8 is not
        Flow("accrued", "spiff", "2026-11", "JPY", 1, 48000),
        Flow("accrued", "spiff", "2026-11", "USD", 1, 25000),  # R4, held for its budget, is accrued
        Flow("accrued", "spiff", "2026-12", "USD", 1, 30000),  # R11; R9 (September) is not in Q4
    ]
    assert k.approved == [
        Flow("approved", "rebate", "2026-10", "USD", 1, 25000),
        Flow("approved", "rebate", "2026-11", "EUR", 1, 38750),
        Flow("approved", "spiff", "2026-10", "USD", 1, 50000),  # R1 at its creation
        Flow("approved", "spiff", "2026-11", "JPY", 1, 48000),
        Flow("approved", "spiff", "2026-11", "USD", 2, 35005),  # R3 at its second approval (11-02) + R4
    ]  # R11 has one approval of the two it needs: not approved
    assert k.paid == [
        Flow("paid", "rebate", "2026-10", "USD", 1, 25000),
        Flow("paid", "spiff", "2026-10", "USD", 1, 50000),
        Flow("paid", "spiff", "2026-11", "USD", 1, 10005),
    ]
    assert k.paid[1].amount == Decimal("500.00") and k.accrued[3].amount == Decimal("48000")
    assert k.totals("accrued") == {"EUR": (1, Decimal("387.50")), "JPY": (1, Decimal("48000")),
                                   "USD": (5, Decimal("1400.05"))}  # each currency summed apart


def test_months_are_utc_and_the_period_bounds_exact(rt: Any) -> None:
    s = Seed(rt)
    e = s.event("2026-09-30 23:00")
    s.reward(e, "spiff", 100, "EUR", "2026-09-30 23:59")  # September in UTC, whatever the local time zone
    s.reward(e, "spiff", 200, "EUR", "2026-10-01 00:00")  # the first instant of Q4
    s.reward(e, "spiff", 400, "EUR", "2026-12-31 23:59")
    s.reward(e, "spiff", 800, "EUR", "2027-01-01 00:00")  # the end is excluded
    assert [(f.month, f.minor) for f in read(rt).accrued] == [("2026-10", 200), ("2026-12", 400)]
    assert [(f.month, f.minor) for f in read(rt, Period.parse("2026-12-31..2027-01-01")).accrued] == [
        ("2026-12", 400), ("2027-01", 800)]


def test_budgets_fund_balances_and_holds(rt: Any) -> None:
    ids = seed_q4(rt)
    k = read(rt)
    assert k.budgets == [
        Budget("rebate", "rebate:2026-10:acme", "2026-10", "acme", "USD", 30000, 25000, 0, 0),
        Budget("spiff", "spiff:2026-Q4", "2026-Q4", None, "USD", 100000, 90005, 25000, 1),
    ]
    spiff = k.budgets[1]
    assert (spiff.used, spiff.limit, spiff.left, spiff.share) == (
        Decimal("900.05"), Decimal("1000.00"), Decimal("99.95"), Decimal("90.0"))
    assert k.funds == [Fund("coop", "USD", 1, Decimal("1000.00"), Decimal("300.00"), Decimal("0.00"),
                            Decimal("700.00"))]
    assert k.held_rewards == [HeldRewards("budget", "USD", 1, 25000), HeldRewards("operator", "USD", 1, 9990)]
    assert k.open_total == 3
    assert k.open_by_code == [OpenGroup("held", "screening", None, 1), OpenGroup("unknown", None, None, 1),
                              OpenGroup("unresolved", None, None, 1)]
    assert {(g.status, g.reason) for g in k.open_by_reason} == {
        ("held", "over screening limit 1000"), ("unknown", "timeout after sending"),
        ("unresolved", "the rail cannot tell")}
    assert [o.id for o in k.open_payouts] == [ids["p7"], ids["p5"], ids["p4"]]  # newest first
    # an earlier quarter: R9, held by an operator (not for the budget), still uses its pool, as the pipeline counts
    # it; the monthly per-partner pools nothing drew on are not listed
    q3 = read(rt, Period.parse("2026-Q3"))
    assert [(b.pool, b.used_minor, b.held_minor) for b in q3.budgets] == [("spiff:2026-Q3", 9990, 0)]


def test_budgets_from_the_settings(make_runtime: Any) -> None:
    rt = make_runtime("""
        [programs.spiff]
        calculator = "flat"
        amount = "10"
        currency = "USD"
        [programs.spiff.budget]
        amount = "2000"
        currency = "USD"
        period = "month"
        [programs.plain]
        calculator = "flat"
        amount = "10"
        currency = "USD"
    """)
    seed_q4(rt)  # stores a quarterly USD 1000 budget of spiff in its version: the settings win
    k = read(rt, programs=rt.settings.programs)
    assert [(b.pool, b.limit_minor, b.used_minor) for b in k.budgets] == [
        ("rebate:2026-10:acme", 30000, 25000),  # not in the settings: the budget of its latest version
        ("spiff:2026-10", 200000, 0), ("spiff:2026-11", 200000, 0), ("spiff:2026-12", 200000, 0)]


def test_payouts_by_rail_and_status_and_the_success_rate(rt: Any) -> None:
    seed_q4(rt)
    k = read(rt)
    assert [(g.rail, g.status, g.currency, g.payouts, g.amount) for g in k.payouts] == [
        ("bank", "failed", "EUR", 1, Decimal("387.50")), ("bank", "paid", "USD", 2, Decimal("826.05")),
        ("credit", "sent", "USD", 1, Decimal("120.00")), ("gift", "held", "USD", 1, Decimal("700.00")),
        ("gift", "unknown", "JPY", 1, Decimal("48000"))]  # P7 (August) is not in Q4
    assert k.rates == [RailRate(None, 3, 2, 1, 2, 0), RailRate("bank", 2, 2, 1, 0, 0),
                       RailRate("credit", 1, 0, 0, 0, 0), RailRate("gift", 0, 0, 0, 2, 0)]
    assert [r.rate for r in k.rates] == [Decimal("75.0"), Decimal("66.7"), Decimal("100.0"), None]


def test_time_to_paid_p50_p95(rt: Any) -> None:
    seed_q4(rt)
    k = read(rt)
    # R1, R2: 2026-10-01 00:00 -> 2026-10-05 12:00 (4.5 days); R3: 2026-10-15 -> 2026-11-10 (26 days)
    half = timedelta(days=4, hours=12)
    assert k.timing == [Timing(None, 3, half, timedelta(days=26)), Timing("rebate", 1, half, half),
                        Timing("spiff", 2, half, timedelta(days=26))]


def test_percentiles_by_the_nearest_rank(rt: Any) -> None:
    s = Seed(rt)
    for hours in range(1, 21):  # twenty rewards of one program paid 1 to 20 hours after their events
        e = s.event("2026-10-01 00:00")
        r = s.reward(e, "spiff", 100, "EUR", "2026-10-01 00:00")
        s.payout("bank", "EUR", "paid", "2026-10-01 00:00", updated=f"2026-10-01 {hours:02d}:00", items=[(r, 100)])
    e = s.event("2026-10-01 00:00")
    r = s.reward(e, "other", 100, "EUR", "2026-10-01 00:00")
    s.payout("bank", "EUR", "paid", "2026-10-01 00:00", updated="2026-10-11 00:00", items=[(r, 100)])
    k = read(rt)
    # spiff: rank ceil(0.5 * 20) = 10 -> 10 h, ceil(0.95 * 20) = 19 -> 19 h; all 21: ranks 11 and 20
    assert k.timing == [Timing(None, 21, timedelta(hours=11), timedelta(hours=20)),
                        Timing("other", 1, timedelta(days=10), timedelta(days=10)),
                        Timing("spiff", 20, timedelta(hours=10), timedelta(hours=19))]


def test_revenue_against_cost_per_program_and_partner(rt: Any) -> None:
    seed_q4(rt)
    k = read(rt)
    assert k.revenue_by_program == [
        Revenue("rebate", "EUR", Decimal("15500.00"), "EUR", 38750, 1),
        Revenue("rebate", "USD", Decimal("10000.000000000000000001"), "USD", 25000, 1),  # R7 cancelled: E2 out
        Revenue("spiff", "EUR", Decimal("15500.00"), "USD", 25000, 1),  # a USD reward on a EUR deal
        Revenue("spiff", "JPY", Decimal("480000"), "JPY", 48000, 1),
        Revenue("spiff", "USD", Decimal("12000.505000000000000001"), "USD", 90005, 2),  # exact, 18 decimals
    ]
    assert [r.per_revenue for r in k.revenue_by_program] == [
        Decimal("0.0250"), Decimal("0.0250"), None, Decimal("0.1000"), Decimal("0.0750")]
    assert k.revenue_by_partner == [
        Revenue("acme", "USD", Decimal("12000.505000000000000001"), "USD", 115005, 2),  # each deal once
        Revenue("nordic", "EUR", Decimal("15500.00"), "EUR", 38750, 1),
        Revenue("nordic", "EUR", Decimal("15500.00"), "USD", 25000, 1),  # never added to the EUR cost
        Revenue("tokyo", "JPY", Decimal("480000"), "JPY", 48000, 1),  # no partner: the event's payee
    ]
    assert k.revenue_by_partner[0].per_revenue == Decimal("0.0958")  # 1150.05 / 12000.505...
    ratio = next(t for t in tiles(k) if t.label == "Cost per revenue")
    assert ratio.values == ["0.0250 per EUR", "0.1000 per JPY", "0.0958 per USD"]


def test_figures_keep_amounts_exact_and_currencies_apart(rt: Any) -> None:
    seed_q4(rt)
    found = {f.id: f for f in figures(read(rt))}
    assert {"flow-usd", "flow-eur", "flow-jpy", "program-usd", "flows", "budgets", "funds", "rail-status",
            "rail-amounts", "success", "time-to-paid", "open-payouts", "open-reasons", "open-list", "held-rewards",
            "revenue-program", "revenue-partner"} <= set(found)
    usd = found["flow-usd"]
    assert usd.chart() == {"labels": ["2026-10", "2026-11", "2026-12"], "datasets": [
        {"label": "accrued", "data": ["850.05", "250.00", "300.00"]},
        {"label": "approved", "data": ["750.00", "350.05", "0.00"]},
        {"label": "paid", "data": ["750.00", "100.05", "0.00"]}]}
    assert found["flow-jpy"].chart()["datasets"][0]["data"] == ["0", "48000", "0"]
    assert found["success"].text_rows()[0] == ["all rails", "3", "2", "1", "2", "0", "75.0"]
    assert found["time-to-paid"].text_rows()[0] == ["all programs", "3", "4.50", "26.00"]
    assert found["open-list"].text_rows()[0][-1] == "2026-08-01T00:00:00.000000Z"


def test_an_empty_period(rt: Any) -> None:
    seed_q4(rt)
    k = read(rt, Period.parse("2025-Q1"))
    assert (k.accrued, k.approved, k.paid, k.payouts, k.revenue_by_program, k.revenue_by_partner) == (
        [], [], [], [], [], [])
    assert k.timing == [Timing(None, 0, None, None)]
    assert k.rates == [RailRate(None, 0, 0, 0, 0, 0)] and k.rates[0].rate is None
    assert [(b.pool, b.used_minor) for b in k.budgets] == [("spiff:2025-Q1", 0)]  # its whole limit left
    shown = {t.label: t.values for t in tiles(k)}
    assert shown["Accrued"] == ["-"] and shown["Success rate"] == ["-"] and shown["Time to paid"] == [
        "p50 -", "p95 -"]
    assert shown["Open payouts"] == ["3"]  # open payouts are counted now, whatever the period
    assert all(f.rows == [] for f in figures(k) if f.id in ("flows", "rail-amounts", "revenue-program"))


def test_paid_moment_is_the_audited_one_through_the_pipeline(make_runtime: Any, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\n")
    rt = make_runtime("""
        [payees]
        file = "payees.csv"
        [sources.s]
        plugin = "fake"
        [programs.full]
        calculator = "percentage"
        percent = "10"
        [rails.r]
        plugin = "fake"
        settle_interval_seconds = 1
        [routing]
        default_rail = "r"
    """)
    with ManualClock("2026-10-02T00:00:00Z") as clock:
        rt.plugins.sources["s"].push(
            SourceRecord("Opportunity", "o1", "won", "deal_won", "2026-10-01T00:00:00Z", "p1", "1000.00", "EUR",
                         partner_id="acme"),
            SourceRecord("Opportunity", "o2", "won", "deal_won", "2026-10-01T06:00:00Z", "p2", "333.33", "EUR",
                         partner_id="acme"))
        poll(rt, "s")
        versions = register_program_versions(rt)
        while calculate_batch(rt, versions):
            pass
        sync_payees(rt)
        while schedule_batch(rt):
            pass
        while disburse_rail(rt, "r"):
            pass
        rail = rt.plugins.rails["r"]
        for key in rail.accepted:
            rail.ledger.set_outcome(key, Outcome.PAID)
        clock.advance(timedelta(days=3))
        settle_rail(rt, "r")
        k = read(rt)
        with rt.engine.connect() as conn:
            audited = {int(e.subject_id): parse_instant(e.at) for e in conn.execute(
                select(audit_log).where(audit_log.c.action == "payout.paid"))}
            stored = dict(conn.execute(select(payouts.c.id, payouts.c.updated_at)).all())
    assert len(audited) == 2 and all(stored[i] == moment for i, moment in audited.items())
    assert k.paid == [Flow("paid", "full", "2026-10", "EUR", 2, 13333)]
    assert k.accrued == [Flow("accrued", "full", "2026-10", "EUR", 2, 13333)]
    # paid at 2026-10-05 00:00: 4 days after o1, 3 days 18 hours after o2
    assert k.timing[0] == Timing(None, 2, timedelta(days=3, hours=18), timedelta(days=4))
    assert k.rates[0] == RailRate(None, 2, 2, 0, 0, 0) and k.rates[0].rate == Decimal("100.0")
    assert k.revenue_by_partner == [Revenue("acme", "EUR", Decimal("1333.33"), "EUR", 13333, 2)]
    assert k.revenue_by_partner[0].per_revenue == Decimal("0.1000")
    assert at("2026-10-05 00:00") in audited.values()
