"""What every console page shares: who is signed in, the CSRF check of forms, rendering and the response headers.

A page's route takes ``viewer: Viewer = Depends(page("auditor"))``: without a valid session a GET is sent to the
sign-in page (303) and anything else is refused (401); a role below the one named is refused (403). An action's
route takes ``Depends(action("operator"))``, which adds the form (``viewer.form``) after checking that it carries
the session's CSRF token and that the browser says it came from this site (``Origin`` and ``Sec-Fetch-Site``).
The principal is put on ``request.state.principal``, so the request's audit entry names the token like an API call.

Templates are Jinja2 with autoescaping on for every template: CRM text is hostile. Every filter the templates use
is registered here (:data:`TEMPLATES`): ``minor`` (minor units in their currency's exact text), ``when``, ``number``
(counts), ``clip`` and ``json_text`` (hostile text bounded, control and format characters shown as escapes),
``path_part`` and ``cap_text``. Stored reasons and details are shown through :func:`opener` (sealed personal values
opened or not by role). Pages carry a strict Content Security Policy (scripts and styles only from
``/console/static``, no inline script), are not cached and cannot be framed; an error is a page with its status and
its own headers (:func:`error_page`).

:func:`render`, :func:`done` and the dependencies' session check use the database synchronously: route handlers
that call them are plain ``def`` functions (FastAPI runs those in a thread), never ``async`` ones on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payhub import __version__
from payhub.clock import isoformat, utcnow
from payhub.compliance.shown import Opener, reveals
from payhub.console import sessions
from payhub.console.sessions import ConsoleSession
from payhub.http.state import face, origin
from payhub.reports import amount_text
from payhub.termsafe import visible, visible_lines
from payhub.tokens import Principal, Role, redact

PREFIX = "/console"
STATIC = f"{PREFIX}/static"
COOKIE = "payhub_console"
MAX_FORM_FIELDS = 2000
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin")]


OWN_HEADERS = frozenset({name for name, _ in SECURITY_HEADERS} | {b"cache-control", b"strict-transport-security"})
"""Headers the console sets on every answer, replacing a route's own."""


def _minor(value: Any, currency: str) -> str:
    """The filter ``minor``: an amount in minor units as the exact decimal text of ``currency``
    (:func:`payhub.reports.amount_text`), '' for None. Only whole numbers are minor units: anything else raises
    (TypeError, or ValueError for a fraction) rather than being cut."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise ValueError(f"an amount in minor units is a whole number, not {value}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"an amount in minor units is a whole number, not a {type(value).__name__}")
    return amount_text(value, currency)


def _when(value: Any) -> str:
    """The filter ``when``: a datetime as ``YYYY-MM-DD HH:MM:SS UTC``, other values as their text, '' for None."""
    if value is None:
        return ""
    return isoformat(value)[:19].replace("T", " ") + " UTC" if isinstance(value, datetime) else str(value)


def _number(value: Any) -> str:
    """The filter ``number``: a count grouped by thousands (``12,345``), other values as their text, '' for None.
    Amounts never go through it: they are shown exactly, in their currency's minor units (filter ``minor``)."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


MAX_TEXT = 1000
"""The most characters of one value shown inline (:func:`clip`); the rest is counted, not shown."""
MAX_JSON = 10_000
"""The most characters of one JSON block (raw attributes, details, parameters) shown (:func:`json_text`)."""


def clip(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as one line of text for a page: at most ``limit`` characters (the rest counted), control and
    format characters shown as escapes (:func:`payhub.termsafe.visible`). None is ''."""
    if value is None:
        return ""
    text = isoformat(value) if isinstance(value, datetime) else str(value)  # str() of Markup is plain text
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit:,} more characters)"
    return visible(text)


def json_text(value: Any, limit: int = MAX_JSON) -> str:
    """``value`` (JSON-shaped data) as indented JSON text for a ``<pre>`` block: each text in it clipped to
    :data:`MAX_TEXT` characters and the whole to ``limit``; line feeds kept, other control and format characters
    shown as escapes. Text that is not JSON is shown as it is (clipped)."""
    if value is None:
        return ""
    text = str(value) if isinstance(value, str) else json.dumps(
        _clipped(value), ensure_ascii=False, sort_keys=True, indent=1, default=lambda v: isoformat(v) if isinstance(
            v, datetime) else str(v))
    if len(text) > limit:
        text = f"{text[:limit]}\n… ({len(text) - limit:,} more characters)"
    return visible_lines(text)


def _clipped(value: Any) -> Any:
    """JSON-shaped ``value`` with each text longer than :data:`MAX_TEXT` cut (the rest counted), so that one huge
    value does not hide the others."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else f"{value[:MAX_TEXT]}… ({len(value) - MAX_TEXT:,} more characters)"
    if isinstance(value, dict):
        return {_clipped(str(k)): _clipped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clipped(v) for v in value]
    return value


def path_part(value: Any) -> str:
    """``value`` quoted as one segment of a URL path."""
    return quote(str(value), safe="")


def cap_text(cap: Any) -> str:
    """A cap the rules applied to a reward, as one line (as ``payhub explain`` prints it)."""
    if isinstance(cap, dict) and "limit" in cap:
        return f"{cap.get('cap')}: limit {cap.get('limit')}, used {cap.get('used')}, cut {cap.get('cut')}"
    if isinstance(cap, dict):
        return f"{cap.get('cap')}: earned {cap.get('earned')}, cut {cap.get('capped')}"
    return str(cap)


TEMPLATES = Environment(loader=PackageLoader("payhub.console", "templates"), autoescape=select_autoescape(default=True),
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters.update(minor=_minor, when=_when, number=_number, clip=clip, json_text=json_text,
                         path_part=path_part, cap_text=cap_text)
TEMPLATES.globals.update(PREFIX=PREFIX, STATIC=STATIC, VERSION=__version__)


@dataclass
class Viewer:
    """The signed-in user of a request: the token's principal and session; ``form`` for an action's fields."""

    principal: Principal
    session: ConsoleSession
    form: FormData | None = None

    def field(self, name: str) -> str:
        """The form field ``name`` as text ('' when absent)."""
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else ""


def opener(conn: Connection, viewer: Viewer) -> Opener:
    """How ``viewer`` sees the sealed personal values (``pii:v1:...``) of what a page read on ``conn``: opened for
    operators and admins (``[erased]`` once the payee is erased), ``[sealed]`` for auditors, as the API shows them
    (:mod:`payhub.compliance.shown`). Every stored reason or detail a page shows goes through it."""
    return Opener(conn, reveal=reveals(viewer.principal.role))


class SignInNeeded(Exception):
    """A page was asked for without a valid session: answered by a redirect to the sign-in page."""

    def __init__(self, reason: sessions.Ended) -> None:
        self.reason = reason


def _settings(request: Request) -> Any:
    """The ``[console]`` settings of the request's app."""
    return face(request).rt.settings.console


def _session(request: Request) -> ConsoleSession | sessions.NoSession:
    """The request's valid session (from its cookie), or why there is none. Blocking: call it in a thread."""
    settings = _settings(request)
    with face(request).rt.as_actor("console", origin(request)).transaction() as tx:
        return sessions.find(tx, request.cookies.get(COOKIE), utcnow(), idle=timedelta(minutes=settings.idle_minutes),
                             max_age=timedelta(hours=settings.max_hours))


def _viewer(request: Request, role: Role) -> Viewer:
    """The :class:`Viewer` of a request whose session's role includes ``role``; else :class:`SignInNeeded` (a GET
    without a session), 401 or 403, the refusal recorded for the request's audit entry. Blocking: call it in a
    thread."""
    found = _session(request)
    if isinstance(found, sessions.NoSession):
        request.state.refusal = f"console session {found.reason.replace('_', ' ')}"
        request.state.outcome = "denied"
        if found.token_name is not None:
            request.state.audit_detail = {"token_name": found.token_name}
        if request.method in ("GET", "HEAD"):
            raise SignInNeeded(found.reason)
        raise HTTPException(401, "sign in to the console first")
    request.state.principal = found.principal
    if not found.principal.may(role):
        request.state.refusal = f"role {found.principal.role} may not do this (needs {role})"
        raise HTTPException(403, f"the {found.principal.role} role may not do this; it needs the {role} role")
    return Viewer(found.principal, found)


def page(role: Role) -> Callable[[Request], Any]:
    """A dependency for a page: the :class:`Viewer`, whose role includes ``role``."""

    async def dependency(request: Request) -> Viewer:
        return await run_in_threadpool(_viewer, request, role)

    return dependency


def same_site(request: Request) -> bool:
    """Whether the browser says the request comes from this site: ``Sec-Fetch-Site`` (when sent) is same-origin
    or none, and ``Origin`` (when sent) is this server's."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = urlsplit(str(request.base_url))
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (own.scheme, own.netloc)


def action(role: Role) -> Callable[[Request], Any]:
    """A dependency for a form post: the :class:`Viewer` with ``form``, after the CSRF checks (403 when they
    fail) and the role check."""

    async def dependency(request: Request) -> Viewer:
        viewer = await run_in_threadpool(_viewer, request, role)
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        given = form.getlist("csrf")
        csrf = given[0] if len(given) == 1 and isinstance(given[0], str) else None
        if not same_site(request) or not sessions.csrf_matches(viewer.session, csrf):
            request.state.refusal = "CSRF check failed: the form was not sent by this console"
            raise HTTPException(403, "this form was not sent by the console (CSRF check failed); reload the page "
                                     "and try again")
        viewer.form = form
        return viewer

    return dependency


def render(request: Request, template: str, viewer: Viewer | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context``, the viewer, its CSRF token and its pending notice, which is taken
    (shown once). It writes the session's row: call it from a plain ``def`` route (run in a thread), never on the
    event loop."""
    notice = None
    if viewer is not None:
        with face(request).rt.engine.begin() as conn:
            notice = sessions.take_notice(conn, viewer.session.id_hash)
    html = TEMPLATES.get_template(template).render(
        request=request, viewer=viewer, notice=notice, csrf=viewer.session.csrf if viewer else "", **context)
    return HTMLResponse(html, status_code=status_code)


def done(request: Request, viewer: Viewer, to: str, notice: str) -> RedirectResponse:
    """After an action: keep ``notice`` for the session's next page and send the browser to ``to`` (303; a path
    outside the console goes to the overview, :func:`local_path`). It writes the session's row: call it from a plain
    ``def`` route (run in a thread), never on the event loop."""
    with face(request).rt.engine.begin() as conn:
        sessions.set_notice(conn, viewer.session.id_hash, notice)
    return RedirectResponse(local_path(to), status_code=303)


def local_path(to: str | None, default: str = PREFIX + "/") -> str:
    """``to`` when it is a path inside the console, else ``default``: where a redirect may go. Refused: a scheme,
    host, backslash or control character, a ``.`` or ``..`` segment (also percent-encoded), and anything shaped like
    an API token (which must not travel in a URL)."""
    if not to or not to.startswith(PREFIX + "/") or "\\" in to or any(ord(c) < 32 for c in to):
        return default
    parts = urlsplit(to)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/") or redact(unquote(to)) != unquote(to):
        return default
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return default
    return to


def query_string(values: Mapping[str, Any]) -> str:
    """The non-empty ``values`` (None and '' left out) as a URL query, percent-encoded (for links that keep a page's
    filters; :func:`payhub.console.params.url` builds the whole link)."""
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


TEMPLATES.globals.update(query_string=query_string)


async def error_page(request: Request, status_code: int, message: str,
                     headers: Mapping[str, str] | None = None) -> Response:
    """An error answered as a page (the console's routes) with the status and the error's own ``headers`` (such as
    ``Retry-After`` or ``WWW-Authenticate``; the console's security headers still replace any of theirs). Runs the
    page in a thread: it reads the session."""
    return await run_in_threadpool(_error_page, request, status_code, message, headers or {})


def _error_page(request: Request, status_code: int, message: str, headers: Mapping[str, str]) -> Response:
    viewer = None
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        found = _session(request)
        viewer = Viewer(principal, found) if isinstance(found, ConsoleSession) else None
    answer = render(request, "error.html", viewer, status_code=status_code, message=message)
    answer.headers.update({name: value for name, value in headers.items()
                           if name.lower() not in ("content-length", "content-type")})  # the page's own
    return answer


class SecurityHeaders:
    """Adds the console's security headers to every answer under ``/console``; pages are not cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(STATIC + "/")
        https = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in OWN_HEADERS]
                headers += SECURITY_HEADERS
                if https:  # browsers that reached the console over HTTPS keep to it
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                headers.append((b"cache-control", b"public, max-age=3600" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
