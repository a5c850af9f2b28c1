"""A fund's running state (fund_states) is the replay of all its entries, however they arrive (in time order,
out of order, ties, several funds, a fund written before the state existed), and the history reads the same balance
and credits from it as from the entries."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, delete, select

from payhub import funds
from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import calculations, events, fund_states, program_versions
from payhub.pipeline.history import DbHistory
from payhub.store import funds as fund_store

NOW = datetime(2026, 6, 1, tzinfo=UTC)
START = datetime(2026, 1, 1, tzinfo=UTC)
EVER = datetime.min.replace(tzinfo=UTC)


def _write(conn: Connection, number: int, holder: str, at: datetime, amount: Decimal, expires: datetime | None,
           advance: bool = True) -> None:
    conn.execute(events.insert().values(id=number, key=f"s:T:{number}:x", source="s", object_type="T",
                                        object_id=str(number), transition="x", event_type="purchase",
                                        occurred_at=at, status="calculated", attributes="{}", ingested_at=NOW))
    conn.execute(calculations.insert().values(event_id=number, program="coop", program_version_id=1,
                                              status="rewarded", calculated_at=NOW))
    written = fund_store.insert(conn, [(number, "coop", holder, "EUR", str(amount), at, expires, "", "{}")], NOW)
    if advance:
        fund_store.advance(conn, "coop", holder, "EUR", [(written[0][0], at, amount, expires)])


def test_the_state_is_the_replay_of_the_entries(db_url: str) -> None:
    rng = random.Random(10)
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(program_versions.insert().values(id=1, program="coop", version=1, calculator="coop",
                                                          params="{}", fingerprint="f", created_at=NOW))
        at = START
        for number in range(1, 121):
            holder = rng.choice(("acme", "globex"))
            at += timedelta(hours=rng.randrange(0, 60))  # ties happen (0 hours)
            when = at - timedelta(days=rng.randrange(1, 40)) if rng.random() < 0.1 else at  # some out of order
            amount = Decimal(rng.randrange(1, 5000)) / 100
            if rng.random() < 0.3:
                amount = -amount
            expires = when + timedelta(days=rng.randrange(5, 60)) if amount > 0 and rng.random() < 0.8 else None
            with engine.begin() as conn:
                _write(conn, number, holder, when, amount, expires, advance=number > 10)  # the first ones: no state
            if number % 10 == 0:
                with engine.connect() as conn:
                    _check(conn, holder, rng)
        with engine.begin() as conn:  # a lost state is made again from the entries at the next entry
            conn.execute(delete(fund_states))
            _write(conn, 500, "acme", at + timedelta(days=1), Decimal("3.50"), None)
            assert conn.execute(select(fund_states.c.holder_id)).scalars().all() == ["acme"]
            _check(conn, "acme", rng)
    finally:
        engine.dispose()


def _check(conn: Connection, holder: str, rng: random.Random) -> None:
    stored = fund_store.entries(conn, "coop", holder, "EUR")
    state = fund_store.state(conn, "coop", holder, "EUR")
    if state is None:
        return
    last = max(at for at, _a, _e in stored)
    assert state.fund.last == last
    for probe in (last, last + timedelta(days=3), last + timedelta(days=70)):
        assert state.fund.balance(probe) == funds.balance(stored, probe)
        assert state.fund.next_expiry(probe) == funds.replay(stored, probe).next_expiry(probe)
    for since in (EVER, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)):
        assert state.credited_since(since) == sum((a for at, a, _e in stored if a > 0 and at >= since), Decimal(0))
    assert state.credited_since(datetime(2026, 2, 2, tzinfo=UTC)) is None
    history, replayed = DbHistory(conn), DbHistory(conn)
    replayed._snapshots[("coop", holder, "EUR")] = None  # as a fund without a state is read: from its entries
    for probe in (last - timedelta(days=rng.randrange(0, 20)), last, last + timedelta(days=10)):
        assert history.fund_balance("coop", holder, "EUR", probe) == replayed.fund_balance("coop", holder, "EUR",
                                                                                             probe)
        for since in (EVER, datetime(2026, 2, 1, tzinfo=UTC), probe - timedelta(days=5)):
            assert history.fund_credited("coop", holder, "EUR", since, probe) == \
                replayed.fund_credited("coop", holder, "EUR", since, probe)
