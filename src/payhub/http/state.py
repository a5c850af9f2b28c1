"""What the routes of the HTTP app share: the runtime, the daemon's worker when there is one, and request helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from payhub.http.limits import client_address
from payhub.runtime import Runtime
from payhub.tokens import Principal

if TYPE_CHECKING:
    from payhub.http.auth import FailureLimiter
    from payhub.worker import Worker


@dataclass
class Face:
    """The app's state. ``worker`` is the daemon's (``payhub run``), None under ``payhub serve``; ``limiter``
    counts failed sign-ins per origin."""

    rt: Runtime
    worker: Worker | None
    limiter: FailureLimiter


def face(request: Request) -> Face:
    """The :class:`Face` of the app serving ``request``."""
    found: Face = request.app.state.face
    return found


def origin(request: Request) -> str:
    """The origin the audit log records for ``request``: ``http@<client address>``."""
    return f"http@{client_address(request.scope)}"


def acting(request: Request, principal: Principal) -> Runtime:
    """The app's runtime writing audit entries as ``principal`` (``token:<name>``) from the request's origin: what
    a route that changes state acts through, so each token signs its own decisions."""
    return face(request).rt.as_actor(principal.actor, origin(request))
