"""Signing in and out: ``GET/POST /console/login`` with an API token, ``POST /console/logout``.

A good token opens a session (:mod:`payhub.console.sessions`) whose id goes into an HttpOnly, SameSite=Strict cookie
scoped to ``/console`` (Secure per ``console.secure_cookie``); the token itself is neither kept nor recorded. Failed
sign-ins count against the origin like failed API calls (429 past ``http.auth_failures_per_minute``).

The sign-in form is protected against cross-site posts (which would sign a victim into an attacker's session) twice:
the browser's ``Origin``/``Sec-Fetch-Site`` must name this site, and the form must carry the random value the sign-in
page put into a cookie of its own (double submit), which another site can neither read nor set.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from payhub.clock import utcnow
from payhub.console import sessions
from payhub.console.web import COOKIE, PREFIX, Viewer, action, local_path, render, same_site
from payhub.http.limits import client_address
from payhub.http.state import face, origin
from payhub.tokens import Principal, authenticate

router = APIRouter(prefix=PREFIX, include_in_schema=False)

REASONS = {"idle": "Your session ended after a time without use; sign in again.",
           "too_old": "Your session reached its maximum age; sign in again.",
           "token": "The token of your session was revoked or has expired.",
           "signed_out": "You signed out.", "unknown": "Sign in to continue.",
           "replaced": "You signed in again in this browser, which ended this session."}
MAX_TOKEN_TEXT = 200
LOGIN_COOKIE = "payhub_sign_in"


@router.get("/login")
def login_page(request: Request, next: str = "", ended: str = "") -> Response:  # noqa: A002 - the query's name
    return _form(request, 200, local_path(next), REASONS.get(ended, ""))


def _form(request: Request, status: int, next_path: str, message: str) -> Response:
    """The sign-in page, with a new double-submit value in its form and in its cookie."""
    value = secrets.token_urlsafe(24)
    answer = render(request, "login.html", None, status_code=status, next=next_path, message=message,
                    sign_in_check=value)
    answer.set_cookie(LOGIN_COOKIE, value, path=f"{PREFIX}/login", httponly=True, samesite="strict",
                      secure=_secure(request))
    return answer


def _secure(request: Request) -> bool:
    mode = face(request).rt.settings.console.secure_cookie
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def _sign_in(request: Request, presented: str) -> tuple[str, Principal] | str:
    """The new session's id and principal, or the message for the sign-in page."""
    state = face(request)
    where = client_address(request.scope)
    wait = state.limiter.retry_after(where)
    if wait is not None:
        request.state.refusal = "too many failed sign-ins"
        request.state.audit = state.limiter.first_throttled(where)
        return f"Too many failed sign-ins from this address; try again in {int(wait + 0.999)} seconds."
    with state.rt.as_actor("console", origin(request)).transaction() as tx:
        found = authenticate(tx.conn, presented.strip())
        if isinstance(found, Principal):
            settings, now = state.rt.settings.console, utcnow()
            max_age = timedelta(hours=settings.max_hours)
            idle = timedelta(minutes=settings.idle_minutes)
            previous = sessions.find(tx, request.cookies.get(COOKIE), now, idle=idle, max_age=max_age)
            if isinstance(previous, sessions.ConsoleSession):  # one session per browser: the old one ends
                sessions.sign_out(tx, previous, now, "replaced")
            session_id, _session = sessions.start(tx, found, now, max_age)
            request.state.principal = found
            return session_id, found
    state.limiter.failed(where)
    request.state.refusal = f"token {found.reason}"
    if found.name is not None:
        request.state.audit_detail = {"token_name": found.name}
    return "That token is not valid: it is unknown, revoked or expired." if found.reason != "malformed" \
        else "That is not an API token (they start with phk_)."


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    token = form.get("token")
    next_path = local_path(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    check, expected = form.get("sign_in_check"), request.cookies.get(LOGIN_COOKIE)
    if not same_site(request) or not isinstance(check, str) or not expected \
            or not hmac.compare_digest(check.encode("utf-8", "replace"), expected.encode("utf-8", "replace")):
        request.state.refusal = "sign-in form not sent from the console's own sign-in page"
        return await run_in_threadpool(_form, request, 403, next_path,
                                       "This sign-in was not sent from the console's own page; try again here.")
    if not isinstance(token, str) or not token.strip() or len(token) > MAX_TOKEN_TEXT:
        request.state.refusal = "no token given"
        return await run_in_threadpool(_form, request, 400, next_path, "Paste an API token.")
    outcome = await run_in_threadpool(_sign_in, request, token)
    if isinstance(outcome, str):
        status = 429 if outcome.startswith("Too many") else 401
        answer = await run_in_threadpool(_form, request, status, next_path, outcome)
        wait = face(request).limiter.retry_after(client_address(request.scope)) if status == 429 else None
        if wait is not None:
            answer.headers["Retry-After"] = str(int(wait + 0.999))
        return answer
    session_id, _principal = outcome
    answer = RedirectResponse(next_path, status_code=303)
    answer.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login", httponly=True, samesite="strict",
                         secure=_secure(request))
    answer.set_cookie(COOKIE, session_id, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request))
    return answer


@router.post("/logout")
def logout(request: Request, viewer: Annotated[Viewer, Depends(action("auditor"))]) -> Response:
    with face(request).rt.as_actor("console", origin(request)).transaction() as tx:
        sessions.sign_out(tx, viewer.session, utcnow())
    answer = RedirectResponse(f"{PREFIX}/login?ended=signed_out", status_code=303)
    answer.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request))
    return answer
