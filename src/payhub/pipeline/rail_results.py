"""What a rail's answer does to a payout: its next status, the backoff before a retry, and the observers told.

Shared by disburse (answers to sends and lookups) and settle (status lookups of accepted payouts); the writes go
through :mod:`payhub.store.payouts`, fenced by the claim's lease and the payout state machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from payhub.api import Outcome, RailResult
from payhub.clock import utcnow
from payhub.plugins import notify
from payhub.runtime import Runtime
from payhub.settings import RailSection
from payhub.states import PayoutStatus
from payhub.store import payouts as store
from payhub.store.payouts import Work

FINAL_FAILURES = {Outcome.REJECTED: PayoutStatus.REJECTED, Outcome.RETURNED: PayoutStatus.RETURNED}
STATE_OF = {Outcome.ACCEPTED: PayoutStatus.SENT, Outcome.PAID: PayoutStatus.PAID, **FINAL_FAILURES}
"""The status a rail's outcome moves a payout to (retry and unknown are decided by the caller)."""


def backoff_seconds(section: RailSection, attempt: int) -> float:
    """Wait before send attempt ``attempt + 1``: exponential from ``retry_initial_seconds``, jittered, capped."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = max(1, attempt)
    initial = section.retry_initial_seconds
    strategy = wait_exponential_jitter(multiplier=initial, jitter=initial, max=section.retry_max_seconds)
    return float(strategy(state))


def target(section: RailSection, w: Work, result: RailResult) -> PayoutStatus:
    """The status a rail's answer moves a payout to."""
    if result.outcome == Outcome.RETRY:
        return PayoutStatus.FAILED if w.attempts >= section.max_attempts else PayoutStatus.RETRYING
    return STATE_OF.get(result.outcome, PayoutStatus.UNKNOWN)


def apply_results(rt: Runtime, section: RailSection, outcomes: Sequence[tuple[Work, RailResult]],
                  attempt_ids: dict[int, int], *, release: Sequence[Work] = (), **release_values: Any) -> None:
    """Record each payout's outcome in one transaction, then tell the observers.

    Fenced: an outcome for a payout whose lease this worker lost is dropped whole (its status, attempt, rewards and
    audit entry), and logged. ``release`` (a claim whose work ends with these results) is released in the same
    transaction, writing ``release_values`` (:func:`payhub.store.payouts.release`): one commit fewer per round.
    """
    now = utcnow()
    settled, failed = [], []
    with rt.transaction() as tx:
        live = store.fence(tx, [(w, target(section, w, result)) for w, result in outcomes])
        outcomes = [(w, result) for w, result in outcomes if w.id in live]
        store.finish_attempts(tx, [{"attempt": attempt_ids[w.id], "outcome": result.outcome.value,
                                    "detail": result.reason} for w, result in outcomes if w.id in attempt_ids], now)
        for w, result in outcomes:
            detail: dict[str, Any] = {"attempt": w.attempts, "provider_ref": result.provider_ref}
            if result.reason:
                detail["reason"] = result.reason
            outcome = result.outcome
            state = target(section, w, result)
            if state in (PayoutStatus.SENT, PayoutStatus.PAID):
                tx.audit(f"payout.{state}", "payout", w.id, detail)
                settled.append((w, state, result.provider_ref))
            elif state == PayoutStatus.RETRYING:
                later = now + timedelta(seconds=backoff_seconds(section, w.attempts))
                if store.set_status(tx, w.id, state, w.lease, reason=result.reason, next_attempt_at=later):
                    tx.audit("payout.retrying", "payout", w.id, {**detail, "next_attempt_at": later},
                             outcome="retry")
            elif state == PayoutStatus.UNKNOWN:  # looked up before any new attempt
                if store.set_status(tx, w.id, state, w.lease, reason=result.reason):
                    tx.audit("payout.unknown", "payout", w.id, detail, outcome="unknown")
            else:
                reason = result.reason or outcome.value
                if state == PayoutStatus.FAILED:  # retryable, but that was the last attempt
                    reason = f"retries exhausted after {w.attempts} attempts: {result.reason}"
                if store.fail(tx, w.id, state, reason, detail, w.lease):
                    failed.append((w, state, reason))
        store.mark_accepted(tx, settled, now)
        store.release_in(tx, release, **release_values)
    hooks = rt.plugins.hooks.hook
    for w, state, ref in settled:
        said = Outcome.ACCEPTED if state == PayoutStatus.SENT else Outcome.PAID
        notify(hooks.payhub_payout_settled, payout=w.instruction, outcome=said.value, provider_ref=ref)
    for w, state, reason in failed:
        notify_failed(rt, w, state, reason)


def notify_failed(rt: Runtime, w: Work, state: PayoutStatus, reason: str) -> None:
    """Tell the ``payhub_payout_failed`` observers that a payout ended, or stopped, without paying."""
    notify(rt.plugins.hooks.hook.payhub_payout_failed, payout=w.instruction, outcome=state, reason=reason)
