"""Invariant 4 (paid at most once, never lost) with the in-memory FakeRail, plus the audit trail of each payout.

Each ``disburse_rail`` call works one round; :func:`drain` repeats it until nothing is due. Operator actions
(resolve, release, cancel) are checked against the same invariants.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from payhub.api import Outcome, RailResult, SourceRecord, hookimpl
from payhub.audit import verify
from payhub.cli import main
from payhub.clock import isoformat, utcnow
from payhub.db.schema import attempts, audit_log, payouts, rewards
from payhub.errors import PayhubError
from payhub.payees import sync_payees
from payhub.pipeline import disburse, payout_actions
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.testing import FakeRail
from payhub.worker import Worker

pytestmark = pytest.mark.slow  # the rail fault matrix, each case through the worker with backoffs

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
RAIL_DEFAULTS: dict[str, Any] = {"max_attempts": 3, "retry_initial_seconds": 0, "retry_max_seconds": 0,
                                 "lookup_settle_seconds": 0}  # a lookup's "not found" is trusted at once

# payouts.status -> the audit entries that may record it last (default: payout.<status>). A lookup that changes
# the state counts as payout.lookup:<outcome>, an operator's decision as payout.resolved:<new status>.
STATE_ACTIONS = {
    "scheduled": {"payout.created", "payout.released"},
    "retrying": {"payout.retrying", "payout.lookup:not_found", "payout.resolved:retrying"},
    "unknown": {"payout.unknown", "payout.lookup:unknown"},
    "sent": {"payout.sent", "payout.resolved:sent"},
    "paid": {"payout.paid", "payout.resolved:paid"},
}


@pytest.fixture
def setup(make_runtime, tmp_path: Path):
    """``setup(extra="", **rail_settings)``: a runtime whose rail ``r`` is a FakeRail; returns (rt, rail)."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\np3,Three,IT\n")

    def factory(extra: str = "", **rail_settings: Any) -> tuple[Runtime, FakeRail]:
        values = {**RAIL_DEFAULTS, **rail_settings}
        rail = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
        rt = make_runtime(BASE + '\n[rails.r]\nplugin = "fake"\n' + rail + extra)
        return rt, rt.plugins.rails["r"]

    return factory


@pytest.fixture
def operator():
    """``operator(rt, actor)``: a CLI runtime on the same database whose audit entries the operator signs."""
    made: list[Runtime] = []

    def factory(rt: Runtime, actor: str = "ops:alice") -> Runtime:
        ops = Runtime.for_cli(rt.settings, actor)
        made.append(ops)
        return ops

    yield factory
    for ops in made:
        ops.close()


def drain(rt: Runtime, rail: str = "r", limit: int = 50) -> int:
    """Work the rail round after round until nothing is due; return how many rounds claimed payouts."""
    for rounds in range(limit):
        if not disburse_rail(rt, rail):
            return rounds
    pytest.fail(f"rail {rail} still had payouts due after {limit} rounds")


def make_due(rt: Runtime, payout_id: int) -> None:
    """Let a payout's backoff run out."""
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == payout_id).values(
            next_attempt_at=utcnow() - timedelta(seconds=1)))


def assert_waits(row: Any, before: Any, after: Any, low: float, high: float) -> None:
    """The payout waits ``low`` to ``high`` seconds from a moment between ``before`` and ``after``."""
    assert row.next_attempt_at is not None
    assert before + timedelta(seconds=low) <= row.next_attempt_at <= after + timedelta(seconds=high), (
        row.next_attempt_at - before, row.next_attempt_at - after)


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
    return [e.action for e in trail(rt, payout_id)]


def trail(rt: Runtime, payout_id: int) -> list[Any]:
    """The payout's audit entries, oldest first."""
    with rt.engine.connect() as conn:
        return conn.execute(select(audit_log).where(
            audit_log.c.subject_type == "payout", audit_log.c.subject_id == str(payout_id)
        ).order_by(audit_log.c.seq)).all()


def operator_entry(rt: Runtime, action: str, payout_id: int) -> tuple[str, str, dict[str, Any]]:
    """(actor, origin, detail) of the payout's last audit entry for ``action``."""
    [*_, entry] = [e for e in trail(rt, payout_id) if e.action == action]
    return entry.actor, entry.origin, json.loads(entry.detail)


def audit_count(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


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
        changes = []
        for entry in trail(rt, row.id):
            if entry.action == "payout.lookup":
                if entry.outcome != "ok":  # a lookup that found a final state is followed by that state's entry
                    changes.append(f"payout.lookup:{entry.outcome}")
            elif entry.action == "payout.resolved":
                changes.append(f"payout.resolved:{json.loads(entry.detail)['to']}")
            else:
                changes.append(entry.action)
        assert changes[0] == "payout.created"
        assert changes[-1] in STATE_ACTIONS.get(row.status, {f"payout.{row.status}"}), (row.status, changes)


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
    assert disburse_rail(rt, "r") == 1
    row = payout(rt, p.id)
    assert (row.status, row.next_attempt_at) == ("unknown", None)  # looked up at once, before anything else
    assert drain(rt) == 1
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
    assert drain(rt) == 3  # send (unknown), lookup (not found), send again
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
    assert disburse_rail(rt, "r") == 1
    assert disburse_rail(rt, "r") == 1  # the lookup fails: the payout stays unknown, nothing is sent
    row = payout(rt, p.id)
    assert (row.status, row.attempts) == ("unknown", 1)
    assert row.reason == "lookup failed: RetryableRailError: lookup endpoint unavailable"
    assert rail.calls == [[p.idempotency_key]]
    # even with no backoff configured, a rail whose lookup failed is not asked again at once
    assert row.next_attempt_at > utcnow()
    assert disburse_rail(rt, "r") == 0
    make_due(rt, p.id)
    assert drain(rt) == 1
    assert rail.calls == [[p.idempotency_key]]
    assert rail.accepted == {p.idempotency_key: 1}
    assert payout(rt, p.id).status == "sent"
    assert_audited(rt)


def test_retryable_errors_are_retried_then_succeed(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("retryable", "retryable")
    assert drain(rt) == 3
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
    assert drain(rt) == 3
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
    """Each retryable result leaves the payout waiting; until its backoff runs out it is not claimed or sent."""
    rt, rail = setup(retry_initial_seconds=2, retry_max_seconds=5, max_attempts=4)
    [p] = schedule(rt, ("p1", "100"))
    key = p.idempotency_key
    rail.plan("retryable", "retryable", "retryable")
    # 2 s plus up to 2 s of jitter, then 4 s plus jitter capped at 5 s, then 8 s capped at 5 s
    for attempt, (low, high) in enumerate([(2, 4), (4, 5), (5, 5)], start=1):
        before = utcnow()
        assert disburse_rail(rt, "r") == 1
        after = utcnow()
        row = payout(rt, p.id)
        assert (row.status, row.attempts, row.reason) == ("retrying", attempt, "provider busy (503)")
        assert_waits(row, before, after, low, high)
        entry = trail(rt, p.id)[-1]
        assert entry.action == "payout.retrying"
        assert json.loads(entry.detail)["next_attempt_at"] == isoformat(row.next_attempt_at)
        assert disburse_rail(rt, "r") == 0  # waiting for its backoff: not claimed
        assert rail.calls == [[key]] * attempt
        make_due(rt, p.id)
    assert drain(rt) == 1
    row = payout(rt, p.id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("sent", 4, None)
    assert rail.calls == [[key]] * 4
    assert rail.accepted == {key: 1}
    assert_audited(rt)


def test_lookups_back_off_and_are_never_followed_by_an_early_send(setup, monkeypatch) -> None:
    """An unknown outcome is looked up at once; a failed or undecided lookup, or a payout not found, waits."""
    rt, rail = setup(retry_initial_seconds=2, retry_max_seconds=5)
    [p] = schedule(rt, ("p1", "100"))
    key = p.idempotency_key
    rail.plan("timeout_before_accept", "lookup_fails")
    assert disburse_rail(rt, "r") == 1
    row = payout(rt, p.id)
    assert (row.status, row.next_attempt_at) == ("unknown", None)

    def round_then_wait(expected_status: str) -> Any:
        before = utcnow()
        assert disburse_rail(rt, "r") == 1
        row = payout(rt, p.id)
        assert row.status == expected_status
        assert_waits(row, before, utcnow(), 2, 4)  # after one attempt: 2 s plus up to 2 s of jitter
        assert disburse_rail(rt, "r") == 0
        assert rail.calls == [[key]]
        make_due(rt, p.id)
        return row

    row = round_then_wait("unknown")  # the lookup failed
    assert row.reason == "lookup failed: RetryableRailError: lookup endpoint unavailable"
    lookup = rail.lookup
    monkeypatch.setattr(rail, "lookup", lambda keys: {k: RailResult(k, Outcome.UNKNOWN, reason="in review")
                                                      for k in keys})
    round_then_wait("unknown")  # the rail cannot tell yet
    monkeypatch.setattr(rail, "lookup", lookup)
    row = round_then_wait("retrying")  # not found: sent again with the same key, after the wait
    assert row.reason == "not received by the rail; will send again with the same key"
    assert drain(rt) == 1
    row = payout(rt, p.id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert rail.calls == [[key], [key]]
    assert rail.accepted == {key: 1}
    assert attempt_rows(rt, p.id) == [("send", 1, "unknown"), ("lookup", 1, "unknown"), ("lookup", 1, "not_found"),
                                      ("send", 2, "accepted")]
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.unknown", "payout.lookup",
                                 "payout.lookup", "payout.sending", "payout.sent"]
    assert_audited(rt)


def test_unknown_outcome_fails_only_once_the_rail_says_it_never_arrived(setup) -> None:
    """Out of attempts, a payout whose outcome is unknown is looked up first; only a payout not found fails."""
    rt, rail = setup(max_attempts=1)
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_before_accept")
    assert drain(rt) == 3  # send (unknown), lookup (not found), out of attempts
    assert rail.calls == [[p.idempotency_key]]
    assert not rail.accepted
    row = payout(rt, p.id)
    assert row.status == "failed"
    assert row.reason.startswith("retries exhausted after 1 attempts: ")
    assert [(s, c) for s, c, _r in reward_states(rt, p.id)] == [("held", "payout_failed")]
    assert attempt_rows(rt, p.id) == [("send", 1, "unknown"), ("lookup", 1, "not_found")]
    assert_audited(rt)


def test_permanent_error_stops_at_once(setup) -> None:
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("permanent")
    assert disburse_rail(rt, "r") == 1
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
    assert drain(rt) == 1
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
    assert drain(rt) == 2
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
    assert drain(rt) == 2
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
    assert drain(rt) == 2  # lookup (not found), then the send with the same key
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

    monkeypatch.setattr(disburse, "apply_results", die)  # the rail answered, the process died before recording it
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
    monkeypatch.setattr(disburse, "apply_results", lambda *a, **k: (_ for _ in ()).throw(Crash()))
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
    assert drain(rt) == 2
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
    assert drain(rt) == 2  # the unknown payout is sent again in the round that would have looked it up
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
    assert drain(rt) == 2
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
    assert drain(rt) == 4  # three sends, then out of attempts
    key = p.idempotency_key
    assert rail.calls == [[key]] * 3  # re-sent with the same key inside the provider's dedup window
    p = payout(rt, p.id)
    assert p.status == "unresolved"
    assert "cannot look payouts up" in p.reason
    assert [s for s, _c, _r in reward_states(rt, p.id)] == ["scheduled"]  # not released as owed again
    assert disburse_rail(rt, "r") == 0
    assert len(rail.calls) == 3
    assert_audited(rt)


class ScreenSpy:
    """A screening hook that allows everything and records what it was asked about."""

    def __init__(self) -> None:
        self.screened: list[int] = []

    @hookimpl
    def payhub_screen_payout(self, payout: Any) -> None:
        self.screened.append(payout.payout_id)


def test_released_payout_is_screened_again_and_sent_once_under_the_release(setup, operator) -> None:
    rt, rail = setup(extra="[hooks.deny_big]\n")
    spy = ScreenSpy()
    rt.plugins.hooks.register(spy)
    big, small = schedule(rt, ("p1", "1000.01"), ("p2", "1000.00"))
    assert drain(rt) == 1
    assert payout(rt, big.id).status == "held"
    assert sorted(spy.screened) == [big.id, small.id]
    ops = operator(rt)
    with pytest.raises(PayhubError, match=f"payout {small.id} is sent; only held payouts can be released"):
        payout_actions.release(ops, small.id, "x")

    # A screening hold: two different operators, each with a written justification.
    assert payout_actions.release(ops, big.id, "beneficiary verified by compliance").released is False
    assert payout(rt, big.id).status == "held"
    payout_actions.release(operator(rt, "ops:bob"), big.id, "second check: not the listed party")
    row = payout(rt, big.id)
    assert (row.status, row.released_by, row.attempts, row.hold_code) == (
        "scheduled", "ops:alice and ops:bob", 0, None)
    assert row.reason == "released by operators ops:alice and ops:bob: second check: not the listed party"
    actor, origin, detail = operator_entry(rt, "payout.released", big.id)
    assert (actor, detail["operators"], detail["justifications"], detail["covers"]) == (
        "ops:bob", ["ops:alice", "ops:bob"],
        ["beneficiary verified by compliance", "second check: not the listed party"], ["over screening limit 1000"])
    assert origin.startswith("cli@")
    assert_audited(rt)

    assert drain(rt) == 1
    assert sorted(spy.screened) == [big.id, big.id, small.id]  # screened again: denied as before, which was released
    released_seq = next(e.seq for e in trail(rt, big.id) if e.action == "payout.released")
    assert operator_entry(rt, "payout.sending", big.id)[2]["screening_override"] == released_seq
    assert rail.calls == [[small.idempotency_key], [big.idempotency_key]]
    assert rail.accepted == {small.idempotency_key: 1, big.idempotency_key: 1}
    assert payout(rt, big.id).status == "sent"
    assert [s for s, _c, _r in reward_states(rt, big.id)] == ["sent"]
    assert history(rt, big.id) == ["payout.created", "payout.held", "payout.release_requested", "payout.released",
                                   "payout.sending", "payout.sent"]
    assert drain(rt) == 0
    assert len(rail.calls) == 2
    assert_audited(rt)


def test_cancelled_payout_holds_its_rewards_until_released_into_a_new_payout(setup, operator, tmp_path) -> None:
    rt, rail = setup(extra="[hooks.deny_big]\n")
    big, small = schedule(rt, ("p1", "1000.01"), ("p2", "10"))
    ops = operator(rt)
    payout_actions.cancel(ops, small.id, "wrong amount")  # scheduled, never attempted
    assert drain(rt) == 1
    assert payout(rt, big.id).status == "held"
    payout_actions.cancel(ops, big.id, "not payable")  # held by screening
    for p, was, why in ((small, "scheduled", "wrong amount"), (big, "held", "not payable")):
        row = payout(rt, p.id)
        reason = f"cancelled by operator: {why}"
        assert (row.status, row.reason, row.attempts) == ("cancelled", reason, 0)
        assert reward_states(rt, p.id) == [("held", "payout_failed", f"payout {p.id} cancelled: {reason}")]
        actor, _origin, detail = operator_entry(rt, "payout.cancelled", p.id)
        assert (actor, detail) == ("ops:alice", {"from": was, "reason": reason})
    assert drain(rt) == 0
    assert rail.calls == []
    assert schedule_batch(rt) == 0  # the held rewards are not scheduled again on their own
    assert_audited(rt)

    with rt.engine.connect() as conn:
        reward_ids = conn.execute(select(rewards.c.id).where(rewards.c.payout_id == small.id)).scalars().all()
    result = CliRunner().invoke(main, ["-c", str(tmp_path / "payhub.toml"), "--actor", "ops:alice", "rewards",
                                       "release", *map(str, reward_ids), "--reason", "amount corrected"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert schedule_batch(rt) == 1
    [new] = [r for r in all_payouts(rt) if r.id not in (big.id, small.id)]
    assert (new.payee_id, new.amount_minor, new.status) == ("p2", 1000, "scheduled")
    assert new.idempotency_key not in (small.idempotency_key, big.idempotency_key)
    assert drain(rt) == 1
    assert rail.calls == [[new.idempotency_key]]
    assert rail.accepted == {new.idempotency_key: 1}
    assert payout(rt, small.id).status == "cancelled"
    assert [s for s, _c, _r in reward_states(rt, new.id)] == ["sent"]
    assert [s for s, _c, _r in reward_states(rt, big.id)] == ["held"]
    assert_audited(rt)


def test_cancel_is_refused_once_the_rail_may_have_the_payout(setup, operator) -> None:
    rt, rail = setup()
    ops = operator(rt)
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_after_accept")
    assert disburse_rail(rt, "r") == 1
    assert payout(rt, p.id).status == "unknown"
    before = audit_count(rt)
    with pytest.raises(PayhubError, match="is unknown; only scheduled or held or retrying payouts can be cancelled"):
        payout_actions.cancel(ops, p.id, "x")
    assert drain(rt) == 1
    with pytest.raises(PayhubError, match="is sent; only scheduled or held or retrying payouts can be cancelled"):
        payout_actions.cancel(ops, p.id, "x")
    assert payout(rt, p.id).status == "sent"
    assert [s for s, _c, _r in reward_states(rt, p.id)] == ["sent"]
    assert audit_count(rt) == before + 2  # the lookup and the sent entry; nothing from the refusals

    # A payout the rail refused as retryable never reached it: it can still be cancelled, and is not sent again.
    [q] = [r for r in schedule(rt, ("p2", "50")) if r.id != p.id]
    rail.plan("retryable")
    assert disburse_rail(rt, "r") == 1
    assert payout(rt, q.id).status == "retrying"
    payout_actions.cancel(ops, q.id, "payee asked to wait")
    assert payout(rt, q.id).status == "cancelled"
    assert [(s, c) for s, c, _r in reward_states(rt, q.id)] == [("held", "payout_failed")]
    assert drain(rt) == 0
    assert rail.calls == [[p.idempotency_key], [q.idempotency_key]]
    assert rail.accepted == {p.idempotency_key: 1}
    assert_audited(rt)


def test_resolve_not_sent_sends_again_once_with_the_same_key(setup, operator) -> None:
    rt, rail = setup(lookup=False)
    [p] = schedule(rt, ("p1", "100"))
    key = p.idempotency_key
    rail.plan("timeout_before_accept")
    assert drain(rt) == 2
    assert payout(rt, p.id).status == "unresolved"
    ops = operator(rt)
    assert payout_actions.resolve(ops, p.id, "not-sent", "provider has no record") == "retrying"
    row = payout(rt, p.id)
    assert (row.status, row.next_attempt_at, row.reason) == ("retrying", None,
                                                            "resolved by operator: provider has no record")
    actor, _origin, detail = operator_entry(rt, "payout.resolved", p.id)
    assert (actor, detail) == ("ops:alice", {"from": "unresolved", "to": "retrying",
                                             "reason": "provider has no record", "provider_ref": None})
    assert_audited(rt)
    assert drain(rt) == 1
    assert rail.calls == [[key], [key]]
    assert rail.accepted == {key: 1}
    row = payout(rt, p.id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert [s for s, _c, _r in reward_states(rt, p.id)] == ["sent"]
    with pytest.raises(PayhubError, match="is sent; only unresolved or unknown payouts can be resolved"):
        payout_actions.resolve(ops, p.id, "not-sent", "x")
    assert drain(rt) == 0
    assert_audited(rt)


def test_resolve_sent_settles_the_rewards_without_sending(setup, operator) -> None:
    rt, rail = setup(lookup=False)
    [p] = schedule(rt, ("p1", "100"), ("p1", "20"))
    rail.plan("timeout_after_accept")
    assert drain(rt) == 2
    assert payout(rt, p.id).status == "unresolved"
    ops = operator(rt)
    assert payout_actions.resolve(ops, p.id, "sent", "seen in the provider's portal", "prov-42") == "sent"
    row = payout(rt, p.id)
    assert (row.status, row.provider_ref, row.attempts) == ("sent", "prov-42", 1)
    assert [s for s, _c, _r in reward_states(rt, p.id)] == ["sent", "sent"]
    assert operator_entry(rt, "payout.resolved", p.id)[0] == "ops:alice"
    assert drain(rt) == 0
    assert rail.calls == [[p.idempotency_key]]
    assert rail.accepted == {p.idempotency_key: 1}
    assert_audited(rt)


def test_a_rail_backing_off_does_not_hold_up_other_rails(setup, tmp_path) -> None:
    rt, rail = setup(extra='\n[rails.r2]\nplugin = "fake"\n', retry_initial_seconds=3600, retry_max_seconds=7200)
    (tmp_path / "payees.csv").write_text("id,name,country,rail\np1,Partner One,DE,\np2,Partner Two,FR,r2\n")
    assert list(rt.plugins.rails) == ["r", "r2"]  # r is worked first
    other = rt.plugins.rails["r2"]
    slow, fast = schedule(rt, ("p1", "100"), ("p2", "200"))
    assert (slow.rail, fast.rail) == ("r", "r2")
    rail.plan("retryable")
    worker = Worker(rt)
    worker.start()
    try:
        started = time.monotonic()
        before = utcnow()
        summary = worker.run_once()
        assert time.monotonic() - started < 5
    finally:
        worker.stop()
    row = payout(rt, slow.id)
    assert (row.status, row.attempts) == ("retrying", 1)
    assert_waits(row, before, utcnow(), 3600, 7200)
    assert rail.calls == [[slow.idempotency_key]]
    assert other.calls == [[fast.idempotency_key]]
    assert other.accepted == {fast.idempotency_key: 1}
    assert payout(rt, fast.id).status == "sent"
    assert summary.counts["disbursed"] == 2
    assert_audited(rt)


def test_cancel_after_resolving_not_sent(setup, operator) -> None:
    """An operator's not-sent finding is enough to cancel the payout instead of sending it again."""
    rt, rail = setup(lookup=False)
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_before_accept")
    drain(rt)
    ops = operator(rt)
    payout_actions.resolve(ops, p.id, "not-sent", "provider has no record")
    assert attempt_rows(rt, p.id)[-1] == ("lookup", 1, "not_found")
    payout_actions.cancel(ops, p.id, "partner asked for a gift card instead")
    assert payout(rt, p.id).status == "cancelled"
    assert [(s, c) for s, c, _r in reward_states(rt, p.id)] == [("held", "payout_failed")]
    assert drain(rt) == 0
    assert rail.calls == [[p.idempotency_key]]
    assert_audited(rt)


def test_resolve_not_sent_is_refused_without_attempts_left(setup, operator) -> None:
    """With no attempt left, a payout the provider never received is cancelled, not sent a last time."""
    rt, rail = setup(lookup=False, max_attempts=1)
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_before_accept")
    drain(rt)
    assert payout(rt, p.id).status == "unresolved"
    ops = operator(rt)
    with pytest.raises(PayhubError, match="has used all 1 attempts of rail r; cancel it instead"):
        payout_actions.resolve(ops, p.id, "not-sent", "provider has no record")
    assert payout(rt, p.id).status == "unresolved"
    assert rail.calls == [[p.idempotency_key]]

# ------------------------------------------------------------------------------------- returns after payment
# A rail whose payments can come back after they were paid (ACH returns) declares a ``return_window``: paid
# payouts are looked up that long, and a return holds their rewards as owed again; on rails without one, paid is
# final.


def answer(rail: FakeRail, outcome: Outcome) -> None:
    rail.lookup = lambda keys: {k: RailResult(k, outcome, "ref", "R01 insufficient funds"
                                              if outcome == Outcome.RETURNED else None) for k in keys}


def settle_all(rt: Runtime) -> None:
    time.sleep(0.02)  # past the settle interval
    while settle_rail(rt, "r"):
        pass


@pytest.mark.parametrize("window", [3600, None], ids=["return-window", "no-window"])
def test_a_return_after_payment_reopens_the_money(setup, window: float | None) -> None:
    extra = {"return_window_seconds": window} if window else {}
    rt, rail = setup(settle_interval_seconds=0.01, **extra)
    [p] = schedule(rt, ("p1", "100"))
    drain(rt)
    answer(rail, Outcome.PAID)
    settle_all(rt)
    assert payout(rt, p.id).status == "paid"
    answer(rail, Outcome.RETURNED)
    settle_all(rt)
    with rt.engine.connect() as conn:
        states = conn.execute(select(rewards.c.status, rewards.c.hold_code).where(rewards.c.payout_id == p.id)).all()
        assert verify(conn).ok
    if window:
        assert (payout(rt, p.id).status, payout(rt, p.id).reason) == ("returned", "R01 insufficient funds")
        assert [tuple(s) for s in states] == [("held", "payout_failed")]
    else:
        assert payout(rt, p.id).status == "paid"
        assert [tuple(s) for s in states] == [("paid", None)]
