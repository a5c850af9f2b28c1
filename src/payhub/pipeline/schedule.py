"""Schedule: group pending rewards per payee, rail and currency into payouts with a fixed idempotency key."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import exists, select, update

from payhub.api import Payee
from payhub.clock import utcnow
from payhub.db.queries import for_update
from payhub.db.schema import payees, payout_items, payouts, rewards
from payhub.money import from_minor
from payhub.payees import load_payees
from payhub.runtime import Runtime, Tx

# Rewards held for these reasons are retried automatically once the cause may be gone.
RECHECKED_HOLDS = ("no_payee", "no_rail")


def route(rt: Runtime, payee: Payee, currency: str) -> tuple[str | None, str]:
    """The rail for a payout and why; (None, reason) when no configured rail can take it."""
    candidates = []
    if payee.rail:
        candidates.append((payee.rail, f"payee {payee.id} prefers rail {payee.rail}"))
    default = rt.settings.routing.default_rail
    if default and default != payee.rail:
        candidates.append((default, f"default rail {default}"))
    refusals = []
    for name, why in candidates:
        rail = rt.plugins.rails.get(name)
        if rail is None:
            refusals.append(f"rail {name} is not available ({rt.plugins.failed('rail', name) or 'not configured'})")
            continue
        caps = rail.capabilities
        if caps.currencies is not None and currency not in caps.currencies:
            refusals.append(f"rail {name} does not pay {currency}")
            continue
        if caps.countries is not None and payee.country not in caps.countries:
            refusals.append(f"rail {name} does not serve country {payee.country}")
            continue
        if refusals:
            why = f"{why} ({'; '.join(refusals)})"
        return name, why
    return None, "; ".join(refusals) or "no rail configured (set routing.default_rail)"


def schedule_batch(rt: Runtime, limit: int | None = None, recheck_holds: bool = True) -> int:
    """Turn up to ``limit`` payable rewards into payouts in one transaction; return how many rewards moved.

    Pending rewards come first; when none are left, rewards held for a missing payee or rail are re-examined
    (only those whose hold could now clear, so a pass that changes nothing returns 0).
    """
    limit = limit or rt.settings.database.batch_size
    columns = (rewards.c.id, rewards.c.payee_id, rewards.c.currency, rewards.c.amount_minor, rewards.c.status,
               rewards.c.hold_code)
    with rt.transaction() as tx:
        query = (select(*columns).where(rewards.c.status == "pending")
                 .order_by(rewards.c.payee_id, rewards.c.currency, rewards.c.id).limit(limit))
        rows = tx.conn.execute(for_update(tx.conn, query)).all()
        if not rows and recheck_holds:
            # Holds that may have cleared: the payee has since appeared in the registry (a rail may now fit).
            query = (select(*columns)
                     .where(rewards.c.status == "held", rewards.c.hold_code.in_(RECHECKED_HOLDS),
                            exists().where(payees.c.id == rewards.c.payee_id))
                     .order_by(rewards.c.payee_id, rewards.c.currency, rewards.c.id).limit(limit))
            rows = tx.conn.execute(for_update(tx.conn, query)).all()
            rows = [r for r in rows if _may_clear(rt, r)]
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row.payee_id, row.currency)].append(row)
        known = load_payees(tx.conn, sorted({row.payee_id for row in rows}))
        moved = 0
        for (payee_id, currency), items in groups.items():
            payee = known.get(payee_id)
            if payee is None:
                moved += _hold(tx, items, "no_payee", f"payee {payee_id} has no payout details in the registry")
                continue
            rail, why = route(rt, payee, currency)
            if rail is None:
                moved += _hold(tx, items, "no_rail", why)
                continue
            _create_payout(tx, payee_id, currency, rail, why, items)
            moved += len(items)
    return moved


def _may_clear(rt: Runtime, row: Any) -> bool:
    """A rail hold may clear once any rail is available; a payee hold once the payee exists (checked by SQL)."""
    return row.hold_code != "no_rail" or bool(rt.plugins.rails)


def _hold(tx: Tx, items: list[Any], code: str, reason: str) -> int:
    """Hold rewards that are not already held for the same code; return how many changed."""
    fresh = [row.id for row in items if not (row.status == "held" and row.hold_code == code)]
    if fresh:
        tx.conn.execute(update(rewards).where(rewards.c.id.in_(fresh)).values(
            status="held", hold_code=code, hold_reason=reason, updated_at=utcnow()))
        for reward_id in fresh:
            tx.audit("reward.held", "reward", reward_id, {"code": code, "reason": reason}, outcome="held")
    return len(fresh)


def _create_payout(tx: Tx, payee_id: str, currency: str, rail: str, why: str, items: list[Any]) -> int:
    now = utcnow()
    total = sum(row.amount_minor for row in items)
    key = f"ph-{uuid.uuid4().hex}"
    payout_id = cast("Sequence[int]", tx.conn.execute(payouts.insert().values(
        idempotency_key=key, payee_id=payee_id, rail=rail, route_reason=why, currency=currency, amount_minor=total,
        item_count=len(items), status="scheduled", attempts=0, created_at=now, updated_at=now,
    )).inserted_primary_key)[0]  # a Row; never None for a single-row insert without RETURNING
    tx.conn.execute(payout_items.insert(), [
        {"payout_id": payout_id, "reward_id": row.id, "amount_minor": row.amount_minor} for row in items])
    ids = [row.id for row in items]
    tx.conn.execute(update(rewards).where(rewards.c.id.in_(ids)).values(
        status="scheduled", payout_id=payout_id, hold_code=None, hold_reason=None, updated_at=now))
    tx.audit("payout.created", "payout", payout_id, {
        "key": key, "payee": payee_id, "rail": rail, "route": why, "currency": currency,
        "amount": str(from_minor(total, currency)), "rewards": len(items),
    })
    for reward_id in ids:
        tx.audit("reward.scheduled", "reward", reward_id, {"payout": payout_id})
    return payout_id
