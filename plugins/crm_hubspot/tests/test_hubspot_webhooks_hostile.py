"""Webhook receiver under hostile input, over real HTTP on 127.0.0.1: every answer is a 4xx (or a 2xx replay),
no traceback is logged, nothing unsigned is parsed, nothing is queued twice, and the receiver keeps serving."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payhub_hubspot import HubSpotSettings, sign_v3, verify_v3
from payhub_hubspot import webhooks as webhooks_module
from payhub_hubspot.webhooks import WebhookEndpoint, WebhookInbox, WebhookReceiver, parse_events

SECRET = "app-client-secret"
PATH = "/hubspot/webhooks"
Answer = tuple[int | None, bytes, bytes]


def make_settings(**overrides: Any) -> HubSpotSettings:
    values: dict[str, Any] = {"access_token": "pat-test", "start_date": "2020-01-01", "client_secret": SECRET,
                              "webhook_port": 0, **overrides}
    return HubSpotSettings.model_validate(values)


def now_ms() -> str:
    return str(int(time.time() * 1000))


def event(deal: int | str = 11, kind: str = "deal.creation", **extra: Any) -> dict[str, Any]:
    return {"eventId": 100, "subscriptionId": 25, "portalId": 62515, "appId": 1160452,
            "occurredAt": int(time.time() * 1000), "subscriptionType": kind, "attemptNumber": 0,
            "objectId": deal, "changeSource": "CRM", **extra}


def build(method: str = "POST", target: str = PATH, headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
          *, length: bool = True) -> bytes:
    """A raw HTTP/1.1 request; header values are sent as UTF-8 bytes, exactly as given."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket) -> Answer:
    """(status, head, body) of the answer read until the server closes; status None if it sent nothing."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return None, b"", b""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def exchange(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> Answer:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock)


class Hook:
    """A started receiver and the ways to talk to it."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        address = receiver.address
        assert address is not None
        self.address = address
        self.host = f"{address[0]}:{address[1]}"

    def signed(self, body: bytes, *, timestamp: str | None = None, target: str = PATH, secret: str = SECRET,
               extra: Sequence[tuple[str, str]] = (), signature: str | None = None) -> list[tuple[str, str]]:
        ts = now_ms() if timestamp is None else timestamp
        sig = signature or sign_v3(secret, "POST", f"http://{self.host}{target}", body, ts)
        return [("Host", self.host), ("Content-Type", "application/json"), ("X-HubSpot-Signature-v3", sig),
                ("X-HubSpot-Request-Timestamp", ts), *extra]

    def deliver(self, body: bytes, **kwargs: Any) -> Answer:
        target = kwargs.get("target", PATH)
        return exchange(self.address, build("POST", target, self.signed(body, **kwargs), body))

    def events(self, events: Any, **kwargs: Any) -> Answer:
        return self.deliver(json.dumps(events).encode(), **kwargs)

    def still_serves(self) -> None:
        """A valid delivery is accepted and its deal queued (the receiver survived what came before)."""
        before = len(self.receiver.inbox)
        status, _, body = self.events([event(987654321)])
        assert status == 200, body
        assert json.loads(body) == {"deals": 1}
        assert "987654321" in self.receiver.inbox.take(len(self.receiver.inbox) + 1)
        assert before <= 1


@pytest.fixture
def clean_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """The test must leave no traceback: no log record with exception info, nothing like one on stderr."""
    caplog.set_level(logging.DEBUG)
    yield
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in capfd.readouterr().err


@pytest.fixture
def hook(clean_logs: None) -> Iterator[Callable[..., Hook]]:
    """``hook(**settings)``: a started receiver (ephemeral port on 127.0.0.1), stopped after the test."""
    made: list[WebhookReceiver] = []

    def factory(clock: Callable[[], float] = time.time, **overrides: Any) -> Hook:
        receiver = WebhookReceiver(make_settings(**overrides), WebhookInbox(), clock=clock)
        receiver.start()
        made.append(receiver)
        return Hook(receiver)

    yield factory
    for receiver in made:
        receiver.stop()


# ---------------------------------------------------------------------------------------------- timestamps

BAD_TIMESTAMPS = ["abc", "", " ", "-1700000000000", "1700000000000.0", "1.7e12", "1e3", "١٢٣", "١٧٠٠٠٠٠٠٠٠٠٠٠",
                  "9" * 5000, "9" * 20, "0x18B", "1_700_000_000_000", "+1700000000000", "nan", "inf", "1e400",
                  "1700000000000\x00", "²³"]


@pytest.mark.parametrize("timestamp", BAD_TIMESTAMPS, ids=lambda t: repr(t)[:20])
def test_malformed_timestamp_is_401_and_the_receiver_keeps_serving(hook: Callable[..., Hook], timestamp: str) -> None:
    h = hook()
    body = json.dumps([event()]).encode()
    status, _, answer = h.deliver(body, timestamp=timestamp)  # correctly signed for that very timestamp
    assert status in (400, 401), answer
    assert len(h.receiver.inbox) == 0
    h.still_serves()


@pytest.mark.parametrize("timestamp", BAD_TIMESTAMPS, ids=lambda t: repr(t)[:20])
def test_verify_v3_gives_a_reason_for_malformed_timestamps(timestamp: str) -> None:
    body = b"[]"
    signature = sign_v3(SECRET, "POST", "https://example.com/hook", body, timestamp)
    reason = verify_v3(SECRET, "POST", "https://example.com/hook", body, timestamp, signature,
                       now_ms=int(time.time() * 1000))
    assert reason is not None


def test_timestamp_with_surrounding_whitespace_still_verifies(hook: Callable[..., Hook]) -> None:
    # HTTP strips the spaces around a header value; what HubSpot signed is the digits alone.
    h = hook()
    body = json.dumps([event(5)]).encode()
    ts = now_ms()
    headers = [(k, f"  {v}  " if k == "X-HubSpot-Request-Timestamp" else v) for k, v in h.signed(body, timestamp=ts)]
    assert exchange(h.address, build("POST", PATH, headers, body))[0] == 200


# ---------------------------------------------------------------------------------------------- payloads

BAD_BODIES: list[tuple[str, bytes]] = [
    ("nested-100k", b"[" * 100_000 + b"]" * 100_000),
    ("nested-open", b"[" * 100_000),
    ("nested-objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("invalid-utf8", b'[{"subscriptionType":"deal.creation","objectId":1,"x":"\xff\xfe"}]'),
    ("overlong-utf8", b'[{"subscriptionType":"deal.creation","objectId":1,"x":"\xc0\xaf"}]'),
    ("utf16", json.dumps([event()]).encode("utf-16")),
    ("bom", b"\xef\xbb\xbf" + json.dumps([event()]).encode()),
    ("empty", b""),
    ("truncated", json.dumps([event()]).encode()[:-3]),
    ("object", json.dumps(event()).encode()),
    ("string", b'"deal.creation"'),
    ("null", b"null"),
    ("number", b"12"),
    ("array-of-numbers", b"[1, 2, 3]"),
    ("array-of-arrays", b"[[]]"),
    ("nan", b'[{"subscriptionType":"deal.creation","objectId":1,"x":NaN}]'),
    ("infinity", b'[{"subscriptionType":"deal.creation","objectId":1,"x":Infinity}]'),
    ("minus-infinity", b'[{"subscriptionType":"deal.creation","objectId":1,"x":-Infinity}]'),
    ("float-overflow", b'[{"subscriptionType":"deal.creation","objectId":1,"x":1e999}]'),
    ("long-float", b'[{"subscriptionType":"deal.creation","objectId":1,"x":0.' + b"1" * 5000 + b"}]"),
    ("int-5000-digits", b'[{"subscriptionType":"deal.creation","objectId":' + b"9" * 5000 + b"}]"),
    ("int-20-digits", b'[{"subscriptionType":"deal.creation","objectId":' + b"9" * 20 + b"}]"),
    ("id-over-int64", json.dumps([event(2**63)]).encode()),
    ("id-zero", json.dumps([event(0)]).encode()),
    ("id-negative", json.dumps([event(-5)]).encode()),
    ("id-float", json.dumps([event(1.5)]).encode()),  # type: ignore[arg-type]
    ("id-bool", json.dumps([event(True)]).encode()),
    ("id-list", json.dumps([event([1])]).encode()),  # type: ignore[arg-type]
    ("id-object", json.dumps([event({"id": 1})]).encode()),  # type: ignore[arg-type]
    ("id-null", json.dumps([event(None)]).encode()),  # type: ignore[arg-type]
    ("id-text", json.dumps([event("12a")]).encode()),
    ("id-arabic-digits", json.dumps([event("١٢٣")]).encode()),
    ("id-empty-text", json.dumps([event("")]).encode()),
    ("kind-number", json.dumps([event(kind=5)]).encode()),  # type: ignore[arg-type]
    ("kind-missing", json.dumps([{"objectId": 1}]).encode()),
    ("kind-list", json.dumps([event(kind=["deal.creation"])]).encode()),  # type: ignore[arg-type]
    ("object-type-int", json.dumps([event(kind="object.creation", objectTypeId=3)]).encode()),
    ("association-type-int", json.dumps([event(kind="deal.associationChange", associationType=1)]).encode()),
    ("event-id-text", json.dumps([event(eventId="x")]).encode()),
    ("occurred-negative", json.dumps([event(occurredAt=-1)]).encode()),
    ("attempt-float", json.dumps([event(attemptNumber=1.0)]).encode()),
    ("duplicate-key", b'[{"subscriptionType":"deal.creation","objectId":1,"objectId":2}]'),
    ("one-bad-among-good", json.dumps([event(1), event(2), "garbage", event(3)]).encode()),
]


@pytest.mark.parametrize(("name", "body"), BAD_BODIES, ids=[n for n, _ in BAD_BODIES])
def test_signed_malformed_body_is_400_and_queues_nothing(hook: Callable[..., Hook], name: str, body: bytes) -> None:
    h = hook()
    status, _, answer = h.deliver(body)
    assert status == 400, (name, answer)
    assert "error" in json.loads(answer)
    assert len(h.receiver.inbox) == 0 and h.receiver.accepted == 0
    h.still_serves()


def test_unsigned_body_never_reaches_the_parser(hook: Callable[..., Hook], monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []
    real = webhooks_module.parse_events

    def spy(body: bytes) -> list[dict[str, Any]]:
        parsed.append(body)
        return real(body)

    monkeypatch.setattr(webhooks_module, "parse_events", spy)
    h = hook()
    deep = b"[" * 100_000
    assert exchange(h.address, build("POST", PATH, [("Host", h.host)], deep))[0] == 401
    assert h.deliver(deep, secret="someone-else")[0] == 401
    assert h.deliver(deep, signature="AAAA")[0] == 401
    assert h.deliver(deep, timestamp=str(int(time.time() * 1000) - 10 * 60_000))[0] == 401  # stale, signed
    assert parsed == []
    assert h.deliver(deep)[0] == 400  # the same body, signed: parsed, and refused
    assert parsed == [deep]


def test_valid_payload_shapes_are_accepted(hook: Callable[..., Hook]) -> None:
    h = hook()
    cases: list[tuple[list[Any], int]] = [
        ([], 0),
        ([event(1), event("2"), event(3, kind="contact.creation")], 2),
        ([event(2**63 - 1)], 1),
        ([event(7, kind="deal.propertyChange", propertyName="dealstage", propertyValue="closedwon")], 1),
        ([{"subscriptionType": "deal.associationChange", "associationType": "DEAL_TO_COMPANY", "fromObjectId": 8,
           "toObjectId": 99, "fromObjectTypeId": "0-3", "toObjectTypeId": "0-2"}], 1),
        ([event(9, x="\ud800 lone surrogate", nested={"a": [1.5, -2, None, True]})], 1),
    ]
    for events, deals in cases:
        status, _, answer = h.events(events)
        assert status == 200 and json.loads(answer) == {"deals": deals}, (events, answer)
    assert h.receiver.inbox.take(100) == ["1", "2", str(2**63 - 1), "7", "8", "9"]


# ---------------------------------------------------------------------------------------------- headers

def test_repeated_signature_timestamp_or_host_headers_are_refused(hook: Callable[..., Hook]) -> None:
    h = hook()
    body = json.dumps([event(1)]).encode()
    good = h.signed(body)
    sig = dict(good)["X-HubSpot-Signature-v3"]
    ts = dict(good)["X-HubSpot-Request-Timestamp"]
    variants = [
        [*good, ("X-HubSpot-Signature-v3", "AAAA")],
        [("X-HubSpot-Signature-v3", "AAAA"), *good],
        [*good, ("x-hubspot-signature-V3", sig)],  # the same value again, other spelling
        [*good, ("X-HubSpot-Request-Timestamp", ts)],
        [*good, ("Host", "evil.example.com")],
    ]
    for headers in variants:
        status, _, answer = exchange(h.address, build("POST", PATH, headers, body))
        assert status == 400, (headers, answer)
    assert len(h.receiver.inbox) == 0
    h.still_serves()


def test_header_tricks_do_not_verify_or_inject(hook: Callable[..., Hook]) -> None:
    h = hook()
    body = json.dumps([event(1)]).encode()
    good = dict(h.signed(body))
    ts, sig = good["X-HubSpot-Request-Timestamp"], good["X-HubSpot-Signature-v3"]
    tricks = [
        # a folded (obs-fold) timestamp header
        b"POST %s HTTP/1.1\r\nHost: %s\r\nX-HubSpot-Signature-v3: %s\r\nX-HubSpot-Request-Timestamp: %s\r\n 000\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (PATH.encode(), h.host.encode(), sig.encode(), ts[:-3].encode(),
                                           len(body), body),
        # a NUL and a second value smuggled into the signature
        build("POST", PATH, [("Host", h.host), ("X-HubSpot-Signature-v3", f"{sig}\x00AAAA"),
                             ("X-HubSpot-Request-Timestamp", ts)], body),
        build("POST", PATH, [("Host", h.host), ("X-HubSpot-Signature-v3", f"{sig}, AAAA"),
                             ("X-HubSpot-Request-Timestamp", ts)], body),
        # a target carrying an encoded CRLF and a header of its own
        build("POST", PATH + "%0d%0aSet-Cookie:%20x=1", h.signed(body), body),
        # a header line without a colon, a header name with a space
        b"POST %s HTTP/1.1\r\nHost: %s\r\nno colon here\r\nContent-Length: 0\r\n\r\n" % (PATH.encode(),
                                                                                          h.host.encode()),
        b"POST %s HTTP/1.1\r\nHost: %s\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n" % (PATH.encode(),
                                                                                        h.host.encode()),
    ]
    for raw in tricks:
        status, head, answer = exchange(h.address, raw)
        assert status in (400, 401, 404), (raw[:120], status, answer)
        assert b"set-cookie" not in head.lower()
    assert len(h.receiver.inbox) == 0
    h.still_serves()


def test_many_and_long_headers_get_431_or_400(hook: Callable[..., Hook]) -> None:
    h = hook()
    many = build("POST", PATH, [("Host", h.host), *((f"X-Filler-{i}", "x") for i in range(150))], b"")
    long_line = build("POST", PATH, [("Host", h.host), ("X-Filler", "x" * 70_000)], b"")
    over_total = build("POST", PATH, [("Host", h.host), *((f"X-Filler-{i}", "x" * 9000) for i in range(9))], b"")
    long_target = build("POST", "/" + "a" * 70_000, [("Host", h.host)], b"")
    for raw, expected in [(many, 431), (long_line, 431), (over_total, 431), (long_target, (414, 431))]:
        assert exchange(h.address, raw)[0] in (expected if isinstance(expected, tuple) else (expected,))
    h.still_serves()


# ---------------------------------------------------------------------------------------------- method and path

@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW", "CONNECT"])
def test_other_methods_get_405(hook: Callable[..., Hook], method: str) -> None:
    h = hook()
    body = json.dumps([event(1)]).encode()
    status, head, _ = exchange(h.address, build(method, PATH, h.signed(body), body))
    assert status == 405 and b"allow: post" in head.lower()
    assert len(h.receiver.inbox) == 0


def test_head_gets_405_without_a_body_being_waited_for(hook: Callable[..., Hook]) -> None:
    h = hook()
    response = httpx.head(f"http://{h.host}{PATH}", timeout=5)
    assert response.status_code == 405


@pytest.mark.parametrize("target", [
    "/", "/hubspot", PATH + "/", PATH.upper(), "/hubspot//webhooks", PATH + "/../webhooks", "//[::1/x",
    "http://evil.example.com" + PATH, "*", "/%2e%2e" + PATH,
])
def test_other_paths_get_404(hook: Callable[..., Hook], target: str) -> None:
    h = hook()
    body = json.dumps([event(1)]).encode()
    status, _, _ = exchange(h.address, build("POST", target, h.signed(body, target=target), body))
    assert status == 404
    assert len(h.receiver.inbox) == 0
    h.still_serves()


def test_a_query_is_part_of_the_signed_uri(hook: Callable[..., Hook]) -> None:
    h = hook()
    body = json.dumps([event(3)]).encode()
    target = PATH + "?portal=62515"
    assert exchange(h.address, build("POST", target, h.signed(body, target=target), body))[0] == 200
    assert exchange(h.address, build("POST", target, h.signed(body, target=PATH), body))[0] == 401


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n", b"POST\r\n\r\n", b"\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"POST /hubspot/webhooks HTTP/9.9\r\n\r\n", b"POST /hubspot/webhooks HTTP/1.1 extra\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS ClientHello to a plain port
    bytes(range(256)) * 4,
])
def test_garbage_request_lines_are_refused(hook: Callable[..., Hook], raw: bytes) -> None:
    h = hook()
    status, _, _ = exchange(h.address, raw)
    assert status is None or 400 <= status < 600
    h.still_serves()


# ---------------------------------------------------------------------------------------------- replays

def test_exact_replay_is_answered_2xx_and_queues_nothing(hook: Callable[..., Hook]) -> None:
    h = hook()
    body = json.dumps([event(41), event(42)]).encode()
    request = build("POST", PATH, h.signed(body), body)
    first = exchange(h.address, request)
    assert first[0] == 200 and json.loads(first[2]) == {"deals": 2}
    assert h.receiver.inbox.take(10) == ["41", "42"]  # the next fetch took them
    again = exchange(h.address, request)
    assert again[0] == 200 and json.loads(again[2]) == {"deals": 0, "replay": True}
    assert len(h.receiver.inbox) == 0  # not queued a second time
    assert (h.receiver.accepted, h.receiver.replayed) == (1, 1)


def test_replay_with_a_respelt_signature_header_is_still_a_replay(hook: Callable[..., Hook]) -> None:
    h = hook()
    body = json.dumps([event(43)]).encode()
    headers = h.signed(body)
    assert exchange(h.address, build("POST", PATH, headers, body))[0] == 200
    h.receiver.inbox.take(10)
    respelt = [(k.lower(), f" {v} " if k == "X-HubSpot-Signature-v3" else v) for k, v in headers]
    status, _, answer = exchange(h.address, build("POST", PATH, respelt, body))
    assert status == 200 and json.loads(answer)["replay"] is True
    assert len(h.receiver.inbox) == 0


def test_same_timestamp_other_body_and_same_body_other_timestamp_are_new(hook: Callable[..., Hook]) -> None:
    h = hook()
    ts = now_ms()
    assert h.events([event(44)], timestamp=ts)[0] == 200
    assert json.loads(h.events([event(45)], timestamp=ts)[2]) == {"deals": 1}
    assert json.loads(h.events([event(44)], timestamp=str(int(ts) + 1))[2]) == {"deals": 1}  # HubSpot's retry
    assert h.receiver.replayed == 0


def test_a_refused_body_is_not_remembered_as_accepted(hook: Callable[..., Hook]) -> None:
    h = hook()
    body = b"[" * 1000
    request = build("POST", PATH, h.signed(body), body)
    assert exchange(h.address, request)[0] == 400
    assert exchange(h.address, request)[0] == 400
    assert h.receiver.replayed == 0 and len(h.receiver.replays) == 0


def test_replay_after_the_window_is_refused_by_the_timestamp(hook: Callable[..., Hook]) -> None:
    offset = [0.0]
    h = hook(clock=lambda: time.time() + offset[0], webhook_max_age_seconds=60)
    body = json.dumps([event(46)]).encode()
    request = build("POST", PATH, h.signed(body), body)
    assert exchange(h.address, request)[0] == 200
    offset[0] = 61
    assert exchange(h.address, request)[0] == 401
    assert h.receiver.replayed == 0


def test_concurrent_copies_of_one_delivery_are_accepted_once(hook: Callable[..., Hook]) -> None:
    h = hook()
    body = json.dumps([event(47)]).encode()
    request = build("POST", PATH, h.signed(body), body)
    answers: list[Answer] = []
    lock = threading.Lock()

    def send() -> None:
        answer = exchange(h.address, request)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    bodies = sorted(json.loads(a[2]).get("replay", False) for a in answers)
    assert [a[0] for a in answers] == [200] * 16 and bodies == [False] + [True] * 15
    assert h.receiver.inbox.take(10) == ["47"]


def test_replay_cache_stays_bounded_under_a_flood_of_valid_deliveries(hook: Callable[..., Hook]) -> None:
    offset = [0.0]
    h = hook(clock=lambda: time.time() + offset[0], webhook_replay_cache_size=100)
    endpoint = h.receiver
    first_request: tuple[list[tuple[str, str]], bytes] | None = None
    for deal in range(1, 1001):
        body = json.dumps([event(deal)]).encode()
        headers = h.signed(body)
        first_request = first_request or (headers, body)
        assert endpoint.handle("POST", PATH, headers, body)[0] == 200
    assert len(endpoint.replays) == 100 and endpoint.replays.evicted == 900
    # over HTTP too
    for deal in range(1001, 1011):
        assert h.events([event(deal)])[0] == 200
    assert len(endpoint.replays) == 100
    # the oldest was forgotten: its replay is accepted again, and changes nothing (its id is queued once)
    assert first_request is not None
    queued = len(endpoint.inbox)
    assert endpoint.handle("POST", PATH, *first_request) == (200, {"deals": 1})
    assert len(endpoint.inbox) == queued
    # entries expire with the window: after it, the next delivery finds the cache empty of them
    offset[0] = endpoint.settings.webhook_max_age_seconds * 2 + 1
    assert h.events([event(5000)], timestamp=str(int((time.time() + offset[0]) * 1000)))[0] == 200
    assert len(endpoint.replays) == 1


def test_replay_cache_unit() -> None:
    cache = webhooks_module.ReplayCache(max_size=3)
    assert cache.claim(b"a", expires_ms=100, now_ms=0)
    assert not cache.claim(b"a", expires_ms=100, now_ms=50)
    assert cache.claim(b"a", expires_ms=300, now_ms=101)  # expired: a new delivery may use the key
    for key in (b"b", b"c", b"d"):
        assert cache.claim(key, expires_ms=1000, now_ms=200)
    assert len(cache) == 3 and cache.evicted == 1  # "a" went first
    cache.release(b"c")
    assert cache.claim(b"c", expires_ms=1000, now_ms=200)
    assert cache.claim(b"e", expires_ms=1000, now_ms=1001) and len(cache) == 1  # the expired ones purged


# ---------------------------------------------------------------------------------------------- properties

def _endpoint() -> WebhookEndpoint:
    return WebhookEndpoint(make_settings(webhook_url="https://hooks.example.com/hubspot"), WebhookInbox())


HEADER_NAMES = st.sampled_from(["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp", "Host",
                                "x-hubspot-signature-v3", "Content-Type", "X-Other"])
TEXT = st.text(max_size=40) | st.from_regex(r"[0-9]{0,30}", fullmatch=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["POST", "GET", "post", ""]), target=st.sampled_from([PATH, PATH + "?a=1", "/x", ""]),
       headers=st.lists(st.tuples(HEADER_NAMES, TEXT), max_size=6), body=st.binary(max_size=300))
def test_endpoint_never_raises_on_arbitrary_requests(method: str, target: str, headers: list[tuple[str, str]],
                                                     body: bytes) -> None:
    status, answer = _endpoint().handle(method, target, headers, body)
    assert status in (400, 401, 404, 405) and "error" in answer


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=JSON | st.lists(st.dictionaries(
    st.sampled_from(["subscriptionType", "objectId", "objectTypeId", "eventId", "fromObjectId", "toObjectId",
                     "associationType", "occurredAt"]), JSON, max_size=6), max_size=4),
       raw=st.booleans(), noise=st.binary(max_size=40))
def test_signed_arbitrary_bodies_get_200_or_400(payload: Any, raw: bool, noise: bytes) -> None:
    endpoint = _endpoint()
    body = noise if raw else json.dumps(payload).encode()
    ts = now_ms()
    signature = sign_v3(SECRET, "POST", "https://hooks.example.com/hubspot", body, ts)
    status, answer = endpoint.handle("POST", PATH, [("X-HubSpot-Signature-v3", signature),
                                                     ("X-HubSpot-Request-Timestamp", ts)], body)
    assert status in (200, 400), answer
    if status == 200:
        events = parse_events(body)
        assert all(isinstance(e, dict) for e in events)
        assert all(i.isascii() and i.isdigit() and 0 < int(i) < 2**63 for i in endpoint.inbox.take(10_000))


# ---------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize(("key", "value"), [
    ("webhook_max_body_bytes", 0), ("webhook_max_body_bytes", 2**70), ("webhook_max_body_bytes", 1.5),
    ("webhook_read_timeout_seconds", 0), ("webhook_read_timeout_seconds", float("inf")),
    ("webhook_read_timeout_seconds", float("nan")), ("webhook_read_timeout_seconds", 1e308),
    ("webhook_read_timeout_seconds", -1),
    ("webhook_max_connections", 0), ("webhook_max_connections", 10**9),
    ("webhook_replay_cache_size", 10), ("webhook_replay_cache_size", 2**70),
    ("webhook_max_age_seconds", float("inf")), ("webhook_max_age_seconds", float("nan")),
    ("webhook_max_age_seconds", 0), ("webhook_max_age_seconds", 1e308),
])
def test_webhook_settings_are_bounded(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        make_settings(**{key: value})
