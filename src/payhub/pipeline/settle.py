"""Settle: ask rails that report status about payouts they accepted, and record paid, rejected or returned.

Claimed payouts are leased and every write is fenced by the lease (:mod:`payhub.store.payouts`). A
``paid`` payout can only become ``returned`` here (a return within the rail's return window).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from payhub.api import Outcome
from payhub.clock import utcnow
from payhub.pipeline.rail_results import FINAL_FAILURES, apply_results
from payhub.runtime import Runtime
from payhub.store import payouts as store

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
    window = rail.capabilities.return_window  # paid payouts the provider may still return
    claimed, paid = store.claim_to_settle(rt, rail_name, now - timedelta(seconds=section.settle_interval_seconds),
                                          None if window is None else now - window, rail.capabilities.max_batch)
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
    # Released (a worker that lost the lease leaves it to the one that took it) with the results when there are any.
    if changed:
        apply_results(rt, section, changed, {}, release=claimed, checked_at=utcnow())
    else:
        store.release(rt, claimed, checked_at=utcnow())
    return len(claimed)
