"""Invariant 4 (paid at most once, never lost) with the in-memory FakeRail, plus the audit trail of each payout."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.clock import utcnow
from payhub.db.schema import attempts, audit_log, payouts, rewards
from payhub.payees import sync_payees
from payhub.pipeline import disburse
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import schedule_batch
from payhub.runtime import Runtime
from payhub.testing import FakeRail
from payhub.worker import Worker

BASE = """
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [routing]
    default_rail = "r"
"""
RAIL_DEFAULTS: dict[str, Any] = {"max_attempts": 3, "retry_initial_seconds": 0, "retry_max_seconds": 0}

# payouts.status -> the audit action that records it
STATE_ACTIONS = {"scheduled": "payout.created"}


@pytest.fixture
def setup(make_runtime, tmp_path: Path):
    """``setup(extra="", **rail_settings)``: a runtime whose rail ``r`` is a FakeRail; returns (rt, rail)."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\np3,Three,IT\n")

    def factory(extra: str = "", **rail_settings: Any) -> tuple[Runtime, FakeRail]:
        values = {**RAIL_DEFAULTS, **rail_settings}
        rail = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
        rt = make_runtime(BASE + extra + '\n[rails.r]\nplugin = "fake"\n' + rail)
        return rt, rt.plugins.rails["r"]

    return factory


def schedule(rt: Runtime, *amounts: tuple[str, str]) -> list[Any]:
    """Ingest one deal per (payee, amount), calculate and schedule; return the payout rows (one per payee)."""
    source = rt.plugins.sources["s"]
    start = len(source.records)
    source.push(*(SourceRecord("Opportunity", f"o{start + i}", "won", "deal_won", "2026-10-01T00:00:00Z", payee,
                               amount, "EUR") for i, (payee, amount) in enumerate(amounts)))
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass
    sync_payees(rt)
    while schedule_batch(rt):
        pass
    return all_payouts(rt)


def all_payouts(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(payouts).order_by(payouts.c.id)).all()


def payout(rt: Runtime, payout_id: int) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(payouts).where(payouts.c.id == payout_id)).one()


def history(rt: Runtime, payout_id: int) -> list[str]:
    with rt.engine.connect() as conn:
        return conn.execute(select(audit_log.c.action).where(
            audit_log.c.subject_type == "payout", audit_log.c.subject_id == str(payout_id)
        ).order_by(audit_log.c.seq)).scalars().all()


def attempt_rows(rt: Runtime, payout_id: int) -> list[tuple[str, int, str | None]]:
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(attempts.c.kind, attempts.c.number, attempts.c.outcome)
            .where(attempts.c.payout_id == payout_id).order_by(attempts.c.id))]


def reward_states(rt: Runtime, payout_id: int) -> list[tuple[str, str | None, str | None]]:
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(rewards.c.status, rewards.c.hold_code, rewards.c.hold_reason)
            .where(rewards.c.payout_id == payout_id).order_by(rewards.c.id))]


def assert_audited(rt: Runtime) -> None:
    """The audit chain verifies and each payout's current state is the last state its audit trail records."""
    with rt.engine.connect() as conn:
        result = verify(conn)
    assert result.ok, result.problem
    for row in all_payouts(rt):
        changes = [a for a in history(rt, row.id) if a != "payout.lookup"]
        assert changes[0] == "payout.created"
        assert changes[-1] == STATE_ACTIONS.get(row.status, f"payout.{row.status}"), (row.status, changes)


def test_sent_once_with_the_key_fixed_at_scheduling(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "120.50"), ("p1", "30.00"))
    assert (p.status, p.amount_minor, p.item_count, p.attempts) == ("scheduled", 15050, 2, 0)
    key = p.idempotency_key
    with rt.engine.connect() as conn:
        created = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "payout.created")).scalar_one()
    assert json.loads(created)["key"] == key
    assert disburse_rail(rt, "r") == 1
    assert rail.calls == [[key]]
    assert rail.accepted == {key: 1}
    p = payout(rt, p.id)
    assert (p.status, p.attempts, p.provider_ref, p.reason) == ("sent", 1, f"fake-{key[-8:]}", None)
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.sent"]
    assert attempt_rows(rt, p.id) == [("send", 1, "accepted")]
    assert [s for s, _c, _r in reward_states(rt, p.id)] == ["sent", "sent"]
    assert disburse_rail(rt, "r") == 0
    assert rail.calls == [[key]]
    assert_audited(rt)


def test_timeout_after_accept_is_resolved_by_lookup(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_after_accept")
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key]]  # never sent again
    assert rail.accepted == {key: 1}
    assert payout(rt, p.id).status == "sent"
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.unknown", "payout.lookup",
                                 "payout.sent"]
    assert attempt_rows(rt, p.id) == [("send", 1, "unknown"), ("lookup", 1, "accepted")]
    assert_audited(rt)


def test_timeout_before_accept_resends_with_same_key(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_before_accept")
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key], [key]]
    assert rail.accepted == {key: 1}
    p = payout(rt, p.id)
    assert (p.status, p.attempts) == ("sent", 2)
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.unknown", "payout.lookup",
                                 "payout.sending", "payout.sent"]
    assert attempt_rows(rt, p.id) == [("send", 1, "unknown"), ("lookup", 1, "not_found"), ("send", 2, "accepted")]
    assert_audited(rt)


def test_failed_lookup_is_retried_before_any_new_send(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_after_accept", "lookup_fails")
    disburse_rail(rt, "r")
    assert rail.calls == [[p.idempotency_key]]
    assert rail.accepted == {p.idempotency_key: 1}
    assert payout(rt, p.id).status == "sent"
    assert_audited(rt)


def test_retryable_errors_are_retried_then_succeed(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("retryable", "retryable")
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key]] * 3
    assert rail.accepted == {key: 1}
    p = payout(rt, p.id)
    assert (p.status, p.attempts) == ("sent", 3)
    assert history(rt, p.id) == ["payout.created"] + ["payout.sending", "payout.retrying"] * 2 + [
        "payout.sending", "payout.sent"]
    assert_audited(rt)


def test_retries_are_bounded_then_fail_with_rewards_held(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"), ("p1", "5"))
    rail.plan("retryable", "retryable", "retryable", "retryable")
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key]] * 3  # max_attempts
    assert not rail.accepted
    p = payout(rt, p.id)
    reason = "retries exhausted after 3 attempts: provider busy (503)"
    assert (p.status, p.attempts, p.reason) == ("failed", 3, reason)
    assert reward_states(rt, p.id) == [("held", "payout_failed", f"payout {p.id} failed: {reason}")] * 2
    assert history(rt, p.id)[-1] == "payout.failed"
    # a failed payout is never sent again, and its held rewards are not re-scheduled on their own
    assert disburse_rail(rt, "r") == 0
    assert schedule_batch(rt) == 0
    assert rail.calls == [[key]] * 3
    assert len(all_payouts(rt)) == 1
    assert_audited(rt)


def test_retries_back_off_exponentially(setup) -> None:
    rt, rail = setup(retry_initial_seconds=2, retry_max_seconds=5, max_attempts=4)
    [p] = schedule(rt, ("p1", "100"))
    waits: list[float] = []
    rt.sleep = waits.append  # type: ignore[method-assign]
    rail.plan("retryable", "retryable", "retryable")
    disburse_rail(rt, "r")
    assert payout(rt, p.id).status == "sent"
    assert len(rail.calls) == 4
    assert len(waits) == 3
    assert 2 <= waits[0] <= 3  # 2 s plus up to 1 s of jitter
    assert 4 <= waits[1] <= 5
    assert waits[2] == 5  # capped at retry_max_seconds


def test_permanent_error_stops_at_once(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("permanent")
    disburse_rail(rt, "r")
    assert rail.calls == [[p.idempotency_key]]
    assert not rail.accepted
    p = payout(rt, p.id)
    assert (p.status, p.reason, p.attempts) == ("rejected", "account closed", 1)
    assert reward_states(rt, p.id) == [("held", "payout_failed", f"payout {p.id} rejected: account closed")]
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.rejected"]
    assert attempt_rows(rt, p.id) == [("send", 1, "rejected")]
    assert disburse_rail(rt, "r") == 0
    assert len(rail.calls) == 1
    assert_audited(rt)


def test_rejected_payout_shows_reason(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("reject")
    disburse_rail(rt, "r")
    assert len(rail.calls) == 1
    assert (payout(rt, p.id).status, payout(rt, p.id).reason) == ("rejected", "invalid beneficiary")
    assert_audited(rt)


def test_duplicate_responses_do_not_double_record(setup) -> None:
    rt, rail = setup()
    p1, p2 = schedule(rt, ("p1", "100"), ("p2", "200"))
    rail.plan("duplicate")
    assert disburse_rail(rt, "r") == 2
    assert rail.calls == [[p1.idempotency_key, p2.idempotency_key]]
    assert rail.accepted == {p1.idempotency_key: 1, p2.idempotency_key: 1}
    for p in (p1, p2):
        assert payout(rt, p.id).status == "sent"
        assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.sent"]
        assert attempt_rows(rt, p.id) == [("send", 1, "accepted")]
    with rt.engine.connect() as conn:
        sent = conn.execute(select(audit_log.c.subject_id).where(audit_log.c.action == "payout.sent")).all()
    assert len(sent) == 2
    assert disburse_rail(rt, "r") == 0
    assert_audited(rt)


def test_missing_result_is_unknown_and_looked_up(setup, monkeypatch) -> None:
    rt, rail = setup()
    p1, p2 = schedule(rt, ("p1", "100"), ("p2", "200"))
    send = rail.send
    monkeypatch.setattr(rail, "send", lambda instructions: send(instructions)[:1])  # one answer is lost
    disburse_rail(rt, "r")
    assert rail.calls == [[p1.idempotency_key, p2.idempotency_key]]
    assert rail.accepted == {p1.idempotency_key: 1, p2.idempotency_key: 1}
    assert history(rt, p1.id) == ["payout.created", "payout.sending", "payout.sent"]
    assert history(rt, p2.id) == ["payout.created", "payout.sending", "payout.unknown", "payout.lookup",
                                  "payout.sent"]
    assert payout(rt, p2.id).status == "sent"
    assert_audited(rt)


def test_rail_bug_while_sending_is_an_unknown_outcome(setup, monkeypatch) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    send = rail.send

    def buggy(instructions: Any) -> Any:
        send(instructions)
        raise KeyError("status")  # the plugin broke after the provider accepted

    monkeypatch.setattr(rail, "send", buggy)
    disburse_rail(rt, "r")
    assert rail.calls == [[p.idempotency_key]]
    assert rail.accepted == {p.idempotency_key: 1}
    assert attempt_rows(rt, p.id) == [("send", 1, "unknown"), ("lookup", 1, "accepted")]
    assert payout(rt, p.id).status == "sent"
    assert_audited(rt)


def test_crash_after_attempt_committed_before_send(setup) -> None:
    """The attempt was committed, then the process died before the request left: lookup, then the same key."""
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    with rt.transaction() as tx:
        tx.conn.execute(update(payouts).where(payouts.c.id == p.id).values(status="sending", attempts=1))
        tx.conn.execute(attempts.insert().values(payout_id=p.id, kind="send", number=1, started_at=utcnow()))
        tx.audit("payout.sending", "payout", p.id, {"attempt": 1, "key": p.idempotency_key})
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key]]
    assert rail.accepted == {key: 1}
    p = payout(rt, p.id)
    assert (p.status, p.attempts) == ("sent", 2)
    assert attempt_rows(rt, p.id) == [("send", 1, None), ("lookup", 1, "not_found"), ("send", 2, "accepted")]
    assert_audited(rt)


class Crash(BaseException):
    """Stands for the process dying (kill -9): nothing in the pipeline handles it."""


def test_crash_after_rail_accepted_is_resolved_by_lookup(setup, monkeypatch) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    key = p.idempotency_key

    def die(*_args: Any, **_kwargs: Any) -> None:
        raise Crash()

    monkeypatch.setattr(disburse, "_apply", die)  # the rail answered, the process died before recording it
    with pytest.raises(Crash):
        disburse_rail(rt, "r")
    monkeypatch.undo()
    assert rail.accepted == {key: 1}
    assert payout(rt, p.id).status == "sending"
    # the dead process still holds its lease: nobody touches the payout until it expires
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == p.id).values(
            lease_owner="dead-host:1:0", lease_until=utcnow() + timedelta(minutes=5)))
    assert disburse_rail(rt, "r") == 0
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == p.id).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert disburse_rail(rt, "r") == 1
    assert rail.calls == [[key]]
    assert rail.accepted == {key: 1}
    p = payout(rt, p.id)
    assert (p.status, p.attempts) == ("sent", 1)
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.lookup", "payout.sent"]
    assert_audited(rt)


def test_restarted_worker_resolves_crashed_send(setup, monkeypatch) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    monkeypatch.setattr(disburse, "_apply", lambda *a, **k: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        disburse_rail(rt, "r")
    monkeypatch.undo()
    for _ in range(2):
        worker = Worker(rt)
        worker.start()
        worker.run_once()
        worker.stop()
    assert rail.calls == [[p.idempotency_key]]
    assert rail.accepted == {p.idempotency_key: 1}
    assert payout(rt, p.id).status == "sent"
    assert_audited(rt)


@pytest.mark.parametrize("fault", ["timeout_after_accept", "timeout_before_accept"])
def test_unknown_outcome_without_lookup_or_dedup_is_unresolved(setup, fault: str) -> None:
    rt, rail = setup(lookup=False)
    [p] = schedule(rt, ("p1", "100"))
    rail.plan(fault)
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key]]
    p = payout(rt, p.id)
    assert p.status == "unresolved"
    assert "cannot look payouts up" in p.reason
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.unknown", "payout.unresolved"]
    for _ in range(2):  # never sent again, whatever runs later
        assert disburse_rail(rt, "r") == 0
        worker = Worker(rt)
        worker.start()
        worker.run_once()
        worker.stop()
    assert rail.calls == [[key]]
    assert payout(rt, p.id).status == "unresolved"
    assert_audited(rt)


def test_unknown_outcome_inside_dedup_window_resends_same_key(setup) -> None:
    rt, rail = setup(lookup=False, dedup_window_seconds=3600)
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_before_accept")
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key], [key]]
    assert payout(rt, p.id).status == "sent"
    assert_audited(rt)


def test_unknown_outcome_past_dedup_window_is_unresolved(setup) -> None:
    rt, rail = setup(lookup=False, dedup_window_seconds=3600)
    [p] = schedule(rt, ("p1", "100"))
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == p.id).values(created_at=utcnow() - timedelta(hours=2)))
    rail.plan("timeout_before_accept")
    disburse_rail(rt, "r")
    assert rail.calls == [[p.idempotency_key]]
    assert payout(rt, p.id).status == "unresolved"
    assert_audited(rt)


def test_screening_hook_holds_payout(setup) -> None:
    rt, rail = setup(extra="[hooks.deny_big]\n")
    big, small = schedule(rt, ("p1", "1000.01"), ("p2", "1000.00"))
    assert disburse_rail(rt, "r") == 2
    assert rail.calls == [[small.idempotency_key]]
    big, small = payout(rt, big.id), payout(rt, small.id)
    assert (big.status, big.reason, big.attempts) == ("held", "over screening limit 1000", 0)
    assert small.status == "sent"
    assert history(rt, big.id) == ["payout.created", "payout.held"]
    assert disburse_rail(rt, "r") == 0
    assert rail.calls == [[small.idempotency_key]]
    assert big.idempotency_key not in rail.accepted
    assert_audited(rt)


def test_hanging_rail_leaves_payout_unknown_then_lookup_resolves(setup) -> None:
    rt, rail = setup(timeout_seconds=0.3)
    [p] = schedule(rt, ("p1", "100"))
    key = p.idempotency_key
    rail.plan("hang")
    try:
        started = time.monotonic()
        disburse_rail(rt, "r")
        assert time.monotonic() - started < 5
        p = payout(rt, p.id)
        assert p.status == "unknown"
        assert "did not answer within 0.3s" in p.reason
        assert rail.calls == [[key]]
        assert not rail.accepted
        # while the abandoned call may still go through, nothing is sent or looked up on this rail
        assert disburse_rail(rt, "r") == 0
        assert rail.calls == [[key]]
        assert payout(rt, p.id).status == "unknown"
    finally:
        rail.release.set()
    guard = rt.guard("rail r", 0.3)
    deadline = time.monotonic() + 5
    while guard.busy and time.monotonic() < deadline:  # the abandoned call goes through late
        time.sleep(0.01)
    assert rail.accepted == {key: 1}
    assert disburse_rail(rt, "r") == 1
    assert rail.calls == [[key]]
    assert rail.accepted == {key: 1}
    p = payout(rt, p.id)
    assert (p.status, p.attempts) == ("sent", 1)
    assert history(rt, p.id)[-2:] == ["payout.lookup", "payout.sent"]
    assert_audited(rt)


def test_mixed_batch_through_worker(setup) -> None:
    """Several payouts with different fates in one pass; each is paid at most once and fully audited."""
    rt, rail = setup(extra="[hooks.deny_big]\n")
    rail.plan("timeout_after_accept", "retryable")
    rt.plugins.sources["s"].push(
        SourceRecord("Opportunity", "a", "won", "deal_won", "2026-10-01T00:00:00Z", "p1", "10", "EUR"),
        SourceRecord("Opportunity", "b", "won", "deal_won", "2026-10-01T00:00:00Z", "p2", "20", "EUR"),
        SourceRecord("Opportunity", "c", "won", "deal_won", "2026-10-01T00:00:00Z", "p3", "5000", "EUR"),
        SourceRecord("Opportunity", "d", "won", "deal_won", "2026-10-01T00:00:00Z", "nobody", "30", "EUR"),
    )
    worker = Worker(rt)
    worker.start()
    worker.run_once()
    worker.run_once()
    worker.stop()
    states = {r.payee_id: r.status for r in all_payouts(rt)}
    assert states == {"p1": "sent", "p2": "sent", "p3": "held"}
    assert set(rail.accepted.values()) == {1}
    assert len(rail.accepted) == 2
    with rt.engine.connect() as conn:
        held = conn.execute(select(rewards.c.status, rewards.c.hold_code).where(rewards.c.payee_id == "nobody")).all()
    assert held == [("held", "no_payee")]
    assert_audited(rt)


def test_unknown_outcomes_inside_dedup_window_never_become_failed(setup) -> None:
    """Without lookup, running out of attempts on unknown outcomes is unresolved, never a failure owed again."""
    rt, rail = setup(lookup=False, dedup_window_seconds=3600)
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_after_accept", "timeout_after_accept", "timeout_after_accept")
    disburse_rail(rt, "r")
    key = p.idempotency_key
    assert rail.calls == [[key]] * 3  # re-sent with the same key inside the provider's dedup window
    p = payout(rt, p.id)
    assert p.status == "unresolved"
    assert "cannot look payouts up" in p.reason
    assert [s for s, _c, _r in reward_states(rt, p.id)] == ["scheduled"]  # not released as owed again
    assert disburse_rail(rt, "r") == 0
    assert len(rail.calls) == 3
    assert_audited(rt)
