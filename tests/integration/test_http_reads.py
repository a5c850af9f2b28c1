"""API v1 reads through httpx's ASGI transport, on SQLite and PostgreSQL: every listing with every filter, keyset
paging followed through ``next``, the bounds of ``limit`` and ``after``, ``explain``, ``trace``, ``verify``, tokens
and roles, and the OpenAPI document.

The site (one per database, read by every test): a 10 % program with approval above 5000 USD, a calculator that
pays nothing (and raises on ``X-boom``), a co-op program accruing funds to partners, a screening hook holding
payouts above 1000, the csv_export rail; ``payhub run --once`` ingests the deals (one of them bad), calculates and
pays. Tests that change rows put them back.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx
import pytest
from cli_helpers import CliSite, sql, write_config, write_site
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import text

from payhub import checkpoints, signing
from payhub.clock import isoformat, utcnow
from payhub.db.engine import make_engine
from payhub.http.app import create_app
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.tokens import create, revoke

SETTINGS = """\
[daemon]
idle_seconds = 0.1

[programs.pct]
calculator = "percentage"
percent = "10"
event_types = ["deal_won"]
approval = {currency = "USD", threshold = "5000"}

[programs.boom]
calculator = "raising"
event_types = ["deal_won"]

[programs.coop]
calculator = "coop"
percent = "2"
event_types = ["purchase"]

[hooks.deny_big]

[rails.export]
plugin = "csv_export"
directory = "out"

[routing]
default_rail = "export"
"""
PAYEES = "id,name,country\np1,One,US\np2,Two,US\np3,Three,US\np4,Four,US\np5,Five,US\n"
DEALS = [
    ("id", "type", "occurred_at", "payee_id", "partner_id", "amount", "currency"),
    ("D-1", "deal_won", "2026-10-01T00:00:00Z", "p1", "", "1000.00", "USD"),  # 100.00 to p1
    ("D-2", "deal_won", "2026-10-02T00:00:00Z", "p2", "", "2000.00", "USD"),  # 200.00 to p2
    ("D-3", "deal_won", "2026-10-03T00:00:00Z", "p3", "", "4000.00", "USD"),  # 400.00 to p3
    ("D-4", "deal_won", "2026-10-04T00:00:00Z", "p4", "", "15000.00", "USD"),  # 1500.00: payout held at screening
    ("D-5", "deal_won", "2026-10-05T00:00:00Z", "p5", "", "60000.00", "USD"),  # 6000.00: awaits approval
    ("X-boom", "deal_won", "2026-10-06T00:00:00Z", "p1", "", "10.00", "USD"),  # 1.00; boom fails on it
    ("Q-1", "deal_won", "2026-10-07T00:00:00Z", "p1", "", "ten", "USD"),  # quarantined: not an amount
    ("P-1", "purchase", "2026-09-01T00:00:00Z", "p1", "acme", "1000.00", "USD"),  # 20.00 USD to acme's fund
    ("P-2", "purchase", "2026-09-02T00:00:00Z", "p2", "beta", "500.00", "EUR"),  # 10.00 EUR to beta's
    ("P-3", "purchase", "2026-11-03T00:00:00Z", "p1", "acme", "300.00", "EUR"),  # 6.00 EUR to acme's
]
CLIENT = "198.51.100.9"
ALL_ROUTES = ["/events", "/rewards", "/calculations", "/payouts", "/funds", "/programs", "/audit",
              "/explain/payout:1", "/trace/D-1", "/verify"]


class Site(CliSite):
    """The site on one database, its runtime, the app, and tokens of each role."""

    def __init__(self, root: Path, db_url: str) -> None:
        super().__init__(root)
        self.db_url = db_url
        self.rt: Runtime | None = None
        self.tokens: dict[str, str] = {}
        self.written_by = ""
        self.before_reads = utcnow()

    def sql(self, query: str, **params: Any) -> list[Any]:
        return sql(self.db_url, query, **params)

    def ids(self, query: str, **params: Any) -> list[Any]:
        return [row[0] for row in self.sql(query, **params)]

    def get(self, path: str, token: str | None = "auditor", rt: Runtime | None = None,
            address: str = CLIENT) -> httpx.Response:
        """GET ``path`` (relative to ``/api/v1`` unless it starts with it) with the named token from ``address``."""
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        app = create_app(rt) if rt is not None else self.app
        url = path if path.startswith("/api/v1") else f"/api/v1{path}"

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, client=(address, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
                return await client.get(url, headers=headers)

        return anyio.run(call)

    def body(self, path: str, token: str = "auditor") -> Any:
        response = self.get(path, token)
        assert response.status_code == 200, response.text
        return response.json()

    @property
    def runtime(self) -> Runtime:
        assert self.rt is not None
        return self.rt

    @functools.cached_property
    def app(self) -> FastAPI:
        return create_app(self.runtime)

    def walk(self, path: str) -> tuple[list[dict[str, Any]], list[int]]:
        """Follow ``next`` from ``path`` to the end: every item, and the size of each page."""
        items: list[dict[str, Any]] = []
        sizes: list[int] = []
        url: str | None = path
        while url is not None:
            page = self.body(url)
            items += page["items"]
            sizes.append(len(page["items"]))
            url = page["next"]
            assert len(sizes) < 1000, "paging does not end"
        return items, sizes


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, plugin_path: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    write_site(root, module_db_url, SETTINGS, deals="", payees=PAYEES)
    with (root / "deals.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(DEALS)
    s = Site(root, module_db_url)
    s.ok("db", "upgrade")
    s.ok("run", "--once")
    s.rt = Runtime(load_settings(s.config))
    s.rt.load_plugins()
    for role in ("auditor", "operator"):
        s.tokens[role] = create(s.rt, role, role)
    s.tokens["revoked"] = create(s.rt, "revoked", "admin")
    revoke(s.rt, "revoked")
    [(s.written_by,)] = s.sql("SELECT actor FROM audit_log WHERE action = 'event.calculated' LIMIT 1")
    s.before_reads = utcnow()
    yield s
    s.rt.close()


def test_the_site_has_what_the_tests_read(site: Site) -> None:
    assert {r[0] for r in site.sql("SELECT status FROM events")} == {"calculated", "quarantined"}
    assert {r[0] for r in site.sql("SELECT status FROM rewards")} >= {"sent", "scheduled", "awaiting_approval"}
    assert {r[0] for r in site.sql("SELECT status FROM calculations")} == {"rewarded", "not_eligible", "failed"}
    assert {r[0] for r in site.sql("SELECT status FROM payouts")} == {"sent", "held"}
    assert len(site.sql("SELECT DISTINCT program, holder_id, unit FROM fund_entries")) == 3


LISTINGS = [  # path, the key `next` carries, the SQL of every row in order
    ("/events", "id", "SELECT id FROM events ORDER BY id"),
    ("/rewards", "id", "SELECT id FROM rewards ORDER BY id"),
    ("/calculations", "calculation",
     "SELECT id FROM calculations WHERE status IN ('not_eligible', 'failed') ORDER BY id"),
    ("/payouts", "id", "SELECT id FROM payouts ORDER BY id"),
    ("/programs", "id", "SELECT id FROM program_versions ORDER BY id"),
]


@pytest.mark.parametrize("limit", [1, 2, 1000])
@pytest.mark.parametrize(("path", "key", "query"), LISTINGS, ids=[p for p, _k, _q in LISTINGS])
def test_following_next_returns_every_row_once_in_id_order(site: Site, path: str, key: str, query: str,
                                                           limit: int) -> None:
    items, sizes = site.walk(f"{path}?limit={limit}")
    expected = site.ids(query)
    assert len(expected) >= 3
    assert [item[key] for item in items] == expected
    assert all(size == limit for size in sizes[:-1]) and 1 <= sizes[-1] <= limit
    assert len(sizes) == -(-len(expected) // limit)  # no empty last page: one row more is read to know


@pytest.mark.parametrize("limit", [1, 2, 1000])
def test_paging_the_audit_log_returns_every_entry_once(site: Site, limit: int) -> None:
    """The log grows with every request (each is audited), so the range is closed with ``until``."""
    until = isoformat(site.before_reads)
    items, _sizes = site.walk(f"/audit?limit={limit}&until={quote(until)}")
    assert [item["seq"] for item in items] == site.ids("SELECT seq FROM audit_log WHERE at < :u ORDER BY seq",
                                                       u=until)


@pytest.mark.parametrize("limit", [1, 2, 1000])
def test_paging_the_funds_returns_every_fund_once(site: Site, limit: int) -> None:
    items, sizes = site.walk(f"/funds?limit={limit}")
    keys = [(f["program"], f["holder"], f["unit"]) for f in items]
    assert sorted(keys) == sorted(tuple(r) for r in site.sql(
        "SELECT DISTINCT program, holder_id, unit FROM fund_entries"))
    assert len(set(keys)) == len(keys) == 3 and len(sizes) == -(-3 // limit)


def test_next_keeps_the_filters_and_the_limit(site: Site) -> None:
    page = site.body("/rewards?payee=p1&status=sent&limit=1&program=pct")
    query = parse_qs(urlsplit(page["next"]).query)
    assert urlsplit(page["next"]).path == "/api/v1/rewards"
    assert query == {"payee": ["p1"], "status": ["sent"], "program": ["pct"], "limit": ["1"],
                     "after": [str(page["items"][0]["id"])]}
    funds = site.body("/funds?limit=1&holder=acme")
    at = parse_qs(urlsplit(funds["next"]).query)["at"][0]  # the first page's time: every page is at the same one
    assert abs((datetime.fromisoformat(at) - utcnow()).total_seconds()) < 60
    assert site.body("/events?limit=1000")["next"] is None


def test_after_starts_past_the_given_id(site: Site) -> None:
    ids = site.ids("SELECT id FROM events ORDER BY id")
    assert [e["id"] for e in site.body(f"/events?after={ids[2]}")["items"]] == ids[3:]
    assert site.body(f"/events?after={ids[-1]}") == {"items": [], "next": None}
    assert [e["id"] for e in site.body("/events?after=0")["items"]] == ids


def by(site: Site, path: str, key: str = "id") -> list[Any]:
    items, _sizes = site.walk(path + ("&" if "?" in path else "?") + "limit=2")
    return [item[key] for item in items]


def test_event_filters(site: Site) -> None:
    for status in ("calculated", "quarantined", "waiting"):
        assert by(site, f"/events?status={status}") == site.ids(
            "SELECT id FROM events WHERE status = :s ORDER BY id", s=status)
    assert by(site, "/events?source=deals") == site.ids("SELECT id FROM events ORDER BY id")
    assert by(site, "/events?source=nothing") == []
    assert by(site, "/events?source=deals&status=quarantined") == site.ids(
        "SELECT id FROM events WHERE status = 'quarantined'")


def test_reward_filters(site: Site) -> None:
    for status in ("sent", "scheduled", "awaiting_approval", "paid"):
        assert by(site, f"/rewards?status={status}") == site.ids(
            "SELECT id FROM rewards WHERE status = :s ORDER BY id", s=status)
    assert len(by(site, "/rewards?payee=p1")) == 2
    assert by(site, "/rewards?payee=p1") == site.ids("SELECT id FROM rewards WHERE payee_id = 'p1' ORDER BY id")
    assert by(site, "/rewards?program=pct") == site.ids("SELECT id FROM rewards ORDER BY id")
    assert by(site, "/rewards?program=boom") == []
    assert by(site, "/rewards?program=pct&payee=p5&status=awaiting_approval") == site.ids(
        "SELECT id FROM rewards WHERE payee_id = 'p5'")


def test_calculation_filters(site: Site) -> None:
    for status in ("not_eligible", "failed"):
        assert by(site, f"/calculations?status={status}", "calculation") == site.ids(
            "SELECT id FROM calculations WHERE status = :s ORDER BY id", s=status)
    assert len(by(site, "/calculations?status=failed", "calculation")) == 1
    assert by(site, "/calculations?payee=p1", "calculation") == site.ids(
        "SELECT c.id FROM calculations c JOIN events e ON e.id = c.event_id WHERE e.payee_id = 'p1' "
        "AND c.status <> 'rewarded' ORDER BY c.id")
    assert by(site, "/calculations?program=pct", "calculation") == []
    assert by(site, "/calculations?program=boom&status=not_eligible", "calculation") == site.ids(
        "SELECT id FROM calculations WHERE program = 'boom' AND status = 'not_eligible' ORDER BY id")
    assert site.get("/calculations?status=rewarded").status_code == 422


def test_payout_filters(site: Site) -> None:
    for status in ("sent", "held", "paid"):
        assert by(site, f"/payouts?status={status}") == site.ids(
            "SELECT id FROM payouts WHERE status = :s ORDER BY id", s=status)
    assert by(site, "/payouts?rail=export") == site.ids("SELECT id FROM payouts ORDER BY id")
    assert by(site, "/payouts?rail=other") == []
    assert by(site, "/payouts?payee=p4") == site.ids("SELECT id FROM payouts WHERE payee_id = 'p4'")
    assert by(site, "/payouts?payee=p4&status=held&rail=export") == by(site, "/payouts?payee=p4")
    assert site.get("/payouts?status=lost").status_code == 422


def test_fund_filters_and_time(site: Site) -> None:
    def funds(query: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {(f["holder"], f["unit"]): f for f in site.body(f"/funds?{query}")["items"]}

    now = funds("")
    assert {k: (f["credited"], f["balance"]) for k, f in now.items()} == {
        ("acme", "USD"): ("20.00", "20.00"), ("beta", "EUR"): ("10.00", "10.00"),
        ("acme", "EUR"): ("6.00", "6.00")}
    assert set(funds("holder=acme")) == {("acme", "USD"), ("acme", "EUR")}
    assert set(funds("program=coop&holder=beta")) == {("beta", "EUR")}
    assert funds("program=pct") == {}
    assert set(funds("at=2026-10-01")) == {("acme", "USD"), ("beta", "EUR")}  # P-3 occurs in November
    assert funds("at=2026-08-01T00:00:00%2B02:00") == {}
    assert site.get("/funds?at=2026-10-01T00:00:00").status_code == 422  # a time without its offset
    assert site.get("/funds?after=not-a-position").status_code == 422


def test_program_filter(site: Site) -> None:
    versions = site.body("/programs?program=coop")["items"]
    assert [(v["program"], v["version"], v["calculator"]) for v in versions] == [("coop", 1, "coop")]
    assert versions[0]["params"]["percent"] == "2"
    assert site.body("/programs?program=none")["items"] == []


@pytest.mark.slow  # many filtered reads of a large audit log
def test_audit_filters(site: Site) -> None:
    until = quote(isoformat(site.before_reads))

    def seqs(query: str) -> list[int]:
        return by(site, f"/audit?until={until}&{query}", "seq")

    def expected(where: str, **params: Any) -> list[int]:
        return site.ids(f"SELECT seq FROM audit_log WHERE at < :u AND {where} ORDER BY seq",
                        u=isoformat(site.before_reads), **params)

    assert seqs("action=payout.sent") == expected("action = 'payout.sent'") != []
    assert seqs("action=payout.*") == expected("action LIKE 'payout.%'") != expected("action = 'payout.sent'")
    assert seqs(f"actor={quote(site.written_by)}") == expected("actor = :a", a=site.written_by)
    [payout] = site.ids("SELECT id FROM payouts WHERE status = 'held'")
    assert seqs(f"subject=payout:{payout}") == expected("subject_type = 'payout' AND subject_id = :p",
                                                        p=str(payout)) != []
    assert seqs(f"subject={payout}") == expected("subject_id = :p", p=str(payout))
    [(middle,)] = site.sql("SELECT at FROM audit_log WHERE seq = 10")
    assert seqs(f"since={quote(middle)}") == expected("at >= :m", m=middle)
    assert by(site, "/audit?actor=token:auditor&action=api.request", "seq")  # the reads so far, audited


def test_items_carry_exact_amounts_utc_times_and_json_detail(site: Site) -> None:
    [reward] = site.body("/rewards?payee=p3")["items"]
    assert (reward["amount"], reward["currency"], reward["program"], reward["status"]) == (
        "400.00", "USD", "pct", "sent")
    [awaiting] = site.body("/rewards?status=awaiting_approval")["items"]
    assert (awaiting["amount"], awaiting["approvals"]) == ("6000.00", "0/1")
    [event] = site.body("/events?status=quarantined")["items"]
    assert (event["amount"], event["object"], event["occurred_at"]) == (None, "record:Q-1", "2026-10-07T00:00:00Z")
    assert "amount" in event["reason"]
    [payout] = site.body("/payouts?payee=p1")["items"]
    assert (payout["amount"], payout["currency"], payout["items"]) == ("101.00", "USD", 2)
    [failed] = site.body("/calculations?status=failed")["items"]
    assert failed["object"] == "record:X-boom" and "bug in calculator" in failed["reason"]
    assert failed["calculated_at"].endswith("Z")
    entry = site.body("/audit?action=payout.sent&limit=1")["items"][0]
    assert isinstance(entry["detail"], dict) and entry["at"].endswith("Z") and len(entry["hash"]) == 64


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-1", "limit=many", "after=-1", "after=x",
                                   f"after={2**63}"])
@pytest.mark.parametrize("path", ["/events", "/rewards", "/calculations", "/payouts", "/programs", "/audit"])
def test_limit_and_after_out_of_bounds_are_refused(site: Site, path: str, query: str) -> None:
    response = site.get(f"{path}?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["problems"][0]["where"] == f"query.{query.split('=')[0]}"


def test_limit_bounds_are_inclusive(site: Site) -> None:
    [entries] = site.ids("SELECT count(*) FROM audit_log")
    assert len(site.body("/audit?limit=1000")["items"]) == min(1000, entries)
    assert len(site.body("/audit?limit=1")["items"]) == 1
    assert len(site.body("/events")["items"]) == len(site.ids("SELECT id FROM events"))  # default 100
    assert site.get("/funds?limit=1001").status_code == 422


def test_explain_answers_for_every_kind_of_reference(site: Site) -> None:
    [payout] = site.ids("SELECT id FROM payouts WHERE payee_id = 'p1'")
    answer = site.body(f"/explain/payout:{payout}")
    assert answer["kind"] == "payout" and answer["payout"]["amount"] == "101.00"
    assert answer["net"] == {"items": 2, "rewards": "101.00", "adjustments": "0.00", "total": "101.00",
                             "amount": "101.00", "currency": "USD", "adds_up": True}
    assert answer["items"][0]["event"]["occurred_at"] == "2026-10-01T00:00:00Z"
    [reward] = site.ids("SELECT id FROM rewards WHERE payee_id = 'p3'")
    for ref in (f"reward:{reward}", str(reward), f"REWARD:{reward}"):
        explained = site.body(f"/explain/{ref}")
        assert (explained["kind"], explained["reward"]["id"], explained["reward"]["amount"]) == (
            "reward", reward, "400.00")
    [event] = site.ids("SELECT id FROM events WHERE object_id = 'X-boom'")
    for ref in (f"event:{event}", "record:X-boom", "X-boom", "deals:record:X-boom:deal_won"):
        explained = site.body(f"/explain/{quote(ref)}")
        assert explained["kind"] == "events" and [e["event"]["id"] for e in explained["events"]] == [event]
        assert {c["status"] for c in explained["events"][0]["calculations"]} == {"rewarded", "failed"}


def test_explain_matches_the_cli(site: Site) -> None:
    [payout] = site.ids("SELECT id FROM payouts WHERE payee_id = 'p4'")
    cli = json.loads(site.ok("explain", f"payout:{payout}", "--format", "json").stdout)
    api = site.body(f"/explain/payout:{payout}")
    assert api["payout"]["screening"] == cli["payout"]["screening"] != []
    assert api["net"] == cli["net"] and api["payout"]["key"] == cli["payout"]["key"]
    assert [i["reward"]["id"] for i in api["items"]] == [i["reward"]["id"] for i in cli["items"]]


@pytest.mark.parametrize("ref", ["payout:999999", "reward:999999", "999999", "event:999999", "record:nothing",
                                 "no-such-key", "payout:99999999999999999999", "record:a/b"])
def test_unknown_references_are_404(site: Site, ref: str) -> None:
    for route in ("explain", "trace"):
        response = site.get(f"/{route}/{quote(ref, safe='/:')}")
        assert response.status_code == 404, (route, ref, response.text)
        assert ref in response.json()["detail"]


def test_trace_follows_a_record_to_its_payouts(site: Site) -> None:
    [node] = site.body("/trace/D-1")
    assert node["event"]["amount"] == "1000.00" and node["event"]["occurred_at"] == "2026-10-01T00:00:00Z"
    assert {(c["program"], c["status"]) for c in node["calculations"]} == {("pct", "rewarded"),
                                                                          ("boom", "not_eligible")}
    [reward] = node["rewards"]
    [payout] = reward["payouts"]
    assert (reward["amount"], payout["amount"], payout["status"]) == ("100.00", "101.00", "sent")
    assert payout["attempts"] and payout["attempts"][0]["kind"] == "send"
    cli = json.loads(site.ok("audit", "trace", "D-1", "--format", "json").stdout)
    assert cli[0]["rewards"][0]["payouts"][0]["key"] == payout["key"]


def test_verify_reports_the_chain_and_the_tables(site: Site) -> None:
    report = site.body("/verify")
    assert report["ok"] is True and report["checked"] >= report["head_seq"] - 1 > 0
    assert (report["differences"], report["difference_count"], report["anchored"]) == ([], 0, None)
    assert report["checkpoints"] == {"checked": False, "count": 0, "latest_seq": None, "problems": []}
    [(early,)] = site.sql("SELECT hash FROM audit_log WHERE seq = 3")
    assert site.body(f"/verify?expect_head={early}")["anchored"] is True
    rebuilt = site.body(f"/verify?expect_head={'0' * 64}")
    assert (rebuilt["ok"], rebuilt["anchored"]) == (False, False)
    [(payout, minor)] = site.sql("SELECT id, amount_minor FROM payouts WHERE payee_id = 'p2'")
    site.sql("UPDATE payouts SET amount_minor = 1 WHERE id = :p", p=payout)
    try:
        changed = site.body("/verify")
    finally:
        site.sql("UPDATE payouts SET amount_minor = :m WHERE id = :p", m=minor, p=payout)
    assert changed["ok"] is False and changed["difference_count"] >= 1
    assert any(d["subject"] == f"payout {payout}" for d in changed["differences"]), changed["differences"]
    [(detail,)] = site.sql("SELECT detail FROM audit_log WHERE seq = 5")
    site.sql("UPDATE audit_log SET detail = '{}' WHERE seq = 5")
    try:
        altered = site.body("/verify")
        site.sql("UPDATE audit_log SET detail = 'not JSON' WHERE seq = 5")
        [shown] = site.body("/audit?after=4&limit=1")["items"]  # an auditor still reads the changed entry
    finally:
        site.sql("UPDATE audit_log SET detail = :d WHERE seq = 5", d=detail)
    assert (altered["ok"], altered["first_bad"]) == (False, 5) and "altered" in altered["problem"]
    assert (shown["seq"], shown["detail"]) == (5, "not JSON")
    assert site.body("/verify")["ok"] is True
    [(recorded,)] = site.sql("SELECT detail FROM audit_log WHERE action = 'api.request' AND detail LIKE :p "
                             "ORDER BY seq DESC LIMIT 1", p='%"first_bad":5%')
    assert json.loads(recorded)["ok"] is False


def test_verify_checks_signed_checkpoints_with_the_public_key_and_signs_none(site: Site, tmp_path: Path) -> None:
    pem, key = signing.new_private_key()
    directory = tmp_path / "checkpoints"
    [(seq, digest)] = site.sql("SELECT seq, hash FROM audit_log WHERE seq = 7")
    checkpoints.append(directory, checkpoints.sign(key, seq, digest))
    config = write_config(tmp_path, site.db_url, SETTINGS + f"""
[audit]
checkpoint_public_key = "{key.public_text}"
checkpoint_dir = "{directory}"
""")
    rt = Runtime(load_settings(config))
    try:
        report = site.get("/verify", rt=rt).json()
        assert report["ok"] is True
        assert report["checkpoints"] == {"checked": True, "count": 1, "latest_seq": 7, "problems": []}
        _other_pem, other = signing.new_private_key()
        checkpoints.append(directory, checkpoints.sign(other, seq, digest))
        forged = site.get("/verify", rt=rt).json()
        assert forged["ok"] is False and "another key" in forged["checkpoints"]["problems"][0]
    finally:
        rt.close()
    assert len(checkpoints.read(directory)[0]) == 2  # nothing signed over HTTP
    assert pem


@pytest.mark.parametrize("path", ALL_ROUTES)
def test_every_read_needs_a_valid_token_and_the_auditor_role_is_enough(site: Site, path: str) -> None:
    stranger = f"192.0.2.{ALL_ROUTES.index(path) + 1}"  # failed sign-ins are limited per address
    assert site.get(path, token=None, address=stranger).status_code == 401
    assert site.get(path, token="revoked", address=stranger).status_code == 401
    assert site.get(path, token="auditor").status_code == 200
    assert site.get(path, token="operator").status_code == 200


def test_each_read_is_audited_with_its_row_count(site: Site) -> None:
    site.body("/payouts?status=held")
    [(actor, origin, outcome, detail)] = site.sql(
        "SELECT actor, origin, outcome, detail FROM audit_log WHERE action = 'api.request' "
        "AND subject_id = '/api/v1/payouts' ORDER BY seq DESC LIMIT 1")
    assert (actor, origin, outcome) == ("token:auditor", f"http@{CLIENT}", "ok")
    assert {"rows": 1, "query": {"status": "held"}, "status": 200}.items() <= json.loads(detail).items()


@pytest.mark.slow  # generates and walks the whole OpenAPI document
def test_openapi_is_3_1_and_describes_every_route_with_a_200_schema(site: Site) -> None:
    response = site.get("/api/v1/openapi.json", token=None)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1.")
    served = [(route.path_format, method, route.status_code) for route in iter_route_contexts(site.app.routes)
              if isinstance(route.route, APIRoute) and (route.path_format or "").startswith("/api/v1/")
              for method in route.methods or ()]
    assert {path for path, _method, _status in served} >= {
        "/api/v1/events", "/api/v1/rewards", "/api/v1/calculations", "/api/v1/payouts", "/api/v1/funds",
        "/api/v1/programs", "/api/v1/audit", "/api/v1/explain/{ref}", "/api/v1/trace/{ref}", "/api/v1/verify"}
    for path, method, status in served:
        operation = document["paths"][path][method.lower()]
        success = operation["responses"][str(status or 200)]
        assert any(kind.get("schema") for kind in success["content"].values()), (path, method)
        assert operation.get("summary"), (path, method)
    reads = document["paths"]["/api/v1/rewards"]["get"]
    assert {p["name"]: bool(p.get("description")) for p in reads["parameters"]} == {
        "after": True, "limit": True, "status": True, "payee": True, "program": True}
    assert {"401", "403", "422"} <= set(reads["responses"]) and reads["operationId"] == "list_rewards"
    assert reads["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RewardPage"}
    assert document["components"]["schemas"]["RewardItem"]["properties"]["amount"]["type"] == "string"


def test_each_listing_filter_is_served_by_an_index_in_id_order(site: Site) -> None:
    """"filter + id > after order by id limit n" reads one index range, both conditions in the index's, and sorts
    nothing (PostgreSQL is told to avoid sequential scans and sorts, so that its plan on a small table shows it)."""
    cases = [("events", "status", "id"), ("events", "source", "id"), ("rewards", "status", "id"),
             ("rewards", "payee_id", "id"), ("rewards", "program", "id"), ("calculations", "status", "id"),
             ("payouts", "status", "id"), ("payouts", "rail", "id"), ("payouts", "payee_id", "id"),
             ("audit_log", "actor", "seq"), ("audit_log", "action", "seq"), ("audit_log", "subject_id", "seq")]
    engine = make_engine(site.db_url)
    try:
        with engine.connect() as conn:
            sqlite = engine.dialect.name == "sqlite"
            if not sqlite:
                conn.execute(text("SET enable_seqscan = off"))
                conn.execute(text("SET enable_sort = off"))
            for table, column, key in cases:
                query = f"SELECT * FROM {table} WHERE {column} = 'x' AND {key} > 5 ORDER BY {key} LIMIT 101"
                plan = " / ".join(str(row[-1]) for row in conn.execute(text(
                    f"EXPLAIN QUERY PLAN {query}" if sqlite else f"EXPLAIN {query}")))
                if sqlite:
                    assert f"({column}=? AND {key}>?)" in plan and "TEMP B-TREE" not in plan, (table, column, plan)
                else:
                    assert "Sort" not in plan and "Seq Scan" not in plan, (table, column, plan)
                    [condition] = [line for line in plan.split(" / ") if "Index Cond" in line]
                    assert column in condition and f"({key} > 5)" in condition, (table, column, plan)
    finally:
        engine.dispose()
