"""Migration 0003 rewrites stored event keys to the unambiguous encoding and normalised identities."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import command

from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import events

NOW = datetime(2026, 10, 1, tzinfo=UTC)


def _event(key: str, source: str, object_type: str, object_id: str, transition: str, **extra: Any) -> dict[str, Any]:
    row = {"key": key, "source": source, "object_type": object_type, "object_id": object_id,
           "transition": transition, "event_type": "deal_won", "status": "ingested", "attributes": "{}",
           "ingested_at": NOW, "payee_id": "p1"}
    row.update(extra)
    return row


def _old(source: str, object_type: str, object_id: str, transition: str, **extra: Any) -> dict[str, Any]:
    return _event(f"{source}:{object_type}:{object_id}:{transition}", source, object_type, object_id, transition,
                  **extra)


MALFORMED = "0" * 63 + "1"

STORED = [
    _old("crm", "record", "006A", "won"),                       # 1 ordinary: unchanged
    _old("salesforce", "Opportunity", "006B", "won:2026-10-01T00:00:00Z"),  # 2 colons in the transition: unchanged
    _old("crm", "record", "a:b", "won"),                        # 3 colon in the id
    _old("crm", "rec%3Aord", "x", "won"),                       # 4 a percent sign in the type
    _old("crm", "record", "\ufeff006C", "won"),                 # 5 BOM: becomes 006C
    _old("crm", "record", "006C", "won"),                       # 6 the same object without BOM: keeps its key
    _old("crm", "record", "006D\u200b", "won"),                 # 7 zero-width only here: becomes 006D
    _old("crm", "record", "cafe\u0301", "won"),                 # 8 decomposed: NFC
    _old("crm", "record", "\u200b", "won"),                     # 9 nothing left: untouched
    _event(f"crm:malformed:{MALFORMED}", "crm", "", "", "", status="quarantined"),       # 10
    _event(f"a:b:malformed:{MALFORMED}", "a:b", "", "", "", status="quarantined"),       # 11 source with a colon
    _old("crm", "record", "006E\u2060", "won"),                 # 12 then 13 collide after normalisation
    _old("crm", "record", "\u200c006E", "won"),                 # 13
]


def _keys(engine: sa.Engine) -> dict[int, tuple[str, str]]:
    with engine.connect() as conn:
        return {r.id: (r.key, r.object_id) for r in conn.execute(sa.select(events.c.id, events.c.key,
                                                                                    events.c.object_id))}


def test_upgrade_rewrites_ambiguous_and_unnormalised_keys_and_downgrade_restores(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0002")
        with engine.begin() as conn:
            for row in STORED:
                conn.execute(sa.insert(events).values(**row))
        migrate.upgrade(engine, "0003")
        keys = _keys(engine)
        superseded = "%superseded:13:" + hashlib.sha256("crm:record:\u200c006E:won".encode()).hexdigest()
        assert keys == {
            1: ("crm:record:006A:won", "006A"),
            2: ("salesforce:Opportunity:006B:won:2026-10-01T00:00:00Z", "006B"),
            3: ("crm:record:a%3Ab:won", "a:b"),
            4: ("crm:rec%253Aord:x:won", "x"),
            5: ("%superseded:5:" + hashlib.sha256("crm:record:\ufeff006C:won".encode()).hexdigest(), "006C"),
            6: ("crm:record:006C:won", "006C"),
            7: ("crm:record:006D:won", "006D"),
            8: ("crm:record:caf\u00e9:won", "caf\u00e9"),
            9: ("crm:record:\u200b:won", "\u200b"),
            10: (f"crm:malformed:{MALFORMED}", ""),
            11: (f"a%3Ab:malformed:{MALFORMED}", ""),
            12: ("crm:record:006E:won", "006E"),
            13: (superseded, "006E"),
        }
        command.downgrade(migrate.alembic_config(engine), "0002")
        back = _keys(engine)
        assert back[3] == ("crm:record:a:b:won", "a:b")
        assert back[4] == ("crm:rec%3Aord:x:won", "x")
        assert back[11] == (f"a:b:malformed:{MALFORMED}", "")
        assert back[1] == keys[1] and back[5] == keys[5] and back[7] == keys[7]
        migrate.upgrade(engine)
        assert _keys(engine) == keys
    finally:
        engine.dispose()
