"""Serving the app with uvicorn in a thread of its own, beside the worker or alone (``payhub serve``).

The listening socket is bound in the caller's thread, so a busy port is an error at start-up, and port 0 gives a
free port that :attr:`HttpServer.address` reports. :meth:`HttpServer.stop` stops accepting, gives open requests
``http.shutdown_grace_seconds`` to finish, and returns when the thread has ended.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from payhub.errors import ConfigError
from payhub.http.app import create_app
from payhub.http.limits import InFlightLimit
from payhub.runtime import Runtime

if TYPE_CHECKING:
    from payhub.worker import Worker

log = logging.getLogger("payhub.http")

MAX_HEADER_EVENT_BYTES = 64 * 1024  # request line and headers


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); ConfigError naming ``http.listen`` when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError([("http.listen", f"cannot resolve {host!r}: {exc.strerror}")]) from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError([("http.listen", f"cannot listen on {host}:{port}: {exc.strerror or exc}")]) from None
    sock.setblocking(False)
    return sock


def _protocol(header_seconds: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a deadline on each request's line and headers: a connection that has not
    sent a complete request head ``header_seconds`` after it opened (or after its previous answer) is closed, so
    idle or trickling clients cannot hold connections open."""

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: object = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle
            self._deadline = self.loop.call_later(header_seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and self.cycle is self._armed_for:
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self._deadline is not None and self.cycle is not self._armed_for:
                self._disarm()  # a request head arrived: the body has http.read_timeout_seconds of its own

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol


class HttpServer:
    """The app over ``rt`` served on ``http.listen`` (or ``listen``) in a background thread."""

    def __init__(self, rt: Runtime, worker: Worker | None = None, listen: tuple[str, int] | None = None) -> None:
        settings = rt.settings.http
        where = listen or settings.address
        if where is None:
            raise ConfigError([("http.listen", "not set")])
        self.socket = bind(*where)
        self.address: tuple[str, int] = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            InFlightLimit(create_app(rt, worker), settings.max_connections), log_config=None, access_log=False,
            lifespan="off", server_header=False,
            proxy_headers=bool(settings.forwarded_allow_ips), forwarded_allow_ips=settings.forwarded_allow_ips or None,
            http=_protocol(settings.read_timeout_seconds), timeout_keep_alive=5,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
            h11_max_incomplete_event_size=MAX_HEADER_EVENT_BYTES)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="payhub-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except Exception:  # noqa: BLE001 - the worker goes on without HTTP
            log.exception("the HTTP server stopped")

    def start(self) -> None:
        self._thread.start()
        log.info("serving HTTP on %s", self.url)

    def stop(self) -> None:
        """Stop accepting; open requests get ``http.shutdown_grace_seconds``; return when stopped."""
        self.server.should_exit = True
        self._thread.join()
        self.socket.close()
        log.info("HTTP server stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the serving thread to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
