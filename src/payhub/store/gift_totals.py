"""The sums the gift and anti-bribery limits decide from (docs/compliance.md#gift-and-anti-bribery-limits): rewards
to flagged payees across programs, payees by flag, and what a payee received in gift cards."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, func, select

from payhub.compliance.flags import flag_key
from payhub.db.queries import in_chunks, unindexed
from payhub.db.schema import events, payees, payouts, rewards
from payhub.states import FINAL_PAYOUT, RewardKind, RewardStatus

_SUM = func.coalesce(func.sum(rewards.c.amount_minor), 0)


def flags_of(text: str | None) -> frozenset[str]:
    """The flags of a stored ``payees.flags`` JSON list, as they are compared (:func:`payhub.compliance.flags.flag_key`:
    case, width and invisible characters do not count)."""
    try:
        found = json.loads(text or "[]")
    except ValueError:
        return frozenset()
    return frozenset(key for flag in found if (key := flag_key(str(flag)))) if isinstance(found, list) else frozenset()


def registered(conn: Connection, payee_ids: Collection[str]) -> set[str]:
    """Those of ``payee_ids`` that are in the payees registry."""
    found: set[str] = set()
    for chunk in in_chunks(payee_ids):
        found.update(conn.execute(select(payees.c.id).where(payees.c.id.in_(chunk))).scalars())
    return found


def flagged(conn: Connection) -> dict[str, frozenset[str]]:
    """The case-folded flags of every registry payee that has any (a payee left out has none)."""
    rows = conn.execute(select(payees.c.id, payees.c.flags).where(payees.c.flags != "[]"))
    return {payee_id: found for payee_id, text in rows if (found := flags_of(text))}


def rewarded_to(conn: Connection, payee_ids: Collection[str], currency: str, since: datetime, until: datetime,
                programs: Collection[str] | None) -> int:
    """Minor units of the live (not cancelled) rewards in ``currency`` to any of ``payee_ids``, of events that
    occurred in ``[since, until)``, of every program or only of ``programs``; adjustments (negative) included,
    backup withholding lines not (tax kept back is not less granted)."""
    total = 0
    for chunk in in_chunks(payee_ids):
        query = select(_SUM).select_from(rewards.join(events, events.c.id == rewards.c.event_id)).where(
            rewards.c.payee_id.in_(chunk), rewards.c.currency == currency,
            rewards.c.status != RewardStatus.CANCELLED, rewards.c.kind != RewardKind.WITHHOLDING,
            events.c.occurred_at >= since, events.c.occurred_at < until)
        if programs is not None:
            query = query.where(unindexed(rewards.c.program).in_(sorted(programs)))  # read by the payees' index
        total += int(conn.execute(query).scalar_one())
    return total


def giftcard_total(conn: Connection, payee_id: str, rails: Collection[str], currency: str, since: datetime,
                   until: datetime) -> int:
    """Minor units of the payouts in ``currency`` to ``payee_id`` on ``rails`` scheduled in ``[since, until)`` that
    did not end unpaid (failed, rejected, cancelled) or come back (returned)."""
    query = select(func.coalesce(func.sum(payouts.c.amount_minor), 0)).where(
        payouts.c.payee_id == payee_id, payouts.c.rail.in_(sorted(rails)), payouts.c.currency == currency,
        payouts.c.status.not_in(sorted(FINAL_PAYOUT)), payouts.c.created_at >= since, payouts.c.created_at < until)
    return int(conn.execute(query).scalar_one())


def lock_payee(conn: Connection, payee_id: str) -> None:
    """On PostgreSQL, lock the payee's registry row until the transaction ends, so that replicas scheduling payouts
    to the same payee check its gift-card total one after the other (SQLite has one writer already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(payees.c.id).where(payees.c.id == payee_id).with_for_update())
