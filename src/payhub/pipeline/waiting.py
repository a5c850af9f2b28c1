"""Future-dated events wait for their date: nothing is calculated before the day it rewards.

An ``ingested`` event dated more than ``ingest.future_tolerance_seconds`` after now is moved to ``waiting``, with
the reason, and back to ``ingested`` once that time has come; the calculate stage then calculates it like any
other. A later event of the same CRM object waits behind it, so that an object's events are calculated in the order
they were ingested (the reversal of a won deal after the win it takes back). Each move is audited: ``event.waiting``
and ``event.due``.

Both moves select their rows through the ``(status, occurred_at)`` index, a bounded number per batch, so however
many events wait, finding the due ones reads none of the others.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, exists, func, or_, select, update

from payhub.clock import isoformat
from payhub.db.queries import for_update
from payhub.db.schema import events
from payhub.runtime import Tx

WAITING = "waiting"
TOLERANCE_KEY = "ingest.future_tolerance_seconds"

_earlier = events.alias("earlier")
_SET_WAITING = update(events).where(events.c.id == bindparam("event_id")).values(
    status=WAITING, reason=bindparam("waiting_reason"))
_SAME_OBJECT_BEFORE = and_(_earlier.c.source == events.c.source, _earlier.c.object_type == events.c.object_type,
                           _earlier.c.object_id == events.c.object_id, _earlier.c.id < events.c.id)


def hold_future(tx: Tx, horizon: datetime, tolerance: timedelta, limit: int) -> int:
    """Move up to ``limit`` ingested events dated after ``horizon`` (now plus ``tolerance``) to waiting; return how
    many."""
    rows = tx.conn.execute(for_update(tx.conn, select(events.c.id, events.c.occurred_at).where(
        events.c.status == "ingested", events.c.occurred_at > horizon,
    ).order_by(events.c.occurred_at, events.c.id).limit(limit))).all()
    seconds = f"{tolerance.total_seconds():g}"
    moves: list[dict[str, Any]] = []
    for event_id, occurred_at in rows:
        due = occurred_at - tolerance
        reason = (f"dated {isoformat(occurred_at)}, in the future: waits until {isoformat(due)} (its date less "
                  f"{TOLERANCE_KEY} = {seconds})")
        moves.append({"event_id": event_id, "waiting_reason": reason})
        tx.audit("event.waiting", "event", event_id, {"occurred_at": isoformat(occurred_at), "due_at": isoformat(due),
                                                       "reason": reason})
    if moves:
        tx.conn.execute(_SET_WAITING, moves)
    return len(rows)


def release_due(tx: Tx, horizon: datetime, limit: int) -> int:
    """Move up to ``limit`` waiting events whose time has come, and before which no event of the same CRM object
    waits, back to ingested; return how many."""
    rows = tx.conn.execute(for_update(tx.conn, select(events.c.id, events.c.occurred_at).where(
        events.c.status == WAITING, events.c.occurred_at <= horizon,
        ~exists().where(_SAME_OBJECT_BEFORE, _earlier.c.status == WAITING),
    ).order_by(events.c.occurred_at, events.c.id).limit(limit))).all()
    if rows:
        tx.conn.execute(update(events).where(events.c.id.in_([row.id for row in rows]))
                        .values(status="ingested", reason=None))
    for event_id, occurred_at in rows:
        tx.audit("event.due", "event", event_id, {"occurred_at": isoformat(occurred_at)})
    return len(rows)


def due_ingested(horizon: datetime, limit: int) -> Select[Any]:
    """The next ``limit`` ingested events dated up to ``horizon``, by id, each with ``waits_for``: the first earlier
    event of its CRM object that waits (or is ingested and dated after ``horizon``), None when there is none."""
    waits_for = select(func.min(_earlier.c.id)).where(_SAME_OBJECT_BEFORE, _not_due(horizon)).scalar_subquery()
    return select(events, waits_for.label("waits_for")).where(
        events.c.status == "ingested", events.c.occurred_at <= horizon).order_by(events.c.id).limit(limit)


def _not_due(horizon: datetime) -> ColumnElement[bool]:
    return or_(_earlier.c.status == WAITING, and_(_earlier.c.status == "ingested", _earlier.c.occurred_at > horizon))


def hold_behind(tx: Tx, rows: list[Any]) -> None:
    """Move ``rows`` (of :func:`due_ingested`, each with ``waits_for``) to waiting behind that earlier event."""
    moves: list[dict[str, Any]] = []
    for row in rows:
        reason = (f"waits for event {row.waits_for} of the same {row.object_type} {row.object_id}, which waits: the "
                  "events of a CRM object are calculated in the order they were ingested")
        moves.append({"event_id": row.id, "waiting_reason": reason})
        tx.audit("event.waiting", "event", row.id, {"occurred_at": isoformat(row.occurred_at),
                                                     "after_event": row.waits_for, "reason": reason})
    if moves:
        tx.conn.execute(_SET_WAITING, moves)
