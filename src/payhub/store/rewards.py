"""The rewards store: writing rewards, and the sums of past rewards that caps, budgets and clawbacks decide from.

The sums count every reward that is not ``cancelled``; a reward ``held`` for its budget does not use the budget.
Backup withholding lines (kind ``withholding``) are not counted: they are tax kept back from what was granted, not
less granted.

The database keeps these sums as running totals (``reward_totals`` per program, currency, scope and month of the
event; ``budget_totals`` per budget pool), updated by triggers in the statement that changes a reward (revision
0010), so a sum over whole months or all time reads a few rows however long the history; a period that does not
start and end on a month boundary is summed from the rewards themselves. :func:`totals_drift` checks the totals
against the rewards. A total is spread over ``slot`` rows (concurrent PostgreSQL writers each add to their own slot,
so they never wait on each other): every read sums over the slots. A read takes no lock: like the sums of rewards
it replaced, it counts what other transactions have committed and what this one has written.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, exists, func, not_, or_, select, union, update

from payhub.db.queries import for_update, in_chunks, insert_returning, unindexed
from payhub.db.schema import (
    approvals,
    bind_time,
    budget_totals,
    events,
    payees,
    payout_items,
    payouts,
    reward_totals,
    rewards,
)
from payhub.states import FINAL_PAYOUT, RECHECKED_HOLDS, UNPAID, HoldCode, RewardKind, RewardStatus

# Statements built once: each call only binds its values.
_REWARDS_OF_EVENTS = rewards.join(events, events.c.id == rewards.c.event_id)
_GRANTED = rewards.c.kind != RewardKind.WITHHOLDING
_LIVE = and_(rewards.c.currency == bindparam("currency"), rewards.c.status != RewardStatus.CANCELLED, _GRANTED)
_IN_PERIOD = and_(events.c.occurred_at >= bindparam("since"), events.c.occurred_at < bindparam("until"))
_PROGRAM = rewards.c.program == bindparam("program")
# A payee's rewards are found by its index (ix_rewards_payee_id), their program filtered: see queries.unindexed.
_OF_PAYEE = and_(rewards.c.payee_id == bindparam("scope"), unindexed(rewards.c.program) == bindparam("program"))
_SCOPES = {"payee": _OF_PAYEE, "partner": and_(events.c.partner_id == bindparam("scope"), _PROGRAM),
           "program": _PROGRAM}
_SUM = func.coalesce(func.sum(rewards.c.amount_minor), 0)
# (scope, within a period) -> the sum of the live rewards of a program in a currency, summed by the database
_SUMS = {(per, timed): select(_SUM).select_from(_REWARDS_OF_EVENTS).where(
    _LIVE, _SCOPES[per], *([_IN_PERIOD] if timed else []))
    for per in ("payee", "partner", "program") for timed in (False, True)}
_USES_BUDGET = and_(rewards.c.status != RewardStatus.CANCELLED,
                    not_(and_(rewards.c.status == RewardStatus.HELD, rewards.c.hold_code == HoldCode.BUDGET)))


NEW_REWARD_COLUMNS = ("event_id", "program", "payee_id", "amount_minor", "currency", "description", "details",
                      "status", "hold_code", "hold_reason", "approvals_needed", "budget_key", "fx_mode")
"""The values of a new reward, in the order :func:`insert` takes them (``created_at`` and ``updated_at`` are the
time of the insert)."""
WRITTEN = ("id", "event_id", "program", "payee_id", "amount_minor", "currency", "status", "hold_reason",
           "approvals_needed")
"""The columns of each reward :func:`insert` returns, in order."""
def insert(conn: Connection, rows: Sequence[tuple[Any, ...]], now: datetime) -> list[Any]:
    """Write rewards, each a tuple of :data:`NEW_REWARD_COLUMNS`, created at ``now``; return the :data:`WRITTEN`
    columns of each, by id (:func:`payhub.db.queries.insert_returning`)."""
    at = bind_time(conn.dialect)(now)
    written = insert_returning(conn, "rewards", (*NEW_REWARD_COLUMNS, "created_at", "updated_at"),
                               [(*row, at, at) for row in rows], ", ".join(WRITTEN))
    written.sort()
    return written


def month_span(since: datetime, until: datetime) -> tuple[str, str] | None:
    """The months ``[first, end)`` as ``YYYY-MM`` labels when ``[since, until)`` starts and ends on the first instant of
    a UTC month (as :func:`payhub.clock.period_bounds` gives), else None (the totals cannot answer it)."""
    labels = []
    for moment in (since, until):
        moment = moment.astimezone(UTC)
        if (moment.day, moment.hour, moment.minute, moment.second, moment.microsecond) != (1, 0, 0, 0, 0):
            return None
        labels.append(f"{moment.year:04d}-{moment.month:02d}")
    return labels[0], labels[1]


def _totals_sql(conn: Connection, timed: bool, *, payees: int = 0, programs: int = 0) -> str:
    """The driver-level text of a sum over ``reward_totals`` (built per call shape, once)."""
    key = (conn.dialect.paramstyle, timed, payees, programs)
    sql = _TOTALS_SQL.get(key)
    if sql is None:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        where = [f"currency = {mark}", f"per = {mark}"]
        if payees:
            where.append(f"scope_id IN ({', '.join([mark] * payees)})")
        else:
            where += [f"program = {mark}", f"scope_id = {mark}"]
        if programs:
            where.append(f"program IN ({', '.join([mark] * programs)})")
        if timed:
            where += [f"month >= {mark}", f"month < {mark}"]
        # summed over the slots of each total as well
        sql = _TOTALS_SQL[key] = f"SELECT coalesce(sum(amount_minor), 0) FROM reward_totals WHERE {' AND '.join(where)}"
    return sql


_TOTALS_SQL: dict[tuple[Any, ...], str] = {}


def total(conn: Connection, program: str, payee_id: str, currency: str, since: datetime | None = None) -> int:
    """Minor units of the payee's live rewards of ``program`` in ``currency`` (created since ``since``)."""
    if since is None:
        return int(conn.exec_driver_sql(_totals_sql(conn, False), (currency, "payee", program, payee_id)).scalar_one())
    query = select(_SUM).where(
        unindexed(rewards.c.program) == program, rewards.c.payee_id == payee_id, rewards.c.currency == currency,
        rewards.c.status != RewardStatus.CANCELLED, _GRANTED,
    )
    if since is not None:
        query = query.where(rewards.c.created_at >= since)
    return int(conn.execute(query).scalar_one())


def scope_total(conn: Connection, program: str, currency: str, per: str, scope_id: str | None,
                since: datetime | None, until: datetime | None) -> int:
    """Minor units of the live rewards of ``program`` in ``currency`` for a payee, a partner or the whole program
    (``per``), of events that occurred in ``[since, until)`` when both are given."""
    timed = since is not None and until is not None
    months = month_span(since, until) if since is not None and until is not None else None
    if months is not None or not timed:
        args = (currency, per, program, scope_id or "", *(months or ()))
        return int(conn.exec_driver_sql(_totals_sql(conn, months is not None), args).scalar_one())
    params: dict[str, Any] = {"program": program, "currency": currency}
    params |= {"scope": scope_id} if per != "program" else {}
    params |= {"since": since, "until": until} if timed else {}
    return int(conn.execute(_SUMS[(per, timed)], params).scalar_one())


def scope_totals(conn: Connection, program: str, currency: str, per: str, scope_ids: Collection[str],
                 months: tuple[str, str] | None) -> dict[str, int]:
    """:func:`scope_total` of many payees or partners (``per``) at once, from the running totals: minor units of the
    live rewards of ``program`` in ``currency`` of each of ``scope_ids`` in the months ``[first, end)`` (all time
    when ``months`` is None). One statement per 500 scopes; a scope without rewards is 0."""
    found = dict.fromkeys(scope_ids, 0)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for chunk in in_chunks(found):
        sql = _SCOPES_SQL.get((mark, len(chunk), months is not None))
        if sql is None:
            sql = _SCOPES_SQL[(mark, len(chunk), months is not None)] = (
                f"SELECT scope_id, sum(amount_minor) FROM reward_totals WHERE program = {mark} AND currency = {mark} "
                f"AND per = {mark} AND scope_id IN ({', '.join([mark] * len(chunk))})"
                + (f" AND month >= {mark} AND month < {mark}" if months is not None else "") + " GROUP BY scope_id")
        for scope_id, minor in conn.exec_driver_sql(sql, (program, currency, per, *chunk, *(months or ()))):
            found[scope_id] = int(minor)
    return found


_SCOPES_SQL: dict[tuple[str, int, bool], str] = {}


def budgets_used(conn: Connection, keys: Collection[str]) -> dict[str, int]:
    """:func:`budget_used` of many pools at once (one statement per 500 pools); a pool without rewards is 0."""
    found = dict.fromkeys(keys, 0)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for chunk in in_chunks(found):
        sql = (f"SELECT budget_key, sum(amount_minor) FROM budget_totals WHERE budget_key IN "
               f"({', '.join([mark] * len(chunk))}) GROUP BY budget_key")
        for key, minor in conn.exec_driver_sql(sql, tuple(chunk)):
            found[key] = int(minor)
    return found


def budget_used(conn: Connection, key: str) -> int:
    """Minor units the budget pool ``key`` has given out (live rewards not held for the budget)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return int(conn.exec_driver_sql(f"SELECT coalesce(sum(amount_minor), 0) FROM budget_totals WHERE budget_key = "
                                    f"{mark}", (key,)).scalar_one())


def payees_total(conn: Connection, payee_ids: Collection[str], currency: str, since: datetime, until: datetime,
                 programs: Collection[str] | None) -> int | None:
    """Minor units of the live rewards in ``currency`` to any of ``payee_ids`` of events in ``[since, until)``, of
    every program or only ``programs``, from the running totals; None when the period is not whole months."""
    months = month_span(since, until)
    if months is None:
        return None
    total_ = 0
    chosen = sorted(programs) if programs is not None else []
    if programs is not None and not chosen:
        return 0
    ids = sorted(payee_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        sql = _totals_sql(conn, True, payees=len(chunk), programs=len(chosen))
        total_ += int(conn.exec_driver_sql(sql, (currency, "payee", *chunk, *chosen, *months)).scalar_one())
    return total_


_COUNTED_SUMS = {  # (per, scope expression) -> what the totals of that scope must be, from the rewards
    per: select(rewards.c.program, rewards.c.currency, scope.label("scope_id"), events.c.occurred_at,
                rewards.c.amount_minor).select_from(_REWARDS_OF_EVENTS).where(
        rewards.c.status != RewardStatus.CANCELLED, _GRANTED, *([scope.is_not(None)] if per == "partner" else []))
    for per, scope in (("payee", rewards.c.payee_id), ("partner", events.c.partner_id))}


def totals_drift(conn: Connection) -> list[str]:
    """Where the running totals differ from the rewards they sum (empty when they agree): each differing total, as
    ``reward_totals program/currency/per/scope/month: kept X, rewards Y`` or ``budget_totals key: kept X, rewards Y``
    (kept: the sum over the total's slots). Reads every reward: a check for audits and tests, not for the hot path."""
    expected: dict[tuple[str, str, str, str, str], int] = {}
    for per, query in _COUNTED_SUMS.items():
        for program, currency, scope_id, occurred_at, minor in conn.execute(query):
            month = f"{occurred_at.year:04d}-{occurred_at.month:02d}" if occurred_at is not None else ""
            for key in ((program, currency, per, scope_id, month), (program, currency, "program", "", month)):
                if per == "partner" and key[2] == "program":
                    continue
                expected[key] = expected.get(key, 0) + minor
    key_columns = (reward_totals.c.program, reward_totals.c.currency, reward_totals.c.per, reward_totals.c.scope_id,
                   reward_totals.c.month)
    kept = {tuple(row[:5]): int(row[5]) for row in conn.execute(
        select(*key_columns, func.sum(reward_totals.c.amount_minor)).group_by(*key_columns))}
    drift = [f"reward_totals {'/'.join(key)}: kept {kept.get(key, 0)}, rewards {expected.get(key, 0)}"
             for key in sorted(set(kept) | set(expected)) if kept.get(key, 0) != expected.get(key, 0)]
    used = {str(k): int(v) for k, v in conn.execute(
        select(rewards.c.budget_key, _SUM).where(rewards.c.budget_key.is_not(None), _USES_BUDGET)
        .group_by(rewards.c.budget_key))}
    pool = budget_totals.c.budget_key
    stored = {str(k): int(v) for k, v in conn.execute(
        select(pool, func.sum(budget_totals.c.amount_minor)).group_by(pool))}
    drift += [f"budget_totals {key}: kept {stored.get(key, 0)}, rewards {used.get(key, 0)}"
              for key in sorted(set(used) | set(stored)) if stored.get(key, 0) != used.get(key, 0)]
    return drift


def live_of_events(conn: Connection, program: str, event_ids: Iterable[int]) -> list[Row[Any]]:
    """The live rewards of ``program`` on the events ``event_ids`` (what the program granted and took back, not the
    backup withholding lines: tax withheld is not taken back from the payee), locked on PostgreSQL (a replica
    scheduling them waits, or is waited for)."""
    query = select(rewards.c.event_id, rewards.c.payee_id, rewards.c.currency, rewards.c.amount_minor,
                   rewards.c.id, rewards.c.status, rewards.c.hold_code, rewards.c.budget_key).where(
        rewards.c.event_id.in_(list(event_ids)), unindexed(rewards.c.program) == program,  # read by the events' index
        rewards.c.status != RewardStatus.CANCELLED, _GRANTED)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return list(conn.execute(query))


def cancel_unpaid(conn: Connection, reward_ids: list[int], now: datetime) -> None:
    """Cancel those of the rewards that are not in a payout yet (:data:`payhub.states.UNPAID`)."""
    conn.execute(update(rewards).where(rewards.c.id.in_(reward_ids), rewards.c.status.in_(UNPAID))
                 .values(status=RewardStatus.CANCELLED, updated_at=now))


def insert_one(conn: Connection, row: dict[str, Any]) -> int:
    """Write one reward (a dict of its columns); return its id."""
    return int(conn.execute(rewards.insert().returning(rewards.c.id), row).scalar_one())


# What the schedule stage reads of a reward, and its order: each payee's rewards together, by currency.
_SCHEDULABLE = select(rewards.c.id, rewards.c.payee_id, rewards.c.currency, rewards.c.amount_minor, rewards.c.status,
                      rewards.c.hold_code, rewards.c.hold_reason, rewards.c.program, rewards.c.fx_mode,
                      events.c.occurred_at, rewards.c.kind, rewards.c.event_id
                      ).select_from(rewards.join(events, events.c.id == rewards.c.event_id))
_ORDER = (rewards.c.payee_id, rewards.c.currency, rewards.c.id)
_OTHER = rewards.alias("other")  # another reward of the same payee


def claim_carried(conn: Connection, payee_ids: Iterable[str]) -> list[Row[Any, Any]]:
    """Lock the ``carried`` rewards of the payees, by payee, currency and id."""
    return list(conn.execute(for_update(conn, _SCHEDULABLE.where(
        rewards.c.status == RewardStatus.CARRIED, rewards.c.payee_id.in_(set(payee_ids))).order_by(*_ORDER))).all())


def claim_rechecked_holds(conn: Connection, limit: int, tax_since: datetime | None = None) -> list[Row[Any, Any]]:
    """Lock up to ``limit`` rewards held for a cause the schedule stage rechecks (:data:`payhub.states.RECHECKED_HOLDS`)
    whose payee is in the registry and not erased (an erased payee's rewards stay held); a ``tax_form`` hold only
    once its payee's row changed since the hold was last written, or when it was last written before
    ``tax_since``."""
    changed = [rewards.c.hold_code != HoldCode.TAX_FORM, payees.c.updated_at >= rewards.c.updated_at]
    if tax_since is not None:
        changed.append(rewards.c.updated_at < tax_since)
    query = _SCHEDULABLE.where(rewards.c.status == RewardStatus.HELD, rewards.c.hold_code.in_(RECHECKED_HOLDS),
                               exists().where(payees.c.id == rewards.c.payee_id, payees.c.erased_at.is_(None),
                                              or_(*changed))
                               ).order_by(*_ORDER).limit(limit)
    return list(conn.execute(for_update(conn, query)).all())


def claim_ids(conn: Connection, ids: Iterable[int]) -> list[Row[Any, Any]]:
    """Lock the rewards ``ids`` as the schedule stage reads them, by payee, currency and id."""
    return list(conn.execute(for_update(conn, _SCHEDULABLE.where(rewards.c.id.in_(list(ids))).order_by(*_ORDER))))


def withholding_lines(conn: Connection, event_ids: Iterable[int]) -> list[Row[Any, Any]]:
    """``(id, payee_id, status, details)`` of the withholding lines (kind ``withholding``) on the events, by id."""
    return list(conn.execute(select(rewards.c.id, rewards.c.payee_id, rewards.c.status, rewards.c.details).where(
        rewards.c.event_id.in_(list(event_ids)), rewards.c.kind == RewardKind.WITHHOLDING).order_by(rewards.c.id)))


def lock_lines(conn: Connection, ids: Iterable[int]) -> dict[int, Any]:
    """Lock the withholding lines ``ids`` and read them after the lock: ``(id, status, hold_code, hold_reason)`` by
    id. On PostgreSQL the lock waits for a transaction holding one (an operator's hold, another replica's pass)
    instead of skipping it: a line is never taken as it was before a change that is being committed."""
    query = select(rewards.c.id, rewards.c.status, rewards.c.hold_code, rewards.c.hold_reason).where(
        rewards.c.id.in_(sorted(set(ids)))).order_by(rewards.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=rewards)
    return {row.id: row for row in conn.execute(query)}


def unpaid_withholding_lines_of(conn: Connection, reward_ids: Iterable[int]) -> list[Row[Any, Any]]:
    """``(id, details)`` of the withholding lines not in a payout yet (:data:`UNPAID`) that withhold from any of
    ``reward_ids``, by id."""
    ids = set(reward_ids)
    if not ids:
        return []
    of_events = select(rewards.c.event_id).where(rewards.c.id.in_(sorted(ids)))
    found = conn.execute(select(rewards.c.id, rewards.c.details).where(
        rewards.c.event_id.in_(of_events), rewards.c.kind == RewardKind.WITHHOLDING,
        rewards.c.status.in_(UNPAID)).order_by(rewards.c.id))
    return [row for row in found if json.loads(row.details).get("withholds") in ids]


def statuses(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """The status of each of the rewards ``ids`` that exists."""
    return {int(i): str(s) for i, s in conn.execute(select(rewards.c.id, rewards.c.status).where(
        rewards.c.id.in_(list(ids))))}


def claim_changed_carried(conn: Connection, limit: int) -> list[Row[Any, Any]]:
    """Lock the ``carried`` rewards of up to ``limit`` payees who had a reward cancelled since they were netted."""
    changed = select(rewards.c.payee_id).where(rewards.c.status == RewardStatus.CARRIED, exists().where(
        _OTHER.c.payee_id == rewards.c.payee_id, _OTHER.c.status == RewardStatus.CANCELLED,
        _OTHER.c.updated_at > rewards.c.updated_at)).distinct().limit(limit)
    return list(conn.execute(for_update(conn, _SCHEDULABLE.where(
        rewards.c.status == RewardStatus.CARRIED, rewards.c.payee_id.in_(changed)).order_by(*_ORDER))).all())


def carry(conn: Connection, reward_ids: list[int], reason: str, now: datetime) -> None:
    """Carry rewards forward to their payee's next payout with ``reason``."""
    conn.execute(update(rewards).where(rewards.c.id.in_(reward_ids)).values(
        status=RewardStatus.CARRIED, hold_code=None, hold_reason=reason, updated_at=now))


def hold(conn: Connection, reward_ids: list[int], code: str, reason: str, now: datetime) -> None:
    """Hold rewards with a :class:`~payhub.states.HoldCode` and the reason."""
    conn.execute(update(rewards).where(rewards.c.id.in_(reward_ids)).values(
        status=RewardStatus.HELD, hold_code=code, hold_reason=reason, updated_at=now))


def lock(conn: Connection, ids: list[int]) -> tuple[dict[int, Any], set[int]]:
    """Lock the rewards ``ids`` for an operator's decision: their rows by id, and the ids that exist but that (on
    PostgreSQL) another transaction has locked, so they were skipped."""
    rows: dict[int, Any] = {row.id: row for row in conn.execute(
        for_update(conn, select(rewards).where(rewards.c.id.in_(ids))))}
    absent = [i for i in ids if i not in rows]
    busy = set(conn.execute(select(rewards.c.id).where(rewards.c.id.in_(absent))).scalars()) if absent else set()
    return rows, busy


def set_status(conn: Connection, reward_ids: list[int], status: str, now: datetime, **values: Any) -> None:
    """Give the rewards ``status`` (and ``values``)."""
    conn.execute(update(rewards).where(rewards.c.id.in_(reward_ids)).values(status=status, updated_at=now, **values))


def approvers(conn: Connection, ids: list[int]) -> dict[int, list[str]]:
    """Who has approved each reward so far, in order."""
    given: dict[int, list[str]] = {}
    for reward_id, approver in conn.execute(
            select(approvals.c.reward_id, approvals.c.approver).where(approvals.c.reward_id.in_(ids))
            .order_by(approvals.c.approved_at, approvals.c.approver)):
        given.setdefault(reward_id, []).append(approver)
    return given


def approve(conn: Connection, ids: list[int], approver: str, now: datetime) -> None:
    """Record ``approver``'s approval of each reward (one approval per person and reward)."""
    conn.execute(approvals.insert(), [{"reward_id": i, "approver": approver, "approved_at": now} for i in ids])


def payouts_not_final(conn: Connection, ids: list[int]) -> list[Any]:
    """``(reward_id, payout_id, status)`` of every payout that carried one of the rewards (by its items or the
    payout the reward row names) and is not in a final status (:data:`payhub.states.FINAL_PAYOUT`), by reward and
    payout."""
    carried = union(
        select(payout_items.c.reward_id.label("reward_id"), payout_items.c.payout_id.label("payout_id"))
        .where(payout_items.c.reward_id.in_(ids)),
        select(rewards.c.id.label("reward_id"), rewards.c.payout_id.label("payout_id"))
        .where(rewards.c.id.in_(ids), rewards.c.payout_id.is_not(None)),
    ).subquery()
    return list(conn.execute(
        select(carried.c.reward_id, payouts.c.id, payouts.c.status)
        .join(payouts, payouts.c.id == carried.c.payout_id)
        .where(payouts.c.status.not_in(FINAL_PAYOUT)).order_by(carried.c.reward_id, payouts.c.id)))


def payouts_by_rows(conn: Connection, ids: list[int]) -> list[tuple[int, int]]:
    """``(reward_id, payout_id)`` of every payout the rows say carried one of the rewards: its items, and the
    payout the reward row names."""
    by_items = select(payout_items.c.reward_id, payout_items.c.payout_id).where(payout_items.c.reward_id.in_(ids))
    by_row = select(rewards.c.id, rewards.c.payout_id).where(rewards.c.id.in_(ids), rewards.c.payout_id.is_not(None))
    return [(int(r), int(p)) for query in (by_items, by_row) for r, p in conn.execute(query)]
