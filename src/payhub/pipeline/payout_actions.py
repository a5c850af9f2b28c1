"""Operator decisions on payouts: resolve an unknown outcome, release a screening hold, cancel.

Each is one transaction with its audit entry, signed by the operator (the CLI's ``--actor``). A payout that a worker
holds a lease on is refused, and every change goes through the payout state machine
(:data:`payhub.states.PAYOUT_TRANSITIONS`) in its SQL, so a decision never overwrites what a worker recorded meanwhile.
"""

from __future__ import annotations

from typing import Any

from payhub.audited import reached_rail, reached_refusal
from payhub.clock import utcnow
from payhub.errors import PayhubError
from payhub.payees import load_payees
from payhub.pipeline.operator import required_reason
from payhub.plugins import notify
from payhub.runtime import Runtime, Tx
from payhub.states import AttemptKind, AttemptOutcome, PayoutStatus
from payhub.store import payouts as store

MANUAL_OUTCOMES = ("sent", "paid", "not-sent")


def _load(tx: Tx, payout_id: int, allowed: tuple[PayoutStatus, ...], verb: str) -> Any:
    row = store.load_for_decision(tx, payout_id)
    if row is None:
        # On PostgreSQL a row a worker's transaction has locked is skipped: it exists, but is busy.
        owner = store.lease_owner(tx, payout_id)
        if owner is None:
            raise PayhubError(f"payout {payout_id} does not exist")
        raise PayhubError(f"payout {payout_id} is being worked on by {owner[0] or 'a worker'}; try again later")
    if row.status not in allowed:
        raise PayhubError(f"payout {payout_id} is {row.status}; only {' or '.join(allowed)} payouts can be {verb}")
    if row.leased:
        raise PayhubError(f"payout {payout_id} is being worked on by {row.lease_owner}; try again later")
    return row


def _not_at_rail(tx: Tx, payout_id: int, *statuses: PayoutStatus) -> None:
    """Refuse when the audit chain records the payout in one of ``statuses`` at the rail (sent, paid, unknown),
    whatever its row says now: the row can be edited, the chain cannot (without ``audit verify`` seeing it)."""
    hit = reached_rail(tx.conn, [payout_id]).get(payout_id)
    if hit is not None and hit.status in statuses:
        raise PayhubError(reached_refusal(payout_id, hit))


def _moved(moved: bool, payout_id: int) -> None:
    if not moved:  # the row is locked and its status checked above: not expected
        raise PayhubError(f"payout {payout_id} changed meanwhile; look at it again")


def resolve(rt: Runtime, payout_id: int, outcome: str, reason: str, provider_ref: str | None = None) -> str:
    """Decide an ``unresolved`` or ``unknown`` payout from what the provider says; return the new status.

    ``sent`` / ``paid``: the provider has it. ``not-sent``: it never arrived, so it is sent again with the same
    idempotency key (refused when the payout has no attempts left: cancel it instead, and when the audit chain
    records it as sent or paid).
    """
    if outcome not in MANUAL_OUTCOMES:
        raise PayhubError(f"outcome must be one of {', '.join(MANUAL_OUTCOMES)}")
    reason = required_reason(reason)
    now = utcnow()
    with rt.transaction() as tx:
        row = _load(tx, payout_id, (PayoutStatus.UNRESOLVED, PayoutStatus.UNKNOWN), "resolved")
        status = PayoutStatus.RETRYING if outcome == "not-sent" else PayoutStatus(outcome)
        if status == PayoutStatus.RETRYING:  # not-sent is for an unknown outcome, never for a send the chain records
            _not_at_rail(tx, payout_id, PayoutStatus.SENT, PayoutStatus.PAID)
        section = rt.settings.rails.get(row.rail)
        if status == PayoutStatus.RETRYING and section is not None and row.attempts >= section.max_attempts:
            raise PayhubError(f"payout {payout_id} has used all {section.max_attempts} attempts of rail {row.rail}; "
                              "cancel it instead (its rewards are held as owed and can be released)")
        _moved(store.set_status(tx, payout_id, status, reason=f"resolved by operator: {reason}",
                          provider_ref=provider_ref or row.provider_ref, next_attempt_at=None), payout_id)
        if status in (PayoutStatus.SENT, PayoutStatus.PAID):
            store.set_rewards_status(tx, payout_id, status, now)
        # The operator's finding is recorded like a lookup, so later decisions (cancel) can rely on it.
        store.record_lookup(tx, payout_id, row.attempts, now,
                            AttemptOutcome.NOT_FOUND if status == PayoutStatus.RETRYING else status,
                            f"operator: {reason}")
        tx.audit("payout.resolved", "payout", payout_id,
                 {"from": row.status, "to": status, "reason": reason, "provider_ref": provider_ref})
    return status


def release(rt: Runtime, payout_id: int, reason: str) -> None:
    """Override a screening hold: the payout is sent without being screened again. The actor is recorded.

    Refused when the audit chain records the payout as sent or paid, or a send of it whose outcome is unknown."""
    reason = required_reason(reason)
    with rt.transaction() as tx:
        _load(tx, payout_id, (PayoutStatus.HELD,), "released")
        _not_at_rail(tx, payout_id, PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.UNKNOWN)
        _moved(store.set_status(tx, payout_id, PayoutStatus.SCHEDULED, reason=f"released by operator: {reason}",
                          released_by=rt.writer.actor), payout_id)
        tx.audit("payout.released", "payout", payout_id, {"reason": reason})


def cancel(rt: Runtime, payout_id: int, reason: str) -> None:
    """Cancel a payout the rail never accepted; its rewards are held as owed, to be released or kept.

    Refused when the audit chain records the payout as sent or paid, or a send of it whose outcome is unknown,
    whatever its row says."""
    text = f"cancelled by operator: {required_reason(reason)}"
    with rt.transaction() as tx:
        row = _load(tx, payout_id, (PayoutStatus.SCHEDULED, PayoutStatus.HELD, PayoutStatus.RETRYING), "cancelled")
        if row.status == PayoutStatus.RETRYING and row.attempts and not _never_received(tx, payout_id):
            raise PayhubError(f"payout {payout_id} may have reached the rail; resolve it instead")
        _not_at_rail(tx, payout_id, PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.UNKNOWN)
        _moved(store.fail(tx, payout_id, PayoutStatus.CANCELLED, text, {"from": row.status}), payout_id)
        payee = load_payees(tx.conn, [row.payee_id]).get(row.payee_id)
    if payee is not None:
        notify(rt.plugins.hooks.hook.payhub_payout_failed, payout=store.instruction_for(row, payee),
               outcome=PayoutStatus.CANCELLED, reason=text)


def _never_received(tx: Tx, payout_id: int) -> bool:
    """True when the payout's last attempt proves the rail did not keep it (a retryable refusal, or not found)."""
    last = store.last_attempt(tx, payout_id)
    return last in ((AttemptKind.SEND, AttemptOutcome.RETRY), (AttemptKind.LOOKUP, AttemptOutcome.NOT_FOUND),
                    (AttemptKind.LOOKUP, AttemptOutcome.RETRY))
