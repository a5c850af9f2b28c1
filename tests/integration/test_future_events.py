"""Future-dated events wait for their date (``ingest.future_tolerance_seconds``), then are calculated on their own,
on SQLite and PostgreSQL; however many wait, they never hold up the due ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from sqlalchemy import Connection, Select, func, select

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.clock import isoformat
from payhub.db.schema import audit_log, calculations, events, rewards
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll
from payhub.runtime import Runtime
from payhub.store import events as event_store

SOURCE = """
[sources.s]
plugin = "fake"
batch_size = 5000
"""
REFERRAL = """
[programs.share]
calculator = "referral"
mode = "revenue_share"
percent = "20"
months = 36
event_types = ["payment"]
"""
FLAT = """
[programs.flat]
calculator = "flat"
amount = "10"
currency = "EUR"
event_types = ["deal_won"]
clawback_event_types = ["deal_reversed"]
"""
START = datetime(2026, 2, 1, tzinfo=UTC)


class Clock:
    """The calculate stage's now, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(START)
    for stage in ("ingest", "calculate"):
        monkeypatch.setattr(f"payhub.pipeline.{stage}.utcnow", lambda: clock.now)
    return clock


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def payment(object_id: str, when: str, amount: str = "800", referred_at: str = "2026-01-15") -> SourceRecord:
    return SourceRecord("Invoice", object_id, "paid", "payment", when, "rep1", amount, "USD", "acme",
                        {"referred_at": referred_at})


def deal(object_id: str, when: datetime, transition: str = "won", event_type: str = "deal_won") -> SourceRecord:
    return SourceRecord("Opportunity", object_id, transition, event_type, isoformat(when), "rep1", "1000", "EUR",
                        "acme")


def ingest(rt: Runtime, *records: SourceRecord) -> None:
    rt.plugins.sources["s"].push(*records)
    poll(rt, "s")


def calculate(rt: Runtime) -> None:
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass
    with rt.engine.connect() as conn:
        result = verify(conn)
    assert result.ok, result.problem


def event(rt: Runtime, object_id: str) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(events).where(events.c.object_id == object_id)).one()


def audited(rt: Runtime, action: str, event_id: int) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [json.loads(detail) for detail in conn.execute(select(audit_log.c.detail).where(
            audit_log.c.action == action, audit_log.c.subject_type == "event",
            audit_log.c.subject_id == str(event_id)).order_by(audit_log.c.seq)).scalars()]


def paid(rt: Runtime, object_id: str) -> list[tuple[int, str]]:
    with rt.engine.connect() as conn:
        return [(r.amount_minor, r.status) for r in conn.execute(select(rewards).join(
            events, events.c.id == rewards.c.event_id).where(events.c.object_id == object_id))]


def test_a_referral_payment_of_month_25_waits_until_its_date(make_runtime: Any, clock: Clock, tmp_path: Path) -> None:
    rt = make_runtime(SOURCE + REFERRAL)
    ingest(rt, payment("month-1", "2026-01-15T00:00:00Z"), payment("month-25", "2028-01-15T00:00:00Z"))
    calculate(rt)
    assert paid(rt, "month-1") == [(16000, "pending")]
    month25 = event(rt, "month-25")
    reason = ("dated 2028-01-15T00:00:00.000000Z, in the future: waits until 2028-01-14T00:00:00.000000Z (its date "
              "less ingest.future_tolerance_seconds = 86400)")
    assert (month25.status, month25.reason) == ("waiting", reason)
    assert audited(rt, "event.ingested", month25.id) == [{"key": month25.key, "status": "waiting", "reason": reason}]
    listed = invoke("-c", str(tmp_path / "payhub.toml"), "events", "list", "--status", "waiting", "--format", "json")
    assert listed.exit_code == 0, listed.output  # `events list --status waiting` shows it with its reason
    assert [(row["id"], row["status"], row["reason"]) for row in json.loads(listed.output)] == [
        (month25.id, "waiting", reason)]
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(calculations).where(
            calculations.c.event_id == month25.id)).scalar() == 0

    clock.now = at("2028-01-14T00:00:00Z") - timedelta(microseconds=1)  # a moment before: still waiting
    calculate(rt)
    assert event(rt, "month-25").status == "waiting"
    assert paid(rt, "month-25") == [] and audited(rt, "event.due", month25.id) == []

    clock.now = at("2028-01-14T00:00:00Z")  # its date less the tolerance: calculated, with no one asking
    calculate(rt)
    assert (event(rt, "month-25").status, event(rt, "month-25").reason) == ("calculated", None)
    assert audited(rt, "event.due", month25.id) == [{"occurred_at": "2028-01-15T00:00:00.000000Z"}]
    assert paid(rt, "month-25") == [(16000, "pending")]
    calculate(rt)
    assert paid(rt, "month-25") == [(16000, "pending")]  # once


@pytest.mark.parametrize(("tolerance", "status"), [(None, "calculated"), (0, "waiting"), (3599, "waiting"),
                                                   (3600, "calculated")])
def test_the_tolerance_is_a_setting(make_runtime: Any, clock: Clock, tolerance: int | None, status: str) -> None:
    setting = "" if tolerance is None else f"[ingest]\nfuture_tolerance_seconds = {tolerance}\n"
    rt = make_runtime(setting + SOURCE + FLAT)
    ingest(rt, deal("an-hour-ahead", START + timedelta(hours=1)))  # a CRM whose clock runs an hour ahead
    calculate(rt)
    assert event(rt, "an-hour-ahead").status == status


def test_many_future_events_never_hold_up_a_due_one(make_runtime: Any, clock: Clock) -> None:
    rt = make_runtime(SOURCE + FLAT)
    future = [deal(f"future-{n}", START + timedelta(days=30 + n)) for n in range(300)]
    ingest(rt, *future, deal("due", START - timedelta(days=1)))
    versions = register_program_versions(rt)
    assert calculate_batch(rt, versions, limit=10) == 1  # the due one, in the first batch
    assert event(rt, "due").status == "calculated" and paid(rt, "due") == [(1000, "pending")]
    assert calculate_batch(rt, versions, limit=10) == 0
    with rt.engine.connect() as conn:
        statuses = dict(conn.execute(select(events.c.status, func.count()).group_by(events.c.status)).all())
        assert statuses == {"waiting": 300, "calculated": 1}
        assert verify(conn).ok
    clock.now = START + timedelta(days=30 + 9 - 1)  # with the day of tolerance, future-0 .. future-9 are due
    assert calculate_batch(rt, versions, limit=100) == 10
    assert calculate_batch(rt, versions, limit=100) == 0


def test_events_ingested_under_a_larger_tolerance_wait_when_it_is_lowered(make_runtime: Any, clock: Clock) -> None:
    rt = make_runtime("[ingest]\nfuture_tolerance_seconds = 604800\n" + SOURCE + FLAT)
    ingest(rt, *(deal(f"next-week-{n}", START + timedelta(days=6, hours=n)) for n in range(25)),
           deal("due", START))
    assert {event(rt, f"next-week-{n}").status for n in range(25)} == {"ingested"}
    rt = make_runtime("[ingest]\nfuture_tolerance_seconds = 3600\n" + SOURCE + FLAT)
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions, limit=10):  # each batch takes ten and sets the early ones waiting
        pass
    assert event(rt, "due").status == "calculated"
    first = event(rt, "next-week-0")
    reason = ("dated 2026-02-07T00:00:00.000000Z, in the future: waits until 2026-02-06T23:00:00.000000Z (its date "
              "less ingest.future_tolerance_seconds = 3600)")
    assert (first.status, first.reason) == ("waiting", reason)
    assert audited(rt, "event.waiting", first.id) == [{"occurred_at": "2026-02-07T00:00:00.000000Z",
                                                       "due_at": "2026-02-06T23:00:00.000000Z", "reason": reason}]
    assert {event(rt, f"next-week-{n}").status for n in range(25)} == {"waiting"}


def test_a_reversal_waits_behind_the_future_win_it_takes_back(make_runtime: Any, clock: Clock) -> None:
    """A deal marked won with a close date next month, then reopened today: the reversal is not calculated before
    the win (it would find nothing to take back, and the win would be paid later)."""
    rt = make_runtime(SOURCE + FLAT)
    ingest(rt, deal("o1", START + timedelta(days=30)),
           deal("o1", START, transition="reversed:1", event_type="deal_reversed"),
           deal("o2", START - timedelta(days=2)))
    calculate(rt)
    with rt.engine.connect() as conn:
        won, reversal = conn.execute(select(events).where(events.c.object_id == "o1").order_by(events.c.id)).all()
    assert (won.status, reversal.status) == ("waiting", "waiting")
    assert reversal.reason == (f"waits for event {won.id} of the same Opportunity o1, which waits: the events of a "
                               "CRM object are calculated in the order they were ingested")
    assert audited(rt, "event.waiting", reversal.id)[0]["after_event"] == won.id
    assert paid(rt, "o2") == [(1000, "pending")]  # other objects go on

    clock.now = START + timedelta(days=29)
    calculate(rt)
    with rt.engine.connect() as conn:
        assert [r.status for r in conn.execute(select(events.c.status).where(events.c.object_id == "o1"))] == [
            "calculated", "calculated"]
        reversed_calc = conn.execute(select(calculations.c.status, calculations.c.reason).where(
            calculations.c.event_id == reversal.id)).one()
    [(_, won_status)] = [r for r in paid(rt, "o1") if r[0] > 0]
    assert won_status == "cancelled"  # the win was taken back before it was ever paid
    assert reversed_calc.status == "rewarded" and reversed_calc.reason.startswith("cancelled unpaid rewards")


def test_the_waiting_selections_go_through_the_status_date_index(make_runtime: Any) -> None:
    """No selection reads the waiting events to find the due ones (SQLite's query plans: no scan of events)."""
    rt = make_runtime(SOURCE + FLAT)
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("the plans are read from SQLite; PostgreSQL's depend on its statistics")
    with rt.engine.connect() as conn:
        due = _plan(conn, event_store.due_waiting(conn.dialect.name, START, 10))
        assert due.startswith("SEARCH events USING INDEX ix_events_status_occurred (status=? AND occurred_at<?)"), due
        following = _plan(conn, event_store.next_ingested(conn.dialect.name, START, 10))
        assert following.startswith("SEARCH events USING INDEX ix_events_status_id (status=?)"), following
        for plan in (due, following):
            assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan  # the index order: nothing read to sort


def _plan(conn: Connection, query: Select[Any]) -> str:
    compiled = query.compile(conn)
    params = compiled.construct_params()
    values = tuple(str(params[name]) if not isinstance(params[name], int) else params[name]
                   for name in compiled.positiontup or ())
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), values).all()
    return "\n".join(row[-1] for row in rows)
