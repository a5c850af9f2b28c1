"""API v1 exports (``GET /api/v1/audit/export``, ``/events/export``, ``/rewards/export``, ``/payouts/export``) on
SQLite and PostgreSQL: through httpx's ASGI transport for formats, filters and roles; driven as raw ASGI for a
client that leaves mid-stream; and over a real socket (:class:`payhub.http.server.HttpServer`).

An export holds a database connection of its own while it streams: every test checks that the engine's pool has it
back once the answer ended, and that the ``api.export`` entry says how many rows went out and whether all did.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import event, select
from test_audit_streaming import FORMULA, REASON, recomputed_head, seed, stored
from test_reward_actions import World

from payhub import reports
from payhub.audit_query import EXPORT_COLUMNS, reader
from payhub.clock import isoformat, utcnow
from payhub.csvsafe import restore_cell
from payhub.db.schema import events
from payhub.http.app import create_app
from payhub.http.server import HttpServer
from payhub.runtime import Runtime
from payhub.tokens import Role, create, revoke

pytestmark = pytest.mark.slow  # real loopback servers and sockets, streams waited out

CLIENT = "203.0.113.9"


class Api:
    """The app over ``rt``, called from ``CLIENT`` with tokens of chosen roles."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.app = create_app(rt)
        self.tokens: dict[Role, str] = {}

    def token(self, role: Role = "auditor") -> str:
        if role not in self.tokens:
            self.tokens[role] = create(self.rt, f"{role}-1", role)
        return self.tokens[role]

    def get(self, path: str, *, token: str | None = "", **params: Any) -> httpx.Response:
        token = self.token() if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(CLIENT, 51000))
            async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
                return await client.get(f"/api/v1{path}", params=params, headers=headers)

        return anyio.run(call)


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Iterator[World]:
    w = World(make_runtime(""), tmp_path / "payhub.toml")
    yield w
    w.close()


@pytest.fixture
def api(world: World) -> Api:
    seed(world.rt, 60)
    return Api(world.rt)


def exports(rt: Runtime) -> list[tuple[str, str, dict[str, Any]]]:
    """(actor, outcome, detail) of the ``api.export`` entries, oldest first."""
    return [(e["actor"], e["outcome"], json.loads(e["detail"])) for e in stored(rt) if e["action"] == "api.export"]


class Reads:
    """Counts the connections of the engine for long reads (:func:`payhub.audit_query.reader`) that exports open and
    give back."""

    def __init__(self, rt: Runtime) -> None:
        self.pool = reader(rt.engine).pool
        assert self.pool is not rt.engine.pool  # connections of their own, not the worker's
        self.opened = self.closed = 0
        event.listen(self.pool, "checkout", self._out)
        event.listen(self.pool, "checkin", self._in)

    def _out(self, *_args: Any) -> None:
        self.opened += 1

    def _in(self, *_args: Any) -> None:
        self.closed += 1

    def released(self) -> bool:
        """Whether exports opened connections and gave every one back."""
        return self.opened > 0 and self.closed == self.opened

    def close(self) -> None:
        event.remove(self.pool, "checkout", self._out)
        event.remove(self.pool, "checkin", self._in)


@pytest.fixture
def reads(world: World) -> Iterator[Reads]:
    counted = Reads(world.rt)
    yield counted
    counted.close()


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ------------------------------------------------------------------------------------------------- the audit log


def test_the_audit_export_is_the_chain_in_json_lines(api: Api, reads: Reads) -> None:
    before = stored(api.rt)
    answer = api.get("/audit/export")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert answer.headers["content-disposition"].startswith('attachment; filename="payhub-audit-')
    assert answer.headers["content-disposition"].endswith('.jsonl"')
    assert answer.headers["cache-control"] == "no-store"
    lines = answer.text.splitlines(keepends=True)
    # The entries up to the export (the token's creation included), not the request's own entry: the query ran
    # before the answer started.
    assert len(lines) == len(before) + 1
    assert recomputed_head(lines) == stored(api.rt)[len(lines) - 1]["hash"]
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert all(list(json.loads(line)) == list(EXPORT_COLUMNS) for line in lines)
    assert exports(api.rt) == [("token:auditor-1", "ok", {"filters": {}, "format": "jsonl", "rows": len(lines),
                                                          "complete": True})]
    assert reads.released()


def test_the_audit_export_is_the_clis_to_the_byte(api: Api, world: World) -> None:
    from cli_helpers import CliSite

    answer = api.get("/audit/export", action="payout.held")
    assert answer.status_code == 200
    cli = CliSite(world.config.parent).ok("audit", "export", "--action", "payout.held").stdout
    assert answer.text == cli and cli.count("\n") == 8
    assert all(json.loads(line)["detail"]["reason"] == REASON for line in cli.splitlines())


def test_the_audit_export_in_csv_is_neutralised(api: Api) -> None:
    answer = api.get("/audit/export", format="csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].endswith('.csv"')
    rows = csv_rows(answer.text)
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    held = [r for r in rows if r["action"] == "payout.held"]
    assert len(held) == 8 and all(r["actor"] == "'" + FORMULA for r in held)
    assert {r["subject_id"] for r in held} == {"'-2+3", "'" + FORMULA}
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
    before = stored(api.rt)
    assert [{k: restore_cell(v) for k, v in r.items()} for r in rows] == [
        {k: str(v) for k, v in e.items()} for e in before[:len(rows)]]


def test_the_audit_export_filters(api: Api, reads: Reads) -> None:
    before = stored(api.rt)

    def seqs(**params: Any) -> list[int]:
        answer = api.get("/audit/export", **params)
        assert answer.status_code == 200, answer.text
        return [json.loads(line)["seq"] for line in answer.text.splitlines()]

    assert seqs(action="payout.*") == [e["seq"] for e in before if e["action"].startswith("payout.")]
    assert seqs(actor=FORMULA) == [e["seq"] for e in before if e["actor"] == FORMULA]
    assert seqs(subject="event:8") == [e["seq"] for e in before if e["subject_id"] == "8"
                                       and e["subject_type"] == "event"]
    assert seqs(subject="-2+3") == [e["seq"] for e in before if e["subject_id"] == "-2+3"]
    assert seqs(action="event.ingested", after=40) == [e["seq"] for e in before
                                                       if e["action"] == "event.ingested" and e["seq"] > 40]
    assert seqs(until="2000-01-01") == []
    assert seqs(since=before[0]["at"], until="2999-01-01T00:00:00Z", action="reward.calculated") == [
        e["seq"] for e in before if e["action"] == "reward.calculated"]
    last = exports(api.rt)[-1][2]
    assert last["filters"] == {"since": before[0]["at"], "until": "2999-01-01T00:00:00.000000Z",
                               "action": "reward.calculated"}
    assert last["rows"] == len([e for e in before if e["action"] == "reward.calculated"])
    for bad in ({"format": "xml"}, {"since": "last tuesday"}, {"since": "2026-01-01T00:00:00"}, {"after": "-1"}):
        refused = api.get("/audit/export", **bad)
        assert refused.status_code == 422, bad
    assert reads.released()


def test_who_may_export(api: Api, reads: Reads) -> None:
    for role in ("auditor", "operator", "admin"):
        answer = api.get("/audit/export", token=api.token(role), action="token.created")
        assert answer.status_code == 200 and len(answer.text.splitlines()) >= 1
    assert api.get("/audit/export", token=None).status_code == 401
    assert api.get("/payouts/export", token="phk_" + "x" * 43).status_code == 401
    revoke(api.rt, "operator-1")
    assert api.get("/events/export", token=api.tokens["operator"]).status_code == 401
    assert [actor for actor, _o, _d in exports(api.rt)] == ["token:auditor-1", "token:operator-1", "token:admin-1"]
    refused = [e for e in stored(api.rt) if e["action"] == "api.request" and e["outcome"] == "denied"]
    assert len(refused) == 3 and all(json.loads(e["detail"])["status"] == 401 for e in refused)
    assert reads.released()


def test_the_openapi_document_describes_the_exports(api: Api) -> None:
    spec = api.get("/openapi.json", token=None).json()
    for what in ("audit", "events", "rewards", "payouts"):
        operation = spec["paths"][f"/api/v1/{what}/export"]["get"]
        assert operation["operationId"] == f"export_{what}"
        assert set(operation["responses"]["200"]["content"]) >= {"application/x-ndjson", "text/csv"}
        assert {"401", "422"} <= set(operation["responses"])
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert parameters["format"]["schema"]["enum"] == ["jsonl", "csv"] and "after" in parameters
    audit = {p["name"] for p in spec["paths"]["/api/v1/audit/export"]["get"]["parameters"]}
    assert audit == {"format", "after", "since", "until", "actor", "action", "subject"}


# ------------------------------------------------------------------------------------------------- listings


def test_events_rewards_and_payouts_export_with_their_listings_filters(api: Api, world: World, reads: Reads) -> None:
    held = world.reward("held", hold_code="operator", hold_reason="@SUM(1) please")
    sent = world.reward("sent")
    world.reward("scheduled")
    with world.rt.engine.begin() as conn:
        conn.execute(events.insert().values(
            key="crm:Opportunity:q:won", source="crm", object_type="Opportunity", object_id="q", transition="won",
            event_type="deal_won", payee_id=FORMULA, amount="-5.00", currency="EUR", status="quarantined",
            reason="=amount -5.00 is negative", occurred_at=utcnow(), ingested_at=utcnow()))
    with world.rt.engine.connect() as conn:
        listed = {name: list(fn(conn)) for name, fn in (("events", reports.events), ("rewards", reports.rewards),
                                                         ("payouts", reports.payouts))}

    def jsonl(path: str, **params: Any) -> list[dict[str, Any]]:
        answer = api.get(path, **params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in answer.text.splitlines()]

    def plain(row: dict[str, Any]) -> dict[str, Any]:
        return {k: isoformat(v) if hasattr(v, "astimezone") else v for k, v in row.items()}

    assert jsonl("/events/export") == [plain(r) for r in listed["events"]]
    assert [e["id"] for e in jsonl("/events/export", status="quarantined")] == [4]
    assert jsonl("/events/export", source="nowhere") == []
    assert jsonl("/rewards/export") == [plain(r) for r in listed["rewards"]]
    assert [r["id"] for r in jsonl("/rewards/export", status="held")] == [held]
    assert [r["id"] for r in jsonl("/rewards/export", after=held)] == [sent, sent + 1]
    assert jsonl("/rewards/export", program="other") == [] and len(jsonl("/rewards/export", payee="p1")) == 3
    assert jsonl("/payouts/export") == [plain(r) for r in listed["payouts"]]
    assert [p["status"] for p in jsonl("/payouts/export", rail="fake")] == ["sent", "scheduled"]
    assert [p["status"] for p in jsonl("/payouts/export", status="scheduled", payee="p1")] == ["scheduled"]
    assert api.get("/payouts/export", status="lost").status_code == 422

    quarantined = csv_rows(api.get("/events/export", format="csv", status="quarantined").text)
    assert list(quarantined[0]) == reports.EVENT_COLUMNS
    assert (quarantined[0]["payee"], quarantined[0]["reason"]) == ("'" + FORMULA, "'=amount -5.00 is negative")
    assert quarantined[0]["amount"] == "-5.00"  # a plain negative number stays a number
    assert csv_rows(api.get("/rewards/export", format="csv", status="held").text)[0]["reason"] == "'@SUM(1) please"
    assert [p["amount"] for p in csv_rows(api.get("/payouts/export", format="csv").text)] == ["5000.00", "5000.00"]
    assert {d["format"] for _a, _o, d in exports(api.rt)} == {"jsonl", "csv"}
    assert all(outcome == "ok" for _a, outcome, _d in exports(api.rt))
    assert reads.released()


# ------------------------------------------------------------------------------------------------- streaming


async def _leave_after(app: Any, path: str, token: str, chunks: int) -> tuple[int, int]:
    """Ask for ``path`` as raw ASGI and disconnect once ``chunks`` body chunks arrived; (status, bytes received)."""
    enough = anyio.Event()
    status, received, count, asked = 0, 0, 0, False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, received, count
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            received += len(message.get("body", b""))
            count += 1
            if count >= chunks:
                enough.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"format=jsonl", "server": ("payhub", 80), "client": (CLIENT, 51000),
             "headers": [(b"host", b"payhub"), (b"authorization", f"Bearer {token}".encode())]}
    await app(scope, receive, send)
    return status, received


def test_a_client_leaving_mid_stream_gives_the_connection_back(world: World, reads: Reads) -> None:
    seed(world.rt, 3000, pad=300)  # about 1 MB of JSON Lines: many chunks
    api = Api(world.rt)
    token = api.token()
    total = len(stored(world.rt))
    status, received = anyio.run(_leave_after, api.app, "/api/v1/audit/export", token, 2)
    assert status == 200 and 0 < received < 500_000
    assert reads.released()
    [(actor, outcome, detail)] = exports(world.rt)
    assert (actor, outcome, detail["complete"]) == ("token:auditor-1", "incomplete", False)
    assert 0 < detail["rows"] < total
    # The same export read to its end is complete.
    assert len(api.get("/audit/export").text.splitlines()) >= total
    assert [o for _a, o, _d in exports(world.rt)] == ["incomplete", "ok"]
    assert reads.released()


def _wait_for(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_exports_over_a_real_socket(world: World, reads: Reads) -> None:
    seed(world.rt, 4000, pad=400)  # about 2 MB: more than the socket buffers hold
    token = create(world.rt, "reader", "auditor")
    server = HttpServer(world.rt, listen=("127.0.0.1", 0))
    server.start()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            whole = client.get("/api/v1/audit/export")
            assert whole.status_code == 200 and whole.headers["content-type"] == "application/x-ndjson"
            lines = whole.text.splitlines(keepends=True)
            assert recomputed_head(lines) == stored(world.rt)[len(lines) - 1]["hash"]
            assert _wait_for(lambda: reads.released())
            # A client that reads one chunk and hangs up: the server notices, stops reading, gives the
            # connection back and records the export as incomplete.
            with client.stream("GET", "/api/v1/audit/export", params={"format": "csv"}) as partial:
                assert partial.status_code == 200
                assert next(partial.iter_bytes()).startswith(b"seq,at,actor")
        assert _wait_for(lambda: len(exports(world.rt)) == 2)
        assert _wait_for(lambda: reads.released())
        (_a, first, whole_detail), (_b, second, cut) = exports(world.rt)
        assert (first, whole_detail["rows"], whole_detail["complete"]) == ("ok", len(lines), True)
        assert (second, cut["format"], cut["complete"]) == ("incomplete", "csv", False)
        assert cut["rows"] < len(lines)
    finally:
        server.stop()
    with world.rt.engine.connect() as conn:
        assert conn.execute(select(events.c.id)).first() is None  # nothing but reads happened


def test_an_export_outlasts_the_request_read_timeout(make_runtime: Any) -> None:
    # The body deadline (http.read_timeout_seconds) bounds reading the request, not streaming the answer.
    rt = make_runtime("[http]\nread_timeout_seconds = 0.2\n")
    seed(rt, 4000, pad=400)
    token = create(rt, "slow-reader", "auditor")
    server = HttpServer(rt, listen=("127.0.0.1", 0))
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client, \
                client.stream("GET", "/api/v1/audit/export") as answer:
            received = io.BytesIO()
            for chunk in answer.iter_bytes(64 * 1024):
                received.write(chunk)
                time.sleep(0.02)  # a slow reader: the answer takes well over the request's deadline
        lines = received.getvalue().decode("utf-8").splitlines(keepends=True)
        assert len(lines) > 4000 and recomputed_head(lines) == stored(rt)[len(lines) - 1]["hash"]
        assert _wait_for(lambda: len(exports(rt)) == 1)
        assert exports(rt)[0][1:] == ("ok", {"filters": {}, "format": "jsonl", "rows": len(lines),
                                             "complete": True})
    finally:
        server.stop()
