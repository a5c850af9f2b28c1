"""Webhooks: the receiver verifies v3 signatures, queues deal ids, and the next fetch reads those deals by id."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from payhub.api import SourceRecord
from payhub_hubspot import HubSpotSource, sign_v3
from payhub_hubspot.simulator import HubSpotSimulator
from payhub_hubspot.source import BATCH_READ_PATH
from payhub_hubspot.webhooks import deal_ids

SECRET = "app-client-secret"
HOUR = 3_600_000
Drain = Callable[..., tuple[list[SourceRecord], str | None]]


def event(kind: str, object_id: str, **extra: Any) -> dict[str, Any]:
    """One notification as HubSpot sends it (webhooks API v3)."""
    return {"eventId": 3816279340, "subscriptionId": 25, "portalId": 62515, "appId": 1160452,
            "occurredAt": int(time.time() * 1000), "subscriptionType": kind, "attemptNumber": 0,
            "objectId": int(object_id), "changeSource": "CRM", **extra}


def post(source: HubSpotSource, events: Any, *, secret: str = SECRET, age_ms: int = 0, path: str | None = None,
         signed_uri: str | None = None, body: bytes | None = None, method: str = "POST") -> httpx.Response:
    address = source.start_webhooks()
    assert address is not None
    host, port = address
    target = f"http://{host}:{port}{path or source.settings.webhook_path}"
    raw = body if body is not None else json.dumps(events).encode()
    timestamp = str(int(time.time() * 1000) - age_ms)
    signature = sign_v3(secret, method, signed_uri or target, raw, timestamp)
    return httpx.request(method, target, content=raw, headers={
        "Content-Type": "application/json", "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": timestamp, "X-HubSpot-Signature-Version": "v3"})


@pytest.fixture
def hooked(make_source: Callable[..., HubSpotSource]) -> Callable[..., HubSpotSource]:
    """A source with the receiver on an ephemeral port, whose windows never see the last hour."""

    def factory(**overrides: Any) -> HubSpotSource:
        values: dict[str, Any] = {"client_secret": SECRET, "webhook_port": 0, "index_lag_seconds": 3600,
                                  **overrides}
        return make_source(**values)

    return factory


def test_deal_ids_from_notifications() -> None:
    events = [
        event("deal.propertyChange", "11", propertyName="dealstage", propertyValue="closedwon"),
        event("deal.creation", "12"),
        event("deal.deletion", "13"),
        event("contact.creation", "14"),
        {"subscriptionType": "deal.associationChange", "associationType": "DEAL_TO_COMPANY", "fromObjectId": 15,
         "toObjectId": 99},
        {"subscriptionType": "object.propertyChange", "objectTypeId": "0-3", "objectId": 16},
        {"subscriptionType": "object.propertyChange", "objectTypeId": "0-1", "objectId": 17},
        "garbage",
        {"subscriptionType": "deal.creation", "objectId": "not-a-number"},
        {"subscriptionType": "deal.creation", "objectId": "١٢٣"},  # Unicode digits are not an id
        {"subscriptionType": "deal.creation", "objectId": 2**63},  # beyond HubSpot's 64-bit ids
        {"subscriptionType": "deal.creation", "objectId": True},
        {"subscriptionType": ["deal.creation"], "objectId": 19},
    ]
    assert deal_ids(events) == ["11", "12", "13", "15", "16"]
    assert deal_ids(event("deal.creation", "18")) == ["18"]


def test_valid_signature_queues_and_fetch_reads_by_id(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource],
                                                      drain: Drain) -> None:
    old = sim.add_deal(at_ms=sim.now_ms() - 3 * HOUR)
    source = hooked()
    records, cursor = drain(source)
    assert [r.object_id for r in records] == [old]
    fresh = sim.add_deal("contractsent")
    sim.update_deal(fresh, dealstage="closedwon")  # too recent for any window (index lag of an hour)
    answer = post(source, [event("deal.propertyChange", fresh, propertyName="dealstage",
                                 propertyValue="closedwon")])
    assert answer.status_code == 200 and answer.json() == {"deals": 1}
    reads = len(sim.calls(BATCH_READ_PATH))
    result = source.fetch(cursor, 100)
    assert [(r.object_id, r.transition.split(":")[0]) for r in result.records] == [(fresh, "won")]
    assert result.more  # returned at once; the windows come with the next fetch
    assert sim.calls(BATCH_READ_PATH)[reads].body["inputs"] == [{"id": fresh}]
    after = source.fetch(result.cursor, 100)
    assert after.records == [] and not after.more


def test_more_is_true_while_notifications_wait(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource],
                                               drain: Drain) -> None:
    source = hooked()
    _, cursor = drain(source)
    deals = [sim.add_deal() for _ in range(5)]
    assert post(source, [event("deal.creation", d) for d in deals]).status_code == 200
    first = source.fetch(cursor, 2)
    assert len(first.records) == 2 and first.more
    rest, _ = drain(source, first.cursor, limit=2)
    assert sorted(r.object_id for r in [*first.records, *rest]) == deals


def test_unstored_batch_is_delivered_again(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource],
                                           drain: Drain) -> None:
    source = hooked()
    _, cursor = drain(source)
    deal = sim.add_deal()
    post(source, [event("deal.creation", deal)])
    lost = source.fetch(cursor, 100)  # the core crashed before storing this batch and its cursor ...
    assert [r.object_id for r in lost.records] == [deal]
    again = source.fetch(cursor, 100)  # ... so it asks again from the cursor it had: same records
    assert [r.object_id for r in again.records] == [deal]
    done = source.fetch(again.cursor, 100)  # stored this time: acknowledged, not read again
    assert done.records == []


def test_deletion_notification_reverses_a_won_deal(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource],
                                                   drain: Drain) -> None:
    deal = sim.add_deal(at_ms=sim.now_ms() - 3 * HOUR)
    open_deal = sim.add_deal("qualifiedtobuy", at_ms=sim.now_ms() - 3 * HOUR)
    source = hooked(archived_sweep_seconds=0)
    records, cursor = drain(source)
    assert [r.object_id for r in records] == [deal]
    sim.archive_deal(deal)
    sim.archive_deal(open_deal)
    post(source, [event("deal.deletion", deal), event("deal.deletion", open_deal)])
    result = source.fetch(cursor, 100)
    assert [(r.object_id, r.transition, r.event_type) for r in result.records] == [
        (deal, f"deleted:{sim.deals[int(deal)].archived_ms}", "deal_reversed")]
    archived_reads = [r for r in sim.calls(BATCH_READ_PATH) if r.query.get("archived") == ["true"]]
    assert archived_reads and {i["id"] for i in archived_reads[-1].body["inputs"]} == {deal, open_deal}


@pytest.mark.parametrize(("tamper", "status"), [
    ({"secret": "someone-else"}, 401),
    ({"age_ms": 5 * 60 * 1000 + 5000}, 401),    # stale: a replay
    ({"age_ms": -(5 * 60 * 1000 + 5000)}, 401),  # from the future
    ({"signed_uri": "http://127.0.0.1:1/hubspot/webhooks"}, 401),
    ({"path": "/elsewhere"}, 404),
    ({"body": b"not json"}, 400),
])
def test_rejected_requests_queue_nothing(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource],
                                         tamper: dict[str, Any], status: int) -> None:
    source = hooked()
    deal = sim.add_deal()
    answer = post(source, [event("deal.creation", deal)], **tamper)
    assert answer.status_code == status
    assert len(source.inbox) == 0 and (status != 401 or source.receiver and source.receiver.rejected == 1)


def test_unsigned_and_get_requests(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource]) -> None:
    source = hooked()
    address = source.start_webhooks()
    assert address is not None
    url = f"http://{address[0]}:{address[1]}/hubspot/webhooks"
    assert httpx.post(url, json=[event("deal.creation", "1")]).status_code == 401
    assert httpx.get(url).status_code == 405
    assert len(source.inbox) == 0


def test_signature_over_the_public_url(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource]) -> None:
    public = "https://payhub.example.com/hooks/hubspot"
    source = hooked(webhook_url=public, webhook_secret="separate-secret")
    deal = sim.add_deal()
    ok = post(source, [event("deal.creation", deal)], secret="separate-secret", signed_uri=public)
    assert ok.status_code == 200 and len(source.inbox) == 1
    local = post(source, [event("deal.creation", deal)], secret="separate-secret")  # signed for the local URL
    assert local.status_code == 401


def test_no_receiver_without_a_port(make_source: Callable[..., HubSpotSource]) -> None:
    source = make_source(client_secret=SECRET)
    assert source.start_webhooks() is None and source.receiver is None
