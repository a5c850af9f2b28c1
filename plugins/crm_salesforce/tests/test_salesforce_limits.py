"""Limits and errors: retries with backoff (bounded), REQUEST_LIMIT_EXCEEDED, the daily API budget, query errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from payhub_simulators.salesforce import SalesforceSimulator

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_salesforce import SalesforceSource


def mocked(p: Any) -> respx.MockRouter:
    mock = respx.mock()
    mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
    return mock


def page(p: Any, n: int = 1, next_url: str | None = None) -> dict[str, Any]:
    return p.query([p.record(f"00600000000000{i}AAA", f"2026-05-01T10:00:0{i}.000+0000") for i in range(n)],
                   next_url=next_url)


def test_a_5xx_storm_is_retried_a_bounded_number_of_times_then_transient(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    delays: list[float] = []
    with mocked(p) as mock:
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(
            503, json=p.errors("SERVER_UNAVAILABLE", "Server unavailable"))
        source = SalesforceSource("sf", sf_settings(retry_attempts=4, retry_backoff_seconds=0.5,
                                                    retry_backoff_max_seconds=3), sleep=delays.append)
        with pytest.raises(TransientSourceError, match="503 SERVER_UNAVAILABLE.*after 4 attempts"):
            source.fetch(None, 10)
    assert query.call_count == 4
    assert len(delays) == 3 and all(0 < d <= 3 for d in delays)
    assert delays[2] > delays[0]  # exponential: 0.25-0.5, 0.5-1, 1-2 s


def test_429_and_500_then_success(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    delays: list[float] = []
    with mocked(p) as mock:
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").mock(side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}, json=p.errors("REQUEST_LIMIT_EXCEEDED", "slow down")),
            httpx.Response(500, json=p.errors("UNKNOWN_EXCEPTION", "An unexpected error occurred.")),
            httpx.Response(200, json=page(p, 2))])
        source = SalesforceSource("sf", sf_settings(retry_backoff_max_seconds=5), sleep=delays.append)
        assert len(source.fetch(None, 10).records) == 2
    assert query.call_count == 3
    assert delays[0] == 2  # Retry-After honoured (within retry_backoff_max_seconds)


def test_connection_errors_and_timeouts_are_retried(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    with mocked(p) as mock:
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").mock(side_effect=[
            httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out"),
            httpx.Response(200, json=page(p))])
        assert len(SalesforceSource("sf", sf_settings()).fetch(None, 10).records) == 1
        assert query.call_count == 3
        query.mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(TransientSourceError, match="ConnectError: connection refused.*after 4 attempts"):
            SalesforceSource("sf", sf_settings()).fetch(None, 10)


def test_every_request_has_a_timeout(sf_settings, sf_payloads) -> None:
    source = SalesforceSource("sf", sf_settings(http_timeout_seconds=7.5))
    assert source.client.http.timeout == httpx.Timeout(7.5)
    p = sf_payloads
    with mocked(p) as mock:
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=page(p))
        source.fetch(None, 10)
    assert query.calls[0].request.extensions["timeout"] == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}


def test_request_limit_exceeded_is_not_retried(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    with mocked(p) as mock:
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(
            403, headers={"Sforce-Limit-Info": "api-usage=15001/15000"},
            json=p.errors("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
        source = SalesforceSource("sf", sf_settings())
        with pytest.raises(TransientSourceError, match="REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded"):
            source.fetch(None, 10)
        assert query.call_count == 1
        with pytest.raises(TransientSourceError, match="API budget reached"):  # no request until later
            source.fetch(None, 10)
        assert query.call_count == 1


def test_the_daily_budget_stops_requests_before_the_configured_share(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    with mocked(p) as mock:
        first = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(
            200, headers={"Sforce-Limit-Info": "api-usage=11999/15000"},
            json=page(p, 2, next_url=f"{p.DATA}/query/01gAA-2"))
        more = mock.get(f"{p.INSTANCE}{p.DATA}/query/01gAA-2").respond(
            200, headers={"Sforce-Limit-Info": "api-usage=12000/15000"},
            json=page(p, 3, next_url=f"{p.DATA}/query/01gAA-5"))
        last = mock.get(f"{p.INSTANCE}{p.DATA}/query/01gAA-5").respond(200, json=page(p, 1))
        source = SalesforceSource("sf", sf_settings(api_budget_share=0.8))
        result = source.fetch(None, 100)
        assert len(result.records) == 5 and result.more  # what was read is kept, with its exact cursor
        with pytest.raises(TransientSourceError) as info:
            source.fetch(result.cursor, 100)
        assert str(info.value).startswith("Salesforce API budget reached: 12000 of the org's 15000 daily API "
                                          "requests used (80.0%), api_budget_share is 80%")
        with pytest.raises(TransientSourceError, match="API budget reached"):  # the next poll too, without a call
            source.fetch(result.cursor, 100)
        assert (first.call_count, more.call_count, last.call_count) == (1, 1, 0)
        source.client.budget.recheck_seconds = 0  # later: one request reads the usage again
        assert source.fetch(result.cursor, 100).records
        assert first.call_count == 2  # a new query from the cursor: locators are not kept across polls


def test_the_budget_against_the_simulator(sf_sim: SalesforceSimulator, sf_source) -> None:
    sf_sim.api_limit, sf_sim.api_usage = 100, 89
    sf_sim.max_page_size = 2
    for n in range(10):
        sf_sim.add_opportunity(StageName="Closed Won", Amount=n + 1)
    source = sf_source(api_budget_share=0.9, opportunity={"reversals": False})
    result = source.fetch(None, 100)
    assert len(result.records) == 2 and result.more  # the first answer said 90/100
    with pytest.raises(TransientSourceError, match="90 of the org's 100"):
        source.fetch(result.cursor, 100)
    assert sf_sim.api_usage == 90


@pytest.mark.parametrize(("code", "message", "expected"), [
    ("INVALID_FIELD", "\nSELECT Id, Partner__c FROM Opportunity\n           ^\nERROR at Row:1:Column:12\nNo such "
     "column 'Partner__c' on entity 'Opportunity'. If you are attempting to use a custom field, be sure to append the "
     "'__c' after the custom field name.", "no field Partner__c on Opportunity"),
    ("INVALID_TYPE", "\nSELECT Id FROM Claim__c\n               ^\nERROR at Row:1:Column:16\nsObject type "
     "'Claim__c' is not supported.", "no object Claim__c"),
    ("MALFORMED_QUERY", "\nStatus__c = Approved\n            ^\nERROR at Row:1:Column:98\nunexpected token: "
     "'Approved'", "unexpected token: 'Approved'"),
])
def test_query_errors_are_permanent_and_name_the_culprit(sf_settings, sf_payloads, code: str, message: str,
                                                         expected: str) -> None:
    p = sf_payloads
    with mocked(p) as mock:
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(400, json=p.errors(code, message))
        with pytest.raises(PermanentSourceError) as info:
            SalesforceSource("sf", sf_settings()).fetch(None, 10)
    assert query.call_count == 1
    assert f"({code}): {expected}" in str(info.value)


def test_a_bad_mapping_against_the_simulator_names_the_field(sf_source) -> None:
    source = sf_source(opportunity={"partner_field": "Partner_Account__c", "reversals": False})
    with pytest.raises(PermanentSourceError, match="no field Partner_Account__c on Opportunity"):
        source.fetch(None, 10)


@pytest.mark.parametrize(("status", "code"), [(403, "API_DISABLED_FOR_ORG"), (403, "INSUFFICIENT_ACCESS"),
                                              (404, "NOT_FOUND")])
def test_access_problems_are_permanent(sf_settings, sf_payloads, status: int, code: str) -> None:
    p = sf_payloads
    with mocked(p) as mock:
        mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(status, json=p.errors(code, "nope"))
        with pytest.raises(PermanentSourceError, match=code):
            SalesforceSource("sf", sf_settings()).fetch(None, 10)


def test_an_error_after_a_partial_batch_keeps_the_batch(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    with mocked(p) as mock:
        first = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=page(p, 3, f"{p.DATA}/query/01gBB-3"))
        more = mock.get(f"{p.INSTANCE}{p.DATA}/query/01gBB-3").respond(502, text="Bad Gateway")
        source = SalesforceSource("sf", sf_settings(retry_attempts=2))
        result = source.fetch(None, 100)
        assert len(result.records) == 3 and result.more
        with pytest.raises(TransientSourceError, match="HTTP 502"):  # the stored error, without a new request
            source.fetch(result.cursor, 100)
        assert (first.call_count, more.call_count) == (1, 2)
        more.respond(200, json=page(p, 1))
        again = source.fetch(result.cursor, 100)  # the next poll: a new query from the cursor
        assert first.call_count == 2 and again.records


def test_injected_faults_on_the_simulator(sf_sim: SalesforceSimulator, sf_source,
                                          sf_drain: Callable[..., Any]) -> None:
    for n in range(5):
        sf_sim.add_opportunity(StageName="Closed Won", Amount=n + 1)
    sf_sim.fail_next(503, 2)
    sf_sim.fail_next(429, 1, retry_after="0")
    source = sf_source(opportunity={"reversals": False})
    assert len(sf_drain(source).records) == 5
    sf_sim.fail_next(500, 10)
    with pytest.raises(TransientSourceError, match="500 UNKNOWN_EXCEPTION"):
        source.fetch(None, 10)
