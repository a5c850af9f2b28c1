"""Console audit log pages (docs/console.md, Audit log) on SQLite and PostgreSQL: the filters list exactly what
``payhub audit query`` lists, pages follow each other without gaps, the export is ``payhub audit export``'s file and
is itself audited, personal values are shown per role, hostile text is escaped, bad parameters get a message page,
and verification says OK on a sound log and names the entry changed behind payhub's back.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliSite
from console_client import Console
from fastapi import HTTPException
from markupsafe import escape
from sqlalchemy import select, update
from test_audit_streaming import FORMULA, REASON, seed, stored
from test_retention import _site, applied, cut_row
from test_retention import clock as clock  # a fixture

from payhub import checkpoints
from payhub.audit import Cut, canonical_json
from payhub.audit_query import EXPORT_COLUMNS
from payhub.clock import isoformat, utcnow
from payhub.compliance import personal
from payhub.console import routes_audit
from payhub.csvsafe import restore_cell
from payhub.db.schema import audit_log
from payhub.http import routes_reads
from payhub.runtime import Runtime

SEEDED = 120
ROW = re.compile(r'<th scope="row" class="num" rowspan="2">(\d+)</th>')
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')
HOSTILE_SUBJECT = '<img src=x onerror="alert(1)">\u202egnp.exe'
HOSTILE_NOTE = "</code><script>alert('x')</script>\u200b"


@pytest.fixture
def site(make_runtime: Any, tmp_path: Path) -> tuple[CliSite, Runtime, Console, str]:
    """A log of seeded entries (hostile ones among them), a CLI on it, an auditor signed in to the console, and a
    time after the seeded entries and before any read of them."""
    rt = make_runtime("")
    seed(rt, SEEDED)
    with rt.transaction() as tx:
        tx.audit("crm.note", "record", HOSTILE_SUBJECT, {"note": HOSTILE_NOTE, "amount": "=1+2"}, actor="crm")
    cutoff = isoformat(utcnow())
    console = Console(rt)
    console.sign_in("ann", "auditor")
    return CliSite(tmp_path), rt, console, cutoff


def listed(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [int(seq) for seq in ROW.findall(answer.text)]


def following(answer: Any) -> str | None:
    found = NEXT.search(answer.text)
    return html.unescape(found.group(1)) if found else None


def cli_seqs(cli: CliSite, filters: dict[str, str]) -> list[int]:
    args = [part for name, value in filters.items() for part in (f"--{name}", value)]
    return [entry["seq"] for entry in cli.json("audit", "query", *args)]


CASES = [{"action": "payout.*"}, {"actor": FORMULA}, {"subject": "reward:9"}, {"subject": "-2+3"},
         {"action": "event.ingested", "since": "2000-01-01"}, {"until": "2000-01-01"}, {"actor": "crm"},
         {"subject": HOSTILE_SUBJECT}, {"action": "reward.calculated", "subject": "reward:12"}]


def test_filters_list_exactly_the_entries_the_cli_lists(site: tuple[CliSite, Runtime, Console, str]) -> None:
    cli, rt, console, cutoff = site
    for filters in [*CASES, {"until": cutoff}, {"since": "2000-01-01T00:00:00+02:00", "until": cutoff,
                                                 "action": "*.*"}]:
        expected = cli_seqs(cli, filters)
        oldest = listed(console.get("/console/audit", params={**filters, "order": "oldest", "limit": "1000"}))
        newest = listed(console.get("/console/audit", params={**filters, "limit": "1000"}))
        assert oldest == expected, filters
        assert newest == expected[::-1], filters
    assert len(cli_seqs(cli, {"until": cutoff})) == SEEDED + 1  # the seeded entries and the hostile note
    assert cli_seqs(cli, {"actor": FORMULA}) == [seq for seq in range(7, SEEDED + 1, 7)]
    # Each page view is recorded with its filters and the number of entries it showed.
    held = cli_seqs(cli, {"action": "payout.*"})
    console.get("/console/audit", params={"action": "payout.*"})
    [*_, view] = [e for e in stored(rt) if e["subject_id"] == "/console/audit"]
    assert view["actor"] == "token:ann" and json.loads(view["detail"]) == {
        "method": "GET", "status": 200, "query": {"action": "payout.*"}, "rows": len(held)}


def test_pages_follow_each_other_in_both_orders(site: tuple[CliSite, Runtime, Console, str]) -> None:
    cli, _rt, console, cutoff = site
    expected = cli_seqs(cli, {"until": cutoff})

    def walk(first: str) -> list[int]:
        seen: list[int] = []
        href: str | None = first
        pages = 0
        while href is not None:
            answer = console.get(href)
            page = listed(answer)
            assert 0 < len(page) <= 25
            seen += page
            href = following(answer)
            pages += 1
        assert pages == -(-len(expected) // 25)
        return seen

    assert walk(f"/console/audit?order=oldest&limit=25&until={cutoff}") == expected
    assert walk(f"/console/audit?limit=25&until={cutoff}") == expected[::-1]
    # The next page keeps the filters and starts after the last entry shown.
    first = console.get("/console/audit", params={"action": "event.ingested", "limit": "25", "order": "oldest"})
    href = following(first)
    assert href is not None and "action=event.ingested" in href and f"after={listed(first)[-1]}" in href
    assert listed(console.get(href)) == cli_seqs(cli, {"action": "event.ingested"})[25:50]


def test_details_are_text_and_hostile_values_are_escaped(site: tuple[CliSite, Runtime, Console, str]) -> None:
    _cli, _rt, console, _cutoff = site
    page = console.get("/console/audit", params={"actor": "crm"}).text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert str(escape(HOSTILE_SUBJECT)) in page
    shown = re.findall(r"<code><bdi>(.*?)</bdi></code>", page, re.DOTALL)
    assert [html.unescape(text) for text in shown] == [canonical_json({"amount": "=1+2", "note": HOSTILE_NOTE})]
    held = console.get("/console/audit", params={"actor": FORMULA, "limit": "1", "order": "oldest"}).text
    assert html.unescape(re.findall(r"<code><bdi>(.*?)</bdi></code>", held)[0]) == canonical_json(
        {"n": 7, "reason": REASON})


def test_personal_values_are_shown_per_role_as_the_api_shows_them(make_runtime: Any) -> None:
    rt = make_runtime("")
    with rt.transaction() as tx:
        key = personal.keys(tx.conn, ["p-1"], create=True)["p-1"]
        tx.audit("payee.registered", "payee", "p-1", {"name": personal.seal_with(key, "p-1", "Jane Roe")})
    views = {}
    for role in ("auditor", "operator"):
        console = Console(rt)
        console.sign_in(f"{role}-1", role)  # type: ignore[arg-type]
        page = console.get("/console/audit", params={"action": "payee.registered"}).text
        views[role] = [html.unescape(t) for t in re.findall(r"<code><bdi>(.*?)</bdi></code>", page)]
    assert views == {"auditor": ['{"name":"[sealed]"}'], "operator": ['{"name":"Jane Roe"}']}


def test_the_export_is_the_cli_export_and_is_audited(site: tuple[CliSite, Runtime, Console, str],
                                                    tmp_path: Path) -> None:
    cli, rt, console, cutoff = site
    for filters in [{"action": "payout.*"}, {"until": cutoff}, {"subject": HOSTILE_SUBJECT}]:
        args = [part for name, value in filters.items() for part in (f"--{name}", value)]
        for fmt in ("jsonl", "csv"):
            answer = console.get("/console/audit/export", params={"format": fmt, **filters})
            assert answer.status_code == 200
            assert answer.headers["content-disposition"].startswith('attachment; filename="payhub-audit-')
            assert answer.headers["content-disposition"].endswith(f'.{fmt}"')
            target = tmp_path / f"cli.{fmt}"
            cli.ok("audit", "export", "--format", fmt, "-o", str(target), *args)
            assert answer.content == target.read_bytes(), (filters, fmt)
    # Formulas are neutralised in CSV, and every cell restores to the stored text.
    answer = console.get("/console/audit/export", params={"format": "csv", "until": cutoff})
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert list(rows[0]) == list(EXPORT_COLUMNS) and len(rows) == SEEDED + 1
    assert {r["actor"] for r in rows if r["action"] == "payout.held"} == {"'" + FORMULA}
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
    before = [e for e in stored(rt) if e["seq"] <= SEEDED + 1]
    assert [{k: restore_cell(v) for k, v in r.items()} for r in rows] == [
        {k: str(v) for k, v in e.items()} for e in before]
    # The request and the end of its stream are recorded, naming the token, the filters and the rows sent.
    [*_, record] = [e for e in stored(rt) if e["action"] == "api.export"]
    assert (record["actor"], record["subject_id"], record["outcome"]) == ("token:ann", "/console/audit/export", "ok")
    assert json.loads(record["detail"]) == {"format": "csv", "filters": {"until": cutoff}, "rows": SEEDED + 1,
                                            "complete": True}
    requests = [e for e in stored(rt) if e["action"] == "api.request" and e["subject_id"] == "/console/audit/export"]
    assert len(requests) == 7 and json.loads(requests[-1]["detail"])["query"] == {"format": "csv", "until": cutoff}


BAD = [
    ("/console/audit?limit=99999999999999999999999", "limit: a whole number from 1 to 1000"),
    ("/console/audit?limit=ten", "limit: a whole number"),
    ("/console/audit?limit=0", "limit: a whole number"),
    ("/console/audit?after=-1&order=oldest", "after: a whole number"),
    ("/console/audit?before=1e5", "before: a whole number"),
    ("/console/audit?after=5", "after goes with the oldest-first order"),
    ("/console/audit?since=yesterday", "since: timestamp"),
    ("/console/audit?until=2026-01-31T00:00:00", "until:"),
    ("/console/audit?order=random", "order: one of newest, oldest"),
    ("/console/audit?actor=ann%E2%80%8B", "actor:"),
    ("/console/audit?actor=" + "a" * 201, "actor: at most 200 characters"),
    ("/console/audit?subject=" + "s" * 5000, "subject: at most 700 characters"),
    ("/console/audit?action=payout.%00", "action: contains a NUL character"),
    ("/console/audit?acter=ann", "unknown parameter 'acter'"),
    ("/console/audit?subject=payout:1%1B[2J", "subject: contains a control character (U+001B)"),
    ("/console/audit?actor=a&actor=b", "actor: given more than once"),
    ("/console/audit/export?format=xlsx", "format: one of csv, jsonl"),
    ("/console/audit/export?format=csv&since=31/01/2026", "since:"),
    ("/console/audit/export?format=csv&limit=5", "unknown parameter 'limit'"),
    ("/console/audit/verify?run=2", "run: 1 runs the verification"),
    ("/console/audit/verify?run=1&expect_head=%3Cscript%3E", "expect_head: a head hash"),
]


@pytest.mark.parametrize(("path", "message"), BAD)
def test_bad_parameters_get_a_message_page(make_runtime: Any, path: str, message: str) -> None:
    rt = make_runtime("")
    console = Console(rt)
    console.sign_in("ann", "auditor")
    answer = console.get(path)
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("text/html")
    assert "content-disposition" not in answer.headers
    assert message in html.unescape(answer.text)
    assert '<p class="notice error" role="alert">' in answer.text
    with rt.engine.connect() as conn:
        last = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc())).first()
    assert last is not None and last.outcome == "refused" and message.split(":")[0] in json.loads(last.detail)["reason"]


def test_verify_says_ok_then_names_the_entry_changed_behind_payhubs_back(make_runtime: Any) -> None:
    rt = make_runtime("")
    console = Console(rt)
    console.sign_in("ann", "auditor")
    first = console.get("/console/audit/verify")
    assert first.status_code == 200 and "The audit log records no verification yet." in first.text
    assert '<input type="hidden" name="run" value="1">' in first.text and "Run verification</button>" in first.text
    with rt.engine.connect() as conn:
        count = len(conn.execute(select(audit_log.c.seq)).all())
    ok = console.get("/console/audit/verify?run=1")
    assert ok.status_code == 200
    assert re.search(rf"<strong>OK</strong>: {count} entries verified in \d+\.\d\d s; head entry {count}\.", ok.text)
    recorded = json.loads(stored(rt)[-1]["detail"])
    assert (recorded["ok"], recorded["checked"], recorded["first_bad"]) == (True, count, None)
    assert isinstance(recorded["seconds"], float) and recorded["seconds"] >= 0
    # Without run=1 the page shows that last result, read from the audit log.
    shown = console.get("/console/audit/verify").text
    assert "Last verification" in shown and '<span class="ok">OK</span>' in shown
    assert f"<dt>Entries that fit</dt><dd>{count}</dd>" in shown
    # An entry's detail changed in the database: the chain breaks at it.
    with rt.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(detail='{"status":200,"method":"GET"}'))
    bad = console.get("/console/audit/verify?run=1")
    assert bad.status_code == 200 and "<strong>FAILED</strong>" in bad.text
    assert re.search(r'Entry <a href="/console/audit\?order=oldest&amp;after=2&amp;limit=25">3</a>: <bdi>[^<]+',
                     bad.text)
    assert "<dt>First broken entry</dt><dd>3</dd>" in bad.text
    assert "Previous verification" in bad.text and '<span class="ok">OK</span>' in bad.text
    last = console.get("/console/audit/verify").text
    assert '<span class="error">FAILED</span> at entry 3' in last
    # A head that the chain does not hold is named.
    wrong = console.get("/console/audit/verify", params={"run": "1", "expect_head": "ab" * 32}).text
    assert "does not contain the expected head" in wrong


def test_an_operator_may_read_the_audit_pages_and_no_session_may_not(make_runtime: Any) -> None:
    rt = make_runtime("")
    assert Console(rt).get("/console/audit/export?format=csv").status_code == 303  # to the sign-in page
    console = Console(rt)
    console.sign_in("olga", "operator")
    assert console.get("/console/audit").status_code == 200
    assert console.get("/console/audit/export?format=jsonl").status_code == 200


@pytest.mark.slow  # runs the pipeline, then retention
def test_after_a_retention_cut_the_pages_say_what_is_archived_and_verify_passes(make_runtime: Any, tmp_path: Path,
                                                                                clock: Any) -> None:  # noqa: F811
    site = _site(make_runtime, tmp_path, clock, keyed=True)
    applied(site)
    cut = cut_row(site)
    console = Console(site.rt)
    console.sign_in("ann", "auditor")
    page = console.get("/console/audit", params={"order": "oldest", "limit": "5"})
    assert listed(page)[0] == cut.seq + 1
    assert f"entries 1 to {cut.seq} are archived in {cut.archive}" in html.unescape(page.text)
    verified = console.get("/console/audit/verify?run=1").text
    assert "<strong>OK</strong>" in verified and "<dt>Signed checkpoints</dt><dd>0 checked" in verified
    assert f"entries 1 to {cut.seq} are archived in {cut.archive}" in html.unescape(verified)


def test_one_verification_runs_at_a_time_and_a_second_is_told_so(make_runtime: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rt = make_runtime("")
    ann, bob = Console(rt), Console(rt)
    ann.sign_in("ann", "auditor")
    bob.app = ann.app
    bob.sign_in("bob", "auditor")
    inside, go_on = threading.Event(), threading.Event()
    real = routes_reads.verify

    def slow(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        assert go_on.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(routes_reads, "verify", slow)
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(ann.get("/console/audit/verify?run=1")))
    first.start()
    try:
        assert inside.wait(30)
        busy = bob.get("/console/audit/verify?run=1")
    finally:
        go_on.set()
        first.join(30)
    assert busy.status_code == 409 and busy.headers["retry-after"] == "10"
    assert "A verification is running already (started by token:ann at " in html.unescape(busy.text)
    assert "<strong>OK</strong>" not in busy.text
    assert answers[0].status_code == 200 and "<strong>OK</strong>" in answers[0].text
    again = bob.get("/console/audit/verify?run=1")  # the first one has finished: the lock is free again
    assert again.status_code == 200 and "<strong>OK</strong>" in again.text
    with rt.engine.connect() as conn:  # entries in the order the answers started: the refused one first
        entries = [(row.actor, row.outcome, json.loads(row.detail)) for row in conn.execute(select(audit_log).where(
            audit_log.c.subject_id == "/console/audit/verify").order_by(audit_log.c.seq))]
    assert [(actor, outcome) for actor, outcome, _detail in entries] == [
        ("token:bob", "refused"), ("token:ann", "ok"), ("token:bob", "ok")]
    assert entries[0][2]["status"] == 409 and "running already" in entries[0][2]["reason"]


def test_audit_pages_read_the_checkpoint_files_again_only_when_they_change(make_runtime: Any, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rt = make_runtime("")
    console = Console(rt)
    console.sign_in("ann", "auditor")
    directory = tmp_path / "audit-checkpoints"
    directory.mkdir()
    checkpoint_file = directory / "checkpoints-2026-01-01.jsonl"
    checkpoint_file.write_text("{}\n")
    reads: list[Path] = []
    real = checkpoints.read_cuts

    def counted(where: Path) -> list[Cut]:
        reads.append(where)
        return real(where)

    monkeypatch.setattr(checkpoints, "read_cuts", counted)
    monkeypatch.setattr(routes_audit, "read_cut", lambda conn: Cut(7, "h" * 64, "2026-01-01T00:00:00.000000Z",
                                                                    "audit-1.jsonl", "a" * 64, "k", "s"))
    for _ in range(3):
        page = console.get("/console/audit")
        assert page.status_code == 200 and "entries up to 7 are archived" in html.unescape(page.text)
    assert "entries up to 7 are archived" in html.unescape(console.get("/console/audit/verify").text)
    assert reads == [directory]  # four views, one read of the directory
    with checkpoint_file.open("a") as fh:
        fh.write("{}\n")
    console.get("/console/audit")
    assert reads == [directory, directory]


def test_an_error_page_keeps_the_errors_headers(make_runtime: Any) -> None:
    rt = make_runtime("")
    console = Console(rt)
    console.sign_in("ann", "auditor")

    def busy() -> None:
        raise HTTPException(429, "busy <now>", headers={"Retry-After": "7", "WWW-Authenticate": 'Bearer realm="payhub"',
                                                         "Content-Type": "text/plain", "X-Frame-Options": "ALLOW"})

    console.app.add_api_route("/console/busy-test", busy)
    answer = console.get("/console/busy-test")
    assert answer.status_code == 429 and "<h1>Refused</h1>" in answer.text and "busy &lt;now&gt;" in answer.text
    assert answer.headers["retry-after"] == "7" and answer.headers["www-authenticate"] == 'Bearer realm="payhub"'
    assert answer.headers["content-type"].startswith("text/html")  # the page's own, and the console's headers
    assert answer.headers["x-frame-options"] == "DENY"
