"""HubSpot webhook deliveries: the v3 signature on the raw bytes, strict parsing, and the deals they name.

HubSpot POSTs a JSON array of events (up to 100) to the app's target URL, ``/webhooks/<source name>`` on payhub's
HTTP face, which hands it to :meth:`HubSpotSource.webhook <payhub_hubspot.source.HubSpotSource.webhook>` and so to
:func:`receive`. It checks the signature and the timestamp (see :mod:`payhub_hubspot.signature`) before anything
parses the body, then names the deals that were created, changed, deleted, restored, merged or re-associated; payhub
queues their ids in its database and the next poll reads those deals by id. Webhooks only speed things up: the
windowed search is still the source of truth, so a refused or lost notification delays a deal until its window,
never loses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from payhub.api import WebhookRefused, WebhookRequest, WebhookResult
from payhub_hubspot.settings import HubSpotSettings
from payhub_hubspot.signature import verify_v3

__all__ = ["DEAL_OBJECT_TYPE_ID", "PayloadError", "as_object_id", "deal_ids", "delivery_id", "parse_events", "receive",
           "signed_url"]

DEAL_OBJECT_TYPE_ID = "0-3"
MAX_OBJECT_ID = 2**63 - 1
"""HubSpot object ids are 64-bit integers."""

_ID_TEXT = re.compile(r"[0-9]{1,19}")
_ID_FIELDS = ("objectId", "fromObjectId", "toObjectId")
_TEXT_FIELDS = ("subscriptionType", "eventType", "objectTypeId", "fromObjectTypeId", "toObjectTypeId",
                "associationType", "propertyName", "changeSource")
_COUNT_FIELDS = ("eventId", "subscriptionId", "portalId", "appId", "occurredAt", "attemptNumber")
SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"


class PayloadError(ValueError):
    """A signed body that is not a JSON array of HubSpot events; the message says why (no body content)."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise PayloadError("a number has more than 19 digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text) if len(text) <= 40 else math.inf
    if not math.isfinite(value):
        raise PayloadError("a number is too large")
    return value


def _constant(name: str) -> Any:
    raise PayloadError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise PayloadError("an object has a key twice")
    return result


def as_object_id(value: Any) -> str | None:
    """``value`` as a HubSpot object id (decimal text without leading zeros), or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value) if 0 < value <= MAX_OBJECT_ID else None
    elif isinstance(value, str) and _ID_TEXT.fullmatch(value):
        text = str(int(value)) if 0 < int(value) <= MAX_OBJECT_ID else None
    else:
        text = None
    return text


def _check_event(index: int, event: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise PayloadError(f"event {index} is not an object")
    if not isinstance(event.get("subscriptionType", event.get("eventType")), str):
        raise PayloadError(f"event {index}: subscriptionType must be a string")
    for name in _TEXT_FIELDS:
        if name in event and not isinstance(event[name], str):
            raise PayloadError(f"event {index}: {name} must be a string")
    for name in _COUNT_FIELDS:
        value = event.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PayloadError(f"event {index}: {name} must be a non-negative integer")
    for name in _ID_FIELDS:
        if name in event and as_object_id(event[name]) is None:
            raise PayloadError(f"event {index}: {name} must be an object id (an integer from 1 to 2^63-1)")
    return event


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The events of a webhook body: a UTF-8 JSON array of event objects whose known fields have their types.

    Raises :class:`PayloadError` for anything else: invalid UTF-8, a BOM, invalid JSON, ``NaN``/``Infinity``,
    numbers of more than 19 digits or out of float range, a key twice in an object, nesting beyond the
    interpreter's recursion limit, a body that is not an array, an event that is not an object, or a known field
    of the wrong type (ids must be integers from 1 to 2^63-1; counters non-negative integers; names strings).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant,
                          object_pairs_hook=_unique)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    except ValueError as exc:
        raise PayloadError(f"body is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, list):
        raise PayloadError("body is not a JSON array of events")
    return [_check_event(index, event) for index, event in enumerate(data)]


def deal_ids(events: Any) -> list[str]:
    """The deal ids that a webhook payload (a list of events, or one event) is about; other entries are skipped."""
    found: list[str] = []
    for event in events if isinstance(events, list) else [events]:
        if not isinstance(event, dict):
            continue
        kind = event.get("subscriptionType") or event.get("eventType")
        kind = kind if isinstance(kind, str) else ""
        candidates: list[Any] = []
        if kind == "deal.associationChange":
            association = str(event.get("associationType") or "").upper()
            if association.startswith("DEAL_TO_") or str(event.get("fromObjectTypeId")) == DEAL_OBJECT_TYPE_ID:
                candidates.append(event.get("fromObjectId"))
            if association.endswith("_TO_DEAL") or str(event.get("toObjectTypeId")) == DEAL_OBJECT_TYPE_ID:
                candidates.append(event.get("toObjectId"))
        elif kind.startswith("deal.") or (
                kind.startswith("object.") and str(event.get("objectTypeId")) == DEAL_OBJECT_TYPE_ID):
            candidates.append(event.get("objectId"))
        found += [deal_id for deal_id in map(as_object_id, candidates) if deal_id is not None]
    return found


def signed_url(settings: HubSpotSettings, url: str) -> str:
    """The URL HubSpot signed: ``webhook_url`` (plus the request's query, unless it has one), else ``url``."""
    if settings.webhook_url is None:
        return url
    query = url.partition("?")[2]
    return settings.webhook_url + (f"?{query}" if query and "?" not in settings.webhook_url else "")


def delivery_id(timestamp: str, body: bytes) -> str:
    """The id of a delivery: SHA-256 of its timestamp and body, the same for an exact copy (however its headers are
    spelt). HubSpot's own retries carry a new timestamp and a higher ``attemptNumber``, so they are new deliveries."""
    return hashlib.sha256(timestamp.encode() + b"\n" + body).hexdigest()


def receive(settings: HubSpotSettings, request: WebhookRequest, now_ms: int) -> WebhookResult:
    """Check one delivery and return the ids of the deals it names, with its :func:`delivery_id`.

    Raises :class:`~payhub.api.WebhookRefused`: 404 when the source has no signing key (``webhook_secret`` or
    ``client_secret``); 400 when the signature or timestamp header came more than once; 401 when the signature is
    missing, wrong, or its timestamp is malformed or more than ``webhook_max_age_seconds`` away from ``now_ms``;
    400 when the signed body is not a JSON array of events (:func:`parse_events`). Nothing unsigned is parsed.
    Pure: safe to call from many threads at once.
    """
    secret = settings.signing_secret
    if secret is None:
        raise WebhookRefused(404, "this source takes no webhooks (it has neither webhook_secret nor client_secret)")
    signatures = request.header_values(SIGNATURE_HEADER)
    timestamps = request.header_values(TIMESTAMP_HEADER)
    if len(signatures) > 1 or len(timestamps) > 1:
        raise WebhookRefused(400, "X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp came more than once")
    signature = signatures[0].strip(" \t") if signatures else None
    timestamp = timestamps[0].strip(" \t") if timestamps else None
    reason = verify_v3(secret.get_secret_value(), request.method, signed_url(settings, request.url), request.body,
                       timestamp, signature, now_ms=now_ms, max_age_ms=int(settings.webhook_max_age_seconds * 1000))
    if reason is not None or timestamp is None:
        raise WebhookRefused(401, reason or "missing X-HubSpot-Request-Timestamp")
    try:
        events = parse_events(request.body)
    except PayloadError as exc:
        raise WebhookRefused(400, str(exc)) from None
    return WebhookResult(object_ids=list(dict.fromkeys(deal_ids(events))),
                         delivery_id=delivery_id(timestamp, request.body))
