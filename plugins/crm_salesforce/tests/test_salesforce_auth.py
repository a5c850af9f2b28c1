"""Logging in: the three OAuth flows, proactive and on-401 renewal (single-flight), rotated refresh tokens persisted."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from payhub_simulators.salesforce import SalesforceSimulator

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_salesforce import SalesforceSource

NOW = 1_780_000_000.0


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def one_page(p: Any) -> dict[str, Any]:
    return p.query([p.record("006000000000001AAA", "2026-05-01T10:00:00.000+0000")])


def test_client_credentials_login_uses_the_instance_url_answered(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    with respx.mock(assert_all_called=True) as mock:
        token = mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=one_page(p))
        source = SalesforceSource("sf", sf_settings())
        result = source.fetch(None, 10)
    assert [r.object_id for r in result.records] == ["006000000000001AAA"]
    sent = form(token.calls[0].request)
    assert sent == {"grant_type": "client_credentials", "client_id": "3MVG9client", "client_secret": "s3cret-value"}
    request = query.calls[0].request
    assert request.headers["Authorization"] == "Bearer 00D000000000001!AQ0AQ.token"
    assert request.headers["Sforce-Query-Options"] == "batchSize=200"
    assert "ORDER BY SystemModstamp ASC, Id ASC" in request.url.params["q"]


def test_jwt_bearer_assertion_is_rs256_with_the_documented_claims(sf_settings, sf_payloads, sf_rsa_key) -> None:
    private, public = sf_rsa_key
    p = sf_payloads
    settings = sf_settings(auth="jwt_bearer", client_secret=None, username="integration@acme.example",
                           private_key=private.decode())
    with respx.mock() as mock:
        token = mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
        mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=one_page(p))
        SalesforceSource("sf", settings, clock=lambda: NOW).fetch(None, 10)
    sent = form(token.calls[0].request)
    assert sent["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert set(sent) == {"grant_type", "assertion"}  # no client secret in this flow
    assertion = sent["assertion"]
    assert jwt.get_unverified_header(assertion)["alg"] == "RS256"
    claims = jwt.decode(assertion, public, algorithms=["RS256"], audience="https://login.salesforce.com",
                        options={"verify_exp": False})
    assert claims == {"iss": "3MVG9client", "sub": "integration@acme.example", "aud": "https://login.salesforce.com",
                      "exp": int(NOW) + 180}


def test_jwt_audience_follows_a_sandbox_login_url(sf_settings, sf_rsa_key) -> None:
    settings = sf_settings(auth="jwt_bearer", client_secret=None, username="u@acme.example",
                           private_key=sf_rsa_key[0].decode(), login_url="https://test.salesforce.com")
    assert settings.audience == "https://test.salesforce.com"
    assert sf_settings(jwt_audience="https://acme.my.site.com/partners").audience == \
        "https://acme.my.site.com/partners"


def test_jwt_bearer_against_the_simulator(sf_sim: SalesforceSimulator, sf_source, sf_drain, sf_rsa_key) -> None:
    sf_sim.jwt_public_key = sf_rsa_key[1]
    sf_sim.add_opportunity(StageName="Closed Won", Amount=100)
    source = sf_source(auth="jwt_bearer", client_secret=None, username=sf_sim.username,
                       private_key=sf_rsa_key[0].decode(), opportunity={"reversals": False})
    assert len(sf_drain(source).records) == 1
    wrong = sf_source(auth="jwt_bearer", client_secret=None, username="someone@else.example",
                      private_key=sf_rsa_key[0].decode())
    with pytest.raises(PermanentSourceError, match="invalid_grant"):
        wrong.fetch(None, 10)


def test_refused_login_is_permanent_and_never_shows_the_secret(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    settings = sf_settings()
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings.model_dump())
    with respx.mock() as mock:
        mock.post(f"{p.LOGIN}/services/oauth2/token").respond(
            400, json={"error": "invalid_client", "error_description": "invalid client credentials"})
        with pytest.raises(PermanentSourceError, match="invalid_client: invalid client credentials") as info:
            SalesforceSource("sf", settings).fetch(None, 10)
    assert "s3cret-value" not in str(info.value)


def test_token_endpoint_outage_is_transient(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    with respx.mock() as mock:
        route = mock.post(f"{p.LOGIN}/services/oauth2/token").respond(503, text="down")
        with pytest.raises(TransientSourceError, match="503"):
            SalesforceSource("sf", sf_settings(retry_attempts=3)).fetch(None, 10)
    assert route.call_count == 3


def test_session_is_renewed_before_it_expires(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    now = [NOW]
    with respx.mock() as mock:
        token = mock.post(f"{p.LOGIN}/services/oauth2/token").mock(
            side_effect=lambda request: httpx.Response(200, json=p.token(issued_at=int(now[0] * 1000))))
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=p.query([]))
        source = SalesforceSource("sf", sf_settings(session_lifetime_seconds=7200, refresh_margin_seconds=300),
                                  clock=lambda: now[0])
        source.fetch(None, 10)
        now[0] += 6800  # 6800 s < 7200 - 300: still good
        source.fetch(None, 10)
        assert token.call_count == 1
        now[0] += 200  # 7000 s > 6900 s: renewed before the request, no 401 needed
        source.fetch(None, 10)
        assert token.call_count == 2
    assert query.call_count == 3


def test_invalid_session_mid_sync_renews_once_and_continues(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    page1 = p.query([p.record("006000000000001AAA", "2026-05-01T10:00:00.000+0000")],
                    next_url=f"{p.DATA}/query/01gXX-1", total=2)
    page2 = p.query([p.record("006000000000002AAA", "2026-05-01T10:00:01.000+0000")], total=2)
    tokens = iter(["tok-1", "tok-2"])
    with respx.mock() as mock:
        token = mock.post(f"{p.LOGIN}/services/oauth2/token").mock(
            side_effect=lambda request: httpx.Response(200, json=p.token(access_token=next(tokens))))
        mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=page1)
        more = mock.get(f"{p.INSTANCE}{p.DATA}/query/01gXX-1").mock(side_effect=[
            httpx.Response(401, json=p.errors("INVALID_SESSION_ID", "Session expired or invalid")),
            httpx.Response(200, json=page2)])
        result = SalesforceSource("sf", sf_settings()).fetch(None, 10)
    assert [r.object_id for r in result.records] == ["006000000000001AAA", "006000000000002AAA"]
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in more.calls] == ["Bearer tok-1", "Bearer tok-2"]


def test_a_second_401_after_renewal_is_permanent(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    with respx.mock() as mock:
        token = mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
        mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(
            401, json=p.errors("INVALID_SESSION_ID", "This session is not valid for use with the REST API"))
        with pytest.raises(PermanentSourceError, match="newly issued session"):
            SalesforceSource("sf", sf_settings()).fetch(None, 10)
    assert token.call_count == 2


def test_concurrent_401s_trigger_one_renewal(sf_sim: SalesforceSimulator, sf_source) -> None:
    source = sf_source()
    client = source.client
    client.get(f"{client.data_path}/query", params={"q": "SELECT Id FROM Opportunity"})
    assert len(sf_sim.token_requests) == 1
    sf_sim.expire_sessions()
    sf_sim.token_delay = 0.3  # every thread gets its 401 before the renewal answers
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            client.get(f"{client.data_path}/query", params={"q": "SELECT Id FROM Opportunity"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(sf_sim.token_requests) == 2  # the first login and exactly one renewal


def test_rotated_refresh_tokens_are_persisted_atomically(sf_sim: SalesforceSimulator, sf_source, sf_drain,
                                                         tmp_path: Path) -> None:
    sf_sim.rotate_refresh_tokens = True
    sf_sim.add_opportunity(StageName="Closed Won", Amount=100)
    store = tmp_path / "state" / "sf-token.json"
    settings = {"auth": "refresh_token", "client_secret": None, "refresh_token": "5Aep-sim-refresh-0",
                "token_store": str(store), "opportunity": {"reversals": False}}
    first = sf_source(**settings)
    assert len(sf_drain(first).records) == 1
    saved = json.loads(store.read_text())
    assert saved["refresh_token"] in sf_sim.refresh_tokens and saved["refresh_token"] != "5Aep-sim-refresh-0"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert [p.name for p in store.parent.iterdir()] == [store.name]  # no temporary file left behind
    assert "5Aep" not in repr(first.settings)

    sf_sim.expire_sessions()  # the next request needs a new session, from the rotated token
    assert first.fetch(None, 10).records
    second_token = json.loads(store.read_text())["refresh_token"]
    assert second_token != saved["refresh_token"] and second_token in sf_sim.refresh_tokens

    restarted = sf_source(**settings)  # a daemon restart: the setting still holds the first (now dead) token
    assert restarted.fetch(None, 10).records
    assert sf_sim.token_requests[-1]["refresh_token"] == second_token
    assert json.loads(store.read_text())["refresh_token"] in sf_sim.refresh_tokens


def test_a_new_refresh_token_in_the_settings_wins_over_the_store(sf_sim: SalesforceSimulator, sf_source,
                                                                 tmp_path: Path) -> None:
    store = tmp_path / "sf-token.json"
    store.write_text(json.dumps({"refresh_token": "stale", "seed_sha256": "of-an-older-setting"}))
    source = sf_source(auth="refresh_token", client_secret=None, refresh_token="5Aep-sim-refresh-0",
                       token_store=str(store), opportunity={"reversals": False})
    source.fetch(None, 10)
    assert sf_sim.token_requests[-1]["refresh_token"] == "5Aep-sim-refresh-0"


def test_an_unwritable_token_store_stops_the_source_until_fixed(sf_sim: SalesforceSimulator, sf_source,
                                                                tmp_path: Path) -> None:
    sf_sim.rotate_refresh_tokens = True
    store = tmp_path / "t.json"
    source = sf_source(auth="refresh_token", client_secret=None, refresh_token="5Aep-sim-refresh-0",
                       token_store=str(store), opportunity={"reversals": False})
    store.mkdir()  # something in the way: the rename over it fails
    with pytest.raises(TransientSourceError, match="cannot write the rotated Salesforce refresh token"):
        source.fetch(None, 10)
    with pytest.raises(TransientSourceError):  # nothing is read while the new token is not safe on disk
        source.fetch(None, 10)
    store.rmdir()
    source.fetch(None, 10)
    assert len(sf_sim.token_requests) == 1  # the rotated token was kept in memory meanwhile
    assert json.loads(store.read_text())["refresh_token"] in sf_sim.refresh_tokens


def test_settings_name_what_each_flow_needs(sf_settings) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs username and private_key or private_key_file"):
        sf_settings(auth="jwt_bearer", client_secret=None)
    with pytest.raises(ValidationError, match="needs refresh_token and token_store"):
        sf_settings(auth="refresh_token")
    with pytest.raises(ValidationError, match="org_currency"):
        sf_settings(org_currency=None)
    with pytest.raises(ValidationError, match="unique"):
        sf_settings(objects=[{"object": "Claim__c", "event_type": "a"}, {"object": "Claim__c", "event_type": "b"}])
    with pytest.raises(ValidationError, match="exactly one of event_type and event_type_field"):
        sf_settings(objects=[{"object": "Claim__c"}])
    with pytest.raises(ValidationError, match="not a Salesforce field API name"):
        sf_settings(opportunity={"amount_field": "Amount; DROP"})
