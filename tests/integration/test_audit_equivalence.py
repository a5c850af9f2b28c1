"""The audit writer, verifier and exporter read and write rows at the driver level: the stored bytes and hashes are
exactly those of the straightforward implementation (kept here as the reference), on both databases, for hostile
values, and every kind of tampering is still caught."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, delete, select, text, update
from sqlalchemy.pool import NullPool

import payhub.audit
import payhub.audit_query
import payhub.store.audit
from payhub import clock
from payhub.audit import FIELDS, GENESIS, Entry, canonical_json, entry_hash, read_entries, verify, verify_since
from payhub.audit_query import EXPORT_COLUMNS, AuditFilters, iter_entries, iter_rows, jsonl_line, jsonl_row
from payhub.db.engine import make_engine
from payhub.db.migrate import upgrade
from payhub.db.schema import audit_head, audit_log
from payhub.store.audit import AuditWriter

AT = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
LONG = "détail " * 20_000


def hostile() -> list[Entry]:
    """Entries whose values a careless encoder would change: unicode, escapes, Decimals, datetimes, nesting, size."""
    return [
        Entry("payout.sent", "payout", 1, {"amount": Decimal("10.50"), "neg": Decimal("-0.00"),
                                            "sci": Decimal("1E+3"), "tiny": Decimal("0.000000001")}),
        Entry("reward.calculated", "reward", "r-ü-𝄞", {"payee": "Zoë 🚀 ‮rtl‬ e\u0301", "sep": "\u2028\u2029",
                                                       "ctl": "nul\x00 tab\t nl\n bell\x07 del\x7f",
                                                       "quote": '"\\/</script>'}),
        Entry("event.ingested", "event", 2**62, {"when": datetime(2026, 1, 31, 9, 0, tzinfo=UTC),
                                                  "local": datetime(2026, 1, 31, 9, 0,
                                                                    tzinfo=timezone(timedelta(hours=-5))),
                                                  "nested": {"z": [1, {"b": [None, True, False, 1.5, -2]}],
                                                             "a": {"ü": {"é": ["x"]}}}}),
        Entry("audit.export", "audit_log", "audit_log", {"long": LONG, "n": 12345678901234567890}, outcome="incomplete",
              actor="cli:Ærøskøbing ☃"),
        Entry("payout.held", "payout", "=HYPERLINK(\"x\")", {}),
        Entry("payout.held", "payout", "", {"": "", "k": ""}, outcome="held"),
    ]


def reference_rows(entries: list[Entry], seq: int, prev: str, at: str, actor: str, origin: str
                   ) -> list[tuple[Any, ...]]:
    """The rows the writer must store, computed the straightforward way: ``str`` of each field, ``<len>:<text>;``."""
    rows = []
    for entry in entries:
        seq += 1
        fields = [seq, at, entry.actor or actor, entry.action, entry.subject_type, str(entry.subject_id),
                  entry.outcome, origin, json.dumps(entry.detail, sort_keys=True, separators=(",", ":"),
                                                    ensure_ascii=False, default=_default) if entry.detail else "{}",
                  prev]
        prev = hashlib.sha256("".join(f"{len(t)}:{t};" for t in map(str, fields)).encode()).hexdigest()
        rows.append((*fields, prev))
    return rows


def _default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


def reference_verify(rows: list[tuple[Any, ...]]) -> int | None:
    """The first seq whose link or hash does not fit, recomputed the straightforward way; None when all fit."""
    prev = GENESIS
    for row in rows:
        payload = "".join(f"{len(t)}:{t};" for t in map(str, row[:10]))
        if row[9] != prev or hashlib.sha256(payload.encode()).hexdigest() != row[10]:
            return int(row[0])
        prev = row[10]
    return None


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def frozen() -> Iterator[None]:
    saved = clock.source
    clock.source = lambda: AT
    yield
    clock.source = saved


def stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*[audit_log.c[c] for c in (*FIELDS, "hash")])
                                               .order_by(audit_log.c.seq))]


def write(engine: Engine, batches: int = 2) -> list[tuple[Any, ...]]:
    writer = AuditWriter(actor="payhub", origin="test@hôst:1")
    expected: list[tuple[Any, ...]] = []
    for _ in range(batches):
        with engine.begin() as conn:
            rows = writer.append(conn, hostile())
        prev = expected[-1][10] if expected else GENESIS
        want = reference_rows(hostile(), len(expected), prev, "2026-03-01T12:30:45.123456Z", "payhub", "test@hôst:1")
        assert [tuple(r[c] for c in (*FIELDS, "hash")) for r in rows] == want  # what the hooks see
        expected += want
    return expected


def test_writer_stores_the_reference_bytes_and_hashes(engine: Engine, frozen: None) -> None:
    expected = write(engine)
    assert stored(engine) == expected
    assert reference_verify(expected) is None
    assert LONG in expected[3][8] and "\\u0000" in expected[1][8] and "1E+3" in expected[0][8]
    with engine.connect() as conn:
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
        result = verify(conn, watch={3, 12})
        assert (tuple(head), conn.execute(text("SELECT count(*) FROM audit_log")).scalar()) == \
            ((12, expected[-1][10]), 12)
        assert verify_since(conn, 3, expected[2][10], 12) is None
        assert verify_since(conn, 3, "0" * 64, 12) is not None
    assert result.ok and result.checked == 12 and result.hashes == {3: expected[2][10], 12: expected[11][10]}


def test_read_entries_gives_the_stored_text_in_chunks(engine: Engine, frozen: None) -> None:
    expected = write(engine)
    with engine.connect() as conn:
        chunks = list(read_entries(conn, chunk=5))
        assert [len(c) for c in chunks] == [5, 5, 2]
        assert [tuple(r) for c in chunks for r in c] == expected
        assert [tuple(r) for c in read_entries(conn, first=4, last=6) for r in c] == expected[3:6]


def test_export_lines_match_the_entry_by_entry_format(engine: Engine, frozen: None) -> None:
    write(engine)
    with engine.connect() as conn:
        slow = "".join(jsonl_line(e) for e in iter_entries(conn, AuditFilters()))
    with engine.connect() as conn:
        fast = "".join(jsonl_row(row) for rows in iter_rows(conn, AuditFilters()) for row in rows)
    assert fast == slow
    lines = fast.split("\n")[:-1]  # U+2028 stays raw in a line (not a line break for JSON Lines)
    assert len(lines) == 12
    for line, row in zip(lines, stored(engine), strict=True):  # the chain recomputes from the file
        entry = json.loads(line)
        assert canonical_json(entry["detail"]) == row[8] and entry["hash"] == row[10]
    filters = AuditFilters(action="payout.*", subject="payout:=HYPERLINK(\"x\")")
    with engine.connect() as conn:
        slow = [jsonl_line(e) for e in iter_entries(conn, filters, after=2, limit=5)]
    with engine.connect() as conn:
        fast_rows = [r for rows in iter_rows(conn, filters, after=2, limit=5) for r in rows]
    assert "".join(map(jsonl_row, fast_rows)) == "".join(slow) and len(slow) == 2


def test_the_writer_verify_and_entry_hash_share_one_payload_rule(engine: Engine, frozen: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed payload rule (here a tagged hash) changes what the writer stores and what verify and entry_hash
    accept alike: there is one definition of it."""
    real = payhub.audit.hash_fields
    calls: list[tuple[Any, ...]] = []

    def tagged(values: Any) -> str:
        calls.append(tuple(values))
        return hashlib.sha256(b"v2" + real(values).encode()).hexdigest()

    def tagged_rows(rows: Any) -> list[str]:  # the same rule for a chunk of rows
        return [tagged(row) for row in rows]

    monkeypatch.setattr(payhub.audit, "hash_fields", tagged)
    monkeypatch.setattr(payhub.audit, "hash_rows", tagged_rows)
    monkeypatch.setattr(payhub.store.audit, "hash_fields", tagged)
    with engine.begin() as conn:
        AuditWriter(actor="payhub", origin="test@hôst:1").append(conn, hostile())
    rows = stored(engine)
    assert [r[10] for r in rows] == [tagged(r[:10]) for r in rows]
    assert all(entry_hash(dict(zip(FIELDS, r, strict=False))) == r[10] for r in rows)
    with engine.connect() as conn:
        assert verify(conn).ok and verify_since(conn, 2, rows[1][10], len(rows)) is None
    assert {len(c) for c in calls} == {10, 11}  # the writer's fields; verify's rows, read with their hash
    monkeypatch.undo()
    with engine.connect() as conn:
        assert verify(conn).first_bad == 1  # the standard rule rejects the tagged chain


def test_a_json_line_from_a_row_or_a_dict_is_json_dumps_of_the_entry() -> None:
    detail = canonical_json({"n": 12345678901234567890, "f": 1.5, "nested": {"ü": ["\u2028", None, True]}})
    row = (7, "2026-01-02T03:04:05.000006Z", "=HYPERLINK(\"x\")", "payout.held", "payee", "-2+3", "held",
           "cli@hôst:1", detail, GENESIS, "f" * 64)
    cases = [row, (*row[:8], "{not json", *row[9:]), (*row[:8], "NaN", *row[9:]), (*row[:8], '"text"', *row[9:]),
             (*row[:8], "[1, 2]", *row[9:]), ("7", *row[1:]), (True, *row[1:]), (*row[:5], 12, *row[6:]),
             (*row[:7], None, *row[8:])]
    for case in cases:
        expected = dict(zip(EXPORT_COLUMNS, case, strict=True))
        with contextlib.suppress(ValueError):
            expected["detail"] = json.loads(case[8])
        line = json.dumps(expected, ensure_ascii=False) + "\n"
        assert jsonl_row(case) == line
        assert jsonl_line(dict(zip(EXPORT_COLUMNS, case, strict=True))) == line


def test_the_export_uses_the_public_json_api() -> None:
    source = Path(payhub.audit_query.__file__).read_text(encoding="utf-8")
    assert "import _json" not in source and "from _json" not in source and "make_encoder" not in source


TAMPER = [
    ("at", "2026-03-01T12:30:45.123457Z"), ("actor", "payhub "), ("action", "payout.paid"),
    ("subject_type", "payout"), ("subject_id", "r-u-𝄞"), ("outcome", "ok "), ("origin", "test@host:1"),
    ("detail", '{"payee":"Zoe"}'), ("hash", "f" * 64),
]


@pytest.mark.parametrize(("column", "value"), TAMPER, ids=[c for c, _ in TAMPER])
def test_every_edited_column_is_caught(engine: Engine, frozen: None, column: str, value: str) -> None:
    write(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 8).values({column: value}))
    with engine.connect() as conn:
        result = verify(conn)
    assert reference_verify(stored(engine)) == 8
    assert not result.ok
    if column == "hash":  # the entry no longer matches its stored hash
        assert result.first_bad == 8 and "altered" in (result.problem or "")
    else:
        assert (result.first_bad, "altered" in (result.problem or "")) == (8, True)


def test_deleted_inserted_and_swapped_entries_are_caught(engine: Engine, frozen: None) -> None:
    expected = write(engine)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
    with engine.connect() as conn:
        result = verify(conn)
    assert (result.ok, result.first_bad, result.checked) == (False, 5, 4) and "missing" in (result.problem or "")
    with engine.begin() as conn:  # the entry back, but entries 6 and 7 exchange their contents
        conn.execute(audit_log.insert().values(dict(zip((*FIELDS, "hash"), expected[4], strict=True))))
        for seq, row in ((6, expected[6]), (7, expected[5])):
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(
                dict(zip((*FIELDS[1:], "hash"), row[1:], strict=True))))
    with engine.connect() as conn:
        result = verify(conn)
    assert (result.ok, result.first_bad) == (False, 6) and "does not link" in (result.problem or "")


def test_a_non_text_value_with_the_same_bytes_is_caught_on_sqlite(engine: Engine, frozen: None) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("only SQLite stores a BLOB in a text column")
    write(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET detail = CAST(detail AS BLOB) WHERE seq = 2")
    with engine.connect() as conn:
        result = verify(conn)
        assert type(next(read_entries(conn, first=2, last=2))[0][8]) is bytes
    assert (result.ok, result.first_bad) == (False, 2) and "altered" in (result.problem or "")


def test_verify_reads_on_after_a_failure_for_the_ids_the_chain_names(engine: Engine, frozen: None) -> None:
    write(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(actor="x"))
    tops = {"payout": 0, "reward": 0, "event": 0}
    with engine.connect() as conn:
        result = verify(conn, top_ids=tops)
    assert (result.ok, result.first_bad) == (False, 1)
    assert tops == {"payout": 1, "reward": 0, "event": 0}  # 2**62 has 19 digits: not an id of a row


# ------------------------------------------------------------------------------------------------- worker processes


def _tamper_cases() -> list[tuple[str, list[str]]]:
    """(name, statements) applied to a log of 24 entries checked in ranges of 5 (1-5, 6-10, ...): damage at the
    edges of ranges, inside them, before the first and past the head."""
    move = "UPDATE audit_log SET seq = {to} WHERE seq = {seq}"
    return [
        ("untouched", []),
        ("edited last of a range", ["UPDATE audit_log SET actor = 'x' WHERE seq = 5"]),
        ("edited first of a range", ["UPDATE audit_log SET actor = 'x' WHERE seq = 6"]),
        ("edited in two ranges", ["UPDATE audit_log SET actor = 'x' WHERE seq IN (13, 8)"]),
        ("hash of a range's first", ["UPDATE audit_log SET hash = 'f' WHERE seq = 11"]),
        ("deleted first of a range", ["DELETE FROM audit_log WHERE seq = 6"]),
        ("deleted last of a range", ["DELETE FROM audit_log WHERE seq = 10"]),
        ("deleted a whole range", ["DELETE FROM audit_log WHERE seq BETWEEN 11 AND 15"]),
        ("deleted the last", ["DELETE FROM audit_log WHERE seq = 24"]),
        ("deleted the first", ["DELETE FROM audit_log WHERE seq = 1"]),
        ("swapped across an edge", [move.format(seq=5, to=-5), move.format(seq=6, to=5), move.format(seq=-5, to=6)]),
        ("before the first", ["INSERT INTO audit_log SELECT 0, at, actor, action, subject_type, subject_id, outcome, "
                              "origin, detail, prev_hash, hash FROM audit_log WHERE seq = 1"]),
        ("past the head", ["INSERT INTO audit_log SELECT 25, at, actor, action, subject_type, subject_id, outcome, "
                           "origin, detail, hash, hash FROM audit_log WHERE seq = 24"]),
        ("head moved back", ["UPDATE audit_head SET seq = 20"]),
        ("head hash", ["UPDATE audit_head SET hash = '" + "e" * 64 + "'"]),
    ]


@pytest.mark.parametrize("case", _tamper_cases(), ids=[name for name, _ in _tamper_cases()])
def test_worker_processes_find_and_name_what_one_process_does(engine: Engine, frozen: None,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              case: tuple[str, list[str]]) -> None:
    write(engine, batches=4)
    for statement in case[1]:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    monkeypatch.setattr(payhub.audit, "PARALLEL_MIN", 1)
    monkeypatch.setattr(payhub.audit, "RANGE", 5)
    results = []
    for parallel in (False, True):
        tops = {"payout": 0, "reward": 0, "event": 0}
        read: list[int] = []
        with engine.connect() as conn:
            workers = payhub.audit.Workers.start(engine, 24, processes=2) if parallel else None
            assert (workers is not None) == parallel
            try:
                result = verify(conn, read.append, watch={1, 5, 6, 12, 24}, top_ids=tops, workers=workers)
            finally:
                if workers is not None:
                    workers.close()
        results.append((result, tops, sum(read)))
    assert results[0] == results[1]
    assert results[0][0].ok == (case[0] == "untouched")


def test_worker_processes_start_the_chain_at_a_retention_cut(engine: Engine, frozen: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rows = write(engine, batches=4)
    with engine.begin() as conn:
        conn.execute(payhub.audit.audit_cut.insert().values(
            id=1, seq=7, hash=rows[6][10], at=AT, archive="a.jsonl", archive_sha256="0" * 64, top_payout=0,
            top_reward=0, signature="s", key_id="k"))
    monkeypatch.setattr(payhub.audit, "PARALLEL_MIN", 1)
    monkeypatch.setattr(payhub.audit, "RANGE", 5)

    def both() -> list[payhub.audit.VerifyResult]:
        out = []
        for processes in (None, 2):
            with engine.connect() as conn:
                workers = payhub.audit.Workers.start(engine, 24, processes=processes) if processes else None
                try:
                    out.append(verify(conn, watch={8, 9, 20}, workers=workers))
                finally:
                    if workers is not None:
                        workers.close()
        return out

    kept = both()  # the entries before the cut are still there: the first of them is named
    assert kept[0] == kept[1] and (kept[0].first_bad, kept[0].ok) == (8, False)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq <= 7))
    cut = both()
    assert cut[0] == cut[1] and cut[0].ok and (cut[0].first, cut[0].checked) == (8, 17)
    assert cut[0].hashes == {8: rows[7][10], 9: rows[8][10], 20: rows[19][10]}


def test_hash_rows_is_hash_fields_for_each_row(engine: Engine, frozen: None) -> None:
    rows = write(engine, batches=1)
    assert payhub.audit.hash_rows(rows) == [payhub.audit.hash_fields(row) for row in rows] == [r[10] for r in rows]
    assert payhub.audit.hash_rows([(*rows[0][:8], b"{}", *rows[0][9:])]) is None  # not text: row by row
    assert payhub.audit.hash_rows([(rows[0][0], 5, *rows[0][2:])]) is None


def test_small_logs_and_memory_databases_get_no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payhub.audit, "PARALLEL_MIN", 100)
    file_engine = make_engine("sqlite:////nonexistent/x.db")
    assert payhub.audit.Workers.start(file_engine, 99, processes=2) is None
    assert payhub.audit.Workers.start(file_engine, 100, processes=1) is None
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        assert payhub.audit.Workers.start(create_engine(url, poolclass=NullPool), 10**6, processes=2) is None
