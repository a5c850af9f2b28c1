"""The webhook receiver: verifies HubSpot's v3 signatures and queues the deal ids it is told about.

HubSpot POSTs a JSON array of events (up to 100) to the app's target URL. The receiver checks the signature and
the timestamp (see :mod:`payhub_hubspot.signature`), answers at once, and records the ids of deals that were
created, changed, deleted, restored, merged or re-associated. The next :meth:`HubSpotSource.fetch` reads those
deals by id (batch read; deleted ones from the archive) before it goes on with its search windows. Webhooks only
speed things up: the windowed search is still the source of truth, so a lost notification (a restart with ids
still queued, a full inbox, a refused request) delays a deal until its window, never loses it.

:class:`WebhookEndpoint` is the transport-free part (signature on the raw bytes, replay refusal, strict parsing,
queueing): it answers ``(method, target, headers, body)`` with ``(status, JSON)`` and never raises on any input.
:class:`WebhookReceiver` serves it over HTTP with the limits of :mod:`payhub_hubspot.webhook_server`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from payhub_hubspot.settings import HubSpotSettings
from payhub_hubspot.signature import verify_v3
from payhub_hubspot.webhook_server import BoundedHTTPServer

__all__ = ["PayloadError", "ReplayCache", "WebhookEndpoint", "WebhookInbox", "WebhookReceiver", "deal_ids",
           "parse_events"]

log = logging.getLogger(__name__)

DEAL_OBJECT_TYPE_ID = "0-3"
MAX_OBJECT_ID = 2**63 - 1
"""HubSpot object ids are 64-bit integers."""

_ID_TEXT = re.compile(r"[0-9]{1,19}")
_ID_FIELDS = ("objectId", "fromObjectId", "toObjectId")
_TEXT_FIELDS = ("subscriptionType", "eventType", "objectTypeId", "fromObjectTypeId", "toObjectTypeId",
                "associationType", "propertyName", "changeSource")
_COUNT_FIELDS = ("eventId", "subscriptionId", "portalId", "appId", "occurredAt", "attemptNumber")


class WebhookInbox:
    """Deal ids waiting to be read, in arrival order, each once. Thread-safe and bounded."""

    def __init__(self, max_pending: int = 100_000) -> None:
        self.max_pending = max_pending
        self._ids: dict[str, None] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def add(self, ids: Iterable[str]) -> int:
        """Queue ``ids``; return how many were new. Past ``max_pending`` ids are dropped (the windows find them)."""
        added = 0
        with self._lock:
            for deal_id in ids:
                if deal_id in self._ids:
                    continue
                if len(self._ids) >= self.max_pending:
                    self.dropped += 1
                    continue
                self._ids[deal_id] = None
                added += 1
        return added

    def take(self, count: int) -> list[str]:
        """Remove and return up to ``count`` ids, oldest first."""
        with self._lock:
            taken = list(self._ids)[:count]
            for deal_id in taken:
                del self._ids[deal_id]
        return taken

    def put_back(self, ids: Iterable[str]) -> None:
        """Queue ``ids`` again ahead of the rest (their fetch was not stored)."""
        with self._lock:
            again = dict.fromkeys(ids)
            again.update(self._ids)
            self._ids = again

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


class ReplayCache:
    """Deliveries accepted within the signature window, to refuse exact replays. Thread-safe, bounded.

    Each key is remembered until its delivery's timestamp leaves the window (after that the signature check
    refuses it anyway). When ``max_size`` keys are held, the oldest is forgotten (``evicted``): a replay of it
    inside the window is then accepted again, which is harmless because re-queued deal ids are de-duplicated and
    re-read deals add nothing (event dedup keys).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.evicted = 0
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: bytes, expires_ms: int, now_ms: int) -> bool:
        """Record ``key`` until ``expires_ms``; False if it is already recorded and not expired (a replay)."""
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now_ms:
                self._seen.popitem(last=False)
            known = self._seen.get(key)
            if known is not None and known >= now_ms:
                return False
            self._seen[key] = expires_ms
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_size:
                self._seen.popitem(last=False)
                self.evicted += 1
            return True

    def release(self, key: bytes) -> None:
        """Forget ``key`` (its delivery was refused after all)."""
        with self._lock:
            self._seen.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


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


def _object_id(value: Any) -> str | None:
    """``value`` as a HubSpot object id (decimal text), or None if it is not one."""
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
        if name in event and _object_id(event[name]) is None:
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
        found += [deal_id for deal_id in map(_object_id, candidates) if deal_id is not None]
    return found


def _one(headers: Sequence[tuple[str, str]], name: str) -> tuple[str | None, bool]:
    """The value of header ``name`` (case-insensitive, without surrounding spaces) and whether it came at most once."""
    values = [value.strip(" \t") for key, value in headers if key.lower() == name]
    return (values[0] if values else None), len(values) <= 1


class WebhookEndpoint:
    """Answers one webhook delivery; independent of the HTTP server that carries it.

    In order: the path (404) and method (405); the signature and timestamp headers, each at most once (400); the
    v3 signature over the raw bytes (401) - nothing unsigned is parsed; an exact replay of a delivery accepted
    within the window (same timestamp and body) gets 200 ``{"replay": true}`` and queues nothing; the body must
    be a JSON array of events (400, see :func:`parse_events`); then the deal ids are queued and the answer is
    200 ``{"deals": n}``. HubSpot does not retry 400, 401, 404 or 405; it retries other failures, so a replay
    gets 2xx: the delivery was already accepted.
    """

    def __init__(self, settings: HubSpotSettings, inbox: WebhookInbox,
                 clock: Callable[[], float] = time.time) -> None:
        secret = settings.signing_secret
        if secret is None:
            raise ValueError("webhooks need webhook_secret or client_secret")
        self.settings = settings
        self.inbox = inbox
        self.clock = clock
        self.replays = ReplayCache(settings.webhook_replay_cache_size)
        self._secret = secret
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected = 0
        self.replayed = 0

    def signed_uri(self, target: str, host: str) -> str:
        """The URI HubSpot signed: ``webhook_url`` (plus the request's query), or ``http://<Host><target>``."""
        if self.settings.webhook_url:
            query = target.partition("?")[2]
            return self.settings.webhook_url + (f"?{query}" if query and "?" not in self.settings.webhook_url
                                                else "")
        return f"http://{host}{target}"

    def handle(self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes
               ) -> tuple[int, dict[str, Any]]:
        """Verify one delivery and queue its deal ids; return (HTTP status, JSON answer). Never raises."""
        if target.partition("?")[0] != self.settings.webhook_path:
            return 404, {"error": "not found"}
        if method != "POST":
            return 405, {"error": "POST only"}
        signature, once_s = _one(headers, "x-hubspot-signature-v3")
        timestamp, once_t = _one(headers, "x-hubspot-request-timestamp")
        host, once_h = _one(headers, "host")
        if not (once_s and once_t and once_h):
            return self._reject(400, "a signature, timestamp or Host header came more than once")
        now_ms = int(self.clock() * 1000)
        max_age_ms = int(self.settings.webhook_max_age_seconds * 1000)
        reason = verify_v3(self._secret.get_secret_value(), method, self.signed_uri(target, host or ""), body,
                           timestamp, signature, now_ms=now_ms, max_age_ms=max_age_ms)
        if reason is not None or timestamp is None:
            return self._reject(401, reason or "no timestamp", answer="invalid signature")
        key = hashlib.sha256(timestamp.encode() + b"\n" + body).digest()
        if not self.replays.claim(key, int(timestamp) + max_age_ms, now_ms):
            self._count("replayed")
            log.info("HubSpot webhook: replay of an accepted delivery (timestamp %s) ignored", timestamp)
            return 200, {"deals": 0, "replay": True}
        try:
            events = parse_events(body)
        except PayloadError as exc:
            self.replays.release(key)
            return self._reject(400, str(exc))
        ids = deal_ids(events)
        added = self.inbox.add(ids)
        self._count("accepted")
        log.debug("HubSpot webhook: %d events, %d deal ids (%d new)", len(events), len(ids), added)
        return 200, {"deals": len(ids)}

    def _reject(self, status: int, reason: str, answer: str | None = None) -> tuple[int, dict[str, Any]]:
        self._count("rejected")
        log.warning("HubSpot webhook rejected (%d): %s", status, reason)
        return status, {"error": answer or reason}

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class WebhookReceiver(WebhookEndpoint):
    """The endpoint served over HTTP (:class:`~payhub_hubspot.webhook_server.BoundedHTTPServer`, own thread)."""

    def __init__(self, settings: HubSpotSettings, inbox: WebhookInbox,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings, inbox, clock)
        self.server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) the receiver listens on, once started."""
        if self.server is None:
            return None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve in a daemon thread; does nothing if already started. Raises OSError if it cannot bind."""
        if self.server is not None:
            return
        settings = self.settings
        server = BoundedHTTPServer((settings.webhook_host, settings.webhook_port or 0), self.handle,
                                   path=settings.webhook_path, max_body=settings.webhook_max_body_bytes,
                                   read_timeout=settings.webhook_read_timeout_seconds,
                                   max_connections=settings.webhook_max_connections)
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="hubspot-webhooks", daemon=True)
        self._thread.start()
        log.info("HubSpot webhook receiver listening on %s:%d%s", *server.server_address[:2], settings.webhook_path)

    def stop(self) -> None:
        """Stop accepting; requests in progress end by their deadline."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
