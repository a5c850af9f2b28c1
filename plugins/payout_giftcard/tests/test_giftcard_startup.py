"""Starting the gift-card rail makes no HTTP client: the ``httpx.Client`` (its pool and TLS context) is created by
the first call, with the settings' timeouts, headers and proxy rule; a bad key or URL is still refused at start."""

from __future__ import annotations

import threading

import httpx
import pytest
from giftcard_helpers import API_KEY, instruction, payee
from payhub.api import Outcome
from payhub_simulators.giftcard import GiftCardSimulator
from pydantic import SecretStr

from payhub_giftcard import GiftCardRail, GiftCardSettings
from payhub_giftcard.client import GiftCardClient

REAL = "https://api.giftprovider.example/api/v2"


def test_starting_the_rail_makes_no_http_client_and_the_first_call_makes_it_as_configured(
        sim: GiftCardSimulator) -> None:
    rail = GiftCardRail("gift", GiftCardSettings(base_url=sim.url, api_key=SecretStr(API_KEY),
                                                 http_timeout_seconds=7.5, connect_timeout_seconds=2.5))
    try:
        assert rail.client._http is None
        [paid] = rail.send([instruction(1, "40.00", "EUR", payee("p1", country="DE"))])
        assert paid.outcome == Outcome.PAID
        http = rail.client._http
        assert http is not None and rail.client.http is http  # made once, then reused
        assert http.timeout == httpx.Timeout(7.5, connect=2.5)
        assert http.headers["Authorization"] == f"Bearer {API_KEY}"
        assert http.headers["User-Agent"] == "payhub-giftcard/0.1"
        assert str(http.base_url) == sim.url.rstrip("/") + "/"
        assert not http.trust_env  # a loopback provider: never through the environment's proxy
    finally:
        rail.close()


def test_the_client_settings_are_checked_when_the_client_is_made() -> None:
    with pytest.raises(UnicodeEncodeError):  # a header value httpx cannot send, refused at start as before
        GiftCardClient(REAL, SecretStr("clé"), timeout=5, connect_timeout=1)
    with pytest.raises(httpx.InvalidURL):
        GiftCardClient("http://[::1", SecretStr("k"), timeout=5, connect_timeout=1)


def test_threads_share_one_client_and_a_closed_client_stays_closed() -> None:
    client = GiftCardClient(REAL, SecretStr("k"), timeout=5, connect_timeout=1)
    made: list[httpx.Client] = []
    threads = [threading.Thread(target=lambda: made.append(client.http)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(http) for http in made}) == 1 and made[0].trust_env
    client.close()
    assert made[0].is_closed

    never_used = GiftCardClient(REAL, SecretStr("k"), timeout=5, connect_timeout=1)
    never_used.close()
    assert never_used._http is None  # closing makes nothing
    assert never_used.http.is_closed  # and a call after close fails as with a closed httpx.Client
    with pytest.raises(RuntimeError):
        never_used.http.get("orders")
