"""The year-end tax report through the real pipeline on SQLite: payments counted in the calendar year they were sent,
the 2025 ($600) and 2026 ($2,000) thresholds with payments just under and at them, a later year from the settings
and one without, backup withholding in box 4, boxes by program with an override, other currencies apart, warnings
near the threshold, and ``payhub tax report`` as CSV and JSON without the TIN."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_program_rules import BASE, PCT, deal, run, schedule

from payhub.api import Outcome, RailResult
from payhub.compliance import tax_report
from payhub.compliance.tax_report import TaxReportError
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.testing import ManualClock, invoke_cli

HEADER = "id,name,country,currency,tax_form,form_date,tin\n"
SSN = "536-90-4399"
EIN = "12-3456789"
PAYEES = (f"ok25,Just At 2025,US,,W-9,2024-01-02,{SSN}\nun25,Under 2025,US,,W-9,2024-01-02,{SSN}\n"
          f"ok26,At 2026,US,,W-9,2024-01-02,{EIN}\nun26,Under 2026,US,,W-9,2024-01-02,{EIN}\n"
          "de,Deutsch,DE,,W-8BEN,2024-03-01,\nnoform,No Form,US,,,,\nfr,Nouveau,FR,,,,\n")
SETTINGS = """
[compliance.tax]
enabled = true
us_without_w9 = "withhold"
non_us_without_w8 = "pay"
warn_ratio = "0.8"
{extra}
[compliance.tax.boxes]
p = "1099-NEC-1"
prize = "1099-MISC-3"
"""


@pytest.fixture
def site(make_runtime: Any, tmp_path: Path) -> Any:
    def factory(extra: str = "") -> Runtime:
        (tmp_path / "payees.csv").write_text(HEADER + PAYEES)
        body = (BASE + f"\n[programs.p]\n{PCT}event_types = [\"deal_won\"]\n\n[programs.prize]\n{PCT}"
                "event_types = [\"prize_won\"]\n\n[rails.r]\nplugin = \"fake\"\nsettle_interval_seconds = 0.001\n"
                + textwrap.dedent(SETTINGS.format(extra=extra)))
        rt: Runtime = make_runtime(body)
        return rt

    return factory


def pay_on(rt: Runtime, clock: ManualClock, day: str, *records: Any) -> None:
    """Calculate ``records``, schedule and send them on ``day`` (UTC), and settle them as paid a day later."""
    clock.set(f"{day}T12:00:00Z")
    run(rt, *records)
    schedule(rt)
    while disburse_rail(rt, "r"):
        pass
    rail = rt.plugins.rails["r"]
    rail.lookup = lambda keys: {k: RailResult(k, Outcome.PAID, f"fake-{k[-8:]}") for k in keys}  # type: ignore
    clock.advance(86_400)
    while settle_rail(rt, "r"):
        pass


def rows(rt: Runtime, year: int, everyone: bool = False) -> dict[str, dict[str, Any]]:
    with rt.engine.connect() as conn:
        return {row["payee"]: row for row in tax_report.report(conn, rt.settings, year, everyone)}


def world(site: Any, extra: str = "") -> Runtime:
    rt: Runtime = site(extra)
    with ManualClock("2025-01-01T00:00:00Z") as clock:
        # Sent 31 December 2025, paid 1 January 2026: a 2025 payment (the day it was sent).
        pay_on(rt, clock, "2025-12-31", deal("a", "600.00", payee="ok25", when="2025-03-01T00:00:00Z"),
               deal("b", "599.99", payee="un25", when="2025-03-01T00:00:00Z"))
        pay_on(rt, clock, "2026-03-02", deal("c", "1500.00", payee="ok26", when="2025-12-30T00:00:00Z"),
               deal("d", "1999.99", payee="un26"), deal("e", "1700.00", payee="noform"),
               deal("f", "100.00", payee="de"), deal("g", "50.00", payee="fr", currency="EUR"))
        pay_on(rt, clock, "2026-11-30", replace(deal("h", "500.00", payee="ok26"), event_type="prize_won"))
    return rt


def test_thresholds_2025_and_2026_boxes_withholding_and_warnings(site: Any) -> None:
    rt = world(site)
    y2025 = rows(rt, 2025)
    assert set(y2025) == {"ok25"}  # 599.99 is under $600: not listed (it has its W-9)
    assert (y2025["ok25"]["reportable"], y2025["ok25"]["nec_box1"], y2025["ok25"]["threshold"]) == (
        "1099-NEC", "600.00", "600.00")
    assert rows(rt, 2025, everyone=True)["un25"]["reportable"] == ""

    y2026 = rows(rt, 2026)
    # ok26: 1500.00 for services (event in 2025, paid 2026) + 500.00 prize: each under $2,000 on its own form
    assert "ok26" not in y2026 and "un26" not in y2026
    everyone = rows(rt, 2026, everyone=True)
    assert (everyone["ok26"]["nec_box1"], everyone["ok26"]["misc_box3"], everyone["ok26"]["reportable"]) == (
        "1500.00", "500.00", "")
    assert everyone["un26"]["nec_box1"] == "1999.99"
    # no W-9: 24 % withheld (408.00 of 1700.00) and reported in box 4 whatever the amount; warned at 85 %
    noform = y2026["noform"]
    assert (noform["nec_box1"], noform["nec_box4"], noform["reportable"]) == ("1700.00", "408.00", "1099-NEC")
    assert noform["warning"] == ("1700.00 USD paid in 2026 is 85% of the 2000.00 USD threshold and the payee has "
                                 "no valid form")
    assert "no W-9 on file" in noform["form_problem"] and noform["tin_status"] == "missing"
    # non-US: a current W-8BEN is not listed; without one (paid as configured) it is, with its euros apart
    assert "de" not in y2026
    assert (y2026["fr"]["other_currencies"], y2026["fr"]["nec_box1"], y2026["fr"]["reportable"]) == (
        "50.00 EUR", "0.00", "")
    assert "no W-8BEN or W-8BEN-E" in y2026["fr"]["form_problem"]


def test_a_year_needs_its_threshold_from_the_settings(site: Any) -> None:
    rt = world(site)
    with pytest.raises(TaxReportError, match=r"compliance\.tax\.thresholds\.2027"):
        rows(rt, 2027)
    later: Runtime = site("[compliance.tax.thresholds]\n2027 = \"2100\"\n")
    assert rows(later, 2027) == {}
    with later.engine.connect() as conn:
        assert tax_report.check(conn, later.settings, 2027)[0] == 2100


def test_a_program_without_a_box_stops_the_report_naming_the_setting(site: Any, make_runtime: Any,
                                                                     tmp_path: Path) -> None:
    rt = world(site)
    text = (tmp_path / "payhub.toml").read_text().replace('p = "1099-NEC-1"\n', "")
    (tmp_path / "payhub.toml").write_text(text)
    from payhub.settings import load_settings
    settings = load_settings(tmp_path / "payhub.toml")
    with rt.engine.connect() as conn, pytest.raises(TaxReportError, match=r"compliance\.tax\.boxes\.p "):
        list(tax_report.report(conn, settings, 2026))


def test_the_command_writes_csv_and_json_without_the_tin(site: Any, tmp_path: Path) -> None:
    world(site)
    config = str(tmp_path / "payhub.toml")
    result = invoke_cli("--config", config, "tax", "report", "--year", "2026", "--format", "csv")
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(table[0]) == tax_report.COLUMNS
    assert [row["payee"] for row in table] == ["fr", "noform"]
    assert table[1]["nec_box4"] == "408.00"
    result = invoke_cli("--config", config, "tax", "report", "--year", "2026", "--format", "json", "--all")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [row["payee"] for row in listed] == ["de", "fr", "noform", "ok26", "un26"]
    assert listed[0]["form"] == "W-8BEN" and listed[0]["form_signed_on"] == "2024-03-01"
    table_text = invoke_cli("--config", config, "tax", "report", "--year", "2026").stdout
    for text in (result.stdout, table_text, invoke_cli("--config", config, "audit", "list", "--format",
                                                       "json").stdout):
        for tin in (SSN, SSN.replace("-", ""), EIN, EIN.replace("-", "")):
            assert tin not in text
    failed = invoke_cli("--config", config, "tax", "report", "--year", "2031")
    assert failed.exit_code == 1 and "compliance.tax.thresholds.2031" in failed.stderr


def test_csv_cells_are_escaped_for_spreadsheets(site: Any, tmp_path: Path) -> None:
    rt: Runtime = site()
    (tmp_path / "payees.csv").write_text(HEADER + "evil,=HYPERLINK(\"x\"),US,,,,\n")
    with ManualClock("2026-02-01T00:00:00Z") as clock:
        pay_on(rt, clock, "2026-02-02", deal("x", "10.00", payee="evil"))
    result = invoke_cli("--config", str(tmp_path / "payhub.toml"), "tax", "report", "--year", "2026", "--format",
                        "csv")
    assert "'=HYPERLINK" in result.stdout
