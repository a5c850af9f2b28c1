"""The HTTP client against respx: tokens (private app and OAuth refresh), retries, rate limits, error mapping."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
import respx

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_hubspot.client import HubSpotClient, RateLimiter
from payhub_hubspot.settings import HubSpotSettings

BASE = "https://api.hubapi.com"
SEARCH = f"{BASE}/crm/v3/objects/deals/search"
TOKEN = f"{BASE}/oauth/2026-03/token"
LEGACY_TOKEN = f"{BASE}/oauth/v1/token"
PIPELINES = f"{BASE}/crm/v3/pipelines/deals"
SEARCH_ANSWER = {"total": 1, "results": [{
    "id": "1001", "properties": {"hs_object_id": "1001", "hs_lastmodifieddate": "2026-03-01T10:00:00.000Z",
                                 "createdate": "2026-02-01T10:00:00.000Z"},
    "createdAt": "2026-02-01T10:00:00.000Z", "updatedAt": "2026-03-01T10:00:00.000Z", "archived": False}]}
RATE_LIMITED = {"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT",
                "correlationId": "c0ffee00-0000-4000-8000-000000000001", "policyName": "SECONDLY"}
EXPIRED = {"status": "error", "message": "The OAuth token used to make this call expired 2 second(s) ago.",
           "correlationId": "c0ffee00-0000-4000-8000-000000000002", "category": "EXPIRED_AUTHENTICATION"}


class FakeTime:
    """A clock that only moves when told to, and a sleep that records and advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make(fake: FakeTime, **overrides: Any) -> HubSpotClient:
    values: dict[str, Any] = {"access_token": "pat-na1-secret", "start_date": "2026-01-01", **overrides}
    if "refresh_token" in overrides:
        values.pop("access_token")
    return HubSpotClient(HubSpotSettings.model_validate(values), sleep=fake.sleep, clock=fake.clock)


def token_answer(n: int, expires_in: int = 1800) -> dict[str, Any]:
    return {"token_type": "bearer", "refresh_token": "refresh-1", "access_token": f"access-{n}",
            "expires_in": expires_in}


OAUTH = {"client_id": "client-1", "client_secret": "client-secret-1", "refresh_token": "refresh-1"}


@respx.mock
def test_private_app_token_and_timeout() -> None:
    fake = FakeTime()
    route = respx.post(SEARCH).respond(200, json=SEARCH_ANSWER)
    client = make(fake, http_timeout_seconds=7)
    assert client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True) == SEARCH_ANSWER
    assert route.calls.last.request.headers["Authorization"] == "Bearer pat-na1-secret"
    assert client.http.timeout == httpx.Timeout(7)


@respx.mock
def test_oauth_refresh_before_expiry_with_margin() -> None:
    fake = FakeTime()
    grants = iter(range(1, 10))
    token = respx.post(TOKEN).mock(side_effect=lambda request: httpx.Response(200, json=token_answer(next(grants))))
    search = respx.post(SEARCH).respond(200, json=SEARCH_ANSWER)
    client = make(fake, token_refresh_margin_seconds=120, **OAUTH)
    client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    form = dict(httpx.QueryParams(token.calls.last.request.content.decode()))
    assert form == {"grant_type": "refresh_token", "client_id": "client-1", "client_secret": "client-secret-1",
                    "refresh_token": "refresh-1"}
    fake.now += 1800 - 121  # still more than the margin left: the token is reused
    client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    assert token.call_count == 1
    fake.now += 2  # within the margin of its expiry: refreshed before use
    client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in search.calls] == [
        "Bearer access-1", "Bearer access-1", "Bearer access-2"]


@respx.mock
def test_oauth_refresh_is_single_flight() -> None:
    grants = iter(range(1, 10))

    def slow_grant(request: httpx.Request) -> httpx.Response:
        time.sleep(0.2)
        return httpx.Response(200, json=token_answer(next(grants)))

    token = respx.post(TOKEN).mock(side_effect=slow_grant)
    respx.post(SEARCH).respond(200, json=SEARCH_ANSWER)
    client = HubSpotClient(HubSpotSettings.model_validate({"start_date": "2026-01-01", **OAUTH}))
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(client.auth.token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert token.call_count == 1 and seen == ["access-1"] * 8


@respx.mock
def test_401_refreshes_once_then_succeeds() -> None:
    fake = FakeTime()
    grants = iter(range(1, 10))
    token = respx.post(TOKEN).mock(side_effect=lambda request: httpx.Response(200, json=token_answer(next(grants))))
    search = respx.post(SEARCH).mock(side_effect=[httpx.Response(401, json=EXPIRED),
                                                  httpx.Response(200, json=SEARCH_ANSWER)])
    client = make(fake, **OAUTH)
    assert client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True) == SEARCH_ANSWER
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in search.calls] == ["Bearer access-1", "Bearer access-2"]


@respx.mock
def test_401_after_refresh_is_permanent() -> None:
    fake = FakeTime()
    grants = iter(range(1, 10))
    respx.post(TOKEN).mock(side_effect=lambda request: httpx.Response(200, json=token_answer(next(grants))))
    respx.post(SEARCH).respond(401, json=EXPIRED)
    client = make(fake, **OAUTH)
    with pytest.raises(PermanentSourceError, match="refused.*401") as info:
        client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    assert "access-" not in str(info.value) and "client-secret" not in str(info.value)


@respx.mock
def test_private_token_401_is_permanent_without_leaking_it() -> None:
    respx.post(SEARCH).respond(401, json={"status": "error", "category": "INVALID_AUTHENTICATION",
                                          "message": "Authentication credentials not found.",
                                          "correlationId": "c0ffee00-0000-4000-8000-000000000003"})
    with pytest.raises(PermanentSourceError, match="INVALID_AUTHENTICATION") as info:
        make(FakeTime()).request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    assert "pat-na1-secret" not in str(info.value)


@respx.mock
def test_refused_refresh_token_is_permanent() -> None:
    respx.post(TOKEN).respond(400, json={"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token",
                                         "correlationId": "c0ffee00-0000-4000-8000-000000000004"})
    with pytest.raises(PermanentSourceError, match="BAD_REFRESH_TOKEN"):
        make(FakeTime(), **OAUTH).request("GET", "/crm/v3/pipelines/deals")


@respx.mock
def test_missing_scopes_names_the_scope() -> None:
    respx.get(PIPELINES).respond(403, json={
        "status": "error",
        "message": "This app hasn't been granted all required scopes to make this call. Read more about required "
                   "scopes here: https://developers.hubspot.com/scopes.",
        "correlationId": "c0ffee00-0000-4000-8000-000000000005",
        "errors": [{"message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": ["crm.objects.deals.read"]}}],
        "links": {"scopes": "https://developers.hubspot.com/scopes"}, "category": "MISSING_SCOPES"})
    with pytest.raises(PermanentSourceError, match=r"lacks the scope crm\.objects\.deals\.read"):
        make(FakeTime()).request("GET", "/crm/v3/pipelines/deals")


@respx.mock
def test_429_honours_retry_after() -> None:
    fake = FakeTime()
    respx.post(SEARCH).mock(side_effect=[httpx.Response(429, json=RATE_LIMITED, headers={"Retry-After": "7"}),
                                         httpx.Response(200, json=SEARCH_ANSWER)])
    client = make(fake, search_requests_per_second=1000)
    assert client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True) == SEARCH_ANSWER
    assert 7 in fake.sleeps


@respx.mock
def test_429_without_retry_after_backs_off_exponentially() -> None:
    fake = FakeTime()
    responses = [httpx.Response(429, json=RATE_LIMITED)] * 4 + [httpx.Response(200, json=SEARCH_ANSWER)]
    respx.post(SEARCH).mock(side_effect=responses)
    client = make(fake, search_requests_per_second=1000, retry_initial_seconds=1, retry_max_seconds=5)
    client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    backoffs = [s for s in fake.sleeps if s > 0.01]  # the limiter's own waits are a millisecond
    assert len(backoffs) == 4
    for n, seconds in enumerate(backoffs):
        cap = min(5, 2 ** n)
        assert cap / 2 <= seconds <= cap


@respx.mock
@pytest.mark.parametrize("failure", ["500", "502", "503", "504", "connect", "timeout"])
def test_server_and_network_errors_are_retried(failure: str) -> None:
    fake = FakeTime()
    first: Any
    if failure == "connect":
        first = httpx.ConnectError("connection refused")
    elif failure == "timeout":
        first = httpx.ReadTimeout("timed out")
    else:
        first = httpx.Response(int(failure), json={"status": "error", "message": "internal error",
                                                   "correlationId": "x", "category": "INTERNAL_ERROR"})
    route = respx.post(SEARCH).mock(side_effect=[first, first, httpx.Response(200, json=SEARCH_ANSWER)])
    assert make(fake).request("POST", "/crm/v3/objects/deals/search", json={}, search=True) == SEARCH_ANSWER
    assert route.call_count == 3


@respx.mock
def test_storm_longer_than_the_retries_is_transient() -> None:
    fake = FakeTime()
    route = respx.post(SEARCH).respond(503, json={"status": "error", "message": "unavailable",
                                                  "correlationId": "x", "category": "INTERNAL_ERROR"})
    with pytest.raises(TransientSourceError, match=r"503.*6 attempt"):
        make(fake, max_retries=5).request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    assert route.call_count == 6


@respx.mock
def test_long_retry_after_and_daily_limit_end_the_poll() -> None:
    respx.post(SEARCH).respond(429, json=RATE_LIMITED, headers={"Retry-After": "3600"})
    with pytest.raises(TransientSourceError, match="Retry-After 3600"):
        make(FakeTime()).request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    respx.get(PIPELINES).respond(429, json={**RATE_LIMITED, "policyName": "DAILY",
                                            "message": "You have reached your daily limit."})
    with pytest.raises(TransientSourceError, match="daily"):
        make(FakeTime()).request("GET", "/crm/v3/pipelines/deals")


@respx.mock
def test_bad_request_is_permanent_with_hubspots_message() -> None:
    respx.post(SEARCH).respond(400, json={"status": "error", "category": "VALIDATION_ERROR",
                                          "message": "Invalid input JSON on line 1", "correlationId": "abc"})
    with pytest.raises(PermanentSourceError, match="VALIDATION_ERROR: Invalid input JSON.*abc"):
        make(FakeTime()).request("POST", "/crm/v3/objects/deals/search", json={}, search=True)


def test_min_interval_limiter() -> None:
    fake = FakeTime()
    limiter = RateLimiter(4, clock=fake.clock, sleep=fake.sleep)
    times = []
    for _ in range(9):
        limiter.acquire()
        times.append(fake.now)
    assert times[-1] - times[0] == pytest.approx(2.0)
    # never more than 5 in any sliding second (HubSpot's search limit)
    assert all(sum(1 for t in times if start - 1 < t <= start) <= 5 for start in times)


@respx.mock
def test_retries_never_sleep_past_the_fetch_deadline() -> None:
    fake = FakeTime()
    route = respx.post(SEARCH).respond(429, json=RATE_LIMITED, headers={"Retry-After": "30"})
    client = make(fake, search_requests_per_second=1000)
    client.deadline = fake.now + 10
    with pytest.raises(TransientSourceError, match=r"after 1 attempt"):
        client.request("POST", "/crm/v3/objects/deals/search", json={}, search=True)
    assert route.call_count == 1 and max(fake.sleeps, default=0) < 1


@respx.mock
def test_default_token_endpoint_is_the_date_versioned_one() -> None:
    token = respx.post(TOKEN).respond(200, json=token_answer(1))
    legacy = respx.post(LEGACY_TOKEN).respond(200, json=token_answer(2))
    assert make(FakeTime(), **OAUTH).auth.token() == "access-1"
    request = token.calls.last.request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.url.query == b""  # every parameter in the body, none in the URL
    assert dict(httpx.QueryParams(request.content.decode())) == {
        "grant_type": "refresh_token", "client_id": "client-1", "client_secret": "client-secret-1",
        "refresh_token": "refresh-1"}
    assert legacy.call_count == 0


@respx.mock
@pytest.mark.parametrize(("status", "error", "hint"), [
    (400, "invalid_grant", "install the app again"),
    (400, "invalid_client", "client_id or client_secret is wrong"),
    (401, "invalid_client", "client_id or client_secret is wrong"),
    (400, "unauthorized_client", "refresh-token grant"),
    (400, "unsupported_grant_type", "oauth_token_path"),
    (400, "invalid_request", "fix the OAuth settings"),
])
def test_rfc6749_token_errors_are_permanent_and_named(status: int, error: str, hint: str) -> None:
    respx.post(TOKEN).respond(status, json={"error": error, "error_description": "refused for a reason",
                                            "status": "BAD_REFRESH_TOKEN", "message": "refused for a reason",
                                            "correlationId": "c0ffee00-0000-4000-8000-000000000006"})
    with pytest.raises(PermanentSourceError) as info:
        make(FakeTime(), **OAUTH).request("GET", "/crm/v3/pipelines/deals")
    text = str(info.value)
    assert f"{error}: refused for a reason (BAD_REFRESH_TOKEN)" in text and hint in text
    assert "/oauth/2026-03/token" in text and f"HTTP {status}" in text
    assert "client-secret-1" not in text and "refresh-1" not in text


@respx.mock
@pytest.mark.parametrize("answer", [
    httpx.Response(503, json={"status": "error", "message": "unavailable", "category": "INTERNAL_ERROR"}),
    httpx.Response(500, text="<html>oops</html>"),
    httpx.Response(429, json=RATE_LIMITED),
    httpx.Response(400, json={"error": "temporarily_unavailable", "error_description": "try later"}),
    httpx.Response(400, json={"error": "server_error", "error_description": "oops"}),
    httpx.Response(200, json={"token_type": "bearer"}),
])
def test_token_endpoint_outages_are_transient(answer: httpx.Response) -> None:
    route = respx.post(TOKEN).mock(return_value=answer)
    with pytest.raises(TransientSourceError):
        make(FakeTime(), max_retries=2, **OAUTH).request("GET", "/crm/v3/pipelines/deals")
    assert route.call_count == (3 if answer.status_code >= 429 else 1)  # 5xx and 429 retried first


@respx.mock
def test_a_wrong_token_path_is_permanent() -> None:
    respx.post(f"{BASE}/oauth/v9/token").respond(404, json={"status": "error", "category": "OBJECT_NOT_FOUND",
                                                           "message": "Unable to route", "correlationId": "x"})
    with pytest.raises(PermanentSourceError, match=r"/oauth/v9/token, HTTP 404.*check oauth_token_path"):
        make(FakeTime(), oauth_token_path="/oauth/v9/token", **OAUTH).auth.token()


@respx.mock
@pytest.mark.parametrize(("expires_in", "valid"), [
    (1800, 1800), ("600", 600), (None, 1800), ("soon", 1800), (-5, 1800), (0, 1800), ("nan", 1800),
    ("inf", 1800), (10**30, 86400), (True, 1800),
])
def test_token_lifetime_is_bounded(expires_in: Any, valid: float) -> None:
    fake = FakeTime()
    grants = iter(range(1, 10))
    respx.post(TOKEN).mock(side_effect=lambda request: httpx.Response(
        200, json={**token_answer(next(grants)), "expires_in": expires_in}))
    client = make(fake, token_refresh_margin_seconds=0, **OAUTH)
    assert client.auth.token() == "access-1"
    fake.now += valid - 0.5
    assert client.auth.token() == "access-1"
    fake.now += 1
    assert client.auth.token() == "access-2"
