"""The built-in ``webhook`` source: Standard Webhooks signatures, freshness and headers are checked before anything
else, and the body's records are read as the file source reads JSON Lines, each bad one quarantined alone.

These call the plugin directly; tests/test_http_webhooks.py sends the same deliveries over HTTP into a database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cli_helpers import write_config
from pydantic import ValidationError

from payhub.api import SourceRecord, WebhookRefused, WebhookRequest
from payhub.builtin.webhook_source import WebhookSource, WebhookSourceSettings, secret_key
from payhub.settings import validation_problems
from payhub.testing import invoke_cli

KEY = b"0123456789abcdef01234567"  # 24 bytes, the shortest key the scheme allows
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OLD_KEY = b"an older key, 32 bytes long....."
OLD_SECRET = "whsec_" + base64.b64encode(OLD_KEY).decode()
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DEAL = {"id": "D-1", "type": "deal_won", "occurred_at": "2026-12-01T10:00:00Z", "payee_id": "p1",
        "amount": "1200.00", "currency": "EUR"}


def sign(body: bytes, key: bytes = KEY, message_id: str = "msg_1", timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` signed with ``key`` (written independently of payhub's code)."""
    ts = str(int((NOW if timestamp is None else datetime.fromtimestamp(timestamp, UTC)).timestamp()))
    mac = hmac.new(key, f"{message_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": message_id, "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def source(*secrets: str, **settings: object) -> WebhookSource:
    values = {"secret": list(secrets or [SECRET]), **settings}
    return WebhookSource("push", WebhookSourceSettings.model_validate(values))


def request(body: bytes, headers: dict[str, str], received_at: datetime = NOW) -> WebhookRequest:
    return WebhookRequest("POST", "http://payhub.test/webhooks/push", list(headers.items()), body, received_at)


def deliver(body: bytes, headers: dict[str, str] | None = None, received_at: datetime = NOW,
            receiver: WebhookSource | None = None) -> list[SourceRecord]:
    result = (receiver or source()).webhook(request(body, sign(body) if headers is None else headers, received_at))
    assert result.delivery_id == (headers or sign(body))["webhook-id"]
    assert list(result.object_ids) == []
    return list(result.records)


def refusal(body: bytes, headers: dict[str, str], received_at: datetime = NOW,
            receiver: WebhookSource | None = None) -> tuple[int, str]:
    with pytest.raises(WebhookRefused) as refused:
        (receiver or source()).webhook(request(body, headers, received_at))
    return refused.value.status, refused.value.reason


# ------------------------------------------------------------------------------------------------- signatures


def test_the_signature_of_the_reference_libraries_is_accepted() -> None:
    """The known answer of the Standard Webhooks libraries' own tests: secret, id, timestamp, body, signature."""
    receiver = source("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    [record] = deliver(b'{"test": 2432232314}', headers, datetime.fromtimestamp(1614265330, UTC), receiver)
    assert record.problem == "record 1: type is missing"  # genuine, but not a record payhub can use

    headers["webhook-signature"] = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="  # one bit off
    assert refusal(b'{"test": 2432232314}', headers, datetime.fromtimestamp(1614265330, UTC), receiver)[0] == 401


def test_a_signed_record_is_read_as_the_file_source_reads_it() -> None:
    body = json.dumps(DEAL | {"product": "widget"}).encode()
    [record] = deliver(body)
    assert record.problem is None
    assert (record.object_type, record.object_id, record.transition, record.event_type) == (
        "record", "D-1", "deal_won", "deal_won")
    assert record.occurred_at == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert (record.payee_id, Decimal(str(record.amount)), record.currency) == ("p1", Decimal("1200.00"), "EUR")
    assert record.attributes == {"product": "widget"}
    assert record.raw == body.decode()


@pytest.mark.parametrize("forgery", ["body", "key", "id", "timestamp"])
def test_a_forged_delivery_is_refused_401(forgery: str) -> None:
    body = json.dumps(DEAL).encode()
    headers = sign(body, key=b"not the shared secret at all!!" if forgery == "key" else KEY)
    if forgery == "body":
        body = body.replace(b"1200.00", b"9200.00")
    elif forgery == "id":
        headers["webhook-id"] = "msg_2"
    elif forgery == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    assert refusal(body, headers) == (401, "no webhook-signature matches the body and a configured secret")


def test_one_matching_signature_among_several_is_enough_and_other_versions_are_skipped() -> None:
    body = json.dumps(DEAL).encode()
    headers = sign(body)
    good = headers["webhook-signature"]
    bad = sign(body, key=OLD_KEY)["webhook-signature"]
    headers["webhook-signature"] = f"v1a,{good[3:]} {bad} v1,not*base64 nocomma v1, {good}"
    assert deliver(body, headers)[0].problem is None
    headers["webhook-signature"] = f"v1a,{good[3:]} {bad} v2,{good[3:]}"
    assert refusal(body, headers)[0] == 401


def test_several_secrets_let_the_sender_rotate_its_key() -> None:
    receiver = source(SECRET, OLD_SECRET)
    body = json.dumps(DEAL).encode()
    assert deliver(body, sign(body, key=OLD_KEY), receiver=receiver)[0].problem is None
    assert deliver(body, sign(body, key=KEY), receiver=receiver)[0].problem is None
    assert refusal(body, sign(body, key=OLD_KEY))[0] == 401  # the old key alone no longer opens the new receiver


# ------------------------------------------------------------------------------------------------- freshness


@pytest.mark.parametrize(("offset", "accepted"), [(-300, True), (-301, False), (300, True), (301, False),
                                                  (-86_400 * 2, False), (86_400, False)])
def test_stale_and_future_timestamps_are_refused_beyond_the_tolerance(offset: int, accepted: bool) -> None:
    body = json.dumps(DEAL).encode()
    headers = sign(body, timestamp=int(NOW.timestamp()) + offset)
    if accepted:
        assert deliver(body, headers)[0].problem is None
    else:
        status, reason = refusal(body, headers)
        assert status == 401
        assert ("old" if offset < 0 else "ahead of this server's clock") in reason


def test_the_tolerance_is_a_setting() -> None:
    body = json.dumps(DEAL).encode()
    headers = sign(body, timestamp=int((NOW - timedelta(seconds=61)).timestamp()))
    assert refusal(body, headers, receiver=source(tolerance_seconds=60)) == (
        401, "webhook-timestamp is 61 s old, more than the 60 s allowed")


# --------------------------------------------------------------------------------------------------- headers


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused_400(missing: str) -> None:
    body = json.dumps(DEAL).encode()
    headers = sign(body)
    del headers[missing]
    assert refusal(body, headers) == (400, f"missing Standard Webhooks header: {missing}")


def test_no_headers_at_all_names_all_three() -> None:
    assert refusal(b"{}", {}) == (
        400, "missing Standard Webhooks headers: webhook-id, webhook-timestamp, webhook-signature")


@pytest.mark.parametrize(("header", "value"), [("webhook-timestamp", "1e9"), ("webhook-timestamp", "-5"),
                                               ("webhook-timestamp", "١٢٣"), ("webhook-timestamp", "9" * 40),
                                               ("webhook-id", "msg 1"), ("webhook-id", "m" * 201)])
def test_malformed_headers_are_refused_400(header: str, value: str) -> None:
    body = json.dumps(DEAL).encode()
    headers = sign(body) | {header: value}
    assert refusal(body, headers)[0] == 400


def test_an_id_given_twice_with_different_values_is_refused() -> None:
    body = json.dumps(DEAL).encode()
    headers = list(sign(body).items()) + [("webhook-id", "msg_other")]
    with pytest.raises(WebhookRefused) as refused:
        source().webhook(WebhookRequest("POST", "http://payhub.test/", headers, body, NOW))
    assert (refused.value.status, refused.value.reason) == (
        400, "webhook-id is given more than once with different values")


# ------------------------------------------------------------------------------------------------------ body


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "the body is empty; send a JSON object or an array of objects"),
    (b'{"id": "D-1", ', "the body is not valid JSON: Expecting property name enclosed in double quotes: "
                        "line 1 column 15 (char 14)"),
    (b'[{"id": "D-1"}] x', "the body is not valid JSON: extra data at character 15"),
    (b'"deal"', "the body must be a JSON object or an array of objects"),
    (b'{"id": "D\x01"}', "the body is not valid JSON: Invalid control character at: line 1 column 10 (char 9)"),
    (b'{"id": "caf\xe9"}', "the body is not UTF-8 (byte 11)"),
    (b"[" * 100_000 + b"]" * 100_000, "the body is not valid JSON: nested too deep"),
])
def test_a_body_that_is_not_json_is_refused_400_after_the_signature(body: bytes, reason: str) -> None:
    assert refusal(body, sign(body)) == (400, reason)
    assert refusal(body, sign(body, key=OLD_KEY))[0] == 401  # nothing is said about the body of a forgery


def test_a_mixed_batch_quarantines_each_bad_record_alone() -> None:
    body = ("[\n  " + ",\n  ".join([
        json.dumps(DEAL),
        json.dumps(DEAL | {"id": "D-2", "amount": 12.5}),  # a float is not exact
        '{"id": "D-3", "id": "D-4"}',  # ambiguous
        '17',
        json.dumps(DEAL | {"id": "D-5", "payee_id": None}),
        '{"id": "D-6", "type": "deal_won", "occurred_at": "2026-12-01", "payee_id": "p2", "n": NaN}',
        json.dumps(DEAL | {"id": "D-7", "object_type": "order", "transition": "paid"}, indent=2),
    ]) + "\n]").encode()
    records = deliver(body)
    assert [r.problem for r in records] == [
        None,
        "record 2: amount is a JSON float; write it as a string to keep it exact",
        "record 3: ambiguous: key 'id' appears more than once in an object",
        "record 4: invalid JSON: not a JSON object",
        "record 5: payee_id is missing",
        "record 6: invalid JSON: NaN is not a finite number",
        None,
    ]
    assert (records[1].object_id, records[1].transition) == ("D-2", "deal_won")  # keyed: a correction replaces it
    assert (records[6].object_type, records[6].object_id, records[6].transition) == ("order", "D-7", "paid")
    assert "\n" not in (records[6].raw or "")


def test_an_empty_array_carries_no_record() -> None:
    assert deliver(b" [ ] ") == []


def test_object_type_is_a_setting() -> None:
    [record] = deliver(json.dumps(DEAL).encode(), receiver=source(object_type="Opportunity"))
    assert record.object_type == "Opportunity"


def test_fetch_reads_nothing_and_keeps_the_cursor() -> None:
    result = source().fetch("kept", 100)
    assert (list(result.records), result.cursor, result.more) == ([], "kept", False)


# -------------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("secret", "problem"), [
    ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a Standard Webhooks secret is 'whsec_' followed by the base64 of the key"),
    ("whsec_not base64!", "the part after 'whsec_' is not base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "the key is 5 bytes long; Standard Webhooks keys are 24 to 64 "
                                                     "bytes"),
    ("whsec_" + base64.b64encode(bytes(65)).decode(), "the key is 65 bytes long; Standard Webhooks keys are 24 to 64 "
                                                      "bytes"),
])
def test_a_bad_secret_is_a_settings_error_that_does_not_quote_it(secret: str, problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WebhookSourceSettings.model_validate({"secret": secret})
    problems = validation_problems(raised.value, prefix="sources.push")
    assert problems == [("sources.push.secret", f"Value error, {problem}")]
    assert secret.removeprefix("whsec_") not in str(problems)


def test_several_secrets_are_named_by_their_number() -> None:
    with pytest.raises(ValidationError) as raised:
        WebhookSourceSettings.model_validate({"secret": [SECRET, "whsec_"]})
    assert [message for _key, message in validation_problems(raised.value)] == [
        "Value error, secret 2: the key is 0 bytes long; Standard Webhooks keys are 24 to 64 bytes"]


def test_a_secret_decodes_with_or_without_padding() -> None:
    assert secret_key(SECRET) == KEY
    assert secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    padded = "whsec_" + base64.b64encode(bytes(range(25))).decode()
    assert secret_key(padded.rstrip("=")) == secret_key(padded) == bytes(range(25))


@pytest.mark.parametrize(("values", "key"), [({"tolerance_seconds": 0}, "tolerance_seconds"),
                                             ({"tolerance_seconds": 3601}, "tolerance_seconds"),
                                             ({"object_type": "deal\u202e"}, "object_type"),
                                             ({"secret": []}, "secret")])
def test_other_settings_are_bounded(values: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WebhookSourceSettings.model_validate({"secret": SECRET} | values)
    assert [k for k, _ in validation_problems(raised.value)] == [key]


def test_config_show_masks_every_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'payhub.db'}",
                          f'[sources.push]\nplugin = "webhook"\nsecret = ["{SECRET}", "{OLD_SECRET}"]\n')
    result = invoke_cli("-c", str(config), "config", "show")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sources"]["push"]["secret"] == ["**********", "**********"]
    assert SECRET not in result.output and OLD_SECRET not in result.output
