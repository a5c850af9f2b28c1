"""Invariant 2 (each (program, event) calculated once, in the event's transaction) and invariant 3 for rewards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.db.schema import audit_log, calculations, events, payout_items, payouts, program_versions, rewards
from payhub.money import from_minor
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions, retry_failed
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import schedule_batch
from payhub.runtime import Runtime
from payhub.store.audit import AuditWriter
from payhub.worker import Worker

SOURCE = """
    [sources.s]
    plugin = "fake"
"""
FLAT = """
    [programs.flat]
    calculator = "flat"
    amount = "{amount}"
    currency = "EUR"
"""


def deal(object_id: str, amount: str = "100.00", currency: str = "EUR", payee: str = "p1") -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-10-01T00:00:00Z", payee, amount, currency)


def rows(rt: Runtime, query: Any) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(query).all()


def count(rt: Runtime, table: Any) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def ingest_and_calculate(rt: Runtime) -> int:
    poll(rt, "s")
    versions = register_program_versions(rt)
    done = 0
    while n := calculate_batch(rt, versions):
        done += n
    return done


def audit_ok(rt: Runtime) -> bool:
    with rt.engine.connect() as conn:
        return verify(conn).ok


def test_calculating_twice_adds_nothing(make_runtime) -> None:
    rt = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt.plugins.sources["s"].push(deal("1"), deal("2"), deal("3"))
    poll(rt, "s")
    versions = register_program_versions(rt)
    assert calculate_batch(rt, versions) == 3
    assert calculate_batch(rt, versions) == 0
    assert calculate_batch(rt, register_program_versions(rt)) == 0
    assert count(rt, calculations) == 3
    assert count(rt, rewards) == 3
    assert [r.status for r in rows(rt, select(events.c.status))] == ["calculated"] * 3
    assert rows(rt, select(func.sum(rewards.c.amount_minor)))[0][0] == 7500


def test_batches_calculate_each_event_once(make_runtime) -> None:
    rt = make_runtime(SOURCE + FLAT.format(amount="1"))
    rt.plugins.sources["s"].push(*(deal(str(i)) for i in range(7)))
    poll(rt, "s")
    versions = register_program_versions(rt)
    done = []
    while n := calculate_batch(rt, versions, limit=3):
        done.append(n)
    assert done == [3, 3, 1]
    assert rows(rt, select(rewards.c.event_id).order_by(rewards.c.event_id)) == \
        rows(rt, select(events.c.id).order_by(events.c.id))


def test_restarted_worker_adds_nothing(make_runtime) -> None:
    rt = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt.plugins.sources["s"].push(deal("1"), deal("2"))
    for expected in (2, 0, 0):
        worker = Worker(rt)
        worker.start()
        worker.run_once()
        worker.stop()
        assert worker.summary.counts["calculated"] == expected
    # a new process on the same database (its source re-reads everything from the start)
    rt2 = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt2.plugins.sources["s"].push(deal("1"), deal("2"))
    worker = Worker(rt2)
    worker.start()
    worker.run_once()
    worker.stop()
    assert worker.summary.counts["calculated"] == 0
    assert count(rt2, calculations) == 2
    assert count(rt2, rewards) == 2
    assert count(rt2, program_versions) == 1


def test_replayed_event_is_not_calculated_again(make_runtime) -> None:
    """Even if an event is put back to ``ingested``, the (program, event) pair is never rewarded twice."""
    rt = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt.plugins.sources["s"].push(deal("1"), deal("2"))
    assert ingest_and_calculate(rt) == 2
    with rt.engine.begin() as conn:
        conn.execute(update(events).values(status="ingested"))
    versions = register_program_versions(rt)
    assert calculate_batch(rt, versions) == 2  # programs already calculated for an event are skipped
    assert count(rt, calculations) == 2
    assert count(rt, rewards) == 2
    assert rows(rt, select(events.c.status).distinct()) == [("calculated",)]


def test_calculation_unique_per_program_and_event(make_runtime) -> None:
    rt = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt.plugins.sources["s"].push(deal("1"))
    ingest_and_calculate(rt)
    calc = rows(rt, select(calculations))[0]
    with pytest.raises(IntegrityError), rt.engine.begin() as conn:
        conn.execute(calculations.insert().values(
            event_id=calc.event_id, program=calc.program, program_version_id=calc.program_version_id,
            status="rewarded", calculated_at=calc.calculated_at))
    assert count(rt, calculations) == 1


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the pipeline handles it."""


def test_rewards_commit_with_event_state(make_runtime, monkeypatch) -> None:
    """A failure after the rewards were written but before commit leaves no reward and no status change."""
    rt = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt.plugins.sources["s"].push(deal("1"), deal("2"))
    poll(rt, "s")
    versions = register_program_versions(rt)
    with rt.engine.connect() as conn:
        head_before = verify(conn).head_seq
    original = AuditWriter.append

    def failing_append(self: AuditWriter, conn: Any, entries: Any) -> Any:
        entries = list(entries)
        if any(e.action == "event.calculated" for e in entries):
            written = conn.execute(select(func.count()).select_from(rewards)).scalar_one()
            assert written == 2  # the rewards and the status change are in this very transaction
            raise Crash()
        return original(self, conn, entries)

    monkeypatch.setattr(AuditWriter, "append", failing_append)
    with pytest.raises(Crash):
        calculate_batch(rt, versions)
    assert count(rt, rewards) == 0
    assert count(rt, calculations) == 0
    assert [r.status for r in rows(rt, select(events.c.status))] == ["ingested", "ingested"]
    with rt.engine.connect() as conn:
        assert verify(conn).head_seq == head_before

    monkeypatch.setattr(AuditWriter, "append", original)
    assert calculate_batch(rt, versions) == 2
    assert count(rt, rewards) == 2
    assert calculate_batch(rt, versions) == 0
    assert count(rt, rewards) == 2
    assert audit_ok(rt)


def test_calculator_crash_mid_batch_leaves_no_partial_rewards(make_runtime, monkeypatch) -> None:
    rt = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt.plugins.sources["s"].push(deal("1"), deal("2"), deal("3"))
    poll(rt, "s")
    versions = register_program_versions(rt)
    calculator = rt.plugins.calculators["flat"]
    original = type(calculator).calculate

    def dying(event: Any, history: Any) -> Any:
        if event.object_id == "3":
            raise Crash()
        return original(calculator, event, history)

    monkeypatch.setattr(calculator, "calculate", dying)
    with pytest.raises(Crash):
        calculate_batch(rt, versions)
    assert count(rt, rewards) == 0
    assert count(rt, calculations) == 0
    assert {r.status for r in rows(rt, select(events.c.status))} == {"ingested"}
    monkeypatch.undo()
    assert calculate_batch(rt, versions) == 3
    assert count(rt, rewards) == 3


def test_raising_calculator_fails_only_its_pair(make_runtime) -> None:
    rt = make_runtime(SOURCE + FLAT.format(amount="25") + """
        [programs.buggy]
        calculator = "raising"
    """)
    rt.plugins.sources["s"].push(deal("a"), deal("x-boom"), deal("b"))
    assert ingest_and_calculate(rt) == 3
    found = {(r.object_id, r.program): (r.status, r.reason) for r in rows(rt, select(
        events.c.object_id, calculations.c.program, calculations.c.status, calculations.c.reason,
    ).join(events, events.c.id == calculations.c.event_id))}
    assert found == {
        ("a", "flat"): ("rewarded", None),
        ("x-boom", "flat"): ("rewarded", None),
        ("b", "flat"): ("rewarded", None),
        ("a", "buggy"): ("not_eligible", "the calculator returned no reward line"),
        ("x-boom", "buggy"): ("failed", "calculator error: ZeroDivisionError: bug in calculator"),
        ("b", "buggy"): ("not_eligible", "the calculator returned no reward line"),
    }
    assert {r.status for r in rows(rt, select(events.c.status))} == {"calculated"}
    assert count(rt, rewards) == 3
    with rt.engine.connect() as conn:
        boom_id = conn.execute(select(events.c.id).where(events.c.object_id == "x-boom")).scalar_one()
        entry = conn.execute(select(audit_log.c.detail).where(
            audit_log.c.action == "event.calculated", audit_log.c.subject_id == str(boom_id))).scalar_one()
    assert json.loads(entry)["programs"] == {
        "flat": "rewarded", "buggy": "failed: calculator error: ZeroDivisionError: bug in calculator"}
    assert audit_ok(rt)


def test_calculation_error_is_recorded(make_runtime) -> None:
    rt = make_runtime(SOURCE + """
        [programs.pct]
        calculator = "percentage"
        percent = "10"
    """)
    rt.plugins.sources["s"].push(deal("1"), SourceRecord("Lead", "2", "converted", "referral",
                                                         "2026-10-01T00:00:00Z", "p1"))
    assert ingest_and_calculate(rt) == 2
    assert sorted(rows(rt, select(calculations.c.status, calculations.c.reason))) == [
        ("failed", "the event has no amount to take a percentage of"), ("rewarded", None)]


def test_program_version_recorded_and_change_applies_to_new_events_only(make_runtime) -> None:
    rt = make_runtime(SOURCE + FLAT.format(amount="25"))
    rt.plugins.sources["s"].push(deal("1"), deal("2"))
    ingest_and_calculate(rt)
    v1 = rows(rt, select(program_versions))
    assert [(v.program, v.version, v.calculator) for v in v1] == [("flat", 1, "flat")]
    assert json.loads(v1[0].params)["amount"] == "25"
    assert register_program_versions(rt) == {"flat": v1[0].id}  # same parameters: same version
    assert count(rt, program_versions) == 1

    rt2 = make_runtime(SOURCE + FLAT.format(amount="40"))  # the admin changed the program
    rt2.plugins.sources["s"].push(deal("1"), deal("2"), deal("3"))  # the CRM re-sends the old deals too
    ingest_and_calculate(rt2)
    versions = rows(rt2, select(program_versions).order_by(program_versions.c.version))
    assert [(v.program, v.version) for v in versions] == [("flat", 1), ("flat", 2)]
    assert json.loads(versions[1].params)["amount"] == "40"
    by_event = {r.object_id: (r.version, r.amount_minor) for r in rows(rt2, select(
        events.c.object_id, program_versions.c.version, rewards.c.amount_minor,
    ).select_from(rewards.join(calculations, (calculations.c.program == rewards.c.program)
                               & (calculations.c.event_id == rewards.c.event_id))
                  .join(program_versions, program_versions.c.id == calculations.c.program_version_id)
                  .join(events, events.c.id == rewards.c.event_id)))}
    assert by_event == {"1": (1, 2500), "2": (1, 2500), "3": (2, 4000)}
    with rt2.engine.connect() as conn:
        created = conn.execute(select(audit_log.c.detail).where(
            audit_log.c.action == "program.version_created").order_by(audit_log.c.seq)).scalars().all()
    assert [json.loads(d)["version"] for d in created] == [1, 2]
    # going back to the first parameters reuses version 1
    rt3 = make_runtime(SOURCE + FLAT.format(amount="25"))
    assert register_program_versions(rt3) == {"flat": v1[0].id}
    assert audit_ok(rt3)


@pytest.mark.parametrize(("amount", "currency", "minor", "shown"), [
    ("1001", "JPY", 501, "501"),  # 500.5 -> 501 (half-even would give 500)
    ("10.01", "EUR", 501, "5.01"),  # 5.005 -> 5.01 (half-even would give 5.00)
    ("10.001", "BHD", 5001, "5.001"),  # 5.0005 -> 5.001 (half-even would give 5.000)
    ("0.03", "EUR", 2, "0.02"),  # 0.015 -> 0.02
    ("0.01", "EUR", 1, "0.01"),  # 0.005 -> 0.01: half a cent rounds up, never to nothing
    ("3", "JPY", 2, "2"),  # 1.5 -> 2
])
def test_rewards_rounded_half_up_to_minor_units(make_runtime, amount: str, currency: str, minor: int,
                                                shown: str) -> None:
    rt = make_runtime(SOURCE + """
        [programs.half]
        calculator = "percentage"
        percent = "50"
    """)
    rt.plugins.sources["s"].push(deal("1", amount=amount, currency=currency))
    ingest_and_calculate(rt)
    assert rows(rt, select(rewards.c.amount_minor, rewards.c.currency)) == [(minor, currency)]
    with rt.engine.connect() as conn:
        detail = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "reward.calculated")).scalar()
    assert json.loads(detail)["amount"] == shown
    assert str(from_minor(minor, currency)) == shown


def test_payout_amount_is_sum_of_items(make_runtime, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,JP\n")
    rt = make_runtime(SOURCE + """
        [payees]
        file = "payees.csv"
        [programs.pct]
        calculator = "percentage"
        percent = "3.3"
        [rails.r]
        plugin = "fake"
        [routing]
        default_rail = "r"
    """)
    amounts = ["10.01", "0.15", "999.99", "0.10", "33.33", "12.345"]
    rt.plugins.sources["s"].push(
        *(deal(f"e{i}", a) for i, a in enumerate(amounts)),
        *(deal(f"j{i}", a, "JPY", "p2") for i, a in enumerate(["15", "1", "7777"])),
        *(deal(f"b{i}", a, "BHD", "p2") for i, a in enumerate(["1.005", "0.015"])),
    )
    ingest_and_calculate(rt)
    sync_payees(rt)
    # rewards that round to zero are not recorded (nothing to pay): 6 of the 11 lines remain
    assert schedule_batch(rt) == 6
    assert schedule_batch(rt) == 0
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rewards).where(rewards.c.amount_minor == 0)).scalar() == 0
    expected_minor = {  # each reward rounded half-up once, then summed exactly in minor units
        "EUR": 33 + 0 + 3300 + 0 + 110 + 41,  # 0.33033, 0.00495, 32.99967, 0.0033, 1.09989, 0.407385
        "JPY": 0 + 0 + 257,  # 0.495 -> 0, 0.033 -> 0, 256.641 -> 257
        "BHD": 33 + 0,  # 0.033165 -> 0.033, 0.000495 -> 0.000
    }
    found = rows(rt, select(payouts.c.id, payouts.c.payee_id, payouts.c.currency, payouts.c.amount_minor,
                            payouts.c.item_count))
    assert {(p.payee_id, p.currency): p.amount_minor for p in found} == {
        ("p1", "EUR"): expected_minor["EUR"], ("p2", "JPY"): expected_minor["JPY"],
        ("p2", "BHD"): expected_minor["BHD"]}
    for payout in found:
        items = rows(rt, select(payout_items.c.amount_minor).where(payout_items.c.payout_id == payout.id))
        linked = rows(rt, select(rewards.c.amount_minor).where(rewards.c.payout_id == payout.id))
        assert payout.amount_minor == sum(i[0] for i in items) == sum(r[0] for r in linked)
        assert payout.item_count == len(items) == len(linked)
    assert rows(rt, select(func.sum(payouts.c.amount_minor)))[0][0] == \
        rows(rt, select(func.sum(rewards.c.amount_minor)))[0][0]
    assert audit_ok(rt)


def test_history_includes_rewards_of_the_same_batch(make_runtime) -> None:
    """A cap read from history sees rewards calculated earlier in the same batch: 10 + 10 + 5, then nothing."""
    rt = make_runtime(SOURCE + """
        [programs.cap]
        calculator = "capped"
    """)
    rt.plugins.sources["s"].push(*(deal(str(i)) for i in range(4)))
    assert ingest_and_calculate(rt) == 4
    assert [r.amount_minor for r in rows(rt, select(rewards).order_by(rewards.c.id))] == [1000, 1000, 500]


def test_failed_calculations_run_again_on_retry(make_runtime, tmp_path: Path) -> None:
    """A program whose calculator could not load records failed calculations; once fixed, a retry rewards them
    while the programs that already rewarded the events add nothing."""
    body = SOURCE + FLAT.format(amount="5") + """
        [programs.bonus]
        calculator = "broken_calc"
    """
    rt = make_runtime(body)
    rt.plugins.sources["s"].push(deal("1"), deal("2"))
    assert ingest_and_calculate(rt) == 2
    failed = rows(rt, select(calculations.c.program, calculations.c.reason).where(calculations.c.status == "failed"))
    assert [f.program for f in failed] == ["bonus", "bonus"]
    assert "broken on purpose" in failed[0].reason
    assert count(rt, rewards) == 2

    fixed = make_runtime(body.replace('calculator = "broken_calc"', 'calculator = "flat"\n        amount = "7"\n'
                                      '        currency = "EUR"'), migrate_db=False)
    assert retry_failed(fixed, program="bonus") == 2
    assert ingest_and_calculate(fixed) == 2
    assert sorted(r.amount_minor for r in rows(fixed, select(rewards))) == [500, 500, 700, 700]
    assert rows(fixed, select(func.count()).select_from(calculations).where(calculations.c.status == "failed")) \
        == [(0,)]
    assert retry_failed(fixed) == 0
    with fixed.engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.action).where(audit_log.c.action == "calculation.retried")).all()
    assert len(actions) == 2
    assert audit_ok(fixed)
