"""Disburse: send payouts through their rail, paid at most once and never lost.

* A payout's idempotency key is fixed when it is scheduled and sent on every attempt.
* Before each send the attempt is committed (status ``sending``); a crash after that point leaves a payout whose
  outcome is unknown, exactly like a timeout.
* An unknown outcome is resolved by looking the key up on the rail before any new attempt. A rail that cannot look
  up is only re-sent to inside its declared dedup window; otherwise the payout becomes ``unresolved`` for an
  operator (``payhub payouts resolve``).
* A lookup's "not found" is trusted as "never received" only once the rail's ``lookup_settle_seconds`` have passed
  since the payout's last send started: until then that send may still be on its way to the provider, so the
  payout stays ``unknown`` and is looked up again then, never sent.
* Retries are bounded (``max_attempts`` sends per payout) and only for results the rail marks retryable; a
  rejection stops at once and the reason is shown. Between attempts a payout waits in ``retrying`` until its
  ``next_attempt_at`` (exponential backoff with jitter, computed by tenacity), so one rail's backoff never holds up
  other rails or sources.

Each call of :func:`disburse_rail` works one claimed batch through one round: look up unknown outcomes, then send.

Rail calls run under the rail's call guard (:mod:`payhub.guard`): a call that runs past ``timeout_seconds`` is
abandoned and keeps running in its thread, and the rail gets no other call until it returns. The payouts of an
abandoned send may reach the rail, so they become ``unknown`` (a WARNING names each payout and its key) and are
looked up first. A payout that was never handed to the rail (in a round whose lookup was abandoned) is left as it
was, ``scheduled`` or ``retrying``, with no attempt counted, and is sent in a later round.

Every write to a claimed payout is fenced by the claim's lease (:mod:`payhub.pipeline.leases`): a worker whose lease
expired or was taken over meanwhile writes nothing for that payout (no status, attempt, reward or audit change),
and says so in the log at WARNING. The lease is renewed when the attempt is committed, before the rail is called,
so a send or lookup (at most ``timeout_seconds``) always fits in it. Every status change is also checked against the
state machine of :mod:`payhub.pipeline.payout_states` in its SQL.

Payout states: scheduled → sending → sent → paid, or rejected / returned / failed (rewards held as owed again),
with retrying, unknown (looked up next), unresolved (needs an operator), held (screening denied it) and cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from payhub import metrics
from payhub.api import Outcome, PayoutInstruction, Rail, RailResult
from payhub.clock import isoformat, utcnow
from payhub.db.queries import for_update
from payhub.db.schema import attempts, payouts, rewards
from payhub.errors import PermanentRailError, PluginTimeout, RailError, RetryableRailError, UnknownOutcomeError
from payhub.money import from_minor
from payhub.payees import load_payees
from payhub.pipeline import leases
from payhub.pipeline.payout_states import allowed, may_come_from
from payhub.pipeline.presend import hold_mismatched
from payhub.runtime import Runtime, Tx
from payhub.settings import RailSection

log = logging.getLogger(__name__)

CLAIMABLE = ("scheduled", "retrying", "unknown", "sending")
FINAL_FAILURES = {Outcome.REJECTED: "rejected", Outcome.RETURNED: "returned"}
LOOKUP_MIN_WAIT = 1.0  # seconds before asking again a rail whose lookup failed or did not know, whatever the backoff


@dataclass
class Work:
    """One claimed payout in flight."""

    id: int
    instruction: PayoutInstruction
    attempts: int
    needs_lookup: bool
    lease: str  # the token of the claim: every write to the payout is conditioned on it
    last_reason: str | None = None
    screened: bool = False
    screened_by: tuple[str, ...] = ()  # the screening hooks that let it pass this round, recorded with the send
    done: bool = False


def backoff_seconds(section: RailSection, attempt: int) -> float:
    """Wait before send attempt ``attempt + 1``: exponential from ``retry_initial_seconds``, jittered, capped."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = max(1, attempt)
    initial = section.retry_initial_seconds
    strategy = wait_exponential_jitter(multiplier=initial, jitter=initial, max=section.retry_max_seconds)
    return float(strategy(state))


def disburse_rail(rt: Runtime, rail_name: str) -> int:
    """Claim one batch of this rail's payouts that are due and work it one round; return how many were claimed."""
    rail = rt.plugins.rails[rail_name]
    section = rt.settings.rails[rail_name]
    if rt.guard(f"rail {rail.name}", section.timeout_seconds).busy:
        return 0  # an abandoned call has not returned: leave its payouts alone until it does
    if rt.plugins.failed_hooks():  # fail closed (the worker logs it, at most every logs.REMIND_SECONDS)
        return 0
    claimed = _claim(rt, rail_name, rail.capabilities.max_batch)
    if not claimed:
        return 0
    try:
        work = _screen(rt, claimed)
        lookups = [w for w in work if w.needs_lookup]
        if lookups:
            _resolve(rt, rail, section, lookups)
        ready = [w for w in work if not w.done and not w.needs_lookup]
        exhausted = [w for w in ready if w.attempts >= section.max_attempts]
        if exhausted:
            _exhaust(rt, exhausted)
        # Only as the audit chain recorded them: a payout edited in the database is held, not sent.
        sendable = hold_mismatched(rt, rail_name, [w for w in ready if w.attempts < section.max_attempts])
        if sendable:
            _send(rt, rail, sendable, section)
    finally:
        with rt.engine.begin() as conn:
            leases.release(conn, payouts, "id", [w.id for w in claimed], claimed[0].lease)
    return len(claimed)


def instruction_for(row: Any, payee: Any) -> PayoutInstruction:
    """The instruction a rail receives for a payouts row."""
    return PayoutInstruction(
        payout_id=row.id, idempotency_key=row.idempotency_key, payee=payee,
        amount=from_minor(row.amount_minor, row.currency), currency=row.currency,
        reference=f"payhub payout {row.id}", created_at=row.created_at,
    )


def claim_rows(conn: Connection, rt: Runtime, query: Any) -> list[Work]:
    """Lease the payouts ``query`` selects to this worker and return them as work."""
    rows = conn.execute(for_update(conn, query)).all()
    if not rows:
        return []
    token = leases.new_token()
    conn.execute(update(payouts).where(payouts.c.id.in_([r.id for r in rows])).values(
        lease_owner=rt.worker_id, lease_token=token,
        lease_until=leases.expiry(conn, rt.settings.database.lease_seconds)))
    found = load_payees(conn, sorted({r.payee_id for r in rows}))
    work = []
    for row in rows:
        payee = found.get(row.payee_id)
        if payee is None:  # payees are never deleted from the registry table; guard anyway
            log.error("payout %s: payee %s is not in the registry", row.id, row.payee_id)
            continue
        work.append(Work(row.id, instruction_for(row, payee), row.attempts, row.status in ("unknown", "sending"),
                         token, row.reason, screened=row.released_by is not None))
    return work


def _claim(rt: Runtime, rail_name: str, limit: int) -> list[Work]:
    now = utcnow()
    with rt.engine.begin() as conn:
        query = (
            select(payouts).where(payouts.c.rail == rail_name, payouts.c.status.in_(CLAIMABLE))
            .where(leases.free(payouts, conn))
            .where(or_(payouts.c.next_attempt_at.is_(None), payouts.c.next_attempt_at <= now))
            .order_by(payouts.c.id).limit(limit)
        )
        return claim_rows(conn, rt, query)


def fence(tx: Tx, changes: Sequence[tuple[Work, str]]) -> set[int]:
    """Lock the payouts this worker may still move to the given statuses; return their ids.

    A payout whose lease this worker lost (expired, or claimed by another worker since) is dropped with a WARNING,
    as is a change the state machine does not allow from the payout's current status: write nothing for either.
    """
    if not changes:
        return set()
    live: dict[int, str] = {}
    for token in {w.lease for w, _ in changes}:
        rows = leases.holding(tx.conn, payouts, "id", [w.id for w, _ in changes if w.lease == token], token,
                              payouts.c.status)
        live.update((payout_id, row.status) for payout_id, row in rows.items())
    kept = set()
    for w, new in changes:
        current = live.get(w.id)
        if current is None:
            log.warning("payout %s: stale write dropped (%s): this worker's lease on it expired or was taken over "
                        "by another worker, whose result stands", w.id, new)
        elif not allowed(current, new):
            log.warning("payout %s: change %s -> %s not allowed; dropped", w.id, current, new)
        else:
            kept.add(w.id)
    return kept


def _screen(rt: Runtime, claimed: list[Work]) -> list[Work]:
    """Run screening hooks on payouts not yet attempted; hold those denied. Return the payouts to work."""
    hook = rt.plugins.hooks.hook.payhub_screen_payout
    if not hook.get_hookimpls():
        return claimed
    screens = tuple(sorted(impl.plugin_name for impl in hook.get_hookimpls()))
    keep, denied = [], []
    for w in claimed:
        if w.attempts > 0 or w.needs_lookup or w.screened:
            keep.append(w)
            continue
        try:
            reasons = [d.reason or "denied" for d in hook(payout=w.instruction) if d is not None and not d.allow]
        except Exception as exc:  # noqa: BLE001 - fail closed: a broken screen holds the payout
            reasons = [f"screening hook error: {type(exc).__name__}: {exc}"]
        if reasons:
            denied.append((w, "; ".join(reasons)))
        else:
            w.screened_by = screens
            keep.append(w)
    if denied:
        with rt.transaction() as tx:
            live = fence(tx, [(w, "held") for w, _ in denied])
            denied = [(w, reason) for w, reason in denied if w.id in live]
            for w, reason in denied:
                set_status(tx, w.id, "held", w.lease, reason=reason)
                tx.audit("payout.held", "payout", w.id, {"reason": reason}, outcome="held")
        for w, reason in denied:
            _notify_failed(rt, w, "held", reason)
    return keep


def _send(rt: Runtime, rail: Rail, batch: list[Work], section: RailSection) -> None:
    guard = rt.guard(f"rail {rail.name}", section.timeout_seconds)
    if guard.busy:  # a lookup of this round was abandoned and runs on: nothing is handed to the rail before it ends
        log.info("rail %s: payouts %s not sent in this round: an abandoned call has not returned yet; they stay "
                 "due and are sent once it has", rail.name, _ids(batch))
        return
    now = utcnow()
    with rt.transaction() as tx:
        live = fence(tx, [(w, "sending") for w in batch])
        batch = [w for w in batch if w.id in live]
        attempt_rows = []
        for w in batch:
            w.attempts += 1
            attempt_rows.append({"payout_id": w.id, "kind": "send", "number": w.attempts, "started_at": now})
            detail: dict[str, Any] = {"attempt": w.attempts, "key": w.instruction.idempotency_key}
            if w.screened_by:  # the screening decision travels with the send it allowed
                detail["screened_by"] = list(w.screened_by)
            tx.audit("payout.sending", "payout", w.id, detail)
        if batch:  # the lease is renewed with the attempt, so the call (at most timeout_seconds) fits in it
            tx.conn.execute(
                update(payouts).where(payouts.c.id == bindparam("payout"), payouts.c.lease_token == bindparam("token"),
                                      may_come_from("sending")).values(
                    status="sending", attempts=bindparam("number"), next_attempt_at=None, updated_at=now,
                    lease_until=leases.expiry(tx.conn, rt.settings.database.lease_seconds)),
                [{"payout": w.id, "number": w.attempts, "token": w.lease} for w in batch])
            attempt_of = {payout_id: attempt_id for attempt_id, payout_id in tx.conn.execute(
                attempts.insert().returning(attempts.c.id, attempts.c.payout_id), attempt_rows)}
    if not batch:
        return
    keys = [w.instruction.idempotency_key for w in batch]
    metrics.PAYOUT_ATTEMPTS.labels(rail.name, "send").inc(len(batch))
    metrics.PAYOUT_RETRIES.labels(rail.name).inc(sum(1 for w in batch if w.attempts > 1))
    try:
        with metrics.RAIL_CALL_SECONDS.labels(rail.name, "send").time():
            sent = guard.call(rail.send, [w.instruction for w in batch], doing=f"send of payouts {_ids(batch)}",
                              sending=True)
        answered = {r.idempotency_key: r for r in sent}
        results = {k: answered.get(k) or RailResult(k, Outcome.UNKNOWN, reason="the rail returned no result")
                   for k in keys}
    except RetryableRailError as exc:
        results = {k: RailResult(k, Outcome.RETRY, reason=exc.reason) for k in keys}
    except PermanentRailError as exc:
        results = {k: RailResult(k, Outcome.REJECTED, reason=exc.reason) for k in keys}
    except PluginTimeout as exc:  # abandoned: the call runs on, so the rail may still take every payout of it
        metrics.plugin_failed("rail", rail.name, "timeout")
        for w in batch:
            log.warning("payout %s (idempotency key %s): send abandoned: %s; its outcome is unknown and it is looked "
                        "up on the rail by its key before any new attempt", w.id, w.instruction.idempotency_key, exc)
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=str(exc)) for k in keys}
    except UnknownOutcomeError as exc:
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=str(exc)) for k in keys}
    except Exception as exc:  # noqa: BLE001 - a rail bug: it may have sent, so the outcome is unknown
        log.exception("rail %s raised while sending", rail.name)
        metrics.plugin_failed("rail", rail.name, "error")
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=f"rail error: {type(exc).__name__}: {exc}")
                   for k in keys}
    apply_results(rt, section, [(w, results[w.instruction.idempotency_key]) for w in batch],
                  attempt_of)


def _resolve(rt: Runtime, rail: Rail, section: RailSection, batch: list[Work]) -> None:
    """Settle unknown outcomes by asking the rail before any new attempt."""
    caps = rail.capabilities
    now = utcnow()
    if not caps.lookup:
        unresolved: list[tuple[Work, str]] = []
        with rt.transaction() as tx:
            unsafe = []
            for w in batch:
                window = caps.dedup_window
                if (window is not None and w.instruction.created_at + window > now
                        and w.attempts < section.max_attempts):
                    w.needs_lookup = False  # the provider drops a repeat of this key: re-sending is safe
                    continue
                w.done = True
                unsafe.append(w)
            live = fence(tx, [(w, "unresolved") for w in unsafe])
            for w in unsafe:
                if w.id not in live:
                    continue
                # Out of window or out of attempts: the outcome stays unknown, so it must not be called a failure.
                reason = (f"outcome unknown ({w.last_reason}); rail {rail.name} cannot look payouts up: check with "
                          "the provider, then `payhub payouts resolve`")
                if set_status(tx, w.id, "unresolved", w.lease, reason=reason):
                    tx.audit("payout.unresolved", "payout", w.id, {"reason": w.last_reason}, outcome="unresolved")
                    unresolved.append((w, reason))
        for w, reason in unresolved:
            _notify_failed(rt, w, "unresolved", reason)
        return
    batch = _renew(rt, batch)
    if not batch:
        return
    guard = rt.guard(f"rail {rail.name}", section.timeout_seconds)
    metrics.PAYOUT_ATTEMPTS.labels(rail.name, "lookup").inc(len(batch))
    try:
        with metrics.RAIL_CALL_SECONDS.labels(rail.name, "lookup").time():
            found = guard.call(rail.lookup, [w.instruction.idempotency_key for w in batch],
                               doing=f"lookup of payouts {_ids(batch)}")
    except Exception as exc:  # noqa: BLE001 - the payouts stay unknown and are looked up again after a wait
        log.warning("rail %s: lookup failed: %s", rail.name, exc)
        if not isinstance(exc, RailError):
            metrics.plugin_failed("rail", rail.name, "timeout" if isinstance(exc, PluginTimeout) else "error")
        wait = max(LOOKUP_MIN_WAIT, backoff_seconds(section, max(w.attempts for w in batch)))
        later = now + timedelta(seconds=wait)
        with rt.engine.begin() as conn:  # not a status change: no audit entry, but fenced all the same
            conn.execute(update(payouts).where(payouts.c.id.in_([w.id for w in batch]),
                                               leases.held(payouts, batch[0].lease, conn)).values(
                next_attempt_at=later, reason=f"lookup failed: {type(exc).__name__}: {exc}"))
        for w in batch:
            w.done = True
        return
    resolved = []
    with rt.transaction() as tx:
        answers = {}
        in_flight = _sends_in_flight(tx.conn, [w.id for w in batch], now, section.in_flight_seconds)
        for w in batch:
            key = w.instruction.idempotency_key
            answered = key in found
            result = found.get(key) if answered else RailResult(key, Outcome.UNKNOWN, reason="not in the answer")
            answers[w.id] = (answered, result)
            w.done = True
        live = fence(tx, [(w, "unknown" if answers[w.id][1] is None and w.id in in_flight
                           else _lookup_target(answers[w.id][1])) for w in batch])
        for w in batch:
            if w.id not in live:
                continue
            answered, result = answers[w.id]
            settling = result is None and w.id in in_flight
            tx.conn.execute(attempts.insert().values(
                payout_id=w.id, kind="lookup", number=w.attempts, started_at=now, finished_at=utcnow(),
                outcome=result.outcome.value if result else "not_found", detail=result.reason if result else
                ("too soon after the send to be trusted" if settling else None)))
            if settling:
                # Not found yet, but the last send may still reach the rail: ask again once it cannot, never send.
                again = max(in_flight[w.id], now + timedelta(seconds=LOOKUP_MIN_WAIT))
                set_status(tx, w.id, "unknown", w.lease, next_attempt_at=again,
                           reason=f"not found by the rail yet, but its last send may still reach it; looked up again "
                                  f"at {isoformat(again)}")
                tx.audit("payout.lookup", "payout", w.id, {"found": False, "looked_up_again_at": again},
                         outcome="unknown")
            elif result is None or result.outcome == Outcome.RETRY:
                # Never received (or received and refused as retryable): send again with the same key, after a wait.
                w.needs_lookup = False
                wait = backoff_seconds(section, w.attempts)
                set_status(tx, w.id, "retrying", w.lease, next_attempt_at=now + timedelta(seconds=wait),
                           reason="not received by the rail; will send again with the same key")
                tx.audit("payout.lookup", "payout", w.id, {"found": False}, outcome="not_found")
            elif result.outcome == Outcome.UNKNOWN:
                wait = max(LOOKUP_MIN_WAIT, backoff_seconds(section, w.attempts))
                set_status(tx, w.id, "unknown", w.lease, next_attempt_at=now + timedelta(seconds=wait))
                tx.audit("payout.lookup", "payout", w.id, {"found": True if answered else None, "state": "unknown"},
                         outcome="unknown")
            else:
                tx.audit("payout.lookup", "payout", w.id, {"found": True, "state": result.outcome.value})
                resolved.append((w, result))
    if resolved:
        apply_results(rt, section, resolved, {})


def _ids(batch: Sequence[Work]) -> str:
    return ", ".join(str(w.id) for w in batch)


def _sends_in_flight(conn: Connection, ids: list[int], now: datetime, seconds: float) -> dict[int, datetime]:
    """The payouts with a send that did not answer (unknown outcome, or none recorded) and started less than
    ``seconds`` before ``now``, each with when it stops counting as possibly on its way to the rail."""
    rows = conn.execute(select(attempts.c.payout_id, func.max(attempts.c.started_at))
                        .where(attempts.c.payout_id.in_(ids), attempts.c.kind == "send",
                               or_(attempts.c.outcome.is_(None), attempts.c.outcome == Outcome.UNKNOWN.value))
                        .group_by(attempts.c.payout_id)).all()
    until = {payout_id: started + timedelta(seconds=seconds) for payout_id, started in rows if started is not None}
    return {payout_id: at for payout_id, at in until.items() if at > now}


def _lookup_target(result: RailResult | None) -> str:
    """The status a lookup's answer moves a payout to."""
    if result is None or result.outcome == Outcome.RETRY:
        return "retrying"
    return _STATE_OF.get(result.outcome, "unknown")


_STATE_OF = {Outcome.ACCEPTED: "sent", Outcome.PAID: "paid", **FINAL_FAILURES}


def _renew(rt: Runtime, batch: list[Work]) -> list[Work]:
    """Renew the lease of the batch before a rail call; return the payouts still held (the others are dropped)."""
    with rt.engine.begin() as conn:
        live = leases.renew(conn, payouts, "id", [w.id for w in batch], batch[0].lease,
                            rt.settings.database.lease_seconds)
    for w in batch:
        if w.id not in live:
            w.done = True
            log.warning("payout %s: stale work dropped (lookup): this worker's lease on it expired or was taken over "
                        "by another worker", w.id)
    return [w for w in batch if w.id in live]


def apply_results(rt: Runtime, section: RailSection, outcomes: Sequence[tuple[Work, RailResult]],
                  attempt_ids: dict[int, int]) -> None:
    """Record each payout's outcome in one transaction, then tell the observers.

    Fenced: an outcome for a payout whose lease this worker lost is dropped whole (its status, attempt, rewards and
    audit entry), and logged.
    """
    now = utcnow()
    settled, failed = [], []
    with rt.transaction() as tx:
        live = fence(tx, [(w, _target(section, w, result)) for w, result in outcomes])
        outcomes = [(w, result) for w, result in outcomes if w.id in live]
        finished = [{"attempt": attempt_ids[w.id], "outcome": result.outcome.value, "detail": result.reason}
                    for w, result in outcomes if w.id in attempt_ids]
        if finished:
            tx.conn.execute(update(attempts).where(attempts.c.id == bindparam("attempt")).values(
                finished_at=now, outcome=bindparam("outcome"), detail=bindparam("detail")), finished)
        for w, result in outcomes:
            detail: dict[str, Any] = {"attempt": w.attempts, "provider_ref": result.provider_ref}
            if result.reason:
                detail["reason"] = result.reason
            outcome = result.outcome
            state = _target(section, w, result)
            if state in ("sent", "paid"):
                tx.audit(f"payout.{state}", "payout", w.id, detail)
                settled.append((w, state, result.provider_ref))
            elif state == "retrying":
                later = now + timedelta(seconds=backoff_seconds(section, w.attempts))
                if set_status(tx, w.id, "retrying", w.lease, reason=result.reason, next_attempt_at=later):
                    tx.audit("payout.retrying", "payout", w.id, {**detail, "next_attempt_at": later},
                             outcome="retry")
            elif state == "unknown":  # looked up before any new attempt
                if set_status(tx, w.id, "unknown", w.lease, reason=result.reason):
                    tx.audit("payout.unknown", "payout", w.id, detail, outcome="unknown")
            else:
                reason = result.reason or outcome.value
                if state == "failed":  # retryable, but that was the last attempt
                    reason = f"retries exhausted after {w.attempts} attempts: {result.reason}"
                if fail(tx, w.id, state, reason, detail, w.lease):
                    failed.append((w, state, reason))
        for state in ("sent", "paid"):  # the common case, written as two bulk statements per state
            changes = [{"payout": w.id, "state": state, "ref": ref, "token": w.lease}
                       for w, new, ref in settled if new == state]
            if not changes:
                continue
            tx.conn.execute(update(payouts).where(
                payouts.c.id == bindparam("payout"), payouts.c.lease_token == bindparam("token"),
                may_come_from(state)).values(status=bindparam("state"), provider_ref=bindparam("ref"), reason=None,
                                             checked_at=now, updated_at=now), changes)
            tx.conn.execute(update(rewards).where(rewards.c.payout_id == bindparam("payout")).values(
                status=bindparam("state"), updated_at=now), [{"payout": c["payout"], "state": c["state"]}
                                                             for c in changes])
    hooks = rt.plugins.hooks.hook
    for w, state, ref in settled:
        said = Outcome.ACCEPTED.value if state == "sent" else Outcome.PAID.value
        safe_hook(hooks.payhub_payout_settled, payout=w.instruction, outcome=said, provider_ref=ref)
    for w, state, reason in failed:
        _notify_failed(rt, w, state, reason)


def _target(section: RailSection, w: Work, result: RailResult) -> str:
    """The status a rail's answer moves a payout to."""
    if result.outcome == Outcome.RETRY:
        return "failed" if w.attempts >= section.max_attempts else "retrying"
    return _STATE_OF.get(result.outcome, "unknown")


def _exhaust(rt: Runtime, batch: list[Work]) -> None:
    with rt.transaction() as tx:
        live = fence(tx, [(w, "failed") for w in batch])
        batch = [w for w in batch if w.id in live]
        last_send = {payout_id: detail for payout_id, detail in tx.conn.execute(
            select(attempts.c.payout_id, attempts.c.detail)
            .where(attempts.c.payout_id.in_([w.id for w in batch]), attempts.c.kind == "send")
            .order_by(attempts.c.id))}  # the last send of each payout wins: its failure is the cause to show
        reasons = {w.id: f"retries exhausted after {w.attempts} attempts: {last_send.get(w.id) or w.last_reason}"
                   for w in batch}
        batch = [w for w in batch if fail(tx, w.id, "failed", reasons[w.id], {"attempt": w.attempts}, w.lease)]
    for w in batch:
        _notify_failed(rt, w, "failed", reasons[w.id])


def fail(tx: Tx, payout_id: int, state: str, reason: str, detail: dict[str, Any], lease: str | None = None) -> bool:
    """A payout ended without paying: the money is owed again, so its rewards are held with the reason.

    Applied only as :func:`set_status` allows (``lease`` as there); return whether it was.
    """
    if not set_status(tx, payout_id, state, lease, reason=reason):
        return False
    tx.conn.execute(update(rewards).where(rewards.c.payout_id == payout_id).values(
        status="held", hold_code="payout_failed", hold_reason=f"payout {payout_id} {state}: {reason}",
        updated_at=utcnow()))
    tx.audit(f"payout.{state}", "payout", payout_id, {**detail, "reason": reason}, outcome="failed")
    return True


def set_status(tx: Tx, payout_id: int, status: str, lease: str | None = None, **values: Any) -> bool:
    """Move a payout to ``status``; return whether it moved (the caller audits the change only if it did).

    The UPDATE changes nothing unless the state machine allows ``status`` from the payout's current status, and,
    for a worker, its lease ``lease`` still holds; for an operator (``lease`` None), unless no worker holds one.
    """
    owner: ColumnElement[bool] = (leases.free(payouts, tx.conn) if lease is None
                                  else leases.held(payouts, lease, tx.conn))
    moved = tx.conn.execute(update(payouts).where(payouts.c.id == payout_id, may_come_from(status), owner)
                            .values(status=status, updated_at=utcnow(), **values)).rowcount
    if not moved:
        log.warning("payout %s: not moved to %s (a status or lease that does not allow it)", payout_id, status)
    return bool(moved)


def _notify_failed(rt: Runtime, w: Work, state: str, reason: str) -> None:
    safe_hook(rt.plugins.hooks.hook.payhub_payout_failed, payout=w.instruction, outcome=state, reason=reason)


def safe_hook(hook: Any, **kwargs: Any) -> None:
    """Call an observer hook; its failure is logged, never raised."""
    if not hook.get_hookimpls():
        return
    try:
        hook(**kwargs)
    except Exception:  # noqa: BLE001 - observers must not break disbursement
        log.exception("hook %s failed", hook.name)
