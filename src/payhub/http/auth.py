"""Who may call the API: bearer tokens (:mod:`payhub.tokens`) checked per request, and failed attempts limited.

``Depends(require("operator"))`` on a route (or a router) answers 401 with ``WWW-Authenticate: Bearer`` without a
valid token (none, not one ``Authorization: Bearer <token>`` header, unknown, revoked, expired) and 403 when the
token's role does not include the one asked for. The principal is kept on ``request.state.principal`` for the audit
entry of the request (:mod:`payhub.http.audit`), and the refusal's reason on ``request.state.refusal``. The
OpenAPI document describes the scheme (HTTP bearer) on every route that requires it.

An origin with ``http.auth_failures_per_minute`` failed attempts in the last minute gets 429 (with ``Retry-After``)
without its token being looked at, until its oldest failure is a minute old; only its first throttled request in a
minute is audited, so a flood cannot flood the audit log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from functools import cache
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from payhub.http.limits import client_address
from payhub.http.state import face
from payhub.tokens import Principal, Refused, Role, authenticate

WINDOW_SECONDS = 60.0
MAX_ORIGINS = 100_000  # origins remembered at once; the least recently failing is forgotten first
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="payhub"'}

BEARER = HTTPBearer(scheme_name="bearer", bearerFormat="phk_<43 characters>", auto_error=False,
                    description="An API token made by `payhub tokens create` or `POST /api/v1/tokens`, sent as "
                                "`Authorization: Bearer <token>`.")


class FailureLimiter:
    """Failed sign-ins per origin over the last minute. Thread-safe, bounded in memory."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._throttled_noted: dict[str, float] = {}
        self._lock = threading.Lock()

    def _recent(self, origin: str, now: float) -> deque[float]:
        times = self._failures.get(origin)
        if times is None:
            return deque()
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if not times:
            del self._failures[origin]
        return times

    def retry_after(self, origin: str) -> float | None:
        """Seconds until ``origin`` may try again, or None when it is not throttled."""
        with self._lock:
            now = self.clock()
            times = self._recent(origin, now)
            if len(times) < self.per_minute:
                return None
            return max(1.0, times[0] + WINDOW_SECONDS - now)

    def failed(self, origin: str) -> None:
        """Count a failed sign-in of ``origin`` now."""
        with self._lock:
            now = self.clock()
            times = self._recent(origin, now)
            self._failures.pop(origin, None)  # re-inserted last: the dict is ordered by latest failure
            if len(self._failures) >= MAX_ORIGINS:
                del self._failures[next(iter(self._failures))]
            times.append(now)
            self._failures[origin] = times

    def first_throttled(self, origin: str) -> bool:
        """Whether this is the first throttled request of ``origin`` in the current minute (it is audited)."""
        with self._lock:
            now = self.clock()
            noted = self._throttled_noted.get(origin)
            if noted is not None and noted > now - WINDOW_SECONDS:
                return False
            if len(self._throttled_noted) >= MAX_ORIGINS:
                self._throttled_noted.clear()
            self._throttled_noted[origin] = now
            return True


def presented_token(request: Request) -> str | Refused:
    """The token of the request's one ``Authorization: Bearer <token>`` header, or why there is none usable."""
    values = request.headers.getlist("authorization")
    if not values:
        return Refused("missing")
    if len(values) > 1:
        return Refused("malformed")
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return Refused("malformed")
    return token


_MESSAGES = {"missing": "a bearer token is required (Authorization: Bearer <token>)",
             "malformed": "the Authorization header is not one 'Bearer <token>'"}


@cache
def require(role: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: the request's :class:`~payhub.tokens.Principal`, whose role includes ``role``."""

    def dependency(request: Request,
                   _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]) -> Principal:
        state = face(request)
        where = client_address(request.scope)
        wait = state.limiter.retry_after(where)
        if wait is not None:
            request.state.refusal = "too many failed sign-ins"
            request.state.audit = state.limiter.first_throttled(where)
            raise HTTPException(429, "too many failed sign-ins from this address; try again later",
                                headers={"Retry-After": str(int(wait + 0.999))})
        presented = presented_token(request)
        if isinstance(presented, Refused):
            found: Principal | Refused = presented
        else:
            with state.rt.engine.connect() as conn:
                found = authenticate(conn, presented)
        if isinstance(found, Refused):
            state.limiter.failed(where)
            request.state.refusal = f"token {found.reason}"
            if found.name is not None:
                request.state.audit_detail = {"token_name": found.name}
            raise HTTPException(401, _MESSAGES.get(found.reason, f"the token is {found.reason}"), headers=CHALLENGE)
        request.state.principal = found
        if not found.may(role):
            request.state.refusal = f"role {found.role} may not do this (needs {role})"
            raise HTTPException(403, f"the {found.role} role may not do this; it needs the {role} role")
        return found

    return dependency
