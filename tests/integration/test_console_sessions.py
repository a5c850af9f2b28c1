"""Console sign-in, sessions and CSRF (docs/console.md, Signing in): cookies, expiry, roles, refusals, audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from console_client import Console
from sqlalchemy import select

from payhub.clock import utcnow
from payhub.db.schema import audit_log, console_sessions
from payhub.tokens import create, revoke


@pytest.fixture
def rt(make_runtime: Any) -> Any:
    return make_runtime("")


def test_sign_in_sets_a_strict_httponly_cookie_and_opens_the_overview(rt: Any) -> None:
    console = Console(rt)
    token = create(rt, "ann", "auditor")
    answer = console.login(token, "/console/audit")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/audit"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("payhub_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http in the test; see the next test
    assert token not in cookie
    with rt.engine.connect() as conn:
        stored = conn.execute(select(console_sessions.c.id_hash)).scalars().all()
    assert len(stored) == 1 and stored[0] not in cookie  # only the hash is kept


def test_cookie_is_secure_over_https_or_when_always(make_runtime: Any) -> None:
    rt = make_runtime("[console]\nsecure_cookie = \"always\"\n")
    console = Console(rt)
    answer = console.login(create(rt, "ann", "auditor"))
    assert all("Secure" in cookie for cookie in answer.headers.get_list("set-cookie"))


@pytest.mark.parametrize("token", ["", "not-a-token", "phk_" + "A" * 43])
def test_bad_tokens_are_refused_and_audited(rt: Any, token: str) -> None:
    answer = Console(rt).login(token)
    assert answer.status_code in (400, 401)
    assert not [c for c in answer.headers.get_list("set-cookie") if c.startswith("payhub_console=")]
    with rt.engine.connect() as conn:
        last = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc())).first()
    assert last.action == "api.request" and last.outcome in ("refused", "denied")


def test_pages_need_a_session(rt: Any) -> None:
    answer = Console(rt).get("/console/?period=2026-Q4")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login?next=%2Fconsole%2F%3Fperiod%3D2026-Q4")


def test_logout_ends_the_session_and_needs_csrf(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    assert console.post("/console/logout", csrf=False).status_code == 403
    assert console.get("/console/").status_code == 200
    answer = console.post("/console/logout")
    assert answer.status_code == 303
    assert console.get("/console/").status_code == 303


def test_forged_origin_is_refused_even_with_the_token(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    answer = console.post("/console/logout", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403
    answer = console.post("/console/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 403


def test_idle_session_expires(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    with rt.engine.begin() as conn:
        conn.execute(console_sessions.update().values(last_seen_at=utcnow() - timedelta(minutes=31)))
    answer = console.get("/console/")
    assert answer.status_code == 303 and "ended=idle" in answer.headers["location"]


def test_revoked_token_ends_its_sessions(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    revoke(rt, "ann")
    answer = console.get("/console/")
    assert answer.status_code == 303 and "ended=token" in answer.headers["location"]


def test_pages_carry_security_headers_and_page_views_are_audited(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    answer = console.get("/console/")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    with rt.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.actor, audit_log.c.subject_id)
                            .where(audit_log.c.action == "api.request")).all()
    assert ("token:ann", "/console/") in [(r.actor, r.subject_id) for r in rows]
    assert console.get("/console/static/console.css").status_code == 200


def test_sign_in_without_the_sign_in_page_check_is_refused(rt: Any) -> None:
    """A cross-site form cannot sign a victim into someone's session: the form must carry the value the sign-in
    page put into its own cookie."""
    token = create(rt, "ann", "auditor")
    console = Console(rt)
    answer = console.request("POST", "/console/login", data={"token": token})
    assert answer.status_code == 403
    assert not [c for c in answer.headers.get_list("set-cookie") if c.startswith("payhub_console=")]
    console.get("/console/login")
    answer = console.request("POST", "/console/login", data={"token": token, "sign_in_check": "forged"})
    assert answer.status_code == 403
    assert console.login(token).status_code == 303


def test_sign_in_sign_out_and_expiry_are_audited_as_the_token(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    console.post("/console/logout")
    console.sign_in("bob", "auditor")
    with rt.engine.begin() as conn:
        conn.execute(console_sessions.update().values(last_seen_at=utcnow() - timedelta(minutes=31)))
    console.get("/console/")
    with rt.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.actor, audit_log.c.action, audit_log.c.subject_id,
                                   audit_log.c.detail).where(audit_log.c.action.like("console.%"))
                            .order_by(audit_log.c.seq)).all()
    assert [(r.actor, r.action, r.subject_id) for r in rows] == [
        ("token:ann", "console.signed_in", "ann"), ("token:ann", "console.signed_out", "ann"),
        ("token:bob", "console.signed_in", "bob"), ("token:bob", "console.session_ended", "bob")]
    assert '"reason":"idle"' in rows[-1].detail.replace(" ", "")


def test_a_sign_in_removes_sessions_past_the_maximum_age(rt: Any) -> None:
    console = Console(rt)
    token = create(rt, "ann", "auditor")
    for _ in range(3):
        assert console.login(token).status_code == 303
        console.get("/console/")
        assert console.post("/console/logout").status_code == 303
    with rt.engine.begin() as conn:
        conn.execute(console_sessions.update().values(created_at=utcnow() - timedelta(hours=12, seconds=1)))
    Console(rt).sign_in("bob", "auditor")
    with rt.engine.connect() as conn:
        assert conn.execute(select(console_sessions.c.ended_at)).scalars().all() == [None]


def test_https_pages_ask_browsers_to_keep_to_https(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "auditor")
    assert "strict-transport-security" not in console.get("/console/").headers
    answer = console.request("GET", "https://payhub.test/console/login")
    assert answer.headers["strict-transport-security"] == "max-age=31536000"


def test_a_revoked_sessions_later_requests_name_its_token_and_are_denied(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "operator")
    revoke(rt, "ann")
    for _ in range(3):
        answer = console.get("/console/approvals")
        assert answer.status_code == 303 and "ended=token" in answer.headers["location"]
    assert console.post("/console/logout").status_code == 401
    with rt.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.outcome, audit_log.c.detail).where(
            audit_log.c.action == "api.request").order_by(audit_log.c.seq.desc()).limit(4)).all()
    for outcome, detail in rows:
        assert outcome == "denied" and '"token_name":"ann"' in detail.replace(" ", ""), detail
        assert "console session token" in detail


def test_secrets_in_a_query_are_masked_in_the_audit_log(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "operator")
    console.get(f"/console/?csrf={console.csrf}&sign_in_check=abc")
    with rt.engine.connect() as conn:
        details = " ".join(conn.execute(select(audit_log.c.detail)).scalars())
    assert console.csrf not in details and "abc" not in details


@pytest.mark.parametrize("wanted", ["/console/../api/v1/openapi.json", "/console/%2e%2e/metrics",
                                    "/console/./audit", "/console/?token=phk_" + "A" * 43,
                                    "/console/?x=phk_%41%41", "//evil.example/console/", "/console\\evil"])
def test_after_sign_in_the_browser_stays_inside_the_console(rt: Any, wanted: str) -> None:
    console = Console(rt)
    answer = console.login(create(rt, "ann", "auditor"), wanted)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"


def test_signing_in_again_ends_the_browsers_previous_session(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "operator")
    old = console.cookies.get("payhub_console")
    console.sign_in("bob", "auditor")
    stale = Console(rt, console.app)
    stale.cookies.set("payhub_console", old, domain="payhub.test", path="/console")
    answer = stale.get("/console/")
    assert answer.status_code == 303 and "ended=replaced" in answer.headers["location"]


def test_a_repeated_csrf_field_is_refused(rt: Any) -> None:
    console = Console(rt)
    console.sign_in("ann", "operator")
    answer = console.request("POST", "/console/logout", content=f"csrf=bad&csrf={console.csrf}",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 403


def test_throttled_sign_in_says_when_to_try_again(make_runtime: Any) -> None:
    rt = make_runtime("[http]\nauth_failures_per_minute = 2\n")
    console = Console(rt)
    for _ in range(2):
        assert console.login("phk_" + "B" * 43).status_code == 401
    answer = console.login("phk_" + "B" * 43)
    assert answer.status_code == 429 and 1 <= int(answer.headers["retry-after"]) <= 60
