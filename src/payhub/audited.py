"""What the audit chain last recorded about each payout and reward: the values an insider's edit is checked against.

Each state change of a payout or reward writes an audit entry; folding a subject's entries in chain order gives,
for each field, the value the latest entry recording that field holds, and that entry's ``seq``:

* payout: ``amount``, ``currency``, ``payee``, ``rail``, ``key`` (``payout.created``; ``key`` also each
  ``payout.sending``) and ``status`` (the action: ``payout.<status>``; ``payout.created`` and ``payout.released``
  mean ``scheduled``; a ``payout.lookup`` whose outcome is ``not_found`` means ``retrying``, ``unknown`` means
  ``unknown``; ``payout.resolved`` records the new status as ``to``).
* reward: ``amount``, ``currency``, ``payee`` (``reward.calculated``, ``reward.cancelled``), ``payout`` and the
  amount in the payout's currency (``reward.scheduled``), ``status`` (its own entries, and, after it was
  scheduled, its payout's: ``sent``, ``paid``, or ``held`` when the payout was rejected, returned, failed or
  cancelled).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Connection, select

from payhub.db.schema import audit_log
from payhub.money import from_minor, to_minor

PAYOUT_STATES = frozenset({"scheduled", "sending", "retrying", "unknown", "unresolved", "sent", "paid", "rejected",
                           "returned", "failed", "held", "cancelled"})
REWARD_STATES = frozenset({"awaiting_approval", "pending", "held", "carried", "scheduled", "sent", "paid",
                           "cancelled"})
# What a payout's new status makes of the rewards in it (recorded on the payout's entry, not on each reward's).
REWARD_STATUS_OF_PAYOUT = {"sent": "sent", "paid": "paid", "rejected": "held", "returned": "held", "failed": "held",
                           "cancelled": "held"}
PAYOUT_RECORDS = ("amount", "currency", "payee", "rail", "key")
REWARD_RECORDS = ("amount", "currency", "payee")
REWARD_OWN_STATUS = {"reward.held": "held", "reward.carried": "carried", "reward.scheduled": "scheduled",
                     "reward.cancelled": "cancelled"}


class AuditRow(NamedTuple):
    """The columns of an audit entry that folding reads."""

    seq: int
    subject_id: str
    action: str
    outcome: str
    detail: Any


@dataclass(slots=True)
class Recorded:
    """Field -> (value, seq of the entry that recorded it last); ``problems`` names entries that could not be read."""

    values: dict[str, tuple[Any, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    first_seq: int | None = None

    def get(self, name: str) -> Any:
        return self.values[name][0] if name in self.values else None

    def seq(self, name: str) -> int | None:
        return self.values[name][1] if name in self.values else None


def detail_of(row: AuditRow, subject: str, recorded: Recorded) -> dict[str, Any]:
    """The entry's detail as a dict; a detail that is not a JSON object is noted as a problem and read as {}."""
    try:
        value = json.loads(row.detail) if isinstance(row.detail, str | bytes) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        recorded.problems.append(f"{subject}: audit entry {row.seq} ({_text(row.action)}) holds a detail that is "
                                 "not a JSON object")
        return {}
    return value


def payout_status(row: AuditRow, detail: Mapping[str, Any]) -> str | None:
    """The status a payout entry records, or None when the entry does not change it."""
    action = row.action
    if action in ("payout.created", "payout.released"):
        return "scheduled"
    if action == "payout.lookup":
        return {"not_found": "retrying", "unknown": "unknown"}.get(row.outcome)
    if action == "payout.resolved":
        to = detail.get("to")
        return to if isinstance(to, str) and to in PAYOUT_STATES else None
    state = action.removeprefix("payout.")
    return state if action.startswith("payout.") and state in PAYOUT_STATES else None


def recorded_status(row: AuditRow) -> str | None:
    """The status a payout entry records (:func:`payout_status`), its detail read leniently."""
    return payout_status(row, _loads(row.detail))


def fold_payout(payout_id: str, rows: Iterable[AuditRow]) -> Recorded:
    """What the entries of one payout (in chain order) last recorded."""
    recorded = Recorded()
    subject = f"payout {payout_id}"
    for row in rows:
        if recorded.first_seq is None:
            recorded.first_seq = row.seq
        detail = detail_of(row, subject, recorded)
        names = PAYOUT_RECORDS if row.action == "payout.created" else ("key",) if row.action == "payout.sending" else ()
        for name in names:
            if name in detail:
                recorded.values[name] = (detail[name], row.seq)
        status = payout_status(row, detail)
        if status is not None:
            recorded.values["status"] = (status, row.seq)
        if row.action == "payout.created" and "rewards" in detail:
            recorded.values["items"] = (detail["rewards"], row.seq)
    return recorded


class Reached(NamedTuple):
    """What the chain records of a payout reaching the rail: ``sent`` / ``paid``, or ``unknown`` (a send whose
    outcome no later entry settled), and the entry that recorded it."""

    status: str
    seq: int


# After a recorded send (``sent``/``paid``) only these mean the rail did not keep the money: it refused the payout
# (``rejected``, not after ``paid``) or reported a return.
_UNDONE = {"sent": frozenset({"rejected", "returned"}), "paid": frozenset({"returned"})}
# A send whose outcome is unknown is settled by a finding that the rail did not keep it (a retryable refusal, a
# lookup that found nothing, an operator's not-sent), a refusal, or a recorded send.
_SETTLED = frozenset({"retrying", "rejected", "returned", "failed"})


def reached(rows: Iterable[AuditRow]) -> Reached | None:
    """Whether a payout's entries (in chain order) record that it reached, or may have reached, the rail.

    ``sent`` / ``paid`` stays until a ``payout.rejected`` / ``payout.returned`` (what an insider or an operator writes
    later, ``payout.held``, ``payout.released``, ``payout.cancelled``, does not undo a send); ``unknown`` is a
    ``payout.sending`` / ``payout.unknown`` / ``payout.unresolved`` that no later entry settled.
    """
    found: Reached | None = None
    for row in rows:
        status = recorded_status(row)
        if status is None:
            continue
        if status in ("sent", "paid"):
            if found is None or found.status != "paid":
                found = Reached(status, row.seq)
        elif found is not None and found.status in _UNDONE:
            if status in _UNDONE[found.status]:
                found = None
        elif status in ("sending", "unknown", "unresolved"):
            found = Reached("unknown", row.seq)
        elif found is not None and status in _SETTLED:
            found = None
    return found


def reached_rail(conn: Connection, payout_ids: Iterable[int]) -> dict[int, Reached]:
    """For each payout of ``payout_ids`` that the audit chain records as having reached the rail, or maybe reached
    it (:func:`reached`), what recorded it: what operator actions that free rewards or re-send check first."""
    ids = sorted({str(i) for i in payout_ids})
    by_payout: dict[str, list[AuditRow]] = {}
    if ids:
        for seq, subject, action, outcome, detail in conn.execute(
                select(audit_log.c.seq, audit_log.c.subject_id, audit_log.c.action, audit_log.c.outcome,
                       audit_log.c.detail)
                .where(audit_log.c.subject_type == "payout", audit_log.c.subject_id.in_(ids))
                .order_by(audit_log.c.seq)):
            by_payout.setdefault(subject, []).append(AuditRow(seq, subject, action, outcome, detail))
    found = {int(subject): hit for subject, rows in by_payout.items() if (hit := reached(rows)) is not None}
    return found


def reached_refusal(payout_id: int, hit: Reached) -> str:
    """The operator's message when an action would free or re-send a payout that the chain records at the rail."""
    if hit.status == "unknown":
        return (f"the audit log records a send of payout {payout_id} whose outcome is unknown (entry {hit.seq}): "
                "it may have reached the rail; resolve it instead")
    return (f"the audit log records payout {payout_id} as {hit.status} (entry {hit.seq}): it may have reached the "
            "rail; resolve it instead")


def fold_reward(reward_id: str, rows: Iterable[AuditRow], payout_rows: Mapping[str, list[AuditRow]]) -> Recorded:
    """What the entries of one reward, and those of the payouts it was scheduled into, last recorded.

    ``payout_rows`` maps a payout id to its entries in chain order (only the payouts the reward's
    ``reward.scheduled`` entries name are read).
    """
    recorded = Recorded()
    subject = f"reward {reward_id}"
    own = list(rows)
    details = {row.seq: detail_of(row, subject, recorded) for row in own}
    named = {str(details[row.seq].get("payout")) for row in own if row.action == "reward.scheduled"}
    merged = sorted([(row, True) for row in own]
                    + [(row, False) for payout in named for row in payout_rows.get(payout, ())],
                    key=lambda pair: pair[0].seq)
    payout: str | None = None
    scheduled_at = 0
    for row, mine in merged:
        if not mine:  # an entry of a payout this reward was scheduled into: only its current payout's count
            if row.subject_id == payout and row.seq > scheduled_at:
                status = REWARD_STATUS_OF_PAYOUT.get(payout_status(row, _loads(row.detail)) or "")
                if status is not None:
                    recorded.values["status"] = (status, row.seq)
            continue
        if recorded.first_seq is None:
            recorded.first_seq = row.seq
        detail = details[row.seq]
        if row.action == "reward.scheduled":
            payout, scheduled_at = str(detail.get("payout")), row.seq
            recorded.values["payout"] = (payout, row.seq)
            # The amount in the payout's currency, recorded when the reward was converted.
            if "amount" in detail and "currency" in detail:
                recorded.values["item"] = ((detail["amount"], detail["currency"]), row.seq)
            else:
                recorded.values.pop("item", None)
        elif row.action in ("reward.calculated", "reward.cancelled"):
            for name in REWARD_RECORDS:
                if name in detail:
                    recorded.values[name] = (detail[name], row.seq)
        status = reward_status(row, detail)
        if status is not None:
            recorded.values["status"] = (status, row.seq)
    return recorded


def reward_status(row: AuditRow, detail: Mapping[str, Any]) -> str | None:
    """The status a reward's own entry records, or None when it does not change it."""
    if row.action == "reward.calculated":
        status = detail.get("status", "pending")
    elif row.action == "reward.approved":
        status = "pending" if detail.get("pending") else "awaiting_approval"
    elif row.action == "reward.released":
        status = detail.get("to")
    else:
        status = REWARD_OWN_STATUS.get(row.action)
    return status if isinstance(status, str) and status in REWARD_STATES else None


def minor(amount: Any, currency: Any) -> int | None:
    """Integer minor units of an audited decimal amount text in ``currency``; None when either is not valid."""
    try:
        return to_minor(Decimal(str(amount)), str(currency))
    except Exception:  # noqa: BLE001 - damaged audit data is reported, never raised
        return None


def show(minor_units: Any, currency: Any) -> str:
    """A stored amount for a message, whatever was written into the row."""
    try:
        return f"{from_minor(int(minor_units), str(currency))} {currency}"
    except Exception:  # noqa: BLE001 - damaged rows are shown as they are
        return f"{minor_units!r} minor units of {currency!r}"


def _loads(detail: Any) -> dict[str, Any]:
    try:
        value = json.loads(detail)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return str(value)[:80]
