"""OAuth against the simulator: the date-versioned token endpoint by default, its RFC 6749 refusals, outages, and
the legacy v1 endpoint when configured."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from payhub_simulators.hubspot import LEGACY_TOKEN_PATH, TOKEN_PATH, HubSpotSimulator

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_hubspot import HubSpotSettings, HubSpotSource

HOUR = 3_600_000


@pytest.fixture
def oauth(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource]) -> Callable[..., HubSpotSource]:
    """``oauth(**overrides)``: a source with the simulator's OAuth app keys (overridable)."""

    def factory(**overrides: Any) -> HubSpotSource:
        keys = {"client_id": sim.client_id, "client_secret": sim.client_secret, "refresh_token": sim.refresh_token}
        return make_source(**{**keys, **overrides})

    return factory


def test_refresh_uses_the_2026_03_endpoint(sim: HubSpotSimulator, oauth: Callable[..., HubSpotSource],
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="payhub_hubspot")
    deal = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    result = oauth().fetch(None, 10)
    assert [r.object_id for r in result.records] == [deal]
    [grant] = sim.calls(TOKEN_PATH)
    assert grant.status == 200 and grant.query == {} and sim.calls(LEGACY_TOKEN_PATH) == []
    assert sim.token_grants == 1 and not [r for r in caplog.records if "2027-02-16" in r.getMessage()]


@pytest.mark.parametrize(("keys", "error"), [
    ({"refresh_token": "revoked-refresh-token"}, r"invalid_grant: missing or unknown refresh token "
                                                 r"\(BAD_REFRESH_TOKEN\).*install the app again"),
    ({"client_secret": "wrong-secret"}, r"invalid_client: invalid client_secret \(BAD_CLIENT_SECRET\)"),
    ({"client_id": "wrong-client"}, r"invalid_client: missing or invalid client_id \(BAD_CLIENT_ID\)"),
])
def test_refused_refresh_is_permanent_and_names_the_error(sim: HubSpotSimulator, oauth: Callable[..., HubSpotSource],
                                                          keys: dict[str, str], error: str) -> None:
    with pytest.raises(PermanentSourceError, match=error) as info:
        oauth(**keys).fetch(None, 10)
    assert "wrong-secret" not in str(info.value) and "revoked-refresh-token" not in str(info.value)
    assert [r.status for r in sim.requests] == [400]  # refused once, not retried, no API call


def test_token_endpoint_5xx_is_transient_then_recovers(sim: HubSpotSimulator,
                                                       oauth: Callable[..., HubSpotSource]) -> None:
    deal = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    sim.fail(TOKEN_PATH, 503, times=3)
    source = oauth(max_retries=2)
    with pytest.raises(TransientSourceError, match=r"POST /oauth/2026-03/token: HTTP 503.*3 attempt"):
        source.fetch(None, 10)
    assert [r.status for r in sim.calls(TOKEN_PATH)] == [503, 503, 503]
    sim.fail(TOKEN_PATH, 502, times=1)  # one more 5xx, within the retries: the next poll succeeds
    assert [r.object_id for r in source.fetch(None, 10).records] == [deal]
    assert sim.token_grants == 1


def test_configured_v1_path_still_works(sim: HubSpotSimulator, oauth: Callable[..., HubSpotSource],
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="payhub_hubspot")
    deal = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    source = oauth(oauth_token_path=LEGACY_TOKEN_PATH)
    assert [r.object_id for r in source.fetch(None, 10).records] == [deal]
    assert [r.status for r in sim.calls(LEGACY_TOKEN_PATH)] == [200] and sim.calls(TOKEN_PATH) == []
    assert [r.levelno for r in caplog.records if "2027-02-16" in r.getMessage()] == [logging.WARNING]
    sim.expire_tokens()  # a refresh after a 401 goes to the configured path too
    sim.update_deal(deal, dealname="renamed")
    source.fetch(None, 10)
    assert len(sim.calls(LEGACY_TOKEN_PATH)) == 2 and sim.calls(TOKEN_PATH) == []
    with pytest.raises(PermanentSourceError, match="invalid_grant"):
        oauth(oauth_token_path=LEGACY_TOKEN_PATH, refresh_token="revoked").fetch(None, 10)


def test_simulator_refuses_credentials_in_the_query(sim: HubSpotSimulator) -> None:
    status, _, body = sim.dispatch("POST", f"{TOKEN_PATH}?client_secret=x", {}, b"grant_type=refresh_token")
    assert (status, json.loads(body)["error"]) == (400, "invalid_request")


@pytest.mark.parametrize("path", ["oauth/token", "/oauth/v1/token?x=1", "/oauth token", "/a#b", "/" + "a" * 300,
                                  "/oauth/\u00e9", ""])
def test_oauth_token_path_is_a_plain_url_path(make_settings: Callable[..., HubSpotSettings], path: str) -> None:
    with pytest.raises(ValueError, match="oauth_token_path"):
        make_settings(oauth_token_path=path)


def test_oauth_token_path_default(make_settings: Callable[..., HubSpotSettings]) -> None:
    assert make_settings().oauth_token_path == "/oauth/2026-03/token"
    assert make_settings(oauth_token_path="/oauth/v1/token").oauth_token_path == "/oauth/v1/token"
