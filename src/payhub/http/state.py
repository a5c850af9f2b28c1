"""What the routes of the HTTP app share: the runtime, the daemon's worker when there is one, and request helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from payhub.http.limits import client_address
from payhub.runtime import Runtime

if TYPE_CHECKING:
    from payhub.http.auth import FailureLimiter
    from payhub.worker import Worker


@dataclass
class Face:
    """The app's state. ``worker`` is the daemon's (``payhub run``), None under ``payhub serve``."""

    rt: Runtime
    worker: Worker | None = None
    limiter: FailureLimiter = field(default=None)  # type: ignore[assignment]  # set by create_app


def face(request: Request) -> Face:
    """The :class:`Face` of the app serving ``request``."""
    found: Face = request.app.state.face
    return found


def origin(request: Request) -> str:
    """The origin the audit log records for ``request``: ``http@<client address>``."""
    return f"http@{client_address(request.scope)}"
