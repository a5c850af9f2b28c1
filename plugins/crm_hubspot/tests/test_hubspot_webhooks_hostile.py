"""Webhook deliveries under hostile input: every refusal is a WebhookRefused with a 4xx status and a reason, never
another exception; nothing unsigned is parsed; a signed body is parsed strictly; only HubSpot deal ids come out.

The transport limits (body size, read deadline, connections, replays) are payhub's HTTP face's and tested there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payhub.api import WebhookRefused, WebhookRequest, WebhookResult
from payhub_hubspot import HubSpotSettings, sign_v3, verify_v3
from payhub_hubspot import webhooks as webhooks_module
from payhub_hubspot.webhooks import parse_events, receive

SECRET = "app-client-secret"
URL = "https://hooks.example.com/webhooks/hs"
SETTINGS = HubSpotSettings.model_validate({"access_token": "pat-test", "start_date": "2020-01-01",
                                           "client_secret": SECRET})


def now_ms() -> str:
    return str(int(time.time() * 1000))


def event(deal: int | str = 11, kind: str = "deal.creation", **extra: Any) -> dict[str, Any]:
    return {"eventId": 100, "subscriptionId": 25, "portalId": 62515, "appId": 1160452,
            "occurredAt": int(time.time() * 1000), "subscriptionType": kind, "attemptNumber": 0,
            "objectId": deal, "changeSource": "CRM", **extra}


def signed(body: bytes, *, timestamp: str | None = None, secret: str = SECRET, signature: str | None = None
           ) -> list[tuple[str, str]]:
    ts = now_ms() if timestamp is None else timestamp
    return [("content-type", "application/json"),
            ("x-hubspot-signature-v3", signature or sign_v3(secret, "POST", URL, body, ts)),
            ("x-hubspot-request-timestamp", ts)]


def request(body: bytes, headers: Sequence[tuple[str, str]] | None = None, **kwargs: Any) -> WebhookRequest:
    return WebhookRequest("POST", URL, list(signed(body, **kwargs) if headers is None else headers), body,
                          datetime.now(UTC))


def answer(req: WebhookRequest) -> WebhookResult | WebhookRefused:
    """What the source makes of ``req``: its result, or the refusal (any other exception fails the test)."""
    try:
        return receive(SETTINGS, req, now_ms=int(time.time() * 1000))
    except WebhookRefused as exc:
        return exc


def status(req: WebhookRequest) -> int:
    result = answer(req)
    return result.status if isinstance(result, WebhookRefused) else 200


# ---------------------------------------------------------------------------------------------- timestamps

BAD_TIMESTAMPS = ["abc", "", " ", "-1700000000000", "1700000000000.0", "1.7e12", "1e3", "١٢٣", "١٧٠٠٠٠٠٠٠٠٠٠٠",
                  "9" * 5000, "9" * 20, "0x18B", "1_700_000_000_000", "+1700000000000", "nan", "inf", "1e400",
                  "1700000000000\x00", "²³"]


@pytest.mark.parametrize("timestamp", BAD_TIMESTAMPS, ids=lambda t: repr(t)[:20])
def test_malformed_timestamp_is_refused(timestamp: str) -> None:
    body = json.dumps([event()]).encode()
    result = answer(request(body, timestamp=timestamp))  # correctly signed for that very timestamp
    assert isinstance(result, WebhookRefused) and result.status in (400, 401), result


@pytest.mark.parametrize("timestamp", BAD_TIMESTAMPS, ids=lambda t: repr(t)[:20])
def test_verify_v3_gives_a_reason_for_malformed_timestamps(timestamp: str) -> None:
    body = b"[]"
    signature = sign_v3(SECRET, "POST", URL, body, timestamp)
    assert verify_v3(SECRET, "POST", URL, body, timestamp, signature, now_ms=int(time.time() * 1000)) is not None


def test_timestamp_with_surrounding_whitespace_still_verifies() -> None:
    # HTTP strips the spaces around a header value; what HubSpot signed is the digits alone.
    body = json.dumps([event(5)]).encode()
    ts = now_ms()
    headers = [(k, f"  {v}\t" if k == "x-hubspot-request-timestamp" else v) for k, v in signed(body, timestamp=ts)]
    result = answer(request(body, headers))
    assert isinstance(result, WebhookResult) and list(result.object_ids) == ["5"]


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
def test_signed_malformed_body_is_400_with_a_reason(name: str, body: bytes) -> None:
    result = answer(request(body))
    assert isinstance(result, WebhookRefused) and result.status == 400, (name, result)
    assert result.reason and len(result.reason) < 200 and SECRET not in result.reason


def test_unsigned_body_never_reaches_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []
    real = webhooks_module.parse_events

    def spy(body: bytes) -> list[dict[str, Any]]:
        parsed.append(body)
        return real(body)

    monkeypatch.setattr(webhooks_module, "parse_events", spy)
    deep = b"[" * 100_000
    assert status(request(deep, headers=[("content-type", "application/json")])) == 401
    assert status(request(deep, secret="someone-else")) == 401
    assert status(request(deep, signature="AAAA")) == 401
    assert status(request(deep, timestamp=str(int(time.time() * 1000) - 10 * 60_000))) == 401  # stale, signed
    assert parsed == []
    assert status(request(deep)) == 400  # the same body, signed: parsed, and refused
    assert parsed == [deep]


def test_valid_payload_shapes_are_accepted() -> None:
    cases: list[tuple[list[Any], list[str]]] = [
        ([], []),
        ([event(1), event("2"), event(3, kind="contact.creation")], ["1", "2"]),
        ([event(2**63 - 1)], [str(2**63 - 1)]),
        ([event("007")], ["7"]),
        ([event(7, kind="deal.propertyChange", propertyName="dealstage", propertyValue="closedwon")], ["7"]),
        ([{"subscriptionType": "deal.associationChange", "associationType": "DEAL_TO_COMPANY", "fromObjectId": 8,
           "toObjectId": 99, "fromObjectTypeId": "0-3", "toObjectTypeId": "0-2"}], ["8"]),
        ([event(9, x="\ud800 lone surrogate", nested={"a": [1.5, -2, None, True]})], ["9"]),
    ]
    for events, ids in cases:
        result = answer(request(json.dumps(events).encode()))
        assert isinstance(result, WebhookResult) and list(result.object_ids) == ids, (events, result)


# ---------------------------------------------------------------------------------------------- headers


def test_header_tricks_do_not_verify() -> None:
    body = json.dumps([event(1)]).encode()
    good = dict(signed(body))
    ts, sig = good["x-hubspot-request-timestamp"], good["x-hubspot-signature-v3"]
    tricks = [
        [("x-hubspot-signature-v3", f"{sig}\x00AAAA"), ("x-hubspot-request-timestamp", ts)],
        [("x-hubspot-signature-v3", f"{sig}, AAAA"), ("x-hubspot-request-timestamp", ts)],
        [("x-hubspot-signature-v3", sig), ("x-hubspot-request-timestamp", ts[:-3])],
        [("x-hubspot-signature-v3", sig), ("x-hubspot-request-timestamp", f"{ts}, {ts}")],
        [("x-hubspot-signature-v3", sig), ("x-hubspot-request-timestamp", ts), ("x-hubspot-signature-v3", sig)],
        [("x-hubspot-signature", sig), ("x-hubspot-request-timestamp", ts)],  # the v1/v2 header is not v3
    ]
    for headers in tricks:
        assert status(request(body, headers)) in (400, 401), headers


# ---------------------------------------------------------------------------------------------- properties

HEADER_NAMES = st.sampled_from(["x-hubspot-signature-v3", "x-hubspot-request-timestamp", "content-type", "x-other"])
TEXT = st.text(max_size=40) | st.from_regex(r"[0-9]{0,30}", fullmatch=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["POST", "GET", "post", ""]), url=st.sampled_from([URL, URL + "?a=1", "", "x"]),
       headers=st.lists(st.tuples(HEADER_NAMES, TEXT), max_size=6), body=st.binary(max_size=300))
def test_arbitrary_requests_are_refused_with_a_status(method: str, url: str, headers: list[tuple[str, str]],
                                                     body: bytes) -> None:
    result = answer(WebhookRequest(method, url, headers, body, datetime.now(UTC)))
    assert isinstance(result, WebhookRefused) and result.status in (400, 401) and result.reason


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=JSON | st.lists(st.dictionaries(
    st.sampled_from(["subscriptionType", "objectId", "objectTypeId", "eventId", "fromObjectId", "toObjectId",
                     "associationType", "occurredAt"]), JSON, max_size=6), max_size=4),
       raw=st.booleans(), noise=st.binary(max_size=40))
def test_signed_arbitrary_bodies_give_deal_ids_or_400(payload: Any, raw: bool, noise: bytes) -> None:
    body = noise if raw else json.dumps(payload).encode()
    result = answer(request(body))
    if isinstance(result, WebhookRefused):
        assert result.status == 400, result
        return
    assert all(isinstance(e, dict) for e in parse_events(body))
    assert all(i.isascii() and i.isdigit() and 0 < int(i) < 2**63 for i in result.object_ids)
    assert len(set(result.object_ids)) == len(result.object_ids)


# ---------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0, -1, 1e308, 3601])
def test_webhook_max_age_is_bounded(value: float) -> None:
    with pytest.raises(ValueError, match="webhook_max_age_seconds"):
        HubSpotSettings.model_validate({"access_token": "pat-test", "start_date": "2020-01-01",
                                        "webhook_max_age_seconds": value})
