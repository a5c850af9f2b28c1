"""The check before each send: a payout goes out only as the audit chain recorded it.

For every payout of a batch about to be sent, one query reads its audit entries, its items, the rewards they pay
and each reward's ``reward.calculated`` and ``reward.scheduled`` entries. The payout is sent only if:

* the audit log last records it in a status that is due to be sent (a ``paid`` payout set back to ``scheduled`` in
  the database is not sent again), and records no earlier ``sent`` or ``paid`` (a payout the rail took is never
  sent again, whatever was released or resolved after);
* the instruction's amount, currency, payee, idempotency key and rail equal what ``payout.created`` recorded;
* its items add up to its amount, and there are as many as ``payout.created`` recorded;
* each item's reward was audited as scheduled into this payout (its latest ``reward.scheduled``), for this payee,
  with the item's amount (the converted amount ``reward.scheduled`` recorded, else the ``reward.calculated``
  amount, in the payout's currency), and the reward row still holds its audited amount, currency and payee;
* no other payout an earlier ``reward.scheduled`` of an item's reward names is recorded at the rail (sent, paid,
  or sent with an unknown outcome, and not rejected or returned since): a reward set back to ``pending`` in the
  database is not paid a second time.

Otherwise the payout is not sent: it is held (status ``held``), or, when the chain last records a send whose
outcome is unknown (``sending``, ``unknown``), it becomes ``unresolved`` (an earlier send may have reached the rail:
an operator checks with the provider, then ``payhub payouts resolve``). The reason names each mismatch and the
change is audited. Releasing or resolving it does not skip this check: restore the rows first, or cancel it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import BigInteger, String, and_, cast, null, select, union_all

from payhub.api import PayoutInstruction
from payhub.audited import (
    AuditRow,
    Recorded,
    detail_of,
    fold_payout,
    minor,
    reached_rail,
    recorded_status,
    show,
)
from payhub.db.schema import audit_log, payout_items, rewards
from payhub.money import to_minor
from payhub.plugins import notify
from payhub.runtime import Runtime
from payhub.states import PayoutHold, PayoutStatus
from payhub.store import payouts as store
from payhub.store.payouts import CLAIMABLE

log = logging.getLogger(__name__)

SENDABLE = CLAIMABLE  # the claimable statuses, as last audited
ONCE_SENT = (PayoutStatus.SENT, PayoutStatus.PAID)
"""Once recorded (then final, or returned: a final status too), never sent again."""
SHOWN = 8  # mismatches named in a payout's reason; the audit entry lists them all


class Sendable(Protocol):
    id: int
    instruction: PayoutInstruction
    attempts: int
    lease: str  # the claim's lease token: the hold is written only while it holds


W = TypeVar("W", bound=Sendable)


def hold_mismatched(rt: Runtime, rail_name: str, batch: Sequence[W]) -> list[W]:
    """Return the payouts of ``batch`` that match their audit trail; hold the others, audited, with the reasons."""
    if not batch:
        return []
    entries: dict[str, list[AuditRow]] = defaultdict(list)
    items: dict[str, dict[int, _Item]] = defaultdict(dict)
    with rt.engine.connect() as conn:
        rows = conn.execute(_query([w.id for w in batch])).all()
        for payout, reward, seq, action, outcome, detail, item_minor, reward_minor, currency, payee in rows:
            if reward is None:
                entries[payout].append(AuditRow(seq, payout, action, outcome, detail))
                continue
            item = items[payout].get(reward)
            if item is None:
                item = items[payout][reward] = _Item(item_minor, reward_minor, currency, payee)
            if seq is None:
                continue
            if action == "reward.calculated":
                if item.calculated is None or seq > item.calculated.seq:
                    item.calculated = AuditRow(seq, str(reward), action, "", detail)
                continue
            row = AuditRow(seq, str(reward), action, "", detail)
            item.earlier.add(str(detail_of(row, f"reward {reward}", Recorded()).get("payout")))
            if item.scheduled is None or seq > item.scheduled.seq:
                item.scheduled = row
        for payout, by_reward in items.items():
            for item in by_reward.values():
                item.earlier.discard(payout)
        earlier = {int(p) for by_reward in items.values() for item in by_reward.values() for p in item.earlier
                   if p.isdigit()}
        at_rail = reached_rail(conn, earlier)
    keep: list[tuple[W, list[str]]] = []
    held: list[tuple[W, list[str]]] = []
    for w in batch:
        own = items.get(str(w.id), {})
        problems = mismatches(w.instruction, rail_name, entries.get(str(w.id), []), own)
        for reward_id, item in sorted(own.items()):
            for other in sorted(int(p) for p in item.earlier if p.isdigit() and int(p) in at_rail):
                hit = at_rail[other]
                problems.append(f"reward {reward_id} was scheduled before into payout {other}, which the audit log "
                                f"records as {hit.status} (entry {hit.seq}): a reward is never paid twice")
        (held if problems else keep).append((w, problems))
    if held:
        _hold(rt, [(w, problems, fold_payout(str(w.id), sorted(entries.get(str(w.id), []), key=lambda r: r.seq))
                    .get("status")) for w, problems in held])
    return [w for w, _problems in keep]


class _Item:
    """An item of the payout, its reward row's values and the reward's latest calculated / scheduled entries."""

    __slots__ = ("calculated", "currency", "earlier", "item_minor", "payee", "reward_minor", "scheduled")

    def __init__(self, item_minor: Any, reward_minor: Any, currency: Any, payee: Any) -> None:
        self.item_minor, self.reward_minor, self.currency, self.payee = item_minor, reward_minor, currency, payee
        self.calculated: AuditRow | None = None
        self.scheduled: AuditRow | None = None
        self.earlier: set[str] = set()  # the other payouts its reward.scheduled entries name


def _query(ids: list[int]) -> Any:
    """One statement: the payouts' entries, then one row per (item, audited reward entry)."""
    text_ids = [str(i) for i in ids]
    created = select(
        audit_log.c.subject_id, cast(null(), BigInteger), audit_log.c.seq, audit_log.c.action, audit_log.c.outcome,
        audit_log.c.detail,
        cast(null(), BigInteger), cast(null(), BigInteger), cast(null(), String), cast(null(), String),
    ).where(audit_log.c.subject_type == "payout", audit_log.c.subject_id.in_(text_ids))
    reward_entries = and_(audit_log.c.subject_type == "reward",
                          audit_log.c.subject_id == cast(payout_items.c.reward_id, String),
                          audit_log.c.action.in_(("reward.calculated", "reward.scheduled")))
    item_rows = select(
        cast(payout_items.c.payout_id, String), payout_items.c.reward_id, audit_log.c.seq, audit_log.c.action,
        audit_log.c.outcome, audit_log.c.detail, payout_items.c.amount_minor, rewards.c.amount_minor,
        rewards.c.currency, rewards.c.payee_id,
    ).select_from(
        payout_items.outerjoin(rewards, rewards.c.id == payout_items.c.reward_id).outerjoin(audit_log, reward_entries)
    ).where(payout_items.c.payout_id.in_(ids))
    return union_all(created, item_rows)


def mismatches(instruction: PayoutInstruction, rail: str, entries: list[AuditRow], items: dict[int, _Item]
               ) -> list[str]:
    """Every way the instruction about to be sent differs from what the audit chain recorded for it."""
    problems: list[str] = []
    recorded = Recorded()
    currency = instruction.currency
    try:
        amount = to_minor(instruction.amount, currency)
    except Exception:  # noqa: BLE001 - an amount the currency cannot hold is itself a mismatch
        return [f"amount {instruction.amount} {currency} is not a valid amount of its currency"]
    ordered = sorted(entries, key=lambda row: row.seq)
    status = fold_payout(str(instruction.payout_id), ordered)
    sent = next((row for row in ordered if recorded_status(row) in ONCE_SENT), None)
    if status.get("status") not in SENDABLE:
        problems.append(f"the audit log last records it as {status.get('status')} (entry {status.seq('status')}), "
                        "not as due to be sent")
    elif sent is not None:  # a payout the rail took is never sent again, whatever was released or resolved since
        problems.append(f"the audit log records it as {recorded_status(sent)} (entry {sent.seq}): it is never sent "
                        "again")
    created = [row for row in entries if row.action == "payout.created"]
    if not created:
        problems.append("no payout.created audit entry records this payout (created outside payhub?)")
        audited: dict[str, Any] = {}
    else:
        if len(created) > 1:
            problems.append(f"{len(created)} payout.created entries record this payout")
        entry = max(created, key=lambda row: row.seq)
        audited = detail_of(entry, f"payout {instruction.payout_id}", recorded)
        seq = entry.seq
        if minor(audited.get("amount"), audited.get("currency")) != amount:
            problems.append(f"amount {instruction.amount} {currency} differs from the audited "
                            f"{audited.get('amount')} {audited.get('currency')} (entry {seq})")
        for name, value in (("currency", currency), ("payee", instruction.payee.id),
                            ("key", instruction.idempotency_key), ("rail", rail)):
            if audited.get(name) != value:
                problems.append(f"{name} {value!r} differs from the audited {audited.get(name)!r} (entry {seq})")
        if audited.get("rewards") != len(items):
            problems.append(f"{len(items)} items, the audit recorded {audited.get('rewards')} (entry {seq})")
    if not items:
        problems.append("no items")
    total = sum(int(item.item_minor) for item in items.values())
    if items and total != amount:
        problems.append(f"its items add up to {show(total, currency)}, not its amount {instruction.amount} {currency}")
    for reward_id, item in sorted(items.items()):
        problems += _item_problems(instruction, reward_id, item, recorded)
    return recorded.problems + problems


def _item_problems(instruction: PayoutInstruction, reward_id: int, item: _Item, recorded: Recorded) -> list[str]:
    subject = f"reward {reward_id}"
    if item.reward_minor is None:
        return [f"{subject} of an item does not exist"]
    if item.calculated is None:
        return [f"{subject} has no reward.calculated audit entry (created outside payhub?)"]
    calc_seq, calc = item.calculated.seq, detail_of(item.calculated, subject, recorded)
    scheduled, scheduled_seq = None, calc_seq
    if item.scheduled is not None:
        scheduled, scheduled_seq = detail_of(item.scheduled, subject, recorded), item.scheduled.seq
    problems = []
    if scheduled is None or str(scheduled.get("payout")) != str(instruction.payout_id):
        problems.append(f"{subject} is not audited as scheduled into this payout")
    audited_amount, audited_currency, payee = calc.get("amount"), calc.get("currency"), calc.get("payee")
    audited_minor = minor(audited_amount, audited_currency)
    if scheduled is not None and "amount" in scheduled:  # converted into the payout's currency
        seq, expected, currency = scheduled_seq, scheduled.get("amount"), scheduled.get("currency")
        expected_minor = minor(expected, currency)
    else:
        seq, expected, currency, expected_minor = calc_seq, audited_amount, audited_currency, audited_minor
    if currency != instruction.currency or expected_minor != item.item_minor:
        problems.append(f"the item of {subject} is {show(item.item_minor, instruction.currency)}, audited "
                        f"{expected} {currency} (entry {seq})")
    if payee != instruction.payee.id:
        problems.append(f"{subject} was audited for payee {payee!r} (entry {calc_seq})")
    if (audited_minor, audited_currency, payee) != (item.reward_minor, item.currency, item.payee):
        problems.append(f"{subject} holds {show(item.reward_minor, item.currency)} for {item.payee!r}, audited "
                        f"{audited_amount} {audited_currency} for {payee!r} (entry {calc_seq})")
    return problems


def _hold(rt: Runtime, held: list[tuple[Any, list[str], str | None]]) -> None:
    done = []
    with rt.transaction() as tx:
        for w, problems, audited_status in held:
            more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
            reason = "does not match its audit trail: " + "; ".join(problems[:SHOWN]) + more
            # A send whose outcome is unknown may have arrived: an operator checks with the provider. Else held.
            status = (PayoutStatus.UNRESOLVED if w.attempts > 0 and audited_status in (PayoutStatus.SENDING,
                                                                                        PayoutStatus.UNKNOWN)
                      else PayoutStatus.HELD)
            # Not moved: the lease was lost (its new holder runs the same check), or a status that cannot be held.
            code = PayoutHold.AUDIT_TRAIL if status == PayoutStatus.HELD else None
            if not store.set_status(tx, w.id, status, w.lease, hold_code=code, reason=reason):
                log.error("payout %s does not match its audit trail and is not sent: %s", w.id, reason)
                continue
            tx.audit(f"payout.{status}", "payout", w.id,
                     {"reason": reason, "check": "audit trail", "problems": problems,
                      **({"hold_code": code} if code is not None else {})}, outcome=status)
            log.error("payout %s %s, not sent: %s", w.id, status, reason)
            done.append((w, status, reason))
    for w, status, reason in done:
        notify(rt.plugins.hooks.hook.payhub_payout_failed, payout=w.instruction, outcome=status, reason=reason)
