"""``payhub report kpi`` (docs/console.md, "KPI reports offline"): the overview's KPIs as an HTML page with inline
PNG charts, a directory of CSV files, or a directory of PNG charts, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import csv
import io
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from kpi_seed import seed_q4

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert(1)</script>"
CHARTS = {"flow-usd", "flow-eur", "flow-jpy", "program-usd", "program-eur", "program-jpy", "budgets", "rail-status",
          "success", "time-to-paid", "open-payouts", "revenue-program", "revenue-partner"}


@pytest.fixture
def seeded(make_runtime: Any, tmp_path: Path) -> Path:
    rt = make_runtime("")
    seed_q4(rt, partner="acme" + SCRIPT)
    return tmp_path / "payhub.toml"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow  # matplotlib's first use in a process (fonts) and thirteen charts
def test_html_is_one_page_with_the_figures_and_inline_charts(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "q4.html"
    result = invoke("-c", str(seeded), "report", "kpi", "--period", "2026-Q4", "--format", "html",
                    "--output", str(target))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "13 charts" in result.output
    page = target.read_text()
    assert page.startswith("<!doctype html>") and "<title>KPI report 2026-Q4" in page
    for figure in ("1,400.05 USD", "387.50 EUR", "48,000 JPY", "850.05 USD", "75.0 %", "p50 4 d 12 h",
                   "p95 26 d 0 h", "12,000.505000000000000001", "1,150.05", "0.0958", "90.0", "over screening limit"):
        assert figure in page, figure
    assert SCRIPT not in page and "acme&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing runs, nothing fetched
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="Chart: ([^"]+)"', page)
    assert len(images) == 13
    for data, _alt in images:
        width, height = png_size(base64.b64decode(data))
        assert (width, height) == (900, 480)
    assert target.stat().st_mode & 0o077 == 0  # partner data: owner-only
    assert not list(target.parent.glob(".partial-*"))


def test_csv_is_a_directory_of_the_console_downloads(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "csv"
    result = invoke("-c", str(seeded), "report", "kpi", "--period", "2026-Q4", "--format", "csv", "-o", str(target))
    assert result.exit_code == 0, result.output
    files = {p.name for p in target.iterdir()}
    assert {f"{ident}.csv" for ident in CHARTS} | {"flows.csv", "funds.csv", "open-list.csv"} <= files
    rows = list(csv.reader(io.StringIO((target / "flows.csv").read_text())))
    assert rows[0] == ["measure", "program", "month", "currency", "rewards", "amount"]
    assert ["accrued", "spiff", "2026-10", "USD", "2", "600.05"] in rows
    assert ["approved", "spiff", "2026-11", "USD", "2", "350.05"] in rows
    success = list(csv.reader(io.StringIO((target / "success.csv").read_text())))
    assert success[1] == ["all rails", "3", "2", "1", "2", "0", "75.0"]
    partners = list(csv.reader(io.StringIO((target / "revenue-partner.csv").read_text())))
    assert ["acme" + SCRIPT, "USD", "12000.505000000000000001", "USD", "1150.05", "2", "0.0958"] in partners


@pytest.mark.slow  # thirteen charts drawn
def test_png_is_a_directory_of_charts(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "png"
    result = invoke("-c", str(seeded), "report", "kpi", "--period", "2026-Q4", "--format", "png", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert {p.stem for p in target.glob("*.png")} == CHARTS
    for path in target.glob("*.png"):
        data = path.read_bytes()
        assert png_size(data) == (900, 480) and len(data) > 5000, path.name  # a drawn chart, not a blank image


def test_default_names_and_an_empty_period(seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("-c", str(seeded), "report", "kpi", "--period", "2025-01")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "kpi-2025-01.html").read_text()
    assert "None in this period." in page
    # the one chart with data: the payouts open now, whatever the period; the unused budget pool is a table row
    assert re.findall(r'<img src="data:image/png;base64,[^"]+" alt="Chart: ([^"(]+)', page) == [
        "Payouts held, unknown or unresolved now "]
    assert "<bdi>spiff</bdi></th><td><bdi>2025-Q1</bdi></td>" in page
    result = invoke("-c", str(seeded), "report", "kpi", "--period", "2026-10-01..2026-10-31", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kpi-2026-10-01..2026-10-31-csv" / "flows.csv").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--period", "2026-Q5"], "Q1 to Q4"),
    (["--period", "next quarter"], "not one of the forms"),
    (["--period", "2026", "--format", "pdf"], "'pdf' is not one of"),
])
def test_bad_arguments_are_usage_errors(seeded: Path, args: list[str], says: str) -> None:
    result = invoke("-c", str(seeded), "report", "kpi", *args)
    assert result.exit_code == 2 and says in result.output


def test_output_of_the_wrong_kind_is_refused(seeded: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("keep me")
    result = invoke("-c", str(seeded), "report", "kpi", "--period", "2026", "--format", "png",
                    "-o", str(tmp_path / "a-file"))
    assert result.exit_code == 1 and "is a file" in result.output
    assert (tmp_path / "a-file").read_text() == "keep me"
    result = invoke("-c", str(seeded), "report", "kpi", "--period", "2026", "-o", str(tmp_path))
    assert result.exit_code == 1 and "is a directory" in result.output
