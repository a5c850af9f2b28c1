"""The REST client: authenticated GETs with retries, the daily API budget, and Salesforce errors mapped to payhub's.

| Salesforce answers | raised |
|---|---|
| 401 ``INVALID_SESSION_ID`` | renewed once (single-flight) and the request repeated; a second 401 is permanent |
| 403 ``REQUEST_LIMIT_EXCEEDED`` | TransientSourceError, not retried in the call (the limit frees up over 24 hours) |
| 403 other (``API_DISABLED_FOR_ORG``, ``INSUFFICIENT_ACCESS``…) | PermanentSourceError |
| 400 ``MALFORMED_QUERY``, ``INVALID_FIELD``, ``INVALID_TYPE``… | PermanentSourceError naming the field or object |
| 400 ``INVALID_QUERY_LOCATOR`` | :class:`LocatorExpired` (the source queries again from its position) |
| 404 | PermanentSourceError (wrong ``api_version`` or instance) |
| 429, 5xx, connection errors | retried with backoff; TransientSourceError after the last attempt |
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_salesforce.auth import Session, TokenManager
from payhub_salesforce.retry import RetryPolicy, describe
from payhub_salesforce.settings import SalesforceSettings

log = logging.getLogger(__name__)

USER_AGENT = "payhub-salesforce/0.1"
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_NO_SUCH_COLUMN = re.compile(r"No such column '([^']+)' on entity '([^']+)'")
_NOT_SUPPORTED = re.compile(r"sObject type '([^']+)' is not supported")
_RELATIONSHIP = re.compile(r"Didn't understand relationship '([^']+)'")
QUERY_ERRORS = {"MALFORMED_QUERY", "INVALID_FIELD", "INVALID_TYPE", "INVALID_QUERY_FILTER_OPERATOR",
                "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_OPERATION"}


class LocatorExpired(TransientSourceError):
    """A query locator (nextRecordsUrl) is no longer valid; query again from the last position."""


class ApiBudget:
    """The org's daily API usage from ``Sforce-Limit-Info: api-usage=USED/LIMIT``, and whether to stop.

    Requests stop once USED reaches ``share`` x LIMIT. While stopped, no request is made for ``recheck_seconds``;
    then one is let through, whose answer tells the usage again.
    """

    def __init__(self, share: float, recheck_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self.used: int | None = None
        self.limit: int | None = None
        self.seen_at = 0.0
        self._lock = threading.Lock()

    def observe(self, response: httpx.Response) -> None:
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            with self._lock:
                self.used, self.limit, self.seen_at = int(match[1]), int(match[2]), self.clock()

    def exceeded(self) -> None:
        """Salesforce said REQUEST_LIMIT_EXCEEDED: stop as if the usage had reached the limit."""
        with self._lock:
            self.used = max(self.used or 0, self.limit or 1)
            self.limit = self.limit or 1
            self.seen_at = self.clock()

    def stop_reason(self) -> str | None:
        """Why no request may be made now, or None."""
        with self._lock:
            if self.used is None or not self.limit or self.used < self.share * self.limit:
                return None
            if self.clock() - self.seen_at >= self.recheck_seconds:
                return None  # let one request through to read the usage again
            return (f"Salesforce API budget reached: {self.used} of the org's {self.limit} daily API requests used "
                    f"({100 * self.used / self.limit:.1f}%), api_budget_share is {self.share:.0%}; no more requests "
                    "until a later poll")


class SalesforceClient:
    """GETs against the org's instance with the current session; JSON numbers are parsed as Decimal."""

    def __init__(self, settings: SalesforceSettings, *, http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.clock = clock
        self.http = http or httpx.Client(timeout=httpx.Timeout(settings.http_timeout_seconds), follow_redirects=False,
                                         headers={"User-Agent": USER_AGENT})
        self.budget = ApiBudget(settings.api_budget_share, settings.budget_recheck_seconds)
        self.retry = RetryPolicy(settings.retry_attempts, settings.retry_backoff_seconds,
                                 settings.retry_backoff_max_seconds, sleep=sleep, on_response=self._observe)
        self.tokens = TokenManager(settings, self.http, self.retry, clock)
        self.server_offset = 0.0  # Salesforce's clock minus ours, from the Date header of the last answer
        self.requests = 0

    @property
    def data_path(self) -> str:
        return f"/services/data/v{self.settings.api_version}"

    def now(self) -> datetime:
        """Now by Salesforce's clock, as far as we know it (to the second)."""
        return datetime.fromtimestamp(int(self.clock() + self.server_offset), UTC)

    def query_all(self, soql: str) -> dict[str, Any]:
        """The first page of ``soql`` through queryAll (deleted and archived records included)."""
        return self.get(f"{self.data_path}/queryAll", params={"q": soql},
                        headers={"Sforce-Query-Options": f"batchSize={self.settings.page_size}"})

    def query(self, soql: str) -> dict[str, Any]:
        """The first page of ``soql`` through query (no deleted records)."""
        return self.get(f"{self.data_path}/query", params={"q": soql})

    def more(self, next_records_url: str) -> dict[str, Any]:
        """The next page of a query, from its ``nextRecordsUrl``."""
        if not next_records_url.startswith("/services/data/"):
            raise TransientSourceError(f"unexpected nextRecordsUrl {next_records_url!r}")
        return self.get(next_records_url)

    def get(self, path: str, params: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` on the instance; the JSON object answered, or a SourceError."""
        reason = self.budget.stop_reason()
        if reason:
            raise TransientSourceError(reason)
        session = self.tokens.session()
        renewed = False
        while True:
            response = self.retry.send(lambda s=session: self._get(s, path, params, headers),  # type: ignore[misc]
                                       f"Salesforce GET {path}")
            if response.status_code == 401 and not renewed:
                log.info("Salesforce GET %s: the session expired (%s); renewing it", path, describe(response))
                session, renewed = self.tokens.renew(session), True
                continue
            if response.status_code == 200:
                return _body(response, path)
            raise self._error(response, path, renewed)

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------------------------------------ private

    def _get(self, session: Session, path: str, params: dict[str, str] | None,
             headers: dict[str, str] | None) -> httpx.Response:
        self.requests += 1
        return self.http.get(session.instance_url + path, params=params,
                             headers={"Authorization": f"Bearer {session.access_token}", "Accept": "application/json",
                                      **(headers or {})})

    def _observe(self, response: httpx.Response) -> None:
        self.budget.observe(response)
        date = response.headers.get("Date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                self.server_offset = parsedate_to_datetime(date).timestamp() - self.clock()

    def _error(self, response: httpx.Response, path: str, renewed: bool) -> Exception:
        status, code, message = response.status_code, *_first_error(response)
        text = describe(response)
        if status == 401:
            return PermanentSourceError(
                f"Salesforce rejected a newly issued session ({text}): check the connected app's policies (IP "
                "relaxation, permitted users) and that the integration user has the API Enabled permission")
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            self.budget.exceeded()
            return TransientSourceError(f"Salesforce daily API request limit exceeded ({text}); not retried now, "
                                        "the next poll tries again")
        if status == 400 and code == "INVALID_QUERY_LOCATOR":
            return LocatorExpired(f"query locator expired ({text})")
        if status == 400 and code in QUERY_ERRORS:
            return PermanentSourceError(f"Salesforce refused the query ({code}): {_culprit(message)}. Fix the "
                                        "object and field mapping in the source's settings (or the user's access "
                                        "to it)")
        if status == 403:
            return PermanentSourceError(f"Salesforce refused access ({text}): the integration user needs the API "
                                        "Enabled permission and read access to the objects and fields mapped")
        if status == 404:
            return PermanentSourceError(f"Salesforce has no resource {path} ({text}): check api_version")
        if 400 <= status < 500:
            return PermanentSourceError(f"Salesforce refused GET {path}: {text}")
        return TransientSourceError(f"Salesforce GET {path}: {text}")


def _first_error(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:300]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return body[0].get("errorCode"), str(body[0].get("message") or "")
    return None, ""


def _culprit(message: str) -> str:
    """The field or object a query error names, else the message's last line."""
    for pattern, what in ((_NO_SUCH_COLUMN, "no field {0} on {1}"), (_NOT_SUPPORTED, "no object {0}"),
                          (_RELATIONSHIP, "no relationship {0}")):
        match = pattern.search(message)
        if match:
            return what.format(*match.groups())
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else "no detail given"


def _body(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError as exc:
        raise TransientSourceError(f"Salesforce GET {path} answered invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise TransientSourceError(f"Salesforce GET {path} answered {type(body).__name__}, not a JSON object")
    return body
