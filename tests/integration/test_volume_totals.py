"""The volume totals (volume_totals) equal the decided events' amounts: filled by the migration from existing
calculations, added to by the calculate stage, and read by the history as the events would be summed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, select

from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import calculations, events, program_versions
from payhub.pipeline.history import DbHistory
from payhub.store import events as event_store
from payhub.store import volumes

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _seed(conn: Connection, rng: random.Random, first: int, count: int) -> dict[volumes.Key, Decimal]:
    """Events with calculations of ``rebate``; return what the calculate stage would add for them."""
    added: dict[volumes.Key, Decimal] = {}
    for number in range(first, first + count):
        at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(24 * 180), seconds=rng.randrange(60))
        amount = rng.choice((None, "1000", "0.005", "12.34", "99999999.999999", "-5"))
        row = {"id": number, "key": f"s:O:{number}:x", "source": "s", "object_type": "O", "object_id": str(number),
               "transition": "x", "event_type": rng.choice(("purchase", "order_returned")), "occurred_at": at,
               "partner_id": rng.choice(("acme", "globex", None)), "amount": amount,
               "currency": rng.choice(("EUR", "USD")), "status": "calculated", "attributes": "{}",
               "ingested_at": NOW}
        conn.execute(events.insert().values(**row))
        status = rng.choice(("rewarded", "not_eligible", "failed"))
        conn.execute(calculations.insert().values(event_id=number, program="rebate", program_version_id=1,
                                                  status=status, calculated_at=NOW))
        event = conn.execute(select(events).where(events.c.id == number)).one()
        key = volumes.key_of("rebate", event)
        if status in volumes.DECIDED and key is not None:
            added[key] = added.get(key, Decimal(0)) + Decimal(event.amount)
    return added


def test_volume_totals_follow_the_decided_events(db_url: str) -> None:
    rng = random.Random(4)
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0009")
        with engine.begin() as conn:
            conn.execute(program_versions.insert().values(id=1, program="rebate", version=1, calculator="rebate",
                                                          params="{}", fingerprint="f", created_at=NOW))
            _seed(conn, rng, 1, 80)
        migrate.upgrade(engine)  # the backfill
        with engine.connect() as conn:
            assert volumes.drift(conn) == []
        for first in (100, 200):
            with engine.begin() as conn:
                volumes.add(conn, _seed(conn, rng, first, 40))
        with engine.connect() as conn:
            assert volumes.drift(conn) == []
            history = DbHistory(conn)
            for since, until in ((datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
                                 (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
                                 (datetime(2026, 2, 3, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))):
                for partner in ("acme", "globex"):
                    rows = event_store.decided_volume(conn, "rebate", partner, "EUR", since, until)
                    expected = sum((-Decimal(a) if kind == "order_returned" else Decimal(a) for a, kind in rows),
                                   Decimal(0))
                    assert history.total_volume("rebate", partner, "EUR", since, until, ["order_returned"]) == \
                        expected
    finally:
        engine.dispose()
