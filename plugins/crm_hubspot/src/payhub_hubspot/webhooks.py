"""The webhook receiver: verifies HubSpot's v3 signatures and queues the deal ids it is told about.

HubSpot POSTs a JSON array of events (up to 100) to the app's target URL. The receiver checks the signature and
the timestamp (see :mod:`payhub_hubspot.signature`), answers at once, and records the ids of deals that were
created, changed, deleted, restored, merged or re-associated. The next :meth:`HubSpotSource.fetch` reads those
deals by id (batch read; deleted ones from the archive) before it goes on with its search windows. Webhooks only
speed things up: the windowed search is still the source of truth, so a lost notification (a restart with ids
still queued, a full inbox) delays a deal until its window, never loses it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from payhub_hubspot.settings import HubSpotSettings
from payhub_hubspot.signature import verify_v3

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
DEAL_OBJECT_TYPE_ID = "0-3"


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


def deal_ids(events: Any) -> list[str]:
    """The deal ids that a webhook payload (a list of events, or one event) is about."""
    found: list[str] = []
    for event in events if isinstance(events, list) else [events]:
        if not isinstance(event, dict):
            continue
        kind = str(event.get("subscriptionType") or event.get("eventType") or "")
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
        for candidate in candidates:
            text = str(candidate) if candidate is not None else ""
            if text.isdigit():
                found.append(text)
    return found


class WebhookReceiver:
    """A small HTTP server (stdlib, one thread per request) that feeds a :class:`WebhookInbox`."""

    def __init__(self, settings: HubSpotSettings, inbox: WebhookInbox,
                 clock: Callable[[], float] = time.time) -> None:
        secret = settings.signing_secret
        if secret is None:
            raise ValueError("webhooks need webhook_secret or client_secret")
        self.settings = settings
        self.inbox = inbox
        self.clock = clock
        self._secret = secret
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.rejected = 0

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) the receiver listens on, once started."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve in a daemon thread; does nothing if already started. Raises OSError if it cannot bind."""
        if self._server is not None:
            return
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "payhub-hubspot-webhooks"
            wbufsize = 1 << 16  # one write per response (headers and body), flushed after each request

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                status, answer = receiver.handle("POST", self.path, self.headers.get("Host", ""),
                                                 dict(self.headers.items()), self._body())
                self._answer(status, answer)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(405, {"error": "POST only"})

            def _body(self) -> bytes | None:
                try:
                    length = int(self.headers.get("Content-Length") or "0")
                except ValueError:
                    return None
                if length < 0 or length > MAX_BODY:
                    return None
                return self.rfile.read(length)

            def _answer(self, status: int, answer: dict[str, Any]) -> None:
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                log.debug("webhook receiver: " + format, *args)

        server = ThreadingHTTPServer((self.settings.webhook_host, self.settings.webhook_port or 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="hubspot-webhooks", daemon=True)
        self._thread.start()
        log.info("HubSpot webhook receiver listening on %s:%d%s", *server.server_address[:2],
                 self.settings.webhook_path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def signed_uri(self, path: str, host: str) -> str:
        """The URI HubSpot signed: ``webhook_url`` (plus the request's query), or ``http://<Host><path>``."""
        if self.settings.webhook_url:
            query = urlsplit(path).query
            return self.settings.webhook_url + (f"?{query}" if query and "?" not in self.settings.webhook_url
                                                else "")
        return f"http://{host}{path}"

    def handle(self, method: str, path: str, host: str, headers: dict[str, str], body: bytes | None
               ) -> tuple[int, dict[str, Any]]:
        """Verify one request and queue its deal ids; return (HTTP status, JSON answer)."""
        if urlsplit(path).path != self.settings.webhook_path:
            return 404, {"error": "not found"}
        if body is None:
            return 413, {"error": f"body missing or larger than {MAX_BODY} bytes"}
        lower = {key.lower(): value for key, value in headers.items()}
        reason = verify_v3(self._secret.get_secret_value(), method, self.signed_uri(path, host), body,
                           lower.get("x-hubspot-request-timestamp"), lower.get("x-hubspot-signature-v3"),
                           now_ms=int(self.clock() * 1000),
                           max_age_ms=int(self.settings.webhook_max_age_seconds * 1000))
        if reason is not None:
            self.rejected += 1
            log.warning("HubSpot webhook rejected: %s", reason)
            return 401, {"error": "invalid signature"}
        try:
            events = json.loads(body)
        except ValueError:
            self.rejected += 1
            return 400, {"error": "body is not JSON"}
        ids = deal_ids(events)
        added = self.inbox.add(ids)
        self.accepted += 1
        log.debug("HubSpot webhook: %d events, %d deal ids (%d new)", len(events) if isinstance(events, list)
                  else 1, len(ids), added)
        return 200, {"deals": len(ids)}
