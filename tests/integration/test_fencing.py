"""Leases are fencing tokens: a worker that lost its lease writes nothing; a paid payout stays paid.

Two runtimes on one database stand for two replicas (each with its own worker id and leases) sharing one rail.
A replica "stalls" inside a plugin call: while it waits there, its lease is moved into the past (it expired) and,
in the takeover tests, the other replica claims the payout and finishes it. Then the stalled call returns its stale
answer, and that answer must change nothing: no status, attempt, reward or audit entry, only a WARNING.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from payhub.api import Outcome, PayoutInstruction, RailResult, ScreenDecision, SourceRecord, hookimpl
from payhub.audit import verify
from payhub.clock import utcnow
from payhub.db.schema import attempts, audit_log, events, payout_items, payouts, rewards, sources
from payhub.errors import PayhubError, UnknownOutcomeError
from payhub.payees import sync_payees
from payhub.pipeline import disburse, reward_actions
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.rail_results import apply_results
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.states import FINAL_PAYOUT as FINAL
from payhub.states import PAYOUT_TRANSITIONS as TRANSITIONS
from payhub.states import payout_allowed as allowed
from payhub.store import leases
from payhub.store.payouts import claim_rows, fail, set_status
from payhub.testing import FakeRail

pytestmark = pytest.mark.slow  # two replicas, one stalled in a plugin call while the other takes over

BASE = """
    lease_seconds = 30
    [daemon]
    plugin_timeout_seconds = 10
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [routing]
    default_rail = "r"
    [rails.r]
    plugin = "fake"
    timeout_seconds = 10
    lookup_settle_seconds = 0  # a lookup's "not found" is trusted at once: these tests are about the leases
    max_attempts = 3
    retry_initial_seconds = 0
    retry_max_seconds = 0
    settle_interval_seconds = 0.01
"""

STALE = "stale write dropped"


@pytest.fixture
def replicas(make_runtime, tmp_path: Path):
    """``replicas(extra="")``: (a, b, rail): two runtimes on one database sharing one FakeRail ``r``."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\n")
    made: list[Runtime] = []

    def factory(extra: str = "") -> tuple[Runtime, Runtime, FakeRail]:
        a = make_runtime(BASE + extra)
        b = Runtime(a.settings, plugins=a.plugins)  # same rail object: one provider, two replicas
        made.append(b)
        assert a.worker_id != b.worker_id
        return a, b, a.plugins.rails["r"]

    yield factory
    for rt in made:
        rt.engine.dispose()


def schedule(rt: Runtime, *amounts: tuple[str, str]) -> list[Any]:
    """One deal per (payee, amount), calculated and scheduled; return the payout rows."""
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
    with rt.engine.connect() as conn:
        return conn.execute(select(payouts).order_by(payouts.c.id)).all()


def payout(rt: Runtime, payout_id: int) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(payouts).where(payouts.c.id == payout_id)).one()


def actions(rt: Runtime, payout_id: int) -> list[str]:
    with rt.engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.action).where(
            audit_log.c.subject_type == "payout", audit_log.c.subject_id == str(payout_id))
            .order_by(audit_log.c.seq)).scalars())


def audit_count(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


def attempt_rows(rt: Runtime, payout_id: int) -> list[tuple[str, int, str | None]]:
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(attempts.c.kind, attempts.c.number, attempts.c.outcome)
            .where(attempts.c.payout_id == payout_id).order_by(attempts.c.id))]


def reward_states(rt: Runtime, payout_id: int) -> set[tuple[str, str | None]]:
    with rt.engine.connect() as conn:
        return {tuple(r) for r in conn.execute(
            select(rewards.c.status, rewards.c.hold_code).where(rewards.c.payout_id == payout_id))}


def expire(rt: Runtime, payout_id: int) -> None:
    """The lease on the payout runs out (a worker stalled past it)."""
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == payout_id).values(
            lease_until=utcnow() - timedelta(seconds=1)))


def verified(rt: Runtime) -> bool:
    with rt.engine.connect() as conn:
        return verify(conn).ok


class Provider:
    """Wraps the shared FakeRail: the first call (the stalled replica's) runs ``meanwhile`` and then gives
    ``stale``; later calls go to the FakeRail, whose sends answer ``answer`` (accepted by default)."""

    def __init__(self, rail: FakeRail, method: str, meanwhile: Callable[[], None],
                 stale: Callable[[Sequence[Any]], Any], answer: Outcome = Outcome.ACCEPTED) -> None:
        self.rail, self.meanwhile, self.stale, self.answer = rail, meanwhile, stale, answer
        self.original = getattr(rail, method)
        self.calls = 0
        setattr(rail, method, self)

    def __call__(self, arg: Sequence[Any]) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.meanwhile()
            return self.stale(arg)
        result = self.original(arg)
        if self.answer != Outcome.ACCEPTED and isinstance(result, list):
            return [RailResult(r.idempotency_key, self.answer, r.provider_ref) for r in result]
        return result


def answer_with(outcome: Outcome, reason: str | None = None) -> Callable[[Sequence[PayoutInstruction]], Any]:
    def stale(instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        return [RailResult(i.idempotency_key, outcome, "stale-ref", reason) for i in instructions]
    return stale


def raise_unknown(_instructions: Sequence[PayoutInstruction]) -> Any:
    raise UnknownOutcomeError("read timeout (the process was stopped)")


STALE_SENDS = {
    "unknown": raise_unknown,
    "rejected": answer_with(Outcome.REJECTED, "duplicate idempotency key"),
    "paid": answer_with(Outcome.PAID),
    "accepted": answer_with(Outcome.ACCEPTED),
    "retry": answer_with(Outcome.RETRY, "busy"),
}


@pytest.mark.parametrize(("stale", "other"), [
    ("unknown", Outcome.ACCEPTED), ("unknown", Outcome.PAID), ("rejected", Outcome.PAID),
    ("paid", Outcome.PAID), ("accepted", Outcome.PAID), ("retry", Outcome.ACCEPTED),
])
def test_a_stalled_send_cannot_overwrite_the_replica_that_took_over(replicas, caplog, stale: str,
                                                                    other: Outcome) -> None:
    """Replica A stalls in its send past its lease; B takes over, looks the key up (not received), sends it again
    with the same key and records it. A's stale answer then changes nothing."""
    a, b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    key = p.idempotency_key

    def takeover() -> None:
        expire(a, p.id)
        assert disburse_rail(b, "r") == 1  # lookup: A's request has not arrived, so not received
        assert payout(b, p.id).status == "retrying"
        assert disburse_rail(b, "r") == 1  # sent again with the same key
        assert payout(b, p.id).status == ("paid" if other == Outcome.PAID else "sent")

    provider = Provider(rail, "send", takeover, STALE_SENDS[stale], answer=other)
    with caplog.at_level(logging.WARNING, logger="payhub.pipeline.disburse"):
        assert disburse_rail(a, "r") == 1
    state = "paid" if other == Outcome.PAID else "sent"
    row = payout(a, p.id)
    assert (row.status, row.attempts, row.lease_token) == (state, 2, None)
    assert actions(a, p.id) == ["payout.created", "payout.sending", "payout.lookup", "payout.sending",
                                f"payout.{state}"]
    assert attempt_rows(a, p.id) == [("send", 1, None), ("lookup", 1, "not_found"), ("send", 2, other.value)]
    assert reward_states(a, p.id) == {(state, None)}
    assert [r.getMessage() for r in caplog.records if STALE in r.getMessage()] == [
        f"payout {p.id}: stale write dropped ({_target(stale)}): this "
        "worker's lease on it expired or was taken over by another worker, whose result stands"]
    assert provider.calls == 2 and rail.accepted == Counter({key: 1})
    assert verified(a)
    # nothing is left to do for either replica: A does not send again
    assert disburse_rail(a, "r") == 0 and disburse_rail(b, "r") == 0
    assert rail.accepted == Counter({key: 1})


def _target(stale: str) -> str:
    return {"accepted": "sent", "retry": "retrying"}.get(stale, stale)


def test_a_stalled_lookup_cannot_send_again_over_the_takeover(replicas, caplog) -> None:
    """A looks up an unknown outcome and stalls; B looks it up, sends it and records it. A's stale 'not received'
    would make the payout retrying (and sent once more): it is dropped."""
    a, b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    rail.plan("timeout_before_accept")
    disburse_rail(a, "r")
    assert payout(a, p.id).status == "unknown"

    def takeover() -> None:
        expire(a, p.id)
        assert disburse_rail(b, "r") == 1 and payout(b, p.id).status == "retrying"
        assert disburse_rail(b, "r") == 1 and payout(b, p.id).status == "sent"

    Provider(rail, "lookup", takeover, lambda keys: dict.fromkeys(keys))
    with caplog.at_level(logging.WARNING):
        assert disburse_rail(a, "r") == 1
    row = payout(a, p.id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert actions(a, p.id)[-3:] == ["payout.lookup", "payout.sending", "payout.sent"]
    assert attempt_rows(a, p.id) == [("send", 1, "unknown"), ("lookup", 1, "not_found"), ("send", 2, "accepted")]
    assert any(STALE in r.getMessage() and "(retrying)" in r.getMessage() for r in caplog.records)
    assert rail.accepted == Counter({p.idempotency_key: 1})
    assert verified(a)


class SlowScreen:
    """A screening hook that denies the first payout it sees, after ``meanwhile`` has run; allows every later one."""

    def __init__(self, meanwhile: Callable[[], None]) -> None:
        self.meanwhile = meanwhile
        self.calls = 0

    @hookimpl
    def payhub_screen_payout(self, payout: PayoutInstruction) -> ScreenDecision:
        self.calls += 1
        if self.calls == 1:
            self.meanwhile()
            return ScreenDecision(False, "on a sanctions list (stale answer)")
        return ScreenDecision(True)


def test_a_stalled_screening_cannot_hold_what_the_takeover_sent(replicas, caplog) -> None:
    a, b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))

    def takeover() -> None:
        expire(a, p.id)
        assert disburse_rail(b, "r") == 1

    a.plugins.hooks.register(SlowScreen(takeover))
    with caplog.at_level(logging.WARNING):
        disburse_rail(a, "r")
    assert payout(a, p.id).status == "sent"
    assert "payout.held" not in actions(a, p.id)
    assert any(STALE in r.getMessage() and "(held)" in r.getMessage() for r in caplog.records)
    assert rail.accepted == Counter({p.idempotency_key: 1})
    assert verified(a)


# ------------------------------------------------ a lease that ran out, nobody took over: the write is dropped too


def _expire_then(rt: Runtime, payout_id: int, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        expire(rt, payout_id)
        return fn(*args, **kwargs)
    return wrapped


class ExpireThenDeny:
    """A screening hook that takes so long that the lease runs out, then denies."""

    def __init__(self, rt: Runtime, payout_id: int) -> None:
        self.rt, self.payout_id = rt, payout_id

    @hookimpl
    def payhub_screen_payout(self, payout: PayoutInstruction) -> ScreenDecision:
        expire(self.rt, self.payout_id)
        return ScreenDecision(False, "denied after the lease ran out")


@pytest.mark.parametrize("point", ["before the send", "during the send", "during the lookup", "before exhausting",
                                   "screening"])
def test_a_write_after_the_lease_ran_out_is_dropped(replicas, monkeypatch, caplog, point: str) -> None:
    """The stalled worker's lease ran out and nobody has claimed the payout yet: its write is dropped all the same,
    and the next claim (by anyone) finishes the payout, sent once."""
    a, _b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    key = p.idempotency_key
    if point == "during the lookup":
        rail.plan("timeout_before_accept")
        disburse_rail(a, "r")
    if point == "before exhausting":
        with a.engine.begin() as conn:
            conn.execute(update(payouts).where(payouts.c.id == p.id).values(status="retrying", attempts=3))
    before = payout(a, p.id)
    entries = audit_count(a)
    if point == "before the send":
        monkeypatch.setattr(disburse, "_send", _expire_then(a, p.id, disburse._send))
    elif point == "during the send":
        monkeypatch.setattr(rail, "send", _expire_then(a, p.id, rail.send))
    elif point == "during the lookup":
        monkeypatch.setattr(rail, "lookup", _expire_then(a, p.id, rail.lookup))
    elif point == "before exhausting":
        monkeypatch.setattr(disburse, "_exhaust", _expire_then(a, p.id, disburse._exhaust))
    else:
        a.plugins.hooks.register(ExpireThenDeny(a, p.id))
    with caplog.at_level(logging.WARNING):
        disburse_rail(a, "r")
    monkeypatch.undo()
    after = payout(a, p.id)
    if point == "during the send":  # the attempt was committed before the call; its outcome is not recorded
        assert (after.status, after.attempts) == ("sending", 1)
        assert attempt_rows(a, p.id) == [("send", 1, None)]
        assert audit_count(a) == entries + 1  # payout.sending only
    else:
        assert (after.status, after.attempts, after.reason) == (before.status, before.attempts, before.reason)
        assert audit_count(a) == entries
    assert any(STALE in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert after.lease_until is None or after.lease_until < utcnow()
    if point in ("before exhausting", "screening"):
        return
    assert disburse_rail(a, "r") == 1  # the next claim resolves what the stale worker left
    if payout(a, p.id).status == "retrying":
        disburse_rail(a, "r")
    assert payout(a, p.id).status == "sent"
    assert rail.accepted == Counter({key: 1})
    assert verified(a)


def test_a_stalled_settlement_cannot_overwrite_a_newer_one(replicas, caplog) -> None:
    """A's status lookup answers 'paid'; meanwhile its lease ran out and B recorded a rejection: B's stands."""
    a, b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    disburse_rail(a, "r")

    def takeover() -> None:
        expire(a, p.id)
        rail.lookup = lambda keys: {k: RailResult(k, Outcome.REJECTED, "ref", "account closed") for k in keys}
        assert settle_rail(b, "r") == 1

    def stale(keys: Sequence[str]) -> dict[str, RailResult]:
        return {k: RailResult(k, Outcome.PAID, "ref") for k in keys}

    Provider(rail, "lookup", takeover, stale)
    time.sleep(0.02)  # past the settle interval
    with caplog.at_level(logging.WARNING):
        assert settle_rail(a, "r") == 1
    row = payout(a, p.id)
    assert (row.status, row.reason) == ("rejected", "account closed")
    assert actions(a, p.id)[-1] == "payout.rejected" and "payout.paid" not in actions(a, p.id)
    assert reward_states(a, p.id) == {("held", "payout_failed")}
    assert any(STALE in r.getMessage() for r in caplog.records)
    assert verified(a)


# ------------------------------------------------------------------------------ the state machine, in the SQL


def test_paid_leaves_paid_only_as_returned() -> None:
    assert TRANSITIONS["paid"] == {"returned"}
    assert {state for state, following in TRANSITIONS.items() if not following} == FINAL
    assert {"rejected", "returned", "failed", "cancelled"} == FINAL
    for state, following in TRANSITIONS.items():
        assert "scheduled" not in following or state == "held"  # nothing goes back to before its first attempt
        assert "sending" not in following or state in ("scheduled", "retrying", "unknown", "sending")
    assert not allowed("sent", "unknown") and not allowed("sent", "retrying") and not allowed("paid", "rejected")


def test_the_database_refuses_a_paid_payout_any_change_but_a_return(replicas, caplog) -> None:
    """Even with a valid lease, or as an operator, no UPDATE moves a paid payout anywhere but ``returned``."""
    a, _b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    rail.send = answer_with(Outcome.PAID)  # type: ignore[method-assign]
    disburse_rail(a, "r")
    assert payout(a, p.id).status == "paid"
    entries = audit_count(a)
    with a.engine.begin() as conn:  # a worker holding a valid lease on the paid payout
        [w] = claim_rows(conn, a, select(payouts).where(payouts.c.id == p.id))
    for new in sorted(set(TRANSITIONS) - {"paid", "returned"}):
        with a.transaction() as tx:
            assert not set_status(tx, p.id, new, w.lease), new
            assert not set_status(tx, p.id, new), new  # as an operator: no lease at all
    with a.transaction() as tx:
        assert not fail(tx, p.id, "rejected", "stale refusal", {}, w.lease)
    with caplog.at_level(logging.WARNING):  # a rail's answer the state machine does not allow is dropped, logged
        apply_results(a, a.settings.rails["r"], [(w, RailResult(p.idempotency_key, Outcome.REJECTED))], {})
        apply_results(a, a.settings.rails["r"], [(w, RailResult(p.idempotency_key, Outcome.UNKNOWN))], {})
    assert "change paid -> rejected not allowed" in caplog.text and "change paid -> unknown not allowed" in caplog.text
    assert (payout(a, p.id).status, audit_count(a)) == ("paid", entries)
    assert reward_states(a, p.id) == {("paid", None)}
    apply_results(a, a.settings.rails["r"], [(w, RailResult(p.idempotency_key, Outcome.RETURNED, None, "R01"))], {})
    assert payout(a, p.id).status == "returned"
    assert reward_states(a, p.id) == {("held", "payout_failed")}
    assert verified(a)


def test_final_failures_never_change(replicas) -> None:
    a, _b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    rail.plan("reject")
    disburse_rail(a, "r")
    assert payout(a, p.id).status == "rejected"
    with a.engine.begin() as conn:
        [w] = claim_rows(conn, a, select(payouts).where(payouts.c.id == p.id))
    for new in TRANSITIONS:
        with a.transaction() as tx:
            assert not set_status(tx, p.id, new, w.lease), new


def test_the_lease_is_renewed_before_the_send(replicas) -> None:
    """However long the screening took, the rail call starts with a whole lease ahead of it."""
    a, _b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    seen: list[Any] = []
    original = rail.send

    def send(instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        seen.append((utcnow(), payout(a, p.id).lease_until))
        return original(instructions)

    with a.engine.begin() as conn:  # a claim whose lease has 1 s left, as after a slow screening
        [w] = claim_rows(conn, a, select(payouts).where(payouts.c.id == p.id))
        conn.execute(update(payouts).where(payouts.c.id == p.id).values(
            lease_until=utcnow() + timedelta(seconds=1)))
    rail.send = send  # type: ignore[method-assign]
    disburse._send(a, rail, [w], a.settings.rails["r"])
    [(at, until)] = seen
    assert until - at > timedelta(seconds=a.settings.database.lease_seconds - 5)
    assert payout(a, p.id).status == "sent"


def test_a_stale_token_cannot_release_a_lease_another_worker_holds(replicas) -> None:
    a, b, _rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    with a.engine.begin() as conn:
        [mine] = claim_rows(conn, a, select(payouts).where(payouts.c.id == p.id))
    expire(a, p.id)
    with b.engine.begin() as conn:
        [theirs] = claim_rows(conn, b, select(payouts).where(payouts.c.id == p.id))
    with a.engine.begin() as conn:
        leases.release(conn, payouts, "id", [p.id], mine.lease)
    row = payout(a, p.id)
    assert (row.lease_owner, row.lease_token) == (b.worker_id, theirs.lease)
    assert row.lease_until > utcnow()


# ------------------------------------------------------------------------- releasing rewards never pays twice


def _held_with_payout_in(rt: Runtime, status: str) -> tuple[int, int]:
    """A reward held ``payout_failed`` whose payout is in fact ``status`` (as an old stale write could leave it)."""
    [p] = schedule(rt, ("p2", "70"))
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == p.id).values(status=status))
        conn.execute(update(rewards).where(rewards.c.payout_id == p.id).values(
            status="held", hold_code="payout_failed", hold_reason=f"payout {p.id} rejected: stale"))
        reward_id = conn.execute(select(rewards.c.id).where(rewards.c.payout_id == p.id)).scalar_one()
    return reward_id, p.id


@pytest.mark.parametrize("status", ["paid", "sent", "unknown", "sending", "unresolved", "retrying", "scheduled"])
def test_release_refuses_a_reward_its_payout_may_still_pay(replicas, status: str) -> None:
    a, _b, _rail = replicas()
    reward_id, payout_id = _held_with_payout_in(a, status)
    ops = Runtime.for_cli(a.settings, "ops:alice")
    try:
        with pytest.raises(PayhubError) as refused:
            reward_actions.release(ops, [reward_id], "paid again?")
    finally:
        ops.close()
    assert f"reward {reward_id} is in payout {payout_id}, which is {status}" in str(refused.value)
    with a.engine.connect() as conn:
        assert conn.execute(select(rewards.c.status).where(rewards.c.id == reward_id)).scalar_one() == "held"


def test_release_refuses_a_reward_an_earlier_payout_paid(replicas) -> None:
    """The reward's first payout was paid, a later one (same reward) rejected: releasing it would pay it twice."""
    a, _b, rail = replicas()
    [first] = schedule(a, ("p1", "100"))
    rail.send = answer_with(Outcome.PAID)  # type: ignore[method-assign]
    disburse_rail(a, "r")
    with a.engine.begin() as conn:  # a second payout carrying the same reward, rejected
        reward_id = conn.execute(select(rewards.c.id).where(rewards.c.payout_id == first.id)).scalar_one()
        second = conn.execute(payouts.insert().values(
            idempotency_key="ph-second", payee_id="p1", rail="r", route_reason="test", currency="EUR",
            amount_minor=10000, item_count=1, status="rejected", attempts=1, created_at=utcnow(),
            updated_at=utcnow()).returning(payouts.c.id)).scalar_one()
        conn.execute(payout_items.insert().values(payout_id=second, reward_id=reward_id, amount_minor=10000))
        conn.execute(update(rewards).where(rewards.c.id == reward_id).values(
            payout_id=second, status="held", hold_code="payout_failed", hold_reason="rejected"))
    with pytest.raises(PayhubError, match=f"reward {reward_id} is in payout {first.id}, which is paid"):
        reward_actions.release(a, [reward_id], "try again")


def test_release_accepts_a_reward_whose_payouts_all_failed(replicas) -> None:
    a, _b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    rail.plan("reject")
    disburse_rail(a, "r")
    [reward_id] = [r for r, in _reward_ids(a, p.id)]
    assert reward_actions.release(a, [reward_id], "payee fixed their IBAN") == {reward_id: "pending"}
    sync_payees(a)
    while schedule_batch(a):
        pass
    assert disburse_rail(a, "r") == 1
    with a.engine.connect() as conn:
        new_payout = conn.execute(select(rewards.c.payout_id).where(rewards.c.id == reward_id)).scalar_one()
    assert new_payout != p.id and payout(a, new_payout).status == "sent"
    assert sum(rail.accepted.values()) == 1


def _reward_ids(rt: Runtime, payout_id: int) -> list[tuple[int]]:
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(rewards.c.id).where(rewards.c.payout_id == payout_id))]


def test_operator_commands_see_a_live_lease_by_the_database_clock(replicas) -> None:
    from payhub.pipeline import payout_actions

    a, _b, rail = replicas()
    [p] = schedule(a, ("p1", "100"))
    rail.plan("timeout_before_accept")
    disburse_rail(a, "r")
    with a.engine.begin() as conn:
        claim_rows(conn, a, select(payouts).where(payouts.c.id == p.id))
    with pytest.raises(PayhubError, match="is being worked on by"):
        payout_actions.resolve(a, p.id, "sent", "provider confirmed")
    expire(a, p.id)
    assert payout_actions.resolve(a, p.id, "sent", "provider confirmed") == "sent"
    detail = json.loads(_last_detail(a, p.id))
    assert detail["to"] == "sent"


def _last_detail(rt: Runtime, payout_id: int) -> str:
    with rt.engine.connect() as conn:
        return str(conn.execute(select(audit_log.c.detail).where(
            audit_log.c.subject_type == "payout", audit_log.c.subject_id == str(payout_id))
            .order_by(audit_log.c.seq.desc()).limit(1)).scalar_one())



# ------------------------------------------------------------------------------------------ sources' cursors


@pytest.mark.parametrize("takeover", [True, False], ids=["taken-over", "expired"])
def test_a_stalled_poll_cannot_move_the_cursor(replicas, caplog, takeover: bool) -> None:
    """A fetches a batch and stalls past its lease; meanwhile B polls the source (or nobody does). A's batch and
    cursor are not written: the cursor stays where B left it, and the records are read again from there."""
    a, b, _rail = replicas()
    source = a.plugins.sources["s"]
    source.push(*(SourceRecord("Opportunity", f"o{i}", "won", "deal_won", "2026-10-01T00:00:00Z", "p1", "10", "EUR")
                  for i in range(3)))
    original = source.fetch
    calls = []

    def fetch(cursor: str | None, limit: int) -> Any:
        calls.append(cursor)
        if len(calls) == 1:  # A's fetch: the lease runs out while it runs
            with a.engine.begin() as conn:
                conn.execute(update(sources).where(sources.c.name == "s").values(
                    lease_until=utcnow() - timedelta(seconds=1)))
            if takeover:
                assert poll(b, "s") == 3
                source.push(SourceRecord("Opportunity", "late", "won", "deal_won", "2026-10-02T00:00:00Z", "p1",
                                         "10", "EUR"))
        return original(cursor, limit)

    source.fetch = fetch  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        assert poll(a, "s") == 0
    assert any("source s: stale write dropped" in r.getMessage() for r in caplog.records)
    with a.engine.connect() as conn:
        row = conn.execute(select(sources).where(sources.c.name == "s")).one()
        polled = conn.execute(select(func.count()).where(audit_log.c.action == "source.polled")).scalar_one()
        stored = conn.execute(select(func.count()).select_from(events)).scalar_one()
    assert (row.cursor, polled, stored) == (("3", 1, 3) if takeover else (None, 0, 0))
    assert row.lease_until is None or row.lease_until < utcnow()
    source.fetch = original  # type: ignore[method-assign]
    assert poll(a, "s") == (1 if takeover else 3)  # from where the lease holder left it, nothing twice
    with a.engine.connect() as conn:
        assert conn.execute(select(sources.c.cursor).where(sources.c.name == "s")).scalar_one() == (
            "4" if takeover else "3")
    assert verified(a)
