"""Every API and webhook request writes an audit entry before its answer leaves (pure ASGI middleware).

The entry (action ``api.request``, subject ``api`` / the path) names the token (actor ``token:<name>``, or
``anonymous``), the origin (``http@<client address>``), what was asked (method, path, query parameters) and the
outcome: ``ok`` (status below 400), ``denied`` (401, 403, 429), ``refused`` (another 4xx) or ``error`` (5xx), with
the status and, for refusals, why. A token is never recorded. When the entry cannot be written the client gets 503
instead of its answer: nothing is served unaudited. The probes (``/healthz``, ``/readyz``, ``/metrics``) are not
audited.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payhub.http.limits import client_address
from payhub.runtime import Runtime

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_QUERY_TEXT = 2000


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    return "refused" if status < 500 else "error"


def _query(scope: Scope) -> dict[str, Any]:
    raw = scope.get("query_string", b"").decode("latin-1")
    if len(raw) > MAX_QUERY_TEXT:
        return {"query_text": raw[:MAX_QUERY_TEXT], "truncated": True}
    from urllib.parse import parse_qsl

    pairs = parse_qsl(raw, keep_blank_values=True)
    query: dict[str, Any] = {}
    for key, value in pairs:
        if key.lower() in ("token", "access_token"):  # never a secret, whatever a client puts in its URL
            value = "**********"
        query.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in query.items()}


class RequestAudit:
    """Writes the ``api.request`` entry of each request when its answer starts."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        swallowed = False

        async def audited_send(message: Message) -> None:
            nonlocal swallowed
            if swallowed:
                return
            if message["type"] == "http.response.start":
                state = scope.get("state") or {}
                if state.get("audit", True):
                    try:
                        await anyio.to_thread.run_sync(self._write, scope, state, int(message["status"]))
                    except Exception:  # noqa: BLE001 - answered 503 below
                        log.exception("the audit entry of %s %s could not be written", scope["method"], scope["path"])
                        swallowed = True
                        body = b'{"error":"the request could not be recorded in the audit log; try again"}'
                        await send({"type": "http.response.start", "status": 503,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode()),
                                                (b"retry-after", b"5")]})
                        await send({"type": "http.response.body", "body": body})
                        return
            await send(message)

        await self.app(scope, receive, audited_send)

    def _write(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        principal = state.get("principal")
        actor = principal.actor if principal is not None else state.get("actor", "anonymous")
        detail: dict[str, Any] = {"method": scope["method"], "status": status}
        query = _query(scope)
        if query:
            detail["query"] = query
        if state.get("refusal"):
            detail["reason"] = state["refusal"]
        detail.update(state.get("audit_detail") or {})
        rt = self.rt.as_actor(actor, f"http@{client_address(scope)}")
        with rt.transaction() as tx:
            tx.audit("api.request", "api", scope["path"][:600], detail, outcome=outcome_of(status))
