"""HubSpot v3 request signatures: the published test vector, the URI decoding rules, stale and forged requests."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from payhub_hubspot.signature import DECODED, decode_uri, sign_v3, verify_v3

# Published by HubSpot in its own Python client's test suite (HubSpot/hubspot-api-python,
# tests/spec/utils/test_signature.py, test_get_signature__v3).
PUBLISHED = {
    "client_secret": "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
    "request_body": "{'example_field':'example_value'}",
    "url": "https://www.example.com/webhook_uri",
    "http_method": "POST",
    "timestamp": "1693657560000",
    "signature": "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=",
}


def independent(secret: str, source: str) -> str:
    """The documented algorithm written out again: base64(HMAC-SHA256(secret, utf-8 source string))."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), source.encode("utf-8"), hashlib.sha256).digest()).decode()


def test_published_vector() -> None:
    v = PUBLISHED
    body = v["request_body"].encode()
    assert sign_v3(v["client_secret"], v["http_method"], v["url"], body, v["timestamp"]) == v["signature"]
    now = int(v["timestamp"]) + 60_000
    assert verify_v3(v["client_secret"], "POST", v["url"], body, v["timestamp"], v["signature"], now_ms=now) is None


def test_uri_decoding_follows_the_documented_table() -> None:
    # Each listed escape is decoded (either case); anything else (%20, %26) is left as it came.
    uri = "https://hooks.example.com/hubspot%2Fdeals%3Fa%3a1?x=%40me%21%24%27%28%29%2A%2C%3B&y=a%20b%26c"
    assert decode_uri(uri) == "https://hooks.example.com/hubspot/deals?a:1?x=@me!$'()*,;&y=a%20b%26c"
    assert set(DECODED.values()) == set(":/?@!$'()*,;")
    secret, ts, body = "s3cret", "1700000000000", '[{"objectId":1}]'
    expected = independent(secret, "POST" + decode_uri(uri) + body + ts)
    assert sign_v3(secret, "POST", uri, body.encode(), ts) == expected
    assert verify_v3(secret, "POST", uri, body.encode(), ts, expected, now_ms=int(ts)) is None


def test_non_ascii_body_is_signed_as_utf8() -> None:
    secret, ts, uri = "sécret", "1700000000000", "https://example.com/hook"
    body = '[{"propertyValue":"Zürich Ünïcode"}]'
    assert sign_v3(secret, "POST", uri, body.encode("utf-8"), ts) == independent(secret, "POST" + uri + body + ts)


@pytest.mark.parametrize(("change", "reason"), [
    ({"timestamp": str(1700000000000 - 300_001)}, "old"),
    ({"timestamp": str(1700000000000 + 300_001)}, "future"),
    ({"body": b'[{"objectId":2}]'}, "does not match"),
    ({"secret": "other"}, "does not match"),
    ({"uri": "https://example.com/other"}, "does not match"),
    ({"method": "PUT"}, "does not match"),
    ({"signature": None}, "missing"),
    ({"timestamp": None}, "missing"),
    ({"timestamp": "yesterday"}, "epoch"),
])
def test_rejected(change: dict[str, object], reason: str) -> None:
    secret, uri, body, ts = "s3cret", "https://example.com/hook", b'[{"objectId":1}]', "1700000000000"
    signature = sign_v3(secret, "POST", uri, body, ts)
    args: dict[str, object] = {"secret": secret, "method": "POST", "uri": uri, "body": body, "timestamp": ts,
                               "signature": signature}
    if "timestamp" in change and change["timestamp"] is not None and str(change["timestamp"]).isdigit():
        # a stale or future request, correctly signed for its own timestamp
        args["signature"] = sign_v3(secret, "POST", uri, body, str(change["timestamp"]))
    args.update(change)
    result = verify_v3(str(args["secret"]), str(args["method"]), str(args["uri"]), args["body"],  # type: ignore[arg-type]
                       args["timestamp"], args["signature"], now_ms=1700000000000)  # type: ignore[arg-type]
    assert result is not None and reason in result


def test_exactly_five_minutes_old_is_accepted() -> None:
    secret, uri, body, ts = "s3cret", "https://example.com/hook", b"[]", "1700000000000"
    signature = sign_v3(secret, "POST", uri, body, ts)
    assert verify_v3(secret, "POST", uri, body, ts, signature, now_ms=1700000000000 + 300_000) is None
