"""Webhooks: ``HubSpotSource.webhook`` verifies v3 signatures and names deals; ``read_objects`` reads them by id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from payhub_simulators.hubspot import HubSpotSimulator

from payhub.api import SourceRecord, TransientSourceError, WebhookRefused, WebhookRequest, WebhookResult
from payhub.testing import invoke_cli
from payhub_hubspot import HubSpotSettings, HubSpotSource, sign_v3
from payhub_hubspot.settings import MOVED_TO_HTTP
from payhub_hubspot.source import BATCH_READ_PATH, SEARCH_PATH, Cursor
from payhub_hubspot.webhooks import deal_ids

SECRET = "app-client-secret"
URL = "http://127.0.0.1:8700/webhooks/hs"
HOUR = 3_600_000
Drain = Callable[..., tuple[list[SourceRecord], str | None]]


def now_ms() -> int:
    return int(time.time() * 1000)


def event(kind: str, object_id: str, **extra: Any) -> dict[str, Any]:
    """One notification as HubSpot sends it (webhooks API v3)."""
    return {"eventId": 3816279340, "subscriptionId": 25, "portalId": 62515, "appId": 1160452,
            "occurredAt": now_ms(), "subscriptionType": kind, "attemptNumber": 0,
            "objectId": int(object_id), "changeSource": "CRM", **extra}


def delivery(events: Any = (), *, secret: str = SECRET, age_ms: int = 0, url: str = URL, signed_url: str | None = None,
             body: bytes | None = None, timestamp: str | None = None, method: str = "POST", signed_method: str = "POST",
             headers: Sequence[tuple[str, str]] | None = None) -> WebhookRequest:
    """A POST to ``/webhooks/hs`` as payhub's HTTP face hands it over, signed as HubSpot signs it."""
    raw = body if body is not None else json.dumps(list(events)).encode()
    ts = timestamp if timestamp is not None else str(now_ms() - age_ms)
    signature = sign_v3(secret, signed_method, signed_url or url, raw, ts)
    sent = headers if headers is not None else [("x-hubspot-signature-v3", signature),
                                                ("x-hubspot-request-timestamp", ts)]
    return WebhookRequest(method, url, [("content-type", "application/json"), *sent], raw, datetime.now(UTC))


def refusal(source: HubSpotSource, request: WebhookRequest) -> WebhookRefused:
    with pytest.raises(WebhookRefused) as caught:
        source.webhook(request)
    return caught.value


@pytest.fixture
def hooked(make_source: Callable[..., HubSpotSource]) -> Callable[..., HubSpotSource]:
    """A source that takes webhooks (the app's client secret), whose windows never see the last hour."""

    def factory(**overrides: Any) -> HubSpotSource:
        return make_source(**{"client_secret": SECRET, "index_lag_seconds": 3600, **overrides})

    return factory


# ---------------------------------------------------------------------------------------------- deliveries


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


def test_a_signed_delivery_names_its_deals_once(hooked: Callable[..., HubSpotSource]) -> None:
    source = hooked()
    result = source.webhook(delivery([
        event("deal.creation", "21"),
        event("deal.propertyChange", "21", propertyName="dealstage", propertyValue="closedwon"),
        event("contact.creation", "22"),
        event("deal.deletion", "23"),
        {"subscriptionType": "deal.associationChange", "associationType": "COMPANY_TO_DEAL", "fromObjectId": 99,
         "toObjectId": 21},
    ]))
    assert isinstance(result, WebhookResult)
    assert list(result.object_ids) == ["21", "23"] and list(result.records) == []
    assert result.delivery_id is not None and len(result.delivery_id) == 64
    empty = source.webhook(delivery([]))  # a delivery about nothing this source reads is still accepted
    assert list(empty.object_ids) == [] and empty.delivery_id not in (None, result.delivery_id)


@pytest.mark.parametrize(("change", "status", "reason"), [
    ({"secret": "someone-else"}, 401, "does not match"),
    ({"age_ms": 5 * 60 * 1000 + 5000}, 401, "old"),                  # stale: a replay
    ({"age_ms": -(5 * 60 * 1000 + 5000)}, 401, "future"),            # from a clock that cannot be trusted
    ({"signed_url": "http://127.0.0.1:1/webhooks/hs"}, 401, "does not match"),
    ({"method": "PUT"}, 401, "does not match"),
    ({"headers": [("x-hubspot-request-timestamp", "1")]}, 401, "missing"),
    ({"headers": []}, 401, "missing"),
    ({"timestamp": "1.7e12"}, 401, "epoch milliseconds"),
    ({"body": b"not json"}, 400, "not JSON"),
    ({"body": b'{"objectId": 1}'}, 400, "array"),
])
def test_refused_deliveries(hooked: Callable[..., HubSpotSource], change: dict[str, Any], status: int,
                            reason: str) -> None:
    source = hooked()
    refused = refusal(source, delivery([event("deal.creation", "31")], **change))
    assert (refused.status, reason in refused.reason) == (status, True), refused.reason
    assert SECRET not in refused.reason


def test_signature_and_timestamp_headers_once_each(hooked: Callable[..., HubSpotSource]) -> None:
    source = hooked()
    good = delivery([event("deal.creation", "32")])
    signature, timestamp = good.header("x-hubspot-signature-v3"), good.header("x-hubspot-request-timestamp")
    assert signature is not None and timestamp is not None
    for extra in [("x-hubspot-signature-v3", "AAAA"), ("x-hubspot-signature-v3", signature),
                  ("x-hubspot-request-timestamp", timestamp)]:
        repeated = WebhookRequest("POST", URL, [*good.headers, extra], good.body, good.received_at)
        assert refusal(source, repeated).status == 400
    assert list(source.webhook(good).object_ids) == ["32"]


def test_max_age_is_the_setting(hooked: Callable[..., HubSpotSource]) -> None:
    source = hooked(webhook_max_age_seconds=60)
    assert list(source.webhook(delivery([event("deal.creation", "33")], age_ms=55_000)).object_ids) == ["33"]
    assert refusal(source, delivery([event("deal.creation", "33")], age_ms=65_000)).status == 401
    assert refusal(source, delivery([event("deal.creation", "33")], age_ms=-65_000)).status == 401


def test_the_delivery_id_is_the_same_for_an_exact_copy_only(hooked: Callable[..., HubSpotSource]) -> None:
    source = hooked()
    ts = str(now_ms())
    body = json.dumps([event("deal.creation", "34")]).encode()
    first = source.webhook(delivery(body=body, timestamp=ts))
    copy = source.webhook(delivery(body=body, timestamp=ts))
    signature = sign_v3(SECRET, "POST", URL, body, ts)
    respelt = source.webhook(delivery(body=body, headers=[("x-hubspot-signature-v3", f" {signature}\t"),
                                                          ("x-hubspot-request-timestamp", f" {ts} ")]))
    assert first.delivery_id == copy.delivery_id == respelt.delivery_id  # the core refuses the copy (409)
    retried = source.webhook(delivery(body=body, timestamp=str(int(ts) + 1)))  # HubSpot's retry: a new timestamp
    other = source.webhook(delivery([event("deal.creation", "35")], timestamp=ts))
    assert len({first.delivery_id, retried.delivery_id, other.delivery_id}) == 3


def test_signature_over_the_public_url(hooked: Callable[..., HubSpotSource]) -> None:
    public = "https://payhub.example.com/webhooks/hs"
    source = hooked(webhook_url=public, webhook_secret="separate-secret")
    events = [event("deal.creation", "36")]
    accepted = source.webhook(delivery(events, secret="separate-secret", signed_url=public))
    assert list(accepted.object_ids) == ["36"]
    assert refusal(source, delivery(events, secret="separate-secret")).status == 401  # signed for the inner URL
    assert refusal(source, delivery(events, signed_url=public)).status == 401  # client_secret is not the key now
    # the query of the request is part of what HubSpot signed
    queried = delivery(events, secret="separate-secret", url=URL + "?portal=62515", signed_url=public + "?portal=62515")
    assert list(source.webhook(queried).object_ids) == ["36"]


def test_webhook_url_is_kept_as_written(make_settings: Callable[..., HubSpotSettings]) -> None:
    assert make_settings(webhook_url="https://h.example.com/webhooks/hs/").webhook_url == \
        "https://h.example.com/webhooks/hs/"
    for bad in ("ftp://h.example.com/webhooks/hs", "https://h.example.com/webhooks/ hs", "/webhooks/hs"):
        with pytest.raises(ValueError, match="webhook_url"):
            make_settings(webhook_url=bad)


def test_a_source_without_a_signing_key_takes_no_webhooks(make_source: Callable[..., HubSpotSource]) -> None:
    source = make_source()  # a private app token, no client_secret and no webhook_secret
    refused = refusal(source, delivery([event("deal.creation", "37")]))
    assert refused.status == 404 and "webhook_secret" in refused.reason


def test_webhooks_from_many_threads_next_to_a_fetch(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource],
                                                    drain: Drain) -> None:
    won = [sim.add_deal(at_ms=sim.now_ms() - 3 * HOUR + n) for n in range(30)]
    source = hooked(page_size=3)
    answers: dict[int, list[str]] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Event()

    def deliver(worker: int) -> None:
        start.wait()
        for n in range(25):
            deal = str(worker * 1000 + n + 1)
            try:
                ids = list(source.webhook(delivery([event("deal.creation", deal)])).object_ids)
                with lock:
                    answers[int(deal)] = ids
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                with lock:
                    failures.append(exc)

    threads = [threading.Thread(target=deliver, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    start.set()
    records, _ = drain(source, limit=5)
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert len(answers) == 200 and all(ids == [str(deal)] for deal, ids in answers.items())
    assert sorted((r.object_id for r in records), key=int) == won


# ---------------------------------------------------------------------------------------------- read_objects


def test_read_objects_reads_live_and_archived_deals(sim: HubSpotSimulator, hooked: Callable[..., HubSpotSource],
                                                    drain: Drain) -> None:
    won = sim.add_deal(at_ms=sim.now_ms() - 3 * HOUR, company=sim.add_company("Reseller"))
    deleted = sim.add_deal(at_ms=sim.now_ms() - 3 * HOUR)
    open_deal = sim.add_deal("qualifiedtobuy", at_ms=sim.now_ms() - 3 * HOUR)
    source = hooked(archived_sweep_seconds=0)
    by_windows, _ = drain(source)  # the same deals found by the windows, before the deletion
    assert sorted(r.object_id for r in by_windows) == [won, deleted]
    sim.archive_deal(deleted)
    sim.archive_deal(open_deal)
    reads = len(sim.calls(BATCH_READ_PATH))
    records = source.read_objects([won, deleted, open_deal, "999999", "not-an-id", won])
    assert [(r.object_id, r.transition.split(":")[0], r.event_type) for r in records] == [
        (won, "won", "deal_won"), (deleted, "deleted", "deal_reversed")]
    assert records[1].transition == f"deleted:{sim.deals[int(deleted)].archived_ms}"
    assert records[0] == next(r for r in by_windows if r.object_id == won)  # exactly as a window reads it
    live, archived = sim.calls(BATCH_READ_PATH)[reads:]
    assert [i["id"] for i in live.body["inputs"]] == sorted([won, deleted, open_deal, "999999"], key=int)
    assert live.body["propertiesWithHistory"] == ["dealstage", "hubspot_owner_id"]
    assert archived.query.get("archived") == ["true"]
    assert {i["id"] for i in archived.body["inputs"]} == {deleted, open_deal, "999999"}
    assert source.read_objects([]) == [] and source.read_objects(["0", "-1", "１"]) == []


def test_read_objects_reads_at_most_read_chunk_size_per_request(sim: HubSpotSimulator,
                                                                 hooked: Callable[..., HubSpotSource]) -> None:
    deals = [sim.add_deal() for _ in range(7)]
    source = hooked(read_chunk_size=3)
    records = source.read_objects(list(reversed(deals)))
    assert [r.object_id for r in records] == deals  # in id order
    bodies = [r.body["inputs"] for r in sim.calls(BATCH_READ_PATH)]
    assert [len(inputs) for inputs in bodies] == [3, 3, 1]
    assert sim.calls(SEARCH_PATH) == []  # by id only: no window is read


def test_read_objects_failure_is_transient_and_can_be_repeated(sim: HubSpotSimulator,
                                                               hooked: Callable[..., HubSpotSource]) -> None:
    deal = sim.add_deal()
    source = hooked(max_retries=0)
    sim.fail(BATCH_READ_PATH, 500, times=1)
    with pytest.raises(TransientSourceError):
        source.read_objects([deal])
    assert [r.object_id for r in source.read_objects([deal])] == [deal]


class WallClock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_long_retry_after_in_read_objects_holds_every_call(sim: HubSpotSimulator,
                                                            hooked: Callable[..., HubSpotSource]) -> None:
    wall = WallClock()
    deal = sim.add_deal()
    source = hooked(max_retry_after_seconds=60, wall_clock=wall)
    cursor = source.fetch(None, 100).cursor
    sim.fail(BATCH_READ_PATH, 429, times=1, headers={"Retry-After": "600"})
    with pytest.raises(TransientSourceError, match="Retry-After 600"):
        source.read_objects([deal])
    asked = len(sim.requests)
    wall.now += 300
    with pytest.raises(TransientSourceError, match="asked not to be called before"):
        source.read_objects([deal])  # the ids stay queued; HubSpot is not called
    held = source.fetch(cursor, 100)  # nor by the windows, and the cursor keeps the instant
    assert list(held.records) == [] and Cursor.decode(held.cursor, 0).nb == int((wall.now - 300) * 1000) + 600_000
    assert len(sim.requests) == asked
    wall.now += 300
    assert [r.object_id for r in source.read_objects([deal])] == [deal]
    assert Cursor.decode(source.fetch(held.cursor, 100).cursor, 0).nb is None


def test_read_objects_waits_for_a_retry_after_kept_in_the_cursor(sim: HubSpotSimulator,
                                                                 hooked: Callable[..., HubSpotSource]) -> None:
    wall = WallClock()
    deal = sim.add_deal()
    source = hooked(wall_clock=wall)
    stored = json.dumps({"v": 1, "start": 0, "end": None, "after": None, "sweep": None, "sweep_since": 0,
                         "sweep_next": 0, "nb": int(wall.now * 1000) + 60_000})
    assert list(source.fetch(stored, 100).records) == [] and sim.requests == []
    with pytest.raises(TransientSourceError, match="asked not to be called"):
        source.read_objects([deal])
    assert sim.requests == []
    wall.now += 60
    assert [r.object_id for r in source.read_objects([deal])] == [deal]


# ---------------------------------------------------------------------------------------------- the old listener


def test_a_cursor_of_the_old_in_memory_queue_is_read(sim: HubSpotSimulator,
                                                     make_source: Callable[..., HubSpotSource]) -> None:
    won = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    old = json.dumps({"v": 1, "start": sim.now_ms() - 2 * HOUR, "end": None, "after": None, "sweep": None,
                      "sweep_since": 0, "sweep_next": 0, "wh": "3f2a9c1e-17"})
    assert Cursor.decode(old, 0).encode() == json.dumps(
        {k: v for k, v in json.loads(old).items() if k != "wh"}, sort_keys=True, separators=(",", ":"))
    result = make_source(archived_sweep_seconds=0).fetch(old, 100)
    assert [r.object_id for r in result.records] == [won] and "wh" not in json.loads(result.cursor or "{}")


@pytest.mark.parametrize("key", sorted(MOVED_TO_HTTP))
def test_a_removed_listener_setting_says_where_it_went(make_settings: Callable[..., HubSpotSettings],
                                                       key: str) -> None:
    with pytest.raises(ValueError, match=rf"{key} is no longer a setting of the hubspot source: webhooks are served "
                                         r"by payhub's HTTP face now\. Set \[http\] listen and point HubSpot at "
                                         r"https://<your host>/webhooks/<source name>"):
        make_settings(**{key: 8787 if key == "webhook_port" else "x"})
    with pytest.raises(ValueError, match="webhook_host, webhook_port are no longer settings of"):
        make_settings(webhook_port=8787, webhook_host="127.0.0.1")


def test_config_check_names_the_removed_setting_and_where_it_went(tmp_path: Path) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text('[database]\nurl = "sqlite:///payhub.db"\n\n[sources.hs]\nplugin = "hubspot"\n'
                      'access_token = "pat-test"\nstart_date = "2020-01-01"\nwebhook_port = 8787\n'
                      'webhook_path = "/hubspot/webhooks"\n')
    result = invoke_cli("-c", str(config), "config", "check")
    assert result.exit_code == 2
    assert ("sources.hs: Value error, webhook_path, webhook_port are no longer settings of the hubspot source: "
            "webhooks are served by payhub's HTTP face now. Set [http] listen and point HubSpot at "
            "https://<your host>/webhooks/<source name>") in result.stderr
    config.write_text(config.read_text().replace("webhook_port = 8787\nwebhook_path = \"/hubspot/webhooks\"\n", ""))
    assert invoke_cli("-c", str(config), "config", "check").exit_code == 0


@pytest.mark.parametrize("key", ["webhook_secret", "client_secret", "access_token"])
@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_secret_is_a_settings_error(make_settings: Callable[..., HubSpotSettings], key: str,
                                             blank: str) -> None:
    extra = {"client_id": "cid", "refresh_token": "rt"} if key == "client_secret" else {}
    with pytest.raises(ValueError, match=rf"{key}\n.*is empty; give the secret, or leave the key out"):
        make_settings(**{key: blank, **extra})
