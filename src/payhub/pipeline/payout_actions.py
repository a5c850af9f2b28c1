"""Operator decisions on payouts: resolve an unknown outcome, release a hold (a screening hold by two operators),
cancel.

Each is one transaction with its audit entry, signed by the operator (the CLI's ``--actor``). A payout that a worker
holds a lease on is refused, and every change goes through the payout state machine
(:data:`payhub.states.PAYOUT_TRANSITIONS`) in its SQL, so a decision never overwrites what a worker recorded meanwhile.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import Any

from payhub.audited import reached_rail, reached_refusal
from payhub.clock import isoformat, utcnow
from payhub.errors import PayhubError
from payhub.payees import load_payees
from payhub.pipeline import holds
from payhub.pipeline.operator import operator_key, required_reason
from payhub.plugins import notify
from payhub.runtime import Runtime, Tx
from payhub.states import AttemptKind, AttemptOutcome, PayoutHold, PayoutStatus
from payhub.store import payouts as store
from payhub.store import release_requests
from payhub.store.release_requests import ReleaseRequest

log = logging.getLogger(__name__)

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


MIN_JUSTIFICATION = 20
"""The fewest characters (format characters such as zero-width spaces not counted, runs of white space counted as
one) of the written justification each of the two operators gives to release a screening hold
(docs/compliance.md, "Screening holds and their release")."""

MAX_RELEASED_BY = 200
"""The longest ``released_by`` the payouts table holds (the audit entry names each operator in full)."""


@dataclass(frozen=True, slots=True)
class Release:
    """What a release did: ``released`` (the payout is ``scheduled``), or only recorded the first operator's
    request (``released`` False: a screening hold awaits a second, different operator). ``operators`` are the
    actors who asked, first first."""

    payout_id: int
    hold_code: PayoutHold
    released: bool
    operators: tuple[str, ...]


def justification(text: str) -> str:
    """``text`` without surrounding white space; PayhubError when it is empty, or shorter than
    :data:`MIN_JUSTIFICATION` once format characters (Unicode category Cf) are removed and each run of white space
    counts as one."""
    text = (text or "").strip()
    if not _visible(text):
        raise PayhubError("a written justification is required to release a screening hold (it is recorded in the "
                          "audit log)")
    if len(_visible(text)) < MIN_JUSTIFICATION:
        raise PayhubError(f"the justification is too short: releasing a screening hold needs at least "
                          f"{MIN_JUSTIFICATION} characters saying why the hit does not apply")
    return text


def _visible(text: str) -> str:
    """``text`` as its length is counted: without format characters, white space trimmed and collapsed."""
    return " ".join("".join(ch for ch in text if unicodedata.category(ch) != "Cf").split())


def release(rt: Runtime, payout_id: int, reason: str) -> Release:
    """Release a held payout. The actor is recorded.

    The hold is the one the audit chain records (:func:`payhub.pipeline.holds.hold_recorded`), not the row's
    ``hold_code``. A ``screening`` hold needs two different operators (told apart by
    :func:`payhub.pipeline.operator.operator_key`), each with a written :func:`justification`: the first call
    records the actor's request (``payout.release_requested``) and leaves the payout held; a call by another
    operator releases it (``payout.released``, naming both and the denials of the hold in ``covers``): it is still
    screened before each send, and goes on only while every denial is one of those. The same operator asking twice
    is refused. An ``audit_trail`` hold is released by one operator with a reason; the payout is then screened
    before its send like any other. Refused when the audit chain records the payout as sent or paid, or a send of it
    whose outcome is unknown."""
    actor = rt.writer.actor
    if not operator_key(actor):
        raise PayhubError("an operator name is required to release a payout (it is recorded in the audit log)")
    with rt.transaction() as tx:
        row = _load(tx, payout_id, (PayoutStatus.HELD,), "released")
        _not_at_rail(tx, payout_id, PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.UNKNOWN)
        recorded = holds.payout_entries(tx.conn, [payout_id]).get(payout_id, [])
        hold = holds.hold_recorded(recorded)
        if row.hold_code != hold:
            log.warning("payout %s: its hold_code column says %r, the audit log records a %s hold; the audit log's "
                        "hold applies", payout_id, row.hold_code, hold)
        if hold != PayoutHold.SCREENING:
            why = required_reason(reason)
            _moved(store.set_status(tx, payout_id, PayoutStatus.SCHEDULED, reason=f"released by operator: {why}",
                                    released_by=actor), payout_id)
            tx.audit("payout.released", "payout", payout_id, {"reason": why, "hold_code": hold})
            return Release(payout_id, hold, True, (actor,))
        why = justification(reason)
        asked = release_requests.pending(tx, payout_id)
        first = next((request for request in asked if operator_key(request.operator) != operator_key(actor)), None)
        if first is None:
            if asked:
                raise PayhubError(f"payout {payout_id}: {actor} already asked to release it "
                                  f"({isoformat(asked[0].requested_at)}); a screening hold is released by a second, "
                                  "different operator")
            release_requests.record(tx, ReleaseRequest(payout_id, actor, why, utcnow()))
            tx.audit("payout.release_requested", "payout", payout_id,
                     {"operator": actor, "justification": why, "hold_code": hold, "hold_reason": row.reason},
                     outcome="requested")
            return Release(payout_id, hold, False, (actor,))
        operators = (first.operator, actor)
        _moved(store.set_status(tx, payout_id, PayoutStatus.SCHEDULED,
                                reason=f"released by operators {first.operator} and {actor}: {why}",
                                released_by=_released_by(operators)), payout_id)
        # The release covers what the operators saw: the denials of the hold it releases, as the chain records them.
        tx.audit("payout.released", "payout", payout_id, {
            "reason": why, "hold_code": hold, "operators": list(operators),
            "justifications": [first.justification, why], "requested_at": first.requested_at,
            "covers": holds.hold_denials(recorded)})
    return Release(payout_id, hold, True, operators)


def _released_by(operators: tuple[str, ...]) -> str:
    text = " and ".join(operators)
    return text if len(text) <= MAX_RELEASED_BY else text[: MAX_RELEASED_BY - 1] + "…"


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
        # A cancel voids the payout's release requests (store.set_status deletes them): the entry names them.
        voided = [{"operator": request.operator, "requested_at": request.requested_at}
                  for request in release_requests.pending(tx, payout_id)]
        detail: dict[str, Any] = {"from": row.status, **({"voided_release_requests": voided} if voided else {})}
        _moved(store.fail(tx, payout_id, PayoutStatus.CANCELLED, text, detail), payout_id)
        payee = load_payees(tx.conn, [row.payee_id]).get(row.payee_id)
    if payee is not None:
        notify(rt.plugins.hooks.hook.payhub_payout_failed, payout=store.instruction_for(row, payee),
               outcome=PayoutStatus.CANCELLED, reason=text)


def _never_received(tx: Tx, payout_id: int) -> bool:
    """True when the payout's last attempt proves the rail did not keep it (a retryable refusal, or not found)."""
    last = store.last_attempt(tx, payout_id)
    return last in ((AttemptKind.SEND, AttemptOutcome.RETRY), (AttemptKind.LOOKUP, AttemptOutcome.NOT_FOUND),
                    (AttemptKind.LOOKUP, AttemptOutcome.RETRY))
