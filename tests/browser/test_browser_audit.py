"""The audit log in Chromium: filter by action and by actor and see only matching rows, export the filtered
entries as a CSV download and read it, run the verification and see its result.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from browser_site import TOKENS, Site, screenshot, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


ENTRIES = "main table tbody tr:has(th[scope=row])"
"""The row of each entry (headed by its sequence number; its detail may follow on a row of its own)."""


def column(page: Any, index: int) -> list[str]:
    """The text of the ``index``-th cell (0: the row header) of every entry of the table."""
    rows = page.locator(ENTRIES)
    return [rows.nth(i).locator("th, td").nth(index).inner_text().strip() for i in range(rows.count())]


def test_filter_the_audit_log_and_export_it_as_csv(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor")
    nav = page.get_by_role("navigation", name="Console")
    nav.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
    expect(nav.get_by_role("link", name="Audit log")).to_have_attribute("aria-current", "page")
    everything = page.locator(ENTRIES).count()

    page.get_by_label("Action (exact, or with *)").fill("token.created")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"/console/audit\?.*action=token\.created"))
    expect(page.locator(ENTRIES)).to_have_count(len(TOKENS))
    assert everything > len(TOKENS)
    assert set(column(page, 3)) == {"token.created"}
    assert sorted(column(page, 4)) == sorted(f"token:{name}" for name in TOKENS)
    expect(page.get_by_label("Action (exact, or with *)")).to_have_value("token.created")
    screenshot(page, "audit")

    with page.expect_download() as downloading:
        page.get_by_role("link", name="CSV", exact=True).click()
    download = downloading.value
    assert download.suggested_filename.endswith(".csv")
    text = download.path().read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["action"] for row in rows] == ["token.created"] * len(TOKENS)
    assert sorted(row["subject_id"] for row in rows) == sorted(TOKENS)
    assert {"seq", "at", "actor", "outcome", "detail"} <= set(rows[0])
    assert all(row["outcome"] == "ok" for row in rows)
    seqs = [int(row["seq"]) for row in rows]
    assert seqs == sorted(seqs)
    assert sorted(column(page, 0), key=int) == [str(s) for s in seqs]

    # A wildcard widens to every token action; an actor narrows to what one token did (this sign-in included).
    page.get_by_label("Action (exact, or with *)").fill("")
    page.get_by_label("Actor (exact)").fill("token:auditor")
    page.get_by_role("button", name="Search").click()
    actors = column(page, 2)
    assert actors and set(actors) == {"token:auditor"}
    assert any("/console/audit" in subject for subject in column(page, 4))

    page.get_by_role("link", name="Clear filters").click()
    expect(page.get_by_label("Actor (exact)")).to_have_value("")
    assert page.locator(ENTRIES).count() > len(TOKENS)


def test_a_malformed_filter_is_named_and_lists_nothing(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor")
    with page.expect_response(re.compile(r"/console/audit\?")) as answer:
        page.goto(f"{site.url}/console/audit?since=yesterday-ish")
    assert answer.value.status == 422
    expect(page.get_by_role("alert")).to_contain_text("since")
    expect(page.locator("main table")).to_have_count(0)


def test_verify_the_audit_log(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor", "/console/audit")
    page.get_by_role("link", name="Verify the audit log").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Verify the audit log")
    page.get_by_role("button", name="Run verification").click()
    result = page.get_by_role("status").filter(has_text="entries verified")
    expect(result).to_contain_text("OK")
    checked = int(re.search(r"([\d,]+) entries verified", result.inner_text()).group(1).replace(",", ""))
    assert checked > 50
