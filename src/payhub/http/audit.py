"""Every API, webhook and console request writes an audit entry before its answer leaves (pure ASGI middleware,
outermost).

The entry (action ``api.request``, subject ``api`` / the path) names the token (actor ``token:<name>``, or
``anonymous``), the origin (``http@<client address>``), what was asked (method, path, query parameters) and the
outcome: ``ok`` (status below 400), ``denied`` (401, 403, 429), ``refused`` (another 4xx) or ``error`` (5xx), or the
one a route set on ``request.state.outcome`` (a console redirect that refused or denied), with
the status and, for refusals, why. A token is never recorded: anything shaped like one in the path or the query is
masked (:func:`payhub.tokens.redact`), as is any query parameter named like a secret, and the Authorization header
is not recorded at all; text the database could not store is escaped (:func:`audit_text`). The token's
``last_used_at`` is written in the same transaction, at most once a minute.

When the entry cannot be written the client gets 503 instead of its answer, and the route's answer is dropped:
nothing is served unaudited. A route that raises is recorded as a 500 before the error is answered. The probes
(``/healthz``, ``/readyz``, ``/metrics``) are not audited, and neither are the throttled requests of an origin
after its first one in a minute (:mod:`payhub.http.auth`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, unquote

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payhub.clock import utcnow
from payhub.http.limits import client_address
from payhub.runtime import Runtime
from payhub.tokens import Principal, redact, touch

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
UNAUDITED_PREFIXES = ("/console/static/",)
"""The console's scripts and style sheets: the same files for everyone, not worth an entry each."""
MAX_QUERY_TEXT = 2000
MAX_PATH_TEXT = 600
SECRET_PARAMETERS = frozenset({"token", "access_token", "api_key", "apikey", "key", "secret", "password",
                               "authorization", "csrf", "sign_in_check"})
MASK = "**********"
UNRECORDED = b'{"error":"the request could not be recorded in the audit log; try again"}'


def audit_text(text: str) -> str:
    """``text`` as the audit log may hold it: tokens masked, NUL and lone surrogates (which a database text column
    refuses) written as backslash escapes. It never refuses text, unlike :func:`payhub.tokens.recordable` (which
    raises on such text, for an operator's reason)."""
    return redact(text).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def outcome_of(status: int) -> str:
    """The outcome an answer's status records when the route set none (``request.state.outcome``): ``ok`` below
    400, ``denied`` for 401, 403 and 429, ``refused`` for another 4xx, ``error`` for 5xx."""
    if status < 400:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    return "refused" if status < 500 else "error"


def _query(scope: Scope) -> dict[str, Any]:
    """The request's query parameters as recorded: tokens and secret-named values masked, a repeated one as a
    list, a query over :data:`MAX_QUERY_TEXT` characters as its (masked, cut) text."""
    raw = scope.get("query_string", b"").decode("latin-1")
    if len(raw) > MAX_QUERY_TEXT:
        return {"query_text": redact(unquote(raw))[:MAX_QUERY_TEXT], "truncated": True}
    query: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        secret = key.strip().lower().replace("-", "_") in SECRET_PARAMETERS
        query.setdefault(redact(key), []).append(MASK if secret else redact(value))
    return {k: v[0] if len(v) == 1 else v for k, v in query.items()}


class _Unrecorded(Exception):
    """The audit entry could not be written; the client was answered 503."""


class RequestAudit:
    """Writes the ``api.request`` entry of each request when its answer starts (or when its route fails)."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES or scope["path"].startswith(UNAUDITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        started = False
        unrecorded = False

        async def record(status: int) -> bool:
            """Write the entry; False (the client answered 503) when it cannot be written."""
            nonlocal unrecorded
            state = scope.get("state") or {}
            if not state.get("audit", True):
                return True
            try:
                await anyio.to_thread.run_sync(self._write, scope, state, status)
                return True
            except Exception:  # noqa: BLE001 - answered 503 below
                log.exception("the audit entry of %s %s could not be written", scope["method"],
                              audit_text(scope["path"])[:MAX_PATH_TEXT])
            unrecorded = True
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(UNRECORDED)).encode()), (b"retry-after", b"5"),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": UNRECORDED})
            return False

        async def audited_send(message: Message) -> None:
            nonlocal started
            if unrecorded:
                raise _Unrecorded
            if message["type"] == "http.response.start":
                started = True
                if not await record(int(message["status"])):
                    raise _Unrecorded
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if unrecorded:  # the route stopped because its answer could not be sent: it was answered 503
                return
            if not started:
                started = True
                if not await record(500):
                    return
            raise

    def _write(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        principal: Principal | None = state.get("principal")
        actor = principal.actor if principal is not None else state.get("actor", "anonymous")
        detail: dict[str, Any] = {"method": scope["method"], "status": status}
        query = _query(scope)
        if query:
            detail["query"] = query
        if state.get("refusal"):
            detail["reason"] = audit_text(str(state["refusal"]))
        detail.update(state.get("audit_detail") or {})
        rt = self.rt.as_actor(actor, f"http@{client_address(scope)}")
        with rt.transaction() as tx:
            if principal is not None:
                touch(tx.conn, principal, utcnow())
            tx.audit("api.request", "api", audit_text(scope["path"])[:MAX_PATH_TEXT], detail,
                     outcome=state.get("outcome") or outcome_of(status))
