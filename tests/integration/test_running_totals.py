"""The running totals (reward_totals, budget_totals) equal the sums of the rewards they replace, whatever changes a
reward or its event, on SQLite and PostgreSQL: the migration fills them from existing rewards, the triggers follow
every insert, update and delete, and two PostgreSQL transactions adding to the same total lose nothing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete, update
from sqlalchemy import select as sa_select

from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import calculations, events, program_versions, rewards
from payhub.store import gift_totals
from payhub.store import rewards as reward_store

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PROGRAMS = ("spiff", "rebate")
PAYEES = ("a", "b", "c")
PARTNERS = ("acme", "globex", None)
STATUSES = ("pending", "held", "awaiting_approval", "scheduled", "paid", "cancelled")


def _event(conn: Connection, number: int, rng: random.Random) -> int:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(24 * 200), microseconds=rng.randrange(9))
    if number % 17 == 0:
        at = datetime(2026, 3, 1, tzinfo=UTC)  # on a month boundary
    conn.execute(events.insert().values(
        id=number, key=f"s:T:{number}:won", source="s", object_type="T", object_id=str(number), transition="won",
        event_type="deal_won", occurred_at=None if number % 23 == 0 else at, partner_id=rng.choice(PARTNERS),
        status="calculated", attributes="{}", ingested_at=NOW))
    for program in PROGRAMS:
        conn.execute(calculations.insert().values(event_id=number, program=program, program_version_id=1,
                                                  status="rewarded", calculated_at=NOW))
    return number


def _reward(conn: Connection, event_id: int, rng: random.Random) -> None:
    status = rng.choice(STATUSES)
    hold = "budget" if status == "held" and rng.random() < 0.6 else ("operator" if status == "held" else None)
    conn.execute(rewards.insert().values(
        event_id=event_id, program=rng.choice(PROGRAMS), payee_id=rng.choice(PAYEES),
        amount_minor=rng.randrange(-500, 5000), currency=rng.choice(("EUR", "USD")), status=status, hold_code=hold,
        budget_key=rng.choice((None, "spiff:2026-Q1", "spiff:2026-Q2:acme")), created_at=NOW, updated_at=NOW,
        kind="withholding" if rng.random() < 0.1 else "reward"))


def _seed(engine: Engine, rng: random.Random, count: int) -> None:
    with engine.begin() as conn:
        if conn.execute(sa_select(program_versions.c.id)).first() is None:
            conn.execute(program_versions.insert().values(id=1, program="spiff", version=1, calculator="flat",
                                                          params="{}", fingerprint="f", created_at=NOW))
        first = (conn.execute(sa_select(events.c.id).order_by(events.c.id.desc())).scalar() or 0) + 1
        for number in range(first, first + count):
            _event(conn, number, rng)
            for _ in range(rng.randrange(3)):
                _reward(conn, number, rng)


def _change(conn: Connection, rng: random.Random) -> None:
    """One random change of a reward or an event, as any path of payhub might make it."""
    ids = list(conn.execute(sa_select(rewards.c.id)).scalars())
    reward_id = rng.choice(ids)
    which = rng.randrange(8)
    if which == 0:
        conn.execute(update(rewards).where(rewards.c.id == reward_id).values(status="cancelled"))
    elif which == 1:
        conn.execute(update(rewards).where(rewards.c.id == reward_id).values(status="held", hold_code="budget"))
    elif which == 2:  # released, approved, scheduled, paid: still live
        conn.execute(update(rewards).where(rewards.c.id == reward_id).values(
            status=rng.choice(("pending", "scheduled", "paid")), hold_code=None))
    elif which == 3:
        conn.execute(update(rewards).where(rewards.c.id == reward_id).values(
            amount_minor=rng.randrange(-100, 900), payee_id=rng.choice(PAYEES), budget_key=rng.choice((None, "x"))))
    elif which == 4:
        conn.execute(delete(rewards).where(rewards.c.id == reward_id))
    elif which == 5:
        event_id = rng.choice(list(conn.execute(sa_select(events.c.id)).scalars()))
        conn.execute(update(events).where(events.c.id == event_id).values(
            partner_id=rng.choice(PARTNERS), occurred_at=datetime(2026, rng.randrange(1, 13), 1, tzinfo=UTC)))
    elif which == 6:  # a change that moves nothing (the schedule stage's status changes among live states)
        conn.execute(update(rewards).where(rewards.c.id.in_(ids[:20])).values(updated_at=NOW))
    else:
        conn.execute(update(rewards).where(rewards.c.id == reward_id).values(
            program=rng.choice(PROGRAMS), currency=rng.choice(("EUR", "USD")), kind=rng.choice(("reward",
                                                                                                "withholding"))))


def _raw_scope_total(conn: Connection, *args: Any) -> int:
    """scope_total as it was summed before the running totals (a period that is not whole months)."""
    program, currency, per, scope, since, until = args
    params: dict[str, Any] = {"program": program, "currency": currency}
    params |= {"scope": scope} if per != "program" else {}
    timed = since is not None
    params |= {"since": since, "until": until} if timed else {}
    return int(conn.execute(reward_store._SUMS[(per, timed)], params).scalar_one())


@pytest.mark.slow
def test_totals_equal_the_rewards_after_the_backfill_and_every_change(db_url: str) -> None:
    rng = random.Random(15)
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0009")
        _seed(engine, rng, 60)
        migrate.upgrade(engine)  # the backfill
        with engine.connect() as conn:
            assert reward_store.totals_drift(conn) == []
        for _ in range(120):
            with engine.begin() as conn:
                _change(conn, rng)
                if rng.random() < 0.2:
                    _seed_in(conn, rng)
            with engine.connect() as conn:
                assert reward_store.totals_drift(conn) == []
        with engine.connect() as conn:
            for program in PROGRAMS:
                for per, scope in (("payee", "a"), ("partner", "acme"), ("program", None)):
                    for since, until in ((None, None), (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1,
                                                                                                 tzinfo=UTC))):
                        args = (program, "EUR", per, scope, since, until)
                        assert reward_store.scope_total(conn, *args) == _raw_scope_total(conn, *args)
            since, until = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC)
            for programs in (None, frozenset({"spiff"}), frozenset()):
                assert reward_store.payees_total(conn, {"a", "c"}, "USD", since, until, programs) == \
                    gift_totals.rewarded_to(conn, {"a", "c"}, "USD", since, until, programs)
            assert reward_store.payees_total(conn, {"a"}, "USD", since, until + timedelta(days=1), None) is None
            assert reward_store.total(conn, "spiff", "b", "EUR") == _raw_scope_total(
                conn, "spiff", "EUR", "payee", "b", None, None)
    finally:
        engine.dispose()


def _seed_in(conn: Connection, rng: random.Random) -> None:
    number = (conn.execute(sa_select(events.c.id).order_by(events.c.id.desc())).scalar() or 0) + 1
    _event(conn, number, rng)
    _reward(conn, number, rng)


def test_drift_names_a_total_that_does_not_match(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        _seed(engine, random.Random(3), 5)
        with engine.begin() as conn:
            assert reward_store.totals_drift(conn) == []
            conn.exec_driver_sql("UPDATE reward_totals SET amount_minor = amount_minor + 1 WHERE per = 'payee'")
            conn.exec_driver_sql("UPDATE budget_totals SET amount_minor = amount_minor - 1")
            drift = reward_store.totals_drift(conn)
        assert drift and all(line.startswith(("reward_totals ", "budget_totals ")) for line in drift)
        assert any("/payee/" in line for line in drift)
    finally:
        engine.dispose()


def test_month_span_only_for_whole_months() -> None:
    first = datetime(2026, 4, 1, tzinfo=UTC)
    assert reward_store.month_span(first, datetime(2026, 7, 1, tzinfo=UTC)) == ("2026-04", "2026-07")
    assert reward_store.month_span(first, first + timedelta(days=29)) is None
    assert reward_store.month_span(first + timedelta(microseconds=1), datetime(2026, 7, 1, tzinfo=UTC)) is None


def _reward_values(payee: str, minor: int) -> dict[str, Any]:
    return {"event_id": 1, "program": "spiff", "payee_id": payee, "amount_minor": minor, "currency": "EUR",
            "status": "pending", "budget_key": "pool", "created_at": NOW, "updated_at": NOW}


@pytest.mark.postgres
def test_two_postgresql_transactions_adding_to_the_same_totals_do_not_wait_and_lose_nothing(tmp_path: Any) -> None:
    from payhub.testing import throwaway_database

    with throwaway_database("postgres", tmp_path, pytest.skip) as url:
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            _seed(engine, random.Random(1), 2)
            with engine.begin() as conn:
                conn.execute(update(events).where(events.c.id == 1).values(partner_id="acme"))
            first = engine.connect()
            first.begin()  # one program, partner, month and pool: the same totals as the second's
            first.execute(rewards.insert().values(_reward_values("a", 100)))
            with engine.connect() as second:  # would wait for the first's totals rows before: now it must not
                with second.begin():
                    second.exec_driver_sql("SET LOCAL lock_timeout = '500ms'")
                    second.execute(rewards.insert().values(_reward_values("b", 7)))
                    second.execute(rewards.insert().values(_reward_values("a", 20)))
                with second.begin():
                    assert reward_store.budget_used(second, "pool") == 27  # the first is still open
            first.execute(rewards.insert().values(_reward_values("b", 3)))
            assert reward_store.budget_used(first, "pool") == 130  # its own writes and the second's committed ones
            first.commit()
            first.close()
            with engine.connect() as conn:
                assert reward_store.totals_drift(conn) == []
                assert reward_store.budget_used(conn, "pool") == 130
                live = {(r.program, r.currency, r.payee_id): 0 for r in conn.execute(sa_select(rewards))}
                for program, currency, payee in live:
                    assert reward_store.total(conn, program, payee, currency) == _raw_scope_total(
                        conn, program, currency, "payee", payee, None, None)
                for per, scope in (("program", None), ("partner", "acme"), ("payee", "a")):
                    args = ("spiff", "EUR", per, scope, None, None)
                    assert reward_store.scope_total(conn, *args) == _raw_scope_total(conn, *args)
                slots = conn.exec_driver_sql("SELECT count(DISTINCT slot) FROM reward_totals WHERE program = 'spiff' "
                                             "AND per = 'program' AND currency = 'EUR'").scalar_one()
                assert slots >= 2  # each transaction wrote to its own slot (the seed's too, in a third)
                assert conn.exec_driver_sql("SELECT count(*) FROM budget_totals WHERE budget_key = 'pool'"
                                            ).scalar_one() == 2
        finally:
            engine.dispose()


def _totals_writes(conn: Connection) -> Any:
    """What changes when a statement writes any totals row: on SQLite the connection's count of changed rows (which
    counts the triggers' writes), on PostgreSQL each totals row's version (ctid, xmin)."""
    if conn.dialect.name == "sqlite":
        return conn.exec_driver_sql("SELECT total_changes()").scalar_one()
    return sorted(conn.exec_driver_sql(
        "SELECT 'r', ctid::text, xmin::text FROM reward_totals UNION ALL "
        "SELECT 'b', ctid::text, xmin::text FROM budget_totals").all())


def test_a_change_that_keeps_what_a_reward_counts_for_touches_no_total(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        _seed(engine, random.Random(5), 1)
        with engine.begin() as conn:
            reward_id = conn.execute(rewards.insert().values(_reward_values("a", 250)).returning(rewards.c.id)
                                     ).scalar_one()
        for status in ("awaiting_approval", "pending", "scheduled", "sent", "paid"):
            with engine.begin() as conn:
                before = _totals_writes(conn)
                values: dict[str, Any] = {"status": status, "updated_at": NOW + timedelta(days=1)}
                if status == "sent":
                    values |= {"hold_code": None, "hold_reason": "x"}  # a hold code dropped by a live reward
                changed = conn.execute(update(rewards).where(rewards.c.id == reward_id).values(**values)).rowcount
                after = _totals_writes(conn)
            assert changed == 1
            assert after == (before + 1 if conn.dialect.name == "sqlite" else before), status
        with engine.begin() as conn:  # what does move a contribution still writes the totals
            before = _totals_writes(conn)
            conn.execute(update(rewards).where(rewards.c.id == reward_id).values(status="cancelled"))
            assert _totals_writes(conn) != (before + 1 if conn.dialect.name == "sqlite" else before)
        with engine.connect() as conn:
            assert reward_store.totals_drift(conn) == []
            assert reward_store.budget_used(conn, "pool") == _raw_budget_used(conn, "pool")
    finally:
        engine.dispose()


def _raw_budget_used(conn: Connection, key: str) -> int:
    return sum(int(r.amount_minor) for r in conn.execute(sa_select(rewards).where(
        rewards.c.budget_key == key, rewards.c.status != "cancelled")) if not (r.status == "held" and
                                                                                r.hold_code == "budget"))


def test_statements_of_many_rows_keep_the_totals(db_url: str) -> None:
    """Inserts, updates and deletes of many rewards in one statement, several of them on the same totals, some
    moving what they count for and some not: the totals still equal the rewards."""
    rng = random.Random(8)
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        _seed(engine, rng, 12)
        with engine.begin() as conn:
            events_ids = list(conn.execute(sa_select(events.c.id)).scalars())
            conn.execute(rewards.insert(), [
                {"event_id": rng.choice(events_ids), "program": rng.choice(PROGRAMS), "payee_id": rng.choice(PAYEES),
                 "amount_minor": rng.randrange(-300, 3000), "currency": "EUR",
                 "status": rng.choice(("pending", "held", "cancelled")), "hold_code": "budget",
                 "budget_key": rng.choice((None, "pool", "other")), "created_at": NOW, "updated_at": NOW,
                 "kind": rng.choice(("reward", "reward", "withholding"))} for _ in range(300)])
        with engine.connect() as conn:
            assert reward_store.totals_drift(conn) == []
        with engine.begin() as conn:  # one statement of many rows (a VALUES list), as the calculate stage inserts
            conn.execute(rewards.insert().values([
                {"event_id": rng.choice(events_ids), "program": rng.choice(PROGRAMS), "payee_id": rng.choice(PAYEES),
                 "amount_minor": rng.randrange(-300, 3000), "currency": rng.choice(("EUR", "USD")),
                 "status": rng.choice(("pending", "held", "cancelled")), "hold_code": "budget",
                 "budget_key": rng.choice((None, "pool", "other")), "created_at": NOW, "updated_at": NOW,
                 "kind": rng.choice(("reward", "reward", "withholding"))} for _ in range(200)]))
            conn.execute(rewards.insert().values([  # rows none of which counts: no total written
                {"event_id": events_ids[0], "program": "spiff", "payee_id": "a", "amount_minor": 5, "currency": "EUR",
                 "status": "cancelled", "budget_key": "pool", "created_at": NOW, "updated_at": NOW}] * 2))
        with engine.connect() as conn:
            assert reward_store.totals_drift(conn) == []
            assert reward_store.budget_used(conn, "pool") == _raw_budget_used(conn, "pool")
            assert reward_store.budget_used(conn, "other") == _raw_budget_used(conn, "other")
        changes = [
            update(rewards).where(rewards.c.id % 3 == 0).values(status="scheduled", hold_code=None),
            update(rewards).where(rewards.c.id % 4 == 1).values(status="cancelled"),
            update(rewards).where(rewards.c.id % 5 == 2).values(payee_id="c", amount_minor=rewards.c.amount_minor + 7),
            update(rewards).where(rewards.c.id % 7 == 3).values(budget_key="pool", status="held", hold_code="budget"),
            update(rewards).where(rewards.c.id % 2 == 0).values(updated_at=NOW + timedelta(days=1)),
            update(rewards).where(rewards.c.id > 0).values(program="rebate", kind="reward"),
            delete(rewards).where(rewards.c.id % 6 == 5),
        ]
        for change in changes:
            with engine.begin() as conn:
                assert conn.execute(change).rowcount > 1
            with engine.connect() as conn:
                assert reward_store.totals_drift(conn) == [], str(change)
                assert reward_store.budget_used(conn, "pool") == _raw_budget_used(conn, "pool")
        with engine.begin() as conn:  # a statement that changes no row writes no total
            before = _totals_writes(conn)
            conn.execute(update(rewards).where(rewards.c.id < 0).values(status="cancelled"))
            assert _totals_writes(conn) == before
    finally:
        engine.dispose()
