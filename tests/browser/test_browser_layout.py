"""The console's pages at a laptop's 1280x800 and a phone's 390x844 in Chromium: the page body never scrolls
sideways (wide tables scroll inside their own box), text meets WCAG AA contrast, and each page is saved as a
screenshot at both sizes.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_site import Site, screenshot, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

SIZES = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
PAGES = {
    "overview": ("/console/", "Overview"),
    "approvals-queue": ("/console/approvals", "Approvals"),
    "held-items": ("/console/held", "Held"),
    "audit-log": ("/console/audit", "Audit log"),
    "audit-verify": ("/console/audit/verify?run=1", "Verify the audit log"),
    "funds": ("/console/funds", "Funds"),
    "programs": ("/console/programs", "Programs"),
    "program": ("/console/programs/deal_bonus", "Program deal_bonus"),
    "search-rewards": ("/console/search?kind=rewards", "Search"),
    "payout-credit-note": ("/console/payouts/1", "Payout 1: 830.86 USD to acme-reseller"),
    "statement-credit-note": ("/console/payouts/1/statement", "Statement of payout 1"),
    "event": ("/console/events/1", "Event 1: deal_won"),
    "reward": ("/console/rewards/1", "Reward 1: 600.00 USD to rep-ana"),
}
"""Screenshot name: (path, how the page's first heading starts)."""
OVERFLOW = """() => {
  const page = document.scrollingElement;
  return {scroll: page.scrollWidth, client: page.clientWidth, body: document.body.scrollWidth};
}"""


LOW_CONTRAST = """() => {
  // Text whose colour against the first opaque background behind it is below WCAG AA: 4.5:1, or 3:1 for large text
  // (24 px, or 18.66 px bold). Each element with its own text is checked once.
  function rgba(text) { const m = text.match(/[\\d.]+/g).map(Number); return m.length > 3 ? m : [...m, 1]; }
  function luminance([r, g, b]) {
    const lin = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  }
  function background(element) {
    for (let e = element; e; e = e.parentElement) {
      const colour = rgba(getComputedStyle(e).backgroundColor);
      if (colour[3] >= 0.99) return colour;
    }
    return [255, 255, 255, 1];
  }
  const found = [];
  for (const element of document.querySelectorAll("body *")) {
    const own = [...element.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(element);
    if (!own || style.visibility === "hidden" || element.getClientRects().length === 0) continue;
    if (element.closest(".skip") && document.activeElement !== element.closest(".skip")) continue;
    const fore = luminance(rgba(style.color)), back = luminance(background(element));
    const ratio = (Math.max(fore, back) + 0.05) / (Math.min(fore, back) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = element.textContent.trim().slice(0, 40);
    if (ratio < needed) found.push(`${element.tagName}.${element.className} "${text}" ${ratio.toFixed(2)}`);
  }
  return found;
}"""


def no_sideways_scrolling(page: Any) -> None:
    width = page.evaluate(OVERFLOW)
    assert width["scroll"] <= width["client"], (page.url, width)
    assert width["body"] <= width["client"], (page.url, width)


@pytest.mark.parametrize("size", SIZES)
def test_every_page_fits_the_width(browser: Any, site: Site, size: str) -> None:
    context = browser.new_context(viewport=SIZES[size], device_scale_factor=1, is_mobile=size == "phone",
                                  has_touch=size == "phone")
    try:
        page = context.new_page()
        page.goto(f"{site.url}/console/login")
        no_sideways_scrolling(page)
        if size == "phone":
            screenshot(page, "login-phone")
        sign_in(page, site, "operator-a")
        for name, (path, heading) in PAGES.items():
            page.goto(site.url + path)
            expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("^" + re.escape(heading)))
            page.wait_for_load_state("load")
            no_sideways_scrolling(page)
            if size == "laptop":
                assert page.evaluate(LOW_CONTRAST) == [], name
            screenshot(page, name if size == "laptop" else f"{name}-phone")
    finally:
        context.close()
