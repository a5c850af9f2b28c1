"""Forged form posts in Chromium: a page on another port or another site that posts to the console while the
victim is signed in is refused and changes nothing; so is a script on the console's own origin that sends the
session cookie with a wrong CSRF field.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_site import Attacker, Site, forged_form, sign_in

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

POST_STATUS = """async ([path, fields]) => {
  const answer = await fetch(path, {method: "POST", body: new URLSearchParams(fields), redirect: "manual"});
  return [answer.status, answer.type, await answer.text()];
}"""


def forged_post(page: Any, attacker: Attacker, url: str, path: str) -> Any:
    """Open the attacker's page at ``url``; the response to the form it posts to ``path``."""
    with page.expect_response(lambda r: r.url.endswith(path) and r.request.method == "POST") as posted:
        page.goto(url)
    return posted.value


def still_signed_in(page: Any, site: Site, name: str) -> None:
    page.goto(f"{site.url}/console/")
    expect(page).to_have_url(f"{site.url}/console/")
    expect(page.locator("form.who")).to_contain_text(name)


def test_a_form_posted_from_another_port_of_the_same_host_is_refused(page: Any, site: Site,
                                                                       attacker: Attacker) -> None:
    sign_in(page, site, "operator-a")
    attacker.html = forged_form(f"{site.url}/console/logout", {"csrf": "guessed"})
    answer = forged_post(page, attacker, attacker.url, "/console/logout")
    # Same host, so the browser sends the SameSite=Strict cookie: the CSRF and same-site checks stop it.
    assert answer.request.all_headers().get("sec-fetch-site") == "same-site"
    assert "payhub_console=" in (answer.request.all_headers().get("cookie") or "")
    assert answer.status == 403
    expect(page.get_by_role("alert")).to_contain_text("CSRF check failed")
    still_signed_in(page, site, "operator-a")


def test_a_forged_approval_changes_nothing(page: Any, site: Site, attacker: Attacker) -> None:
    reward = site.awaiting[1]
    assert site.rewards()[reward]["approvals"] == "0/2"
    sign_in(page, site, "operator-a", "/console/approvals")
    attacker.html = forged_form(f"{site.url}/console/rewards/{reward}/approve",
                                {"csrf": "guessed", "back": "/console/approvals"})
    answer = forged_post(page, attacker, attacker.url, f"/console/rewards/{reward}/approve")
    assert answer.status == 403
    expect(page.get_by_role("alert")).to_contain_text("CSRF check failed")
    attacker.html = forged_form(f"{site.url}/console/rewards/approve", {"id": str(reward)})
    answer = forged_post(page, attacker, f"{attacker.other_site_url}/", "/console/rewards/approve")
    assert answer.status == 401
    shown = site.rewards()[reward]
    assert (shown["status"], shown["approvals"]) == ("awaiting_approval", "0/2")
    still_signed_in(page, site, "operator-a")


def test_a_form_posted_from_another_site_is_refused(page: Any, site: Site, attacker: Attacker) -> None:
    sign_in(page, site, "operator-a")
    attacker.html = forged_form(f"{site.url}/console/logout", {"csrf": "guessed"})
    answer = forged_post(page, attacker, f"{attacker.other_site_url}/", "/console/logout")
    # Another site: the browser keeps the SameSite=Strict cookie back, so the post has no session at all.
    assert "payhub_console=" not in (answer.request.all_headers().get("cookie") or "")
    assert answer.status == 401
    expect(page.get_by_role("alert")).to_contain_text("sign in to the console first")
    still_signed_in(page, site, "operator-a")


def test_a_script_with_the_cookie_but_a_wrong_csrf_field_is_refused(page: Any, site: Site) -> None:
    sign_in(page, site, "operator-b")
    good = page.locator("form.who input[name=csrf]").get_attribute("value")
    assert good and len(good) >= 32
    for fields in ({"csrf": "wrong"}, {}, {"csrf": good[:-1]}, {"csrf": good + "x"}):
        status, _kind, body = page.evaluate(POST_STATUS, ["/console/logout", fields])
        assert status == 403, (fields, status)
        assert "CSRF check failed" in body
    still_signed_in(page, site, "operator-b")
    # The same request with the session's own token goes through: it was the token that was refused.
    good = page.locator("form.who input[name=csrf]").get_attribute("value")
    status, kind, _body = page.evaluate(POST_STATUS, ["/console/logout", {"csrf": good}])
    assert (status, kind) == (0, "opaqueredirect")
    page.goto(f"{site.url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
