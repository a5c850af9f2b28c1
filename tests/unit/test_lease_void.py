"""Voiding every lease at a SQLite daemon's start frees the leased rows and writes nothing when none is held."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import sources
from payhub.store import leases


def test_void_frees_held_leases_and_writes_nothing_when_none_is_held(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'payhub.db'}")
    try:
        migrate.upgrade(engine)
        until = datetime(2030, 1, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(sources.insert(), [
                {"name": "held", "status": "ok", "lease_owner": "dead:1:x", "lease_until": until},
                {"name": "expiring", "status": "ok", "lease_owner": None, "lease_until": until},
                {"name": "free", "status": "ok", "lease_owner": None, "lease_until": None},
            ])
        with engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            before = raw.total_changes
            leases.void(conn)
            assert raw.total_changes - before == 2  # the two rows holding something, not the free one
        with engine.connect() as conn:
            rows = conn.execute(select(sources.c.name, sources.c.lease_owner, sources.c.lease_until)).all()
        assert {row.name: (row.lease_owner, row.lease_until) for row in rows} == dict.fromkeys(
            ("held", "expiring", "free"), (None, None))
        with engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            before = raw.total_changes
            leases.void(conn)
            assert raw.total_changes == before  # nothing held: no row written, so the commit syncs nothing
    finally:
        engine.dispose()
