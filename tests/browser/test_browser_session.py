"""Signing in and out of the console in Chromium: a pasted token opens a session, a bad one is refused with a
message, signing out makes every page ask to sign in again; the keyboard reaches the skip link and the navigation.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_site import Site, screenshot, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

NAV = ["Overview", "Approvals", "Held", "Search", "Audit log", "Funds", "Programs"]


def test_a_page_asks_to_sign_in_and_comes_back_after_it(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/console/audit?action=token.created")
    expect(page).to_have_url(re.compile(r"/console/login\?next=%2Fconsole%2Faudit%3Faction%3Dtoken\.created"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "login")
    page.get_by_label("API token").fill(site.tokens["auditor"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{site.url}/console/audit?action=token.created")
    expect(page.get_by_label("Action (exact, or with *)")).to_have_value("token.created")
    cookie = next(c for c in page.context.cookies() if c["name"] == "payhub_console")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert site.tokens["auditor"] not in cookie["value"]


def test_a_wrong_token_is_refused_with_a_message(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/console/login")
    page.get_by_label("API token").fill("phk_" + "x" * 43)
    with page.expect_response(lambda r: r.url.endswith("/console/login") and r.request.method == "POST") as posted:
        page.get_by_role("button", name="Sign in").click()
    assert posted.value.status == 401
    expect(page.get_by_role("alert")).to_have_text(re.compile("That token is not valid"))
    page.get_by_label("API token").fill("not a token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("That is not an API token"))
    assert not [c for c in page.context.cookies() if c["name"] == "payhub_console"]
    page.goto(f"{site.url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?"))


def test_signing_out_ends_the_session(page: Any, site: Site) -> None:
    sign_in(page, site, "operator-a")
    old_cookie = next(c for c in page.context.cookies() if c["name"] == "payhub_console")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login\?ended=signed_out"))
    expect(page.get_by_role("alert")).to_have_text("You signed out.")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    for path in ("/console/", "/console/approvals", "/console/audit", "/console/payouts/1"):
        page.goto(site.url + path)
        expect(page).to_have_url(re.compile(r"/console/login\?next="))
        expect(page.get_by_label("API token")).to_be_visible()
    # The old cookie, put back by hand, opens nothing: the session was ended on the server.
    page.context.add_cookies([old_cookie])
    page.goto(f"{site.url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?next=%2Fconsole%2F&ended=signed_out"))
    expect(page.get_by_role("alert")).to_have_text("You signed out.")


def test_the_keyboard_reaches_the_skip_link_and_the_navigation(page: Any, site: Site) -> None:
    sign_in(page, site, "auditor")
    page.keyboard.press("Tab")
    focused = page.locator(":focus")
    expect(focused).to_have_text("Skip to content")
    expect(focused).to_be_in_viewport()  # the skip link shows itself when focused
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("payhub")
    reached = []
    for _ in NAV:
        page.keyboard.press("Tab")
        reached.append(page.locator(":focus").inner_text())
    assert reached == NAV
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Sign out")
    # Enter on the skip link moves the focus to the page's main content.
    page.reload()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator(":focus")).to_have_attribute("id", "main")
    # Enter on a navigation link follows it.
    page.get_by_role("link", name="Audit log").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/console/audit"))
