"""A small synchronous HubSpot API client: authentication, client-side rate limits, retries, error mapping.

Errors are mapped at this boundary to payhub's two source errors:

* :class:`~payhub.api.TransientSourceError` — 429 and 5xx answers, timeouts and connection errors that are still
  failing after ``max_retries`` retries (with backoff, honouring ``Retry-After``), the daily request limit, or an
  unreadable answer. The next poll tries again from the stored cursor. Its subclass :class:`RateLimited` is a 429
  whose ``Retry-After`` is longer than ``max_retry_after_seconds`` (or comes with the daily limit): it carries the
  instant before which HubSpot must not be called again, which the source keeps in its cursor.
* :class:`~payhub.api.PermanentSourceError` — a token HubSpot refuses (401 after a refresh), a refused token
  refresh (an RFC 6749 error such as ``invalid_grant`` or ``invalid_client``, or any other 4xx of the token
  endpoint), missing scopes (403 ``MISSING_SCOPES``, naming the scopes), and other 4xx answers.

Tokens never appear in errors or logs.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_hubspot.settings import DEFAULT_TOKEN_PATH, HubSpotSettings

log = logging.getLogger(__name__)

USER_AGENT = "payhub-hubspot/0.1"
DEFAULT_TOKEN_EXPIRY_SECONDS = 1800.0
"""HubSpot's documented access token lifetime, used when a token answer has no usable ``expires_in``."""
_TRANSIENT_OAUTH_ERRORS = frozenset({"server_error", "temporarily_unavailable"})
_OAUTH_HINTS = {
    "invalid_grant": "the refresh token is invalid, expired or revoked (was the app uninstalled?): install the app "
                     "again and set refresh_token",
    "invalid_client": "client_id or client_secret is wrong: copy them from the app's settings in HubSpot",
    "unauthorized_client": "the app may not use the refresh-token grant",
    "unsupported_grant_type": "the token endpoint does not take the refresh-token grant: check oauth_token_path",
}
RETRY_AFTER_CAP_SECONDS = 86_400.0
"""The longest wait a ``Retry-After`` can ask for; a longer delay or a date further ahead counts as this."""
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


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


class RateLimited(TransientSourceError):
    """HubSpot asked not to be called again before ``until`` (epoch seconds): a 429 with a ``Retry-After`` longer
    than ``max_retry_after_seconds``, or with the daily limit."""

    def __init__(self, label: str, retry_after: float, until: float, daily: bool = False) -> None:
        self.retry_after = retry_after
        self.until = until
        what = "the account's daily request limit is reached" if daily else "rate limited"
        super().__init__(f"HubSpot {label}: {what}, Retry-After {retry_after:.0f} s")


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
        path = self._client.settings.oauth_token_path
        label = f"POST {path}"
        if self.refreshes == 0 and path.startswith("/oauth/v1/"):
            log.warning("HubSpot retires its v1 OAuth endpoints on 2027-02-16: set oauth_token_path to %s",
                        DEFAULT_TOKEN_PATH)
        form = {"grant_type": "refresh_token", "client_id": self._client_id,
                "client_secret": self._client_secret, "refresh_token": self._refresh_token}
        started = self._client.clock()
        response = self._client.send_with_retries(label, lambda: self._client.http.post(path, data=form),
                                                  limiter=None)
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise _token_refused(label, response, body)
        expires_in = _expires_in(body.get("expires_in"))
        self._token = str(body["access_token"])
        self._expires_at = started + expires_in
        if body.get("refresh_token"):  # HubSpot may hand out a new refresh token; the old one stays valid
            self._refresh_token = str(body["refresh_token"])
        self.refreshes += 1
        log.info("HubSpot OAuth access token refreshed (valid %.0f s)", expires_in)


def _expires_in(value: Any) -> float:
    """An access token's lifetime in seconds from ``expires_in``: positive and at most a day, else the default."""
    if isinstance(value, bool):
        return DEFAULT_TOKEN_EXPIRY_SECONDS
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_TOKEN_EXPIRY_SECONDS
    if not math.isfinite(seconds) or seconds <= 0:
        return DEFAULT_TOKEN_EXPIRY_SECONDS
    return min(seconds, 86_400.0)


def _token_refused(label: str, response: httpx.Response, body: Any) -> TransientSourceError | PermanentSourceError:
    """The error of a token answer without an access token.

    An RFC 6749 error (``{"error": "invalid_grant", "error_description": ...}``) or any other 4xx is permanent,
    naming the error, except ``server_error``, ``temporarily_unavailable`` and 408; 5xx and 429 have been retried
    already and are transient, as is a 200 without an access token.
    """
    status = response.status_code
    error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None
    detail = _describe(response, body)
    if status == 200:
        return TransientSourceError(f"HubSpot {label}: HTTP 200 without an access token")
    if not 400 <= status < 500 or status == 408 or error in _TRANSIENT_OAUTH_ERRORS:
        return TransientSourceError(f"HubSpot OAuth token refresh failed ({label}, HTTP {status}): {detail}")
    hint = _OAUTH_HINTS.get(error or "", "check oauth_token_path" if status in (404, 405)
                            else "fix the OAuth settings and restart")
    return PermanentSourceError(f"HubSpot refused the OAuth token refresh ({label}, HTTP {status}): {detail}; {hint}")


class HubSpotClient:
    """HubSpot REST calls with authentication, rate limits, retries and errors mapped to payhub's."""

    def __init__(self, settings: HubSpotSettings, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock  # epoch seconds: HTTP dates of Retry-After, and RateLimited.until
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
                now = self.wall_clock()
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
                daily = isinstance(body, dict) and str(body.get("policyName", "")).upper() == "DAILY"
                if retry_after is not None and (daily or retry_after > self.settings.max_retry_after_seconds):
                    raise RateLimited(label, retry_after, now + retry_after, daily)
                if daily:
                    raise TransientSourceError(f"HubSpot {label}: the account's daily request limit is reached")
                raise _Retry(f"rate limited (HTTP 429{_policy(body)})", retry_after)
            if status >= 500:
                raise _Retry(f"HTTP {status}", retry_after_seconds(response.headers.get("Retry-After"),
                                                                   self.wall_clock()))
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


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header at ``now`` (epoch seconds), from 0 to
    ``RETRY_AFTER_CAP_SECONDS``; None when absent or unreadable.

    delay-seconds are ASCII digits (a fraction is tolerated); an HTTP date counts from ``now`` (a past one is 0). A
    longer delay, or a date further ahead, counts as the cap. Anything else (a negative or signed number, an
    exponent, ``inf``, ``nan``, non-ASCII digits, text) is unreadable, so the usual backoff applies.
    """
    text = (value or "").strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        whole = text.split(".", 1)[0].lstrip("0")
        return RETRY_AFTER_CAP_SECONDS if len(whole) > 9 else min(float(text), RETRY_AFTER_CAP_SECONDS)
    if len(text) > 64:  # an HTTP date is 29 characters
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_CAP_SECONDS)


def _policy(body: Any) -> str:
    return f", {body['policyName']}" if isinstance(body, dict) and body.get("policyName") else ""


def _describe(response: httpx.Response, body: Any) -> str:
    """HubSpot's error category, message and correlation id (never the request's headers)."""
    if not isinstance(body, dict):
        return (response.text or f"HTTP {response.status_code}")[:200]
    if isinstance(body.get("error"), str) and body["error"]:  # RFC 6749 (the OAuth token endpoints)
        description = str(body.get("error_description") or "").strip()
        text = str(body["error"]) + (f": {description}" if description else "")
        legacy = str(body.get("status") or "")  # HubSpot's own code, kept next to the standard one
        if legacy and legacy != "error" and legacy != body["error"]:
            text += f" ({legacy})"
        if body.get("correlationId"):
            text += f" (correlationId {body['correlationId']})"
        return text[:500]
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
