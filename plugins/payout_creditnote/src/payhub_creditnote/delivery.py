"""Optional delivery of credit notes to a billing system: ``POST`` the XML to a configured URL.

The request is idempotent by document number: it carries ``Idempotency-Key: <document id>`` (and
``X-Document-Number``), and a billing system that already has the document answers 409 or 2xx again. Answers:

==================================  =================================================================
2xx, or 409 (already received)      :class:`Delivered`
other 4xx                           :class:`Refused` (the billing system will not take this document)
connection never opened, 408, 429   :class:`NotDelivered` with ``sent=False``
5xx, timeout, dropped connection    :class:`NotDelivered` with ``sent=True`` (it may have been received)
==================================  =================================================================
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr


@dataclass(frozen=True, slots=True)
class Delivered:
    reference: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


@dataclass(frozen=True, slots=True)
class NotDelivered:
    reason: str
    sent: bool


Answer = Delivered | Refused | NotDelivered


class BillingClient:
    """Delivers documents to the billing system at ``url``. The timeouts and headers are checked when the client
    is made; its ``httpx.Client`` (connection pool, TLS context) is created by the first delivery (:attr:`http`)."""

    def __init__(self, url: str, token: SecretStr | None, *, timeout: float, connect_timeout: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"User-Agent": "payhub-creditnote/0.1", "Content-Type": "application/xml"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.url = url
        self._options: dict[str, Any] = {"timeout": httpx.Timeout(timeout, connect=min(timeout, connect_timeout)),
                                         "headers": httpx.Headers(headers), "transport": transport}
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def http(self) -> httpx.Client:
        """The ``httpx.Client``, created on first use with the settings given to the constructor."""
        client = self._http
        if client is None:
            with self._lock:
                if self._http is None:
                    self._http = httpx.Client(**self._options)
                    if self._closed:  # used after close(): fails as a closed httpx.Client does
                        self._http.close()
                client = self._http
        return client

    def deliver(self, document_id: str, number: int, document: bytes) -> Answer:
        try:
            response = self.http.post(self.url, content=document,
                                      headers={"Idempotency-Key": document_id, "X-Document-Number": str(number)})
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return NotDelivered(f"cannot reach the billing system: {type(exc).__name__}: {exc}", sent=False)
        except httpx.HTTPError as exc:
            return NotDelivered(f"no answer from the billing system: {type(exc).__name__}: {exc or 'timeout'}",
                                sent=True)
        status = response.status_code
        if 200 <= status < 300 or status == 409:
            reference = response.headers.get("Location") or response.headers.get("X-Request-Id")
            return Delivered(reference)
        text = response.text.strip()[:200]
        if status in (408, 429):
            return NotDelivered(f"billing system answered HTTP {status}: {text}", sent=False)
        if status >= 500:
            return NotDelivered(f"billing system answered HTTP {status}: {text}", sent=True)
        return Refused(f"billing system refused {document_id} (HTTP {status}): {text}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._http is not None:
                self._http.close()
