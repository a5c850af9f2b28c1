"""Programs and funds in Chromium: the programs the settings configure, each with its recorded versions and
parameters; the funds page answers with its filters.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_site import Site, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

PROGRAMS = ["coop_fund", "deal_bonus", "deal_spiff", "partner_rebate", "referral_fee"]


def test_programs_and_their_versions(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Programs").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Programs")
    names = page.locator("main table tbody th[scope=row]")
    expect(names).to_have_count(len(PROGRAMS))
    assert sorted(names.all_inner_texts()) == PROGRAMS
    bonus = page.locator("main table tbody tr").filter(has=page.get_by_role("link", name="deal_bonus", exact=True))
    expect(bonus.locator("td").nth(0)).to_have_text("enabled")
    expect(bonus.locator("td").nth(1)).to_have_text("flat")
    bonus.get_by_role("link", name="deal_bonus").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Program deal_bonus")
    expect(page.get_by_role("heading", level=2, name="Version 1 (current)")).to_be_visible()
    parameters = page.locator("section.version dd code").last
    expect(parameters).to_contain_text('"dual_threshold"')
    expect(parameters).to_contain_text('"1000"')


def fund_rows(page: Any) -> list[list[str]]:
    rows = page.locator("main table tbody tr")
    return [[cell.strip() for cell in rows.nth(i).locator("th, td").all_inner_texts()] for i in range(rows.count())]


def test_funds_show_the_co_op_balances_and_filter_by_holder(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Funds").click()
    expect(page).to_have_url(re.compile(r"/console/funds$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Funds")
    expect(page.locator("main table tbody tr")).to_have_count(2)
    # 2 % of acme-reseller's deals (24,000 + 8,000 + 1,234.565 USD) and of nordic-dist's 15,500 EUR deal.
    assert sorted(row[:7] for row in fund_rows(page)) == [
        ["coop_fund", "acme-reseller", "USD", "664.69", "0.00", "0.00", "664.69"],
        ["coop_fund", "nordic-dist", "EUR", "310.00", "0.00", "0.00", "310.00"]]
    page.get_by_label("Holder", exact=False).fill("nordic-dist")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"holder=nordic-dist"))
    expect(page.locator("main table tbody tr")).to_have_count(1)
    assert fund_rows(page)[0][1] == "nordic-dist"
