"""The approval queue and held items in Chromium: two different operators, each in a browser of their own, approve
a reward that needs two approvals and it leaves the queue; the same operator twice is refused with a notice; an
auditor sees the queue without its buttons and is refused an approval; held rewards show their reason.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_site import HELD_REASON, Site, screenshot, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

INJECT_FORM = """([action, csrf]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  const field = document.createElement("input");
  field.type = "hidden"; field.name = "csrf"; field.value = csrf;
  form.appendChild(field);
  document.body.appendChild(form);
  form.submit();
}"""


def queue_row(page: Any, reward: int) -> Any:
    """The row of ``reward`` in the approval queue."""
    return page.locator("table.queue tbody tr").filter(
        has=page.locator("th[scope=row]", has_text=re.compile(rf"#{reward}(?!\d)")))


def notice(page: Any) -> Any:
    return page.locator("main p.notice[role=status]")


def test_two_operators_approve_a_reward_and_it_leaves_the_queue(browser: Any, site: Site) -> None:
    reward = site.awaiting[0]
    assert site.rewards()[reward]["approvals"] == "0/2"
    first = browser.new_context(viewport={"width": 1280, "height": 800})
    second = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page_a = first.new_page()
        sign_in(page_a, site, "operator-a", "/console/approvals")
        expect(page_a.get_by_role("heading", level=1)).to_have_text("Approvals")
        row = queue_row(page_a, reward)
        expect(row).to_contain_text("deal_bonus")
        expect(row).to_contain_text("1000.00 USD")
        expect(row).to_contain_text("0 of 2")
        screenshot(page_a, "approvals")
        stale = first.new_page()  # the same operator's second tab, opened before the approval
        stale.goto(f"{site.url}/console/approvals")

        row.get_by_role("button", name="Approve", exact=True).click()
        expect(notice(page_a)).to_have_text(
            f"Reward {reward} approved by token:operator-a (1 of 2 approvals): it needs another approval by a "
            "different operator.")
        row = queue_row(page_a, reward)
        expect(row).to_contain_text("1 of 2")
        expect(row).to_contain_text("token:operator-a")
        expect(row.get_by_role("button", name="Approved by you")).to_be_disabled()
        assert site.rewards()[reward]["approvals"] == "1/2"

        # The same operator again, from the tab that still offers the button: refused, and said so.
        queue_row(stale, reward).get_by_role("button", name="Approve", exact=True).click()
        expect(notice(stale)).to_contain_text(f"Approving reward {reward} refused")
        expect(notice(stale)).to_contain_text("token:operator-a")
        assert site.rewards()[reward]["approvals"] == "1/2"

        # A different operator, in a browser of their own, gives the second approval.
        page_b = second.new_page()
        sign_in(page_b, site, "operator-b", "/console/approvals")
        row_b = queue_row(page_b, reward)
        expect(row_b).to_contain_text("1 of 2")
        row_b.get_by_role("button", name="Approve", exact=True).click()
        expect(notice(page_b)).to_have_text(
            f"Reward {reward} approved by token:operator-b (2 of 2 approvals): it is now pending and will be "
            "scheduled.")
        expect(queue_row(page_b, reward)).to_have_count(0)
        for other in site.awaiting[1:]:
            expect(queue_row(page_b, other)).to_have_count(1)
        shown = site.rewards()[reward]
        assert (shown["status"], shown["approvals"]) == ("pending", "2/2")

        # The reward's page names both approvers, and the refused second try of the first.
        page_b.goto(f"{site.url}/console/rewards/{reward}")
        step = page_b.locator("ol.provenance > li").filter(has=page_b.locator("h4", has_text="Approvals"))
        expect(step).to_contain_text("2 of 2 approval(s) given.")
        decisions = step.locator("tbody tr")
        expect(decisions).to_have_count(3)
        assert [[cell.strip() for cell in decisions.nth(i).locator("th, td").all_inner_texts()][::2]
                for i in range(3)] == [["token:operator-a", "approved"], ["token:operator-b", "approved"],
                                       ["token:operator-a", "refused"]]
    finally:
        first.close()
        second.close()


def test_an_auditor_sees_the_queue_without_buttons_and_is_refused_an_approval(page: Any, site: Site) -> None:
    reward = site.awaiting[2]
    sign_in(page, site, "auditor", "/console/approvals")
    expect(page.locator("main")).to_contain_text("Your role (auditor) may look but not decide.")
    expect(queue_row(page, reward)).to_contain_text("0 of 2")
    expect(page.locator("main").get_by_role("button")).to_have_text(["Show"])  # the filters' button only
    expect(page.locator("table.queue input[type=checkbox]")).to_have_count(0)

    # A form the page did not offer, posted with the auditor's own session and CSRF token: refused by role.
    csrf = page.locator("form.who input[name=csrf]").get_attribute("value")
    with page.expect_response(re.compile(rf"/console/rewards/{reward}/approve$")) as answer:
        page.evaluate(INJECT_FORM, [f"/console/rewards/{reward}/approve", csrf])
    assert answer.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Refused")
    expect(page.get_by_role("alert")).to_contain_text("the auditor role may not do this; it needs the operator role")
    expect(page.locator("form.who")).to_contain_text("auditor")  # still signed in
    screenshot(page, "refused")
    assert site.rewards()[reward]["approvals"] == "0/2"


def test_held_rewards_show_their_reason_and_actions_for_operators(browser: Any, site: Site) -> None:
    for name, operator in (("operator-a", True), ("auditor", False)):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        try:
            page = context.new_page()
            sign_in(page, site, name, "/console/held")
            expect(page.get_by_role("heading", level=1)).to_have_text("Held")
            row = page.locator("section[aria-labelledby=held-rewards] tbody tr").filter(
                has=page.locator("th[scope=row]", has_text=re.compile(rf"#{site.held}(?!\d)")))
            expect(row).to_contain_text("deal_bonus")
            expect(row).to_contain_text(HELD_REASON)
            expect(row).to_contain_text("operator")  # the hold code
            expect(row.get_by_role("button", name="Release")).to_have_count(1 if operator else 0)
            if operator:
                screenshot(page, "held")
        finally:
            context.close()
