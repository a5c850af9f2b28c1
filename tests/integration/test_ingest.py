"""Invariant 1 (dedup on ingest) and invariant 8 for CRM records: bad records are quarantined, the rest proceeds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.db.schema import audit_log, events, rewards, sources
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import event_key, poll, store
from payhub.runtime import Runtime
from payhub.worker import Worker

CONFIG = """
    [sources.s]
    plugin = "fake"
    batch_size = 2
    [programs.flat]
    calculator = "flat"
    amount = "10"
    currency = "EUR"
"""


def deal(object_id: str, **overrides: Any) -> SourceRecord:
    values: dict[str, Any] = {
        "object_type": "Opportunity", "object_id": object_id, "transition": "won", "event_type": "deal_won",
        "occurred_at": "2026-10-01T12:00:00Z", "payee_id": "p1", "amount": "1000.00", "currency": "EUR",
    }
    values.update(overrides)
    return SourceRecord(**values)


def count(rt: Runtime, table: Any, *where: Any) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def all_events(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(events).order_by(events.c.id)).all()


def audit_actions(rt: Runtime, action: str) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.seq)).all()


def run_pass(rt: Runtime) -> tuple[int, int]:
    """Poll the source and calculate everything; return (new events, calculated events)."""
    added = poll(rt, "s")
    versions = register_program_versions(rt)
    calculated = 0
    while n := calculate_batch(rt, versions):
        calculated += n
    return added, calculated


def audit_ok(rt: Runtime) -> bool:
    with rt.engine.connect() as conn:
        return verify(conn).ok


def test_event_key_format() -> None:
    assert event_key("salesforce", "Opportunity", "006XYZ", "won") == "salesforce:Opportunity:006XYZ:won"


def test_key_is_source_type_id_transition(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"].push(deal(" 006A "), deal("006A", transition="refunded", event_type="refund"))
    assert poll(rt, "s") == 2
    rows = all_events(rt)
    assert [r.key for r in rows] == ["s:Opportunity:006A:won", "s:Opportunity:006A:refunded"]
    assert [(r.source, r.object_type, r.object_id, r.transition) for r in rows] == [
        ("s", "Opportunity", "006A", "won"), ("s", "Opportunity", "006A", "refunded")]
    assert all(r.status == "ingested" for r in rows)
    assert rows[0].amount == "1000.00" and rows[0].currency == "EUR"
    assert rows[0].occurred_at == datetime(2026, 10, 1, 12, tzinfo=UTC)


def test_polling_twice_adds_nothing(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"].push(deal("1"), deal("2"), deal("3"))
    assert run_pass(rt) == (3, 3)
    assert run_pass(rt) == (0, 0)
    assert count(rt, events) == 3
    assert count(rt, rewards) == 3
    assert audit_ok(rt)


def test_resent_records_add_no_event_and_no_reward(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    source = rt.plugins.sources["s"]
    source.push(deal("1"), deal("2"))
    assert run_pass(rt) == (2, 2)
    # The CRM sends the same objects again (after the cursor), one with a changed amount, plus one new object.
    source.push(deal("2"), deal("1", amount="99999.00"), deal("3"))
    assert run_pass(rt) == (1, 1)
    assert count(rt, events) == 3
    assert count(rt, rewards) == 3
    assert [r.amount for r in all_events(rt)] == ["1000.00", "1000.00", "1000.00"]
    polled = [json.loads(r.detail) for r in audit_actions(rt, "source.polled")]
    assert sum(p["duplicates"] for p in polled) == 2
    assert sum(p["new"] for p in polled) == 3


def test_overlapping_cursor_adds_nothing(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"].push(*(deal(str(i)) for i in range(5)))
    assert run_pass(rt) == (5, 5)
    with rt.engine.connect() as conn:
        assert conn.execute(select(sources.c.cursor).where(sources.c.name == "s")).scalar_one() == "5"
    for cursor in (None, "1", "3"):  # a lost or stale cursor makes the source re-read what it already sent
        with rt.engine.begin() as conn:
            conn.execute(update(sources).where(sources.c.name == "s").values(cursor=cursor))
        assert run_pass(rt) == (0, 0)
    assert count(rt, events) == 5
    assert count(rt, rewards) == 5
    assert len(audit_actions(rt, "event.ingested")) == 5
    assert audit_ok(rt)


def test_duplicates_in_one_batch_store_one_event(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    assert store(rt, "s", [deal("1"), deal("1"), deal("2"), deal("1", amount="5")], "4") == 2
    assert store(rt, "s", [deal("2"), deal("1")], "6") == 0
    assert [r.key for r in all_events(rt)] == ["s:Opportunity:1:won", "s:Opportunity:2:won"]
    assert len(audit_actions(rt, "event.ingested")) == 2


def test_a_correction_in_the_same_batch_replaces_its_bad_record(make_runtime) -> None:
    """The copies of a key in one batch count as if they had arrived one after the other: a later valid copy
    replaces an earlier quarantined one, the first valid copy stays, and the audit describes what was stored."""
    rt = make_runtime(CONFIG)
    batch = [deal("1", amount="-5"), deal("1"), deal("1", amount="7"),  # bad, its correction, another valid copy
             deal("2"), deal("2", currency="ZZZ"),  # valid, then a bad copy
             deal("3", amount="-1"), deal("3", currency="ZZZ")]  # bad twice: the last reason stands
    assert store(rt, "s", batch, "7") == 3
    stored = {r.object_id: r for r in all_events(rt)}
    assert (stored["1"].status, stored["1"].amount, stored["1"].reason) == ("ingested", "1000.00", None)
    assert (stored["2"].status, stored["2"].currency) == ("ingested", "EUR")
    assert (stored["3"].status, stored["3"].reason) == ("quarantined", "unknown currency 'ZZZ' (not an ISO 4217 code)")
    [quarantined] = audit_actions(rt, "event.quarantined")
    assert json.loads(quarantined.detail) == {"key": "s:Opportunity:3:won", "reason": stored["3"].reason}
    assert sorted(e.subject_id for e in audit_actions(rt, "event.ingested")) == sorted(
        [str(stored["1"].id), str(stored["2"].id)])
    [polled] = audit_actions(rt, "source.polled")
    assert json.loads(polled.detail)["duplicates"] == 4
    assert audit_ok(rt)


def test_restarted_worker_adds_nothing(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"].push(deal("1"), deal("2"), deal("3"))
    first = Worker(rt)
    first.start()
    first.run_once()
    first.stop()
    assert first.summary.counts["ingested"] == 3
    with rt.engine.begin() as conn:  # the restarted daemon lost its cursor
        conn.execute(update(sources).values(cursor=None))
    second = Worker(rt)
    second.start()
    second.run_once()
    second.stop()
    assert second.summary.counts["ingested"] == 0
    assert second.summary.counts["calculated"] == 0
    assert count(rt, events) == 3
    assert count(rt, rewards) == 3


def test_same_object_in_two_sources_is_two_events(make_runtime) -> None:
    rt = make_runtime(CONFIG + """
        [sources.t]
        plugin = "fake"
    """)
    rt.plugins.sources["s"].push(deal("1"))
    rt.plugins.sources["t"].push(deal("1"))
    assert poll(rt, "s") + poll(rt, "t") == 2
    assert [r.key for r in all_events(rt)] == ["s:Opportunity:1:won", "t:Opportunity:1:won"]


BAD_RECORDS = {  # object id -> (record, expected reason fragment)
    "bad-ccy": (deal("bad-ccy", currency="ZZZ"), "unknown currency 'ZZZ'"),
    "no-minor": (deal("no-minor", currency="XXX"), "currency 'XXX' has no minor unit"),
    "no-ccy": (deal("no-ccy", currency=None), "currency is missing"),
    "neg": (deal("neg", amount="-5.00"), "amount -5.00 is negative"),
    "nan": (deal("nan", amount="12,50"), "amount '12,50' is not a plain decimal number"),
    "inf": (deal("inf", amount="Infinity"), "amount 'Infinity' is not a plain decimal number"),
    "exp": (deal("exp", amount="1E+3"), "amount '1E+3' is not a plain decimal number"),
    "float": (deal("float", amount=12.5), "must be a decimal string, not float"),
    "huge": (deal("huge", amount="100000000.01"), "exceeds the plausible maximum"),
    "nopayee": (deal("nopayee", payee_id=None), "payee is missing"),
    "blankpayee": (deal("blankpayee", payee_id="  "), "payee is missing"),
    "notrans": (deal("notrans", transition=""), "object type, object id and transition are all required"),
    "naive": (deal("naive", occurred_at="2026-10-01T12:00:00"), "has no timezone offset"),
    "naive-dt": (deal("naive-dt", occurred_at=datetime(2026, 10, 1, 12)), "has no timezone offset"),
    "badts": (deal("badts", occurred_at="yesterday"), "is not ISO 8601"),
    "nots": (deal("nots", occurred_at=None), "timestamp is missing"),
    "notype": (deal("notype", event_type=""), "event type is missing"),
    "flagged": (deal("flagged", problem="row 7: unterminated quote"), "row 7: unterminated quote"),
}


def test_bad_records_are_quarantined_and_the_rest_proceeds(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    batch = [deal("good-0")]
    for i, (record, _reason) in enumerate(BAD_RECORDS.values(), start=1):
        batch += [record, deal(f"good-{i}")]
    batch += [deal(""), deal(None, raw="<no id>")]  # no identity at all
    rt.plugins.sources["s"].push(*batch)
    good = len(BAD_RECORDS) + 1
    assert run_pass(rt) == (len(batch), good)
    rows = all_events(rt)
    assert len(rows) == len(batch)
    by_id = {r.object_id: r for r in rows}
    for object_id, (_record, reason) in BAD_RECORDS.items():
        row = by_id[object_id]
        assert row.status == "quarantined", object_id
        if row.transition:
            assert row.key == f"s:Opportunity:{object_id}:won"
        else:  # without a full identity the record is keyed by its content
            assert row.key.startswith("s:malformed:")
        assert reason in row.reason, (object_id, row.reason)
        assert row.raw  # the original record is kept for the quarantine listing
    for row in rows[-2:]:
        assert row.status == "quarantined"
        assert row.reason == "object type, object id and transition are all required"
        assert row.key.startswith("s:malformed:")
    assert rows[-1].raw == "<no id>"
    assert sorted(r.object_id for r in rows if r.status == "calculated") == sorted(f"good-{i}" for i in range(good))
    # each quarantine is audited with its reason
    entries = audit_actions(rt, "event.quarantined")
    quarantined = {str(r.id): r for r in rows if r.status == "quarantined"}
    assert len(entries) == len(quarantined) == len(BAD_RECORDS) + 2
    for entry in entries:
        row = quarantined[entry.subject_id]
        assert entry.outcome == "quarantined"
        assert json.loads(entry.detail) == {"key": row.key, "reason": row.reason}
    assert sum(json.loads(e.detail)["quarantined"] for e in audit_actions(rt, "source.polled")) == len(quarantined)
    # only the good rows were rewarded
    with rt.engine.connect() as conn:
        rewarded = conn.execute(select(events.c.object_id).join(rewards, rewards.c.event_id == events.c.id)
                                ).scalars().all()
    assert sorted(rewarded) == sorted(f"good-{i}" for i in range(good))
    # re-sent bad records are not stored or quarantined twice
    rt.plugins.sources["s"].push(*batch)
    assert run_pass(rt) == (0, 0)
    assert len(audit_actions(rt, "event.quarantined")) == len(quarantined)
    assert audit_ok(rt)


def test_quarantine_reasons_in_one_mixed_batch(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"].push(
        deal("ok-1", amount=Decimal("10.50")),
        deal("bad-ccy", currency="EURO"),
        deal("neg", amount="-0.01"),
        deal("text", amount="ten"),
        deal("nopayee", payee_id=""),
        deal("", raw="<no id>"),
        deal("naive", occurred_at="2026-10-01 09:00:00"),
        deal("ok-2", amount=" 1000.25 ", currency="jpy", occurred_at="2026-10-01T09:00:00+09:00"),
    )
    assert poll(rt, "s") == 8
    by_id = {r.object_id: r for r in all_events(rt)}
    reasons = {oid: r.reason for oid, r in by_id.items() if r.status == "quarantined"}
    assert reasons == {
        "bad-ccy": "unknown currency 'EURO' (not an ISO 4217 code)",
        "neg": "amount -0.01 is negative",
        "text": "amount 'ten' is not a plain decimal number (like 1234.56)",
        "nopayee": "payee is missing",
        "": "object type, object id and transition are all required",
        "naive": "timestamp '2026-10-01 09:00:00' has no timezone offset",
    }
    assert by_id[""].raw == "<no id>"
    assert by_id[""].key.startswith("s:malformed:")
    assert by_id["ok-1"].status == by_id["ok-2"].status == "ingested"
    assert by_id["ok-1"].amount == "10.50"
    assert (by_id["ok-2"].amount, by_id["ok-2"].currency) == ("1000.25", "JPY")
    assert by_id["ok-2"].occurred_at == datetime(2026, 10, 1, 0, tzinfo=UTC)
    entries = audit_actions(rt, "event.quarantined")
    assert sorted(json.loads(e.detail)["reason"] for e in entries) == sorted(reasons.values())
    assert len(audit_actions(rt, "event.ingested")) == 2
    polled = [json.loads(e.detail) for e in audit_actions(rt, "source.polled")]
    assert sum(p["quarantined"] for p in polled) == 6
    # a record without identity is deduplicated by its content
    rt.plugins.sources["s"].push(deal("", raw="<no id>"), deal("", raw="<other>"))
    assert poll(rt, "s") == 1
    assert audit_ok(rt)


def test_corrected_record_replaces_its_quarantined_event(make_runtime) -> None:
    """The CRM fixes a bad record and sends it again under the same key: the quarantined event is replaced and
    rewarded once; a good event re-sent with other values is still not changed."""
    rt = make_runtime(CONFIG)
    source = rt.plugins.sources["s"]
    source.push(deal("bad", currency="US$"), deal("good"))
    assert run_pass(rt) == (2, 1)
    source.push(deal("bad", currency="USD"), deal("good", amount="5"))
    assert run_pass(rt) == (1, 1)
    stored = {e.object_id: e for e in all_events(rt)}
    assert (stored["bad"].status, stored["bad"].currency, stored["bad"].reason) == ("calculated", "USD", None)
    assert stored["good"].amount == "1000.00"
    assert count(rt, rewards) == 2
    [corrected] = audit_actions(rt, "event.corrected")
    assert corrected.subject_id == str(stored["bad"].id)
    source.push(deal("bad", currency="EUR"))  # no longer quarantined: a later copy changes nothing
    assert run_pass(rt) == (0, 0)
    assert count(rt, rewards) == 2
    assert audit_ok(rt)


def test_idle_polls_and_repeated_errors_are_audited_once(make_runtime) -> None:
    rt = make_runtime(CONFIG)
    source = rt.plugins.sources["s"]
    source.push(deal("1"))
    run_pass(rt)
    before = len(audit_actions(rt, "source.polled"))
    for _ in range(3):
        run_pass(rt)  # nothing new, same cursor
    assert len(audit_actions(rt, "source.polled")) == before
    from payhub.errors import TransientSourceError

    source.error = TransientSourceError("CRM unavailable")
    for _ in range(3):
        run_pass(rt)
    assert len(audit_actions(rt, "source.error")) == 1
    source.error = TransientSourceError("rate limited")
    run_pass(rt)
    assert len(audit_actions(rt, "source.error")) == 2
    assert audit_ok(rt)


def test_a_batch_larger_than_one_insert_statement_stores_each_key_once_with_its_audit_entry(make_runtime) -> None:
    """New events go to the database many rows per statement: a batch spanning several statements, with copies of
    keys, quarantined and future-dated records, is stored as record by record, each new event audited once."""
    rt = make_runtime(CONFIG)
    records = [deal(f"o{i}", occurred_at=datetime(2026, 10, 1, 12, 0, i % 60, i, tzinfo=UTC)) for i in range(2_100)]
    records += [deal(f"o{i}", amount="999.00") for i in range(0, 2_100, 10)]  # copies: the first stays
    records += [deal(f"bad{i}", currency="XXX") for i in range(60)]
    records += [deal(f"later{i}", occurred_at="2999-01-01T00:00:00Z") for i in range(15)]
    assert store(rt, "s", records, "1") == 2_175
    rows = all_events(rt)
    assert len(rows) == len({r.key for r in rows}) == 2_175
    by_id = {r.id: r for r in rows}
    assert [by_id[i].object_id for i in sorted(by_id)][:3] == ["o0", "o1", "o2"]
    assert {r.amount for r in rows if r.object_id.startswith("o")} == {"1000.00"}
    assert by_id[rows[7].id].occurred_at == datetime(2026, 10, 1, 12, 0, 7, 7, tzinfo=UTC)
    assert sum(r.status == "quarantined" for r in rows) == 60 and sum(r.status == "waiting" for r in rows) == 15
    entries = audit_actions(rt, "event.ingested") + audit_actions(rt, "event.quarantined")
    assert sorted(int(e.subject_id) for e in entries) == sorted(by_id)
    assert [int(e.subject_id) for e in audit_actions(rt, "event.ingested")] == sorted(
        r.id for r in rows if r.status != "quarantined")
    if rt.engine.dialect.name == "sqlite":  # instants written as SQLAlchemy writes them, so SQL compares them alike
        with rt.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT occurred_at, ingested_at FROM events WHERE object_id = 'o7'").one()[
                0] == "2026-10-01 12:00:07.000007"
    assert store(rt, "s", records, "2", previous="1") == 0
    assert count(rt, events) == 2_175 and len(audit_actions(rt, "event.ingested")) == 2_115
    assert audit_ok(rt)
