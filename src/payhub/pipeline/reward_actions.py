"""Operator decisions on rewards: approve, hold, release, cancel.

Each call is one transaction with one audit entry per reward, signed by the operator (the CLI's ``--actor``).
Every id is checked first, with its row locked: if any id is unknown or in a state the decision does not accept,
nothing changes and the :class:`~payhub.errors.PayhubError` names every problem.

The reward lifecycle: ``awaiting_approval`` (above its program's approval threshold; :func:`approve` by one, or two
different, approvers) → ``pending`` → ``scheduled`` (in a payout) → ``sent`` → ``paid``. Beside it: ``carried`` (netted,
or below the payee's minimum, and carried forward into a later payout), ``held`` (by the pipeline with a code such as
``budget``, ``no_payee`` or ``payout_failed``, or by :func:`hold` with code ``operator``; :func:`release` returns it to
``awaiting_approval`` while it lacks approvals, else to ``pending``), and ``cancelled`` (:func:`cancel`, only before it
is scheduled: it is never paid and stops counting against its program's budget).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from payhub.audited import reached_rail, reached_refusal
from payhub.clock import utcnow
from payhub.errors import PayhubError
from payhub.money import from_minor
from payhub.pipeline.operator import required_reason
from payhub.pipeline.rules import BUDGET_HOLD, UNPAID
from payhub.runtime import Runtime, Tx
from payhub.states import HoldCode, RewardStatus
from payhub.store import audit as audit_store
from payhub.store import rewards as store

OPERATOR_HOLD = HoldCode.OPERATOR
IN_PAYOUT = (RewardStatus.SCHEDULED, RewardStatus.SENT, RewardStatus.PAID)


@dataclass(frozen=True, slots=True)
class Approval:
    """The result of one approval: how many distinct approvers the reward has, of how many it needs."""

    reward_id: int
    approvals: int
    needed: int
    pending: bool



def approve(rt: Runtime, reward_ids: Iterable[int], note: str | None = None) -> list[Approval]:
    """Record the actor's approval of each reward; a reward with all the approvals it needs becomes pending.

    Each reward must be ``awaiting_approval`` and not yet approved by the actor: a reward that needs two approvals
    needs two different people. A refused command approves nothing, and is itself audited: one
    ``reward.approval_refused`` entry (outcome ``refused``) on each named reward that exists, with the approver, why
    that reward was refused (or that another reward of the command was), and the note.
    """
    ids = _ids(reward_ids)
    actor = rt.writer.actor
    now = utcnow()
    results: list[Approval] = []
    refused: Refused | None = None
    with rt.transaction() as tx:
        given: dict[int, list[str]] = {}
        read: list[bool] = []

        def check(row: Any) -> str | None:
            if not read:  # read once the rows are locked: an approval committed meanwhile is counted
                given.update(_approvers(tx, ids))
                read.append(True)
            if row.status != RewardStatus.AWAITING_APPROVAL:
                hint = "; release it first" if row.status == RewardStatus.HELD and _lacks(row, given) else ""
                return f"reward {row.id} is {_state(row)}, not awaiting approval{hint}"
            if actor in given.get(row.id, ()):
                return (f"reward {row.id} is already approved by {actor}; it needs a different "
                        f"{_ordinal(len(given[row.id]) + 1)} approver")
            return None

        try:
            rows = _checked(tx, ids, check)
        except Refused as exc:
            refused = exc
            _audit_refusal(tx, actor, exc, note)
        else:
            store.approve(tx.conn, ids, actor, now)
            for reward_id in ids:
                count = len(given.get(reward_id, ())) + 1
                needed = max(rows[reward_id].approvals_needed, 1)
                done = count >= needed
                if done:
                    store.set_status(tx.conn, [reward_id], RewardStatus.PENDING, now)
                detail: dict[str, Any] = {"approver": actor, "approvals": count, "needed": needed, "pending": done}
                if note:
                    detail["note"] = note
                tx.audit("reward.approved", "reward", reward_id, detail)
                results.append(Approval(reward_id, count, needed, done))
    if refused is not None:  # raised once the refusal's entries are committed
        raise refused
    return results


def _audit_refusal(tx: Tx, actor: str, refused: Refused, note: str | None) -> None:
    """One ``reward.approval_refused`` entry per named reward that exists (an audited subject must have a row)."""
    others = sorted(refused.problems)
    for reward_id in refused.existing:
        reason = refused.problems.get(reward_id) or (
            "not approved: the command also named " + ", ".join(f"reward {i}" for i in others)
            + ", which " + ("was" if len(others) == 1 else "were") + " refused")
        detail: dict[str, Any] = {"approver": actor, "reason": reason}
        if note:
            detail["note"] = note
        tx.audit("reward.approval_refused", "reward", reward_id, detail, outcome="refused")


def hold(rt: Runtime, reward_ids: Iterable[int], reason: str) -> int:
    """Hold rewards that are not yet scheduled (hold code ``operator``); return how many were held.

    A reward already held for another reason (a failed payout, a missing payee) gets the operator's hold instead;
    the audit entry records the hold it replaced. A reward held for its budget is refused: that hold keeps it out of
    the budget's use, which an operator hold would not. Approvals already given are kept.
    """
    ids = _ids(reward_ids)
    reason = required_reason(reason)

    def check(row: Any) -> str | None:
        if row.status == RewardStatus.HELD and row.hold_code == OPERATOR_HOLD:
            return f"reward {row.id} is already held by an operator ({row.hold_reason})"
        if row.status == RewardStatus.HELD and row.hold_code == BUDGET_HOLD:
            # A budget hold keeps the reward out of its budget; an operator hold would put it back in.
            return (f"reward {row.id} is already held for its budget ({row.hold_reason}); release it to override "
                    "the budget, or cancel it")
        if row.status not in UNPAID:
            hint = "; cancel the payout first" if row.status == RewardStatus.SCHEDULED else ""
            return f"reward {row.id} is {_state(row)}, not holdable{hint}"
        return None

    with rt.transaction() as tx:
        rows = _checked(tx, ids, check)
        store.set_status(tx.conn, ids, RewardStatus.HELD, utcnow(), hold_code=OPERATOR_HOLD, hold_reason=reason)
        for reward_id in ids:
            row = rows[reward_id]
            detail: dict[str, Any] = {"code": OPERATOR_HOLD, "reason": reason, "from": row.status}
            if row.status == RewardStatus.HELD:
                detail["replaces"] = {"code": row.hold_code, "reason": row.hold_reason}
            tx.audit("reward.held", "reward", reward_id, detail, outcome="held")
    return len(ids)


def release(rt: Runtime, reward_ids: Iterable[int], reason: str) -> dict[int, str]:
    """Release held rewards; return each reward's new status.

    A reward goes back to ``awaiting_approval`` while it has fewer approvals than it needs, else to ``pending``, so
    the next pass schedules it (in a new payout with a new idempotency key). Releasing a ``budget`` hold overrides
    the program's budget: the audit entry says so (outcome ``override``) with the budget the reward draws on.

    A reward that a payout (its current one, or any earlier one carrying it) may still pay or has paid is refused:
    every such payout must be ``rejected``, ``returned``, ``failed`` or ``cancelled``, or releasing would pay twice.
    """
    ids = _ids(reward_ids)
    reason = required_reason(reason)
    now = utcnow()
    moved: dict[int, str] = {}
    with rt.transaction() as tx:
        paying = _paying_payouts(tx, ids)

        def check(row: Any) -> str | None:
            if row.status != RewardStatus.HELD:
                return f"reward {row.id} is {_state(row)}, not held"
            if row.id in paying:
                return f"{paying[row.id]}: releasing it could pay it twice (resolve or cancel that payout first)"
            return None

        rows = _checked(tx, ids, check)
        given = _approvers(tx, ids)
        for reward_id in ids:
            row = rows[reward_id]
            status = RewardStatus.AWAITING_APPROVAL if _lacks(row, given) else RewardStatus.PENDING
            store.set_status(tx.conn, [reward_id], status, now, hold_code=None, hold_reason=None)
            detail: dict[str, Any] = {"reason": reason, "hold_code": row.hold_code, "hold_reason": row.hold_reason,
                                      "to": status}
            override = row.hold_code == BUDGET_HOLD
            if override:
                detail["budget_key"] = row.budget_key
            tx.audit("reward.released", "reward", reward_id, detail, outcome="override" if override else "ok")
            moved[reward_id] = status
    return moved


def cancel(rt: Runtime, reward_ids: Iterable[int], reason: str) -> int:
    """Cancel rewards that are not yet scheduled; return how many. They are never paid and leave their budget.

    Rewards in a payout (``scheduled``, ``sent``, ``paid``) are refused, naming the payout: a payout the rail never
    accepted is cancelled with ``payouts cancel`` first (its rewards are then held, and can be cancelled).
    """
    ids = _ids(reward_ids)
    reason = required_reason(reason)

    def check(row: Any) -> str | None:
        if row.status == RewardStatus.CANCELLED:
            return f"reward {row.id} is already cancelled"
        if row.status not in UNPAID:
            hint = "; cancel the payout first" if row.status == RewardStatus.SCHEDULED else "; it cannot be cancelled"
            return f"reward {row.id} is {_state(row)}{hint}"
        return None

    with rt.transaction() as tx:
        rows = _checked(tx, ids, check)
        store.set_status(tx.conn, ids, RewardStatus.CANCELLED, utcnow())
        for reward_id in ids:
            row = rows[reward_id]
            detail: dict[str, Any] = {"reason": reason, "from": row.status,
                                      "amount": str(from_minor(row.amount_minor, row.currency)),
                                      "currency": row.currency, "budget_key": row.budget_key}
            if row.status == RewardStatus.HELD:
                detail["hold_code"] = row.hold_code
            tx.audit("reward.cancelled", "reward", reward_id, detail, outcome="cancelled")
    return len(ids)


# --------------------------------------------------------------------------------------------------- helpers


def _ids(reward_ids: Iterable[int]) -> list[int]:
    """The ids in the order given, each once."""
    ids = list(dict.fromkeys(int(i) for i in reward_ids))
    if not ids:
        raise PayhubError("no reward ids given")
    return ids


class Refused(PayhubError):
    """A decision refused as a whole: ``problems`` maps each refused reward id to why; ``existing`` lists the named
    rewards that exist (a busy one too), in the order given."""

    def __init__(self, problems: dict[int, str], existing: list[int]) -> None:
        super().__init__("; ".join(problems.values()))
        self.problems = problems
        self.existing = existing


def _checked(tx: Tx, ids: list[int], check: Callable[[Any], str | None]) -> dict[int, Any]:
    """Lock the rows of ``ids`` and check each; refuse the whole command, naming every problem, if any fails
    (:class:`Refused`)."""
    rows, busy = store.lock(tx.conn, ids)  # busy: on PostgreSQL, locked by another transaction, so skipped
    problems: dict[int, str] = {}
    for reward_id in ids:
        if reward_id in busy:
            problems[reward_id] = (f"reward {reward_id} is being changed by another transaction (a worker or another "
                                   "operator); try again")
        elif reward_id not in rows:
            problems[reward_id] = f"reward {reward_id} does not exist"
        elif (problem := check(rows[reward_id])) is not None:
            problems[reward_id] = problem
    if problems:
        raise Refused(problems, [i for i in ids if i in rows or i in busy])
    return rows


def _paying_payouts(tx: Tx, ids: list[int]) -> dict[int, str]:
    """For each reward of ``ids`` that a payout paid or may still pay, why: the first such payout and its status, or
    what the audit chain records of it reaching the rail (:func:`~payhub.audited.reached`), whatever its row says.

    Every payout that ever carried the reward counts (its items, the payout the reward row points to, and for the
    chain every payout its ``reward.scheduled`` entries name); by the table, only the final failures
    (:data:`~payhub.states.FINAL_PAYOUT`) cannot pay it.
    """
    found: dict[int, str] = {}
    for reward_id, payout_id, status in store.payouts_not_final(tx.conn, ids):
        found.setdefault(reward_id, f"reward {reward_id} is in payout {payout_id}, which is {status}")
    # Then what the audit chain records: a payout it records as sent, paid or sent with an unknown outcome may
    # have paid the reward, whatever the payouts table says now.
    ever = _payouts_ever(tx, ids)
    at_rail = reached_rail(tx.conn, {p for carried_by in ever.values() for p in carried_by})
    for reward_id in ids:
        for payout_id in sorted(ever.get(reward_id, ())):
            if payout_id in at_rail:
                found.setdefault(reward_id, f"reward {reward_id}: {reached_refusal(payout_id, at_rail[payout_id])}")
                break
    return found


def _payouts_ever(tx: Tx, ids: list[int]) -> dict[int, set[int]]:
    """Every payout that ever carried each reward: its items, the payout its row names, and every payout its
    ``reward.scheduled`` audit entries name (rows can be edited; the chain keeps them all)."""
    ever: dict[int, set[int]] = {}
    for reward_id, payout_id in store.payouts_by_rows(tx.conn, ids):
        ever.setdefault(reward_id, set()).add(payout_id)
    for subject, detail in audit_store.entries_of(tx.conn, "reward", "reward.scheduled", [str(i) for i in ids]):
        try:
            payout_id = int(json.loads(detail).get("payout"))
        except (TypeError, ValueError, AttributeError):
            continue  # a damaged entry: audit verify reports it
        ever.setdefault(int(subject), set()).add(payout_id)
    return ever


def _approvers(tx: Tx, ids: list[int]) -> dict[int, list[str]]:
    """Who has approved each reward so far, in order."""
    return store.approvers(tx.conn, ids)


def _lacks(row: Any, given: dict[int, list[str]]) -> bool:
    """True when the reward has fewer distinct approvals than it needs."""
    return len(given.get(row.id, ())) < int(row.approvals_needed)


def _state(row: Any) -> str:
    """The reward's status as an operator needs it: a hold with its code and reason, a payout by its id."""
    if row.status == RewardStatus.HELD and row.hold_code:
        return f"held ({row.hold_code}: {row.hold_reason})"
    if row.status in IN_PAYOUT and row.payout_id is not None:
        return f"{row.status} in payout {row.payout_id}"
    return str(row.status)


def _ordinal(n: int) -> str:
    return {2: "second", 3: "third"}.get(n, f"{n}th")
