"""The ``webhook`` source: trigger events that any system pushes to ``POST /webhooks/<source name>``, signed as
Standard Webhooks (https://www.standardwebhooks.com) say. See docs/sources/webhook.md.

A delivery carries ``webhook-id`` (the message id, the same on every resend), ``webhook-timestamp`` (the attempt's
time in whole Unix seconds) and ``webhook-signature``: space-separated signatures ``v1,<base64>``, each the
HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}`` under a shared secret (other versions, such as ``v1a``,
are skipped). The delivery is taken when one signature matches one of the configured secrets (compared in constant
time, so several secrets allow a rotation without downtime) and its timestamp is within ``tolerance_seconds`` of
now; its id becomes the delivery id, which the core remembers for a day to refuse a replay.

The body is one JSON object or a JSON array of objects, each a record in the shape of a JSON Lines record of the
file source (:mod:`payhub.builtin.file_source`), read by that source's own code: a record that cannot be used is
quarantined alone, its reason starting with its position (``record 2: amount is missing``), and the others are
stored. A body that is not JSON at all is refused. :meth:`WebhookSource.fetch` reads nothing and keeps the cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator

from payhub.api import (
    FetchResult,
    PluginSettings,
    Source,
    SourceRecord,
    WebhookRefused,
    WebhookRequest,
    WebhookResult,
)
from payhub.builtin.file_formats import Parsed, jsonl_records
from payhub.builtin.file_lines import Encoding, LineReader
from payhub.builtin.file_source import MAX_ID_CHARS, FileSource, FileSourceSettings

SECRET_PREFIX = "whsec_"
KEY_BYTES = (24, 64)
"""The sizes of a secret key the scheme allows (192 to 512 bits)."""
MAX_SECRETS = 10
MAX_RECORD_BYTES = 64 * 1024 * 1024
"""No record of a body is cut: a body is at most ``http.max_body_bytes`` (at most 64 MiB)."""

_MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,200}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_UTF8 = Encoding("utf-8", 1, 0)


def secret_key(text: str) -> bytes:
    """The HMAC key of a secret written ``whsec_<base64>``; ValueError, never quoting the secret, otherwise."""
    text = text.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a Standard Webhooks secret is '{SECRET_PREFIX}' followed by the base64 of the key")
    encoded = text[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after '{SECRET_PREFIX}' is not base64") from None
    low, high = KEY_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"the key is {len(key)} bytes long; Standard Webhooks keys are {low} to {high} bytes")
    return key


class WebhookSourceSettings(PluginSettings):
    secret: list[SecretStr] = Field(min_length=1, max_length=MAX_SECRETS)
    tolerance_seconds: int = Field(300, ge=1, le=3600)
    object_type: str = Field("record", min_length=1, max_length=MAX_ID_CHARS)

    @field_validator("secret", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | SecretStr) else value

    @field_validator("secret")
    @classmethod
    def _keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for number, secret in enumerate(value, 1):
            try:
                secret_key(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"secret {number}: {exc}" if len(value) > 1 else str(exc)) from None
        return value

    @field_validator("object_type")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        """The file source's rule for its ``object_type``: an event id (normalised, no control character)."""
        try:
            return FileSourceSettings(path=Path("-"), object_type=value).object_type
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


class _DeliveryRecords(FileSource):
    """The file source's reading of a JSON Lines record, for the records of a delivery; never fetches."""

    def __init__(self, name: str, object_type: str) -> None:
        super().__init__(name, FileSourceSettings(path=Path(name), format="jsonl", object_type=object_type,
                                                  max_record_bytes=MAX_RECORD_BYTES))

    def _where(self, parsed: Parsed) -> str:
        return f"record {parsed.first}"

    def read(self, items: list[str]) -> list[SourceRecord]:
        """One record per JSON text of ``items``, in order (texts without raw line breaks)."""
        data = "\n".join(items).encode("utf-8")
        reader = LineReader(io.BytesIO(data), _UTF8, 0, 1, len(data), MAX_RECORD_BYTES, settled=True)
        return [self._record(parsed, None) for parsed in jsonl_records(reader, _UTF8, self.limits)
                if not parsed.blank]


class WebhookSource(Source):
    """Receives signed deliveries of records; reads nothing on its own."""

    settings_model = WebhookSourceSettings
    settings: WebhookSourceSettings

    def __init__(self, name: str, settings: WebhookSourceSettings) -> None:
        super().__init__(name, settings)
        self._keys = [secret_key(secret.get_secret_value()) for secret in settings.secret]
        self._records = _DeliveryRecords(name, settings.object_type)

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        return FetchResult([], cursor, False)

    def webhook(self, request: WebhookRequest) -> WebhookResult:
        message_id = _single(request, "webhook-id")
        timestamp = _single(request, "webhook-timestamp")
        signatures = " ".join(request.header_values("webhook-signature")).strip()
        missing = [name for name, value in (("webhook-id", message_id), ("webhook-timestamp", timestamp),
                                            ("webhook-signature", signatures)) if not value]
        if missing or message_id is None or timestamp is None:
            raise WebhookRefused(400, f"missing Standard Webhooks header{'s' if len(missing) > 1 else ''}: "
                                      f"{', '.join(missing)}")
        if not _MESSAGE_ID.fullmatch(message_id):
            raise WebhookRefused(400, "webhook-id must be 1 to 200 visible ASCII characters")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise WebhookRefused(400, "webhook-timestamp must be whole Unix seconds")
        if not self._signed(message_id, timestamp, request.body, signatures):
            raise WebhookRefused(401, "no webhook-signature matches the body and a configured secret")
        age = request.received_at.timestamp() - int(timestamp)
        tolerance = self.settings.tolerance_seconds
        if age > tolerance:
            raise WebhookRefused(401, f"webhook-timestamp is {age:.0f} s old, more than the {tolerance} s allowed")
        if -age > tolerance:
            raise WebhookRefused(401, f"webhook-timestamp is {-age:.0f} s ahead of this server's clock, more than "
                                      f"the {tolerance} s allowed")
        return WebhookResult(records=self._records.read(_items(request.body)), delivery_id=message_id)

    def _signed(self, message_id: str, timestamp: str, body: bytes, signatures: str) -> bool:
        """Whether one ``v1`` signature of ``signatures`` is the HMAC of the content under one of the keys."""
        content = f"{message_id}.{timestamp}.".encode("ascii") + body
        expected = [hmac.new(key, content, hashlib.sha256).digest() for key in self._keys]
        for signature in signatures.split():
            version, comma, encoded = signature.partition(",")
            if version != "v1" or not comma:
                continue
            try:
                given = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            if any(hmac.compare_digest(given, digest) for digest in expected):
                return True
        return False


def _single(request: WebhookRequest, name: str) -> str | None:
    """The value of header ``name``, which may be repeated only with the same value."""
    values = set(request.header_values(name))
    if len(values) > 1:
        raise WebhookRefused(400, f"{name} is given more than once with different values")
    return values.pop().strip() if values else None


def _skip(_value: Any) -> None:
    return None


_SCANNER = json.JSONDecoder(object_pairs_hook=_skip, parse_constant=_skip, parse_int=_skip, parse_float=_skip)
"""Finds where JSON values end without judging their content (duplicate keys, NaN, huge numbers): that is each
record's reader's job, so that such a record is quarantined alone."""


def _items(body: bytes) -> list[str]:
    """The JSON text of each record of ``body`` (one object, or each item of an array), with its line breaks (only
    white space between tokens) made spaces; WebhookRefused(400) when the body is not JSON."""
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise WebhookRefused(400, f"the body is not UTF-8 (byte {exc.start})") from None
    start = _after_space(text, 0)
    if start == len(text):
        raise WebhookRefused(400, "the body is empty; send a JSON object or an array of objects")
    try:
        _value, end = _SCANNER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise WebhookRefused(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WebhookRefused(400, "the body is not valid JSON: nested too deep") from None
    if _after_space(text, end) != len(text):
        raise WebhookRefused(400, f"the body is not valid JSON: extra data at character {end}")
    if text[start] == "{":
        return [_one_line(text[start:end])]
    if text[start] != "[":
        raise WebhookRefused(400, "the body must be a JSON object or an array of objects")
    items: list[str] = []
    at = _after_space(text, start + 1)
    while text[at] != "]":  # the whole array parsed above: each item and separator is where expected
        _value, after = _SCANNER.raw_decode(text, at)
        items.append(_one_line(text[at:after]))
        at = _after_space(text, after)
        if text[at] == ",":
            at = _after_space(text, at + 1)
    return items


def _after_space(text: str, at: int) -> int:
    """The position of the first character at or after ``at`` that is not JSON white space."""
    while at < len(text) and text[at] in " \t\n\r":
        at += 1
    return at


def _one_line(item: str) -> str:
    """``item`` on one line: a JSON text whose strings hold no raw control character (the scanner refuses them),
    so every CR and LF in it is white space between tokens."""
    return item.replace("\r", " ").replace("\n", " ")
