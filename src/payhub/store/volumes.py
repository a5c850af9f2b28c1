"""Running volume totals: the amounts of the events each program calculated without failure (rewarded or not
eligible), per program, partner, currency, UTC month of the event and event type, in ``volume_totals``.

They answer :meth:`payhub.api.History.total_volume` over whole months (rebate tiers) without reading every event of
the period. Event amounts are exact decimal text, summed as :class:`~decimal.Decimal` and stored as text, so the
totals are kept here, not by database triggers: :func:`add` runs in the transaction that records the calculations
(the calculate stage, the only writer of decided calculations; an event's partner, currency, amount, time and type
never change once it is calculated). On PostgreSQL the rows are locked in key order first, so replicas add one after
the other and lose nothing. :func:`drift` checks the totals against the events.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, select

from payhub.db.queries import driver_sql, in_chunks
from payhub.db.schema import calculations, events, volume_totals
from payhub.states import CalculationStatus

DECIDED = (CalculationStatus.REWARDED, CalculationStatus.NOT_ELIGIBLE)
Key = tuple[str, str, str, str, str]  # program, partner, currency, month, event type

_READ = select(volume_totals.c.event_type, volume_totals.c.amount).where(
    volume_totals.c.program == bindparam("program"), volume_totals.c.partner_id == bindparam("partner"),
    volume_totals.c.currency == bindparam("currency"), volume_totals.c.month >= bindparam("first"),
    volume_totals.c.month < bindparam("end"))
_COLUMNS = (volume_totals.c.program, volume_totals.c.partner_id, volume_totals.c.currency, volume_totals.c.month,
            volume_totals.c.event_type)


def month_of(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def key_of(program: str, event: Any) -> Key | None:
    """The total an event (with ``partner_id``, ``currency``, ``amount``, ``occurred_at``, ``event_type``) counts in,
    once ``program`` decided it; None when it counts in none (no partner, amount, currency or time)."""
    if not event.partner_id or event.amount is None or not event.currency or event.occurred_at is None:
        return None
    return program, event.partner_id, event.currency, month_of(event.occurred_at), event.event_type


def by_type(conn: Connection, program: str, partner_id: str, currency: str, months: tuple[str, str]
            ) -> dict[str, Decimal]:
    """The partner's decided volume of ``program`` in ``currency`` in the months ``[first, end)``, per event type."""
    found: dict[str, Decimal] = {}
    for kind, amount in conn.execute(_READ, {"program": program, "partner": partner_id, "currency": currency,
                                             "first": months[0], "end": months[1]}):
        found[kind] = found.get(kind, Decimal(0)) + Decimal(amount)
    return found


def by_type_of(conn: Connection, program: str, partner_ids: Collection[str], currency: str, months: tuple[str, str]
               ) -> dict[str, dict[str, Decimal]]:
    """:func:`by_type` of many partners at once (one statement per 500 partners)."""
    found: dict[str, dict[str, Decimal]] = {partner: {} for partner in partner_ids}
    for chunk in in_chunks(found):
        for partner, kind, amount in conn.execute(_READ_MANY, {"program": program, "partners": chunk,
                                                               "currency": currency, "first": months[0],
                                                               "end": months[1]}):
            totals = found[partner]
            totals[kind] = totals.get(kind, Decimal(0)) + Decimal(amount)
    return found


_READ_MANY = select(volume_totals.c.partner_id, volume_totals.c.event_type, volume_totals.c.amount).where(
    volume_totals.c.program == bindparam("program"),
    volume_totals.c.partner_id.in_(bindparam("partners", expanding=True)),
    volume_totals.c.currency == bindparam("currency"), volume_totals.c.month >= bindparam("first"),
    volume_totals.c.month < bindparam("end"))


_KEY = "program, partner_id, currency, month, event_type"
_MAKE = f"INSERT INTO volume_totals ({_KEY}, amount) VALUES (?, ?, ?, ?, ?, '0') ON CONFLICT DO NOTHING"
_STORE = "UPDATE volume_totals SET amount = ? WHERE program = ? AND partner_id = ? AND currency = ? AND month = ? " \
         "AND event_type = ?"
_PG_ORDER = ", ".join(f'{column} COLLATE "C"' for column in _KEY.split(", ")) + " FOR UPDATE"
ADD_CHUNK = 200
"""Totals read per statement of :func:`add` (5 values each)."""


def add(conn: Connection, amounts: dict[Key, Decimal]) -> None:
    """Add ``amounts`` to their totals (rows made as needed), in key order: driver-level statements, an executemany
    that makes the missing rows, one read of the totals per :data:`ADD_CHUNK` keys (locked on PostgreSQL), an
    executemany of the new amounts."""
    if not amounts:
        return
    keys = sorted(amounts)
    conn.exec_driver_sql(driver_sql(conn, _MAKE), keys)
    # PostgreSQL locks the rows in the order of the key's text by code point, as they are sorted here, whatever the
    # database's collation: replicas then lock alike (SQLite compares text by its bytes, in the same order)
    order = _PG_ORDER if conn.dialect.name == "postgresql" else _KEY
    stored: dict[tuple[str, ...], str] = {}
    for start in range(0, len(keys), ADD_CHUNK):
        chunk = keys[start:start + ADD_CHUNK]
        sql = (f"SELECT {_KEY}, amount FROM volume_totals WHERE ({_KEY}) IN "
               f"(VALUES {', '.join(['(?, ?, ?, ?, ?)'] * len(chunk))}) ORDER BY {order}")
        stored.update({tuple(row[:5]): row[5] for row in conn.exec_driver_sql(
            driver_sql(conn, sql), tuple(value for key in chunk for value in key))})
    conn.exec_driver_sql(driver_sql(conn, _STORE), [(str(Decimal(stored[k]) + amounts[k]), *k) for k in keys])


def totals_from_events(rows: Iterable[Any]) -> dict[Key, Decimal]:
    """The totals of ``(program, partner_id, currency, occurred_at, event_type, amount)`` rows of decided
    calculations."""
    totals: dict[Key, Decimal] = {}
    for program, partner_id, currency, occurred_at, event_type, amount in rows:
        if partner_id and amount is not None and currency and occurred_at is not None:
            key = (program, partner_id, currency, month_of(occurred_at), event_type)
            totals[key] = totals.get(key, Decimal(0)) + Decimal(amount)
    return totals


_DECIDED_EVENTS = select(calculations.c.program, events.c.partner_id, events.c.currency, events.c.occurred_at,
                         events.c.event_type, events.c.amount).select_from(
    calculations.join(events, events.c.id == calculations.c.event_id)).where(calculations.c.status.in_(DECIDED))


def drift(conn: Connection) -> list[str]:
    """Where ``volume_totals`` differs from the decided events' amounts (empty when they agree). Reads every decided
    calculation: for audits and tests."""
    expected = totals_from_events(conn.execute(_DECIDED_EVENTS))
    kept = {tuple(row[:5]): Decimal(row[5]) for row in conn.execute(select(*_COLUMNS, volume_totals.c.amount))}
    return [f"volume_totals {'/'.join(key)}: kept {kept.get(key, 0)}, events {expected.get(key, 0)}"
            for key in sorted(set(kept) | set(expected)) if kept.get(key, 0) != expected.get(key, 0)]
