"""``POST /webhooks/<source>`` on SQLite and PostgreSQL: the built-in ``webhook`` source end to end (good, forged,
stale, future, replayed, malformed, oversize, a mixed batch), routing (404, 405), a plugin that raises or hangs, and
the ids a webhook queues, read by the next poll through ``read_objects`` under the source's lease and kept queued
until their records are stored."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from cli_helpers import sql
from test_webhook_source import DEAL, OLD_KEY, SECRET, sign

from payhub import webhooks
from payhub.audit import verify
from payhub.clock import utcnow
from payhub.http.app import create_app
from payhub.pipeline import ingest
from payhub.pipeline.ingest import poll_batches
from payhub.runtime import Runtime
from payhub.testing import write_distribution
from payhub.worker import Worker

OBJECT_SOURCE = '''
import json
import time

from payhub.api import FetchResult, Source, SourceRecord, WebhookRefused, WebhookResult


class ObjectSource(Source):
    """Deliveries are unsigned JSON naming object ids (or records); read_objects reads ``objects`` (set by tests)."""

    def __init__(self, name, settings):
        super().__init__(name, settings)
        self.objects = {}  # object id -> payee id, or an exception to raise when it is read
        self.reads = []  # the ids of each read_objects call
        self.during_read = None  # called inside read_objects, before it answers

    def fetch(self, cursor, limit):
        return FetchResult([], cursor, False)

    def webhook(self, request):
        data = json.loads(request.body)
        if "raise" in data:
            raise RuntimeError(data["raise"])
        if "hang" in data:
            time.sleep(data["hang"])
        if "refuse" in data:
            raise WebhookRefused(*data["refuse"])
        if "return" in data:
            return data["return"]
        records = [SourceRecord("deal", object_id, "won", "deal_won", "2026-12-01T00:00:00Z", "p1")
                   for object_id in data.get("records", [])]
        return WebhookResult(records, data.get("ids", []), data.get("delivery"))

    def read_objects(self, object_ids):
        self.reads.append(list(object_ids))
        if self.during_read is not None:
            self.during_read()
        found = []
        for object_id in object_ids:
            payee = self.objects.get(object_id)
            if isinstance(payee, BaseException):
                raise payee
            if payee is not None:
                found.append(SourceRecord("deal", object_id, "won", "deal_won", "2026-12-01T00:00:00Z", payee,
                                          "100.00", "EUR"))
        return found


class NamingSource(ObjectSource):
    """Names objects, but cannot read them."""

    read_objects = Source.read_objects
'''

SITE = f"""
[sources.push]
plugin = "webhook"
secret = "{SECRET}"
poll_interval_seconds = 3600

[sources.crm]
plugin = "objects"
batch_size = 4

[sources.naming]
plugin = "naming"

[sources.deals]
plugin = "file"
path = "deals.csv"

[sources.off]
plugin = "webhook"
secret = "{SECRET}"
enabled = false

[daemon]
plugin_timeout_seconds = 1

[http]
max_body_bytes = 4096
"""


@pytest.fixture(scope="module")
def object_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    site = write_distribution(tmp_path_factory.mktemp("site-objects"), "payhub-test-objects",
                              "[payhub.sources]\nobjects = payhub_test_objects:ObjectSource\n"
                              "naming = payhub_test_objects:NamingSource\n",
                              modules={"payhub_test_objects": OBJECT_SOURCE})
    sys.path.insert(0, str(site))
    yield
    sys.path.remove(str(site))


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime], object_source: None) -> Runtime:
    return make_runtime(SITE)


ANY_DATABASE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
"""For tests of what happens before anything is stored: SQLite stands for both databases."""


def post(rt: Runtime, path: str, body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST") -> httpx.Response:
    """One request to a fresh app over ``rt``, through httpx's ASGI transport."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(rt), client=("192.0.2.7", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://payhub.test") as client:
            return await client.request(method, path, content=body, headers=headers)

    return anyio.run(send)


def signed(body: bytes, *, offset: int = 0, key: bytes | None = None, message_id: str = "msg_1") -> dict[str, str]:
    """Standard Webhooks headers for ``body`` sent ``offset`` seconds from now."""
    stamp = int(time.time()) + offset
    return sign(body, timestamp=stamp, message_id=message_id) if key is None else sign(
        body, key=key, timestamp=stamp, message_id=message_id)


def deliver(rt: Runtime, records: list[dict[str, Any]] | dict[str, Any], **kwargs: Any) -> httpx.Response:
    body = json.dumps(records).encode()
    return post(rt, "/webhooks/push", body, signed(body, **kwargs))


def events(rt: Runtime) -> list[tuple[str, str, str | None]]:
    return sql(rt.settings.database_url, "SELECT key, status, reason FROM events ORDER BY id")


def audit(rt: Runtime, action: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    rows = sql(rt.settings.database_url, "SELECT actor, origin, outcome, detail FROM audit_log WHERE action = :a "
               "ORDER BY seq", a=action)
    return [(actor, origin, outcome, json.loads(detail)) for actor, origin, outcome, detail in rows]


def queued(rt: Runtime, source: str = "crm") -> list[str]:
    return [r[0] for r in sql(rt.settings.database_url,
                              "SELECT object_id FROM webhook_objects WHERE source = :s ORDER BY id", s=source)]


def chain_intact(rt: Runtime) -> bool:
    with rt.engine.connect() as conn:
        return verify(conn).ok


# ------------------------------------------------------------------------------------------ the built-in source


def test_a_good_delivery_is_stored_and_audited_without_moving_any_cursor(rt: Runtime) -> None:
    answer = deliver(rt, [DEAL, DEAL | {"id": "D-2", "amount": "80.00"}])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 2, "new": 2, "quarantined": 0, "queued": 0}
    assert events(rt) == [("push:record:D-1:deal_won", "ingested", None), ("push:record:D-2:deal_won", "ingested",
                                                                         None)]
    [(actor, origin, outcome, detail)] = audit(rt, "webhook.received")
    assert (actor, origin, outcome) == ("webhook:push", "http@192.0.2.7", "ok")
    assert detail == {"delivery_id": "msg_1", "records": 2, "new": 2, "corrected": 0, "duplicates": 0,
                      "quarantined": 0, "queued": 0}
    assert [a[0] for a in audit(rt, "event.ingested")] == ["webhook:push", "webhook:push"]
    [(actor, _origin, outcome, detail)] = audit(rt, "api.request")
    assert (actor, outcome, detail["status"], detail["delivery_id"]) == ("webhook:push", "ok", 200, "msg_1")
    assert sql(rt.settings.database_url, "SELECT cursor FROM sources WHERE name = 'push'") == []
    assert sql(rt.settings.database_url, "SELECT source, delivery_id FROM webhook_deliveries") == [("push", "msg_1")]
    assert chain_intact(rt)


@ANY_DATABASE
@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"key": OLD_KEY}, "no webhook-signature matches the body and a configured secret"),
    ({"offset": -301}, "old, more than the 300 s allowed"),
    ({"offset": 400}, "ahead of this server's clock, more than the 300 s allowed"),
])
def test_forged_stale_and_future_deliveries_are_refused_401_and_store_nothing(
        rt: Runtime, kwargs: dict[str, Any], reason: str) -> None:
    answer = deliver(rt, DEAL, **kwargs)
    assert answer.status_code == 401
    assert reason in answer.json()["error"]
    assert events(rt) == [] and audit(rt, "webhook.received") == []
    assert sql(rt.settings.database_url, "SELECT count(*) FROM webhook_deliveries") == [(0,)]
    [(actor, _origin, outcome, detail)] = audit(rt, "api.request")
    assert (actor, outcome, detail["status"]) == ("webhook:push", "denied", 401)
    assert reason in detail["reason"]


def test_a_replayed_delivery_is_refused_409_and_stores_nothing(rt: Runtime) -> None:
    assert deliver(rt, DEAL).status_code == 200
    again = deliver(rt, DEAL | {"id": "D-9"})  # the same id, freshly signed, with other records
    assert (again.status_code, again.json()) == (409, {"error": "already received"})
    assert [key for key, _s, _r in events(rt)] == ["push:record:D-1:deal_won"]
    assert len(audit(rt, "webhook.received")) == 1
    assert [(d["status"], d.get("reason")) for _a, _o, _c, d in audit(rt, "api.request")] == [
        (200, None), (409, "already received")]
    assert deliver(rt, DEAL | {"id": "D-9"}, message_id="msg_2").status_code == 200


def test_a_replay_is_refused_however_long_its_id(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        assert webhooks.remember(conn, "push", "x" * 5000, utcnow())
        assert not webhooks.remember(conn, "push", "x" * 5000, utcnow())
        assert webhooks.remember(conn, "push", "x" * 4999 + "y", utcnow())
        assert webhooks.remember(conn, "crm", "x" * 5000, utcnow())  # per source
    assert all(len(key) <= 200 for (key,) in sql(rt.settings.database_url,
                                                "SELECT delivery_id FROM webhook_deliveries"))


@ANY_DATABASE
def test_missing_headers_are_refused_400(rt: Runtime) -> None:
    body = json.dumps(DEAL).encode()
    headers = signed(body)
    del headers["webhook-signature"]
    answer = post(rt, "/webhooks/push", body, headers)
    assert (answer.status_code, answer.json()) == (400, {"error": "missing Standard Webhooks header: "
                                                                  "webhook-signature"})
    assert events(rt) == []


@ANY_DATABASE
def test_malformed_json_is_refused_400(rt: Runtime) -> None:
    body = b'[{"id": "D-1",'
    answer = post(rt, "/webhooks/push", body, signed(body))
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("the body is not valid JSON")
    assert events(rt) == []


@ANY_DATABASE
def test_an_oversize_body_is_refused_413_before_the_source_sees_it(rt: Runtime) -> None:
    body = json.dumps([DEAL | {"id": f"D-{n}"} for n in range(40)]).encode()
    assert len(body) > 4096
    answer = post(rt, "/webhooks/push", body, signed(body))
    assert answer.status_code == 413
    assert events(rt) == []
    [(actor, _origin, outcome, detail)] = audit(rt, "api.request")
    assert (outcome, detail["status"]) == ("refused", 413)


def test_a_mixed_batch_stores_the_good_records_and_quarantines_the_bad_one_alone(rt: Runtime) -> None:
    answer = deliver(rt, [DEAL, DEAL | {"id": "D-2", "currency": "XYZ"}, DEAL | {"id": "D-3"}])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 3, "new": 3, "quarantined": 1, "queued": 0}
    stored = events(rt)
    assert [(key, status) for key, status, _reason in stored] == [
        ("push:record:D-1:deal_won", "ingested"), ("push:record:D-2:deal_won", "quarantined"),
        ("push:record:D-3:deal_won", "ingested")]
    assert stored[1][2] is not None and stored[1][2].startswith("record 2: ")
    [(_a, _o, _c, detail)] = audit(rt, "webhook.received")
    assert detail["quarantined"] == 1

    fixed = deliver(rt, [DEAL | {"id": "D-2"}], message_id="msg_2")  # the sender corrects it
    assert fixed.json() == {"accepted": 1, "new": 1, "quarantined": 0, "queued": 0}
    assert events(rt)[1][1] == "ingested"


# ------------------------------------------------------------------------------------------------------ routing


@ANY_DATABASE
@pytest.mark.parametrize("path", ["/webhooks/nowhere", "/webhooks/off", "/webhooks/deals", "/webhooks/"])
def test_unknown_disabled_and_webhookless_sources_are_404(rt: Runtime, path: str) -> None:
    body = json.dumps(DEAL).encode()
    answer = post(rt, path, body, signed(body))
    assert answer.status_code == 404
    assert events(rt) == []


@ANY_DATABASE
def test_other_methods_are_405(rt: Runtime) -> None:
    assert post(rt, "/webhooks/push", b"", method="GET").status_code == 405
    assert post(rt, "/webhooks/push", b"{}", method="PUT").status_code == 405


# --------------------------------------------------------------------------------------------- plugin failures


@ANY_DATABASE
def test_a_plugin_that_raises_gets_500_and_the_server_keeps_serving(rt: Runtime,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    answer = post(rt, "/webhooks/crm", json.dumps({"raise": "secret-ish detail"}).encode())
    assert answer.status_code == 500
    assert "secret-ish" not in answer.text and answer.json()["error"].startswith("the delivery could not be")
    assert "its webhook raised" in caplog.text and "secret-ish detail" in caplog.text  # the log has the traceback
    assert post(rt, "/webhooks/crm", json.dumps({"records": ["D-1"]}).encode()).status_code == 200
    assert deliver(rt, DEAL).status_code == 200
    [(_a, _o, outcome, detail)] = audit(rt, "api.request")[:1]
    assert (outcome, detail["status"], detail["reason"]) == ("error", 500, "the source's webhook raised")


@ANY_DATABASE
@pytest.mark.parametrize(("result", "status"), [({"return": None}, 500), ({"return": {"records": []}}, 500),
                                                ({"ids": ["x" * 501]}, 422), ({"ids": [" "]}, 422),
                                                ({"ids": ["a\u0000b"]}, 422), ({"refuse": [403, "not you"]}, 403),
                                                ({"refuse": [200, "odd"]}, 400)])
def test_results_out_of_contract_are_answered_without_storing(rt: Runtime, result: dict[str, Any],
                                                               status: int) -> None:
    answer = post(rt, "/webhooks/crm", json.dumps(result | {"delivery": "d1"}).encode())
    assert answer.status_code == status
    assert queued(rt) == [] and sql(rt.settings.database_url, "SELECT count(*) FROM webhook_deliveries") == [(0,)]


@ANY_DATABASE
def test_object_ids_from_a_source_that_cannot_read_them_are_refused_as_a_bug(rt: Runtime,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    answer = post(rt, "/webhooks/naming", json.dumps({"ids": ["A"]}).encode())
    assert answer.status_code == 500
    assert "does not implement read_objects" in caplog.text
    assert queued(rt, "naming") == []
    assert post(rt, "/webhooks/naming", json.dumps({"records": ["D-1"]}).encode()).status_code == 200


@pytest.mark.slow  # waits out a hung plugin
@ANY_DATABASE
def test_a_plugin_that_hangs_is_abandoned_with_503_and_its_next_calls_refused_until_it_returns(rt: Runtime) -> None:
    answer = post(rt, "/webhooks/crm", json.dumps({"hang": 2.5}).encode())
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "30")
    refused = post(rt, "/webhooks/crm", json.dumps({"ids": ["A"]}).encode())
    assert refused.status_code == 503 and queued(rt) == []  # no second thread piles up behind the hung call
    assert deliver(rt, DEAL).status_code == 200  # other sources are not affected
    rt.guard("webhook crm", 1).wait(5)
    assert post(rt, "/webhooks/crm", json.dumps({"ids": ["A"]}).encode()).status_code == 200


# ---------------------------------------------------------------------------------------- queued object ids


def crm(rt: Runtime) -> Any:
    return rt.plugins.sources["crm"]


def test_queued_ids_are_read_by_the_next_poll_and_stored_end_to_end(rt: Runtime) -> None:
    answer = post(rt, "/webhooks/crm", json.dumps({"ids": ["A", "B", "A", "C"], "delivery": "d1"}).encode())
    assert answer.json() == {"accepted": 0, "new": 0, "quarantined": 0, "queued": 3}
    assert post(rt, "/webhooks/crm", json.dumps({"ids": ["B", "D"], "delivery": "d2"}).encode()).status_code == 200
    assert queued(rt) == ["A", "B", "C", "D"]
    crm(rt).objects = {"A": "p1", "B": "p2", "D": "p4"}  # C no longer exists
    summary = Worker(rt)
    summary.start()
    try:
        assert summary.run_once().counts["ingested"] == 3
    finally:
        summary.stop()
    assert crm(rt).reads == [["A", "B", "C", "D"]]
    assert queued(rt) == []
    assert [key for key, _s, _r in events(rt)] == ["crm:deal:A:won", "crm:deal:B:won", "crm:deal:D:won"]
    [(actor, _origin, _outcome, detail)] = audit(rt, "source.objects_read")
    assert (actor, detail) == ("payhub", {"objects": 4, "records": 3, "new": 3, "corrected": 0, "duplicates": 0,
                                          "quarantined": 0})
    assert chain_intact(rt)


def test_a_poll_reads_at_most_batch_size_ids_and_asks_to_be_polled_again(rt: Runtime) -> None:
    ids = [f"O{n}" for n in range(6)]
    post(rt, "/webhooks/crm", json.dumps({"ids": ids}).encode())
    crm(rt).objects = dict.fromkeys(ids, "p1")
    assert poll_batches(rt, "crm") == (4, True)
    assert queued(rt) == ["O4", "O5"]
    assert poll_batches(rt, "crm") == (2, False)
    assert crm(rt).reads == [ids[:4], ids[4:]]


def test_queued_ids_stay_when_storing_their_records_fails(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    post(rt, "/webhooks/crm", json.dumps({"ids": ["A", "B"]}).encode())
    crm(rt).objects = {"A": "p1", "B": "p2"}

    def crash(*_args: Any) -> Any:
        raise sa.exc.OperationalError("INSERT INTO events", {}, Exception("disk I/O error"))

    monkeypatch.setattr(ingest, "_write", crash)
    with pytest.raises(sa.exc.OperationalError):
        poll_batches(rt, "crm")
    assert queued(rt) == ["A", "B"] and events(rt) == []
    monkeypatch.undo()
    assert poll_batches(rt, "crm") == (2, False)
    assert queued(rt) == [] and len(events(rt)) == 2


def test_a_transient_error_keeps_the_ids_and_a_permanent_one_fails_the_source(rt: Runtime) -> None:
    from payhub.api import PermanentSourceError, TransientSourceError

    post(rt, "/webhooks/crm", json.dumps({"ids": ["A"]}).encode())
    crm(rt).objects = {"A": TransientSourceError("CRM answered 503")}
    assert poll_batches(rt, "crm") == (0, False)
    assert queued(rt) == ["A"]
    assert sql(rt.settings.database_url, "SELECT status, reason FROM sources WHERE name = 'crm'") == [
        ("ok", "transient: TransientSourceError: CRM answered 503")]
    crm(rt).objects = {"A": PermanentSourceError("token revoked")}
    assert poll_batches(rt, "crm") == (0, False)
    assert queued(rt) == ["A"]
    assert sql(rt.settings.database_url, "SELECT status FROM sources WHERE name = 'crm'") == [("failed",)]
    assert [d["reason"] for _a, _o, _c, d in audit(rt, "source.failed")] == [
        "PermanentSourceError: token revoked"]


def test_an_id_whose_read_raises_is_narrowed_down_and_holds_no_other_up(rt: Runtime) -> None:
    post(rt, "/webhooks/crm", json.dumps({"ids": ["A", "B", "C", "D"]}).encode())
    crm(rt).objects = {"A": "p1", "B": "p2", "C": KeyError("Amount"), "D": "p4"}
    assert poll_batches(rt, "crm") == (3, False)
    assert crm(rt).reads == [["A", "B", "C", "D"], ["A", "B"], ["C", "D"], ["C"], ["D"]]
    assert queued(rt) == ["C"]  # at the back of the queue, for a later poll
    [(_a, _o, outcome, detail)] = audit(rt, "source.error")
    assert (outcome, detail["reason"]) == ("error", "KeyError: 'Amount' (reading the queued object 'C')")
    post(rt, "/webhooks/crm", json.dumps({"ids": ["E", "F", "G", "H"]}).encode())
    crm(rt).objects.update(dict.fromkeys("EFGH", "p5"))
    assert poll_batches(rt, "crm") == (3, True)
    assert queued(rt) == ["H", "C"]  # C failed again and went behind H
    crm(rt).objects["C"] = "p3"  # the plugin was fixed
    assert poll_batches(rt, "crm") == (2, False)
    assert queued(rt) == [] and crm(rt).reads[-1] == ["H", "C"]


def test_an_id_named_again_while_it_is_read_stays_queued(rt: Runtime) -> None:
    post(rt, "/webhooks/crm", json.dumps({"ids": ["A", "B"]}).encode())
    crm(rt).objects = {"A": "p1", "B": "p2"}

    def named_again() -> None:
        crm(rt).during_read = None
        post(rt, "/webhooks/crm", json.dumps({"ids": ["B"]}).encode())  # B changed after it was read

    crm(rt).during_read = named_again
    assert poll_batches(rt, "crm") == (2, False)
    assert queued(rt) == ["B"]
    assert poll_batches(rt, "crm") == (0, False)  # read again: its record is already stored
    assert crm(rt).reads == [["A", "B"], ["B"]] and queued(rt) == []


def test_a_poll_whose_lease_was_taken_stores_nothing_and_keeps_the_ids(rt: Runtime) -> None:
    post(rt, "/webhooks/crm", json.dumps({"ids": ["A"]}).encode())
    crm(rt).objects = {"A": "p1"}

    def taken_over() -> None:  # another replica claims the source while this one reads (its lease expired)
        sql(rt.settings.database_url, "UPDATE sources SET lease_owner = 'other', lease_token = 'theirs' "
            "WHERE name = 'crm'")

    crm(rt).during_read = taken_over
    assert poll_batches(rt, "crm") == (0, False)
    assert queued(rt) == ["A"] and events(rt) == []
    assert poll_batches(rt, "crm") == (0, False)  # the other replica holds the lease: this one reads nothing
    assert crm(rt).reads == [["A"]]


def test_sources_without_read_objects_are_polled_as_before(rt: Runtime) -> None:
    with rt.engine.begin() as conn:  # ids queued for a source that cannot read them are not its poll's business
        webhooks.queue(conn, "push", ["X"], utcnow())
    assert poll_batches(rt, "push") == (0, False)
    assert queued(rt, "push") == ["X"]


def test_old_deliveries_are_pruned_now_and_then(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        webhooks.remember(conn, "push", "old", utcnow() - webhooks.DELIVERY_MEMORY - timedelta(seconds=1))
        webhooks.remember(conn, "push", "recent", utcnow() - webhooks.DELIVERY_MEMORY + timedelta(minutes=1))
    clock = [0.0]
    pruner = webhooks.Pruner(every=600, clock=lambda: clock[0])
    assert pruner.maybe(rt.engine) == 1
    with rt.engine.begin() as conn:
        webhooks.remember(conn, "push", "older", utcnow() - 2 * webhooks.DELIVERY_MEMORY)
    clock[0] = 599.0
    assert pruner.maybe(rt.engine) == 0  # not yet: one delete per interval, not one per delivery
    clock[0] = 600.0
    assert pruner.maybe(rt.engine) == 1
    assert sql(rt.settings.database_url, "SELECT delivery_id FROM webhook_deliveries") == [("recent",)]

