"""``payhub audit verify``'s cross-check: the payouts and rewards tables against what the chain last recorded.

A valid chain proves the audit entries were not changed; it says nothing of the rows beside it. This module reads
the rows and their entries in chunks of ids (flat memory, a few indexed queries per chunk) and reports every
difference, not only the first:

* payout: amount, currency, payee, rail, idempotency key, status (see :mod:`payhub.audited`), and its items: their
  number and their sum against its amount;
* reward: amount, currency, payee, status, and the payout it is in;
* a row no entry records (inserted outside payhub), an audited subject whose row is gone (deleted), an entry whose
  detail is not a JSON object.

After a retention cut, a payout or reward whose id is at most the highest one the archives hold (recorded in the
signed cut, :meth:`payhub.audit.Cut.archived_ids`) and whose remaining entries no longer record its amount was
created before the cut: it is final, and its values are compared with the archive's entries only by hand.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select

from payhub.audit import Cut, read_cut
from payhub.audited import AuditRow, Recorded, fold_payout, fold_reward, minor, show
from payhub.db.schema import audit_log, payout_items, payouts, rewards

CHUNK = 1000
SUBJECTS = ("payout", "reward")
MAX_ID_DIGITS = 18  # ids are 64-bit integers


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the tables differ from the chain."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


class AuditedIds:
    """The highest payout and reward id the chain mentions; feed it every entry (``verify(on_entry=...)``)."""

    def __init__(self) -> None:
        self.top = dict.fromkeys(SUBJECTS, 0)

    def see(self, row: dict[str, Any]) -> None:
        kind, subject = row.get("subject_type"), row.get("subject_id")
        if kind in self.top and isinstance(subject, str) and subject.isascii() and subject.isdigit() \
                and len(subject) <= MAX_ID_DIGITS:
            self.top[kind] = max(self.top[kind], int(subject))


def differences(conn: Connection, audited: AuditedIds, chunk: int = CHUNK) -> Iterator[Difference]:
    """Every difference between the payouts and rewards rows and the chain, payouts first, by id."""
    cut = read_cut(conn)  # its signature is checked with the chain (payhub.checkpoints.cut_problem)
    archived = cut.archived_ids() if isinstance(cut, Cut) else {}
    for kind, table in (("payout", payouts), ("reward", rewards)):
        top = max(conn.execute(select(func.max(table.c.id))).scalar() or 0, audited.top[kind])
        for low in range(1, top + 1, chunk):
            high = min(low + chunk - 1, top)
            if kind == "payout":
                yield from _payouts(conn, low, high, archived.get(kind, 0))
            else:
                yield from _rewards(conn, low, high, archived.get(kind, 0))


def _entries(conn: Connection, kind: str, ids: list[str]) -> dict[str, list[AuditRow]]:
    found: dict[str, list[AuditRow]] = defaultdict(list)
    if not ids:
        return found
    query = (select(audit_log.c.seq, audit_log.c.subject_id, audit_log.c.action, audit_log.c.outcome,
                    audit_log.c.detail)
             .where(audit_log.c.subject_type == kind, audit_log.c.subject_id.in_(ids)).order_by(audit_log.c.seq))
    for row in conn.execute(query):
        found[row.subject_id].append(AuditRow(*row))
    return found


def _rows(conn: Connection, table: Table, low: int, high: int) -> dict[int, Any]:
    return {row.id: row for row in conn.execute(select(table).where(table.c.id >= low, table.c.id <= high))}


def _presence(kind: str, key: str, row: Any, recorded: Recorded, created: str) -> Difference | None:
    if row is None:
        return Difference(f"{kind} {key}", f"is in the audit log (entry {recorded.first_seq}) but not in the table "
                          "(deleted outside payhub)")
    if recorded.first_seq is None:
        return Difference(f"{kind} {key}", "is in the table but no audit entry records it (inserted outside payhub)")
    if recorded.seq("status") is None:
        return Difference(f"{kind} {key}", f"has no {created} audit entry")
    return None


def _compare(subject: str, name: str, table_value: Any, recorded: Recorded, shown: str | None = None
             ) -> Difference | None:
    audited = recorded.get(name)
    if name not in recorded.values:
        return Difference(subject, f"its {name} {shown or repr(table_value)} was never audited")
    if audited == table_value:
        return None
    return Difference(subject, f"{name} is {shown or repr(table_value)} in the table, "
                      f"{audited!r} as audited (entry {recorded.seq(name)})")


def _amount(subject: str, minor_units: Any, currency: Any, recorded: Recorded) -> Difference | None:
    if "amount" not in recorded.values:
        return Difference(subject, f"its amount {show(minor_units, currency)} was never audited")
    audited_currency = recorded.get("currency")
    if minor(recorded.get("amount"), audited_currency) == minor_units:
        return None
    return Difference(subject, f"amount is {show(minor_units, currency)} in the table, {recorded.get('amount')} "
                      f"{audited_currency} as audited (entry {recorded.seq('amount')})")


def _payouts(conn: Connection, low: int, high: int, archived: int = 0) -> Iterator[Difference]:
    rows = _rows(conn, payouts, low, high)
    entries = _entries(conn, "payout", [str(i) for i in range(low, high + 1)])
    items = {payout_id: (count, total) for payout_id, count, total in conn.execute(
        select(payout_items.c.payout_id, func.count(), func.sum(payout_items.c.amount_minor))
        .where(payout_items.c.payout_id >= low, payout_items.c.payout_id <= high)
        .group_by(payout_items.c.payout_id))}
    for payout_id in range(low, high + 1):
        key = str(payout_id)
        row = rows.get(payout_id)
        if row is None and key not in entries:
            continue
        recorded = fold_payout(key, entries.get(key, ()))
        if payout_id <= archived and "amount" not in recorded.values:  # created before the retention cut
            continue
        subject = f"payout {key}"
        yield from (Difference(subject, p.split(": ", 1)[1]) for p in recorded.problems)
        missing = _presence("payout", key, row, recorded, "payout.created")
        if missing is not None or row is None:
            yield from ([missing] if missing is not None else [])
            continue
        checks = [_amount(subject, row.amount_minor, row.currency, recorded)]
        for name, value in (("currency", row.currency), ("payee", row.payee_id), ("rail", row.rail),
                            ("key", row.idempotency_key), ("status", row.status)):
            checks.append(_compare(subject, name, value, recorded))
        count, total = items.get(payout_id, (0, 0))
        if recorded.get("items") is not None and recorded.get("items") != count:
            checks.append(Difference(subject, f"has {count} items, the audit recorded {recorded.get('items')} "
                                     f"(entry {recorded.seq('items')})"))
        if total != row.amount_minor:
            checks.append(Difference(subject, f"its items add up to {show(total, row.currency)}, not its amount "
                                     f"{show(row.amount_minor, row.currency)}"))
        yield from (c for c in checks if c is not None)


def _rewards(conn: Connection, low: int, high: int, archived: int = 0) -> Iterator[Difference]:
    rows = _rows(conn, rewards, low, high)
    entries = _entries(conn, "reward", [str(i) for i in range(low, high + 1)])
    named: set[str] = set()
    for rows_of_reward in entries.values():
        for entry in rows_of_reward:
            if entry.action == "reward.scheduled":
                named_payout = _payout_of(entry.detail)
                if named_payout is not None:
                    named.add(named_payout)
    payout_rows = _entries(conn, "payout", sorted(named))
    for reward_id in range(low, high + 1):
        key = str(reward_id)
        row = rows.get(reward_id)
        if row is None and key not in entries:
            continue
        recorded = fold_reward(key, entries.get(key, ()), payout_rows)
        if reward_id <= archived and "amount" not in recorded.values:  # created before the retention cut
            continue
        subject = f"reward {key}"
        yield from (Difference(subject, p.split(": ", 1)[1]) for p in recorded.problems)
        missing = _presence("reward", key, row, recorded, "reward.calculated")
        if missing is not None or row is None:
            yield from ([missing] if missing is not None else [])
            continue
        checks = [_amount(subject, row.amount_minor, row.currency, recorded)]
        for name, value in (("currency", row.currency), ("payee", row.payee_id), ("status", row.status)):
            checks.append(_compare(subject, name, value, recorded))
        payout = None if row.payout_id is None else str(row.payout_id)
        if "payout" in recorded.values or payout is not None:
            checks.append(_compare(subject, "payout", payout, recorded))
        yield from (c for c in checks if c is not None)


def _payout_of(detail: Any) -> str | None:
    try:
        value = json.loads(detail)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("payout") is None:
        return None
    return str(value["payout"])
