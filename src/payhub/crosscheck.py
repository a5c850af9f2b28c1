"""``payhub audit verify``'s cross-check: the payouts and rewards tables against what the chain last recorded.

A valid chain proves the audit entries were not changed; it says nothing of the rows beside it. This module reads
the rows and their entries at the driver level in ranges of ids, in id order (flat memory, three indexed range
queries per range and one for the payouts a range of rewards names), parses each entry's detail once, and reports
every difference, not only the first:

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

import contextlib
import itertools
import json
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from payhub.audit import Cut, Workers, read_cut, worker_connection
from payhub.audited import (
    PAYOUT_RECORDS,
    REWARD_OWN_STATUS,
    REWARD_RECORDS,
    REWARD_STATES,
    REWARD_STATUS_OF_PAYOUT,
    AuditRow,
    Recorded,
    minor,
    payout_status,
    show,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

CHUNK = 2000
"""Ids compared per range: each range costs a few indexed queries and holds its rows and entries in memory."""
SUBJECTS = ("payout", "reward")
MAX_ID_DIGITS = 18  # ids are 64-bit integers
# Actions of a payout's entry that can change the status of the rewards in it (REWARD_STATUS_OF_PAYOUT, and
# payout.resolved's ``to``): the only entries of a reward's payouts that its fold reads.
_REWARD_MOVES = ("payout.sent", "payout.paid", "payout.rejected", "payout.returned", "payout.failed",
                 "payout.cancelled", "payout.resolved")

Row = tuple[Any, ...]
_first = itemgetter(0)
Entries = list[tuple[Any, Any, Any, Any, Any]]
"""A subject's entries in chain order: (subject id, seq, action, outcome, detail text) as the driver gives them."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the tables differ from the chain."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


class AuditedIds:
    """The highest payout and reward id the chain mentions: pass :attr:`top` as ``verify(top_ids=...)``."""

    def __init__(self) -> None:
        self.top = dict.fromkeys(SUBJECTS, 0)

    def see(self, row: dict[str, Any]) -> None:
        """Take one entry (a dict of its columns) into account: for tools that already build one per entry."""
        kind, subject = row.get("subject_type"), row.get("subject_id")
        if kind in self.top and isinstance(subject, str) and subject.isascii() and subject.isdigit() \
                and len(subject) <= MAX_ID_DIGITS:
            self.top[kind] = max(self.top[kind], int(subject))


PARALLEL_IDS = 20_000
"""Ids of a kind from which :func:`differences` with ``workers`` hands ranges to them."""
BATCH = 4
"""Ranges of ``chunk`` ids per task of a worker process."""


def differences(conn: Connection, audited: AuditedIds, chunk: int = CHUNK, workers: Workers | None = None
                ) -> Iterator[Difference]:
    """Every difference between the payouts and rewards rows and the chain, payouts first, by id.

    Reads ids 1 up to the highest of the table's and ``audited``'s, a range of at most ``chunk`` ids at a time (a
    range never spans two id lengths, so that the entries' text ids of a range are one index range); a driver error
    is raised as :class:`sqlalchemy.exc.DBAPIError`.

    With ``workers`` (:class:`payhub.audit.Workers`) and at least :data:`PARALLEL_IDS` ids of a kind, the worker
    processes compare batches of ranges, each in a read transaction of its own, and their differences are given in
    the same order; from a batch a worker could not finish (a database error), the ranges are compared here, so an
    error is raised here as without workers.
    """
    cut = read_cut(conn)  # its signature is checked with the chain (payhub.checkpoints.cut_problem)
    archived = cut.archived_ids() if isinstance(cut, Cut) else {}
    reader = _Reader(conn)
    queued: dict[str, list[tuple[list[tuple[int, int]], Future[list[Difference] | None]]]] = {}
    try:
        if workers is not None:  # the rewards' batches are queued with the payouts', so no worker waits between
            for kind in SUBJECTS:
                top = _top(reader, kind, audited)
                if top >= PARALLEL_IDS:
                    ranges = list(_ranges(top, chunk))
                    queued[kind] = [(batch, workers.submit(_compare_batch, kind, batch, archived.get(kind, 0)))
                                    for batch in (ranges[at:at + BATCH] for at in range(0, len(ranges), BATCH))]
        for kind in SUBJECTS:
            check = _payouts if kind == "payout" else _rewards
            left: Iterable[tuple[int, int]]
            if kind in queued:
                left = yield from _in_workers(queued[kind])
            else:
                left = _ranges(_top(reader, kind, audited), chunk)
            for low, high in left:
                yield from check(reader, low, high, archived.get(kind, 0))
    finally:
        for batches in queued.values():
            for _batch, future in batches:
                future.cancel()
        reader.close()


def _top(reader: _Reader, kind: str, audited: AuditedIds) -> int:
    """The highest id of ``kind`` in its table or in the chain."""
    found = reader.all(f"SELECT max(id) FROM {'payouts' if kind == 'payout' else 'rewards'}", ())
    return max(found[0][0] or 0, audited.top[kind])


def _in_workers(batches: list[tuple[list[tuple[int, int]], Future[list[Difference] | None]]]
                ) -> Generator[Difference, None, list[tuple[int, int]]]:
    """Yield the differences of ``batches`` as their workers give them, in order; return the ranges left to compare
    here (from the first batch a worker could not finish)."""
    for at, (_batch, future) in enumerate(batches):
        try:
            found = future.result()
        except Exception:  # noqa: BLE001 - a worker died or the pool is gone: the rest is compared here
            found = None
        if found is None:
            return [bounds for batch, _future in batches[at:] for bounds in batch]
        yield from found
    return []


def _compare_batch(kind: str, ranges: list[tuple[int, int]], archived: int) -> list[Difference] | None:
    """In a worker process: the differences of ``ranges`` of ``kind``, or None when they could not be read."""
    check = _payouts if kind == "payout" else _rewards
    try:
        with worker_connection() as conn:
            reader = _Reader(conn)
            try:
                return [difference for low, high in ranges for difference in check(reader, low, high, archived)]
            finally:
                reader.close()
    except Exception:  # noqa: BLE001 - the caller compares these ranges itself and meets the error there
        return None


def _ranges(top: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(low, high) ranges covering 1..``top``, at most ``chunk`` ids each, each within one number of digits."""
    low = 1
    while low <= top:
        high = min(low + chunk - 1, top, 10 ** len(str(low)) - 1)
        yield low, high
        low = high + 1


class _Reader:
    """Runs queries on ``conn``'s driver connection (in its transaction), ``?`` placeholders on both databases."""

    def __init__(self, conn: Connection) -> None:
        if not conn.in_transaction():
            conn.begin()
        self.pg = conn.dialect.name == "postgresql"
        self.error = conn.dialect.loaded_dbapi.Error
        try:
            self.cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        except self.error as exc:
            raise DBAPIError.instance("cursor()", None, exc, self.error) from exc

    def all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        if self.pg:
            sql = sql.replace("?", "%s")
        try:
            self.cursor.execute(sql, params)
            rows: list[Row] = self.cursor.fetchall()
        except self.error as exc:
            raise DBAPIError.instance(sql, params, exc, self.error) from exc
        return rows

    def entries(self, kind: str, low: int, high: int) -> dict[str, Entries]:
        """The entries of the subjects ``kind`` ``low``..``high`` (same number of digits), by id text, in chain
        order: one index range of ``subject_id`` (for ids of one length, text order is number order); ids that
        are not plain decimals (``007``, ``1a``) are left out, as no row has them."""
        length = len(str(low))
        found: dict[str, Entries] = {}
        for subject, rows in itertools.groupby(self.all(
                "SELECT subject_id, seq, action, outcome, detail FROM audit_log WHERE subject_type = ? "
                "AND subject_id >= ? AND subject_id <= ? AND length(subject_id) = ? ORDER BY subject_id, seq",
                (kind, str(low), str(high), length)), key=_first):
            if subject.isdigit() and subject.isascii():
                found.setdefault(subject, []).extend(rows)
        return found

    def payout_moves(self, ids: list[str]) -> dict[str, list[tuple[int, str]]]:
        """For each payout of ``ids``: (seq, reward status) of its entries that move its rewards, in chain order."""
        rows: list[Row] = []
        for low in range(0, len(ids), 500):
            part = ids[low:low + 500]
            params: list[Any]
            if self.pg:
                where, params = "subject_id = ANY(?)", [part]
            else:
                where, params = f"subject_id IN ({', '.join('?' * len(part))})", part
            rows += self.all("SELECT subject_id, seq, action, outcome, detail FROM audit_log "
                             f"WHERE subject_type = 'payout' AND {where} "
                             f"AND action IN ({', '.join('?' * len(_REWARD_MOVES))})", [*params, *_REWARD_MOVES])
        return reward_moves(rows)

    def close(self) -> None:
        with contextlib.suppress(self.error):  # a failed transaction may refuse to close it: it goes with it
            self.cursor.close()


_scan: Any = getattr(json.JSONDecoder(), "scan_once")  # noqa: B009 - the C scanner, untyped


def reward_moves(rows: Iterable[Row]) -> dict[str, list[tuple[int, str]]]:
    """For each payout among ``rows`` (its entries: subject id, seq, action, outcome, detail): (seq, status) of
    those that give the rewards in it a status (:data:`payhub.audited.REWARD_STATUS_OF_PAYOUT`), in chain order."""
    moves: dict[str, list[tuple[int, str]]] = {}
    for subject, seq, action, outcome, detail in rows:
        status = REWARD_STATUS_OF_PAYOUT.get(_payout_status(action, outcome, _loads(detail)
                                                            if action == "payout.resolved" else {}) or "")
        if status is not None:
            moves.setdefault(subject, []).append((seq, status))
    for found in moves.values():
        found.sort()
    return moves


def _parsed(subject: str, seq: Any, action: Any, text: Any, recorded: Recorded) -> dict[str, Any]:
    """An entry's detail as a dict (:func:`payhub.audited.detail_of`): not a JSON object is a problem, read as {}.

    What payhub writes (an object, nothing around it) is scanned directly; anything else goes through
    :func:`json.loads`, so the same texts are accepted."""
    if type(text) is str and text[:1] == "{":
        try:
            value, end = _scan(text, 0)
        except (StopIteration, ValueError):
            end = -1
        if end == len(text) and type(value) is dict:
            return value
    try:
        value = json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    recorded.problems.append(f"{subject}: audit entry {seq} ({str(action)[:80]}) holds a detail that is not a JSON "
                             "object")
    return {}


_STATUS: dict[tuple[Any, Any], str | None] = {}


def _payout_status(action: Any, outcome: Any, detail: dict[str, Any]) -> str | None:
    """:func:`payhub.audited.payout_status`, remembered per (action, outcome) for actions that ignore the detail."""
    if action == "payout.resolved":
        return payout_status(AuditRow(0, "", action, outcome, None), detail)
    key = action, outcome
    try:
        return _STATUS[key]
    except KeyError:
        status = payout_status(AuditRow(0, "", action, outcome, None), {})
        if len(_STATUS) < 256:  # what payhub writes; any other action is worked out each time
            _STATUS[key] = status
        return status


def fold_payout(payout_id: str, rows: Entries) -> Recorded:
    """:func:`payhub.audited.fold_payout` over driver rows, each detail parsed once."""
    recorded = Recorded()
    values = recorded.values
    subject = f"payout {payout_id}"
    if rows:
        recorded.first_seq = rows[0][1]
    for _id, seq, action, outcome, text in rows:
        detail = _parsed(subject, seq, action, text, recorded)
        if action == "payout.created":
            for name in PAYOUT_RECORDS:
                if name in detail:
                    values[name] = (detail[name], seq)
            values["status"] = ("scheduled", seq)
            if "rewards" in detail:
                values["items"] = (detail["rewards"], seq)
            continue
        if action == "payout.sending" and "key" in detail:
            values["key"] = (detail["key"], seq)
        status = _payout_status(action, outcome, detail)
        if status is not None:
            values["status"] = (status, seq)
    return recorded


def read_reward(reward_id: str, rows: Entries) -> tuple[Recorded, list[dict[str, Any]]]:
    """The first half of :func:`fold_reward`: ``rows``' details parsed (problems noted in a new Recorded)."""
    recorded = Recorded()
    subject = f"reward {reward_id}"
    return recorded, [_parsed(subject, seq, action, text, recorded) for _id, seq, action, _o, text in rows]


def fold_reward(reward_id: str, rows: Entries, moves: dict[str, list[tuple[int, str]]],
                read: tuple[Recorded, list[dict[str, Any]]] | None = None) -> Recorded:
    """:func:`payhub.audited.fold_reward` over driver rows, each detail parsed once (``read``: what
    :func:`read_reward` gave for them); ``moves`` gives, for the payouts the reward's ``reward.scheduled`` entries
    name, what :meth:`_Reader.payout_moves` gives."""
    recorded, details = read if read is not None else read_reward(reward_id, rows)
    values = recorded.values
    if rows:
        recorded.first_seq = rows[0][1]
    payout: str | None = None
    # The entries of the payout it is in, from its scheduling on: each counts in chain order among its own.
    theirs: Sequence[tuple[int, str]] = ()
    at = 0
    for (_id, seq, action, _outcome, _t), detail in zip(rows, details, strict=True):
        while at < len(theirs) and theirs[at][0] < seq:
            values["status"] = (theirs[at][1], theirs[at][0])
            at += 1
        if action == "reward.scheduled":
            payout = str(detail.get("payout"))
            values["payout"] = (payout, seq)
            theirs, at = moves.get(payout, ()), 0
            while at < len(theirs) and theirs[at][0] <= seq:
                at += 1
            if "amount" in detail and "currency" in detail:
                values["item"] = ((detail["amount"], detail["currency"]), seq)
            else:
                values.pop("item", None)
        elif action in ("reward.calculated", "reward.cancelled"):
            for name in REWARD_RECORDS:
                if name in detail:
                    values[name] = (detail[name], seq)
        own_status = _reward_status(action, detail)
        if own_status is not None:
            values["status"] = (own_status, seq)
    for their_seq, status in theirs[at:]:
        values["status"] = (status, their_seq)
    return recorded


def _reward_status(action: Any, detail: dict[str, Any]) -> str | None:
    """:func:`payhub.audited.reward_status` without building a row."""
    if action == "reward.calculated":
        status = detail.get("status", "pending")
    elif action == "reward.approved":
        status = "pending" if detail.get("pending") else "awaiting_approval"
    elif action == "reward.released":
        status = detail.get("to")
    else:
        status = REWARD_OWN_STATUS.get(action)
    return status if isinstance(status, str) and status in REWARD_STATES else None


def _presence(kind: str, key: str, row: Row | None, recorded: Recorded, created: str) -> Difference | None:
    if row is None:
        return Difference(f"{kind} {key}", f"is in the audit log (entry {recorded.first_seq}) but not in the table "
                          "(deleted outside payhub)")
    if recorded.first_seq is None:
        return Difference(f"{kind} {key}", "is in the table but no audit entry records it (inserted outside payhub)")
    if recorded.seq("status") is None:
        return Difference(f"{kind} {key}", f"has no {created} audit entry")
    return None


def _compare(subject: str, name: str, table_value: Any, recorded: Recorded) -> Difference | None:
    values = recorded.values
    if name not in values:
        return Difference(subject, f"its {name} {table_value!r} was never audited")
    audited, seq = values[name]
    if audited == table_value:
        return None
    return Difference(subject, f"{name} is {table_value!r} in the table, {audited!r} as audited (entry {seq})")


def _amount(subject: str, minor_units: Any, currency: Any, recorded: Recorded) -> Difference | None:
    if "amount" not in recorded.values:
        return Difference(subject, f"its amount {show(minor_units, currency)} was never audited")
    audited_currency = recorded.get("currency")
    if minor(recorded.get("amount"), audited_currency) == minor_units:
        return None
    return Difference(subject, f"amount is {show(minor_units, currency)} in the table, {recorded.get('amount')} "
                      f"{audited_currency} as audited (entry {recorded.seq('amount')})")


def _subjects(reader: _Reader, kind: str, columns: str, low: int, high: int
              ) -> tuple[dict[int, Row], dict[str, Entries]]:
    table = "payouts" if kind == "payout" else "rewards"
    rows = {row[0]: row for row in reader.all(f"SELECT {columns} FROM {table} WHERE id >= ? AND id <= ?",
                                              (low, high))}
    return rows, reader.entries(kind, low, high)


def _walk(rows: dict[int, Row], entries: dict[str, Entries], low: int, high: int
          ) -> Iterator[tuple[int, str, Row | None, Entries]]:
    """The ids of ``low``..``high`` with a row or entries, in order, with them."""
    ids = sorted({*rows, *(int(key) for key in entries)}) if len(rows) + len(entries) < high - low + 1 \
        else range(low, high + 1)
    for number in ids:
        key = str(number)
        row, own = rows.get(number), entries.get(key)
        if row is not None or own is not None:
            yield number, key, row, own or []


def _payouts(reader: _Reader, low: int, high: int, archived: int = 0) -> Iterator[Difference]:
    rows, entries = _subjects(reader, "payout", "id, amount_minor, currency, payee_id, rail, idempotency_key, status",
                              low, high)
    items = {payout_id: (count, total) for payout_id, count, total in reader.all(
        "SELECT payout_id, count(*), sum(amount_minor) FROM payout_items WHERE payout_id >= ? AND payout_id <= ? "
        "GROUP BY payout_id", (low, high))}
    for payout_id, key, row, own in _walk(rows, entries, low, high):
        recorded = fold_payout(key, own)
        if payout_id <= archived and "amount" not in recorded.values:  # created before the retention cut
            continue
        subject = f"payout {key}"
        yield from (Difference(subject, p.split(": ", 1)[1]) for p in recorded.problems)
        missing = _presence("payout", key, row, recorded, "payout.created")
        if missing is not None or row is None:
            yield from ([missing] if missing is not None else [])
            continue
        _id, amount, currency, payee, rail, idempotency_key, status = row
        checks = [_amount(subject, amount, currency, recorded)]
        values = recorded.values
        for name, value in (("currency", currency), ("payee", payee), ("rail", rail), ("key", idempotency_key),
                            ("status", status)):
            got = values.get(name)
            if got is None or got[0] != value:  # the usual case, equal, without a call
                checks.append(_compare(subject, name, value, recorded))
        count, total = items.get(payout_id, (0, 0))
        if recorded.get("items") is not None and recorded.get("items") != count:
            checks.append(Difference(subject, f"has {count} items, the audit recorded {recorded.get('items')} "
                                     f"(entry {recorded.seq('items')})"))
        if total != amount:
            checks.append(Difference(subject, f"its items add up to {show(total, currency)}, not its amount "
                                     f"{show(amount, currency)}"))
        yield from (c for c in checks if c is not None)


def _rewards(reader: _Reader, low: int, high: int, archived: int = 0) -> Iterator[Difference]:
    rows, entries = _subjects(reader, "reward", "id, amount_minor, currency, payee_id, status, payout_id", low, high)
    read = {key: read_reward(key, own) for key, own in entries.items()}
    named = {str(detail["payout"]) for key, own in entries.items()
             for (_id, _s, action, _o, _t), detail in zip(own, read[key][1], strict=True)
             if action == "reward.scheduled" and detail.get("payout") is not None}
    moves = reader.payout_moves(sorted(named))
    for reward_id, key, row, own in _walk(rows, entries, low, high):
        recorded = fold_reward(key, own, moves, read.get(key))
        if reward_id <= archived and "amount" not in recorded.values:  # created before the retention cut
            continue
        subject = f"reward {key}"
        yield from (Difference(subject, p.split(": ", 1)[1]) for p in recorded.problems)
        missing = _presence("reward", key, row, recorded, "reward.calculated")
        if missing is not None or row is None:
            yield from ([missing] if missing is not None else [])
            continue
        _id, amount, currency, payee, status, payout_id = row
        checks = [_amount(subject, amount, currency, recorded)]
        values = recorded.values
        for name, value in (("currency", currency), ("payee", payee), ("status", status)):
            got = values.get(name)
            if got is None or got[0] != value:  # the usual case, equal, without a call
                checks.append(_compare(subject, name, value, recorded))
        payout = None if payout_id is None else str(payout_id)
        if "payout" in recorded.values or payout is not None:
            checks.append(_compare(subject, "payout", payout, recorded))
        yield from (c for c in checks if c is not None)


def _loads(detail: Any) -> dict[str, Any]:
    try:
        value = json.loads(detail)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
