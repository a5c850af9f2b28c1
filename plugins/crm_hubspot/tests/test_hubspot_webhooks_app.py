"""HubSpot deliveries through payhub's HTTP app, end to end: ``POST /webhooks/hs`` (httpx's ASGI transport) checks
and queues, the source's next poll reads the deals by id from the HubSpot simulator and stores their events.

Runs on SQLite and PostgreSQL: the queue and the delivery ids are rows of payhub's database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from payhub_simulators.hubspot import HubSpotSimulator

from payhub.testing import Harness
from payhub_hubspot import sign_v3
from payhub_hubspot.source import BATCH_READ_PATH

SECRET = "app-client-secret"
URL = "http://testserver/webhooks/hs"
MakeHarness = Callable[..., Harness]
Http = Callable[[Harness], httpx.Client]


@pytest.fixture
def runtime_db_url(both_databases: str) -> str:
    """The runtimes of this module run on SQLite and on PostgreSQL."""
    return both_databases


def event(kind: str, deal: str) -> dict[str, Any]:
    """One notification as HubSpot sends it (webhooks API v3)."""
    return {"eventId": 3816279340, "subscriptionId": 25, "portalId": 62515, "appId": 1160452,
            "occurredAt": int(time.time() * 1000), "subscriptionType": kind, "attemptNumber": 0,
            "objectId": int(deal), "changeSource": "CRM"}


def signed(body: bytes, *, secret: str = SECRET, age_ms: int = 0, url: str = URL) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000) - age_ms)
    return {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": sign_v3(secret, "POST", url, body, timestamp)}


@pytest.fixture
def http() -> Iterator[Http]:
    """``http(harness)``: a client of payhub's HTTP app on the harness, as from 203.0.113.7; closed after the test."""
    made: list[httpx.Client] = []

    def make(harness: Harness) -> httpx.Client:
        made.append(harness.http_client(client=("203.0.113.7", 50000)))
        return made[-1]

    yield make
    for client in made:
        client.close()


def post(app: httpx.Client, body: bytes, headers: dict[str, str], path: str = "/webhooks/hs") -> httpx.Response:
    return app.post(path, content=body, headers=headers)


def poll(rt: Harness, source: str) -> int:
    return rt.ingest(source, batches=None)


def stored(rt: Harness, deal: str) -> Sequence[tuple[str, str]]:
    """(transition kind, event type) of the deal's stored events."""
    return [(e.transition.split(":")[0], e.event_type) for e in rt.events() if e.object_id == deal]


def test_deliveries_are_checked_queued_and_read_at_the_next_poll(sim: HubSpotSimulator,
                                                                 hs_harness: MakeHarness, http: Http) -> None:
    rt = hs_harness({"client_secret": SECRET, "index_lag_seconds": 3600, "archived_sweep_seconds": 0})
    poll(rt, "hs")
    deal = sim.add_deal("contractsent")
    sim.update_deal(deal, dealstage="closedwon")  # too recent for any window (an hour of index lag)
    app = http(rt)

    body = json.dumps([event("deal.creation", deal), event("deal.propertyChange", deal)]).encode()
    headers = signed(body)
    accepted = post(app, body, headers)
    assert accepted.status_code == 200 and accepted.json()["queued"] == 1, accepted.text
    replayed = post(app, body, headers)  # an exact copy: the same delivery id
    assert replayed.status_code == 409, replayed.text
    refused = {
        "forged": post(app, body, signed(body, secret="someone-else")),
        "stale": post(app, body, signed(body, age_ms=6 * 60_000)),
        "future": post(app, body, signed(body, age_ms=-6 * 60_000)),
        "unsigned": post(app, body, {"Content-Type": "application/json"}),
        "other URL": post(app, body, signed(body, url="https://elsewhere.example.com/webhooks/hs")),
        "malformed": post(app, b"[{]", signed(b"[{]")),
    }
    assert {name: r.status_code for name, r in refused.items()} == {
        "forged": 401, "stale": 401, "future": 401, "unsigned": 401, "other URL": 401, "malformed": 400}
    assert "old" in refused["stale"].json()["error"] and SECRET not in refused["forged"].text
    assert len(rt.webhook_objects()) == 1 and len(rt.webhook_deliveries()) == 1
    assert stored(rt, deal) == []  # nothing is read from HubSpot while the request is answered

    reads = len(sim.calls(BATCH_READ_PATH))
    poll(rt, "hs")  # the worker's next poll reads the queued deal by id
    assert stored(rt, deal) == [("won", "deal_won")]
    assert sim.calls(BATCH_READ_PATH)[reads].body["inputs"] == [{"id": deal}]
    assert len(rt.webhook_objects()) == 0
    poll(rt, "hs")
    assert stored(rt, deal) == [("won", "deal_won")]

    sim.archive_deal(deal)
    deletion = json.dumps([event("deal.deletion", deal)]).encode()
    assert post(app, deletion, signed(deletion)).status_code == 200
    poll(rt, "hs")
    assert stored(rt, deal) == [("won", "deal_won"), ("deleted", "deal_reversed")]
    assert len(rt.audit("webhook.received")) == 2


def test_the_public_url_behind_a_proxy(sim: HubSpotSimulator, hs_harness: MakeHarness, http: Http) -> None:
    public = "https://payhub.example.com/webhooks/hs"
    rt = hs_harness({"client_secret": SECRET, "index_lag_seconds": 3600, "webhook_url": public})
    app = http(rt)
    deal = sim.add_deal()
    body = json.dumps([event("deal.creation", deal)]).encode()
    assert post(app, body, signed(body)).status_code == 401  # signed for the URL payhub sees, not HubSpot's
    assert post(app, body, signed(body, url=public)).status_code == 200
    poll(rt, "hs")
    assert stored(rt, deal) == [("won", "deal_won")]


def test_a_source_without_a_signing_key_takes_no_deliveries(sim: HubSpotSimulator,
                                                            hs_harness: MakeHarness, http: Http) -> None:
    rt = hs_harness()  # a private app token, neither client_secret nor webhook_secret
    app = http(rt)
    body = json.dumps([event("deal.creation", sim.add_deal())]).encode()
    answer = post(app, body, signed(body))
    assert answer.status_code == 404 and "webhook_secret" in answer.json()["error"]
    assert len(rt.webhook_objects()) == 0
