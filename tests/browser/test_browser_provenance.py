"""Search and provenance in Chromium: find a payout by what a bank statement or a payee shows (its idempotency key,
the payee id), open its page and follow its whole chain: CRM record, program version, calculation, approvals,
screening, attempts and the line of the bank file.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_site import Site, screenshot, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def payout_of(site: Site, payee: str) -> dict[str, Any]:
    """The one payout of ``payee`` as the CLI lists it."""
    found = [p for p in site.payouts() if p["payee"] == payee]
    assert len(found) == 1, found
    return found[0]


def test_find_a_payout_by_its_key_and_follow_its_provenance(page: Any, site: Site) -> None:
    payout = payout_of(site, "rep-ana")
    assert (payout["rail"], payout["amount"], payout["currency"], payout["items"]) == ("bank", "650.00", "USD", 2)
    sign_in(page, site, "auditor")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Search").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Search")
    page.get_by_label("List").select_option(label="(search only)")
    page.get_by_label("Reference, key or id").fill(payout["key"])
    page.get_by_role("button", name="Search").click()
    # One payout found: its page opens.
    expect(page).to_have_url(f"{site.url}/console/payouts/{payout['id']}")
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text(f"Payout {payout['id']}: 650.00 USD to rep-ana")
    expect(heading).to_contain_text("(sent)")
    main = page.locator("main")
    expect(main).to_contain_text("= the payout's amount")

    # Each item's chain, from its CRM record to its approvals.
    items = page.locator("section.item")
    expect(items).to_have_count(2)
    objects = set()
    for i in range(2):
        steps = items.nth(i).locator("ol.provenance > li > h4")
        expect(steps).to_have_text(["CRM record", "Program and version", "Calculation", "Approvals"])
        objects.add(re.search(r"006A00000\d", items.nth(i).locator("ol.provenance > li").first.inner_text()).group(0))
        expect(items.nth(i)).to_contain_text("deal_spiff")
    assert objects == {"006A000001", "006A000004"}

    # Screening (the quickstart configures none), the attempt, the rail's document: the ACH file and the payout's line.
    expect(page.locator("#screening + *")).to_contain_text("no screening hook was configured")
    attempts = page.locator("h2#attempts ~ div.scroll").first.locator("tbody tr")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("send #1")
    ach_file, line = payout["provider_ref"].rsplit(":", 1)
    document = page.locator("h2#document + dl")
    expect(document).to_contain_text(ach_file)
    expect(document.locator("dt", has_text="Line").locator("xpath=following-sibling::dd[1]")).to_have_text(line)
    expect(main).to_contain_text(payout["key"])
    screenshot(page, "payout")

    # The chain links back: the first item's CRM record opens its event, whose page leads to the payout again.
    first_event = items.first.locator("ol.provenance > li").first.get_by_role("link", name=re.compile(r"^event \d+$"))
    first_event.click()
    expect(page).to_have_url(re.compile(r"/console/events/\d+$"))
    expect(page.locator("main")).to_contain_text("006A00000")
    expect(page.get_by_role("link", name=f"payout {payout['id']}").first).to_be_visible()


def test_list_a_payees_payouts_and_open_one(page: Any, site: Site) -> None:
    payout = payout_of(site, "nordic-dist")
    sign_in(page, site, "auditor", "/console/search")
    page.get_by_label("List").select_option("payouts")
    page.get_by_label("Payee").fill("nordic-dist")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"kind=payouts"))
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("387.50 EUR")
    screenshot(page, "search")
    rows.first.get_by_role("link", name=str(payout["id"]), exact=True).click()
    expect(page).to_have_url(f"{site.url}/console/payouts/{payout['id']}")
    expect(page.locator("h2#document + dl")).to_contain_text(".xml")  # the SEPA file


def test_a_search_that_finds_nothing_says_so(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor", "/console/search")
    page.get_by_label("List").select_option(label="(search only)")
    page.get_by_label("Reference, key or id").fill("<script>alert(1)</script>")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("main")).to_contain_text("Nothing found")
    expect(page.locator("main q")).to_have_text("<script>alert(1)</script>")  # shown as text, not run


def test_a_payouts_partner_statement_and_its_pdf(page: Any, site: Site) -> None:
    payout = payout_of(site, "acme-reseller")  # three rewards in one credit note
    assert (payout["rail"], payout["amount"], payout["items"]) == ("credit", "830.86", 3)
    sign_in(page, site, "auditor", f"/console/payouts/{payout['id']}")
    page.get_by_role("link", name="Partner statement").click()
    expect(page).to_have_url(f"{site.url}/console/payouts/{payout['id']}/statement")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Statement of payout {payout['id']}")
    lines = page.locator("main table tbody tr")
    expect(lines).to_have_count(3)
    assert sorted(re.search(r"006A00000\d", lines.nth(i).inner_text()).group(0) for i in range(3)) == [
        "006A000001", "006A000002", "006A000004"]
    expect(lines.filter(has_text="partner_rebate")).to_have_count(3)
    expect(page.locator("main table tfoot")).to_contain_text("830.86 USD")
    expect(page.locator("main")).to_contain_text(payout["provider_ref"])  # the credit note's number
    screenshot(page, "statement")
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download the PDF").click()
    pdf = downloading.value.path().read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert len(pdf) > 2000
