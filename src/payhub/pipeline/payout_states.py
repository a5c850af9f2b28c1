"""The payout state machine: which status may follow which.

Every status change of a payout is an UPDATE whose WHERE names the statuses it may come from
(:func:`may_come_from`), so a transition this table does not allow changes nothing, whatever the caller believed
the status to be. In particular a ``paid`` payout leaves ``paid`` only as ``returned`` (a return reported by the
rail within its return window), and the final failures never change again.
"""

from __future__ import annotations

from sqlalchemy import literal_column
from sqlalchemy.sql.elements import ColumnElement

from payhub.db.schema import payouts

# "held" follows every status a send starts from: screening holds a payout before its first attempt, and the check
# against the audit trail before every attempt; a crashed send ("sending") on a rail that cannot look up is sent
# again (and so checked) inside the rail's dedup window, as is an unknown outcome there.
TRANSITIONS: dict[str, frozenset[str]] = {
    "scheduled": frozenset({"sending", "held", "cancelled"}),
    "held": frozenset({"scheduled", "cancelled"}),
    "sending": frozenset({"sending", "sent", "paid", "rejected", "returned", "retrying", "unknown", "unresolved",
                          "failed", "held"}),
    "retrying": frozenset({"sending", "failed", "cancelled", "held"}),
    "unknown": frozenset({"unknown", "sending", "sent", "paid", "rejected", "returned", "retrying", "unresolved",
                          "held"}),
    "unresolved": frozenset({"sent", "paid", "retrying"}),  # an operator's finding
    "sent": frozenset({"paid", "rejected", "returned"}),
    "paid": frozenset({"returned"}),
    "rejected": frozenset(),
    "returned": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
"""status → the statuses it may become."""

FINAL = frozenset(state for state, following in TRANSITIONS.items() if not following)
"""Statuses that never change: the payout did not pay (its rewards are owed again), or paid and came back."""

NOT_PAYING = FINAL
"""A payout in one of these statuses can no longer pay its rewards."""

_SOURCES = {target: tuple(sorted(s for s, following in TRANSITIONS.items() if target in following))
            for target in TRANSITIONS}


def allowed(current: str, new: str) -> bool:
    """Whether a payout in ``current`` may become ``new``."""
    return new in TRANSITIONS.get(current, frozenset())


def may_come_from(new: str) -> ColumnElement[bool]:
    """The condition a payouts UPDATE to status ``new`` carries: its current status allows the change.

    The statuses are written into the SQL (they are this module's constants), so bulk UPDATEs can carry it too.
    """
    return payouts.c.status.in_([literal_column(f"'{state}'") for state in _SOURCES[new]])
