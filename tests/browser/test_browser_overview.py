"""The overview in Chromium, as an auditor: the KPI tiles of the quickstart's run, every chart drawn by Chart.js with
data (``data-drawn`` holds the number of labels it drew, and its canvas has paint on it), a chart's data table and
its CSV download.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from browser_site import Site, screenshot, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

PAINTED = """canvas => {
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return [canvas.width, canvas.height, painted];
}"""


def test_the_overview_draws_its_charts_with_data(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor")
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    # Every reward of the run was created now, so the current period has them all: the quickstart's nine (1,930.86
    # USD, 387.50 EUR, 48,000 JPY) and deal_bonus's four of 1,000 USD.
    accrued = page.locator(".kpi").filter(has=page.locator(".label", has_text="Accrued"))
    expect(accrued).to_contain_text("5,930.86 USD")
    expect(accrued).to_contain_text("387.50 EUR")
    expect(accrued).to_contain_text("48,000 JPY")
    expect(accrued).to_contain_text("13 rewards")

    charts = page.locator("figure.chart[data-chart]")
    expect(page.locator("figure.chart[data-chart]:not([data-drawn])")).to_have_count(0)
    assert charts.count() >= 6
    for i in range(charts.count()):
        chart = charts.nth(i)
        name = chart.get_attribute("data-chart")
        data = json.loads(chart.locator("script[type='application/json']").text_content())
        assert int(chart.get_attribute("data-drawn")) == len(data["labels"]) > 0, name
        assert any(value for dataset in data["datasets"] for value in dataset["data"]), name
        width, height, painted = chart.locator("canvas").evaluate(PAINTED)
        assert width > 100 and height > 100, name
        assert painted > 0.01 * width * height, (name, painted)
    screenshot(page, "overview")

    # One chart's data: as a table on the page, and as a CSV file.
    chart = page.locator("figure.chart[data-chart=program-usd]")
    table = chart.locator("details table")
    expect(table).to_be_hidden()
    chart.get_by_text("Data table").click()
    expect(table).to_be_visible()
    programs = table.locator("tbody th[scope=row]")
    expect(programs).to_have_text(["deal_bonus", "deal_spiff", "partner_rebate"])
    headers = [text.strip().lower() for text in table.locator("thead th").all_inner_texts()]
    assert headers[1:] == ["accrued", "approved", "paid"]
    expect(table.locator("tbody tr").first.locator("td").first).to_have_text("4000.00")

    with page.expect_download() as downloading:
        chart.get_by_role("link", name="Download CSV").click()
    download = downloading.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.reader(io.StringIO(download.path().read_text(encoding="utf-8-sig"))))
    by_program = {row[0]: row for row in rows[1:]}
    assert sorted(by_program) == ["deal_bonus", "deal_spiff", "partner_rebate"]
    header = [name.lower() for name in rows[0]]
    assert by_program["deal_bonus"][header.index("accrued")] == "4000.00"
    assert by_program["partner_rebate"][header.index("accrued")] == "830.86"


def test_a_period_without_data_charts_nothing(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor", "/console/?period=2001-Q1")
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    expect(page.get_by_label("Period (UTC): a quarter, month, year or days")).to_have_value("2001-Q1")
    expect(page.locator("figure.chart.empty").first).to_contain_text("None in this period.")
    page.wait_for_load_state("load")
    for chart in page.locator("figure.chart[data-chart]").all():
        data = json.loads(chart.locator("script[type='application/json']").text_content())
        assert not any(value for dataset in data["datasets"] for value in dataset["data"]), data
