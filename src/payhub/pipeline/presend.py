"""The check before each send: a payout goes out only as the audit chain recorded it.

For the payouts of a batch about to be sent, statements by key (per 500 payouts, executed at the driver level) read
their audit entries, and their items with the rewards they pay and each reward's ``reward.calculated`` and
``reward.scheduled`` entries; each detail is parsed once, and a payout whose rows all match takes a quick path (any
doubt goes through the full comparison, which names every mismatch). The payout is sent only if:

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

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

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
from payhub.db.queries import IN_LIST, marks
from payhub.money import to_minor
from payhub.plugins import notify
from payhub.runtime import Runtime
from payhub.states import CLAIMABLE_PAYOUT, PayoutHold, PayoutStatus
from payhub.store import payouts as store

log = logging.getLogger(__name__)

SENDABLE = CLAIMABLE_PAYOUT  # the claimable statuses, as last audited
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
    with rt.engine.connect() as conn:
        entries, items = _read(conn, [w.id for w in batch])
        earlier = {int(p) for by_reward in items.values() for item in by_reward.values() for p in item.earlier()
                   if p.isdigit()}
        at_rail = reached_rail(conn, earlier)
    keep: list[tuple[W, list[str]]] = []
    held: list[tuple[W, list[str]]] = []
    for w in batch:
        own = items.get(str(w.id), {})
        own_entries = entries.get(str(w.id), [])
        problems = [] if _clean(w.instruction, rail_name, own_entries, own) else mismatches(
            w.instruction, rail_name, own_entries, own)
        for reward_id, item in sorted(own.items()) if at_rail else ():
            for other in sorted(int(p) for p in item.earlier() if p.isdigit() and int(p) in at_rail):
                hit = at_rail[other]
                problems.append(f"reward {reward_id} was scheduled before into payout {other}, which the audit log "
                                f"records as {hit.status} (entry {hit.seq}): a reward is never paid twice")
        (held if problems else keep).append((w, problems))
    if held:
        _hold(rt, [(w, problems, fold_payout(str(w.id), sorted(entries.get(str(w.id), []), key=lambda r: r.seq))
                    .get("status")) for w, problems in held])
    return [w for w, _problems in keep]


class _Item:
    """An item of the payout, its reward row's values and the reward's ``reward.calculated`` / ``reward.scheduled``
    entries (``(seq, detail)``; each detail is parsed at most once)."""

    __slots__ = ("calculated", "currency", "item_minor", "parsed", "payee", "payout", "reward_minor", "scheduled")

    def __init__(self, payout: str, item_minor: Any, reward_minor: Any, currency: Any, payee: Any) -> None:
        self.payout = payout
        self.item_minor, self.reward_minor, self.currency, self.payee = item_minor, reward_minor, currency, payee
        self.calculated: tuple[int, Any] | None = None  # the latest
        self.scheduled: list[tuple[int, Any]] = []  # all of them
        self.parsed: list[dict[str, Any]] | None = None  # the scheduled details, parsed (None: not yet)

    def latest_scheduled(self) -> tuple[int, Any] | None:
        return max(self.scheduled, key=lambda entry: entry[0]) if self.scheduled else None

    def scheduled_details(self) -> list[dict[str, Any]]:
        """Each ``reward.scheduled`` detail as a dict ({} for one that is not a JSON object), in ``scheduled``'s
        order."""
        if self.parsed is None:
            self.parsed = [_object(detail) for _seq, detail in self.scheduled]
        return self.parsed

    def only_here(self) -> bool:
        """Whether it has one ``reward.scheduled`` entry, whose detail is exactly ``{"payout":<this payout>}`` (the
        canonical JSON the audit writer stores for it: read without parsing)."""
        return len(self.scheduled) == 1 and self.scheduled[0][1] == f'{{"payout":{self.payout}}}'

    def earlier(self) -> set[str]:
        """The other payouts (as text) its ``reward.scheduled`` entries name."""
        if self.only_here():
            return set()  # the common case: scheduled once, into this payout
        return {str(detail.get("payout")) for detail in self.scheduled_details()} - {self.payout}


def _object(detail: Any) -> dict[str, Any]:
    """An entry's detail as :func:`payhub.audited.detail_of` reads it: a dict, or {} when not a JSON object."""
    try:
        value = json.loads(detail) if isinstance(detail, str | bytes) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_PAYOUT_ENTRIES = ("SELECT subject_id, seq, action, outcome, detail FROM audit_log "
                   "WHERE subject_type = 'payout' AND subject_id IN ({})")
_ITEMS = ("SELECT payout_id, reward_id, amount_minor FROM payout_items WHERE payout_id IN ({}) "
          "ORDER BY payout_id, reward_id")
_REWARDS = "SELECT id, amount_minor, currency, payee_id FROM rewards WHERE id IN ({})"
# The action is compared as an expression no index serves, so that the rewards' entries are read by subject: a planner
# without statistics may otherwise join the action's index in, which holds every reward's entries.
_REWARD_ENTRIES = ("SELECT subject_id, seq, action, detail FROM audit_log WHERE subject_type = 'reward' "
                   "AND subject_id IN ({}) AND action || '' IN ('reward.calculated', 'reward.scheduled')")


def _read(conn: Connection, ids: list[int]) -> tuple[dict[str, list[AuditRow]], dict[str, dict[int, _Item]]]:
    """The payouts' own audit entries, and their items with each reward's row and calculated / scheduled entries,
    executed at the driver level, rows read as plain tuples. Every statement reads by key (a list of at most
    :data:`IN_LIST` ids): the cost follows the batch, not the tables, whatever the planner knows of them."""
    entries: dict[str, list[AuditRow]] = defaultdict(list)
    items: dict[str, dict[int, _Item]] = defaultdict(dict)
    for start in range(0, len(ids), IN_LIST):
        chunk = ids[start:start + IN_LIST]
        for subject, seq, action, outcome, detail in store.fetch(conn, _PAYOUT_ENTRIES.format(marks(len(chunk))),
                                                                 [str(i) for i in chunk]):
            entries[subject].append(AuditRow(seq, subject, action, outcome, detail))
        rows = store.fetch(conn, _ITEMS.format(marks(len(chunk))), chunk)
        rewards: dict[int, tuple[Any, Any, Any]] = {}
        of_reward: dict[str, list[_Item]] = defaultdict(list)
        reward_ids = sorted({reward for _payout, reward, _minor in rows})
        for at in range(0, len(reward_ids), IN_LIST):
            part = reward_ids[at:at + IN_LIST]
            rewards.update((reward, rest) for reward, *rest in store.fetch(conn, _REWARDS.format(marks(len(part))),
                                                                           part))
        for payout, reward, item_minor in rows:
            item = items[str(payout)][reward] = _Item(str(payout), item_minor, *rewards.get(reward, (None,) * 3))
            of_reward[str(reward)].append(item)
        texts = sorted(of_reward)
        for at in range(0, len(texts), IN_LIST):
            part_texts = texts[at:at + IN_LIST]
            for subject, seq, action, detail in store.fetch(conn, _REWARD_ENTRIES.format(marks(len(part_texts))),
                                                            part_texts):
                for item in of_reward[subject]:
                    if action == "reward.calculated":
                        if item.calculated is None or seq > item.calculated[0]:
                            item.calculated = (seq, detail)
                    else:
                        item.scheduled.append((seq, detail))
    return entries, items


def _clean(instruction: PayoutInstruction, rail: str, entries: list[AuditRow], items: dict[int, _Item]) -> bool:
    """Whether :func:`mismatches` would find nothing: the payout's own checks, then a quick test of each item that
    accepts only what :func:`_item_problems` accepts (anything else goes through :func:`mismatches` for reasons)."""
    recorded = Recorded()
    if _payout_problems(instruction, rail, entries, items, recorded) or recorded.problems:
        return False
    return all(_item_clean(instruction, item) for item in items.values())


def _item_clean(instruction: PayoutInstruction, item: _Item) -> bool:
    if item.reward_minor is None or item.calculated is None or not item.scheduled:
        return False
    try:
        calc = json.loads(item.calculated[1])
    except (TypeError, ValueError):
        return False
    if not isinstance(calc, dict):
        return False
    if item.only_here():
        scheduled: dict[str, Any] = {"payout": item.payout}
    elif len(item.scheduled) == 1:
        scheduled = item.scheduled_details()[0]
        if not scheduled:
            return False  # not a JSON object (or an empty one, which names no payout)
    else:
        latest = item.latest_scheduled()
        scheduled = item.scheduled_details()[item.scheduled.index(latest)] if latest is not None else {}
        if not isinstance(_loads_strict(latest), dict):
            return False
    if str(scheduled.get("payout")) != item.payout:
        return False
    amount, currency, payee = calc.get("amount"), calc.get("currency"), calc.get("payee")
    audited_minor = minor(amount, currency)
    if "amount" in scheduled:
        expected_currency = scheduled.get("currency")
        expected_minor = minor(scheduled.get("amount"), expected_currency)
    else:
        expected_currency, expected_minor = currency, audited_minor
    return (expected_currency == instruction.currency and expected_minor == item.item_minor
            and payee == instruction.payee.id
            and (audited_minor, currency, payee) == (item.reward_minor, item.currency, item.payee))


def _loads_strict(entry: tuple[int, Any] | None) -> Any:
    try:
        return json.loads(entry[1]) if entry is not None and isinstance(entry[1], str | bytes) else None
    except ValueError:
        return None


def mismatches(instruction: PayoutInstruction, rail: str, entries: list[AuditRow], items: dict[int, _Item]
               ) -> list[str]:
    """Every way the instruction about to be sent differs from what the audit chain recorded for it."""
    recorded = Recorded()
    problems = _payout_problems(instruction, rail, entries, items, recorded)
    for reward_id, item in sorted(items.items()):
        problems += _item_problems(instruction, reward_id, item, recorded)
    return recorded.problems + problems


def _payout_problems(instruction: PayoutInstruction, rail: str, entries: list[AuditRow], items: dict[int, _Item],
                     recorded: Recorded) -> list[str]:
    """The payout's own mismatches: its recorded status and ``payout.created`` entry, its items' count and sum."""
    problems: list[str] = []
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
    return problems


def _item_problems(instruction: PayoutInstruction, reward_id: int, item: _Item, recorded: Recorded) -> list[str]:
    subject = f"reward {reward_id}"
    if item.reward_minor is None:
        return [f"{subject} of an item does not exist"]
    if item.calculated is None:
        return [f"{subject} has no reward.calculated audit entry (created outside payhub?)"]
    calc_seq = item.calculated[0]
    calc = detail_of(AuditRow(calc_seq, str(reward_id), "reward.calculated", "", item.calculated[1]), subject,
                     recorded)
    scheduled, scheduled_seq = None, calc_seq
    latest = item.latest_scheduled()
    if latest is not None:
        scheduled_seq = latest[0]
        scheduled = detail_of(AuditRow(scheduled_seq, str(reward_id), "reward.scheduled", "", latest[1]), subject,
                              recorded)
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
