"""payhub.store.payouts.create: payouts written by driver-level multi-row INSERTs come back with their ids in the
order given (RETURNING rows matched by key), whatever the chunking, with every column as the payouts table reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from payhub.db.queries import INSERT_CHUNK
from payhub.db.schema import payouts
from payhub.store import payouts as store

NOW = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)


def test_create_returns_the_ids_in_order_across_chunks_and_stores_every_column(make_runtime: Any) -> None:
    rt = make_runtime("")
    count = INSERT_CHUNK * 2 + 7
    rows = [(f"ph-{n:032x}", f"payee-{n % 13}", "bank", f"route {n}", "EUR" if n % 2 else "JPY", 100 + n, 1 + n % 3)
            for n in reversed(range(count))]  # keys in descending order: ids must follow rows, not keys
    with rt.transaction() as tx:
        ids = store.create(tx, rows, [], NOW)
    assert len(ids) == count and ids == sorted(ids) and len(set(ids)) == count
    with rt.engine.connect() as conn:
        stored = {r.id: r for r in conn.execute(select(payouts))}
    for payout_id, (key, payee, rail, why, currency, minor, items) in zip(ids, rows, strict=True):
        r = stored[payout_id]
        assert (r.idempotency_key, r.payee_id, r.rail, r.route_reason, r.currency, r.amount_minor, r.item_count) == (
            key, payee, rail, why, currency, minor, items)
        assert (r.status, r.attempts, r.created_at, r.updated_at) == ("scheduled", 0, NOW, NOW)
        assert r.lease_token is None and r.next_attempt_at is None and r.first_sent_at is None
