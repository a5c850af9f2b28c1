"""Console search (docs/console.md, Search and provenance), on SQLite and PostgreSQL: every kind of reference the
API reads plus payee ids, rail references and idempotency keys; a single row found opens its page; the listings with
each filter of payhub.reports, paged by keyset through their Next links; bad parameters answered 422 with the form.

The site is test_console_provenance's (:func:`build_site`): nine events (one quarantined, a CRM record with two),
eight rewards, six payouts (three in one csv_export file, one in a SEPA file).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from console_client import Console
from sqlalchemy import event, inspect, select
from test_console_provenance import Site, build_site, hrefs, text_of

from payhub.db.schema import audit_log

pytest.importorskip("payhub_bank")


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, plugin_path: Path) -> Iterator[Site]:
    s = build_site(tmp_path_factory.mktemp("site"), module_db_url)
    yield s
    s.runtime.close()


@pytest.fixture(scope="module")
def auditor(site: Site) -> Console:
    return site.console("auditor", "sam-auditor")


def search(console: Console, **params: Any) -> httpx.Response:
    return console.get("/console/search?" + urlencode(params))


def listed(body: str, kind: str) -> list[int]:
    """The ids of the listing's rows, in order."""
    return [int(n) for n in re.findall(rf'<th scope="row"><a href="/console/{kind}/(\d+)">', body)]


def ids(site: Site, query: str, **params: Any) -> list[int]:
    return [row[0] for row in site.sql(query, **params)]


# ---------------------------------------------------------------------------------------------------- references


def test_each_kind_of_reference_opens_its_page(site: Site, auditor: Console) -> None:
    bank = site.ids["bank"]
    [(key, ref)] = site.sql("SELECT idempotency_key, provider_ref FROM payouts WHERE id = :i", i=bank)
    reward = site.one("SELECT r.id FROM rewards r JOIN events e ON e.id = r.event_id WHERE e.object_id = 'D-3'")
    event = site.one("SELECT id FROM events WHERE object_id = 'D-1'")
    cases = {
        f"payout:{bank}": f"/console/payouts/{bank}", f"PAYOUT:{bank}": f"/console/payouts/{bank}",
        key: f"/console/payouts/{bank}", ref: f"/console/payouts/{bank}",  # idempotency key, bank file and line
        ref.rpartition(":")[0]: f"/console/payouts/{bank}",  # the bank file: the payouts of its lines
        f"reward:{reward}": f"/console/rewards/{reward}", str(reward): f"/console/rewards/{reward}",  # bare: reward
        f"event:{event}": f"/console/events/{event}", "deals:record:D-1:deal_won": f"/console/events/{event}",
        "D-1": f"/console/events/{event}", "record:D-1": f"/console/events/{event}",  # CRM object id
        f"  payout:{bank}  ": f"/console/payouts/{bank}",  # white space around is not part of the reference
    }
    for q, where in cases.items():
        answer = search(auditor, q=q)
        assert (answer.status_code, answer.headers.get("location")) == (303, where), q
        assert auditor.get(where).status_code == 200


def test_a_crm_record_with_several_events_lists_them(site: Site, auditor: Console) -> None:
    both = ids(site, "SELECT id FROM events WHERE object_id = 'D-2' ORDER BY id")
    assert len(both) == 2
    for q in ("D-2", "record:D-2"):
        answer = search(auditor, q=q)
        assert answer.status_code == 200
        assert listed(answer.text, "events") == [] and {f"/console/events/{n}" for n in both} <= hrefs(answer.text)
        shown = text_of(answer.text)
        assert "deals:record:D-2:deal_won (deal_won, payee p2)" in shown
        assert "deals:record:D-2:deal_refunded (deal_refunded, payee p2)" in shown


def test_a_file_shared_by_payouts_lists_them_and_a_payee_links_to_its_listings(site: Site,
                                                                                auditor: Console) -> None:
    [(ref, count)] = site.sql("SELECT provider_ref, count(*) FROM payouts GROUP BY provider_ref "
                              "HAVING count(*) > 1")
    answer = search(auditor, q=ref)
    assert answer.status_code == 200 and count == 3
    assert {f"/console/payouts/{n}" for n in ids(site, "SELECT id FROM payouts WHERE provider_ref = :r",
                                                 r=ref)} <= hrefs(answer.text)
    payee = search(auditor, q="p2")
    assert payee.status_code == 200  # a payee has no page of its own: it is listed with its counts
    assert "payee p2 payee with 3 rewards, 2 payouts" in text_of(payee.text)
    assert "/console/search?kind=payouts&payee=p2" in hrefs(payee.text)


def test_nothing_found_is_said(site: Site, auditor: Console) -> None:
    for q in ("no-such-thing", "payout:987654", "reward:99999999999999999999999", "event:0", "record:nothing",
              "99999999999999999999999"):
        answer = search(auditor, q=q)
        assert answer.status_code == 200, q
        assert "Nothing found" in answer.text and listed(answer.text, "payouts") == []


def test_hostile_search_text_is_escaped(site: Site, auditor: Console) -> None:
    q = "<script>alert(\"x\")</script>'\u202e"
    answer = search(auditor, q=q)
    assert answer.status_code == 200 and "<script>alert" not in answer.text
    assert 'value="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39;\u202e"' in answer.text  # the field keeps it
    assert "Found for <q>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39;\\u202e</q>" in answer.text  # visible


# ---------------------------------------------------------------------------------------------------- listings


FILTERED = [  # the parameters, the kind listed, the SQL of the rows in order
    ({"kind": "rewards", "payee": "p2"}, "rewards", "SELECT id FROM rewards WHERE payee_id = 'p2' ORDER BY id"),
    ({"kind": "rewards", "program": "intl"}, "rewards", "SELECT id FROM rewards WHERE program = 'intl'"),
    ({"kind": "rewards", "status": "sent", "program": "pct", "payee": "p3"}, "rewards",
     "SELECT id FROM rewards WHERE payee_id = 'p3'"),
    ({"kind": "payouts", "rail": "bank"}, "payouts", "SELECT id FROM payouts WHERE rail = 'bank'"),
    ({"kind": "payouts", "status": "sent", "payee": "p2"}, "payouts",
     "SELECT id FROM payouts WHERE payee_id = 'p2' ORDER BY id"),
    ({"kind": "payouts", "rail": "export"}, "payouts", "SELECT id FROM payouts WHERE rail = 'export' ORDER BY id"),
    ({"kind": "events", "status": "quarantined"}, "events", "SELECT id FROM events WHERE status = 'quarantined'"),
    ({"kind": "events", "source": "deals"}, "events", "SELECT id FROM events ORDER BY id"),
    ({"payee": "p1"}, "rewards", "SELECT id FROM rewards WHERE payee_id = 'p1' ORDER BY id"),  # kind implied
    ({"rail": "bank"}, "payouts", "SELECT id FROM payouts WHERE rail = 'bank'"),
    ({}, "payouts", "SELECT id FROM payouts ORDER BY id"),  # the search page opens on the payouts
]


@pytest.mark.parametrize(("params", "kind", "query"), FILTERED, ids=[urlencode(p) or "none" for p, _k, _q in FILTERED])
def test_each_filter_lists_what_the_reports_list(site: Site, auditor: Console, params: dict[str, str], kind: str,
                                                 query: str) -> None:
    answer = search(auditor, **params)
    assert answer.status_code == 200
    expected = ids(site, query)
    assert expected and listed(answer.text, kind) == expected


def test_a_filter_matching_nothing_says_so(site: Site, auditor: Console) -> None:
    for params in ({"kind": "events", "source": "nowhere"}, {"kind": "payouts", "status": "held"},
                   {"kind": "rewards", "program": "<b>x</b>"}):
        answer = search(auditor, **params)
        assert answer.status_code == 200 and "match these filters" in answer.text
        assert "<b>x</b>" not in answer.text


@pytest.mark.parametrize(("params", "kind", "query"), [
    ({"kind": "events"}, "events", "SELECT id FROM events ORDER BY id"),
    ({"kind": "rewards", "payee": "p2"}, "rewards", "SELECT id FROM rewards WHERE payee_id = 'p2' ORDER BY id"),
    ({"kind": "payouts", "status": "sent"}, "payouts", "SELECT id FROM payouts ORDER BY id"),
], ids=["events", "rewards-of-p2", "sent-payouts"])
@pytest.mark.parametrize("limit", [1, 2, 500])
def test_next_links_page_through_every_row_once(site: Site, auditor: Console, params: dict[str, str], kind: str,
                                                query: str, limit: int) -> None:
    url: str | None = "/console/search?" + urlencode({**params, "limit": limit})
    seen: list[int] = []
    pages = 0
    while url is not None:
        answer = auditor.get(url)
        assert answer.status_code == 200
        rows = listed(answer.text, kind)
        assert 1 <= len(rows) <= limit
        seen += rows
        pages += 1
        following = re.search(r'<a href="([^"]+)" rel="next">Next page</a>', answer.text)
        url = html.unescape(following.group(1)) if following else None
        if url is not None:
            kept = parse_qs(urlsplit(url).query)
            assert {k: v[0] for k, v in kept.items() if k not in ("after", "limit")} == params
            assert kept["after"] == [str(rows[-1])] and kept["limit"] == [str(limit)]
        assert pages < 50
    expected = ids(site, query)
    assert seen == expected and pages == -(-len(expected) // limit)  # no empty last page


# ---------------------------------------------------------------------------------------------------- bad parameters


BAD = [
    ({"kind": "bogus"}, "kind: one of payouts, rewards, events"),
    ({"kind": "payouts", "status": "bogus"}, "status of payouts: one of"),
    ({"kind": "events", "status": "held"}, "status of events: one of waiting, ingested, calculated, quarantined"),
    ({"kind": "events", "rail": "bank"}, "events cannot be filtered by rail"),
    ({"kind": "rewards", "source": "deals"}, "rewards cannot be filtered by source"),
    ({"limit": "0"}, "limit: a whole number from 1 to 1000"),
    ({"limit": "1001"}, "limit: a whole number from 1 to 1000"),
    ({"limit": "ten"}, "limit: a whole number from 1 to 1000"),
    ({"after": "-1"}, "after: a whole number from 0 to"),
    ({"after": "1e3"}, "after: a whole number"),
    ({"after": "9" * 40}, "after: a whole number"),
    ({"q": "x" * 601}, "q: at most 600 characters"),
    ({"payee": "p" * 201}, "payee: at most 200 characters"),
    ({"q": "payout:\x01"}, "q: contains a control character (U+0001)"),
    ({"kind": "payouts", "payee": "p\x1b[2J"}, "payee: contains a control character (U+001B)"),
    ({"q": "a\x00b"}, "q: contains a NUL character"),
    ({"kind": "payouts", "stauts": "held"}, "unknown parameter 'stauts'"),  # a misspelt filter does not widen it
    ({"kind": "payouts", "payee": "p2", "limt": "1"}, "unknown parameter 'limt'"),
]


@pytest.mark.parametrize(("params", "problem"), BAD, ids=[f"{next(iter(p))}-{i}" for i, (p, _m) in enumerate(BAD)])
def test_a_bad_parameter_is_a_422_page_with_the_form(site: Site, auditor: Console, params: dict[str, str],
                                                     problem: str) -> None:
    answer = search(auditor, **params)
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("text/html")
    assert problem in html.unescape(answer.text)
    assert 'role="search"' in answer.text and listed(answer.text, "payouts") == []


def test_a_parameter_given_twice_is_refused(site: Site, auditor: Console) -> None:
    answer = auditor.get("/console/search?q=payout:1&q=payout:2")
    assert answer.status_code == 422 and "q: given more than once" in answer.text


# ---------------------------------------------------------------------------------------------------- access


def test_search_needs_a_session_and_is_audited(site: Site, auditor: Console) -> None:
    answer = Console(site.runtime).get("/console/search?q=p2")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login?next=")
    search(auditor, kind="payouts", payee="p2")
    with site.runtime.engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.subject_id == "/console/search")
                             .order_by(audit_log.c.seq.desc())).first()
    assert entry is not None and (entry.actor, entry.action, entry.outcome) == ("token:sam-auditor", "api.request",
                                                                                 "ok")
    assert '"payee":"p2"' in entry.detail and '"rows":2' in entry.detail


# ---------------------------------------------------------------------------------------------------- indexes


def test_the_tables_search_reads_have_their_indexes(site: Site) -> None:
    indexes = {table: {ix["name"]: ix["column_names"] for ix in inspect(site.runtime.engine).get_indexes(table)}
               for table in ("events", "payouts")}
    assert indexes["events"]["ix_events_object_id"] == ["object_id"]
    assert indexes["payouts"]["ix_payouts_provider_ref"] == ["provider_ref"]


def plans(site: Site, statements: list[tuple[str, Any]]) -> list[str]:
    """The query plan lines of each captured statement (the planner told to avoid whole-table scans wherever an
    index can serve, so a scan left in a plan means no index could)."""
    found = []
    engine = site.runtime.engine
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            for statement, parameters in statements:
                found += [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")
            for statement, parameters in statements:
                found += [row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
    return found


def test_a_search_reads_through_indexes_not_whole_tables(site: Site, auditor: Console) -> None:
    [ref] = [r for (r,) in site.sql("SELECT provider_ref FROM payouts WHERE id = :i", i=site.ids["bank"])]
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and re.search(r"\bFROM (events|payouts)\b", statement):
            captured.append((statement, parameters))

    event.listen(site.runtime.engine, "before_cursor_execute", capture)
    try:
        for q in (ref.rpartition(":")[0], "D-2", "no-such-thing"):  # a bank file, a CRM object id, nothing
            assert search(auditor, q=q).status_code in (200, 303)
    finally:
        event.remove(site.runtime.engine, "before_cursor_execute", capture)
    assert len(captured) >= 6
    lines = plans(site, captured)
    scans = [line for line in lines if re.match(r"\s*(->\s*)?(SCAN (events|payouts)\b|Seq Scan on (events|payouts)\b)",
                                                line)]
    assert scans == [], lines
    assert any("ix_payouts_provider_ref" in line for line in lines)
    assert any("ix_events_object_id" in line for line in lines)
