"""The shortcuts of the ingest path decide exactly as the full rules do: the plain-record validation, the CSV line
split without the csv module, and the line reader's LF scan."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payhub.api import SourceRecord
from payhub.builtin.file_formats import Limits, csv_records
from payhub.builtin.file_lines import Encoding, LineReader
from payhub.pipeline import ingest

MAX = Decimal(10**9)


def full(record: object, source: str = "crm", max_amount: Decimal = MAX) -> dict[str, Any]:
    """The row of the full validation alone (what :func:`ingest.validate` returned before it had a shortcut)."""
    try:
        return ingest._validate(record, source, max_amount)
    except Exception as exc:  # noqa: BLE001 - as validate does
        return ingest._unreadable(record, source, f"the record cannot be read: {ingest._describe(exc)}")


def plain(record: object) -> dict[str, Any] | None:
    """The row of the shortcut, None where it leaves the record to the full validation (by returning None or by
    raising, as :func:`ingest.validate` takes it)."""
    try:
        return ingest._plain_row(record, "crm", MAX)
    except Exception:  # noqa: BLE001 - as validate does
        return None


def deal(**changes: Any) -> SourceRecord:
    values: dict[str, Any] = {
        "object_type": "Opportunity", "object_id": "006A", "transition": "won", "event_type": "deal_won",
        "occurred_at": "2026-03-01T10:00:00Z", "payee_id": "P1", "amount": "1200.50", "currency": "usd",
        "partner_id": "PT1", "attributes": {"product": "licence", "seats": 3}, "raw": "006A,deal_won,...",
    }
    values.update(changes)
    return SourceRecord(**values)


def test_a_plain_record_takes_the_shortcut_to_the_same_row() -> None:
    record = deal()
    row = plain(record)
    assert row is not None and row == full(record) == ingest.validate(record, "crm", MAX)
    assert row["status"] == "ingested" and row["currency"] == "USD" and row["amount"] == "1200.50"


@pytest.mark.parametrize("changes", [
    {"amount": "+1.5"}, {"amount": "007"}, {"amount": ".5"}, {"amount": "1."}, {"amount": " 2.50 "},
    {"amount": "1." + "0" * 30}, {"amount": "0." + "0" * 18 + "1"}, {"amount": "1e3"}, {"amount": "-0"},
    {"amount": "2000000000"}, {"amount": Decimal("3.10")}, {"amount": 7}, {"amount": None, "currency": "eur"},
    {"amount": "  ", "currency": ""}, {"amount": "1", "currency": "XXX"}, {"amount": "1", "currency": None},
    {"attributes": {"name": "Zoë"}}, {"attributes": {"x": "\ud800"}}, {"attributes": {1: "a"}},
    {"attributes": {"at": datetime(2026, 1, 1, tzinfo=UTC), "d": date(2026, 1, 2), "r": Decimal("1.50")}},
    {"attributes": {"n": "a\x00b"}}, {"raw": "a\x00b"}, {"raw": "x" * 70_000}, {"raw": None}, {"raw": "\ud800"},
    {"object_id": " 006A\u200b "}, {"object_id": "caf\u00e9"}, {"object_id": "a\tb"}, {"object_id": "x" * 201},
    {"transition": "won:2026"}, {"transition": "w" * 101}, {"event_type": " "}, {"event_type": ""},
    {"event_type": "t" * 101}, {"payee_id": 12}, {"payee_id": "\u200b"}, {"partner_id": ""}, {"partner_id": 5},
    {"occurred_at": "2026-03-01"}, {"occurred_at": "2026-03-01T10:00:00"}, {"occurred_at": "9999-12-31T23:00Z"},
    {"occurred_at": datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2)))}, {"occurred_at": date(2026, 1, 1)},
    {"problem": "bad"}, {"problem": ""}, {"object_type": "a:b%c"},
])
def test_unusual_records_decide_as_the_full_validation(changes: dict[str, Any]) -> None:
    record = deal(**changes)
    row = plain(record)
    assert row is None or row == full(record)
    assert ingest.validate(record, "crm", MAX) == full(record)


texts = st.one_of(st.sampled_from(["", " ", "P1", " 006A ", "a:b", "%3A", "Zoë", "\u200b", "a\x00", "\ud800", "usd",
                                   "EUR", "1.50", "-1", "1e2", "0.1234567890123456789", "2026-01-01T00:00:00Z",
                                   "2026-02-30", "9000-01-01T00:00:00Z", "x" * 210]),
                  st.text(max_size=8))
values = st.one_of(texts, st.none(), st.integers(-3, 10**12), st.decimals(allow_nan=True, places=3),
                   st.booleans(), st.floats(allow_nan=False), st.just(datetime(2026, 1, 1, tzinfo=UTC)),
                   st.just(datetime(2026, 1, 1)))
attributes = st.one_of(st.dictionaries(st.text(max_size=4), st.one_of(texts, st.integers(), st.none(),
                                                                      st.decimals(allow_nan=False, places=2)),
                                       max_size=3),
                       st.dictionaries(st.integers(), texts, max_size=2), st.just([]), st.none())


FIELDS = ("object_type", "object_id", "transition", "event_type", "occurred_at", "payee_id", "amount", "currency",
          "partner_id", "attributes", "raw", "problem")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), st.one_of(values, attributes), max_size=3))
def test_the_shortcut_never_decides_otherwise(changes: dict[str, Any]) -> None:
    """A few fields of a plain record changed to anything: the shortcut gives the full validation's row, or none."""
    record = deal(**changes)
    row = plain(record)
    assert row is None or row == full(record)


cells = st.text(alphabet=st.sampled_from(["a", " ", ",", "\t", "\x00", "\x0b", "\u2028", "\u0085", "é", "'", "\\"]),
                max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(cells, min_size=1, max_size=4), min_size=1, max_size=5), st.sampled_from(["\n", "\r\n"]))
def test_a_csv_line_without_quotes_splits_as_the_csv_module_reads_it(rows: list[list[str]], ending: str) -> None:
    lines = [",".join(row) for row in rows]
    data = ending.join(lines).encode() + ending.encode()
    reader = LineReader(io.BytesIO(data), Encoding("utf-8", 1, 0), 0, 1, len(data), 1 << 20, settled=True)
    parsed = [p for p in csv_records(reader, Encoding("utf-8", 1, 0), Limits(1 << 16, 1 << 20)) if not p.blank]
    expected = [next(csv.reader([line], strict=True)) for line in lines if line.strip()]
    assert [p.values for p in parsed] == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab\r", max_size=5), st.sampled_from(["\n", "\r\n", "\r", ""])),
                max_size=8), st.integers(1, 12), st.booleans())
def test_the_line_reader_splits_at_lf_crlf_and_cr_alike(parts: list[tuple[str, str]], limit: int,
                                                         settled: bool) -> None:
    """The LF scan of the common case gives the lines (numbers, extents, contents) the general scan gives."""
    data = "".join(text + end for text, end in parts).encode()

    def lines(fast: bool) -> list[Any]:
        reader = LineReader(io.BytesIO(data), Encoding("utf-8", 1, 0), 0, 1, len(data), limit, settled=settled)
        reader._bytes_lf = fast
        return [(line.number, line.start, line.end, line.data, line.size, line.terminated, line.digest)
                for line in reader] + [reader.incomplete]

    assert lines(True) == lines(False)
