"""Replicas lock running totals in one order whatever the database's collation.

Keys are sorted by code point in Python and locked in chunks; PostgreSQL orders rows by the column's collation. With
a collation that is not byte order (ICU's en-US puts ``a000`` before ``B000``), two replicas adding overlapping keys
locked them in different orders and deadlocked; the lock statements now order by ``COLLATE "C"``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text

from payhub.store import volumes
from payhub.testing import throwaway_database

pytestmark = pytest.mark.postgres
ICU = "en-US-x-icu"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with throwaway_database("postgres", tmp_path, pytest.skip, migrated=True) as url:
        made = create_engine(url)
        try:
            with made.begin() as conn:
                if conn.execute(text("SELECT 1 FROM pg_collation WHERE collname = :c"), {"c": ICU}).first() is None:
                    pytest.skip(f"this PostgreSQL has no {ICU} collation")
                conn.execute(text(f'ALTER TABLE volume_totals ALTER COLUMN partner_id TYPE varchar(200) '
                                  f'COLLATE "{ICU}"'))
            yield made
        finally:
            made.dispose()


def test_two_replicas_adding_overlapping_volume_totals_do_not_deadlock(engine: Engine) -> None:
    upper = [("p", f"B{i:03d}", "USD", "2026-01", "deal_won") for i in range(volumes.ADD_CHUNK)]
    lower = ("p", "a000", "USD", "2026-01", "deal_won")  # after every B by code point, before them in en-US
    with engine.begin() as conn:
        volumes.add(conn, {key: Decimal(1) for key in [*upper, lower]})
    first_chunk_locked = threading.Event()

    @event.listens_for(engine, "after_cursor_execute")
    def hold_after_the_first_chunk(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        if "FOR UPDATE" in statement and len(params or ()) == 5 * volumes.ADD_CHUNK and not first_chunk_locked.is_set():
            first_chunk_locked.set()
            time.sleep(1.0)  # the other replica locks now

    outcomes: dict[str, str] = {}

    def replica(name: str, keys: list[tuple[str, str, str, str, str]]) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '20s'"))
                volumes.add(conn, dict.fromkeys(keys, Decimal(1)))
            outcomes[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
            outcomes[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]

    a = threading.Thread(target=replica, args=("a", [*upper, lower]))
    b = threading.Thread(target=replica, args=("b", [upper[-1], lower]))
    a.start()
    assert first_chunk_locked.wait(20)
    b.start()
    a.join(60)
    b.join(60)
    assert outcomes == {"a": "ok", "b": "ok"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT amount FROM volume_totals WHERE partner_id = 'a000'")).scalar() == "3"
        assert conn.execute(text(f"SELECT amount FROM volume_totals WHERE partner_id = '{upper[-1][1]}'")
                            ).scalar() == "3"
