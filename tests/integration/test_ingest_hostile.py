"""No poison record: every hostile value a source can hand over is quarantined alone (or stored correctly), on
SQLite and PostgreSQL alike, with every good record around it stored and the daemon still running."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.db.schema import audit_log, events, rewards
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import MAX_DECIMALS, poll
from payhub.runtime import Runtime
from payhub.worker import Worker

CONFIG = """
    [sources.s]
    plugin = "fake"
    batch_size = 1000
    [programs.flat]
    calculator = "flat"
    amount = "10"
    currency = "EUR"
"""


def deal(object_id: Any, **overrides: Any) -> SourceRecord:
    values: dict[str, Any] = {
        "object_type": "Opportunity", "object_id": object_id, "transition": "won", "event_type": "deal_won",
        "occurred_at": "2026-10-01T12:00:00Z", "payee_id": "p1", "amount": "1000.00", "currency": "EUR",
    }
    values.update(overrides)
    return SourceRecord(**values)


class Explodes:
    """A value whose str() and repr() raise."""

    def __str__(self) -> str:
        raise RuntimeError("str() exploded")

    def __repr__(self) -> str:
        raise RuntimeError("repr() exploded")


class SneakyStr(str):
    """Text whose str() raises: the core must read the characters, not call str()."""

    def __str__(self) -> str:
        raise RuntimeError("str() exploded")


class ExplodingMapping(dict[str, Any]):
    def __iter__(self) -> Any:
        raise RuntimeError("iteration exploded")


cyclic: dict[str, Any] = {}
cyclic["self"] = cyclic
deep: Any = "x"
for _ in range(100_000):
    deep = [deep]

LONG = "x" * 201
SURROGATE = "\ud800"
NUL = "\x00"

# object id -> (record, expected reason fragment). Every one is quarantined; the key is the event key when the
# identity is usable, else the content key.
QUARANTINED: dict[str, tuple[SourceRecord, str]] = {
    # lone surrogates, field by field
    "sur-type": (deal("sur-type", event_type=f"deal{SURROGATE}"), "event_type holds the unpaired surrogate U+D800"),
    "sur-payee": (deal("sur-payee", payee_id=f"p{SURROGATE}"), "payee id"),
    "sur-partner": (deal("sur-partner", partner_id=f"{SURROGATE}"), "partner id"),
    "sur-ccy": (deal("sur-ccy", currency=f"EU{SURROGATE}"), "unknown currency"),
    "sur-amount": (deal("sur-amount", amount=f"1{SURROGATE}"), "not a plain decimal number"),
    "sur-when": (deal("sur-when", occurred_at=f"2026-10-01T12:00:00Z{SURROGATE}"), "is not ISO 8601"),
    "sur-attr": (deal("sur-attr", attributes={"stage": f"won{SURROGATE}"}), "attributes holds the unpaired surrogate"),
    "sur-attr-key": (deal("sur-attr-key", attributes={f"k{SURROGATE}": 1}), "attributes holds the unpaired surrogate"),
    "sur-problem": (deal("sur-problem", problem=f"bad row {SURROGATE}"), "bad row \\ud800"),
    # NUL characters (PostgreSQL text refuses them)
    "nul-type": (deal("nul-type", event_type=f"deal{NUL}won"), "event_type holds a NUL character"),
    "nul-payee": (deal("nul-payee", payee_id=f"p{NUL}1"), "payee id 'p\\x001' holds U+0000, a control"),
    "nul-partner": (deal("nul-partner", partner_id=f"{NUL}"), "partner id"),
    "nul-ccy": (deal("nul-ccy", currency=f"EUR{NUL}"), "unknown currency"),
    "nul-amount": (deal("nul-amount", amount=f"1{NUL}"), "not a plain decimal number"),
    "nul-when": (deal("nul-when", occurred_at=f"2026-10-01{NUL}"), "is not ISO 8601"),
    "nul-problem": (deal("nul-problem", problem=f"bad{NUL}row"), "bad\\x00row"),
    # longer than the column
    "long-type": (deal("long-type", event_type="t" * 101), "event_type is 101 characters long, more than the 100"),
    "long-payee": (deal("long-payee", payee_id=LONG), "payee_id is 201 characters long, more than the 200"),
    "long-partner": (deal("long-partner", partner_id=LONG), "partner_id is 201 characters long"),
    "long-attrs": (deal("long-attrs", attributes={"note": "x" * 1_000_001}), "attributes is 1000012 characters long"),
    # times that leave the calendar, or the supported range, once moved to UTC
    "tz-high": (deal("tz-high", occurred_at="9999-12-31T23:59:59-05:00"), "outside the calendar once moved to UTC"),
    "tz-low": (deal("tz-low", occurred_at="0001-01-01T00:00:00+05:00"), "outside the calendar once moved to UTC"),
    "tz-obj": (deal("tz-obj", occurred_at=datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))),
               "outside the calendar once moved to UTC"),
    "year-1": (deal("year-1", occurred_at="0001-01-01"), "is outside 1900-01-01 .. 9000-01-01"),
    "year-9999": (deal("year-9999", occurred_at="9999-12-31T00:00:00Z"), "is outside 1900-01-01 .. 9000-01-01"),
    "year-1899": (deal("year-1899", occurred_at="1899-12-31T23:59:59Z"), "is outside"),
    "year-0": (deal("year-0", occurred_at="0000-01-01T00:00:00Z"), "is not ISO 8601"),
    "year-5-digits": (deal("year-5-digits", occurred_at="+10000-01-01T00:00:00Z"), "is not ISO 8601"),
    "huge-ts": (deal("huge-ts", occurred_at="9" * 5000), "is not ISO 8601"),
    "ts-int": (deal("ts-int", occurred_at=1_700_000_000), "timestamp must be ISO 8601 text or a date-time, not int"),
    "ts-date-1": (deal("ts-date-1", occurred_at=datetime(1, 1, 1, tzinfo=UTC).date()), "is outside"),
    # amounts with absurd size, precision or type
    "exp-text": (deal("exp-text", amount="1e999999"), "is not a plain decimal number"),
    "exp-dec": (deal("exp-dec", amount=Decimal("1e999999")), "exceeds the plausible maximum"),
    "tiny-text": (deal("tiny-text", amount="0.0000000000000000000000001"), f"more than {MAX_DECIMALS} decimal places"),
    "tiny-dec": (deal("tiny-dec", amount=Decimal("1e-999999")), f"more than {MAX_DECIMALS} decimal places"),
    "ten-40": (deal("ten-40", amount=10**40), "exceeds the plausible maximum"),
    "ten-40-text": (deal("ten-40-text", amount="1" + "0" * 40), "exceeds the plausible maximum"),
    "digits-5000": (deal("digits-5000", amount="9" * 5000), "exceeds the plausible maximum"),
    "nan": (deal("nan", amount=Decimal("NaN")), "is not a finite number"),
    "snan": (deal("snan", amount=Decimal("sNaN")), "is not a finite number"),
    "inf": (deal("inf", amount=Decimal("-Infinity")), "is not a finite number"),
    "float": (deal("float", amount=1.5), "not float"),
    "bool": (deal("bool", amount=True), "not bool"),
    "list-amount": (deal("list-amount", amount=[1]), "not list"),
    "neg-tiny": (deal("neg-tiny", amount="-0.000000000000000000001"), "is negative"),
    "arabic-digits": (deal("arabic-digits", amount="\u0661\u0662\u0663"), "is not a plain decimal number"),
    "ccy-int": (deal("ccy-int", currency=978), "currency must be text, not int"),
    # wrong types and values that raise
    "type-int": (deal("type-int", event_type=7), "event type must be text, not int"),
    "payee-float": (deal("payee-float", payee_id=1.0), "payee id must be text, not float"),
    "payee-bool": (deal("payee-bool", payee_id=True), "payee id must be text, not bool"),
    "payee-explodes": (deal("payee-explodes", payee_id=Explodes()), "payee id must be text, not Explodes"),
    "attrs-list": (deal("attrs-list", attributes=["a"]), "attributes must be a mapping, not list"),
    "attrs-keys": (deal("attrs-keys", attributes={1: "a"}), "attribute names must be text, not int"),
    "attrs-cycle": (deal("attrs-cycle", attributes=cyclic), "attributes cannot be written as JSON"),
    "attrs-deep": (deal("attrs-deep", attributes={"d": deep}), "attributes cannot be written as JSON"),
    "attrs-explodes": (deal("attrs-explodes", attributes={"x": Explodes()}), "attributes cannot be written as JSON"),
    "attrs-iter": (deal("attrs-iter", attributes=ExplodingMapping()), "attributes cannot be written as JSON"),
    "raw-bytes": (deal("raw-bytes", raw=b"\xff\xfe"), "raw must be text, not bytes"),
    "problem-int": (deal("problem-int", problem=42), "the source flagged a problem: 42"),
    # ids holding control or format characters other than the removed invisible ones
    "payee-tab": (deal("payee-tab", payee_id="p\t1"), "U+0009"),
    "payee-rlo": (deal("payee-rlo", payee_id="p\u202e1"), "U+202E"),
    "partner-lrm": (deal("partner-lrm", partner_id="\u200epartner"), "U+200E"),
    "payee-ls": (deal("payee-ls", payee_id="p\u20281"), "U+2028"),
    "payee-bom-only": (deal("payee-bom-only", payee_id="\ufeff\u200b"), "payee is missing"),
}

# records whose identity is unusable: keyed by content, quarantined with the reason
NO_IDENTITY: list[tuple[SourceRecord, str]] = [
    (deal(f"a{SURROGATE}", raw=f"raw {SURROGATE}"), "object id 'a\\ud800' holds U+D800, a control, format or"),
    (deal(f"a{NUL}b"), "object id 'a\\x00b' holds U+0000"),
    (deal("x", object_type=f"Opp{NUL}"), "object type"),
    (deal("x", transition=f"won{SURROGATE}"), "transition"),
    (deal(LONG), "object id is 201 characters long, more than the 200"),
    (deal("x", object_type="T" * 201), "object type is 201 characters long"),
    (deal("x", transition="w" * 101), "transition is 101 characters long, more than the 100"),
    (deal("x" * 200, object_type=":" * 200), "the event key is 807 characters long, more than 600"),
    (deal(["list", "id"]), "object id must be text, not list"),
    (deal(Explodes()), "object id must be text, not Explodes"),
    (deal("x", object_type=7), "object type must be text, not int"),
    (deal(10**300), "object id is a number of more than 200 digits"),
    (deal("\ufeff\u200b"), "object type, object id and transition are all required"),
    (deal("x", transition="\t"), "object type, object id and transition are all required"),
    (deal("a\u202eb"), "U+202E"),
    (deal("a\tb"), "U+0009"),
    (deal(None, raw="r" * 300_000), "object type, object id and transition are all required"),  # raw is cut
]

NOT_RECORDS: list[tuple[Any, str]] = [
    ({"object_id": "dict"}, "the source returned a dict, not a SourceRecord"),
    (None, "the source returned a NoneType, not a SourceRecord"),
    ("text", "the source returned a str, not a SourceRecord"),
    (Explodes(), "the source returned a Explodes, not a SourceRecord"),
]

# stored correctly: (record, expected object id, payee, partner, amount)
ACCEPTED: list[tuple[SourceRecord, str, str, str | None, str | None]] = [
    (deal("\ufeffN-1", payee_id="\ufeffp1\u200b", partner_id="\u2060acme"), "N-1", "p1", "acme", "1000.00"),
    (deal("cafe\u0301", payee_id="re\u0301p"), "caf\u00e9", "r\u00e9p", None, "1000.00"),
    (deal(12345, payee_id=678), "12345", "678", None, "1000.00"),
    (deal(SneakyStr("sneaky"), payee_id=SneakyStr("p2")), "sneaky", "p2", None, "1000.00"),
    (deal("trailing-zeros", amount="1." + "0" * 40), "trailing-zeros", "p1", None, "1." + "0" * MAX_DECIMALS),
    (deal("dec-exp", amount=Decimal("1E+3")), "dec-exp", "p1", None, "1000"),
    (deal("small", amount="0.000000000000000001"), "small", "p1", None, "0.000000000000000001"),
    (deal("max-len", payee_id="p" * 200, event_type="t" * 100), "max-len", "p" * 200, None, "1000.00"),
    (deal("colon:in:id"), "colon:in:id", "p1", None, "1000.00"),
    (deal("percent%3Aid"), "percent%3Aid", "p1", None, "1000.00"),
    (deal("nul-in-raw", raw=f"a{NUL}b{SURROGATE}c"), "nul-in-raw", "p1", None, "1000.00"),
    (deal("edge-high", occurred_at="8999-12-31T23:59:59Z"), "edge-high", "p1", None, "1000.00"),
    (deal("edge-low", occurred_at="1900-01-01T00:00:00Z"), "edge-low", "p1", None, "1000.00"),
]
ACCEPTED_KEYS = {
    "colon:in:id": "s:Opportunity:colon%3Ain%3Aid:won",
    "percent%3Aid": "s:Opportunity:percent%253Aid:won",
    "N-1": "s:Opportunity:N-1:won",
}


def all_events(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(events).order_by(events.c.id)).all()


def count(rt: Runtime, table: Any, *where: Any) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_hostile_corpus_is_quarantined_record_by_record(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    batch: list[Any] = []
    goods = 0

    def good() -> None:
        nonlocal goods
        batch.append(deal(f"good-{goods}"))
        goods += 1

    good()
    for record, _reason in QUARANTINED.values():
        batch.append(record)
        good()
    for record, _reason in NO_IDENTITY:
        batch.append(record)
        good()
    for value, _reason in NOT_RECORDS:
        batch.append(value)
        good()
    for record, *_expected in ACCEPTED:
        batch.append(record)
        good()
    batch.append(deal("N-1"))  # the same CRM id as "\ufeffN-1": a duplicate, not a second event
    rt.plugins.sources["s"].push(*batch)

    assert poll(rt, "s") == len(batch) - 1
    rows = all_events(rt)
    assert len(rows) == len(batch) - 1
    by_id = {r.object_id: r for r in rows}

    for object_id, (_record, reason) in QUARANTINED.items():
        row = by_id[object_id]
        assert (row.status, row.key) == ("quarantined", f"s:Opportunity:{object_id}:won"), object_id
        assert reason in row.reason, (object_id, row.reason)
    malformed = [r for r in rows if r.key.startswith("s:malformed:")]
    assert len(malformed) == len(NO_IDENTITY) + len(NOT_RECORDS)
    reasons = sorted(r.reason for r in malformed)
    for _record, reason in [*NO_IDENTITY, *NOT_RECORDS]:
        assert any(reason in r for r in reasons), (reason, reasons)
    assert all(r.status == "quarantined" for r in malformed)
    for record, object_id, payee, partner, amount in ACCEPTED:
        row = by_id[object_id]
        status = "waiting" if object_id == "edge-high" else "ingested"  # dated 8999: stored, and waits for its date
        assert (row.status, row.payee_id, row.partner_id, row.amount) == (status, payee, partner, amount), record
        assert row.key == ACCEPTED_KEYS.get(object_id, f"s:Opportunity:{object_id}:won")
    assert by_id["nul-in-raw"].raw == "a\\x00b\\ud800c"
    assert {r.object_id for r in rows if r.status == "ingested"} >= {f"good-{i}" for i in range(goods)}

    # every stored text is what it should be: the long raw text is cut with its digest, nothing unstorable remains
    cut = next(r for r in malformed if r.raw.startswith("rrrr"))
    assert len(cut.raw) == 65_536 and "[cut: 300000 characters, sha256 " in cut.raw
    for row in rows:
        for name in ("key", "object_type", "object_id", "transition", "event_type", "raw", "reason", "attributes"):
            value = getattr(row, name)
            assert value is None or ("\x00" not in value and len(value.encode("utf-8")) >= 0), (name, row.id)
        json.loads(row.attributes)

    # audited, and re-reading the whole corpus adds nothing and quarantines nothing again
    with rt.engine.connect() as conn:
        quarantined = conn.execute(select(func.count()).select_from(audit_log)
                                   .where(audit_log.c.action == "event.quarantined")).scalar_one()
    assert quarantined == count(rt, events, events.c.status == "quarantined")
    rt.plugins.sources["s"].push(*batch)
    assert poll(rt, "s") == 0
    assert count(rt, events) == len(batch) - 1
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def test_a_daemon_pass_over_hostile_records_keeps_running_and_rewards_the_good_ones(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    hostile = [record for record, _ in QUARANTINED.values()] + [record for record, _ in NO_IDENTITY[:6]]
    rt.plugins.sources["s"].push(deal("g1"), *hostile, deal("g2"), deal("\u200bg1"))
    worker = Worker(rt)
    worker.start()
    worker.run_once()
    worker.stop()
    assert worker.summary.counts["ingested"] == len(hostile) + 2
    assert worker.summary.counts["calculated"] == 2
    assert count(rt, rewards) == 2  # g1 once, although it came a second time behind a zero-width space
    versions = register_program_versions(rt)
    assert calculate_batch(rt, versions) == 0


@pytest.mark.parametrize(("first", "second", "events_made"), [
    (deal("record:a", object_type="T"), deal("a", object_type="T:record"), 2),
    (deal("b", object_type="record"), deal("a:b", object_type="record"), 2),
    (deal("x%3Ay"), deal("x:y"), 2),
    (deal("\ufeff006A"), deal("006A"), 1),
    (deal("006A\u200d"), deal("\u2060006A"), 1),
    (deal("e\u0301"), deal("\u00e9"), 1),
    (deal(" 006A "), deal("006A"), 1),
])
def test_ids_that_differ_make_two_events_and_ids_that_print_the_same_make_one(
        make_runtime: Any, first: SourceRecord, second: SourceRecord, events_made: int) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"].push(first, second)
    assert poll(rt, "s") == events_made
    assert len({r.key for r in all_events(rt)}) == events_made


BADNESS = {
    "high surrogate": "a\ud800b", "low surrogate": "\udfffab", "surrogate pair halves reversed": "\udc00\ud800",
    "NUL": "a\x00b", "NUL only": "\x00", "300 characters": "y" * 300, "200 KB": "z" * 200_000,
    "C1 control": "a\x85b", "DEL": "a\x7fb", "escape sequence": "\x1b[31mred", "RTL override": "\u202egnp.exe",
    "line separator": "a\u2028b", "BOM and zero-width": "\ufeff\u200bab\u200c\u200d\u2060",
    "combining only": "\u0301", "private use": "a\ue000b", "unassigned": "a\U000e0080b", "emoji": "a\U0001f600b",
}
TEXT_FIELDS = ("object_type", "object_id", "transition", "event_type", "payee_id", "partner_id", "currency",
               "amount", "occurred_at", "raw", "problem")
PREFIXED_OK = {"emoji", "private use", "unassigned", "combining only", "BOM and zero-width", "DEL", "C1 control",
               "escape sequence"}


def _matrix() -> list[tuple[str, str, SourceRecord]]:
    cases = []
    for n, (field, (kind, value)) in enumerate((f, b) for f in (*TEXT_FIELDS, "attribute", "attribute name")
                                                for b in BADNESS.items()):
        object_id = f"m-{n}"
        if field == "attribute":
            record = deal(object_id, attributes={"note": value})
        elif field == "attribute name":
            record = deal(object_id, attributes={value: 1})
        elif field == "object_id":
            record = deal(f"m-{n}-{value}")
        else:
            record = deal(object_id, **{field: value})
        cases.append((field, kind, record))
    return cases


MATRIX = _matrix()


def test_every_field_with_every_kind_of_bad_text_is_stored_or_quarantined(make_runtime: Any) -> None:
    """Each text field x each kind of hostile text: never an error, every row storable, good records untouched;
    values that no database can hold (surrogates, NUL, longer than the column) are always quarantined."""
    rt = make_runtime(CONFIG)
    batch = [record for i, case in enumerate(MATRIX) for record in (case[2], deal(f"good-{i}"))]
    rt.plugins.sources["s"].push(*batch)
    assert len(MATRIX) >= 200
    assert poll(rt, "s") == len(batch)
    rows = all_events(rt)
    assert len(rows) == len(batch)
    goods = [r for r in rows if r.object_id.startswith("good-")]
    assert len(goods) == len(MATRIX) and all(r.status == "ingested" for r in goods)
    hostile = [r for r in rows if not r.object_id.startswith("good-")]
    for (field, kind, record), row in zip(MATRIX, hostile, strict=True):
        for name in ("key", "object_type", "object_id", "transition", "event_type", "payee_id", "raw", "reason"):
            value = getattr(row, name)
            assert value is None or ("\x00" not in value and len(value.encode("utf-8")) >= 0), (field, kind, name)
        unstorable = kind in ("high surrogate", "low surrogate", "surrogate pair halves reversed", "NUL",
                              "NUL only", "200 KB") or (kind == "300 characters" and field not in ("raw", "problem"))
        if field == "raw":
            assert row.status == "ingested", kind  # raw is a display copy: escaped and cut, never refused
        elif field == "problem":
            assert row.status == "quarantined" and row.reason, kind
        elif unstorable and field not in ("attribute", "attribute name") or kind in ("NUL", "NUL only") and field in (
                "object_type", "object_id", "transition", "payee_id", "partner_id"):
            assert row.status == "quarantined" and row.reason, (field, kind)
        if row.status == "quarantined":
            assert row.reason, (field, kind)
        if field in ("attribute", "attribute name") and row.status == "ingested":
            assert json.loads(row.attributes) == dict(record.attributes)
    rt.plugins.sources["s"].push(*batch)
    assert poll(rt, "s") == 0
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def test_a_record_handed_over_as_quarantined_is_stored_with_its_problem_and_can_be_corrected(
        make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    source = rt.plugins.sources["s"]
    source.push(SourceRecord.quarantined("row 3: unterminated quote", raw='3,"abc'),
                SourceRecord.quarantined("unexpected shape", raw='{"Id": "006"}', object_type="Opportunity",
                                         object_id="006", transition="won"),
                deal("g"))
    assert poll(rt, "s") == 3
    rows = {r.raw: r for r in all_events(rt)}
    content = rows['3,"abc']
    assert (content.status, content.reason) == ("quarantined", "row 3: unterminated quote")
    assert content.key.startswith("s:malformed:")
    known = rows['{"Id": "006"}']
    assert (known.status, known.key, known.reason) == ("quarantined", "s:Opportunity:006:won", "unexpected shape")
    source.push(deal("006"))  # the CRM record, readable now, under the same identity: it replaces the quarantine
    assert poll(rt, "s") == 1
    corrected = next(r for r in all_events(rt) if r.id == known.id)
    assert (corrected.status, corrected.amount) == ("ingested", "1000.00")


@pytest.mark.parametrize(("value", "kind"), [(object(), "object"), ({1, 2}, "set"), (b"\x00", "bytes")])
def test_an_attribute_value_that_is_not_json_quarantines_the_record_instead_of_its_str(value: Any,
                                                                                       kind: str) -> None:
    from payhub.pipeline.ingest import validate

    record = SourceRecord("deal", "A-1", "won", "deal_won", "2026-01-01T00:00:00Z", "p1", "10", "USD",
                          attributes={"x": value})
    row = validate(record, "crm", Decimal(10**9))
    assert row["status"] == "quarantined"
    assert row["reason"] == f"attributes cannot be written as JSON: TypeError: a value of type {kind} is not JSON"


def test_decimal_and_time_attributes_keep_their_canonical_text() -> None:
    from payhub.pipeline.ingest import validate

    record = SourceRecord("deal", "A-1", "won", "deal_won", "2026-01-01T00:00:00Z", "p1", "10", "USD",
                          attributes={"rate": Decimal("1.50"), "at": datetime(2026, 1, 1, tzinfo=UTC)})
    row = validate(record, "crm", Decimal(10**9))
    assert row["status"] == "ingested"
    assert json.loads(row["attributes"]) == {"at": "2026-01-01T00:00:00.000000Z", "rate": "1.50"}
