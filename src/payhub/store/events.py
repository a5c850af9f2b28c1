"""The events store: the CRM facts and their calculations (one per program and event).

The ingest stage writes events (:mod:`payhub.pipeline.ingest`) and the calculate stage claims them; this module
holds the reads the calculations decide from and the status changes they make.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Row, Select, and_, bindparam, exists, func, or_, select, update

from payhub.db.queries import for_update, insert_ignore
from payhub.db.schema import calculations, events, payees, sources
from payhub.states import CalculationStatus, EventStatus
from payhub.store import leases

DECIDED = (CalculationStatus.REWARDED, CalculationStatus.NOT_ELIGIBLE)
"""Calculations that did not fail (and are never repeated)."""


def of_object(conn: Connection, source: str, object_type: str, object_id: str, but: int | None) -> dict[int, Any]:
    """The other events of one CRM object (every event but ``but``): id → ``(id, occurred_at, partner_id)``."""
    return {row.id: row for row in conn.execute(select(
        events.c.id, events.c.occurred_at, events.c.partner_id).where(
        events.c.source == source, events.c.object_type == object_type, events.c.object_id == object_id,
        events.c.id != but))}


def decided_volume(conn: Connection, program: str, partner_id: str, currency: str, since: datetime,
                   until: datetime) -> Sequence[Row[Any, Any]]:
    """``(amount, event_type)`` of the partner's events in ``currency`` that occurred in ``[since, until)`` and that
    ``program`` calculated without failure; amounts are the exact decimal text the source sent."""
    return conn.execute(select(events.c.amount, events.c.event_type).select_from(
        calculations.join(events, events.c.id == calculations.c.event_id)
    ).where(
        calculations.c.program == program, calculations.c.status.in_(DECIDED),
        events.c.partner_id == partner_id, events.c.currency == currency, events.c.amount.is_not(None),
        events.c.occurred_at >= since, events.c.occurred_at < until,
    )).all()


def mark_calculated(conn: Connection, event_ids: list[int], now: datetime) -> None:
    """Every program has calculated these events."""
    conn.execute(update(events).where(events.c.id.in_(event_ids))
                 .values(status=EventStatus.CALCULATED, calculated_at=now))


def calculated_programs(conn: Connection, event_ids: list[int]) -> set[tuple[int, str]]:
    """``(event id, program)`` of every calculation the events already have."""
    return {(event_id, program) for event_id, program in conn.execute(
        select(calculations.c.event_id, calculations.c.program).where(calculations.c.event_id.in_(event_ids)))}


def record_calculations(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write calculations (one per program and event: a second one for the same pair is refused)."""
    if rows:
        conn.execute(calculations.insert(), rows)


def set_calculation_reason(conn: Connection, event_id: int, program: str, reason: str) -> None:
    """Rewrite the reason of one calculation (written earlier in the same transaction)."""
    conn.execute(update(calculations).where(calculations.c.event_id == event_id,
                                            calculations.c.program == program).values(reason=reason))


def forget_failed(conn: Connection, program: str | None = None, event_id: int | None = None) -> list[Row[Any, Any]]:
    """Delete the failed calculations (of ``program``, of ``event_id``) and set their events back to ``ingested``;
    return ``(id, event_id, program, reason)`` of each."""
    query = select(calculations.c.id, calculations.c.event_id, calculations.c.program,
                   calculations.c.reason).where(calculations.c.status == CalculationStatus.FAILED)
    if program:
        query = query.where(calculations.c.program == program)
    if event_id is not None:
        query = query.where(calculations.c.event_id == event_id)
    failed = list(conn.execute(for_update(conn, query)).all())
    if failed:
        conn.execute(calculations.delete().where(calculations.c.id.in_([f.id for f in failed])))
        conn.execute(update(events).where(events.c.id.in_({f.event_id for f in failed}))
                     .values(status=EventStatus.INGESTED, calculated_at=None))
    return failed


def failed_sources(conn: Connection, names: list[str]) -> dict[str, str]:
    """Those of the sources ``names`` whose last poll failed, with the reason, by name."""
    rows = conn.execute(select(sources.c.name, sources.c.reason)
                        .where(sources.c.name.in_(names), sources.c.status == "failed").order_by(sources.c.name)).all()
    return {name: reason or "failed" for name, reason in rows}


def insert_new(conn: Connection, rows: list[dict[str, Any]]) -> list[Any]:
    """Insert the events whose key is new (a key already stored is skipped: dedup on ingest); return ``(id, key,
    status, reason)`` of each inserted."""
    return list(insert_ignore(conn, events, rows, "key", events.c.id, events.c.key, events.c.status,
                              events.c.reason))


def quarantined(conn: Connection, keys: list[str]) -> list[Any]:
    """``(id, key, raw)`` of the quarantined events under these keys."""
    return list(conn.execute(select(events.c.id, events.c.key, events.c.raw).where(
        events.c.key.in_(keys), events.c.status == EventStatus.QUARANTINED)).all())


def correct(conn: Connection, event_id: int, values: dict[str, Any]) -> None:
    """Replace a quarantined event's fields by those of the record received since under its key."""
    conn.execute(update(events).where(events.c.id == event_id).values(**values))


# ---------------------------------------------------------------------------------------------------- sources


def claim_source(conn: Connection, name: str, worker_id: str, lease_seconds: float) -> tuple[str | None, str] | None:
    """Lease the source (registered on first use) to ``worker_id`` unless it failed or another worker holds it;
    return its cursor and the lease token, or None."""
    token = leases.new_token()
    insert_ignore(conn, sources, [{"name": name, "status": "ok"}], "name")
    claimed = conn.execute(
        update(sources)
        .where(sources.c.name == name, sources.c.status == "ok")
        .where(or_(leases.free(sources, conn), sources.c.lease_owner == worker_id))
        .values(lease_owner=worker_id, lease_token=token, lease_until=leases.expiry(conn, lease_seconds))
    ).rowcount
    if not claimed:
        return None
    cursor = cast("str | None", conn.execute(select(sources.c.cursor).where(sources.c.name == name)).scalar_one())
    return cursor, token


def release_source(conn: Connection, name: str, token: str) -> None:
    """Give up the lease ``token`` on the source."""
    leases.release(conn, sources, "name", [name], token)


def keep_source(conn: Connection, name: str, token: str | None, lease_seconds: float, **values: Any) -> None:
    """Renew the lease ``token`` on the source (and write ``values``) in the caller's transaction; raise
    :class:`~payhub.store.leases.LeaseLost` if it no longer holds (None: not leased, nothing checked)."""
    lease = leases.expiry(conn, lease_seconds)
    if token is not None and not leases.holding(conn, sources, "name", [name], token):
        raise leases.LeaseLost(f"source {name}")
    conn.execute(update(sources).where(sources.c.name == name).values(lease_until=lease, **values))


def record_source_error(conn: Connection, name: str, reason: str, failed: bool, now: datetime) -> str | None:
    """Record the source's error (``failed``: it is not polled again until reset); return the reason recorded
    before, or None when there was none (or no such source)."""
    known = conn.execute(select(sources.c.reason).where(sources.c.name == name)).first()
    values: dict[str, Any] = {"reason": reason, "last_polled_at": now}
    if failed:
        values["status"] = "failed"
    conn.execute(update(sources).where(sources.c.name == name).values(**values))
    return None if known is None else cast("str | None", known.reason)


def reset_failed_sources(conn: Connection) -> list[str]:
    """Set the failed sources back to ``ok``; return their names, sorted."""
    return sorted(conn.execute(update(sources).where(sources.c.status == "failed").values(status="ok")
                               .returning(sources.c.name)).scalars().all())


# ---------------------------------------------------------------------------------------------------- waiting events

_EARLIER = events.alias("earlier")
_SAME_OBJECT_BEFORE = and_(_EARLIER.c.source == events.c.source, _EARLIER.c.object_type == events.c.object_type,
                           _EARLIER.c.object_id == events.c.object_id, _EARLIER.c.id < events.c.id)
_SET_WAITING = update(events).where(events.c.id == bindparam("event_id")).values(
    status=EventStatus.WAITING, reason=bindparam("waiting_reason"), waits_for_payee=bindparam("waits_for_payee"))


def due_waiting(horizon: datetime, limit: int) -> Select[Any]:
    """Up to ``limit`` waiting events dated up to ``horizon`` before which no event of the same CRM object waits (and
    that do not wait for a payee: :func:`claim_registered_waiting`)."""
    return select(events.c.id, events.c.occurred_at).where(
        events.c.status == EventStatus.WAITING, events.c.occurred_at <= horizon, events.c.waits_for_payee.is_(None),
        ~exists().where(_SAME_OBJECT_BEFORE, _EARLIER.c.status == EventStatus.WAITING),
    ).order_by(events.c.occurred_at, events.c.id).limit(limit)


def claim_due_waiting(conn: Connection, horizon: datetime, limit: int) -> list[Any]:
    """Lock the events of :func:`due_waiting`: ``(id, occurred_at)`` of each."""
    return list(conn.execute(for_update(conn, due_waiting(horizon, limit))).all())


def release_waiting(conn: Connection, event_ids: list[int]) -> None:
    """Move waiting events back to ``ingested``: their time has come."""
    if event_ids:
        conn.execute(update(events).where(events.c.id.in_(event_ids)).values(status=EventStatus.INGESTED, reason=None,
                                                                             waits_for_payee=None))


def claim_registered_waiting(conn: Connection, limit: int) -> list[Any]:
    """Lock up to ``limit`` waiting events whose payee (``waits_for_payee``) is in the registry now: ``(id,
    waits_for_payee)`` of each, by id."""
    return list(conn.execute(for_update(conn, select(events.c.id, events.c.waits_for_payee).where(
        events.c.status == EventStatus.WAITING, events.c.waits_for_payee.is_not(None),
        exists().where(payees.c.id == events.c.waits_for_payee)).order_by(events.c.id).limit(limit))).all())


def next_ingested(horizon: datetime, limit: int) -> Select[Any]:
    """The next ``limit`` ingested events by id, each with ``waits_for``: the first earlier event of its CRM object
    that waits, or is ingested and dated after ``horizon``; None when there is none."""
    not_due = or_(_EARLIER.c.status == EventStatus.WAITING,
                  and_(_EARLIER.c.status == EventStatus.INGESTED, _EARLIER.c.occurred_at > horizon))
    waits_for = select(func.min(_EARLIER.c.id)).where(_SAME_OBJECT_BEFORE, not_due).scalar_subquery()
    return select(events, waits_for.label("waits_for")).where(events.c.status == EventStatus.INGESTED).order_by(
        events.c.id).limit(limit)


def claim_ingested(conn: Connection, horizon: datetime, limit: int) -> list[Any]:
    """Lock the events of :func:`next_ingested`: the calculate stage's work list."""
    return list(conn.execute(for_update(conn, next_ingested(horizon, limit))).all())


def set_waiting(conn: Connection, moves: list[dict[str, Any]]) -> None:
    """Set events waiting: each of ``moves`` has the ``event_id`` and its ``waiting_reason``."""
    if moves:
        conn.execute(_SET_WAITING, moves)
