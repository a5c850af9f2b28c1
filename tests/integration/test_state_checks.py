"""The status columns accept only the named states (payhub.states), in the declared schema and after migrating a
database that already holds rows (migration 0007), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, func, inspect, select, update
from sqlalchemy.exc import IntegrityError

from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import (
    attempts,
    calculations,
    events,
    metadata,
    payout_items,
    payouts,
    program_versions,
    rewards,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def declared() -> dict[tuple[str, str], set[str]]:
    """(table, constraint name) → the values its CHECK allows, as the schema declares them."""
    checks = {}
    for table in metadata.sorted_tables:
        for constraint in table.constraints:
            if constraint.__class__.__name__ == "CheckConstraint":
                checks[(table.name, str(constraint.name))] = set(re.findall(r"'(\w+)'", str(constraint.sqltext)))
    return checks


def present(engine: Engine) -> dict[tuple[str, str], set[str]]:
    """The same, as the database has them."""
    inspector = inspect(engine)
    return {(table, check["name"]): set(re.findall(r"'(\w+)'", check["sqltext"]))
            for table in inspector.get_table_names() for check in inspector.get_check_constraints(table)}


def seed(engine: Engine) -> None:
    """One row in each table with a state column (and those they refer to)."""
    with engine.begin() as conn:
        conn.execute(events.insert().values(id=1, key="s:T:1:won", source="s", object_type="T", object_id="1",
                                            transition="won", event_type="deal_won", status="calculated",
                                            attributes="{}", ingested_at=NOW))
        conn.execute(program_versions.insert().values(id=1, program="p", version=1, calculator="flat", params="{}",
                                                      fingerprint="f", created_at=NOW))
        conn.execute(calculations.insert().values(event_id=1, program="p", program_version_id=1, status="rewarded",
                                                  calculated_at=NOW))
        conn.execute(payouts.insert().values(id=1, idempotency_key="k1", payee_id="a", rail="r", route_reason="x",
                                             currency="EUR", amount_minor=100, item_count=1, status="sent",
                                             created_at=NOW, updated_at=NOW))
        conn.execute(rewards.insert().values(id=1, event_id=1, program="p", payee_id="a", amount_minor=100,
                                             currency="EUR", status="held", hold_code="payout_failed", payout_id=1,
                                             created_at=NOW, updated_at=NOW))
        conn.execute(payout_items.insert().values(payout_id=1, reward_id=1, amount_minor=100))
        conn.execute(attempts.insert().values(payout_id=1, kind="send", number=1, started_at=NOW, outcome="accepted"))


def test_the_declared_checks_are_the_named_states() -> None:
    checks = declared()
    assert set(checks) == {("events", "ck_events_status"), ("calculations", "ck_calculations_status"),
                           ("rewards", "ck_rewards_status"), ("rewards", "ck_rewards_hold_code"),
                           ("payouts", "ck_payouts_status"), ("attempts", "ck_attempts_kind"),
                           ("attempts", "ck_attempts_outcome")}
    assert "unresolved" in checks[("payouts", "ck_payouts_status")]


def test_migrating_rows_adds_the_checks_and_keeps_rows_indexes_and_foreign_keys(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0006")
        indexes = {table: inspect(engine).get_indexes(table) for table in ("events", "rewards", "payouts")}
        seed(engine)
        migrate.upgrade(engine, "0011")
        assert present(engine) == declared()
        after = {table: inspect(engine).get_indexes(table) for table in indexes}
        for table, before in indexes.items():  # every index survives the tables' rebuilds unchanged
            assert [index for index in after[table] if index in before] == before, table
        added = {index["name"] for table in after for index in after[table] if index not in indexes[table]}
        # revision 0009's, for the console; 0011's, for the disburse and settle claims
        assert added == {"ix_events_object_id", "ix_payouts_provider_ref", "ix_payouts_status_rail_updated",
                         "ix_payouts_claimable"}
        migrate.upgrade(engine)  # 0012 drops one index, and only that one
        names = {table: {ix["name"] for ix in after[table]} for table in after}
        assert {table: names[table] - {ix["name"] for ix in inspect(engine).get_indexes(table)} for table in after} \
            == {"events": set(), "rewards": {"ix_rewards_program_payee"}, "payouts": set()}
        with engine.connect() as conn:
            assert [conn.execute(select(func.count()).select_from(t)).scalar() for t in
                    (events, calculations, rewards, payouts, payout_items, attempts)] == [1] * 6
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(update(payouts).values(status="lost"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(update(rewards).values(hold_code="whim"))
        with pytest.raises(IntegrityError), engine.begin() as conn:  # foreign keys are still enforced
            conn.execute(rewards.insert().values(event_id=99, program="p", payee_id="a", amount_minor=1,
                                                 currency="EUR", status="pending", created_at=NOW, updated_at=NOW))
        command.downgrade(migrate.alembic_config(engine), "0006")
        assert present(engine) == {}
        with engine.begin() as conn:
            conn.execute(update(payouts).values(status="paid"))
            assert conn.execute(select(rewards.c.hold_code)).scalar() == "payout_failed"
    finally:
        engine.dispose()
