"""The events store: the CRM facts and their calculations (one per program and event).

The ingest stage writes events (:mod:`payhub.pipeline.ingest`) and the calculate stage claims them; this module
holds the reads the calculations decide from and the status changes they make.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Row, Select, and_, bindparam, exists, func, or_, select, update

from payhub.db.queries import driver_sql, for_update, in_chunks, insert_ignore, marks, unindexed
from payhub.db.schema import bind_time, calculations, events, payees, sources
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


CALCULATION_COLUMNS = ("event_id", "program", "program_version_id", "status", "reason", "calculated_at")
"""The values of a calculation, in the order :func:`record_calculations` takes them."""
_INSERT_CALCULATIONS = f"INSERT INTO calculations ({', '.join(CALCULATION_COLUMNS)}) VALUES ({marks(6)})"


def record_calculations(conn: Connection, rows: Sequence[tuple[int, str, int, str, str | None, datetime]]) -> None:
    """Write calculations, each a tuple of :data:`CALCULATION_COLUMNS` (one per program and event: a second one for
    the same pair is refused): one driver-level executemany."""
    if rows:
        at = bind_time(conn.dialect)
        conn.exec_driver_sql(driver_sql(conn, _INSERT_CALCULATIONS),
                             [(event_id, program, version, status, reason, at(when))
                              for event_id, program, version, status, reason, when in rows])


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


NEW_EVENT_COLUMNS = ("key", "source", "object_type", "object_id", "transition", "event_type", "occurred_at",
                     "payee_id", "partner_id", "amount", "currency", "attributes", "status", "reason", "raw",
                     "ingested_at")
"""The values of a new event, in the order :func:`insert_new` takes them."""

_INSTANTS = tuple(NEW_EVENT_COLUMNS.index(name) for name in ("occurred_at", "ingested_at"))
_MAX_PAGE = 1000
"""Events per INSERT statement at most (fewer where the database allows fewer bound parameters)."""


def insert_new(conn: Connection, rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Insert the events whose key is new (a key already stored is skipped: dedup on ingest); return ``(id, key,
    status, reason)`` of each inserted, by id.

    ``rows`` hold the values of :data:`NEW_EVENT_COLUMNS` (instants aware, text plain or ``str`` enums), checked
    by the caller as the events table stores them. The statement is sent to the driver as it is, many rows per
    ``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING``: no per-row work in SQLAlchemy. As with
    :func:`payhub.db.queries.insert_ignore`, a key inserted meanwhile by another transaction is skipped once that
    transaction commits (PostgreSQL waits for it), so each key is inserted once. A value the database or its
    driver refuses raises as it would through SQLAlchemy (``sqlalchemy.exc.DBAPIError`` or the driver's
    encoding error), and the statement inserts nothing.
    """
    if not rows:
        return []
    inserted: list[Any] = []
    first, second = _INSTANTS
    bind = bind_time(conn.dialect)  # as SQLAlchemy binds a UTCDateTime: in UTC, and as its text on SQLite
    if conn.dialect.name == "postgresql":
        for start in range(0, len(rows), _MAX_PAGE):
            columns = [list(column) for column in zip(*rows[start:start + _MAX_PAGE], strict=True)]
            columns[first] = [bind(value) for value in columns[first]]
            columns[second] = [bind(value) for value in columns[second]]
            inserted.extend(conn.exec_driver_sql(_PG_INSERT, tuple(columns)).all())
    else:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        page = _page_rows(conn, len(NEW_EVENT_COLUMNS))
        for start in range(0, len(rows), page):
            part = rows[start:start + page]
            params: list[Any] = []
            last: Any = None
            bound: Any = None
            for row in part:
                values = list(row)
                if values[second] is not last:  # the time of ingest: one for the whole batch, as a rule
                    last, bound = values[second], bind(values[second])
                values[first], values[second] = bind(values[first]), bound
                params.extend(values)
            inserted.extend(conn.exec_driver_sql(_insert_sql(mark, len(part)), tuple(params)).all())
    inserted.sort(key=itemgetter(0))
    return inserted


_NAMES = ", ".join(f'"{name}"' for name in NEW_EVENT_COLUMNS)
_PG_INSERT = (f"INSERT INTO events ({_NAMES}) SELECT * FROM unnest("
              + ", ".join("%s::timestamptz[]" if index in _INSTANTS else "%s::text[]"
                          for index in range(len(NEW_EVENT_COLUMNS)))
              + ') ON CONFLICT ("key") DO NOTHING RETURNING id, "key", status, reason')
"""PostgreSQL: one array per column, so that the statement is short and has as many parameters whatever the number
of rows (the driver parses a statement's placeholders on every execution once it has more than a few dozen)."""


@lru_cache(maxsize=8)
def _insert_sql(mark: str, count: int) -> str:
    """SQLite: the INSERT of ``count`` rows, each of ``mark`` placeholders."""
    row = f"({', '.join([mark] * len(NEW_EVENT_COLUMNS))})"
    return (f"INSERT INTO events ({_NAMES}) VALUES {', '.join([row] * count)} "
            'ON CONFLICT ("key") DO NOTHING RETURNING id, "key", status, reason')


def _page_rows(conn: Connection, columns: int) -> int:
    """Rows of ``columns`` values each that one statement may bind: SQLite's limit on bound parameters is a build
    option (32,766 by default, 999 before SQLite 3.32); PostgreSQL's protocol allows 65,535."""
    limit = 65_535
    if conn.dialect.name == "sqlite":
        getlimit = getattr(conn.connection.driver_connection, "getlimit", None)
        limit = int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)) if getlimit is not None else 999
    return max(1, min(_MAX_PAGE, limit // columns))


def quarantined(conn: Connection, keys: list[str]) -> list[Any]:
    """``(id, key, raw)`` of the quarantined events under these keys (sent to the driver as they are: on SQLite in
    lists of at most :data:`payhub.db.queries.IN_LIST` keys, on PostgreSQL as one array)."""
    status = str(EventStatus.QUARANTINED)
    if conn.dialect.name == "postgresql":
        return list(conn.exec_driver_sql('SELECT id, "key", raw FROM events WHERE status = %s AND "key" = ANY(%s)',
                                         (status, list(keys))).all())
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    found: list[Any] = []
    for chunk in in_chunks(keys):
        sql = (f'SELECT id, "key", raw FROM events WHERE status = {mark} '
               f'AND "key" IN ({", ".join([mark] * len(chunk))})')
        found.extend(conn.exec_driver_sql(sql, (status, *chunk)).all())
    return found


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


def _earlier_id(dialect: str) -> ColumnElement[int]:
    """The earlier event's id as the conditions below compare it (see :func:`_same_object_before`)."""
    return unindexed(_EARLIER.c.id) if dialect == "postgresql" else _EARLIER.c.id


def _same_object_before(dialect: str) -> ColumnElement[bool]:
    """The earlier events of the same CRM object, read through ``ix_events_object``. On PostgreSQL their ids are
    compared (and their least taken) as expressions no index serves: otherwise PostgreSQL, before its first ANALYZE,
    rates the source's index ``ix_events_source_id`` (source, id) as good and walks every earlier event of the source,
    for each event. SQLite's planner reads the object's index with the id bound (its entries end in the rowid)."""
    return and_(_EARLIER.c.source == events.c.source, _EARLIER.c.object_type == events.c.object_type,
                _EARLIER.c.object_id == events.c.object_id, _earlier_id(dialect) < events.c.id)


_SET_WAITING = update(events).where(events.c.id == bindparam("event_id")).values(
    status=EventStatus.WAITING, reason=bindparam("waiting_reason"), waits_for_payee=bindparam("waits_for_payee"))


def due_waiting(dialect: str, horizon: datetime, limit: int) -> Select[Any]:
    """Up to ``limit`` waiting events dated up to ``horizon`` before which no event of the same CRM object waits (and
    that do not wait for a payee: :func:`claim_registered_waiting`)."""
    return select(events.c.id, events.c.occurred_at).where(
        events.c.status == EventStatus.WAITING, events.c.occurred_at <= horizon, events.c.waits_for_payee.is_(None),
        ~exists().where(_same_object_before(dialect), _EARLIER.c.status == EventStatus.WAITING),
    ).order_by(events.c.occurred_at, events.c.id).limit(limit)


def claim_due_waiting(conn: Connection, horizon: datetime, limit: int) -> list[Any]:
    """Lock the events of :func:`due_waiting`: ``(id, occurred_at)`` of each."""
    return list(conn.execute(for_update(conn, due_waiting(conn.dialect.name, horizon, limit))).all())


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


def next_ingested(dialect: str, horizon: datetime, limit: int) -> Select[Any]:
    """The next ``limit`` ingested events by id (the columns a calculation reads), each with ``waits_for``: the first
    earlier event of its CRM object that waits, or is ingested and dated after ``horizon``; None when there is
    none."""
    not_due = or_(_EARLIER.c.status == EventStatus.WAITING,
                  and_(_EARLIER.c.status == EventStatus.INGESTED, _EARLIER.c.occurred_at > horizon))
    waits_for = select(func.min(_earlier_id(dialect))).where(_same_object_before(dialect), not_due).scalar_subquery()
    return select(*_CALCULATED_COLUMNS, waits_for.label("waits_for")).where(
        events.c.status == EventStatus.INGESTED).order_by(events.c.id).limit(limit)


_CALCULATED_COLUMNS = [events.c[name] for name in (
    "id", "key", "source", "object_type", "object_id", "transition", "event_type", "occurred_at", "payee_id",
    "partner_id", "amount", "currency", "attributes")]
"""What a calculation reads of an event (not its raw record, status or times of the pipeline)."""


def claim_ingested(conn: Connection, horizon: datetime, limit: int) -> list[Any]:
    """Lock the events of :func:`next_ingested`: the calculate stage's work list. Each row holds ``id, key, source,
    object_type, object_id, transition, event_type, occurred_at, payee_id, partner_id, amount, currency,
    attributes, waits_for``, in that order."""
    return list(conn.execute(for_update(conn, next_ingested(conn.dialect.name, horizon, limit))).all())


def set_waiting(conn: Connection, moves: list[dict[str, Any]]) -> None:
    """Set events waiting: each of ``moves`` has the ``event_id`` and its ``waiting_reason``."""
    if moves:
        conn.execute(_SET_WAITING, moves)
