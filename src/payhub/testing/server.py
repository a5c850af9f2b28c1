"""A threaded HTTP server on 127.0.0.1 that misbehaves on demand: the base of the kit's fault-injecting provider and
of the vendor simulators (the ``payhub-simulators`` distribution).

A :class:`FaultServer` routes requests to handlers (``route(method, path_regex, handler)``), logs every request with
the status it was answered (:attr:`FaultServer.requests`), and applies a *fault plan*: each planned
:class:`ServerFault` is applied to the next request(s) that match it (method, path prefix, predicate), in the order
planned. What a fault can do to a request:

================  ===================================================================================================
``delay``         wait ``seconds`` (less if the server stops), then handle and answer as usual
``hang``          block until :meth:`FaultServer.release` (or the server stops), then handle and answer
``drop``          close the connection without handling the request or answering it (nothing happened)
``status``        answer ``status`` (with ``Retry-After`` when ``retry_after`` is set) without handling the request
``duplicate``     deliver the request to its handler twice (as a resending proxy would); the second answer is sent
``lost_answer``   handle the request, then close the connection without answering (it happened; nobody was told)
``stall``         handle the request, then wait ``seconds`` (or, without them, until released; either way no longer
                  than until the server stops) before answering, so that a client with a shorter timeout gives up
``handler``       change nothing here: the handler reads :attr:`Request.fault` and misbehaves in its own terms
================  ===================================================================================================

:meth:`ServerFault.of` translates the kit's fault vocabulary (:data:`payhub.testing.faults.Fault`) into these terms.
Handlers always see the fault applied to their request in :attr:`Request.fault` (its ``label`` names the vocabulary
word, if any), so a simulator can add what only it knows (a rejected payee, a stray result).

Example::

    with FaultServer() as server:
        server.route("POST", "/payments", lambda request: Response.json({"id": 1}, status=201))
        server.plan(ServerFault.of("timeout_after_accept", method="POST", path="/payments"))
        ...  # the client's first POST /payments is handled, and its answer lost
        assert server.requests[0].outcome == "lost_answer"
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from payhub.testing.faults import Fault

__all__ = ["FaultServer", "Handler", "Outcome", "Request", "Response", "ServerAction", "ServerFault"]

log = logging.getLogger(__name__)

ServerAction = Literal["delay", "hang", "drop", "status", "duplicate", "lost_answer", "stall", "handler"]
"""What a planned fault does to a request (see the module docstring)."""

Outcome = Literal["answered", "dropped", "lost_answer", "client_gone"]
"""What became of a request: answered, dropped unhandled, handled but unanswered, or answered to a client that had
already gone (its timeout expired first)."""

_VOCABULARY: dict[Fault, tuple[ServerAction, int]] = {
    "retryable": ("status", 503),
    "permanent": ("status", 400),
    "reject": ("handler", 0),
    "timeout_after_accept": ("lost_answer", 0),
    "timeout_before_accept": ("drop", 0),
    "duplicate": ("duplicate", 0),
    "hang": ("hang", 0),
    "lookup_fails": ("status", 503),
}


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, headers and body bytes. ``content_type`` is sent unless ``headers`` has its own."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None, *,
             dumps: Callable[[Any], str] = json.dumps, content_type: str = "application/json") -> Response:
        """A JSON answer; ``dumps`` writes the text (pass an exact-decimal encoder for money)."""
        return cls(status, dumps(payload).encode("utf-8"), dict(headers or {}), content_type)


@dataclass(slots=True)
class Request:
    """One request as the server received it, and (once answered) what became of it.

    ``params`` holds the named groups of the route's path pattern; ``fault`` is the planned fault applied to this
    request, if any; ``delivery`` is 2 for the second delivery of a ``duplicate``. A handler may set ``note`` to say
    what it did (for the test's reader).
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: datetime
    params: dict[str, str] = field(default_factory=dict)
    fault: ServerFault | None = None
    delivery: int = 1
    status: int | None = None
    outcome: Outcome | None = None
    note: str = ""

    def header(self, name: str, default: str = "") -> str:
        """A header's value, whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), default)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not); ``kwargs`` go to :func:`json.loads`."""
        return json.loads(self.body, **kwargs)

    def form(self) -> dict[str, str]:
        """The body parsed as a form (``application/x-www-form-urlencoded``), first value of each field."""
        return {k: v[0] for k, v in parse_qs(self.text(), keep_blank_values=True).items()}


Handler = Callable[[Request], Response]
"""A route's handler: a request in, an answer out. An exception becomes a 500 answer (and is logged)."""


@dataclass(slots=True)
class ServerFault:
    """A planned fault and the requests it applies to.

    It matches a request whose method is ``method`` (any when None), whose path starts with ``path`` (any when None)
    and for which ``when`` (if given) is true. The first ``skip`` matching requests pass untouched; the next ``times``
    get the fault; then it is spent. With ``every=N`` it is never spent and applies to every Nth matching request.
    ``body`` is the answer of a ``status`` fault (JSON ``{"error": ...}`` when None).
    """

    action: ServerAction
    status: int = 503
    seconds: float | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Response | None = None
    method: str | None = None
    path: str | None = None
    when: Callable[[Request], bool] | None = None
    times: int = 1
    skip: int = 0
    every: int | None = None
    label: str = ""
    _seen: int = 0

    def __post_init__(self) -> None:
        if self.action not in get_args(ServerAction):
            raise ValueError(f"unknown server fault action {self.action!r}")
        if self.action == "delay" and self.seconds is None:
            raise ValueError("a delay needs seconds")
        if self.times < 1 or self.skip < 0 or (self.every is not None and self.every < 1):
            raise ValueError("times and every are at least 1, skip at least 0")
        if not self.label:
            self.label = self.action

    @classmethod
    def of(cls, fault: Fault, **match: Any) -> ServerFault:
        """The server's form of a word of the kit's fault vocabulary (``match``: method, path, when, times...).

        retryable and lookup_fails answer 503, permanent 400; timeout_before_accept drops the connection unhandled,
        timeout_after_accept handles and loses the answer; hang and duplicate are the actions of the same names;
        reject is left to the handler. The ``label`` is the vocabulary word.
        """
        if fault not in _VOCABULARY:
            raise ValueError(f"unknown fault {fault!r}")
        action, status = _VOCABULARY[fault]
        return cls(action, status=status or 503, label=fault, **match)

    def _matches(self, request: Request) -> bool:
        return ((self.method is None or self.method.upper() == request.method)
                and (self.path is None or request.path.startswith(self.path))
                and (self.when is None or self.when(request)))

    def _consume(self) -> tuple[bool, bool]:
        """(applies to this matching request, spent afterwards)."""
        self._seen += 1
        if self.every is not None:
            return self._seen % self.every == 0, False
        if self._seen <= self.skip:
            return False, False
        return True, self._seen >= self.skip + self.times


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class FaultServer:
    """A loopback HTTP/1.1 server in background threads; ``with FaultServer() as server:`` starts and stops it.

    Thread-safe: tests plan faults and read the log while requests are being served. Nothing of a request outlives
    :meth:`stop`: it waits for the requests being handled, so no handler runs (or logs) after the test that owned
    the server has ended.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, name: str = "fault-server",
                 hang_limit: float = 60.0, stop_timeout: float = 10.0) -> None:
        """Bind ``host:port`` (a free port when 0). A hang or an open-ended stall ends after ``hang_limit`` seconds
        even if never released, so a forgotten release cannot block a test run. :meth:`stop` waits up to
        ``stop_timeout`` seconds for the requests being handled (a handler that sleeps, say) to end."""
        self.name = name
        self.hang_limit = hang_limit
        self.stop_timeout = stop_timeout
        self._routes: list[_Route] = []
        self._plan: list[ServerFault] = []
        self._log: list[Request] = []
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)
        self._generation = 0
        self._waiting = 0
        self._stopped = False
        self._abandoned = False  # stop() returned while a handler still ran: it no longer logs what it raises
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        return f"http://{self._httpd.server_address[0]!s}:{self.port}"

    def start(self) -> FaultServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release whatever hangs, close the socket, and wait (up to ``stop_timeout`` seconds) for the
        requests being handled to end. Idempotent. From then on, a hang, a stall or a delay does not wait, and a
        request arriving on a connection kept open is dropped unhandled (the connections are closed).

        A request still being handled after ``stop_timeout`` is named in a warning; what its handler raises later is
        logged at debug level without its traceback (it would land in whatever test runs by then)."""
        with self._released:
            self._stopped = True
        self.release()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()
        running = self._httpd.finish(self.stop_timeout)
        if running:
            with self._lock:
                self._abandoned = True
            log.warning("%s: stopped with %d request(s) still being handled after %g s: %s", self.name,
                        len(running), self.stop_timeout, ", ".join(t.name for t in running))

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------------- routes

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Send requests for ``method`` (``"*"``: any) and a path matching the regular expression ``path`` (whole
        path, query excluded) to ``handler``. Routes are tried in the order added; none matching answers 404."""
        with self._lock:
            self._routes.append(_Route(method.upper(), re.compile(path), handler))

    # ---------------------------------------------------------------------------------------------- faults

    def plan(self, *faults: ServerFault | Fault, **match: Any) -> None:
        """Queue faults (or words of the kit's vocabulary, with ``match`` applied to each: method, path...)."""
        planned = [f if isinstance(f, ServerFault) else ServerFault.of(f, **match) for f in faults]
        with self._lock:
            self._plan.extend(planned)

    def clear_plan(self) -> None:
        with self._lock:
            self._plan.clear()

    @property
    def planned(self) -> list[ServerFault]:
        """The faults not yet spent, in plan order."""
        with self._lock:
            return list(self._plan)

    def release(self) -> None:
        """Let every request that hangs (or stalls without a time) now go on; later ones hang again."""
        with self._released:
            self._generation += 1
            self._released.notify_all()

    def wait_hanging(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` requests hang (or stall until released); False if they do not within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._released:
            while self._waiting < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._released.wait(left)
            return True

    # ---------------------------------------------------------------------------------------------- the log

    @property
    def requests(self) -> list[Request]:
        """Every request received, oldest first (each with its status and outcome once answered)."""
        with self._lock:
            return list(self._log)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The requests with this method and (exactly) this path."""
        with self._lock:
            return [r for r in self._log if (method is None or r.method == method.upper())
                    and (path is None or r.path == path)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # ---------------------------------------------------------------------------------------------- serving

    def _take(self, request: Request) -> ServerFault | None:
        with self._lock:
            for fault in list(self._plan):
                if not fault._matches(request):
                    continue
                applies, spent = fault._consume()
                if spent:
                    self._plan.remove(fault)
                if applies:
                    return fault
        return None

    def wait_stopped(self, timeout: float) -> bool:
        """Wait until the server stops, at most ``timeout`` seconds; True if it has stopped. A handler that takes its
        time (a simulated latency, an answer held until the client gives up) waits with this, so that :meth:`stop`
        need not wait for it."""
        deadline = time.monotonic() + timeout
        with self._released:
            while not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._released.wait(left)
            return True

    def _late(self) -> bool:
        """True once :meth:`stop` has returned without waiting for every handler."""
        with self._lock:
            return self._abandoned

    def _wait_release(self, limit: float | None) -> None:
        with self._released:
            if self._stopped:
                return
            generation = self._generation
            self._waiting += 1
            self._released.notify_all()
            try:
                deadline = time.monotonic() + (self.hang_limit if limit is None else limit)
                while self._generation == generation:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._released.wait(left)
            finally:
                self._waiting -= 1

    def _dispatch(self, request: Request) -> Response:
        with self._lock:
            routes = list(self._routes)
        allowed = False
        for route in routes:
            found = route.pattern.fullmatch(request.path)
            if found is None:
                continue
            if route.method not in ("*", request.method):
                allowed = True
                continue
            request.params = {k: v for k, v in found.groupdict().items() if v is not None}
            try:
                return route.handler(request)
            except Exception as exc:
                if self._late():
                    log.debug("%s: the handler of %s %s raised after the server stopped: %r", self.name,
                              request.method, request.path, exc)
                else:
                    log.exception("%s: the handler of %s %s raised", self.name, request.method, request.path)
                return Response.json({"error": "internal error (the simulated server's handler raised)"}, 500)
        if allowed:
            return Response.json({"error": f"method {request.method} not allowed on {request.path}"}, 405)
        return Response.json({"error": f"no route for {request.method} {request.path}"}, 404)

    def _serve(self, request: Request, answer: Callable[[Response], bool], drop: Callable[[], None]) -> None:
        """Apply the plan to one request, handle it, and answer (or not); once stopped, drop it unhandled."""
        with self._lock:
            self._log.append(request)
            stopped = self._stopped
        if stopped:
            request.outcome = "dropped"
            drop()
            return
        fault = request.fault = self._take(request)
        action = fault.action if fault else None
        if fault is not None and action == "delay":
            self.wait_stopped(fault.seconds or 0.0)
        elif action == "hang":
            self._wait_release(None)
        if fault is not None and action == "drop":
            request.outcome = "dropped"
            drop()
            return
        if fault is not None and action == "status":
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers.setdefault("Retry-After", f"{fault.retry_after:g}")
            body = fault.body or Response.json({"error": f"simulated {fault.label} ({fault.status})"})
            response = replace(body, status=fault.status, headers={**body.headers, **headers})
        else:
            response = self._dispatch(request)
            if action == "duplicate":
                again = replace(request, delivery=2)
                response = self._dispatch(again)
                request.note = again.note or request.note
        if fault is not None and action == "lost_answer":
            request.status, request.outcome = response.status, "lost_answer"
            drop()
            return
        if fault is not None and action == "stall":
            if fault.seconds is None:
                self._wait_release(None)
            else:
                self.wait_stopped(fault.seconds)
        request.status, request.outcome = response.status, "answered"  # set before the client can read it
        if not answer(response):
            request.outcome = "client_gone"


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, each known until it ends: :meth:`finish` closes the connections for reading and
    waits for their threads (``block_on_close`` would wait without a bound, and not for daemon threads)."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: FaultServer) -> None:
        self.owner = owner
        self._connections: dict[threading.Thread, socket.socket | None] = {}  # None once closed
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._connection, args=(request, client_address),
                                  name=f"{self.owner.name} {client_address[0]}:{client_address[1]}", daemon=True)
        with self._connections_lock:
            self._connections[thread] = request
        try:
            thread.start()
        except BaseException:
            with self._connections_lock:
                del self._connections[thread]
            raise

    def _connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:  # not to be shut down by finish() once closed (its descriptor may be reused)
            if threading.current_thread() in self._connections:
                self._connections[threading.current_thread()] = None
        super().shutdown_request(request)

    def finish(self, timeout: float) -> list[threading.Thread]:
        """Once serving has stopped: end the connections' reading (a connection kept open between requests closes;
        a request being handled can still be answered) and wait up to ``timeout`` seconds for their threads.
        Return the threads still running."""
        with self._connections_lock:  # (a handler stopping its own server does not wait for itself)
            connections = {t: c for t, c in self._connections.items() if t is not threading.current_thread()}
            for connection in connections.values():
                if connection is not None:
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + timeout
        for thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread for thread in connections if thread.is_alive()]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal here; anything else is logged for the test's reader."""
        log.debug("%s: a request from %s ended with an error", self.owner.name, client_address,
                  exc_info=not self.owner._late())


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    wbufsize = 1 << 16  # headers and body leave in one write

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        if not self.server.owner._late():
            log.debug("%s: " + format, self.server.owner.name, *args)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                          dict(self.headers.items()), body, datetime.now(UTC))
        self.server.owner._serve(request, self._answer, self._drop)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - the stdlib's names

    def _answer(self, response: Response) -> bool:
        names = {k.lower() for k in response.headers}
        try:
            self.send_response(response.status)
            if "content-type" not in names:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:  # the client gave up waiting
            self.close_connection = True
            return False
        return True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
