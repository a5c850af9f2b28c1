"""Webhook receiver limits over real sockets on 127.0.0.1: body size, framing, the whole-request deadline (idle,
half-open and trickling clients) and the connection cap; a legitimate delivery gets through once they pass."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_hubspot_webhooks_hostile import (  # noqa: F401 - shared fixtures
    PATH,
    Hook,
    build,
    clean_logs,
    event,
    exchange,
    hook,
    make_settings,
    read_answer,
)

from payhub_hubspot.webhook_server import MAX_HEADER_BYTES
from payhub_hubspot.webhooks import WebhookInbox, WebhookReceiver

TIMEOUT = 0.5  # webhook_read_timeout_seconds in these tests
SLACK = 1.0    # scheduling slack allowed on top of it


@pytest.fixture
def small(hook: Callable[..., Hook]) -> Hook:  # noqa: F811 - the imported fixture
    """A receiver with a 4 KiB body limit and a half-second request deadline."""
    return hook(webhook_max_body_bytes=4096, webhook_read_timeout_seconds=TIMEOUT)


def connect(h: Hook, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(h.address, timeout=timeout)


def headers_only(h: Hook, length: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: {h.host}", f"Content-Length: {length}",
             *(f"{k}: {v}" for k, v in extra or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def wait_idle(h: Hook, within: float) -> None:
    server = h.receiver.server
    assert server is not None
    end = time.monotonic() + within
    while server.active and time.monotonic() < end:
        time.sleep(0.02)
    assert server.active == 0


# ---------------------------------------------------------------------------------------------- body size

@pytest.mark.parametrize("length", ["4097", str(10**9), "9" * 30, "9" * 5000])
def test_oversize_content_length_gets_413_before_any_body_is_sent(small: Hook, length: str) -> None:
    with connect(small) as sock:
        sock.sendall(headers_only(small, length))  # and not one byte of body
        status, _, answer = read_answer(sock)
    assert status == 413 and b"4096" in answer  # not 408: the server did not wait for the body
    small.still_serves()


def test_oversize_body_sent_in_full_gets_413(small: Hook) -> None:
    body = json.dumps([event(i) for i in range(1, 60)]).encode()
    assert len(body) > 4096
    status, _, _ = small.deliver(body)
    assert status == 413 and len(small.receiver.inbox) == 0


def test_content_length_with_surrounding_spaces_is_read(small: Hook) -> None:
    body = json.dumps([event(50)]).encode()
    headers = [*small.signed(body), ("Content-Length", f"  {len(body)}\t ")]
    assert exchange(small.address, build("POST", PATH, headers, body, length=False))[0] == 200


def test_body_at_the_limit_is_read(small: Hook) -> None:
    events = [event(i) for i in range(1, 20)]
    body = json.dumps(events).encode()
    body = body[:-1] + b" " * (4096 - len(body)) + b"]"
    assert len(body) == 4096
    assert small.deliver(body)[0] == 200 and len(small.receiver.inbox) == 19


@pytest.mark.parametrize(("extra", "status"), [
    ([], 411),                                                        # no Content-Length
    ([("Transfer-Encoding", "chunked")], 411),
    ([("Transfer-Encoding", "gzip, chunked")], 411),
    ([("Transfer-Encoding", "chunked"), ("Content-Length", "5")], 400),
    ([("Content-Length", "5"), ("Content-Length", "5")], 400),
    ([("Content-Length", "5, 5")], 400),
    ([("Content-Length", "-1")], 400),
    ([("Content-Length", "+5")], 400),
    ([("Content-Length", "1e3")], 400),
    ([("Content-Length", "0x10")], 400),
    ([("Content-Length", "5_0")], 400),
    ([("Content-Length", "١٢")], 400),
    ([("Content-Length", "")], 400),
])
def test_body_framing(small: Hook, extra: list[tuple[str, str]], status: int) -> None:
    raw = build("POST", PATH, [("Host", small.host), *extra], b"", length=False)
    assert exchange(small.address, raw)[0] == status
    small.still_serves()


def test_a_chunked_stream_is_refused_without_being_read(small: Hook) -> None:
    with connect(small) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: {small.host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        stop = threading.Event()
        sent = [0]

        def stream() -> None:  # an endless chunked body
            chunk = b"1000\r\n" + b"[" * 4096 + b"\r\n"
            try:
                while not stop.is_set() and sent[0] < 50 << 20:
                    sock.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=stream)
        sender.start()
        status, _, _ = read_answer(sock)
        stop.set()
        sender.join(5)
    assert status == 411
    assert sent[0] < 50 << 20  # the server closed long before the client ran out of body
    small.still_serves()


def test_content_length_shorter_than_the_body_reads_no_further(small: Hook) -> None:
    body = json.dumps([event(51)]).encode()
    smuggled = build("POST", PATH, small.signed(json.dumps([event(52)]).encode()), json.dumps([event(52)]).encode())
    raw = build("POST", PATH, small.signed(body), body) + smuggled
    with connect(small) as sock:
        sock.sendall(raw)
        status, _, answer = read_answer(sock)
    assert status == 200 and answer.count(b"HTTP/1.1") == 0  # one answer, then the connection closed
    assert small.receiver.inbox.take(10) == ["51"]


def test_content_length_longer_than_the_body_gets_408_at_the_deadline(small: Hook) -> None:
    body = json.dumps([event(53)]).encode()
    headers = [(k, v) for k, v in small.signed(body)]
    raw = build("POST", PATH, [*headers, ("Content-Length", str(len(body) + 100))], body, length=False)
    with connect(small) as sock:
        started = time.monotonic()
        sock.sendall(raw)
        status, _, _ = read_answer(sock)
        elapsed = time.monotonic() - started
    assert status == 408 and TIMEOUT * 0.8 <= elapsed < TIMEOUT + SLACK
    assert len(small.receiver.inbox) == 0
    small.still_serves()


# ---------------------------------------------------------------------------------------------- deadlines

def test_a_silent_connection_is_closed_at_the_deadline(small: Hook) -> None:
    with connect(small) as sock:
        started = time.monotonic()
        status, _, _ = read_answer(sock)  # returns when the server closes
        elapsed = time.monotonic() - started
    assert status is None and TIMEOUT * 0.8 <= elapsed < TIMEOUT + SLACK
    wait_idle(small, SLACK)
    server = small.receiver.server
    assert server is not None and server.timed_out >= 1
    small.still_serves()


def test_headers_then_silence_mid_body_gets_408(small: Hook) -> None:
    body = json.dumps([event(54)]).encode()
    with connect(small) as sock:
        started = time.monotonic()
        sock.sendall(build("POST", PATH, small.signed(body), body)[:-10])  # all but the last 10 bytes
        status, _, _ = read_answer(sock)
        elapsed = time.monotonic() - started
    assert status == 408 and elapsed < TIMEOUT + SLACK
    wait_idle(small, SLACK)
    small.still_serves()


def trickle(h: Hook, data: bytes, every: float) -> tuple[int | None, float, int]:
    """Send ``data`` one byte every ``every`` s; return (status, seconds until the server closed, bytes sent)."""
    with connect(h, timeout=30) as sock:
        stop = threading.Event()
        sent = [0]

        def drip() -> None:
            try:
                for byte in data:
                    if stop.wait(every):
                        return
                    sock.send(bytes([byte]))
                    sent[0] += 1
            except OSError:
                pass

        dripper = threading.Thread(target=drip)
        started = time.monotonic()
        dripper.start()
        status, _, _ = read_answer(sock)
        elapsed = time.monotonic() - started
        stop.set()
        dripper.join(5)
    return status, elapsed, sent[0]


def test_a_trickle_of_headers_is_cut_at_the_deadline(small: Hook) -> None:
    body = json.dumps([event(55)]).encode()
    request = build("POST", PATH, small.signed(body), body)  # about 300 bytes: 15 s at 20 bytes/s
    status, elapsed, sent = trickle(small, request, every=0.05)
    assert status is None and elapsed < TIMEOUT + SLACK and sent < len(request) / 3
    assert len(small.receiver.inbox) == 0
    small.still_serves()


def test_a_trickle_of_body_is_cut_at_the_deadline_with_408(small: Hook) -> None:
    body = json.dumps([event(56)]).encode()
    request = build("POST", PATH, small.signed(body), body)
    head, _, rest = request.partition(b"\r\n\r\n")
    with connect(small, timeout=30) as sock:
        sock.sendall(head + b"\r\n\r\n")
        stop = threading.Event()

        def drip() -> None:
            try:
                for byte in rest:
                    if stop.wait(0.05):
                        return
                    sock.send(bytes([byte]))
            except OSError:
                pass

        dripper = threading.Thread(target=drip)
        started = time.monotonic()
        dripper.start()
        status, _, _ = read_answer(sock)
        elapsed = time.monotonic() - started
        stop.set()
        dripper.join(5)
    assert status == 408 and elapsed < TIMEOUT + SLACK
    assert len(small.receiver.inbox) == 0


def test_expect_100_continue(small: Hook) -> None:
    with connect(small) as sock:  # refused before the body: no 100 Continue, 413 at once
        sock.sendall(headers_only(small, "100000", [("Expect", "100-continue")]))
        status, head, _ = read_answer(sock)
    assert status == 413 and b"100 Continue" not in head
    body = json.dumps([event(57)]).encode()
    headers = [*small.signed(body), ("Expect", "100-continue"), ("Content-Length", str(len(body)))]
    with connect(small) as sock:
        sock.sendall(build("POST", PATH, headers, b"", length=False))
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        status, _, answer = read_answer(sock)
    assert status == 200 and json.loads(answer) == {"deals": 1}


def test_headers_over_the_byte_limit_are_refused(small: Hook) -> None:
    filler = [(f"X-Filler-{i}", "x" * 1000) for i in range(MAX_HEADER_BYTES // 1000 + 2)]
    status, _, _ = exchange(small.address, build("POST", PATH, [("Host", small.host), *filler], b""))
    assert status == 431
    small.still_serves()


# ---------------------------------------------------------------------------------------------- connection cap

@pytest.fixture
def capped(hook: Callable[..., Hook]) -> Hook:  # noqa: F811 - the imported fixture
    return hook(webhook_max_connections=4, webhook_read_timeout_seconds=TIMEOUT * 2)


@pytest.fixture
def idle_sockets(capped: Hook) -> Iterator[Callable[[int], list[socket.socket]]]:
    opened: list[socket.socket] = []

    def open_idle(count: int) -> list[socket.socket]:
        fresh = [connect(capped) for _ in range(count)]
        opened.extend(fresh)
        return fresh

    yield open_idle
    for sock in opened:
        sock.close()


def test_idle_sockets_below_the_cap_do_not_delay_a_delivery(capped: Hook,
                                                            idle_sockets: Callable[[int], list[socket.socket]]
                                                            ) -> None:
    server = capped.receiver.server
    assert server is not None
    idle_sockets(3)
    end = time.monotonic() + 2
    while server.active < 3 and time.monotonic() < end:
        time.sleep(0.01)
    capped.still_serves()
    assert server.active >= 3 and server.refused == 0  # served while the three idle ones were still held


def test_a_flood_of_idle_sockets_is_refused_at_once_and_drained_by_the_deadline(
        capped: Hook, idle_sockets: Callable[[int], list[socket.socket]]) -> None:
    server = capped.receiver.server
    assert server is not None
    threads_before = threading.active_count()
    flood = idle_sockets(50)
    deadline = 2 * TIMEOUT
    end = time.monotonic() + 2
    while server.refused < 46 and time.monotonic() < end:
        time.sleep(0.01)
    assert server.active == 4 and server.refused == 46
    assert threading.active_count() <= threads_before + 4  # one thread per admitted connection, no more
    # over the cap: a delivery is refused quickly with 503 (HubSpot retries it later) ...
    body = json.dumps([event(61)]).encode()
    started = time.monotonic()
    with connect(capped) as sock:
        status, head, _ = read_answer(sock)
    assert status == 503 and b"retry-after" in head.lower() and time.monotonic() - started < deadline
    # ... and every socket of the flood is closed by the server: 46 refused at once, 4 at their deadline
    closed_at: list[float] = []
    for sock in flood:
        answer = read_answer(sock)
        assert answer[0] in (None, 503)
        closed_at.append(time.monotonic() - started)
    assert max(closed_at) < deadline + SLACK
    wait_idle(capped, SLACK)
    # once they are gone, the delivery goes through
    assert capped.deliver(body)[0] == 200
    assert capped.receiver.inbox.take(10) == ["61"]


def test_many_slow_clients_hold_at_most_the_cap(capped: Hook) -> None:
    server = capped.receiver.server
    assert server is not None
    body = json.dumps([event(62)]).encode()
    request = build("POST", PATH, capped.signed(body), body)
    results: list[tuple[int | None, float, int]] = []
    lock = threading.Lock()

    def slow() -> None:
        result = trickle(capped, request, every=0.05)
        with lock:
            results.append(result)

    workers = [threading.Thread(target=slow) for _ in range(12)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert len(results) == 12
    assert all(status in (None, 503) for status, _, _ in results)
    assert all(elapsed < 2 * TIMEOUT + SLACK for _, elapsed, _ in results)
    assert server.refused >= 8
    wait_idle(capped, SLACK)
    capped.still_serves()


def test_an_endpoint_failure_is_answered_500_and_the_receiver_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver(make_settings(), WebhookInbox())
    calls = [0]

    def broken(*args: Any) -> tuple[int, dict[str, Any]]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("bug")
        return original(*args)

    original = receiver.handle
    monkeypatch.setattr(receiver, "handle", broken)
    receiver.start()
    try:
        h = Hook(receiver)
        assert h.events([event(63)])[0] == 500
        h.still_serves()
    finally:
        receiver.stop()
