"""The file source's cursor around bad and unfinished records, and a hostile file ingested on SQLite and PostgreSQL.

The cursor is the byte offset after the last complete record (plus its line number): a bad record is passed on
once and never read again, a record still being written is waited for, and line numbers stay right across polls.
"""

from __future__ import annotations

import codecs
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from payhub.api import SourceRecord
from payhub.builtin.file_source import FileSource, FileSourceSettings
from payhub.db.schema import audit_log, events, sources
from payhub.pipeline.ingest import poll

HEADER = "id,type,occurred_at,payee_id,amount,currency,product\n"


def csv_line(n: int, product: str = "widget", when: str = "2026-10-01") -> str:
    return f"D-{n},deal_won,{when},p1,10.00,USD,{product}\n"


def json_line(n: int, **extra: Any) -> str:
    record = {"id": f"D-{n}", "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1", "amount": "10.00",
              "currency": "USD", **extra}
    return json.dumps(record) + "\n"


def age(path: Path, seconds: float = 120) -> None:
    """Make ``path`` look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def append(path: Path, data: str | bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


class Reader:
    """A file source and its cursor, polled like the core does."""

    def __init__(self, path: Path, **settings: Any) -> None:
        self.path = path
        self.source = FileSource("deals", FileSourceSettings.model_validate({"path": str(path), **settings}))
        self.cursor: str | None = None
        self.batches: list[int] = []

    def poll(self, limit: int = 1000) -> list[SourceRecord]:
        records: list[SourceRecord] = []
        while True:
            result = self.source.fetch(self.cursor, limit)
            self.batches.append(len(result.records))
            records.extend(result.records)
            self.cursor = result.cursor
            if not result.more:
                return records

    @property
    def offset(self) -> int:
        assert self.cursor is not None
        return int(json.loads(self.cursor)["offset"])


def seen(records: list[SourceRecord]) -> list[tuple[str, str | None]]:
    """(id, where the problem is) for each record: ``("D-1", None)``, ``("", "line 4")``."""
    return [(r.object_id, None if r.problem is None else r.problem.split(": ")[0].split(" ", 1)[1]) for r in records]


# ------------------------------------------------------------------------------------------ across polls


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_appended_after_a_bad_record_are_read_once_with_their_line_numbers(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"deals.{fmt}"
    line = csv_line if fmt == "csv" else json_line
    bad = "D-2,deal_won,later,p1,1.00,USD,w\n" if fmt == "csv" else '{"id": "D-2", "type": \n'
    path.write_text((HEADER if fmt == "csv" else "") + line(1) + bad)
    reader = Reader(path, settle_seconds=0)
    first = 2 if fmt == "csv" else 1
    assert seen(reader.poll()) == [("D-1", None), ("D-2" if fmt == "csv" else "", f"line {first + 1}")]
    assert reader.poll() == []  # the bad record is not passed again
    append(path, line(3) + "\n" + bad.replace("D-2", "D-4") + line(5))
    assert seen(reader.poll()) == [("D-3", None), ("D-4" if fmt == "csv" else "", f"line {first + 4}"),
                                   ("D-5", None)]
    assert reader.offset == path.stat().st_size
    assert reader.poll() == []


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_a_half_written_last_line_waits_for_its_end_in_every_line_ending(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "deals.jsonl"
    path.write_text(json_line(1).replace("\n", ending) + json_line(2)[:20])
    reader = Reader(path, settle_seconds=30)
    assert seen(reader.poll()) == [("D-1", None)]
    append(path, json_line(2)[20:].replace("\n", ending))
    records = reader.poll()
    if ending == "\r":  # a CR at the very end may be half of a CRLF: read once the file settles
        assert records == []
        age(path)
        records = reader.poll()
    assert seen(records) == [("D-2", None)]
    append(path, "{broken" + ending + json_line(4).replace("\n", ending))
    age(path)
    assert seen(reader.poll()) == [("", "line 3"), ("D-4", None)]
    assert reader.offset == path.stat().st_size


def test_a_crlf_split_between_two_polls_counts_as_one_line_end(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(HEADER.replace("\n", "\r\n") + csv_line(1).replace("\n", "\r"))
    reader = Reader(path, settle_seconds=30)
    assert reader.poll() == []  # D-1 ends with CR at the end of the file: the LF may follow
    append(path, "\n" + csv_line(2, when="x").replace("\n", "\r\n"))
    assert seen(reader.poll()) == [("D-1", None), ("D-2", "line 3")]


def test_a_settled_line_without_line_break_is_read_once_and_numbering_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(HEADER + csv_line(1).rstrip("\n"))
    reader = Reader(path, settle_seconds=30)
    assert reader.poll() == []
    age(path)
    assert seen(reader.poll()) == [("D-1", None)]
    append(path, "\r\n" + csv_line(2, when="x") + csv_line(3))  # the writer goes on: its line break ends D-1
    assert seen(reader.poll()) == [("D-2", "line 3"), ("D-3", None)]


def test_a_multi_line_csv_record_being_written_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(HEADER + csv_line(1) + 'D-2,deal_won,2026-10-01,p1,10.00,USD,"first line\n')
    reader = Reader(path, settle_seconds=30)
    assert seen(reader.poll()) == [("D-1", None)]
    append(path, "second line\n")
    assert reader.poll() == []
    append(path, 'third"\n' + csv_line(3, when="x"))
    records = reader.poll()
    assert seen(records) == [("D-2", None), ("D-3", "line 6")]
    assert records[0].attributes["product"] == "first line\nsecond line\nthird"


def test_an_open_quote_in_a_settled_file_is_skipped_and_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(HEADER + csv_line(1) + csv_line(2, '"open') + csv_line(3))
    reader = Reader(path, settle_seconds=30)
    assert seen(reader.poll()) == [("D-1", None)]  # D-2 may still be being written
    age(path)
    assert seen(reader.poll()) == [("", "line 3"), ("D-3", None)]
    append(path, csv_line(4) + csv_line(5, '"closes nothing"'))
    assert seen(reader.poll()) == [("D-4", None), ("D-5", None)]


def test_an_oversize_line_being_written_waits_then_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "deals.jsonl"
    path.write_text(json_line(1) + '{"id": "D-2", "note": "' + "x" * 5000)
    reader = Reader(path, settle_seconds=30, max_record_bytes=1024)
    assert seen(reader.poll()) == [("D-1", None)]
    append(path, "y" * 5000)
    assert reader.poll() == []
    append(path, '"}\n' + json_line(3))
    records = reader.poll()
    assert seen(records) == [("", "line 2"), ("D-3", None)]
    assert records[0].problem == "deals.jsonl line 2: record of 10025 bytes exceeds max_record_bytes (1024)"


def test_bad_records_across_batch_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    rows = [csv_line(n) if n % 3 else csv_line(n, when="bad") for n in range(1, 12)]
    path.write_text(HEADER + "".join(rows))
    reader = Reader(path, settle_seconds=0)
    records = reader.poll(limit=2)
    assert reader.batches == [2, 2, 2, 2, 2, 1]
    assert seen(records) == [(f"D-{n}", None if n % 3 else f"line {n + 1}") for n in range(1, 12)]


def test_a_cursor_without_line_number_counts_the_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text("\n" + HEADER + csv_line(1, '"a\nb"') + csv_line(2))
    inode = path.stat().st_ino
    reader = Reader(path, settle_seconds=0)
    reader.poll()
    state = json.loads(reader.cursor or "{}")
    reader.cursor = json.dumps({"inode": inode, "offset": state["offset"], "check": state["check"]})  # older cursor
    append(path, csv_line(3, when="never"))
    assert seen(reader.poll()) == [("D-3", "line 6")]


def test_a_file_rewritten_in_another_encoding_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_bytes((HEADER + csv_line(1, "Café")).encode("latin-1"))
    reader = Reader(path, settle_seconds=0, encoding="latin-1")
    assert seen(reader.poll()) == [("D-1", None)]
    with path.open("r+b") as fh:  # same inode, new content: an export tool that rewrites in place
        fh.truncate(0)
        fh.write(codecs.BOM_UTF16_LE + (HEADER + csv_line(1, "Café") + csv_line(2, "Ü")).encode("utf-16-le"))
    records = reader.poll()
    assert seen(records) == [("D-1", None), ("D-2", None)]
    assert [r.attributes["product"] for r in records] == ["Café", "Ü"]
    assert reader.offset == path.stat().st_size


# --------------------------------------------------------------------------------------- through ingest

HOSTILE_CSV = (
    HEADER
    + csv_line(1, 'Monitor 27" 4K')
    + csv_line(2, "a\x00b")                                   # NUL
    + csv_line(3)
    + "D-4,deal_won,2026-10-01,p1,10.00,USD,\"never closed\n"  # open quote: skipped, next line read again
    + csv_line(5, '"two\r\nlines"')
    + csv_line(6, "z" * 70_000)                               # over max_field_bytes
    + csv_line(7)
    + "D-8,deal_won,9999-12-31T23:59:59-05:00,p1,10.00,USD,w\n"  # outside the calendar in UTC
    + csv_line(9, "ünïcödé")
    + "D-10,deal_won,2026-10-01,p1,10.00,USD,w,surplus\n"
    + csv_line(11)
)


def _hostile_bytes() -> bytes:
    data = HOSTILE_CSV.encode()
    return data + b"D-12,deal_won,2026-10-01,p1,10.00,USD,\xff\xfe\n" + csv_line(13).encode()


HOSTILE_JSONL = (
    json_line(1, note='say \\"hi\\"')
    + '{"id": "D-2", "type": "deal_won", "note": "\\ud800"}\n'
    + json_line(3)
    + "[" * 100_000 + "\n"
    + json_line(5, note="\\u0000 escaped backslash is fine")
    + '{"id": "D-6", "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1", "amount": NaN}\n'
    + '{"id": "D-7", "ID": "D-7b", "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1"}\n'
    + json_line(8, quantity=3)
    + '{"id": "D-9", "type": "deal_won", "note": "\\u0000"}\n'
    + json_line(10, note="z" * 70_000)
    + json_line(11)
)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_hostile_file_through_ingest(tmp_path: Path, make_runtime: Any, fmt: str) -> None:
    path = tmp_path / f"deals.{fmt}"
    path.write_bytes(_hostile_bytes() if fmt == "csv" else HOSTILE_JSONL.encode())
    rt = make_runtime(f'[sources.deals]\nplugin = "file"\npath = "deals.{fmt}"\nsettle_seconds = 0\n')
    assert poll(rt, "deals") > 0
    with rt.engine.connect() as conn:
        rows = conn.execute(select(events.c.object_id, events.c.status, events.c.reason, events.c.raw)
                            .order_by(events.c.id)).all()
        quarantined_audits = conn.execute(select(audit_log.c.seq).where(audit_log.c.action == "event.quarantined")
                                          ).all()
    ingested = [r.object_id for r in rows if r.status == "ingested"]
    quarantined = [r for r in rows if r.status == "quarantined"]
    if fmt == "csv":
        assert ingested == ["D-1", "D-3", "D-5", "D-7", "D-9", "D-11", "D-13"]
        where = ["line 3", "line 5", "line 8", "line 10", "line 12", "line 14"]
    else:
        assert ingested == ["D-1", "D-3", "D-5", "D-8", "D-11"]
        where = ["line 2", "line 4", "line 6", "line 7", "line 9", "line 10"]
    for row in quarantined:
        assert row.reason and row.raw is not None and "\x00" not in row.raw and len(row.raw) < 1_100_000
    assert [r.reason.split(": ")[0] for r in quarantined] == [f"deals.{fmt} {w}" for w in where]
    assert len(quarantined_audits) == len(quarantined)
    # Polled again and re-read from the start: nothing new, nothing twice.
    assert poll(rt, "deals") == 0
    with rt.engine.begin() as conn:
        conn.execute(sources.update().values(cursor=None))
    assert poll(rt, "deals") == 0


def test_a_quarantined_row_is_corrected_by_a_later_row_with_its_id(tmp_path: Path, make_runtime: Any) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(HEADER + csv_line(1, when="31/10/2026") + csv_line(2))
    rt = make_runtime('[sources.deals]\nplugin = "file"\npath = "deals.csv"\nsettle_seconds = 0\n')
    poll(rt, "deals")
    append(path, csv_line(1))
    poll(rt, "deals")
    with rt.engine.connect() as conn:
        rows = conn.execute(select(events.c.object_id, events.c.status).order_by(events.c.id)).all()
    assert [tuple(r) for r in rows] == [("D-1", "ingested"), ("D-2", "ingested")]
