"""The calculate stage reads the stored sums, fund states and rewards of CRM objects a batch needs once per batch,
for every payee, partner, pool and object of the batch at once: each batched read gives what the one-by-one read
gives, and a batch asks the database a bounded number of statements however many payees it names."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, select

from payhub import funds
from payhub.api import Event, FundMovement
from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import calculations, events, program_versions, rewards
from payhub.pipeline.history import DbHistory
from payhub.store import funds as fund_store
from payhub.store import rewards as reward_store
from payhub.store import volumes

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PAYEES = tuple(f"p{k}" for k in range(12))
PARTNERS = ("acme", "globex", "initech")
POOLS = ("spiff:2026-Q1:acme", "spiff:2026-Q2:globex", "spiff:2026-Q1:initech")
Q1 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(program_versions.insert().values(id=1, program="spiff", version=1, calculator="flat",
                                                      params="{}", fingerprint="f", created_at=NOW))
    try:
        yield engine
    finally:
        engine.dispose()


def _seed(conn: Connection, rng: random.Random, count: int) -> None:
    for number in range(1, count + 1):
        at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(24 * 150))
        conn.execute(events.insert().values(
            id=number, key=f"s:Deal:{number % 15}:{number}", source="s", object_type="Deal",
            object_id=str(number % 15), transition=str(number), event_type="deal_won", occurred_at=at,
            partner_id=rng.choice(PARTNERS), status="calculated", attributes="{}", ingested_at=NOW))
        conn.execute(calculations.insert().values(event_id=number, program="spiff", program_version_id=1,
                                                  status="rewarded", calculated_at=NOW))
        for _ in range(rng.randrange(3)):
            status = rng.choice(("pending", "held", "paid", "cancelled"))
            conn.execute(rewards.insert().values(
                event_id=number, program="spiff", payee_id=rng.choice(PAYEES), amount_minor=rng.randrange(-300, 5000),
                currency="EUR", status=status, hold_code="budget" if status == "held" else None,
                budget_key=rng.choice((None, *POOLS)), created_at=NOW, updated_at=NOW))


def _counting(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    return seen


def test_batched_sums_equal_the_sums_one_by_one(engine: Engine) -> None:
    with engine.begin() as conn:
        _seed(conn, random.Random(3), 80)
    with engine.connect() as conn:
        for per, scopes in (("payee", (*PAYEES, "nobody")), ("partner", (*PARTNERS, "nobody"))):
            for span, months in (((None, None), None), (Q1, ("2026-01", "2026-04"))):
                batched = reward_store.scope_totals(conn, "spiff", "EUR", per, scopes, months)
                assert batched == {scope: reward_store.scope_total(conn, "spiff", "EUR", per, scope, *span)
                                   for scope in scopes}
        assert reward_store.budgets_used(conn, [*POOLS, "none"]) == {
            key: reward_store.budget_used(conn, key) for key in (*POOLS, "none")}


def test_a_batch_reads_the_sums_of_its_payees_in_one_statement(engine: Engine) -> None:
    with engine.begin() as conn:
        _seed(conn, random.Random(4), 80)
    seen = _counting(engine)
    with engine.connect() as conn:
        one_by_one, batched = DbHistory(conn), DbHistory(conn)
        batched.expect(PAYEES, PARTNERS, POOLS)
        seen.clear()
        got = {(payee, span): batched.capped_total("spiff", "payee", payee, "EUR", *span)
               for payee in PAYEES for span in ((None, None), Q1)}
        got |= {(pool, None): batched.budget_used(pool) for pool in POOLS}
        assert len(seen) == 3  # all time, Q1, the pools
        assert got == {(payee, span): one_by_one.capped_total("spiff", "payee", payee, "EUR", *span)
                       for payee in PAYEES for span in ((None, None), Q1)} | {
            (pool, None): one_by_one.budget_used(pool) for pool in POOLS}
        seen.clear()  # a payee the batch did not name is read alone
        assert batched.capped_total("spiff", "payee", "stranger", "EUR", *Q1) == 0
        assert len(seen) == 1


def _event(number: int, object_id: str, at: datetime) -> Event:
    return Event(id=number, key=f"s:Deal:{object_id}:x", source="s", object_type="Deal", object_id=object_id,
                 transition="x", event_type="deal_refunded", occurred_at=at, payee_id="p1", partner_id="acme",
                 amount=None, currency=None, attributes={})


def test_rewards_of_the_batch_objects_are_read_once_and_equal_one_by_one(engine: Engine) -> None:
    with engine.begin() as conn:
        _seed(conn, random.Random(5), 90)
    seen = _counting(engine)
    asked = [_event(1000 + k, str(k), NOW) for k in range(15)] + [_event(2000, "no such deal", NOW)]
    with engine.connect() as conn:
        one_by_one, batched = DbHistory(conn), DbHistory(conn)
        batched.expect_objects({(e.source, e.object_type, e.object_id) for e in asked})
        seen.clear()
        got = [batched.object_rewards("spiff", e) for e in asked]
        assert len(seen) == 2  # the objects' events, their rewards
        assert got == [one_by_one.object_rewards("spiff", e) for e in asked]
        assert sum(len(found) for found in got) > 20


def test_fund_states_advanced_together_equal_the_replay_of_each_fund(engine: Engine) -> None:
    rng = random.Random(6)
    holders = ("acme", "globex", "initech", "umbrella")
    with engine.begin() as conn:
        for number in range(1, 61):
            conn.execute(events.insert().values(
                id=number, key=f"s:T:{number}:x", source="s", object_type="T", object_id=str(number), transition="x",
                event_type="purchase", occurred_at=NOW, status="calculated", attributes="{}", ingested_at=NOW))
            conn.execute(calculations.insert().values(event_id=number, program="coop", program_version_id=1,
                                                      status="rewarded", calculated_at=NOW))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    number = 0
    for _batch in range(6):
        written: dict[fund_store.Key, fund_store.Written] = {}
        read = fund_store.Read()
        with engine.begin() as conn:
            before = fund_store.states(conn, "coop", "EUR", holders, read)  # as the history reads them
            for _ in range(10):
                number += 1
                holder = rng.choice(holders)
                at += timedelta(hours=rng.randrange(0, 40))
                when = at - timedelta(days=3) if rng.random() < 0.1 else at  # now and then out of order
                amount = Decimal(rng.randrange(-3000, 5000)) / 100
                expires = when + timedelta(days=20) if amount > 0 else None
                entry = fund_store.insert(conn, [(number, "coop", holder, "EUR", str(amount), when, expires, "", "{}")],
                                          NOW)[0]
                assert entry[1:] == (number, "coop", holder, "EUR", str(amount), expires)
                written.setdefault(("coop", holder, "EUR"), []).append((entry[0], when, amount, expires))
            fund_store.advance_all(conn, written, read)
        assert set(before) == set(holders)
        with engine.connect() as conn:
            for holder in holders:
                stored = fund_store.entries(conn, "coop", holder, "EUR")
                state = fund_store.state(conn, "coop", holder, "EUR")
                if not stored:
                    assert state is None
                    continue
                assert state is not None
                last = max(when for when, _a, _e in stored)
                for probe in (last, last + timedelta(days=25)):
                    assert state.fund.balance(probe) == funds.balance(stored, probe)
            assert sorted(conn.execute(select(events.c.id)).scalars())[-1] == 60


def test_a_state_read_and_given_credits_is_written_as_the_state_whose_credits_were_read() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    base = fund_store.State(funds.Fund(), 0, {})
    for number, (days, amount) in enumerate(((0, "5.00"), (1, "2.50"), (2, "-3.00"), (3, "7.25")), start=1):
        fund_store._apply(base, number, start + timedelta(days=days), Decimal(amount),
                          start + timedelta(days=30) if Decimal(amount) > 0 else None)
    text = fund_store._dumps(base)
    lazy, eager = fund_store._loads(4, text), fund_store._loads(4, text)
    assert eager.fund.balance(start + timedelta(days=3)) == Decimal("11.75")  # its credits are read
    for state in (lazy, eager):
        assert state.last == start + timedelta(days=3)
        for number, days in ((5, 4), (6, 40)):
            fund_store._apply(state, number, start + timedelta(days=days), Decimal("1.10"), None)
    assert fund_store._dumps(lazy) == fund_store._dumps(eager)
    assert lazy.last == eager.last == start + timedelta(days=40)
    for state in (lazy, eager):  # a spending reads the credits: the lapsed ones go
        fund_store._apply(state, 7, start + timedelta(days=41), Decimal("-1.00"), None)
    assert fund_store._dumps(lazy) == fund_store._dumps(eager)
    assert lazy.fund.balance(start + timedelta(days=41)) == Decimal("1.20")


def test_volumes_of_many_partners_equal_their_volumes_one_by_one(engine: Engine) -> None:
    rng = random.Random(8)
    with engine.begin() as conn:
        volumes.add(conn, {("rebate", rng.choice(PARTNERS), "EUR", f"2026-0{rng.randrange(1, 7)}",
                            rng.choice(("purchase", "order_returned"))): Decimal(rng.randrange(1, 10**6)) / 100
                           for _ in range(40)})
    seen = _counting(engine)
    with engine.connect() as conn:
        for months in (("2026-01", "2026-04"), ("2026-04", "2026-07"), ("2027-01", "2027-04")):
            seen.clear()
            batched = volumes.by_type_of(conn, "rebate", [*PARTNERS, "nobody"], "EUR", months)
            assert len(seen) == 1
            assert batched == {partner: volumes.by_type(conn, "rebate", partner, "EUR", months)
                               for partner in (*PARTNERS, "nobody")}
        assert any(batched.values()) or months[0] == "2027-01"
        history = DbHistory(conn)
        history.expect((), PARTNERS)
        seen.clear()
        got = [history.total_volume("rebate", partner, "EUR", *Q1, ("order_returned",)) for partner in PARTNERS]
        assert len(seen) == 1
        assert got == [DbHistory(conn).total_volume("rebate", partner, "EUR", *Q1, ("order_returned",))
                       for partner in PARTNERS]
        assert any(got)


def test_balances_and_credits_asked_through_a_batch_equal_those_of_its_entries() -> None:
    rng = random.Random(9)
    key = ("coop", "acme", "EUR")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stored: list[funds.Entry] = [(start + timedelta(days=k), Decimal(rng.randrange(100, 900)) / 100,
                                  start + timedelta(days=k + rng.randrange(5, 40))) for k in range(30)]
    history = DbHistory(None)  # type: ignore[arg-type]  # nothing is read: the fund's entries are given
    history._snapshots[key] = None
    history._stored_funds[key] = stored
    event = _event(1, "1", start)
    at = start + timedelta(days=30)
    batch: list[funds.Entry] = []
    for _ in range(60):
        at += timedelta(hours=rng.randrange(0, 30))
        when = at - timedelta(days=rng.randrange(1, 4)) if rng.random() < 0.2 else at  # now and then out of order
        amount = Decimal(rng.randrange(-1200, 900)) / 100
        expires = when + timedelta(days=rng.randrange(3, 20)) if amount > 0 else None
        history.add_fund("coop", dataclasses.replace(event, occurred_at=when),
                         FundMovement("acme", amount, "EUR", expires), amount)
        batch.append((when, amount, expires))
        for probe in (at, at - timedelta(days=rng.randrange(0, 3)), at + timedelta(days=1)):
            assert history.fund_balance("coop", "acme", "EUR", probe) == funds.balance([*stored, *batch], probe)
            for since in (start, probe - timedelta(days=1), at - timedelta(hours=5)):
                assert history.fund_credited("coop", "acme", "EUR", since, probe) == sum(
                    (a for when_, a, _e in [*stored, *batch] if a > 0 and since <= when_ < probe), Decimal(0))


def test_credits_of_a_batch_out_of_time_order_are_summed_by_their_times() -> None:
    key = ("coop", "acme", "EUR")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    history = DbHistory(None)  # type: ignore[arg-type]
    history._snapshots[key], history._stored_funds[key] = None, []
    event = _event(1, "1", start)
    for days, amount in ((1, "1.00"), (5, "2.00"), (3, "4.00"), (9, "8.00")):
        history.add_fund("coop", dataclasses.replace(event, occurred_at=start + timedelta(days=days)),
                         FundMovement("acme", Decimal(amount), "EUR"), Decimal(amount))
    assert history.fund_credited("coop", "acme", "EUR", start + timedelta(days=2), start + timedelta(days=6)) == 6
    assert history.fund_credited("coop", "acme", "EUR", start, start + timedelta(days=4)) == 5
