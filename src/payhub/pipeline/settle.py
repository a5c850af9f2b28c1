"""Settle: ask rails that report status about payouts they accepted, and record paid, rejected or returned."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select, update

from payhub.api import Outcome
from payhub.clock import utcnow
from payhub.db.schema import payouts
from payhub.pipeline.disburse import FINAL_FAILURES, apply_results, claim_rows
from payhub.runtime import Runtime

log = logging.getLogger(__name__)


def settle_rail(rt: Runtime, rail_name: str) -> int:
    """Look up one batch of accepted payouts not checked for ``settle_interval_seconds``; return how many."""
    rail = rt.plugins.rails[rail_name]
    section = rt.settings.rails[rail_name]
    if not (rail.capabilities.reports_status and rail.capabilities.lookup):
        return 0
    now = utcnow()
    query = (
        select(payouts).where(payouts.c.rail == rail_name, payouts.c.status == "sent")
        .where(or_(payouts.c.checked_at.is_(None),
                   payouts.c.checked_at < now - timedelta(seconds=section.settle_interval_seconds)))
        .where(or_(payouts.c.lease_until.is_(None), payouts.c.lease_until < now))
        .order_by(payouts.c.id).limit(rail.capabilities.max_batch)
    )
    with rt.engine.begin() as conn:
        claimed = claim_rows(conn, rt, query)
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
        if result is not None and result.outcome in (Outcome.PAID, *FINAL_FAILURES):
            changed.append((w, result))
    if changed:
        apply_results(rt, section, changed, {})
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id.in_([w.id for w in claimed]))
                     .values(checked_at=utcnow(), lease_owner=None, lease_until=None))
    return len(claimed)
