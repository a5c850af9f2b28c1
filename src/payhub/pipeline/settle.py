"""Settle: ask rails that report status about payouts they accepted, and record paid, rejected or returned.

Claimed payouts are leased and every write is fenced by the lease, as in :mod:`payhub.pipeline.disburse`. A
``paid`` payout can only become ``returned`` here (a return within the rail's return window).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, or_, select

from payhub.api import Outcome
from payhub.clock import utcnow
from payhub.db.schema import payouts
from payhub.pipeline import leases
from payhub.pipeline.disburse import FINAL_FAILURES, apply_results, claim_rows
from payhub.runtime import Runtime

log = logging.getLogger(__name__)


def settle_rail(rt: Runtime, rail_name: str) -> int:
    """Look up one batch of accepted payouts not checked for ``settle_interval_seconds``; return how many.

    Paid payouts are looked up too while the rail's ``return_window`` runs: a return reopens their money as owed.
    """
    rail = rt.plugins.rails[rail_name]
    section = rt.settings.rails[rail_name]
    if not (rail.capabilities.reports_status and rail.capabilities.lookup):
        return 0
    now = utcnow()
    watched = payouts.c.status == "sent"
    window = rail.capabilities.return_window
    if window is not None:  # paid payouts the provider may still return
        watched = or_(watched, and_(payouts.c.status == "paid", payouts.c.updated_at >= now - window))
    with rt.engine.begin() as conn:
        query = (
            select(payouts).where(payouts.c.rail == rail_name, watched)
            .where(or_(payouts.c.checked_at.is_(None),
                       payouts.c.checked_at < now - timedelta(seconds=section.settle_interval_seconds)))
            .where(leases.free(payouts, conn))
            .order_by(payouts.c.id).limit(rail.capabilities.max_batch)
        )
        claimed = claim_rows(conn, rt, query)
        paid = set(conn.execute(select(payouts.c.id).where(
            payouts.c.id.in_([w.id for w in claimed]), payouts.c.status == "paid")).scalars())
    if not claimed:
        return 0
    try:
        found = rt.guard(f"rail {rail.name}", section.timeout_seconds).call(
            rail.lookup, [w.instruction.idempotency_key for w in claimed])
    except Exception as exc:  # noqa: BLE001 - try again at the next settle interval
        log.warning("rail %s: status lookup failed: %s", rail_name, exc)
        found = {}
    changed = []
    for w in claimed:
        result = found.get(w.instruction.idempotency_key)
        news = (Outcome.RETURNED,) if w.id in paid else (Outcome.PAID, *FINAL_FAILURES)
        if result is not None and result.outcome in news:
            changed.append((w, result))
    if changed:
        apply_results(rt, section, changed, {})
    with rt.engine.begin() as conn:  # a worker that lost the lease leaves checked_at to the one that took it
        leases.release(conn, payouts, "id", [w.id for w in claimed], claimed[0].lease, checked_at=utcnow())
    return len(claimed)
