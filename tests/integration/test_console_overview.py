"""The console's overview (docs/console.md, Overview): KPI tiles, charts with their data, CSV downloads of each chart,
hostile names escaped, bad periods answered with a message, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from typing import Any

import pytest
from console_client import Console
from kpi_seed import Seed, seed_q4
from sqlalchemy import select

from payhub.clock import utcnow
from payhub.console import routes_overview
from payhub.db.schema import audit_log
from payhub.kpis import Period

SCRIPT = '<script>alert("x")</script>'
PROGRAM = "=HYPERLINK(\"http://evil.example\")" + SCRIPT
PARTNER = "\u202eevil\u200b<img src=x onerror=alert(1)>"
PAYEE = "'\"><svg onload=alert(2)>"


@pytest.fixture(autouse=True)
def no_kept_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each download reads its figures (signing in shows the overview, before the test writes its rows)."""
    monkeypatch.setattr(routes_overview, "CACHE_SECONDS", 0.0)


@pytest.fixture
def rt(make_runtime: Any) -> Any:
    return make_runtime("")


@pytest.fixture
def auditor(rt: Any) -> Console:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    return console


def chart_data(page: str, chart: str) -> dict[str, Any]:
    found = re.search(rf'<script type="application/json" id="chart-{re.escape(chart)}-data">(.*?)</script>', page,
                      re.S)
    assert found, f"no chart {chart}"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_overview_shows_the_kpis_of_the_period(rt: Any, auditor: Console) -> None:
    seed_q4(rt)
    answer = auditor.get("/console/?period=2026-Q4")
    assert answer.status_code == 200, answer.text
    page = answer.text
    assert 'aria-current="page">Overview' in page
    assert '<label for="overview-period">' in page and 'value="2026-Q4"' in page
    for tile in ("1,400.05 USD", "387.50 EUR", "48,000 JPY", "850.05 USD", "75.0 %", "p50 4 d 12 h", "p95 26 d 0 h",
                 "0.0958 per USD"):
        assert tile in page, tile
    assert chart_data(page, "flow-usd") == {"labels": ["2026-10", "2026-11", "2026-12"], "datasets": [
        {"label": "accrued", "data": ["850.05", "250.00", "300.00"]},
        {"label": "approved", "data": ["750.00", "350.05", "0.00"]},
        {"label": "paid", "data": ["750.00", "100.05", "0.00"]}]}
    assert chart_data(page, "success")["datasets"] == [{"label": "success %", "data": ["75.0", "66.7", "100.0",
                                                                                           None]}]
    assert chart_data(page, "time-to-paid")["datasets"][1] == {"label": "p95 days", "data": ["26.00", "4.50", "26.00"]}
    # each chart has its table and its CSV link
    assert page.count('<figure class="chart" data-chart=') == page.count("Data table</summary>") >= 10
    assert 'href="/console/kpi.csv?period=2026-Q4&amp;chart=flow-usd"' in page
    # open payouts link to their pages, with their reasons
    for payout_id in (4, 5, 7):
        assert f'href="/console/payouts/{payout_id}"' in page
    assert "over screening limit 1000" in page and "timeout after sending" in page


def test_default_period_is_the_current_quarter(rt: Any, auditor: Console) -> None:
    page = auditor.get("/console/").text
    assert f'value="{Period.quarter_of(utcnow()).label}"' in page
    assert "None in this period." in page or "None now." in page


def test_hostile_names_are_escaped(rt: Any, auditor: Console) -> None:
    seed_q4(rt, spiff=PROGRAM, partner=PARTNER, payee=PAYEE)
    answer = auditor.get("/console/?period=2026-Q4")
    assert answer.status_code == 200
    page = answer.text
    assert SCRIPT not in page and "<img src=x" not in page and "<svg onload" not in page
    assert "&lt;svg onload=alert(2)&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page  # shown as text
    data = chart_data(page, "program-usd")
    assert PROGRAM in data["labels"]  # the JSON carries the name as data; the script tag cannot be closed early
    assert "</script>" not in re.search(r'id="chart-program-usd-data">(.*?)</script>', page, re.S).group(1)


def test_csv_download_is_the_chart_data_and_spreadsheet_safe(rt: Any, auditor: Console) -> None:
    seed_q4(rt, spiff=PROGRAM)
    answer = auditor.get("/console/kpi.csv", params={"period": "2026-Q4", "chart": "flows"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="kpi-2026-Q4-flows.csv"' in answer.headers["content-disposition"]
    rows = csv_rows(answer.text)
    assert rows[0] == ["measure", "program", "month", "currency", "rewards", "amount"]
    assert ["accrued", "'" + PROGRAM, "2026-10", "USD", "2", "600.05"] in rows  # the formula neutralised
    assert ["paid", "rebate", "2026-10", "USD", "1", "250.00"] in rows
    success = csv_rows(auditor.get("/console/kpi.csv?period=2026-Q4&chart=success").text)
    assert success[:2] == [["rail", "delivered", "of which paid", "failed", "on the way", "cancelled", "success %"],
                           ["all rails", "3", "2", "1", "2", "0", "75.0"]]
    revenue = csv_rows(auditor.get("/console/kpi.csv?period=2026-Q4&chart=revenue-partner").text)
    assert ["acme", "USD", "12000.505000000000000001", "USD", "1150.05", "2", "0.0958"] in revenue


@pytest.mark.parametrize(("query", "status", "says"), [
    ("period=2026-Q5", 422, "Q1 to Q4"),
    ("period=" + "9" * 500, 422, "at most 40 characters"),
    ("period=%00", 422, "NUL"),
    ("period=2026&period=2025", 422, "more than once"),
    ("period=2026-Q4&nonsense=1", 422, "unknown parameter"),
    ("period=<script>", 422, "not one of the forms"),
])
def test_bad_periods_are_answered_with_a_message(rt: Any, auditor: Console, query: str, status: int,
                                                 says: str) -> None:
    answer = auditor.get(f"/console/?{query}")
    assert answer.status_code == status
    assert says in html.unescape(answer.text)
    assert "<script>" not in answer.text.split("<main", 1)[1]
    assert '<label for="overview-period">' in answer.text  # the form is there to try again
    download = auditor.get(f"/console/kpi.csv?{query}&chart=flows")
    assert download.status_code == 422 and says in html.unescape(download.text)


def test_unknown_or_missing_chart(rt: Any, auditor: Console) -> None:
    assert auditor.get("/console/kpi.csv?period=2026-Q4&chart=nope").status_code == 404
    assert auditor.get("/console/kpi.csv?period=2026-Q4").status_code == 422
    assert auditor.get("/console/kpi.csv?period=2026-Q4&chart=" + "x" * 100).status_code == 422


def test_needs_a_session_and_is_audited(rt: Any, auditor: Console) -> None:
    assert Console(rt).get("/console/kpi.csv?period=2026-Q4&chart=flows").status_code == 303
    auditor.get("/console/kpi.csv?period=2026-Q4&chart=flows")
    with rt.engine.connect() as conn:
        last = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc())).first()
    assert (last.action, last.actor, last.subject_id, last.outcome) == ("api.request", "token:ann",
                                                                       "/console/kpi.csv", "ok")
    assert json.loads(last.detail)["query"] == {"chart": "flows", "period": "2026-Q4"}


def test_downloads_give_the_figures_the_page_showed(rt: Any, auditor: Console,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes_overview, "CACHE_SECONDS", 300.0)
    seed_q4(rt)
    assert "1,400.05 USD" in auditor.get("/console/?period=2026-Q4").text
    s = Seed(rt)
    s.reward(s.event("2026-10-20 00:00"), "spiff", 100, "USD", "2026-10-20 00:00")
    flows = csv_rows(auditor.get("/console/kpi.csv?period=2026-Q4&chart=flows").text)
    assert ["accrued", "spiff", "2026-10", "USD", "2", "600.05"] in flows  # what the page showed
    assert "1,401.05 USD" in auditor.get("/console/?period=2026-Q4").text  # the page reads anew
    flows = csv_rows(auditor.get("/console/kpi.csv?period=2026-Q4&chart=flows").text)
    assert ["accrued", "spiff", "2026-10", "USD", "3", "601.05"] in flows
    monkeypatch.setattr(routes_overview, "CACHE_SECONDS", 0.0)  # once older than the cache time: read anew
    s.reward(s.event("2026-10-21 00:00"), "spiff", 100, "USD", "2026-10-21 00:00")
    flows = csv_rows(auditor.get("/console/kpi.csv?period=2026-Q4&chart=flows").text)
    assert ["accrued", "spiff", "2026-10", "USD", "4", "602.05"] in flows
