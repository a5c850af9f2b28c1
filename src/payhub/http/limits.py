"""Request limits applied before any route reads a body: size and read time (pure ASGI middleware).

A ``Content-Length`` above ``max_body`` is answered 413 without reading the body; a body without one (chunked) is
counted as it arrives and cut off with 413 once it passes the limit. The whole body must arrive within
``read_timeout`` seconds of the request's start, else 408: a deadline, so a client trickling bytes is cut off like a
silent one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """The body passed the limit while it was being read."""


class BodyTimeout(Exception):
    """The body did not arrive in time."""


async def _answer(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """Refuses bodies larger than ``max_body`` bytes (413) or slower than ``read_timeout`` seconds (408)."""

    def __init__(self, app: ASGIApp, max_body: int, read_timeout: float) -> None:
        self.app = app
        self.max_body = max_body
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            text = length.decode("latin-1").strip()
            if not text.isdigit() or len(text) > 15:
                await _answer(send, 400, "Content-Length is not a number")
                return
            if int(text) > self.max_body:
                await _answer(send, 413, f"body larger than {self.max_body} bytes")
                return
        deadline = time.monotonic() + self.read_timeout
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            left = deadline - time.monotonic()
            if left <= 0:
                raise BodyTimeout
            with anyio.move_on_after(left) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise BodyTimeout
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _answer(send, 413, f"body larger than {self.max_body} bytes")
        except BodyTimeout:
            if not started:
                await _answer(send, 408, f"request body not complete within {self.read_timeout:g} s")


def client_address(scope: Scope | dict[str, Any]) -> str:
    """The client's address as the server saw it (after trusted proxy headers), or ``unknown``."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
