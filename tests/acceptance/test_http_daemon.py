"""The HTTP face of a running daemon, over a real socket: ``payhub run`` with ``[http] listen`` on a free port.

One daemon process on a SQLite file serves health, readiness (also through a database outage: another process
holds the file's write lock), metrics, both kinds of webhooks (HubSpot's v3 signatures and Standard Webhooks;
good, forged, stale and replayed deliveries), tokens and roles, dual approval by two tokens, keyset paging and
exports; then SIGTERM stops the server with the worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import PAYHUB
from prometheus_client.parser import text_string_to_metric_families

hubspot = pytest.importorskip("payhub_hubspot")
from payhub_hubspot import sign_v3  # noqa: E402
from payhub_simulators.hubspot import HubSpotSimulator  # noqa: E402

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
HUBSPOT_SECRET = "hubspot-app-secret"
SERVING = re.compile(r"serving HTTP on (http://127\.0\.0\.1:\d+)")


class Daemon:
    """``payhub run`` in a child process; its standard error collected in a thread."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([*PAYHUB, "-c", str(config), "run", "--no-progress"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def url(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := SERVING.search(line):
                    return found.group(1)
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError("no 'serving HTTP' line:\n" + "".join(self.lines))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self._reader.join(5)


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.1)


def standard_webhook(body: bytes, *, secret: str = WEBHOOK_SECRET, age: int = 0,
                     message_id: str | None = None) -> dict[str, str]:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()) - age)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"content-type": "application/json", "webhook-id": message_id, "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def hubspot_webhook(body: bytes, url: str, *, secret: str = HUBSPOT_SECRET, age_ms: int = 0) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000) - age_ms)
    return {"content-type": "application/json", "X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": sign_v3(secret, "POST", url, body, timestamp)}


def hubspot_event(kind: str, deal: str) -> dict[str, Any]:
    return {"eventId": int(time.time() * 1000) % 10**9, "subscriptionId": 25, "portalId": 62515, "appId": 1160452,
            "occurredAt": int(time.time() * 1000), "subscriptionType": kind, "attemptNumber": 0,
            "objectId": int(deal), "changeSource": "CRM"}


def hold_write_lock(path: Path, within: float = 10.0) -> sqlite3.Connection:
    """A connection holding the SQLite file's write lock (``BEGIN EXCLUSIVE``), taken once whatever the daemon is
    writing is committed: it waits for the lock (a busy timeout) and retries while it stays locked, up to
    ``within`` seconds."""
    holder = sqlite3.connect(path, timeout=within)
    deadline = time.monotonic() + within
    while True:
        try:
            holder.execute("BEGIN EXCLUSIVE")
            return holder
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                holder.close()
                raise
            time.sleep(0.05)


def create_token(config: Path, env: dict[str, str], name: str, role: str) -> str:
    done = subprocess.run([*PAYHUB, "-c", str(config), "tokens", "create", "--name", name, "--role", role],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def sim() -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(search_per_second=10_000) as simulator:
        yield simulator


def test_the_daemon_serves_its_http_face(tmp_path: Path, sim: HubSpotSimulator) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,US\np2,Partner Two,US\n")
    config = tmp_path / "payhub.toml"
    config.write_text(textwrap.dedent(f"""\
        [database]
        url = "sqlite:///payhub.db"
        sqlite_busy_timeout_seconds = 1

        [daemon]
        idle_seconds = 0.2
        db_retry_initial_seconds = 0.2
        db_retry_max_seconds = 0.5

        [http]
        listen = "127.0.0.1:0"
        metrics_refresh_seconds = 1

        [payees]
        file = "payees.csv"

        [sources.orders]
        plugin = "webhook"
        poll_interval_seconds = 0.5

        [sources.hs]
        plugin = "hubspot"
        owner_payees = {{ "101" = "p2" }}
        poll_interval_seconds = 0.5
        base_url = {json.dumps(sim.url)}
        access_token = {json.dumps(sim.private_token)}
        start_date = "2020-01-01"
        company_currency = "USD"
        index_lag_seconds = 3600
        archived_sweep_seconds = 0
        search_requests_per_second = 1000
        requests_per_second = 1000

        [programs.pct]
        calculator = "percentage"
        percent = "10"
        [programs.pct.approval]
        currency = "USD"
        threshold = "50"
        dual_threshold = "50"

        [rails.export]
        plugin = "csv_export"
        directory = "out"

        [routing]
        default_rail = "export"
    """))
    env = {**os.environ, "PAYHUB_SOURCES__ORDERS__SECRET": WEBHOOK_SECRET,
           "PAYHUB_SOURCES__HS__CLIENT_SECRET": HUBSPOT_SECRET}
    subprocess.run([*PAYHUB, "-c", str(config), "db", "upgrade"], env=env, check=True, capture_output=True,
                   timeout=60)
    auditor = create_token(config, env, "auditor-1", "auditor")
    first = create_token(config, env, "alice", "operator")
    second = create_token(config, env, "bob", "operator")

    daemon = Daemon(config, env)
    try:
        base = daemon.url()
        client = httpx.Client(base_url=base, timeout=10)

        # Health, readiness, metrics.
        assert client.get("/healthz").json() == {"status": "alive"}
        ready = eventually(lambda: (r := client.get("/readyz")).status_code == 200 and r, what="ready")
        assert all(check["ok"] for check in ready.json()["checks"])
        families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
        assert {"payhub_rewards", "payhub_payouts", "payhub_audit_entries"} <= families, families

        # Standard Webhooks: good, forged, stale, replayed.
        body = json.dumps([{"id": "SO-1", "type": "order_paid", "occurred_at": "2026-10-01T00:00:00Z",
                            "payee_id": "p1", "amount": "1000.00", "currency": "USD"}]).encode()
        good = standard_webhook(body)
        assert client.post("/webhooks/orders", content=body, headers=good).status_code == 200
        assert client.post("/webhooks/orders", content=body, headers=good).status_code == 409
        forged = standard_webhook(body, secret="whsec_" + base64.b64encode(b"x" * 32).decode())
        assert client.post("/webhooks/orders", content=body, headers=forged).status_code == 401
        assert client.post("/webhooks/orders", content=body, headers=standard_webhook(body, age=600)).status_code \
            == 401

        # HubSpot v3: the deal is read from the simulator by the worker's next poll.
        deal = sim.add_deal("contractsent", amount="2000.00")
        sim.update_deal(deal, dealstage="closedwon")
        hs_body = json.dumps([hubspot_event("deal.propertyChange", deal)]).encode()
        hs_url = f"{base}/webhooks/hs"
        hs_headers = hubspot_webhook(hs_body, hs_url)
        assert client.post("/webhooks/hs", content=hs_body, headers=hs_headers).status_code == 200, \
            "".join(daemon.lines)
        assert client.post("/webhooks/hs", content=hs_body, headers=hs_headers).status_code == 409
        assert client.post("/webhooks/hs", content=hs_body,
                           headers=hubspot_webhook(hs_body, hs_url, secret="forged")).status_code == 401
        assert client.post("/webhooks/hs", content=hs_body,
                           headers=hubspot_webhook(hs_body, hs_url, age_ms=600_000)).status_code == 401

        # Tokens and roles.
        as_auditor = {"authorization": f"Bearer {auditor}"}
        assert client.get("/api/v1/events").status_code == 401
        assert client.get("/api/v1/events", headers={"authorization": "Bearer phk_" + "x" * 43}).status_code == 401
        events = eventually(lambda: [e for e in client.get("/api/v1/events", headers=as_auditor).json()["items"]
                                     if e["status"] == "calculated"], what="both events calculated")
        assert eventually(lambda: len([e for e in client.get("/api/v1/events", headers=as_auditor).json()["items"]
                                       if e["status"] == "calculated"]) == 2, what="two events calculated")
        assert events
        rewards = client.get("/api/v1/rewards", headers=as_auditor,
                             params={"status": "awaiting_approval"}).json()["items"]
        ids = sorted(r["id"] for r in rewards)
        assert len(ids) >= 1
        denied = client.post("/api/v1/rewards/approve", headers=as_auditor, json={"ids": ids})
        assert denied.status_code == 403

        # Four eyes: two tokens are two approvers; the same token twice is refused.
        assert client.post("/api/v1/rewards/approve", headers={"authorization": f"Bearer {first}"},
                           json={"ids": ids}).status_code == 200
        assert client.post("/api/v1/rewards/approve", headers={"authorization": f"Bearer {first}"},
                           json={"ids": ids}).status_code == 409
        assert client.post("/api/v1/rewards/approve", headers={"authorization": f"Bearer {second}"},
                           json={"ids": ids}).status_code == 200
        eventually(lambda: {p["status"] for p in client.get("/api/v1/payouts", headers=as_auditor).json()["items"]}
                   == {"sent"}, what="payouts sent")

        # Readiness through a database outage: another process holds the SQLite write lock.
        holder = hold_write_lock(tmp_path / "payhub.db")
        try:
            outage = eventually(lambda: (r := client.get("/readyz")).status_code == 503 and r, what="not ready")
            failing = {check["name"] for check in outage.json()["checks"] if not check["ok"]}
            assert failing & {"database", "database_outage"}, outage.json()
        finally:
            holder.rollback()
            holder.close()
        eventually(lambda: client.get("/readyz").status_code == 200, what="ready again")

        # Keyset paging over the audit log, then the same range exported as JSON Lines.
        seen: list[int] = []
        url: str | None = "/api/v1/audit?limit=7"
        while url:
            page = client.get(url, headers=as_auditor).json()
            seen += [entry["seq"] for entry in page["items"]]
            url = page["next"]
        assert seen == sorted(set(seen)) and seen[0] == 1
        with client.stream("GET", "/api/v1/audit/export", headers=as_auditor,
                           params={"format": "jsonl", "until": "2100-01-01T00:00:00Z"}) as exported:
            assert exported.status_code == 200
            lines = [json.loads(line) for line in exported.iter_lines() if line]
        assert [entry["seq"] for entry in lines][:len(seen)] == seen
        verified = client.get("/api/v1/verify", headers=as_auditor).json()
        assert verified["ok"] is True, verified

        # Every API request was audited under its token, and no token reached the log or the audit log.
        requests = client.get("/api/v1/audit", headers=as_auditor,
                              params={"action": "api.request", "actor": "token:bob", "limit": 1000}).json()["items"]
        assert requests and all(entry["origin"].startswith("http@127.0.0.1") for entry in requests)
        with sqlite3.connect(tmp_path / "payhub.db") as db:
            everything = "\n".join(str(row) for row in db.execute("SELECT * FROM audit_log"))
        for token in (auditor, first, second):
            assert token not in everything and token not in "".join(daemon.lines)
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.lines)
    assert any("HTTP server stopped" in line for line in daemon.lines)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)
