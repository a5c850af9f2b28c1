"""The payouts store: claims and leases, fenced status changes and the attempts of payouts.

Every status change is an UPDATE whose WHERE names the statuses it may come from (:func:`may_come_from`, from the
state machine :data:`payhub.states.PAYOUT_TRANSITIONS`), so a transition the machine does not allow changes nothing,
whatever the caller believed the status to be. Every write to a claimed payout is also fenced by the claim's lease
(:mod:`payhub.store.leases`): a worker whose lease expired or was taken over meanwhile writes nothing for that
payout, and says so in the log at WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, literal, literal_column, or_, select, text, update
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from payhub.api import PayoutInstruction
from payhub.clock import utcnow
from payhub.db.queries import IN_LIST, INSERT_CHUNK, driver_sql, for_update, insert_returning, marks
from payhub.db.schema import attempts, bind_time, payouts, rewards
from payhub.money import from_minor
from payhub.payees import load_payees
from payhub.runtime import Runtime, Tx
from payhub.states import (
    CLAIMABLE_PAYOUT_WHERE,
    PAYOUT_TRANSITIONS,
    AttemptKind,
    AttemptOutcome,
    HoldCode,
    PayoutHold,
    PayoutStatus,
    RewardStatus,
)
from payhub.states import payout_allowed as allowed
from payhub.store import leases, release_requests

log = logging.getLogger(__name__)

_SOURCES = {target: tuple(sorted(s for s, following in PAYOUT_TRANSITIONS.items() if target in following))
            for target in PAYOUT_TRANSITIONS}


@dataclass
class Work:
    """One claimed payout in flight."""

    id: int
    instruction: PayoutInstruction
    attempts: int
    needs_lookup: bool
    lease: str  # the token of the claim: every write to the payout is conditioned on it
    last_reason: str | None = None
    screened_by: tuple[str, ...] = ()  # the screening hooks that let it pass this round, recorded with the send
    override: int | None = None  # the two operators' release (its audit seq) that covered this round's denials
    done: bool = False


def fetch(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of one driver-level statement (``sql`` with ``?`` placeholders) as the driver returns them (tuples),
    inside the connection's transaction (begun here when none is: as any statement on it would)."""
    if not conn.in_transaction():
        conn.begin()
    cursor = conn.connection.cursor()
    try:
        cursor.execute(driver_sql(conn, sql), tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def may_come_from(new: str) -> ColumnElement[bool]:
    """The condition a payouts UPDATE to status ``new`` carries: its current status allows the change.

    The statuses are written into the SQL (they are the state machine's constants), so bulk UPDATEs can carry it too.
    """
    return payouts.c.status.in_([literal_column(f"'{state}'") for state in _SOURCES[PayoutStatus(new)]])


def instruction_for(row: Any, payee: Any) -> PayoutInstruction:
    """The instruction a rail receives for a payouts row."""
    return PayoutInstruction(
        payout_id=row.id, idempotency_key=row.idempotency_key, payee=payee,
        amount=from_minor(row.amount_minor, row.currency), currency=row.currency,
        reference=f"payhub payout {row.id}", created_at=row.created_at,
    )


def claim_rows(conn: Connection, rt: Runtime, query: Any) -> list[Work]:
    """Lease the payouts ``query`` selects (locked on PostgreSQL: see :func:`payhub.db.queries.for_update`) to this
    worker and return them as work."""
    return _lease(conn, rt, conn.execute(for_update(conn, query)).all())


def _lease(conn: Connection, rt: Runtime, rows: Sequence[Any]) -> list[Work]:
    """Lease ``rows`` (of :data:`CLAIMED`, locked on PostgreSQL) to this worker under one new token, as work."""
    if not rows:
        return []
    token = leases.new_token()
    conn.execute(update(payouts).where(payouts.c.id.in_([r.id for r in rows])).values(
        lease_owner=rt.worker_id, lease_token=token,
        lease_until=leases.expiry(conn, rt.settings.database.lease_seconds)))
    found = load_payees(conn, sorted({r.payee_id for r in rows}))
    work = []
    for row in rows:
        payee = found.get(row.payee_id)
        if payee is None:  # payees are never deleted from the registry table; guard anyway
            log.error("payout %s: payee %s is not in the registry", row.id, row.payee_id)
            continue
        work.append(Work(row.id, instruction_for(row, payee), row.attempts,
                         row.status in (PayoutStatus.UNKNOWN, PayoutStatus.SENDING),
                         token, row.reason))
    return work


CLAIMED = (payouts.c.id, payouts.c.idempotency_key, payouts.c.payee_id, payouts.c.currency, payouts.c.amount_minor,
           payouts.c.created_at, payouts.c.attempts, payouts.c.status, payouts.c.reason)
"""The columns :func:`claim_rows` reads (a claim reads no others: fewer values to convert per row)."""


def claim_due(rt: Runtime, rail_name: str, limit: int) -> list[Work]:
    """Lease up to ``limit`` of the rail's claimable payouts that are due (``next_attempt_at`` passed), by id."""
    with rt.engine.begin() as conn:
        return claim_rows(conn, rt, due(conn, rail_name, limit))


def due(conn: Connection, rail_name: str, limit: int) -> Select[Any]:
    """The first ``limit`` of the rail's claimable payouts that are due and free, by id (:data:`CLAIMED`).

    The cost follows the rail's claimable payouts, not all it ever had: the partial index ``ix_payouts_claimable``
    (rail, id) holds only payouts in a claimable status, and the statement states its condition as written
    (:data:`payhub.states.CLAIMABLE_PAYOUT_WHERE`) so that both databases' planners use it, statistics or not. One
    statement locks (PostgreSQL, skipping rows other replicas hold) exactly the payouts it returns."""
    return select(*CLAIMED).where(
        text(CLAIMABLE_PAYOUT_WHERE), payouts.c.rail == rail_name, leases.free(payouts, conn),
        or_(payouts.c.next_attempt_at.is_(None), payouts.c.next_attempt_at <= utcnow()),
    ).order_by(payouts.c.id).limit(limit)


def claim_to_settle(rt: Runtime, rail_name: str, checked_before: datetime, paid_since: datetime | None,
                    limit: int) -> tuple[list[Work], set[int]]:
    """Lease up to ``limit`` of the rail's payouts not checked since ``checked_before``: its ``sent`` ones by id, then,
    unless ``paid_since`` is None, its ``paid`` ones updated since ``paid_since`` (the return window), oldest change
    first; return them and the ids of the ``paid``. Both are index ranges (``ix_payouts_status_rail``,
    ``ix_payouts_status_rail_updated``): the rail's older paid payouts are never read."""
    with rt.engine.begin() as conn:
        unchecked = (payouts.c.rail == rail_name, leases.free(payouts, conn),
                     or_(payouts.c.checked_at.is_(None), payouts.c.checked_at < checked_before))
        rows = list(conn.execute(for_update(conn, select(*CLAIMED).where(
            payouts.c.status == PayoutStatus.SENT, *unchecked).order_by(payouts.c.id).limit(limit))).all())
        if paid_since is not None and len(rows) < limit:
            rows += conn.execute(for_update(conn, select(*CLAIMED).where(
                payouts.c.status == PayoutStatus.PAID, payouts.c.updated_at >= paid_since, *unchecked)
                .order_by(payouts.c.updated_at, payouts.c.id).limit(limit - len(rows)))).all()
        claimed = _lease(conn, rt, rows)
    paid = {row.id for row in rows if row.status == PayoutStatus.PAID}
    return claimed, {w.id for w in claimed if w.id in paid}


def release(rt: Runtime, claimed: Sequence[Work], **values: Any) -> None:
    """Give up the claim on ``claimed`` (one claim: one lease), writing ``values`` while it still holds."""
    if not claimed:
        return
    with rt.engine.begin() as conn:
        leases.release(conn, payouts, "id", [w.id for w in claimed], claimed[0].lease, **values)


def release_in(tx: Tx, claimed: Sequence[Work], **values: Any) -> None:
    """:func:`release`, inside the caller's transaction (the one that records the claim's last results)."""
    if claimed:
        leases.release(tx.conn, payouts, "id", [w.id for w in claimed], claimed[0].lease, **values)


def renew(rt: Runtime, batch: Sequence[Work]) -> set[int]:
    """Renew the lease of one claim before a rail call; return the ids still held."""
    with rt.engine.begin() as conn:
        return set(leases.renew(conn, payouts, "id", [w.id for w in batch], batch[0].lease,
                                rt.settings.database.lease_seconds))


def fence(tx: Tx, changes: Sequence[tuple[Work, str]]) -> set[int]:
    """Lock the payouts this worker may still move to the given statuses; return their ids.

    A payout whose lease this worker lost (expired, or claimed by another worker since) is dropped with a WARNING,
    as is a change the state machine does not allow from the payout's current status: write nothing for either.
    """
    if not changes:
        return set()
    live = statuses(tx, [w for w, _ in changes])
    kept = set()
    for w, new in changes:
        current = live.get(w.id)
        if current is None:
            log.warning("payout %s: stale write dropped (%s): this worker's lease on it expired or was taken over "
                        "by another worker, whose result stands", w.id, new)
        elif not allowed(current, new):
            log.warning("payout %s: change %s -> %s not allowed; dropped", w.id, current, new)
        else:
            kept.add(w.id)
    return kept


def statuses(tx: Tx, batch: Sequence[Work]) -> dict[int, str]:
    """Lock the payouts of ``batch`` this worker still holds a lease on; return their current status by id."""
    found: dict[int, str] = {}
    for token in {w.lease for w in batch}:
        rows = leases.holding(tx.conn, payouts, "id", [w.id for w in batch if w.lease == token], token,
                              payouts.c.status)
        found.update((payout_id, row.status) for payout_id, row in rows.items())
    return found


def set_status(tx: Tx, payout_id: int, status: str, lease: str | None = None, *,
               hold_code: PayoutHold | None = None, **values: Any) -> bool:
    """Move a payout to ``status``; return whether it moved (the caller audits the change only if it did).

    The UPDATE changes nothing unless the state machine allows ``status`` from the payout's current status, and,
    for a worker, its lease ``lease`` still holds; for an operator (``lease`` None), unless no worker holds one.
    ``hold_code`` says why a payout moved to ``held``; any other status clears it. A payout that is held, or
    leaves ``held`` (released, cancelled), loses its pending release requests: a request is for one hold only.
    """
    if hold_code is not None and status != PayoutStatus.HELD:
        raise ValueError(f"a hold code is for a held payout, not a {status} one")
    owner: ColumnElement[bool] = (leases.free(payouts, tx.conn) if lease is None
                                  else leases.held(payouts, lease, tx.conn))
    moved = tx.conn.execute(update(payouts).where(payouts.c.id == payout_id, may_come_from(status), owner)
                            .values(status=status, updated_at=utcnow(), hold_code=hold_code, **values,
                                    **({"first_sent_at": first_sent(utcnow())} if status in SENT_OR_PAID else {}))
                            ).rowcount
    if not moved:
        log.warning("payout %s: not moved to %s (a status or lease that does not allow it)", payout_id, status)
    elif status in _VOIDS_RELEASE:
        release_requests.clear(tx, payout_id)
    return bool(moved)


SENT_OR_PAID = (PayoutStatus.SENT, PayoutStatus.PAID)


def first_sent(now: datetime) -> ColumnElement[Any]:
    """``first_sent_at`` as a payout moving to ``sent`` or ``paid`` keeps it: the time it was first recorded so (its
    payment date, which the tax report counts by, kept when retention archives the audit entries), else ``now``."""
    return func.coalesce(payouts.c.first_sent_at, literal(now, payouts.c.first_sent_at.type))


_VOIDS_RELEASE = (PayoutStatus.HELD, *PAYOUT_TRANSITIONS[PayoutStatus.HELD])
"""Moving to one of these statuses voids a payout's release requests (all a held payout can move to, and held)."""


def fail(tx: Tx, payout_id: int, state: str, reason: str, detail: dict[str, Any], lease: str | None = None) -> bool:
    """A payout ended without paying: the money is owed again, so its rewards are held with the reason.

    Applied only as :func:`set_status` allows (``lease`` as there); return whether it was.
    """
    if not set_status(tx, payout_id, state, lease, reason=reason):
        return False
    tx.conn.execute(update(rewards).where(rewards.c.payout_id == payout_id).values(
        status=RewardStatus.HELD, hold_code=HoldCode.PAYOUT_FAILED, hold_reason=f"payout {payout_id} {state}: {reason}",
        updated_at=utcnow()))
    tx.audit(f"payout.{state}", "payout", payout_id, {**detail, "reason": reason}, outcome="failed")
    return True


def start_sends(tx: Tx, batch: Sequence[Work], now: datetime, lease_seconds: float) -> dict[int, int]:
    """Record a send attempt of each payout (``w.attempts`` already counts it) and move it to ``sending``, renewing
    its lease so that the rail call fits in it; return each payout's attempt id. Driver-level statements: one
    executemany of the payouts, one multi-row INSERT of the attempts (per :data:`IN_LIST`) returning their ids."""
    if not batch:
        return {}
    conn = tx.conn
    at = bind_time(conn.dialect)(now)
    if conn.dialect.name == "postgresql":  # the lease runs on the database's clock (payhub.store.leases.expiry)
        until, until_params = "clock_timestamp() + ? * INTERVAL '1 second'", (float(lease_seconds),)
    else:
        until, until_params = "?", (bind_time(conn.dialect)(utcnow() + timedelta(seconds=lease_seconds)),)
    conn.exec_driver_sql(
        driver_sql(conn, f"UPDATE payouts SET status = 'sending', attempts = ?, next_attempt_at = NULL, "
                         f"updated_at = ?, lease_until = {until} WHERE id = ? AND lease_token = ? "
                         f"AND status IN ({_sources_sql(PayoutStatus.SENDING)})"),
        [(w.attempts, at, *until_params, w.id, w.lease) for w in batch])
    found: dict[int, int] = {}
    for start in range(0, len(batch), IN_LIST):
        chunk = batch[start:start + IN_LIST]
        params = [value for w in chunk for value in (w.id, AttemptKind.SEND.value, w.attempts, at)]
        found.update((payout_id, attempt_id) for attempt_id, payout_id in conn.exec_driver_sql(driver_sql(
            conn, "INSERT INTO attempts (payout_id, kind, number, started_at) VALUES "
                  + ", ".join(["(?, ?, ?, ?)"] * len(chunk)) + " RETURNING id, payout_id"), tuple(params)))
    return found


def finish_attempts(tx: Tx, finished: Sequence[dict[str, Any]], now: datetime) -> None:
    """Record the outcome of attempts: each of ``finished`` has ``attempt`` (its id), ``outcome`` and ``detail``
    (one driver-level executemany)."""
    if finished:
        at = bind_time(tx.conn.dialect)(now)
        tx.conn.exec_driver_sql(
            driver_sql(tx.conn, "UPDATE attempts SET finished_at = ?, outcome = ?, detail = ? WHERE id = ?"),
            [(at, f["outcome"], f["detail"], f["attempt"]) for f in finished])


def record_lookup(tx: Tx, payout_id: int, number: int, started_at: datetime, outcome: str,
                  detail: str | None, finished_at: datetime | None = None) -> None:
    """Record a lookup of a payout (a rail's, or an operator's finding) as an attempt."""
    tx.conn.execute(attempts.insert().values(
        payout_id=payout_id, kind=AttemptKind.LOOKUP, number=number, started_at=started_at,
        finished_at=finished_at or started_at, outcome=outcome, detail=detail))


def mark_accepted(tx: Tx, settled: Sequence[tuple[Work, str, str | None]], now: datetime) -> None:
    """Move payouts the rail took to ``sent`` or ``paid`` (``(work, status, provider_ref)``), with their rewards:
    the common case, written at the driver level as one executemany of the payouts and one UPDATE of their rewards
    per status, fenced by lease and state machine."""
    conn = tx.conn
    at = bind_time(conn.dialect)(now)
    for state in (PayoutStatus.SENT, PayoutStatus.PAID):
        changes = [(ref, w.id, w.lease) for w, new, ref in settled if new == state]
        if not changes:
            continue
        conn.exec_driver_sql(driver_sql(conn, _ACCEPTED.format(state=state.value, sources=_sources_sql(state))),
                             [(ref, at, at, at, payout_id, token) for ref, payout_id, token in changes])
        ids = sorted(payout_id for _ref, payout_id, _token in changes)
        for start in range(0, len(ids), IN_LIST):
            chunk = ids[start:start + IN_LIST]
            conn.exec_driver_sql(driver_sql(conn, _REWARDS_OF.format(marks(len(chunk)))),
                                 (state.value, at, *chunk))


_ACCEPTED = ("UPDATE payouts SET status = '{state}', provider_ref = ?, reason = NULL, checked_at = ?, updated_at = ?, "
             "first_sent_at = COALESCE(first_sent_at, ?) WHERE id = ? AND lease_token = ? AND status IN ({sources})")
_REWARDS_OF = "UPDATE rewards SET status = ?, updated_at = ? WHERE payout_id IN ({})"


def _sources_sql(new: str) -> str:
    """The statuses a payout may move to ``new`` from, as an SQL list of literals (the state machine's constants)."""
    return ", ".join(f"'{state}'" for state in _SOURCES[PayoutStatus(new)])


def set_rewards_status(tx: Tx, payout_id: int, status: str, now: datetime) -> None:
    """Give the rewards a payout carries ``status`` (an operator found the payout sent or paid)."""
    tx.conn.execute(update(rewards).where(rewards.c.payout_id == payout_id).values(status=status, updated_at=now))


def defer(rt: Runtime, batch: Sequence[Work], later: datetime, reason: str) -> None:
    """Put off the claim's payouts until ``later`` with ``reason``: not a status change (no audit entry), fenced."""
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id.in_([w.id for w in batch]),
                                           leases.held(payouts, batch[0].lease, conn)).values(
            next_attempt_at=later, reason=reason))


def sends_in_flight(conn: Connection, ids: list[int], now: datetime, seconds: float) -> dict[int, datetime]:
    """The payouts with a send that did not answer (unknown outcome, or none recorded) and started less than
    ``seconds`` before ``now``, each with when it stops counting as possibly on its way to the rail."""
    rows = conn.execute(select(attempts.c.payout_id, func.max(attempts.c.started_at))
                        .where(attempts.c.payout_id.in_(ids), attempts.c.kind == AttemptKind.SEND,
                               or_(attempts.c.outcome.is_(None), attempts.c.outcome == AttemptOutcome.UNKNOWN))
                        .group_by(attempts.c.payout_id)).all()
    until = {payout_id: started + timedelta(seconds=seconds) for payout_id, started in rows if started is not None}
    return {payout_id: at for payout_id, at in until.items() if at > now}


def last_send_details(tx: Tx, ids: Sequence[int]) -> dict[int, str | None]:
    """The detail (the rail's reason) of each payout's last send attempt."""
    return {payout_id: detail for payout_id, detail in tx.conn.execute(
        select(attempts.c.payout_id, attempts.c.detail)
        .where(attempts.c.payout_id.in_(list(ids)), attempts.c.kind == AttemptKind.SEND)
        .order_by(attempts.c.id))}  # the last send of each payout wins


def last_attempt(tx: Tx, payout_id: int) -> tuple[str, str | None] | None:
    """The kind and outcome of the payout's last attempt, if any."""
    row = tx.conn.execute(select(attempts.c.kind, attempts.c.outcome).where(attempts.c.payout_id == payout_id)
                          .order_by(attempts.c.id.desc()).limit(1)).first()
    return None if row is None else (row.kind, row.outcome)


def load_for_decision(tx: Tx, payout_id: int) -> Any:
    """Lock a payout for an operator's decision: its row with ``leased`` (a worker's lease is running), or None
    when it does not exist or (on PostgreSQL) a worker's transaction has it locked."""
    leased = (payouts.c.lease_until > leases.db_now(tx.conn)).label("leased")  # the database's clock, as workers'
    return tx.conn.execute(for_update(tx.conn, select(payouts, leased).where(payouts.c.id == payout_id))).first()


def lease_owner(tx: Tx, payout_id: int) -> tuple[str | None] | None:
    """The payout's lease owner (as a one-element row), or None when the payout does not exist."""
    row = tx.conn.execute(select(payouts.c.lease_owner).where(payouts.c.id == payout_id)).first()
    return None if row is None else (row[0],)


_PAYOUT_COLUMNS = ("idempotency_key", "payee_id", "rail", "route_reason", "currency", "amount_minor", "item_count",
                   "status", "attempts", "created_at", "updated_at")
"""The columns of a payout :func:`create` writes, in the order of its rows' values."""
_INSERT_ITEMS = "INSERT INTO payout_items (payout_id, reward_id, amount_minor, fx) VALUES (?, ?, ?, ?)"
_SCHEDULE_REWARDS = ("WITH v (reward, payout) AS (VALUES {}) "
                     f"UPDATE rewards SET status = '{RewardStatus.SCHEDULED.value}', payout_id = v.payout, "
                     "hold_code = NULL, hold_reason = NULL, updated_at = ? FROM v WHERE rewards.id = v.reward")
"""The rewards scheduled into payouts: one statement per chunk of (reward id, payout id) pairs, so that PostgreSQL
plans and runs one UPDATE for the chunk instead of one per reward."""


def create(tx: Tx, rows: Sequence[tuple[str, str, str, str, str, int, int]],
           items: Sequence[tuple[int, int, int, str | None]], now: datetime) -> list[int]:
    """Insert ``scheduled`` payouts and return their ids in order. ``rows`` are ``(idempotency key, payee, rail,
    route reason, currency, amount_minor, item count)``; ``items`` are ``(index of the payout in rows, reward id,
    amount_minor, fx JSON or None)``: each is written and its reward becomes ``scheduled`` in that payout.

    Driver-level statements compiled once: the payouts by :func:`payhub.db.queries.insert_returning`, their ids
    matched by key, one executemany of the items and one UPDATE of the rewards per
    :data:`payhub.db.queries.INSERT_CHUNK`."""
    if not rows:
        return []
    conn = tx.conn
    at = bind_time(conn.dialect)(now)
    tail = (PayoutStatus.SCHEDULED.value, 0, at, at)
    id_of = dict(insert_returning(conn, "payouts", _PAYOUT_COLUMNS, [(*row, *tail) for row in rows],
                                  "idempotency_key, id"))
    ids = [id_of[row[0]] for row in rows]
    if not items:
        return ids
    conn.exec_driver_sql(driver_sql(conn, _INSERT_ITEMS),
                         [(ids[index], reward_id, minor, fx) for index, reward_id, minor, fx in items])
    pairs = [(reward_id, ids[index]) for index, reward_id, _minor, _fx in items]
    for start in range(0, len(pairs), INSERT_CHUNK):
        chunk = pairs[start:start + INSERT_CHUNK]
        conn.exec_driver_sql(driver_sql(conn, _SCHEDULE_REWARDS.format(", ".join(["(?, ?)"] * len(chunk)))),
                             (*(value for pair in chunk for value in pair), at))
    return ids
