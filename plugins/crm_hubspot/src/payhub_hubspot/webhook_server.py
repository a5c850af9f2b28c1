"""A small HTTP server for webhook deliveries that no client can hold or flood (stdlib ``http.server``).

It serves one path and one method, one request per connection, one thread per connection, and hands each complete
request to an application callable ``app(method, target, headers, body) -> (status, JSON object)``. The callable
never sees a request that broke these limits:

- **Whole-request deadline.** The request line, headers and body must all arrive within ``read_timeout`` seconds of
  the connection being accepted. It is a deadline, not an idle timeout: a client trickling one byte a second is cut
  off at the deadline like a silent one. A connection cut during its body gets 408; before, it is just closed.
- **Connection cap.** At most ``max_connections`` connections are served at once; one more is answered 503 (with
  ``Retry-After``) at once and closed, unread, so a flood of idle sockets costs no thread and no memory.
- **Size.** Request line and headers: at most :data:`MAX_HEADER_BYTES`. Body: ``Content-Length`` is required
  (411 without it, also for ``Transfer-Encoding: chunked``); exactly one, ASCII digits (else 400); above
  ``max_body`` the request gets 413 without its body being read. Reading stops at the announced length, so a
  lying ``Content-Length`` gets 408 (fewer bytes by the deadline) or its extra bytes are never read.
- **Routing.** Another path gets 404, another method 405, before any body is read (also for
  ``Expect: 100-continue``).

Answers are JSON with ``Connection: close``. An exception raised by ``app`` is logged and answered 500; nothing a
client sends can make the server itself log a traceback or stop serving.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["MAX_HEADER_BYTES", "App", "BoundedHTTPServer"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of request line and headers read from one connection."""

WRITE_TIMEOUT_SECONDS = 5.0
"""Longest wait to hand an answer to a client that does not read it."""

LINGER_SECONDS = 0.5
LINGER_BYTES = 64 * 1024
"""After answering a request whose body was not read, so much of it is read and dropped (at most so long) before
the connection is closed, so that the client sees the answer rather than a reset."""

App = Callable[[str, str, Sequence[tuple[str, str]], bytes], tuple[int, dict[str, Any]]]
"""``app(method, target, headers, body) -> (status, JSON answer)``; headers in arrival order, repeats kept."""

_DIGITS = re.compile(r"[0-9]+")


def _busy_answer() -> bytes:
    body = json.dumps({"error": "too many connections"}).encode()
    head = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + body


_BUSY = _busy_answer()


class _HeadersTooLarge(Exception):
    """The request line and headers went past :data:`MAX_HEADER_BYTES`."""


class _DeadlineReader(io.RawIOBase):
    """Reads a socket until a fixed deadline and at most ``budget`` bytes; past either it raises."""

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = deadline
        self.budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.budget <= 0:
            raise _HeadersTooLarge
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(remaining)
        view = memoryview(buffer).cast("B")
        count = self._sock.recv_into(view[:min(len(view), self.budget)])
        self.budget -= count
        return count


class _Handler(BaseHTTPRequestHandler):
    """One request per connection, within the server's limits; see the module docstring."""

    server: BoundedHTTPServer
    protocol_version = "HTTP/1.1"  # so that Expect: 100-continue is answered; every answer closes anyway
    server_version = "payhub-webhooks"
    sys_version = ""
    wbufsize = 1 << 16  # one write per answer (headers and body), flushed by finish()

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._reader = _DeadlineReader(self.connection, time.monotonic() + self.server.read_timeout,
                                       MAX_HEADER_BYTES)
        self.rfile = io.BufferedReader(self._reader, 8192)
        self._answered = False
        self._in_body = False
        self._body_read = False
        self.requestline = self.command = ""
        self.request_version = "HTTP/1.0"  # never answer in HTTP/0.9 (a bare body without status line)

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.raw_requestline or not self.parse_request():
                return  # nothing sent, or parse_request has answered (400, 431, 505 ...)
            if self.request_version == "HTTP/0.9":
                self.request_version = "HTTP/1.0"
            self._serve()
        except TimeoutError:
            self.server.count("timed_out")
            log.debug("webhook connection from %s closed: request not complete in %.1f s", self.client_address[0],
                      self.server.read_timeout)
            if self._in_body:
                self._answer(408, {"error": "request not complete in time"})
        except _HeadersTooLarge:
            log.debug("webhook connection from %s closed: headers over %d bytes", self.client_address[0],
                      MAX_HEADER_BYTES)
            self._answer(431, {"error": f"request headers over {MAX_HEADER_BYTES} bytes"})
        except OSError as exc:  # the client went away, or reset the connection
            log.debug("webhook connection from %s: %s", self.client_address[0], exc.__class__.__name__)
        if self._answered and not self._body_read:
            self._linger()

    def _linger(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_WR)
            end = min(time.monotonic() + LINGER_SECONDS, self._reader.deadline)
            drained = 0
            while drained < LINGER_BYTES and (left := end - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.connection.recv(8192)
                if not chunk:
                    return
                drained += len(chunk)
        except OSError:
            pass

    def handle_expect_100(self) -> bool:
        refusal = self._refusal()
        if refusal is not None:
            self._answer(*refusal)
            return False
        super().handle_expect_100()
        self.wfile.flush()
        return True

    def _refusal(self) -> tuple[int, dict[str, Any]] | None:
        """The answer to a request that must not be read further, or None (``self._length`` is then set)."""
        if self.path.partition("?")[0] != self.server.path:
            return 404, {"error": "not found"}
        if self.command != "POST":
            return 405, {"error": "POST only"}
        if self.headers.defects:
            return 400, {"error": "malformed header section"}
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = [value.strip(" \t") for value in self.headers.get_all("Content-Length") or []]
        if encodings and lengths:
            return 400, {"error": "both Transfer-Encoding and Content-Length"}
        if encodings or not lengths:
            return 411, {"error": "Content-Length required (no chunked bodies)"}
        if len(lengths) > 1 or not _DIGITS.fullmatch(lengths[0]):
            return 400, {"error": "one Content-Length of ASCII digits required"}
        if len(lengths[0]) > 12 or int(lengths[0]) > self.server.max_body:
            return 413, {"error": f"body larger than {self.server.max_body} bytes"}
        self._length = int(lengths[0])
        return None

    def _serve(self) -> None:
        refusal = self._refusal()
        if refusal is not None:
            self._answer(*refusal)
            return
        self._in_body = True
        self._reader.budget = self._length
        body = self.rfile.read(self._length)
        self._in_body = False
        self._body_read = True
        if len(body) < self._length:
            self._answer(400, {"error": "body shorter than Content-Length"})
            return
        try:
            status, answer = self.server.app(self.command, self.path, tuple(self.headers.items()), body)
        except Exception:
            log.exception("webhook request failed")
            status, answer = 500, {"error": "internal error"}
        self._answer(status, answer)

    def _answer(self, status: int, answer: dict[str, Any]) -> None:
        if self._answered:
            return
        self._answered = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        payload = json.dumps(answer).encode()
        try:
            self.connection.settimeout(WRITE_TIMEOUT_SECONDS)
            self.send_response(status)
            if status == 405:
                self.send_header("Allow", "POST")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError as exc:
            log.debug("webhook answer to %s not sent: %s", self.client_address[0], exc.__class__.__name__)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, too many headers ...) as short JSON answers."""
        self.close_connection = True
        self._answer(code, {"error": self.responses.get(code, ("error",))[0]})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("webhook server: %r", format % args)


class BoundedHTTPServer(ThreadingHTTPServer):
    """Serves ``app`` on ``path`` within a whole-request deadline, a connection cap and a body limit.

    Counters (for tests and metrics): ``active`` connections now, ``refused`` over the cap, ``timed_out``.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, *, path: str, max_body: int, read_timeout: float,
                 max_connections: int) -> None:
        self.app = app
        self.path = path
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.active = 0
        self.refused = 0
        self.timed_out = 0
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = self.active < self.max_connections
            if admitted:
                self.active += 1
            else:
                self.refused += 1
        if not admitted:
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("webhook connection from %s failed", client_address[0] if client_address else "?")
