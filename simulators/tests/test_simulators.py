"""payhub-simulators: each simulator on the shared fault-injecting server, and the ``payhub-simulator`` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from payhub_simulators import cli
from payhub_simulators.exactjson import dumps, loads
from payhub_simulators.giftcard import GiftCardSimulator, pretty, stored_orders
from payhub_simulators.hubspot import HubSpotSimulator
from payhub_simulators.salesforce import SalesforceSimulator

ORDER = {"external_id": "ph-1", "payment": {"funding_source_id": "balance"},
         "reward": {"products": ["SIM-AMZ-US"], "value": {"denomination": Decimal("10.00"), "currency_code": "USD"},
                    "recipient": {"name": "A", "email": "a@example.com"}}}


def order(sim: GiftCardSimulator, body: Mapping[str, object] = ORDER, timeout: float = 5) -> httpx.Response:
    return httpx.post(f"{sim.url}/orders", content=dumps(body), timeout=timeout,
                      headers={"Authorization": f"Bearer {sim.api_key}", "Content-Type": "application/json"})


def test_exact_json_keeps_amounts() -> None:
    assert loads(dumps({"a": Decimal("10.10"), "b": [1, None, True]})) == {"a": Decimal("10.10"), "b": [1, None, True]}
    with pytest.raises(TypeError):
        dumps(0.1)


def test_giftcard_orders_once_and_its_faults_are_the_servers(tmp_path: Path) -> None:
    with GiftCardSimulator(state_path=tmp_path / "s.db") as sim:
        assert order(sim).status_code == 200
        assert order(sim).status_code == 201  # the same external_id: the stored order
        sim.plan("rate_limit=3")
        limited = order(sim)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
        sim.server.plan("timeout_after_accept", method="POST")  # any server fault applies too
        with pytest.raises(httpx.RemoteProtocolError):
            order(sim, {**ORDER, "external_id": "ph-2"})
        assert sim.order_counts() == {"ph-1": 1, "ph-2": 1}
        assert [(r["status"], r["note"]) for r in sim.requests("POST")] == [
            (200, "created"), (201, "duplicate"), (429, "simulated rate_limit"), (200, "created")]
    assert [o["external_id"] for o in stored_orders(tmp_path / "s.db")] == ["ph-1", "ph-2"]
    assert '"denomination": 10.00' in pretty(stored_orders(tmp_path / "s.db"))


def test_hubspot_pages_and_limits_through_the_server() -> None:
    with HubSpotSimulator(search_per_second=2) as sim:
        for _ in range(3):
            sim.add_deal()
        auth = {"Authorization": f"Bearer {sim.private_token}"}
        search = f"{sim.url}/crm/v3/objects/deals/search"
        first = httpx.post(search, json={"limit": 2}, headers=auth).json()
        assert len(first["results"]) == 2 and first["paging"]["next"]["after"] == "2"
        assert httpx.post(search, json={"limit": 2, "after": "2"}, headers=auth).status_code == 200
        assert httpx.post(search, json={"limit": 2}, headers=auth).status_code == 429  # 2 per second
        sim.fail("/crm/v3/pipelines", 503)
        assert httpx.get(f"{sim.url}/crm/v3/pipelines/deals", headers=auth).status_code == 503
        assert [r.status for r in sim.requests] == [200, 200, 429, 503]


def test_salesforce_faults_keep_their_shape() -> None:
    with SalesforceSimulator() as sim:
        sim.fail_next(429, retry_after="0")
        token = httpx.post(f"{sim.url}/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        query = f"{sim.url}/services/data/v62.0/query"
        limited = httpx.get(query, params={"q": "SELECT Id FROM Opportunity"}, headers=headers)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "0")
        assert limited.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED" and "Sforce-Limit-Info" in limited.headers
        assert not sim.faults
        assert httpx.get(query, params={"q": "SELECT Id FROM Opportunity"}, headers=headers).json()["done"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["hubspot", "--deals", "1", "--source", "hs"], ["PAYHUB_SOURCES__HS__ACCESS_TOKEN", "PAYHUB_SOURCES__HS__BASE_URL",
                                                    "SIMULATOR_URL"]),
    (["salesforce", "--opportunities", "1", "--source", "sf"],
     ["PAYHUB_SOURCES__SF__CLIENT_ID", "PAYHUB_SOURCES__SF__CLIENT_SECRET", "PAYHUB_SOURCES__SF__LOGIN_URL",
      "SIMULATOR_URL"]),
    (["giftcard", "--rail", "gift"], ["PAYHUB_RAILS__GIFT__API_KEY", "PAYHUB_RAILS__GIFT__BASE_URL", "SIMULATOR_URL"]),
])
def test_the_command_serves_while_a_command_runs(argv: list[str], expected: list[str], tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    script = ("import json, os; env = {k: v for k, v in os.environ.items() "
              "if k.startswith('PAYHUB_') or k == 'SIMULATOR_URL'}; "
              f"open({str(out)!r}, 'w').write(json.dumps(env))")
    assert cli.main([*argv, "--", sys.executable, "-c", script]) == 0
    env = json.loads(out.read_text())
    assert sorted(env) == expected and env["SIMULATOR_URL"].startswith("http://127.0.0.1:")
    assert cli.main([*argv, "--", sys.executable, "-c", "raise SystemExit(4)"]) == 4
