"""The release requests of held payouts: the first of the two operators a screening hold needs, with their
justification, waiting for a second, different operator (:func:`payhub.pipeline.payout_actions.release`).

A request is for one hold: :func:`payhub.store.payouts.set_status` deletes a payout's requests whenever it is held
again or leaves ``held`` (released, cancelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from payhub.db.schema import release_requests
from payhub.runtime import Tx


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """One operator's request to release a held payout."""

    payout_id: int
    operator: str
    justification: str
    requested_at: datetime


def pending(tx: Tx, payout_id: int) -> list[ReleaseRequest]:
    """The payout's release requests, oldest first."""
    rows = tx.conn.execute(select(release_requests).where(release_requests.c.payout_id == payout_id)
                           .order_by(release_requests.c.requested_at, release_requests.c.operator))
    return [ReleaseRequest(r.payout_id, r.operator, r.justification, r.requested_at) for r in rows]


def record(tx: Tx, request: ReleaseRequest) -> None:
    """Store a release request (one per payout and operator: a second one by the same operator is an error)."""
    tx.conn.execute(release_requests.insert().values(
        payout_id=request.payout_id, operator=request.operator, justification=request.justification,
        requested_at=request.requested_at))


def clear(tx: Tx, payout_id: int) -> None:
    """Delete the payout's release requests."""
    tx.conn.execute(delete(release_requests).where(release_requests.c.payout_id == payout_id))
