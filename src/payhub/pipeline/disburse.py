"""Disburse: send payouts through their rail, paid at most once and never lost.

* A payout's idempotency key is fixed when it is scheduled and sent on every attempt.
* Before each send the attempt is committed (status ``sending``); a crash after that point leaves a payout whose
  outcome is unknown, exactly like a timeout.
* An unknown outcome is resolved by looking the key up on the rail before any new attempt. A rail that cannot look
  up is only re-sent to inside its declared dedup window; otherwise the payout becomes ``unresolved`` for an
  operator.
* Retries are bounded (``max_attempts`` sends per payout), with exponential backoff and jitter (tenacity), and only
  for results the rail marks retryable; a rejection stops at once and the reason is shown.

Payout states: scheduled → sending → sent → paid, or rejected / returned / failed (rewards held as owed again),
with retrying, unknown (looked up next), unresolved (needs an operator) and held (screening denied it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential_jitter

from payhub.api import Outcome, PayoutInstruction, Rail, RailResult
from payhub.clock import utcnow
from payhub.db.queries import for_update
from payhub.db.schema import attempts, payouts, rewards
from payhub.errors import PermanentRailError, PluginTimeout, RetryableRailError, UnknownOutcomeError
from payhub.money import from_minor
from payhub.payees import load_payees
from payhub.runtime import Runtime, Stopping, Tx
from payhub.settings import RailSection

log = logging.getLogger(__name__)

CLAIMABLE = ("scheduled", "retrying", "unknown", "sending")
FINAL_FAILURES = {Outcome.REJECTED: "rejected", Outcome.RETURNED: "returned"}


@dataclass
class Work:
    """One claimed payout in flight."""

    id: int
    instruction: PayoutInstruction
    attempts: int
    needs_lookup: bool
    last_reason: str | None = None


def disburse_rail(rt: Runtime, rail_name: str) -> int:
    """Claim and work one batch of this rail's payouts; return how many payouts were claimed."""
    rail = rt.plugins.rails[rail_name]
    section = rt.settings.rails[rail_name]
    if rt.guard(f"rail {rail.name}", section.timeout_seconds).busy:
        return 0  # an abandoned call has not returned: leave its payouts alone until it does
    claimed = _claim(rt, rail_name, rail.capabilities.max_batch)
    if not claimed:
        return 0
    try:
        work = _screen(rt, claimed)
        if work:
            _process(rt, rail, section, work)
    except Stopping:
        log.info("rail %s: stopping; in-flight payouts are left to resume", rail_name)
    finally:
        with rt.engine.begin() as conn:
            conn.execute(update(payouts).where(payouts.c.id.in_([w.id for w in claimed]),
                                               payouts.c.lease_owner == rt.worker_id)
                         .values(lease_owner=None, lease_until=None))
    return len(claimed)


def _claim(rt: Runtime, rail_name: str, limit: int) -> list[Work]:
    now = utcnow()
    with rt.engine.begin() as conn:
        query = (
            select(payouts).where(payouts.c.rail == rail_name, payouts.c.status.in_(CLAIMABLE))
            .where(or_(payouts.c.lease_until.is_(None), payouts.c.lease_until < now))
            .where(or_(payouts.c.next_attempt_at.is_(None), payouts.c.next_attempt_at <= now))
            .order_by(payouts.c.id).limit(limit)
        )
        rows = conn.execute(for_update(conn, query)).all()
        if not rows:
            return []
        conn.execute(update(payouts).where(payouts.c.id.in_([r.id for r in rows])).values(
            lease_owner=rt.worker_id, lease_until=now + timedelta(seconds=rt.settings.database.lease_seconds)))
        found = load_payees(conn, sorted({r.payee_id for r in rows}))
    work = []
    for row in rows:
        payee = found.get(row.payee_id)
        if payee is None:  # payees are never deleted from the registry table; guard anyway
            log.error("payout %s: payee %s vanished", row.id, row.payee_id)
            continue
        instruction = PayoutInstruction(
            payout_id=row.id, idempotency_key=row.idempotency_key, payee=payee,
            amount=from_minor(row.amount_minor, row.currency), currency=row.currency,
            reference=f"payhub payout {row.id}", created_at=row.created_at,
        )
        work.append(Work(row.id, instruction, row.attempts, row.status in ("unknown", "sending"), row.reason))
    return work


def _screen(rt: Runtime, claimed: list[Work]) -> list[Work]:
    """Run screening hooks on payouts not yet attempted; hold those denied. Return the payouts to work."""
    hook = rt.plugins.hooks.hook.payhub_screen_payout
    if not hook.get_hookimpls():
        return claimed
    keep, denied = [], []
    for w in claimed:
        if w.attempts > 0 or w.needs_lookup:
            keep.append(w)
            continue
        try:
            reasons = [d.reason or "denied" for d in hook(payout=w.instruction) if d is not None and not d.allow]
        except Exception as exc:  # noqa: BLE001 - fail closed: a broken screen holds the payout
            reasons = [f"screening hook error: {type(exc).__name__}: {exc}"]
        if reasons:
            denied.append((w, "; ".join(reasons)))
        else:
            keep.append(w)
    if denied:
        with rt.transaction() as tx:
            for w, reason in denied:
                _set(tx, w, "held", reason=reason)
                tx.audit("payout.held", "payout", w.id, {"reason": reason}, outcome="held")
        for w, reason in denied:
            _notify_failed(rt, w, "held", reason)
    return keep


def _process(rt: Runtime, rail: Rail, section: RailSection, work: list[Work]) -> None:
    pending = {w.id: w for w in work}

    def one_round() -> list[int]:
        lookups = [w for w in pending.values() if w.needs_lookup]
        if lookups:
            _resolve(rt, rail, section, lookups, pending)
        sendable = [w for w in pending.values() if not w.needs_lookup]
        exhausted = [w for w in sendable if w.attempts >= section.max_attempts]
        if exhausted:
            _exhaust(rt, section, exhausted, pending)
        sendable = [w for w in sendable if w.attempts < section.max_attempts]
        if sendable:
            _send(rt, rail, sendable, pending, section)
        return list(pending)

    retrying = Retrying(
        stop=stop_after_attempt(section.max_attempts + 1),
        wait=wait_exponential_jitter(initial=section.retry_initial_seconds, max=section.retry_max_seconds),
        retry=retry_if_result(bool),
        sleep=rt.sleep,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
    )
    left = retrying(one_round)
    if left:  # lookups that keep failing: back off before the next pass tries again
        later = utcnow() + timedelta(seconds=section.retry_max_seconds)
        with rt.engine.begin() as conn:
            conn.execute(update(payouts).where(payouts.c.id.in_(left)).values(next_attempt_at=later))


def _send(rt: Runtime, rail: Rail, batch: list[Work], pending: dict[int, Work], section: RailSection) -> None:
    now = utcnow()
    with rt.transaction() as tx:
        attempt_rows = []
        for w in batch:
            w.attempts += 1
            _set(tx, w, "sending", attempts=w.attempts)
            attempt_rows.append({"payout_id": w.id, "kind": "send", "number": w.attempts, "started_at": now})
            tx.audit("payout.sending", "payout", w.id, {"attempt": w.attempts, "key": w.instruction.idempotency_key})
        attempt_ids = [r[0] for r in tx.conn.execute(
            attempts.insert().returning(attempts.c.id, sort_by_parameter_order=True), attempt_rows)]
    guard = rt.guard(f"rail {rail.name}", section.timeout_seconds)
    keys = [w.instruction.idempotency_key for w in batch]
    try:
        results = {r.idempotency_key: r for r in guard.call(rail.send, [w.instruction for w in batch])}
        results = {k: results.get(k) or RailResult(k, Outcome.UNKNOWN, reason="the rail returned no result")
                   for k in keys}
    except RetryableRailError as exc:
        results = {k: RailResult(k, Outcome.RETRY, reason=exc.reason) for k in keys}
    except PermanentRailError as exc:
        results = {k: RailResult(k, Outcome.REJECTED, reason=exc.reason) for k in keys}
    except (UnknownOutcomeError, PluginTimeout) as exc:
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=str(exc)) for k in keys}
    except Exception as exc:  # noqa: BLE001 - a rail bug: it may have sent, so the outcome is unknown
        log.exception("rail %s raised while sending", rail.name)
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=f"rail error: {type(exc).__name__}: {exc}")
                   for k in keys}
    _apply(rt, rail, section, [(w, results[w.instruction.idempotency_key]) for w in batch], pending,
           dict(zip([w.id for w in batch], attempt_ids, strict=True)))


def _resolve(rt: Runtime, rail: Rail, section: RailSection, batch: list[Work], pending: dict[int, Work]) -> None:
    """Settle unknown outcomes by asking the rail before any new attempt."""
    caps = rail.capabilities
    if not caps.lookup:
        now = utcnow()
        with rt.transaction() as tx:
            for w in batch:
                window = caps.dedup_window
                if (window is not None and w.instruction.created_at + window > now
                        and w.attempts < section.max_attempts):
                    w.needs_lookup = False  # the provider drops a repeat of this key: re-sending is safe
                    continue
                # Out of window or out of attempts: the outcome stays unknown, so it must not be called a failure.
                _set(tx, w, "unresolved", reason=f"outcome unknown ({w.last_reason}); rail {rail.name} cannot "
                     "look payouts up: check with the provider, then `payhub payouts resolve`")
                tx.audit("payout.unresolved", "payout", w.id, {"reason": w.last_reason}, outcome="unresolved")
                pending.pop(w.id)
        return
    guard = rt.guard(f"rail {rail.name}", section.timeout_seconds)
    try:
        found = guard.call(rail.lookup, [w.instruction.idempotency_key for w in batch])
    except Exception as exc:  # noqa: BLE001 - the payouts stay unknown and are looked up again later
        log.warning("rail %s: lookup failed: %s", rail.name, exc)
        for w in batch:
            w.last_reason = f"lookup failed: {type(exc).__name__}: {exc}"
        return
    resolved = []
    with rt.transaction() as tx:
        for w in batch:
            result = found.get(w.instruction.idempotency_key)
            tx.conn.execute(attempts.insert().values(
                payout_id=w.id, kind="lookup", number=w.attempts, started_at=utcnow(), finished_at=utcnow(),
                outcome=result.outcome.value if result else "not_found", detail=result.reason if result else None))
            if result is None or result.outcome == Outcome.RETRY:
                w.needs_lookup = False
                _set(tx, w, "retrying", reason="not received by the rail; will send again with the same key")
                tx.audit("payout.lookup", "payout", w.id, {"found": False}, outcome="not_found")
            elif result.outcome == Outcome.UNKNOWN:
                tx.audit("payout.lookup", "payout", w.id, {"found": True, "state": "unknown"}, outcome="unknown")
            else:
                tx.audit("payout.lookup", "payout", w.id, {"found": True, "state": result.outcome.value})
                resolved.append((w, result))
    if resolved:
        _apply(rt, rail, section, resolved, pending, {})


def _apply(rt: Runtime, rail: Rail, section: RailSection, outcomes: Sequence[tuple[Work, RailResult]],
           pending: dict[int, Work], attempt_ids: dict[int, int]) -> None:
    """Record each payout's outcome in one transaction, then tell the observers."""
    now = utcnow()
    settled, failed = [], []
    with rt.transaction() as tx:
        for w, result in outcomes:
            if w.id in attempt_ids:
                tx.conn.execute(update(attempts).where(attempts.c.id == attempt_ids[w.id]).values(
                    finished_at=now, outcome=result.outcome.value, detail=result.reason))
            detail: dict[str, Any] = {"attempt": w.attempts, "provider_ref": result.provider_ref}
            if result.reason:
                detail["reason"] = result.reason
            outcome = result.outcome
            if outcome in (Outcome.ACCEPTED, Outcome.PAID):
                state = "sent" if outcome == Outcome.ACCEPTED else "paid"
                _set(tx, w, state, provider_ref=result.provider_ref, reason=None, checked_at=now)
                tx.conn.execute(update(rewards).where(rewards.c.payout_id == w.id)
                                .values(status=state, updated_at=now))
                tx.audit(f"payout.{state}", "payout", w.id, detail)
                settled.append((w, outcome.value, result.provider_ref))
                pending.pop(w.id, None)
            elif outcome in FINAL_FAILURES:
                _fail(tx, w, FINAL_FAILURES[outcome], result.reason or outcome.value, detail)
                failed.append((w, FINAL_FAILURES[outcome], result.reason or outcome.value))
                pending.pop(w.id, None)
            elif outcome == Outcome.RETRY:
                w.last_reason = result.reason
                if w.attempts >= section.max_attempts:
                    reason = f"retries exhausted after {w.attempts} attempts: {result.reason}"
                    _fail(tx, w, "failed", reason, detail)
                    failed.append((w, "failed", reason))
                    pending.pop(w.id, None)
                else:
                    _set(tx, w, "retrying", reason=result.reason)
                    tx.audit("payout.retrying", "payout", w.id, detail, outcome="retry")
            else:  # UNKNOWN: resolved by lookup before any new attempt
                w.last_reason = result.reason
                w.needs_lookup = True
                _set(tx, w, "unknown", reason=result.reason)
                tx.audit("payout.unknown", "payout", w.id, detail, outcome="unknown")
    hooks = rt.plugins.hooks.hook
    for w, state, ref in settled:
        _safe_hook(hooks.payhub_payout_settled, payout=w.instruction, outcome=state, provider_ref=ref)
    for w, state, reason in failed:
        _notify_failed(rt, w, state, reason)


def _exhaust(rt: Runtime, section: RailSection, batch: list[Work], pending: dict[int, Work]) -> None:
    with rt.transaction() as tx:
        for w in batch:
            reason = f"retries exhausted after {w.attempts} attempts: {w.last_reason}"
            _fail(tx, w, "failed", reason, {"attempt": w.attempts})
            pending.pop(w.id, None)
    for w in batch:
        _notify_failed(rt, w, "failed", f"retries exhausted after {w.attempts} attempts: {w.last_reason}")


def _fail(tx: Tx, w: Work, state: str, reason: str, detail: dict[str, Any]) -> None:
    """A payout failed for good: the money is owed again, so its rewards are held with the reason."""
    now = utcnow()
    _set(tx, w, state, reason=reason)
    tx.conn.execute(update(rewards).where(rewards.c.payout_id == w.id).values(
        status="held", hold_code="payout_failed", hold_reason=f"payout {w.id} {state}: {reason}", updated_at=now))
    tx.audit(f"payout.{state}", "payout", w.id, {**detail, "reason": reason}, outcome="failed")


def _set(tx: Tx, w: Work, status: str, **values: Any) -> None:
    tx.conn.execute(update(payouts).where(payouts.c.id == w.id).values(status=status, updated_at=utcnow(), **values))


def _notify_failed(rt: Runtime, w: Work, state: str, reason: str) -> None:
    _safe_hook(rt.plugins.hooks.hook.payhub_payout_failed, payout=w.instruction, outcome=state, reason=reason)


def _safe_hook(hook: Any, **kwargs: Any) -> None:
    if not hook.get_hookimpls():
        return
    try:
        hook(**kwargs)
    except Exception:  # noqa: BLE001 - observers must not break disbursement
        log.exception("hook %s failed", hook.name)


def settle_rail(rt: Runtime, rail_name: str) -> int:
    """Ask a rail that reports status about payouts it accepted; return how many were checked."""
    rail = rt.plugins.rails[rail_name]
    section = rt.settings.rails[rail_name]
    if not (rail.capabilities.reports_status and rail.capabilities.lookup):
        return 0
    due = utcnow() - timedelta(seconds=section.settle_interval_seconds)
    with rt.engine.begin() as conn:
        rows = conn.execute(
            select(payouts.c.id).where(payouts.c.rail == rail_name, payouts.c.status == "sent")
            .where(or_(payouts.c.checked_at.is_(None), payouts.c.checked_at < due))
            .where(and_(or_(payouts.c.lease_until.is_(None), payouts.c.lease_until < utcnow())))
            .order_by(payouts.c.id).limit(rail.capabilities.max_batch)
        ).all()
    if not rows:
        return 0
    claimed = _claim_sent(rt, [r.id for r in rows])
    try:
        guard = rt.guard(f"rail {rail.name}", section.timeout_seconds)
        found = guard.call(rail.lookup, [w.instruction.idempotency_key for w in claimed])
    except Exception as exc:  # noqa: BLE001 - try again at the next settle interval
        log.warning("rail %s: status lookup failed: %s", rail_name, exc)
        found = {}
    changed = []
    with rt.engine.begin() as conn:
        for w in claimed:
            result = found.get(w.instruction.idempotency_key)
            if result is not None and result.outcome in (Outcome.PAID, *FINAL_FAILURES):
                changed.append((w, result))
            conn.execute(update(payouts).where(payouts.c.id == w.id)
                         .values(checked_at=utcnow(), lease_owner=None, lease_until=None))
    if changed:
        _apply(rt, rail, section, changed, {}, {})
    return len(claimed)


def _claim_sent(rt: Runtime, ids: list[int]) -> list[Work]:
    now = utcnow()
    with rt.engine.begin() as conn:
        rows = conn.execute(for_update(conn, select(payouts).where(payouts.c.id.in_(ids),
                                                                      payouts.c.status == "sent"))).all()
        conn.execute(update(payouts).where(payouts.c.id.in_([r.id for r in rows])).values(
            lease_owner=rt.worker_id, lease_until=now + timedelta(seconds=rt.settings.database.lease_seconds)))
        found = load_payees(conn, sorted({r.payee_id for r in rows}))
    return [Work(r.id, PayoutInstruction(r.id, r.idempotency_key, found[r.payee_id],
                                         from_minor(r.amount_minor, r.currency), r.currency,
                                         f"payhub payout {r.id}", r.created_at), r.attempts, False)
            for r in rows if r.payee_id in found]


MANUAL_OUTCOMES = ("sent", "paid", "not-sent")


def resolve_manually(rt: Runtime, payout_id: int, outcome: str, reason: str, provider_ref: str | None = None) -> str:
    """Settle an ``unresolved`` (or ``unknown``) payout from what the operator learnt from the provider.

    ``sent`` / ``paid``: the provider has it. ``not-sent``: it never arrived, so it is sent again with the same
    idempotency key. Returns the new status; raises PayhubError if the payout is not waiting for a decision.
    """
    from payhub.errors import PayhubError

    if outcome not in MANUAL_OUTCOMES:
        raise PayhubError(f"outcome must be one of {', '.join(MANUAL_OUTCOMES)}")
    now = utcnow()
    with rt.transaction() as tx:
        row = tx.conn.execute(for_update(tx.conn, select(payouts).where(payouts.c.id == payout_id))).first()
        if row is None:
            raise PayhubError(f"payout {payout_id} does not exist")
        if row.status not in ("unresolved", "unknown"):
            raise PayhubError(f"payout {payout_id} is {row.status}; only unresolved or unknown payouts are resolved")
        if row.lease_until is not None and row.lease_until > now and row.status == "unknown":
            raise PayhubError(f"payout {payout_id} is being worked on by {row.lease_owner}; try again later")
        status = "retrying" if outcome == "not-sent" else outcome
        tx.conn.execute(update(payouts).where(payouts.c.id == payout_id).values(
            status=status, reason=f"resolved by operator: {reason}", provider_ref=provider_ref or row.provider_ref,
            next_attempt_at=None, updated_at=now))
        if status in ("sent", "paid"):
            tx.conn.execute(update(rewards).where(rewards.c.payout_id == payout_id)
                            .values(status=status, updated_at=now))
        tx.audit("payout.resolved", "payout", payout_id,
                 {"from": row.status, "to": status, "reason": reason, "provider_ref": provider_ref})
    return status
