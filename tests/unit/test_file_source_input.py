"""The file source on hostile and ordinary input: every unreadable record alone, with file, line and reason.

These tests call the source directly (no database): each builds a small file, reads it to the end and checks which
records came out good, which carry a problem (the core quarantines those) and what the problem says.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from payhub.api import SourceRecord, TransientSourceError
from payhub.builtin.file_source import FileSource, FileSourceSettings

HEADER = "id,type,occurred_at,payee_id,amount,currency,product\n"


def csv_line(n: int, product: str = "widget") -> str:
    return f"D-{n},deal_won,2026-10-01,p1,10.00,USD,{product}\n"


def json_line(n: int, **extra: Any) -> str:
    record = {"id": f"D-{n}", "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1", "amount": "10.00",
              "currency": "USD", **extra}
    return json.dumps(record) + "\n"


def source(path: Path, **settings: Any) -> FileSource:
    return FileSource("deals", FileSourceSettings.model_validate({"path": str(path), "settle_seconds": 0,
                                                                  **settings}))


def read_all(src: FileSource, cursor: str | None = None, limit: int = 1000) -> tuple[list[SourceRecord], str | None]:
    """Every record the source has ready after ``cursor``, fetched in batches of ``limit``, and the last cursor."""
    records: list[SourceRecord] = []
    while True:
        result = src.fetch(cursor, limit)
        records.extend(result.records)
        cursor = result.cursor
        if not result.more:
            return records, cursor


def read_file(tmp_path: Path, name: str, content: bytes | str, **settings: Any) -> list[SourceRecord]:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    records, cursor = read_all(source(path, **settings))
    assert cursor is not None and json.loads(cursor)["offset"] == path.stat().st_size  # all of it, exactly
    return records


def good(records: list[SourceRecord]) -> list[str]:
    return [r.object_id for r in records if r.problem is None]


def problems(records: list[SourceRecord]) -> list[str]:
    return [r.problem for r in records if r.problem is not None]


# ------------------------------------------------------------------------------------------ CSV quoting


def test_inch_mark_in_an_unquoted_csv_field_is_a_character(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1, 'Monitor 27" 4K') + csv_line(2, '5\'11" cable')
                        + csv_line(3, '"Quoted, ""really"""') + "".join(csv_line(n) for n in range(4, 9)))
    assert good(records) == [f"D-{n}" for n in range(1, 9)]
    assert [r.attributes["product"] for r in records[:3]] == ['Monitor 27" 4K', '5\'11" cable', 'Quoted, "really"']


def test_a_quote_breaking_a_quoted_csv_field_quarantines_its_line_only(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1) + csv_line(2, '"Monitor 27" 4K"') + csv_line(3))
    assert good(records) == ["D-1", "D-3"]
    assert problems(records) == ["deals.csv line 3: not valid CSV: ',' expected after '\"'"]
    assert records[1].raw == 'D-2,deal_won,2026-10-01,p1,10.00,USD,"Monitor 27" 4K"'


def test_a_quoted_csv_field_that_never_closes_is_skipped_and_reading_resumes(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1) + csv_line(2, '"never closed')
                        + "".join(csv_line(n) for n in range(3, 40)))
    assert good(records) == ["D-1"] + [f"D-{n}" for n in range(3, 40)]
    assert problems(records) == [
        "deals.csv line 3: a quoted field is not closed before the end of the file; the line is skipped and "
        "reading resumes on the next line"]


def test_an_open_quote_is_bounded_by_max_record_bytes(tmp_path: Path) -> None:
    # The open quote would swallow every following row: after max_record_bytes the source gives up on it.
    rows = "".join(csv_line(n) for n in range(3, 200))
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1) + csv_line(2, '"open') + rows
                        + csv_line(200, '"closed, at last"'), max_record_bytes=1024)
    assert good(records) == ["D-1"] + [f"D-{n}" for n in range(3, 201)]
    assert problems(records) == [
        "deals.csv line 3: a quoted field is not closed within max_record_bytes (1024); the line is skipped and "
        "reading resumes on the next line"]


def test_a_quote_closed_on_a_later_row_quarantines_the_broken_start_and_reads_on(tmp_path: Path) -> None:
    # Line 3 opens a quote; the quote of line 5 closes it, then 'x' follows: not CSV. Lines 4 and 5 are read again.
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1) + csv_line(2, '"open') + csv_line(3)
                        + csv_line(4, '"closed"x') + csv_line(5))
    assert good(records) == ["D-1", "D-3", "D-5"]
    assert [p.split(":")[0] for p in problems(records)] == ["deals.csv line 3", "deals.csv line 5"]


def test_quoted_fields_spanning_lines_give_both_line_numbers(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1, '"two\nlines"') + csv_line(2, '"three\n\nlines"')
                        + "D-3,deal_won,yesterday,p1,10.00,USD,\"a\nb\"\n" + csv_line(4))
    assert good(records) == ["D-1", "D-2", "D-4"]
    assert [r.attributes["product"] for r in records if r.problem is None][:2] == ["two\nlines", "three\n\nlines"]
    assert problems(records)[0].startswith("deals.csv lines 7-8: timestamp 'yesterday' is not ISO 8601")


@pytest.mark.parametrize("row,reason", [
    ("D-2,deal_won,2026-10-01,p1,10.00,USD\n", "row has 6 columns, the header has 7"),
    ("D-2,deal_won,2026-10-01,p1,10.00,USD,w,surplus\n", "row has 8 columns, the header has 7"),
    ("D-2,deal_won,2026-10-01,,10.00,USD,w\n", "payee_id is missing"),
    (",deal_won,2026-10-01,p1,10.00,USD,w\n", "id is missing"),
    ("D-2,,2026-10-01,p1,10.00,USD,w\n", "type is missing"),
    ("D-2,deal_won,,p1,10.00,USD,w\n", "occurred_at is missing"),
    ("D-2,deal_won,2026-10-01,p1,1e3,USD,w\n", "amount '1e3' is not a plain decimal number (like 1234.56)"),
    ("D-2,deal_won,2026-10-01,p1,10.00,XYZ,w\n", "unknown currency"),
    ("D-2,deal_won,2026-10-01,p1,10.00,,w\n", "currency is missing"),
    ("D-2,deal_won,2026-13-01,p1,10.00,USD,w\n", "timestamp '2026-13-01' is not ISO 8601"),
    ("D-2,deal_won,2026-10-01,p\x001,10.00,USD,w\n", "field 'payee_id' holds a NUL character"),
])
def test_a_bad_csv_row_is_quarantined_alone_with_file_line_and_reason(tmp_path: Path, row: str, reason: str) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1) + "\n" + row + csv_line(3))
    assert good(records) == ["D-1", "D-3"]
    (problem,) = problems(records)
    assert problem.startswith("deals.csv line 4: ") and reason in problem


def test_a_quarantined_row_keeps_its_identity_so_a_correction_replaces_it(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + "D-2,deal_won,yesterday,p1,10.00,USD,w\n")
    (record,) = records
    assert (record.object_type, record.object_id, record.transition, record.event_type) == (
        "record", "D-2", "deal_won", "deal_won")
    assert record.raw == "D-2,deal_won,yesterday,p1,10.00,USD,w"


@pytest.mark.parametrize(("row", "shown"), [
    ("D-2,deal_won,2026-10-09T10:00:00Z,rep-chloe,twelve,USD,w\n", ("rep-chloe", "2026-10-09T10:00:00+00:00")),
    ("D-2,deal_won,2026-10-09,rep-ben,9000.00,US$,w\n", ("rep-ben", "2026-10-09T00:00:00+00:00")),
    ("D-2,deal_won,yesterday,rep-ben,10.00,USD,w\n", ("rep-ben", None)),
    ("D-2,deal_won,9999-12-31T23:59:59-05:00,rep-ben,10.00,USD,w\n", ("rep-ben", None)),
    ("D-2,deal_won,2026-10-09," + "P" * 201 + ",ten,USD,w\n", (None, "2026-10-09T00:00:00+00:00")),
    ("D-2,deal_won,2026-10-09,,10.00,USD,w\n", (None, "2026-10-09T00:00:00+00:00")),
])
def test_a_quarantined_row_shows_the_payee_and_date_it_could_read(tmp_path: Path, row: str,
                                                                  shown: tuple[str | None, str | None]) -> None:
    (record,) = read_file(tmp_path, "deals.csv", HEADER + row)
    assert record.problem is not None
    when = None if record.occurred_at is None else record.occurred_at.isoformat()
    assert (record.payee_id, when) == shown


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", "\n \n" + HEADER + "\n\n" + csv_line(1) + "   \n\t\n"
                        + "D-2,deal_won,never,p1,10.00,USD,w\n\n")
    assert good(records) == ["D-1"]
    assert problems(records)[0].startswith("deals.csv line 9: ")


def test_unnamed_header_columns(tmp_path: Path) -> None:
    header = "id,type,occurred_at,payee_id,,amount,currency,\n"
    records = read_file(tmp_path, "deals.csv", header + "D-1,deal_won,2026-10-01,p1,,10.00,USD,\n"
                        + "D-2,deal_won,2026-10-01,p1,what is this,10.00,USD,\n"
                        + "D-3,deal_won,2026-10-01,p1,,10.00,USD,\n")
    assert good(records) == ["D-1", "D-3"]
    assert problems(records) == ["deals.csv line 3: column 5 has no name in the header but holds 'what is this'"]


# ------------------------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("header", [
    "id,type,occurred_at,payee_id,amount,currency,amount\n",
    "id,type,occurred_at,payee_id,Amount,currency, AMOUNT \n",
])
def test_a_csv_header_with_a_column_twice_quarantines_every_row_as_ambiguous(tmp_path: Path, header: str) -> None:
    records = read_file(tmp_path, "deals.csv", header + "D-1,deal_won,2026-10-01,p1,10.00,USD,10.00\n"
                        + "D-2,deal_won,2026-10-01,p1,10.00,USD,99999.00\n")
    assert good(records) == []
    assert problems(records) == [
        f"deals.csv line {n}: ambiguous: column 'amount' appears more than once in the header (columns 5 and 7)"
        for n in (2, 3)]
    assert [r.object_id for r in records] == ["D-1", "D-2"]  # keyed by their ids: a fixed file corrects them


def test_a_csv_header_with_the_id_twice_leaves_the_rows_without_identity(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", "id,type,occurred_at,payee_id,ID\nD-1,deal_won,2026-10-01,p1,D-9\n")
    assert [(r.object_id, r.problem) for r in records] == [
        ("", "deals.csv line 2: ambiguous: column 'id' appears more than once in the header (columns 1 and 5)")]


@pytest.mark.parametrize("line,reason", [
    ('{"id": "D-2", "type": "deal_won", "amount": "1.00", "amount": "1000.00"}',
     "ambiguous: key 'amount' appears more than once in an object"),
    ('{"id": "D-2", "type": "deal_won", "Amount": "1.00", " amount": "1000.00"}',
     "ambiguous: keys 'Amount' and ' amount' both mean 'amount'"),
    ('{"id": "D-2", "type": "deal_won", "region": {"code": "DE", "code": "FR"}}',
     "ambiguous: key 'code' appears more than once in an object"),
])
def test_duplicate_json_keys_quarantine_the_record_as_ambiguous(tmp_path: Path, line: str, reason: str) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1) + line + "\n" + json_line(3))
    assert good(records) == ["D-1", "D-3"]
    assert problems(records) == [f"deals.jsonl line 2: {reason}"]


def test_json_keys_in_any_case_and_spacing_name_the_columns(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.jsonl", '{" ID ": "D-1", "TYPE": "deal_won", "Occurred_At": "2026-10-01", '
                        '"payee_id ": "p1", "Region": {"Code": "DE", "code": "de"}}\n')
    assert good(records) == ["D-1"]
    assert records[0].attributes == {"region": {"Code": "DE", "code": "de"}}  # nested keys are kept as written


# ---------------------------------------------------------------------------------------------- JSON Lines


def test_escaped_quotes_in_json_lines_do_not_join_lines(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1, product='Monitor 27" 4K') + json_line(2, note='a "b')
                        + json_line(3, note='\\"') + "".join(json_line(n) for n in range(4, 9)))
    assert good(records) == [f"D-{n}" for n in range(1, 9)]
    assert records[0].attributes["product"] == 'Monitor 27" 4K'


def test_a_json_object_over_several_lines_is_quarantined_line_by_line(tmp_path: Path) -> None:
    pretty = json.dumps(json.loads(json_line(2)), indent=1) + "\n"
    records = read_file(tmp_path, "deals.jsonl", json_line(1) + pretty + json_line(3))
    assert good(records) == ["D-1", "D-3"]
    assert len(problems(records)) == pretty.count("\n")
    assert all(p.startswith(f"deals.jsonl line {n}: invalid JSON") for n, p in enumerate(problems(records), 2))


@pytest.mark.parametrize("line,reason", [
    ('{"id": "D-2", "type": "deal_won", "note": "\\ud800"}', "a string holds a lone surrogate (\\ud800)"),
    ('{"id": "D-2", "type": "deal_won", "n\\udfff": "x"}', "holds a lone surrogate (\\udfff)"),
    ('{"id": "D-2", "type": "deal_won", "note": "a\\u0000b"}', "a string holds a NUL character"),
    ('{"id": "D-2", "type": "deal_won", "n": NaN}', "invalid JSON: NaN is not a finite number"),
    ('{"id": "D-2", "type": "deal_won", "n": -Infinity}', "invalid JSON: -Infinity is not a finite number"),
    ('{"id": "D-2", "type": "deal_won", "n": 1e400}', "invalid JSON: 1e400 is not a finite number"),
    ('{"id": "D-2", "type": "deal_won", "n": ' + "9" * 5000 + "}", "invalid JSON: Exceeds the limit"),
    ('{"id": "D-2", "type": "deal_won", "n": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "invalid JSON: nested more than 64 levels deep"),
    ("[" * 100_000, "invalid JSON: nested more than 64 levels deep"),
    ('{"id": "D-2", "n": ' + "[" * 64 + "]" * 64 + "}", "invalid JSON: nested more than 64 levels deep"),
    ('{"id": "D-2", "type": "deal_won"', "invalid JSON: Expecting ',' delimiter"),
    ('"D-2"', "invalid JSON: not a JSON object"),
    ('{"id": {"x": 1}, "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1"}',
     "id must be a string, not an object"),
    ('{"id": true, "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1"}',
     "id must be a string, not true or false"),
    ('{"id": "D-2", "type": "deal_won", "occurred_at": 20261001, "payee_id": "p1"}',
     "occurred_at must be an ISO 8601 string, not a number"),
    ('{"id": "D-2", "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": ["p1"]}',
     "payee_id must be a string, not an array"),
    ('{"id": "D-2", "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1", "amount": 1.5}',
     "amount is a JSON float; write it as a string to keep it exact"),
])
def test_a_bad_json_line_is_quarantined_alone(tmp_path: Path, line: str, reason: str) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1) + "\n" + line + "\n" + json_line(4))
    assert good(records) == ["D-1", "D-4"]
    (problem,) = problems(records)
    assert problem.startswith("deals.jsonl line 3: ") and reason in problem, problem
    raw = records[1].raw
    assert raw is not None and "\x00" not in raw and len(raw) <= 1024 * 1024


def test_json_nesting_up_to_the_limit_and_surrogate_pairs_are_fine(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1, tree=json.loads("[" * 63 + "]" * 63))
                        + json_line(2, note="\U0001f600 caf\u00e9") + json_line(3, ratio=12.5, big=10 ** 40))
    assert good(records) == ["D-1", "D-2", "D-3"]
    assert records[1].attributes["note"] == "\U0001f600 caf\u00e9"
    assert records[2].attributes == {"ratio": 12.5, "big": 10 ** 40}  # floats are fine outside the amount


# ------------------------------------------------------------------------------------------- line endings


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_line_ending(tmp_path: Path, fmt: str, ending: str) -> None:
    if fmt == "csv":
        lines = [HEADER, csv_line(1, '"two\nlines"'), csv_line(2), "D-3,deal_won,soon,p1,1.00,USD,w\n", csv_line(4)]
    else:
        lines = [json_line(1, product="two\nlines"), json_line(2), json_line(3, occurred_at="soon"), json_line(4)]
    text = "".join(lines).replace("\n", ending) if fmt == "csv" else "".join(lines).replace("\n", ending)
    records = read_file(tmp_path, f"deals.{fmt}", text)
    assert good(records) == ["D-1", "D-2", "D-4"]
    assert records[0].attributes["product"] == "two\nlines"  # a line break in a value is \n in every file
    line = 5 if fmt == "csv" else 3
    assert problems(records)[0].startswith(f"deals.{fmt} line {line}: timestamp 'soon'")


def test_mixed_line_endings_in_one_file(tmp_path: Path) -> None:
    text = HEADER.replace("\n", "\r\n") + csv_line(1).replace("\n", "\r") + csv_line(2) + "\r\n" + csv_line(3)
    text += "D-4,deal_won,never,p1,1.00,USD,w\r"
    records = read_file(tmp_path, "deals.csv", text)
    assert good(records) == ["D-1", "D-2", "D-3"]
    assert problems(records)[0].startswith("deals.csv line 6: ")


def test_a_file_with_no_line_break_at_all_is_one_line(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1).rstrip("\n"))
    assert good(records) == ["D-1"]


# ---------------------------------------------------------------------------------------------- encodings

TEXT = HEADER + csv_line(1, "Café") + csv_line(2, "€ 5") + csv_line(3, "日本語") + csv_line(4, "\U0001f600")


@pytest.mark.parametrize("bom,codec,setting", [
    (b"", "utf-8", None),
    (codecs.BOM_UTF8, "utf-8", None),
    (codecs.BOM_UTF16_LE, "utf-16-le", None),
    (codecs.BOM_UTF16_BE, "utf-16-be", None),
    (codecs.BOM_UTF32_LE, "utf-32-le", None),
    (codecs.BOM_UTF32_BE, "utf-32-be", None),
    (codecs.BOM_UTF16_LE, "utf-16-le", "latin-1"),  # a BOM wins over the setting
    (b"", "utf-16-le", "utf-16-le"),
    (b"", "utf-16-be", "UTF-16BE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
    (b"", "utf-16-le", "utf-16"),  # UTF-16 without a BOM: little-endian
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (b"", "gb18030", "gb18030"),
])
def test_unicode_encodings_by_bom_or_setting(tmp_path: Path, bom: bytes, codec: str, setting: str | None) -> None:
    settings = {"encoding": setting} if setting else {}
    path = tmp_path / "deals.csv"
    path.write_bytes(bom + TEXT.encode(codec))
    src = source(path, **settings)
    records, cursor = read_all(src)
    assert good(records) == ["D-1", "D-2", "D-3", "D-4"]
    assert [r.attributes["product"] for r in records] == ["Café", "€ 5", "日本語", "\U0001f600"]
    assert records[0].raw == csv_line(1, "Café").rstrip("\n")
    # The cursor is an exact byte offset: rows appended in the same encoding are read, once.
    assert cursor is not None and json.loads(cursor)["offset"] == path.stat().st_size
    with path.open("ab") as fh:
        fh.write((csv_line(5, "Straße") + "D-6,deal_won,never,p1,1.00,USD,ü\r\n" + csv_line(7)).encode(codec))
    more, cursor = read_all(src, cursor)
    assert good(more) == ["D-5", "D-7"] and more[0].attributes["product"] == "Straße"
    assert problems(more)[0].startswith("deals.csv line 7: timestamp 'never'")
    assert json.loads(cursor)["offset"] == path.stat().st_size  # type: ignore[arg-type]
    assert read_all(src, cursor)[0] == []


@pytest.mark.parametrize("setting,codec", [("latin-1", "latin-1"), ("cp1252", "cp1252"), ("Shift_JIS", "shift_jis"),
                                           ("iso-8859-15", "iso-8859-15")])
def test_legacy_encodings_by_setting(tmp_path: Path, setting: str, codec: str) -> None:
    product = {"shift_jis": "日本"}.get(codec, "Café ½")
    if codec in ("cp1252", "iso-8859-15"):
        product = "€ Café"
    records = read_file(tmp_path, "deals.csv", (HEADER + csv_line(1, product) + csv_line(2)).encode(codec),
                        encoding=setting)
    assert good(records) == ["D-1", "D-2"]
    assert records[0].attributes["product"] == product


def test_invalid_utf8_quarantines_its_record_with_line_and_byte_offset(tmp_path: Path) -> None:
    head = (HEADER + csv_line(1)).encode()
    bad = b"D-2,deal_won,2026-10-01,p1,10.00,USD,Caf\xe9 cr\xe8me\n"
    records = read_file(tmp_path, "deals.csv", head + bad + csv_line(3).encode() + b"D-4,deal_won\xff\n"
                        + csv_line(5).encode())
    assert good(records) == ["D-1", "D-3", "D-5"]
    offset = len(head) + bad.index(b"\xe9")
    assert problems(records)[0] == (
        f"deals.csv line 3: bytes that are not valid utf-8 at byte offset {offset} (e9: invalid continuation "
        "byte); set the source's encoding if the file is not utf-8")
    assert records[1].raw == "D-2,deal_won,2026-10-01,p1,10.00,USD,Caf\\xe9 cr\\xe8me"  # the bytes, shown
    assert problems(records)[1].startswith("deals.csv line 5: bytes that are not valid utf-8 at byte offset")


def test_invalid_bytes_inside_a_multi_line_csv_record(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", (HEADER + csv_line(1)).encode()
                        + b'D-2,deal_won,2026-10-01,p1,10.00,USD,"one\n\xc3\x28two"\n' + csv_line(3).encode())
    assert good(records) == ["D-1", "D-3"]
    assert problems(records)[0].startswith("deals.csv lines 3-4: bytes that are not valid utf-8 at byte offset")


def test_invalid_utf8_in_json_lines(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1).encode() + b'{"id": "D-2", "note": "\xed\xa0\x80"}\n'
                        + json_line(3).encode())
    assert good(records) == ["D-1", "D-3"]
    # An encoded lone surrogate (ED A0 80) is not UTF-8.
    assert problems(records)[0].startswith(f"deals.jsonl line 2: bytes that are not valid utf-8 at byte offset "
                                           f"{len(json_line(1)) + 23} (ed: invalid continuation byte)")


def test_a_lone_surrogate_in_a_utf16_file(tmp_path: Path) -> None:
    body = (HEADER + csv_line(1)).encode("utf-16-le")
    bad = csv_line(2, "X").encode("utf-16-le").replace("X".encode("utf-16-le"), b"\x00\xd8")
    records = read_file(tmp_path, "deals.csv", codecs.BOM_UTF16_LE + body + bad + csv_line(3).encode("utf-16-le"))
    assert good(records) == ["D-1", "D-3"]
    offset = 2 + len(body) + bad.index(b"\x00\xd8")
    assert problems(records)[0].startswith(f"deals.csv line 3: bytes that are not valid utf-16-le at byte offset "
                                           f"{offset} (00 d8: ")


def test_a_utf16_line_cut_in_the_middle_of_a_code_unit(tmp_path: Path) -> None:
    data = codecs.BOM_UTF16_LE + (HEADER + csv_line(1)).encode("utf-16-le") + csv_line(2).encode("utf-16-le")[:-3]
    records = read_file(tmp_path, "deals.csv", data)
    assert good(records) == ["D-1"]
    assert problems(records)[0].startswith("deals.csv line 3: bytes that are not valid utf-16-le")


def test_utf16_line_ends_only_at_code_unit_boundaries(tmp_path: Path) -> None:
    # U+0A0D and U+0D0A hold the bytes of CR and LF; in UTF-16 they are characters, not line ends.
    records = read_file(tmp_path, "deals.csv", codecs.BOM_UTF16_LE + (HEADER + csv_line(1, "\u0a0d\u0d0a")
                                                                       + csv_line(2)).encode("utf-16-le"))
    assert good(records) == ["D-1", "D-2"]
    assert records[0].attributes["product"] == "\u0a0d\u0d0a"


def test_a_utf16_file_without_bom_read_as_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_bytes((HEADER + csv_line(1)).encode("utf-16-le"))
    with pytest.raises(TransientSourceError, match=r"deals.csv line 1: the header cannot be read: .*NUL.*UTF-16"):
        source(path).fetch(None, 10)
    records, _ = read_all(source(path, encoding="utf-16-le"))
    assert good(records) == ["D-1"]


def test_a_latin1_export_read_as_utf8_quarantines_only_the_rows_with_accents(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", (HEADER + csv_line(1) + csv_line(2, "Café") + csv_line(3))
                        .encode("latin-1"))
    assert good(records) == ["D-1", "D-3"]
    assert "set the source's encoding if the file is not utf-8" in problems(records)[0]
    assert good(read_file(tmp_path, "deals.csv", (HEADER + csv_line(2, "Café")).encode("latin-1"),
                          encoding="latin-1")) == ["D-2"]


@pytest.mark.parametrize("value,message", [
    ("klingon", "unknown encoding 'klingon'"),
    ("hex", "unknown encoding 'hex'"),
    ("base64", "unknown encoding 'base64'"),
    ("utf-7", "cannot be read line by line"),
    ("iso2022_jp", "cannot be read line by line"),
    ("unicode_escape", "cannot be read line by line"),
    ("cp037", "not ASCII-compatible"),
])
def test_the_encoding_setting_must_be_a_readable_codec(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FileSourceSettings.model_validate({"path": str(tmp_path / "x.csv"), "encoding": value})


def test_the_encoding_setting_is_normalised(tmp_path: Path) -> None:
    settings = FileSourceSettings.model_validate({"path": str(tmp_path / "x.csv"), "encoding": "Latin1"})
    assert settings.encoding == "iso8859-1"


# ------------------------------------------------------------------------------------------------- limits


def test_a_200_kb_field_is_quarantined_alone_with_a_bounded_raw(tmp_path: Path) -> None:
    big = "x" * 200_000
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1) + csv_line(2, big) + csv_line(3))
    assert good(records) == ["D-1", "D-3"]
    assert problems(records) == [
        "deals.csv line 3: field 'product' is 200000 bytes, more than max_field_bytes (65536)"]
    raw = records[1].raw
    assert raw is not None and len(raw) < 1200 and raw.startswith("D-2,deal_won,")
    assert "sha256" in raw and "200037 bytes" in raw
    assert records[1].object_id == "D-2"  # the id is fine: kept, so a later correction replaces the record


def test_max_field_bytes_counts_utf8_bytes_and_is_configurable(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + csv_line(1, "é" * 60) + csv_line(2, "é" * 40)
                        + csv_line(3, "e" * 100), max_field_bytes=100)
    assert good(records) == ["D-2", "D-3"]
    assert problems(records) == ["deals.csv line 2: field 'product' is 120 bytes, more than max_field_bytes (100)"]


def test_an_oversize_json_field_or_key(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1, note="y" * 300) + json_line(2, tags=["z" * 50] * 5)
                        + json_line(3, **{"k" * 300: 1}) + json_line(4, note="ok"), max_field_bytes=256)
    assert good(records) == ["D-4"]
    assert problems(records) == [
        "deals.jsonl line 1: field 'note' is 300 bytes, more than max_field_bytes (256)",
        "deals.jsonl line 2: field 'tags' is 270 bytes, more than max_field_bytes (256)",  # nested: as JSON text
        "deals.jsonl line 3: a key is 300 bytes, more than max_field_bytes (256)",
    ]
    assert [r.object_id for r in records] == ["D-1", "D-2", "D-3", "D-4"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_oversize_record_is_quarantined_alone_without_reading_it_whole(tmp_path: Path, fmt: str) -> None:
    big = "w" * 3_000_000  # over the default max_record_bytes (1 MiB), and over max_field_bytes too
    if fmt == "csv":
        text = HEADER + csv_line(1) + csv_line(2, big) + csv_line(3)
    else:
        text = json_line(1) + json_line(2, note=big) + json_line(3)
    records = read_file(tmp_path, f"deals.{fmt}", text)
    assert good(records) == ["D-1", "D-3"]
    line = 3 if fmt == "csv" else 2
    (problem,) = problems(records)
    assert problem.startswith(f"deals.{fmt} line {line}: record of 300")
    assert problem.endswith("exceeds max_record_bytes (1048576)")
    raw = records[1].raw
    assert raw is not None and len(raw) < 1200 and "sha256" in raw
    assert records[1].object_id == ""  # not parsed at all: keyed by its (bounded) raw text


def test_two_oversize_records_that_start_alike_stay_two_records(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.jsonl", json_line(1, note="a" * 2000 + "1") + json_line(1, note="a" * 2000
                                                                                                 + "2"),
                        max_record_bytes=1024)
    assert len(problems(records)) == 2 and records[0].raw != records[1].raw


@pytest.mark.parametrize("settings,key", [
    ({"max_field_bytes": 0}, "max_field_bytes"),
    ({"max_field_bytes": 2 ** 70}, "max_field_bytes"),
    ({"max_record_bytes": 100}, "max_record_bytes"),
    ({"max_record_bytes": 2 ** 40}, "max_record_bytes"),
    ({"settle_seconds": float("inf")}, "settle_seconds"),
    ({"settle_seconds": float("nan")}, "settle_seconds"),
    ({"settle_seconds": -1}, "settle_seconds"),
    ({"object_type": ""}, "object_type"),
])
def test_limit_settings_are_bounded(tmp_path: Path, settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        FileSourceSettings.model_validate({"path": str(tmp_path / "x.csv"), **settings})
    assert [(e["loc"], e["type"]) for e in err.value.errors()] == [((key,), err.value.errors()[0]["type"])]
    assert err.value.errors()[0]["type"] in ("greater_than_equal", "less_than_equal", "finite_number",
                                             "string_too_short")


def test_limit_settings_within_bounds(tmp_path: Path) -> None:
    settings = FileSourceSettings.model_validate({"path": str(tmp_path / "x.csv"), "max_field_bytes": 64,
                                                  "max_record_bytes": 64 * 1024 * 1024, "settle_seconds": 0})
    assert (settings.max_field_bytes, settings.max_record_bytes) == (64, 64 * 1024 * 1024)
    defaults = FileSourceSettings.model_validate({"path": str(tmp_path / "x.csv")})
    assert (defaults.max_field_bytes, defaults.max_record_bytes, defaults.encoding) == (65536, 1048576, "utf-8")


# --------------------------------------------------------------------------------------------- the header


def test_a_header_without_a_required_column_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text("id,kind,occurred_at,payee\nD-1,deal_won,2026-10-01,p1\n")
    with pytest.raises(TransientSourceError, match=r"deals.csv line 1: the header has no 'type', 'payee_id' column"):
        source(path).fetch(None, 10)


def test_a_broken_header_is_a_source_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_bytes(b"\n" + HEADER.encode().replace(b"type", b"typ\xff") + csv_line(1).encode())
    with pytest.raises(TransientSourceError, match=r"line 2: the header cannot be read: bytes that are not valid"):
        source(path).fetch(None, 10)


def test_the_documented_example_is_valid(tmp_path: Path) -> None:
    import re
    import tomllib

    docs = (Path(__file__).resolve().parents[2] / "docs" / "sources" / "file.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```toml\n(.*?)^```", docs, re.MULTILINE | re.DOTALL)
    section = tomllib.loads(re.sub(r"^# ", "", block, flags=re.MULTILINE))["sources"]["crm_export"]  # commented too
    assert section.pop("plugin") == "file"
    settings = FileSourceSettings.model_validate(section, context={"base_dir": tmp_path})
    defaults = FileSourceSettings.model_validate({"path": "x"})
    shown = set(section) - {"path", "format"}  # the format shown is the one the .csv extension gives
    assert {k: getattr(settings, k) for k in shown} == {k: getattr(defaults, k) for k in shown}  # the defaults


def test_a_bad_id_is_not_used_as_the_key_of_a_quarantined_record(tmp_path: Path) -> None:
    records = read_file(tmp_path, "deals.csv", HEADER + "D\x001,deal_won,2026-10-01,p1,10.00,USD,w\n"
                        + "D-2,deal_won,2026-10-01,p1,10.00,USD,a\x00b\n" + f"{'L' * 201},deal_won,x,p1,1,USD,w\n")
    assert [(r.object_id, (r.problem or "")[:30]) for r in records] == [
        ("", "deals.csv line 2: field 'id' h"), ("D-2", "deals.csv line 3: field 'produ"),
        ("", "deals.csv line 4: timestamp 'x")]
    assert records[0].raw == "D\\x001,deal_won,2026-10-01,p1,10.00,USD,w"  # NUL written as an escape


def test_a_file_that_cannot_be_opened_or_read_is_a_passing_source_problem(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deals.csv"
    path.mkdir()
    with pytest.raises(TransientSourceError, match="cannot open .*deals.csv"):
        source(path).fetch(None, 10)
    path.rmdir()
    path.write_text(HEADER + csv_line(1))

    def fail(self: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("payhub.builtin.file_lines.LineReader._read", fail)  # a disk or network share failing
    with pytest.raises(TransientSourceError, match=r"cannot read .*deals.csv: \[Errno 5\] Input/output error"):
        source(path).fetch(None, 10)
