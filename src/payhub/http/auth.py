"""Who may call the API: bearer tokens (:mod:`payhub.tokens`) checked per request, and failed attempts limited.

``Depends(require("operator"))`` on a route answers 401 without a valid token and 403 when the token's role does
not include the one asked for; the principal is kept on ``request.state.principal`` for the audit entry of the
request (:mod:`payhub.http.audit`). An origin with more than ``http.auth_failures_per_minute`` failed attempts in
the last minute gets 429 (with ``Retry-After``) without its token being looked at; only its first throttled request
in a minute is audited, so a flood cannot flood the audit log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from fastapi import HTTPException, Request

from payhub.http.limits import client_address
from payhub.http.state import face
from payhub.tokens import Principal, Role, authenticate

WINDOW_SECONDS = 60.0
MAX_ORIGINS = 100_000  # origins remembered at once; the least recently failing is forgotten first


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
        with self._lock:
            now = self.clock()
            times = self._recent(origin, now)
            if origin not in self._failures:
                if len(self._failures) >= MAX_ORIGINS:
                    del self._failures[next(iter(self._failures))]
                self._failures[origin] = times
            self._failures[origin].append(now)

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


def _bearer(request: Request) -> str | None:
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require(role: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the request's :class:`~payhub.tokens.Principal`, whose role includes ``role``."""

    def dependency(request: Request) -> Principal:
        state = face(request)
        where = client_address(request.scope)
        wait = state.limiter.retry_after(where)
        if wait is not None:
            request.state.refusal = "too many failed sign-ins"
            request.state.audit = state.limiter.first_throttled(where)
            raise HTTPException(429, "too many failed sign-ins from this address; try again later",
                                headers={"Retry-After": str(int(wait + 0.999))})
        token = _bearer(request)
        if token is None:
            found: Principal | str = "missing"
        else:
            with state.rt.engine.connect() as conn:
                found = authenticate(conn, token)
        if isinstance(found, str):
            state.limiter.failed(where)
            request.state.refusal = f"token {found}"
            raise HTTPException(401, "a valid bearer token is required" if found == "missing"
                                else f"the token is {found}", headers={"WWW-Authenticate": 'Bearer realm="payhub"'})
        request.state.principal = found
        if not found.may(role):
            request.state.refusal = f"role {found.role} may not do this (needs {role})"
            raise HTTPException(403, f"the {found.role} role may not do this; it needs the {role} role")
        return found

    return dependency
