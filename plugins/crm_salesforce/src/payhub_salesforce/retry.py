"""Bounded retries with exponential backoff and jitter (tenacity) for requests to Salesforce.

Retried: connection errors and timeouts, HTTP 429 and 5xx, honouring ``Retry-After`` up to the longest backoff. After
the last attempt the failure becomes a :class:`~payhub.api.TransientSourceError`: the core tries again at its next
poll from the stored cursor. Nothing else is retried here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from payhub.api import TransientSourceError

# Errors raised before the request reached the server: safe to retry even for a request that must not run twice.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


log = logging.getLogger(__name__)

class Retryable(Exception):
    """An HTTP answer worth another attempt (429, 5xx)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class RetryPolicy:
    """``send(request)`` runs ``request`` up to ``attempts`` times; ``on_response`` sees every response."""

    def __init__(self, attempts: int, backoff: float, backoff_max: float, *,
                 sleep: Callable[[float], None] = time.sleep,
                 on_response: Callable[[httpx.Response], None] | None = None) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.on_response = on_response

    def wait(self, state: RetryCallState) -> float:
        """Exponential backoff, jittered between half and all of it; a ``Retry-After`` answer waits at least that long
        (capped at the longest backoff)."""
        ceiling = min(self.backoff_max, self.backoff * 2 ** (state.attempt_number - 1))
        delay = random.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, Retryable):
            after = retry_after(exc.response)
            if after is not None:
                delay = max(delay, min(after, self.backoff_max))
        return delay

    def send(self, request: Callable[[], httpx.Response], what: str, *, cautious: bool = False) -> httpx.Response:
        """The first response that is not 429/5xx; TransientSourceError when every attempt failed.

        ``cautious``: for requests that must not be processed twice, retry only failures that prove the server did
        not process the request (no connection, 429, 503).
        """

        def attempt() -> httpx.Response:
            response = request()
            if self.on_response is not None:
                self.on_response(response)
            status = response.status_code
            if status == 429 or status == 503 or (status >= 500 and not cautious):
                raise Retryable(response)
            return response

        retryable: tuple[type[BaseException], ...] = (Retryable, *NOT_SENT) if cautious else (Retryable,
                                                                                             httpx.TransportError)
        def logged(state: RetryCallState) -> None:
            outcome = state.outcome
            exc = outcome.exception() if outcome is not None else None
            problem = describe(exc.response) if isinstance(exc, Retryable) else f"{type(exc).__name__}: {exc}"
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning("%s: %s; attempt %d of %d, retrying in %.1fs", what, problem, state.attempt_number,
                        self.attempts, wait)

        retrying = Retrying(stop=stop_after_attempt(self.attempts), wait=self.wait, sleep=self.sleep,
                            retry=retry_if_exception_type(retryable), reraise=True, before_sleep=logged)
        try:
            return retrying(attempt)
        except Retryable as exc:
            attempts = retrying.statistics.get("attempt_number", self.attempts)
            detail = describe(exc.response)
            raise TransientSourceError(f"{what}: {detail} (gave up after {attempts} attempts)") from None
        except httpx.TransportError as exc:
            raise TransientSourceError(f"{what}: {type(exc).__name__}: {exc or 'no answer'} (gave up after "
                                       f"{retrying.statistics.get('attempt_number', 1)} attempts)") from exc


def describe(response: httpx.Response) -> str:
    """``HTTP 503 SERVER_UNAVAILABLE: message`` from a Salesforce error body, or the status alone."""
    text = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return text
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code, message = body[0].get("errorCode"), body[0].get("message")
        return f"{text} {code}: {message}" if code else text
    if isinstance(body, dict) and body.get("error"):
        return f"{text} {body['error']}: {body.get('error_description', '')}".rstrip(": ")
    return text


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
