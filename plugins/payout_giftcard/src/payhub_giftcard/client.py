"""A small client for a gift-card provider's REST API, with one documented exception tree.

The API is shaped like the major reward and gift-card providers' (orders with an ``external_id`` idempotency field,
a product catalog filtered by country and currency, order status, 429 with ``Retry-After``). Everything here is
transport: the rail (:mod:`payhub_giftcard.rail`) decides what each answer means for a payout.

    ApiError
    ├── NotSent        the request never left (connection refused, DNS, pool exhausted): nothing can have happened
    ├── NoAnswer       the request was sent but no answer came back (timeout, dropped connection): it may have worked
    ├── RateLimited    HTTP 429; ``retry_after`` is the provider's Retry-After in seconds (None if absent)
    ├── AuthError      HTTP 401 / 403: the API key was refused
    └── ServerError    HTTP 5xx: the provider failed, possibly after acting on the request

Any other status is returned as an :class:`ApiResponse`. JSON is read with ``Decimal`` for every number with a
fraction and written with amounts as exact decimal numbers, never through ``float``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import SecretStr

__all__ = ["ApiError", "ApiResponse", "AuthError", "GiftCardClient", "NoAnswer", "NotSent", "RateLimited",
           "ServerError", "dumps", "error_message"]


class ApiError(Exception):
    """A request to the provider did not get a usable answer."""


class NotSent(ApiError):
    """The request never reached the provider."""


class NoAnswer(ApiError):
    """The request was sent, but no answer came back."""


class RateLimited(ApiError):
    """HTTP 429. ``retry_after``: seconds the provider asks to wait, or None."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(ApiError):
    """HTTP 401 or 403."""


class ServerError(ApiError):
    """HTTP 5xx."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """An answer with a status below 500 other than 401, 403 and 429; ``body`` is the parsed JSON or None."""

    status: int
    body: Any
    text: str


def dumps(value: Any) -> str:
    """JSON text for dicts, lists, strings, ints, bools, None and finite Decimals (written as plain numbers)."""
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as a JSON number")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON (amounts must be Decimal)")


def loads(text: str) -> Any:
    """Parse JSON, numbers with a fraction or exponent as Decimal."""
    return json.loads(text, parse_float=Decimal)


def error_message(body: Any, text: str) -> str:
    """The provider's error message: ``{"errors": {"message": …}}``, ``{"message": …}`` or the raw text."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, dict) and errors.get("message"):
            return str(errors["message"])
        if isinstance(errors, list) and errors:
            first = errors[0]
            return str(first.get("message", first) if isinstance(first, dict) else first)
        for key in ("message", "error"):
            if body.get(key):
                return str(body[key])
    return text.strip()[:200] or "(no message)"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class GiftCardClient:
    """One ``httpx.Client`` (usable from any thread) with the API key, a timeout on every request, and errors
    mapped to :class:`ApiError` subclasses at this boundary.

    The base URL, timeouts and headers are checked when the client is made; the ``httpx.Client`` itself (its
    connection pool and TLS context, the costly part) is created on first use (:attr:`http`)."""

    def __init__(self, base_url: str, api_key: SecretStr, *, timeout: float, connect_timeout: float,
                 transport: httpx.BaseTransport | None = None, trust_env: bool = True) -> None:
        # trust_env=False ignores proxy settings of the environment (HTTP_PROXY…): used for a provider on a loopback
        # address (a local simulator), which must never be reached through a proxy.
        self._options: dict[str, Any] = {
            "base_url": httpx.URL(base_url.rstrip("/") + "/"),
            "timeout": httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            "headers": httpx.Headers({"Authorization": f"Bearer {api_key.get_secret_value()}",
                                      "Accept": "application/json", "User-Agent": "payhub-giftcard/0.1"}),
            "transport": transport,
            "trust_env": trust_env,
        }
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

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                body: Mapping[str, Any] | None = None) -> ApiResponse:
        content = dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self.http.request(method, path.lstrip("/"), params=params, content=content, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
            raise NotSent(f"cannot reach the provider: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise NoAnswer(f"no answer from the provider: {type(exc).__name__}: {exc or 'timeout'}") from exc
        text = response.text
        try:
            parsed = loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RateLimited(f"rate limited (HTTP 429): {error_message(parsed, text)}", retry_after)
        if status in (401, 403):
            raise AuthError(f"the provider refused the API key (HTTP {status}): {error_message(parsed, text)}")
        if status >= 500:
            raise ServerError(f"provider error (HTTP {status}): {error_message(parsed, text)}", status)
        return ApiResponse(status, parsed, text)

    def create_order(self, body: Mapping[str, Any]) -> ApiResponse:
        """``POST orders``."""
        return self.request("POST", "orders", body=body)

    def find_orders(self, external_id: str) -> list[dict[str, Any]]:
        """``GET orders?external_id=…``: the orders the provider holds under ``external_id`` (possibly none)."""
        response = self.request("GET", "orders", params={"external_id": external_id})
        orders = response.body.get("orders") if isinstance(response.body, dict) else None
        if response.status != 200 or not isinstance(orders, list):
            raise ApiError(f"unexpected answer to the order search (HTTP {response.status}): "
                           f"{error_message(response.body, response.text)}")
        return [o for o in orders if isinstance(o, dict)]

    def products(self, country: str | None = None, currency: str | None = None) -> list[dict[str, Any]]:
        """``GET products`` filtered by country and currency: the catalog entries."""
        params = {k: v for k, v in (("country", country), ("currency", currency)) if v}
        response = self.request("GET", "products", params=params)
        products = response.body.get("products") if isinstance(response.body, dict) else None
        if response.status != 200 or not isinstance(products, list):
            raise ApiError(f"unexpected answer to the catalog request (HTTP {response.status}): "
                           f"{error_message(response.body, response.text)}")
        return [p for p in products if isinstance(p, dict)]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._http is not None:
                self._http.close()
