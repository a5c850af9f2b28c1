"""The rewards store: writing rewards, and the sums of past rewards that caps, budgets and clawbacks decide from.

The sums count every reward that is not ``cancelled``; a reward ``held`` for its budget does not use the budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, not_, select, update

from payhub.db.schema import events, rewards
from payhub.states import UNPAID, HoldCode, RewardStatus

# Statements built once: each call only binds its values.
_REWARDS_OF_EVENTS = rewards.join(events, events.c.id == rewards.c.event_id)
_LIVE = and_(rewards.c.program == bindparam("program"), rewards.c.currency == bindparam("currency"),
             rewards.c.status != RewardStatus.CANCELLED)
_IN_PERIOD = and_(events.c.occurred_at >= bindparam("since"), events.c.occurred_at < bindparam("until"))
_SCOPES = {"payee": rewards.c.payee_id == bindparam("scope"), "partner": events.c.partner_id == bindparam("scope")}
_SUM = func.coalesce(func.sum(rewards.c.amount_minor), 0)
# (scope, within a period) -> the sum of the live rewards of a program in a currency, summed by the database
_SUMS = {(per, timed): select(_SUM).select_from(_REWARDS_OF_EVENTS).where(
    _LIVE, *([_SCOPES[per]] if per in _SCOPES else []), *([_IN_PERIOD] if timed else []))
    for per in ("payee", "partner", "program") for timed in (False, True)}
_BUDGET_USED = select(_SUM).where(
    rewards.c.budget_key == bindparam("key"), rewards.c.status != RewardStatus.CANCELLED,
    not_(and_(rewards.c.status == RewardStatus.HELD, rewards.c.hold_code == HoldCode.BUDGET)))


def insert(conn: Connection, rows: list[dict[str, Any]]) -> list[Any]:
    """Write rewards; return ``(id, event_id, program, payee_id, amount_minor, currency, status, hold_reason,
    approvals_needed)`` of each, by id (asking for them in parameter order would make SQLite insert one by one)."""
    written = conn.execute(rewards.insert().returning(
        rewards.c.id, rewards.c.event_id, rewards.c.program, rewards.c.payee_id, rewards.c.amount_minor,
        rewards.c.currency, rewards.c.status, rewards.c.hold_reason, rewards.c.approvals_needed), rows)
    return sorted(written)


def total(conn: Connection, program: str, payee_id: str, currency: str, since: datetime | None = None) -> int:
    """Minor units of the payee's live rewards of ``program`` in ``currency`` (created since ``since``)."""
    query = select(_SUM).where(
        rewards.c.program == program, rewards.c.payee_id == payee_id, rewards.c.currency == currency,
        rewards.c.status != RewardStatus.CANCELLED,
    )
    if since is not None:
        query = query.where(rewards.c.created_at >= since)
    return int(conn.execute(query).scalar_one())


def scope_total(conn: Connection, program: str, currency: str, per: str, scope_id: str | None,
                since: datetime | None, until: datetime | None) -> int:
    """Minor units of the live rewards of ``program`` in ``currency`` for a payee, a partner or the whole program
    (``per``), of events that occurred in ``[since, until)`` when both are given."""
    timed = since is not None and until is not None
    params: dict[str, Any] = {"program": program, "currency": currency}
    params |= {"scope": scope_id} if per != "program" else {}
    params |= {"since": since, "until": until} if timed else {}
    return int(conn.execute(_SUMS[(per, timed)], params).scalar_one())


def budget_used(conn: Connection, key: str) -> int:
    """Minor units the budget pool ``key`` has given out (live rewards not held for the budget)."""
    return int(conn.execute(_BUDGET_USED, {"key": key}).scalar_one())


def live_of_events(conn: Connection, program: str, event_ids: Iterable[int]) -> list[Row[Any]]:
    """The live rewards of ``program`` on the events ``event_ids``, locked on PostgreSQL (a replica scheduling them
    waits, or is waited for)."""
    query = select(rewards.c.event_id, rewards.c.payee_id, rewards.c.currency, rewards.c.amount_minor,
                   rewards.c.id, rewards.c.status, rewards.c.hold_code, rewards.c.budget_key).where(
        rewards.c.event_id.in_(list(event_ids)), rewards.c.program == program,
        rewards.c.status != RewardStatus.CANCELLED)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return list(conn.execute(query))


def cancel_unpaid(conn: Connection, reward_ids: list[int], now: datetime) -> None:
    """Cancel those of the rewards that are not in a payout yet (:data:`payhub.states.UNPAID`)."""
    conn.execute(update(rewards).where(rewards.c.id.in_(reward_ids), rewards.c.status.in_(UNPAID))
                 .values(status=RewardStatus.CANCELLED, updated_at=now))


def insert_one(conn: Connection, row: dict[str, Any]) -> int:
    """Write one reward; return its id."""
    return int(conn.execute(rewards.insert().returning(rewards.c.id), row).scalar_one())
