"""The named states of payhub's aggregates: what the status columns may hold, and the payout state machine.

Each enum is a :class:`~enum.StrEnum` whose values are the text stored in the database, shown by the CLI and the HTTP
API and written to the audit log, so a member compares equal to its text (``EventStatus.CALCULATED ==
"calculated"``). The schema's CHECK constraints are built from these enums (:mod:`payhub.db.schema`): a value not
listed here cannot be stored.
"""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """Where an event is in the pipeline."""

    WAITING = "waiting"  # dated in the future: calculated when its date comes
    INGESTED = "ingested"  # stored, to be calculated
    CALCULATED = "calculated"  # every program has calculated it (once)
    QUARANTINED = "quarantined"  # malformed: kept with its reason, never calculated


class CalculationStatus(StrEnum):
    """What one program's calculation of one event produced."""

    REWARDED = "rewarded"  # one or more rewards (or fund entries)
    NOT_ELIGIBLE = "not_eligible"  # the program pays nothing for the event, and says why
    FAILED = "failed"  # the calculator raised or gave invalid lines; ``payhub rewards retry`` calculates it again


class RewardStatus(StrEnum):
    """Where a reward is between its calculation and its payment."""

    AWAITING_APPROVAL = "awaiting_approval"  # needs more approvals
    PENDING = "pending"  # to be scheduled into a payout
    HELD = "held"  # kept back; its :class:`HoldCode` says why
    CARRIED = "carried"  # below the payee's minimum payout: carried to a later payout
    SCHEDULED = "scheduled"  # in a payout not yet accepted by its rail
    SENT = "sent"  # its payout was accepted by the rail
    PAID = "paid"  # its payout was paid
    CANCELLED = "cancelled"  # an operator cancelled it; it is never paid


class HoldCode(StrEnum):
    """Why a reward is ``held`` (the rewards' ``hold_code``)."""

    BUDGET = "budget"  # its program's budget is spent; an operator's release overrides
    NO_PAYEE = "no_payee"  # the payee has no payout details; rechecked at every schedule pass
    NO_RAIL = "no_rail"  # no rail serves the payee; rechecked at every schedule pass
    FX_RATE = "fx_rate"  # no exchange rate to the payee's currency; rechecked at every schedule pass
    PAYOUT_FAILED = "payout_failed"  # its payout did not pay: the money is owed again, to be released or cancelled
    OPERATOR = "operator"  # an operator held it
    TAX_FORM = "tax_form"  # the payee's tax form or TIN is missing, invalid or expired; rechecked at every pass
    WITH_REWARD = "with_reward"  # a withholding line kept with the reward it withholds from, which is not payable now


RECHECKED_HOLDS: tuple[HoldCode, ...] = (HoldCode.NO_PAYEE, HoldCode.NO_RAIL, HoldCode.FX_RATE,
                                       HoldCode.TAX_FORM)
"""Holds the schedule stage lifts by itself once their cause is gone."""

UNPAID: tuple[RewardStatus, ...] = (RewardStatus.PENDING, RewardStatus.AWAITING_APPROVAL, RewardStatus.HELD,
                                    RewardStatus.CARRIED)
"""Reward statuses whose money is owed and not yet in a payout."""


class RewardKind(StrEnum):
    """What a reward row is (the rewards' ``kind``)."""

    REWARD = "reward"  # earned by a program (or an adjustment of one)
    WITHHOLDING = "withholding"  # negative: tax withheld from the payout it is scheduled into (backup withholding)


class PayoutHold(StrEnum):
    """Why a payout is ``held`` (the payouts' ``hold_code``)."""

    SCREENING = "screening"  # a screening hook denied it: two different operators release it, with a justification
    AUDIT_TRAIL = "audit_trail"  # it does not match its audit trail (payhub.pipeline.presend)


class TaxForm(StrEnum):
    """The US tax form a payee has on file (the payees' ``tax_form``; NULL when none)."""

    W9 = "W-9"
    W8BEN = "W-8BEN"
    W8BEN_E = "W-8BEN-E"


class TinStatus(StrEnum):
    """What payhub could tell about a payee's taxpayer identification number (never the number itself)."""

    VALID = "valid"  # passes its country's format and check-digit rules (python-stdnum)
    INVALID = "invalid"
    MISSING = "missing"
    UNCHECKED = "unchecked"  # given, for a country python-stdnum has no rule for


class PayoutStatus(StrEnum):
    """Where a payout is between its scheduling and its end (see :data:`PAYOUT_TRANSITIONS`)."""

    SCHEDULED = "scheduled"  # to be sent
    SENDING = "sending"  # a send is in flight (or a worker crashed during one)
    RETRYING = "retrying"  # not accepted; sent again (same idempotency key) at ``next_attempt_at``
    UNKNOWN = "unknown"  # a send may have been accepted: the rail is asked before any new attempt
    UNRESOLVED = "unresolved"  # the rail cannot tell: an operator decides (``payhub payouts resolve``)
    SENT = "sent"  # accepted by the rail; settlement follows
    PAID = "paid"  # the money reached the payee
    REJECTED = "rejected"  # final: refused by the rail
    RETURNED = "returned"  # final: paid, then returned
    FAILED = "failed"  # final: no attempts left, or a permanent error
    HELD = "held"  # screening or the pre-send check refused it; an operator releases or cancels it
    CANCELLED = "cancelled"  # final: an operator cancelled it


PAYOUT_TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    PayoutStatus.SCHEDULED: frozenset({PayoutStatus.SENDING, PayoutStatus.HELD, PayoutStatus.CANCELLED}),
    PayoutStatus.HELD: frozenset({PayoutStatus.SCHEDULED, PayoutStatus.CANCELLED}),
    PayoutStatus.SENDING: frozenset({
        PayoutStatus.SENDING, PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.REJECTED, PayoutStatus.RETURNED,
        PayoutStatus.RETRYING, PayoutStatus.UNKNOWN, PayoutStatus.UNRESOLVED, PayoutStatus.FAILED, PayoutStatus.HELD}),
    PayoutStatus.RETRYING: frozenset({PayoutStatus.SENDING, PayoutStatus.FAILED, PayoutStatus.CANCELLED,
                                      PayoutStatus.HELD}),
    PayoutStatus.UNKNOWN: frozenset({
        PayoutStatus.UNKNOWN, PayoutStatus.SENDING, PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.REJECTED,
        PayoutStatus.RETURNED, PayoutStatus.RETRYING, PayoutStatus.UNRESOLVED, PayoutStatus.HELD}),
    PayoutStatus.UNRESOLVED: frozenset({PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.RETRYING}),  # an operator
    PayoutStatus.SENT: frozenset({PayoutStatus.PAID, PayoutStatus.REJECTED, PayoutStatus.RETURNED}),
    PayoutStatus.PAID: frozenset({PayoutStatus.RETURNED}),
    PayoutStatus.REJECTED: frozenset(),
    PayoutStatus.RETURNED: frozenset(),
    PayoutStatus.FAILED: frozenset(),
    PayoutStatus.CANCELLED: frozenset(),
}
"""status → the statuses a payout in it may become. ``held`` follows every status a send starts from: screening
holds a payout before its first attempt, and the check against the audit trail before every attempt. A ``paid``
payout leaves ``paid`` only as ``returned``; the final statuses never change again."""

FINAL_PAYOUT: frozenset[PayoutStatus] = frozenset(s for s, following in PAYOUT_TRANSITIONS.items() if not following)
"""Payout statuses that never change: the payout did not pay (its rewards are owed again), or paid and came back."""
CLAIMABLE_PAYOUT: tuple[PayoutStatus, ...] = (PayoutStatus.SCHEDULED, PayoutStatus.RETRYING, PayoutStatus.UNKNOWN,
                                              PayoutStatus.SENDING)
"""Payout statuses a disburse pass claims (when due)."""
CLAIMABLE_PAYOUT_WHERE = f"status IN ({', '.join(repr(status.value) for status in CLAIMABLE_PAYOUT)})"
"""SQL text of "in a claimable status": the condition of the partial index ``ix_payouts_claimable``, which a claim's
statement must state as written for the planners to use the index."""


def payout_allowed(current: str, new: str) -> bool:
    """Whether a payout in ``current`` may become ``new``."""
    return new in _FOLLOWING.get(current, frozenset())


_FOLLOWING: dict[str, frozenset[str]] = {state.value: frozenset(following)
                                         for state, following in PAYOUT_TRANSITIONS.items()}


class AttemptKind(StrEnum):
    """What an attempt asked a rail."""

    SEND = "send"
    LOOKUP = "lookup"


class AttemptOutcome(StrEnum):
    """What an attempt found: a rail's answer (the values of ``payhub.api.Outcome``), or one of its own."""

    ACCEPTED = "accepted"
    PAID = "paid"
    REJECTED = "rejected"
    RETURNED = "returned"
    RETRY = "retry"
    UNKNOWN = "unknown"
    NOT_FOUND = "not_found"  # a lookup the rail answered "never received" (or an operator's ``not-sent``)
    SENT = "sent"  # an operator's finding that the provider has it (``payhub payouts resolve --outcome sent``)


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The stored texts of ``enum``'s members, in declaration order (for CHECK constraints and CLI choices)."""
    return tuple(member.value for member in enum)
