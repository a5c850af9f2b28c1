"""Request limits applied before any route reads a body: size and read time (pure ASGI middleware).

A ``Content-Length`` above ``max_body`` is answered 413 without reading the body; one that is not a plain decimal
number, two that differ, or one beside ``Transfer-Encoding`` is answered 400 (a body whose length two readers could
disagree on). A body without one (chunked) is counted as it arrives and cut off with 413 once it passes the limit.
The whole body must arrive within ``read_timeout`` seconds of the request's start, else 408: a deadline, so a client
trickling bytes is cut off like a silent one. Once the body is complete nothing is timed any more (a streamed answer
may take as long as it needs). These answers close the connection.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_LENGTH_DIGITS = 15


class BodyTooLarge(Exception):
    """The body passed the limit while it was being read."""


class BodyTimeout(Exception):
    """The body did not arrive in time."""


async def answer_json(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None | str:
    """The body length the headers declare: a number, None when they declare none, or why they cannot be trusted."""
    lengths = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if not lengths:
        return None
    if len(lengths) > 1:
        return "conflicting Content-Length headers"
    if any(name.lower() == b"transfer-encoding" for name, _ in headers):
        return "Content-Length with Transfer-Encoding"
    text = lengths.pop()
    if not (text.isdigit() and text.isascii()) or len(text) > MAX_LENGTH_DIGITS:  # bytes: ASCII digits only
        return "Content-Length is not a number"
    return int(text)


class RequestLimits:
    """Refuses bodies larger than ``max_body`` bytes (413) or slower than ``read_timeout`` seconds (408), and
    Content-Length headers that are not one plain number (400)."""

    def __init__(self, app: ASGIApp, max_body: int, read_timeout: float) -> None:
        self.app = app
        self.max_body = max_body
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(list(scope.get("headers") or []))
        if isinstance(length, str):
            await answer_json(send, 400, length)
            return
        if length is not None and length > self.max_body:
            await answer_json(send, 413, f"body larger than {self.max_body} bytes")
            return
        deadline = time.monotonic() + self.read_timeout
        received = 0
        complete = False
        cut: tuple[int, str] | None = None  # the answer owed once the body was cut off
        started = False

        async def limited_receive() -> Message:
            nonlocal received, complete, cut
            if complete:
                return await receive()
            message: Message | None = None
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                message = await receive()
            if message is None:
                cut = (408, f"request body not complete within {self.read_timeout:g} s")
                raise BodyTimeout
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    cut = (413, f"body larger than {self.max_body} bytes")
                    raise BodyTooLarge
                complete = not message.get("more_body", False)
            else:
                complete = True  # disconnected
            return message

        async def limited_send(message: Message) -> None:
            nonlocal started
            if cut is not None:  # the app answered the cut-off body itself (FastAPI turns it into 400): ours wins
                if not started:
                    started = True
                    await answer_json(send, *cut)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, limited_send)
        except (BodyTooLarge, BodyTimeout):
            pass
        except Exception:
            if cut is None:
                raise
        if cut is not None and not started:
            await answer_json(send, *cut)


def client_address(scope: Scope | dict[str, Any]) -> str:
    """The client's address as the server saw it (after a trusted proxy's ``X-Forwarded-For``): an IP address,
    ``unknown`` when there is none, or ``invalid`` when a proxy passed on something that is not one."""
    client = scope.get("client")
    if not client:
        return "unknown"
    try:
        return str(ipaddress.ip_address(str(client[0])))
    except ValueError:
        return "invalid"


class InFlightLimit:
    """At most ``limit`` requests in flight; one more is answered 503 with ``Retry-After`` at once. Open
    connections that are not sending a request do not count (the server closes them after their header deadline),
    and ``/healthz`` is always answered, so a busy daemon is not taken for a dead one."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            body = json.dumps({"error": "too many requests in flight; try again"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class DatabaseFilePresent:
    """On SQLite, a request is answered 503 (nothing read, written or audited) while the database file is not at
    its path: deleted or moved while payhub runs, its writes would go to a file nobody will open again, and a new
    connection would create an empty one. The probes still answer (``/readyz`` says what is wrong)."""

    def __init__(self, app: ASGIApp, path: str, probes: frozenset[str]) -> None:
        self.app = app
        self.path = path
        self.probes = probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in self.probes and not os.path.exists(self.path):
            await answer_json(send, 503, "the database file is missing; payhub needs an operator")
            return
        await self.app(scope, receive, send)
