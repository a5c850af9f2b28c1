"""A small synchronous HubSpot API client: authentication, client-side rate limits, retries, error mapping.

Errors are mapped at this boundary to payhub's two source errors:

* :class:`~payhub.api.TransientSourceError` — 429 and 5xx answers, timeouts and connection errors that are still
  failing after ``max_retries`` retries (with backoff, honouring ``Retry-After``), a Retry-After longer than
  ``max_retry_after_seconds``, the daily request limit, or an unreadable answer. The next poll tries again from
  the stored cursor.
* :class:`~payhub.api.PermanentSourceError` — a token HubSpot refuses (401 after a refresh, a refused refresh
  token), missing scopes (403 ``MISSING_SCOPES``, naming the scopes), and other 4xx answers.

Tokens never appear in errors or logs.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_hubspot.settings import HubSpotSettings

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/v1/token"
USER_AGENT = "payhub-hubspot/0.1"


class RateLimiter:
    """A token bucket: ``rate`` requests per second on average, at most ``burst`` at once.

    With ``burst = 1`` it is a minimum-interval limiter (one request every ``1/rate`` seconds), which also keeps a
    sliding one-second window under ``rate + 1`` requests. Thread-safe: callers reserve their slot under the lock
    and sleep outside it.
    """

    def __init__(self, rate: float, burst: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self._tokens = burst
        self._last: float | None = None
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a slot; return how long this call waited."""
        with self._lock:
            now = self.clock()
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self.sleep(wait)
        return wait


class _Retry(Exception):
    """A request that may succeed if sent again (after ``retry_after`` seconds, if HubSpot said so)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _StaticToken:
    """A private app's access token: never refreshed."""

    refreshable = False

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token

    def invalidate(self, stale: str) -> None:
        """Nothing to do: a refused private app token is a permanent error."""


class _OAuthTokens:
    """OAuth access tokens from the refresh-token grant, refreshed before they expire.

    ``token()`` refreshes when the current token is missing or within ``margin`` of its ``expires_in``; the refresh
    runs under a lock, so concurrent callers wait for one refresh (single flight) and then share its token.
    ``invalidate(stale)`` drops a token HubSpot answered 401 to, unless another caller already replaced it.
    """

    refreshable = True

    def __init__(self, client: HubSpotClient, client_id: str, client_secret: str, refresh_token: str,
                 margin: float) -> None:
        self._client = client
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._margin = margin
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.refreshes = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._client.clock() >= self._expires_at - self._margin:
                self._refresh()
            assert self._token is not None
            return self._token

    def invalidate(self, stale: str) -> None:
        with self._lock:
            if self._token == stale:
                self._token = None

    def _refresh(self) -> None:
        form = {"grant_type": "refresh_token", "client_id": self._client_id,
                "client_secret": self._client_secret, "refresh_token": self._refresh_token}
        started = self._client.clock()
        response = self._client.send_with_retries(
            "OAuth token refresh", lambda: self._client.http.post(TOKEN_PATH, data=form), limiter=None)
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            detail = _describe(response, body)
            if response.status_code in (400, 401, 403):
                raise PermanentSourceError(f"HubSpot refused the OAuth refresh token: {detail}")
            raise TransientSourceError(f"HubSpot OAuth token refresh failed: {detail}")
        try:
            expires_in = float(body.get("expires_in", 1800))
        except (TypeError, ValueError):
            expires_in = 1800.0
        self._token = str(body["access_token"])
        self._expires_at = started + expires_in
        if body.get("refresh_token"):  # HubSpot may hand out a new refresh token; the old one stays valid
            self._refresh_token = str(body["refresh_token"])
        self.refreshes += 1
        log.info("HubSpot OAuth access token refreshed (valid %.0f s)", expires_in)


class HubSpotClient:
    """HubSpot REST calls with authentication, rate limits, retries and errors mapped to payhub's."""

    def __init__(self, settings: HubSpotSettings, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.sleep = sleep
        self.clock = clock
        self.deadline: float | None = None  # (``clock`` time) retries never sleep past it; the source sets it
        self.http = httpx.Client(base_url=settings.base_url, timeout=httpx.Timeout(settings.http_timeout_seconds),
                                 transport=transport, headers={"Accept": "application/json",
                                                               "User-Agent": USER_AGENT})
        self.search_limiter = RateLimiter(settings.search_requests_per_second, clock=self._now, sleep=self._sleep)
        self.limiter = RateLimiter(settings.requests_per_second, clock=self._now, sleep=self._sleep)
        self.auth: _StaticToken | _OAuthTokens
        if settings.access_token is not None:
            self.auth = _StaticToken(settings.access_token.get_secret_value())
        else:
            assert settings.client_id and settings.client_secret and settings.refresh_token  # the model checks
            self.auth = _OAuthTokens(self, settings.client_id, settings.client_secret.get_secret_value(),
                                     settings.refresh_token.get_secret_value(), settings.token_refresh_margin_seconds)

    # The limiters call through these, so tests may replace ``sleep`` and ``clock`` after construction.
    def _now(self) -> float:
        return self.clock()

    def _sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------------------------------------ calls

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                search: bool = False, allow: tuple[int, ...] = (200, 201, 207)) -> dict[str, Any]:
        """Send an authenticated request and return its JSON object (status in ``allow``) or raise a source error.

        A 401 with OAuth refreshes the token once and sends again; a second 401 is permanent.
        """
        limiter = self.search_limiter if search else self.limiter
        label = f"{method} {path}"
        used: list[str] = []

        def send() -> httpx.Response:
            token = self.auth.token()
            used.append(token)
            return self.http.request(method, path, json=json, params=params,
                                     headers={"Authorization": f"Bearer {token}"})

        response = self.send_with_retries(label, send, limiter=limiter)
        if response.status_code == 401 and self.auth.refreshable:
            log.info("HubSpot %s: 401, refreshing the access token once", label)
            self.auth.invalidate(used[-1])
            response = self.send_with_retries(label, send, limiter=limiter)
        body = _json_or_none(response)
        if response.status_code in allow:
            if not isinstance(body, dict):
                raise TransientSourceError(f"HubSpot {label}: HTTP {response.status_code} without a JSON object")
            return body
        if response.status_code == 401:
            raise PermanentSourceError(f"HubSpot {label}: the access token was refused (HTTP 401): "
                                       f"{_describe(response, body)}")
        if response.status_code == 403:
            scopes = _missing_scopes(body)
            if scopes:
                raise PermanentSourceError(f"HubSpot {label}: the app lacks the scope {' or '.join(scopes)} "
                                           "(HTTP 403 MISSING_SCOPES); grant it and restart")
            raise PermanentSourceError(f"HubSpot {label}: forbidden (HTTP 403): {_describe(response, body)}")
        raise PermanentSourceError(f"HubSpot {label}: HTTP {response.status_code}: {_describe(response, body)}")

    def send_with_retries(self, label: str, send: Callable[[], httpx.Response],
                          limiter: RateLimiter | None) -> httpx.Response:
        """Send until the answer is neither a 429, a 5xx nor a network error, at most ``max_retries`` + 1 times."""

        def attempt() -> httpx.Response:
            if limiter is not None:
                limiter.acquire()
            try:
                response = send()
            except httpx.TimeoutException as exc:
                raise _Retry(f"timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from exc
            status = response.status_code
            if status == 429:
                body = _json_or_none(response)
                if isinstance(body, dict) and str(body.get("policyName", "")).upper() == "DAILY":
                    raise TransientSourceError(f"HubSpot {label}: the account's daily request limit is reached")
                retry_after = _retry_after(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self.settings.max_retry_after_seconds:
                    raise TransientSourceError(f"HubSpot {label}: rate limited, Retry-After {retry_after:.0f} s")
                raise _Retry(f"rate limited (HTTP 429{_policy(body)})", retry_after)
            if status >= 500:
                raise _Retry(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
            return response

        retrying = Retrying(stop=stop_after_attempt(self.settings.max_retries + 1) | _StopAtDeadline(self),
                            wait=self._wait, retry=retry_if_exception_type(_Retry), sleep=self._sleep, reraise=True,
                            before_sleep=lambda state: log.warning(
                                "HubSpot %s: %s; retry %d", label, _reason(state), state.attempt_number))
        try:
            return retrying(attempt)
        except _Retry as exc:
            attempts = retrying.statistics.get("attempt_number", "several")
            raise TransientSourceError(f"HubSpot {label}: {exc.reason}, still failing after {attempts} attempt(s)"
                                       ) from exc

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return min(exc.retry_after, self.settings.max_retry_after_seconds)
        backoff = min(self.settings.retry_max_seconds,
                      self.settings.retry_initial_seconds * 2 ** (state.attempt_number - 1))
        return random.uniform(backoff / 2, backoff)


class _StopAtDeadline(stop_base):
    """Stop retrying when the next sleep would end after the client's ``deadline``."""

    def __init__(self, client: HubSpotClient) -> None:
        self.client = client

    def __call__(self, retry_state: RetryCallState) -> bool:
        deadline = self.client.deadline
        return deadline is not None and self.client.clock() + (retry_state.upcoming_sleep or 0) > deadline


def _reason(state: RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc.reason if isinstance(exc, _Retry) else repr(exc)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _policy(body: Any) -> str:
    return f", {body['policyName']}" if isinstance(body, dict) and body.get("policyName") else ""


def _describe(response: httpx.Response, body: Any) -> str:
    """HubSpot's error category, message and correlation id (never the request's headers)."""
    if not isinstance(body, dict):
        return (response.text or f"HTTP {response.status_code}")[:200]
    status = body.get("status")
    category = body.get("category") or (status if status and status != "error" else None)
    message = str(body.get("message") or "").strip()
    text = f"{category}: {message}" if category and message else str(category or message or "no details")
    if body.get("correlationId"):
        text += f" (correlationId {body['correlationId']})"
    return text[:500]


def _missing_scopes(body: Any) -> list[str]:
    """The scopes named by a 403 ``MISSING_SCOPES`` answer (granular scopes first)."""
    if not isinstance(body, dict) or body.get("category") != "MISSING_SCOPES":
        return []
    granular: list[str] = []
    legacy: list[str] = []
    for error in body.get("errors") or []:
        context = error.get("context") if isinstance(error, dict) else None
        if isinstance(context, dict):
            granular += [str(s) for s in context.get("requiredGranularScopes") or []]
            legacy += [str(s) for s in context.get("requiredScopes") or []]
    scopes = list(dict.fromkeys(granular or legacy))
    return scopes or ["(not named by HubSpot)"]
