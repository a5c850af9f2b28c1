"""Request limits and the audit's last word, on SQLite and PostgreSQL: bodies too large (413, declared or chunked),
too slow (408, a deadline, not an idle timeout), Content-Length that cannot be trusted (400), every such refusal
audited; an audit entry that cannot be written answers 503 and serves nothing; a route that raises is audited.

Through httpx's ASGI transport, and for what only a real server shows (chunked bodies, slow and trickling
clients, malformed headers) a uvicorn server on a free loopback port spoken to over raw sockets.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from test_http_auth import HTTP, Api, probe_router, runtime  # noqa: F401  (runtime is a fixture)

from payhub.db.schema import api_tokens, audit_head
from payhub.http.limits import declared_length
from payhub.http.server import HttpServer
from payhub.runtime import Runtime

pytestmark = pytest.mark.slow  # real loopback servers; request deadlines are waited out

MAX_BODY = 1024
DEADLINE = 0.5


def slow_router(streamed: list[int]) -> APIRouter:
    """``POST /api/v1/test/echo`` answers the body's length; ``/slow`` streams five chunks over ~2 deadlines after
    reading its body; ``/boom`` raises; ``/stream`` counts the chunks it produced into ``streamed``."""
    router = APIRouter(prefix="/api/v1/test")

    @router.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @router.post("/slow")
    async def slow(request: Request) -> StreamingResponse:
        await request.body()

        async def chunks() -> AsyncIterator[bytes]:
            for n in range(5):
                await asyncio.sleep(DEADLINE / 2)
                yield f"chunk {n}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    @router.get("/stream")
    def stream() -> StreamingResponse:
        def rows() -> Iterator[bytes]:
            for n in range(1000):
                streamed.append(n)
                yield b"row\n"

        return StreamingResponse(rows(), media_type="text/plain")

    return router


@pytest.fixture
def streamed() -> list[int]:
    return []


@pytest.fixture
def api(runtime: Callable[[str], Runtime], streamed: list[int]) -> Api:  # noqa: F811
    return Api(runtime(HTTP.replace("= 3", "= 1000")), probe_router(), slow_router(streamed))


def refusals(api: Api) -> list[tuple[str, int, str]]:
    return [(e["subject_id"], e["detail"]["status"], e["outcome"]) for e in api.entries()]


@pytest.mark.parametrize(("headers", "expected"), [
    ([], None), ([(b"content-length", b"12")], 12), ([(b"Content-Length", b" 7 ")], 7),
    ([(b"content-length", b"3"), (b"content-length", b"3")], 3),
    ([(b"content-length", b"3"), (b"content-length", b"4")], "conflicting Content-Length headers"),
    ([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")], "Content-Length with Transfer-Encoding"),
    ([(b"content-length", b"12a")], "Content-Length is not a number"),
    ([(b"content-length", b"-1")], "Content-Length is not a number"),
    ([(b"content-length", b"")], "Content-Length is not a number"),
    ([(b"content-length", "²".encode("latin-1"))], "Content-Length is not a number"),
    ([(b"content-length", b"9" * 16)], "Content-Length is not a number"),
])
def test_declared_length(headers: list[tuple[bytes, bytes]], expected: int | str | None) -> None:
    assert declared_length(headers) == expected


def test_a_declared_length_over_the_limit_is_413_unread_and_audited(api: Api) -> None:
    token = api.token("root")
    answer = api.call("POST", "/api/v1/tokens", token=token, content=b"{}",
                      headers={"Content-Length": str(MAX_BODY + 1)})
    assert answer.status_code == 413 and answer.json() == {"error": f"body larger than {MAX_BODY} bytes"}
    assert answer.headers["Connection"] == "close"
    ok = api.call("POST", "/api/v1/test/echo", content=b"x" * MAX_BODY)
    assert ok.json() == {"length": MAX_BODY}
    assert refusals(api) == [("/api/v1/tokens", 413, "refused"), ("/api/v1/test/echo", 200, "ok")]


@pytest.mark.parametrize("path", ["/api/v1/test/echo", "/api/v1/tokens"])
def test_a_chunked_body_is_cut_off_at_the_limit(api: Api, path: str) -> None:
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for n in range(100):
            sent.append(n)
            yield b"x" * 100

    answer = api.call("POST", path, token=api.token("root"), content=body())
    assert answer.status_code == 413, answer.text  # FastAPI's own 400 for a body it could not read is replaced
    assert len(sent) <= MAX_BODY // 100 + 2
    assert refusals(api) == [(path, 413, "refused")]


@pytest.mark.parametrize(("length", "reason"), [("12a", "Content-Length is not a number"),
                                                ("²", "Content-Length is not a number")])
def test_a_content_length_that_is_not_a_number_is_400(api: Api, length: str, reason: str) -> None:
    answer = api.call("POST", "/api/v1/test/echo", content=b"x",
                      headers={"Content-Length": length.encode("latin-1")})  # type: ignore[dict-item]
    assert answer.status_code == 400 and answer.json() == {"error": reason}
    assert refusals(api) == [("/api/v1/test/echo", 400, "refused")]


def test_a_body_slower_than_the_deadline_is_408(api: Api) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x"
            await asyncio.sleep(DEADLINE / 4)  # each part in time: a deadline, not an idle timeout

    answer = api.call("POST", "/api/v1/test/echo", content=body())
    assert answer.status_code == 408
    assert answer.json() == {"error": f"request body not complete within {DEADLINE:g} s"}
    assert refusals(api) == [("/api/v1/test/echo", 408, "refused")]


def test_an_answer_may_outlast_the_deadline_once_the_body_is_in(api: Api) -> None:
    answer = api.call("POST", "/api/v1/test/slow", content=b"{}")
    assert answer.status_code == 200 and answer.text == "".join(f"chunk {n}\n" for n in range(5))


def test_an_audit_entry_that_cannot_be_written_serves_nothing(api: Api, streamed: list[int]) -> None:
    token = api.token("root")
    with api.rt.engine.begin() as conn:
        conn.execute(sa.delete(audit_head))
    listed = api.call("GET", "/api/v1/tokens", token=token)
    assert listed.status_code == 503 and listed.headers["Retry-After"] == "5"
    assert listed.json() == {"error": "the request could not be recorded in the audit log; try again"}
    assert "root" not in listed.text
    stream = api.call("GET", "/api/v1/test/stream")
    assert stream.status_code == 503 and stream.content.count(b"row") == 0
    assert len(streamed) <= 1  # the route was stopped, not run to its end
    denied = api.call("GET", "/api/v1/tokens")
    assert denied.status_code == 503


def test_a_route_that_raises_is_audited_as_an_error(api: Api) -> None:
    answer = api.call("GET", "/api/v1/test/boom", raise_errors=False)
    assert answer.status_code == 500
    assert refusals(api) == [("/api/v1/test/boom", 500, "error")]


# --- a real server ----------------------------------------------------------------------------------------------


@contextmanager
def serving(rt: Runtime) -> Iterator[HttpServer]:
    server = HttpServer(rt, None, ("127.0.0.1", 0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def exchange(server: HttpServer, head: str, parts: list[bytes] = (), pause: float = 0.0,  # type: ignore[assignment]
             timeout: float = 10) -> tuple[bytes, float]:
    """Send ``head`` (request line and headers), then each of ``parts`` ``pause`` seconds apart, stopping once the
    server answers; return the whole answer (read to the connection's end) and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in parts:
            if select.select([sock], [], [], pause)[0]:
                break  # answered: sending more would only reset the connection
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def served(api: Api) -> Iterator[tuple[Api, HttpServer, str]]:
    token = api.token("root")
    with serving(api.rt) as server:
        yield api, server, token


def post_head(token: str, *extra: str) -> str:
    return "\n".join(["POST /api/v1/tokens HTTP/1.1", "Host: payhub", f"Authorization: Bearer {token}",
                      "Content-Type: application/json", *extra]) + "\n"


def test_server_a_declared_length_over_the_limit_is_413_before_the_body(served: tuple[Api, HttpServer, str]) -> None:
    api, server, token = served
    answer, _ = exchange(server, post_head(token, f"Content-Length: {MAX_BODY + 1}"))
    assert status(answer) == 413 and b"connection: close" in answer.lower()


def test_server_a_chunked_body_over_the_limit_is_413(served: tuple[Api, HttpServer, str]) -> None:
    api, server, token = served
    chunk = b"258\r\n" + b" " * 600 + b"\r\n"  # 600 bytes a chunk: the second passes the limit
    answer, _ = exchange(server, post_head(token, "Transfer-Encoding: chunked"), [chunk, chunk, chunk, b"0\r\n\r\n"],
                         pause=0.1)
    assert status(answer) == 413, answer
    good = json.dumps({"name": "ok", "role": "auditor"}).encode()
    answer, _ = exchange(server, post_head(token, "Transfer-Encoding: chunked", "Connection: close"),
                         [f"{len(good):x}\r\n".encode() + good + b"\r\n", b"0\r\n\r\n"])
    assert status(answer) == 201, answer
    assert [s for _, s, _ in refusals(api)] == [413, 201]


@pytest.mark.parametrize("pause", [None, DEADLINE / 5])
def test_server_a_silent_or_trickling_body_gets_408_at_the_deadline(served: tuple[Api, HttpServer, str],
                                                                    pause: float | None) -> None:
    api, server, token = served
    parts = [b"{"] if pause is None else [b" "] * 100
    answer, took = exchange(server, post_head(token, "Content-Length: 100"), parts, pause=pause or 0.0)
    assert status(answer) == 408, answer
    assert DEADLINE <= took < DEADLINE + 5
    assert refusals(api) == [("/api/v1/tokens", 408, "refused")]
    with api.rt.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_tokens)).scalar_one() == 1


@pytest.mark.parametrize("header", ["Content-Length: 12a", "Content-Length: -1",
                                    "Content-Length: 3\nContent-Length: 4"])
def test_server_a_malformed_content_length_is_400(served: tuple[Api, HttpServer, str], header: str) -> None:
    api, server, token = served
    answer, _ = exchange(server, post_head(token, header))
    assert status(answer) == 400, answer
    assert api.entries() == []  # refused by the server's HTTP parser before the app: nothing was asked
