"""Connections that send no request, or trickle its head, cannot take the HTTP face down: a real server on a free
loopback port closes them after ``http.read_timeout_seconds``, and only requests in flight count against
``http.max_connections`` (``/healthz`` is always answered)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from payhub.db import migrate
from payhub.http.limits import InFlightLimit
from payhub.http.server import HttpServer
from payhub.runtime import Runtime
from payhub.settings import Settings

pytestmark = pytest.mark.slow  # real loopback servers; idle and trickling connections are waited out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpServer]:
    settings = Settings.model_validate({"database": {"url": f"sqlite:///{tmp_path / 'p.db'}"},
                                        "http": {"listen": "127.0.0.1:0", "read_timeout_seconds": 1,
                                                 "max_connections": 3}})
    rt = Runtime(settings)
    migrate.upgrade(rt.engine)
    served = HttpServer(rt)
    served.start()
    yield served
    served.stop()
    rt.close()


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(100) == b""
    except (TimeoutError, OSError):
        return False


def test_idle_and_trickling_connections_are_closed_and_do_not_block_requests(server: HttpServer) -> None:
    host, port = server.address
    idle = [socket.create_connection((host, port)) for _ in range(20)]  # far more than max_connections
    trickling = socket.create_connection((host, port))
    trickling.sendall(b"GET /readyz HTTP/1.1\r\n")
    try:
        assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        trickling.sendall(b"Host: x\r\n")  # still inside its deadline, but the head is never finished
        assert all(closed_by_server(sock, 3) for sock in [*idle, trickling])
    finally:
        for sock in [*idle, trickling]:
            sock.close()


def test_a_kept_alive_connection_gets_a_new_deadline_after_each_answer(server: HttpServer) -> None:
    host, port = server.address
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        answer = b""
        while not answer.endswith(b'{"status":"alive"}'):
            answer += sock.recv(1000)
        assert answer.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next head, never finished
        started = time.monotonic()
        assert closed_by_server(sock, 4)
        assert time.monotonic() - started < 3


def test_requests_in_flight_past_the_limit_get_503_but_healthz_is_answered() -> None:
    release = threading.Event()

    async def slow_app(scope: dict[str, object], receive: object, send: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"done"})  # type: ignore[operator]

    limited = InFlightLimit(slow_app, 2)  # type: ignore[arg-type]

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = [asyncio.create_task(client.get("/api/v1/events")) for _ in range(2)]
            await asyncio.sleep(0.2)
            over = await client.get("/api/v1/events")
            health = asyncio.create_task(client.get("/healthz"))
            await asyncio.sleep(0.2)
            release.set()
            answers = [*(await asyncio.gather(*first)), over, await health]
            return [answer.status_code for answer in answers]

    assert asyncio.run(scenario()) == [200, 200, 503, 200]
