"""Schedule: group pending rewards per payee, rail and currency into payouts with a fixed idempotency key."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import bindparam, exists, select, update

from payhub.api import Payee
from payhub.clock import utcnow
from payhub.db.queries import for_update
from payhub.db.schema import payees, payout_items, payouts, rewards
from payhub.money import from_minor
from payhub.payees import load_payees
from payhub.runtime import Runtime, Tx

Planned = tuple[str, str, str, str, list[Any]]  # payee, currency, rail, why, reward rows

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
        planned: list[Planned] = []
        for (payee_id, currency), items in groups.items():
            payee = known.get(payee_id)
            if payee is None:
                moved += _hold(tx, items, "no_payee", f"payee {payee_id} has no payout details in the registry")
                continue
            rail, why = route(rt, payee, currency)
            if rail is None:
                moved += _hold(tx, items, "no_rail", why)
                continue
            planned.append((payee_id, currency, rail, why, items))
            moved += len(items)
        _create_payouts(tx, planned)
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


def _create_payouts(tx: Tx, planned: list[Planned]) -> None:
    """Insert the payouts, their items and the rewards' new state as a few bulk statements."""
    if not planned:
        return
    now = utcnow()
    rows = [{
        "idempotency_key": f"ph-{uuid.uuid4().hex}", "payee_id": payee_id, "rail": rail, "route_reason": why,
        "currency": currency, "amount_minor": sum(r.amount_minor for r in items), "item_count": len(items),
        "status": "scheduled", "attempts": 0, "created_at": now, "updated_at": now,
    } for payee_id, currency, rail, why, items in planned]
    id_of = {key: payout_id for key, payout_id in tx.conn.execute(
        payouts.insert().returning(payouts.c.idempotency_key, payouts.c.id), rows)}
    ids = [id_of[row["idempotency_key"]] for row in rows]
    links = [(payout_id, reward) for payout_id, plan in zip(ids, planned, strict=True) for reward in plan[4]]
    tx.conn.execute(payout_items.insert(), [
        {"payout_id": payout_id, "reward_id": r.id, "amount_minor": r.amount_minor} for payout_id, r in links])
    tx.conn.execute(
        update(rewards).where(rewards.c.id == bindparam("reward")).values(
            status="scheduled", payout_id=bindparam("payout"), hold_code=None, hold_reason=None, updated_at=now),
        [{"reward": r.id, "payout": payout_id} for payout_id, r in links])
    for payout_id, row in zip(ids, rows, strict=True):
        tx.audit("payout.created", "payout", payout_id, {
            "key": row["idempotency_key"], "payee": row["payee_id"], "rail": row["rail"], "route": row["route_reason"],
            "currency": row["currency"], "amount": str(from_minor(row["amount_minor"], row["currency"])),
            "rewards": row["item_count"],
        })
    for payout_id, r in links:
        tx.audit("reward.scheduled", "reward", r.id, {"payout": payout_id})
