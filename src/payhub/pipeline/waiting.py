"""Future-dated events wait for their date: nothing is calculated before the day it rewards.

An event dated more than ``ingest.future_tolerance_seconds`` after now is stored ``waiting``, with the reason (by
ingest, audited in its ``event.ingested`` entry), and goes back to ``ingested`` once that time has come (audited
``event.due``); the calculate stage then calculates it like any other. A later event of the same CRM object waits
behind it, so that an object's events are calculated in the order they were ingested (the reversal of a won deal
after the win it takes back). The calculate stage also sets waiting (audited ``event.waiting``) the ingested events
that became early for it: ingested before, under a larger tolerance.

Waiting events are out of the ``ingested`` work list, so the calculate stage reads its next events by ``(status,
id)`` as before, and the due waiting ones by ``(status, occurred_at)``: however many wait, neither reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, func, or_, select, update

from payhub.clock import isoformat
from payhub.db.queries import for_update
from payhub.db.schema import events
from payhub.runtime import Tx
from payhub.states import EventStatus

WAITING = EventStatus.WAITING
TOLERANCE_KEY = "ingest.future_tolerance_seconds"

_earlier = events.alias("earlier")
_SAME_OBJECT_BEFORE = and_(_earlier.c.source == events.c.source, _earlier.c.object_type == events.c.object_type,
                           _earlier.c.object_id == events.c.object_id, _earlier.c.id < events.c.id)
_SET_WAITING = update(events).where(events.c.id == bindparam("event_id")).values(
    status=WAITING, reason=bindparam("waiting_reason"))


def future_reason(occurred_at: datetime, tolerance: timedelta) -> str:
    """Why an event dated ``occurred_at`` waits."""
    return (f"dated {isoformat(occurred_at)}, in the future: waits until {isoformat(occurred_at - tolerance)} (its "
            f"date less {TOLERANCE_KEY} = {tolerance.total_seconds():g})")


def hold_new(row: dict[str, Any], horizon: datetime, tolerance: timedelta) -> None:
    """Make a new ``ingested`` events row dated after ``horizon`` (now plus ``tolerance``) a waiting one."""
    if row["status"] == EventStatus.INGESTED and row["occurred_at"] > horizon:
        row["status"], row["reason"] = WAITING, future_reason(row["occurred_at"], tolerance)


def due_waiting(horizon: datetime, limit: int) -> Select[Any]:
    """Up to ``limit`` waiting events dated up to ``horizon`` before which no event of the same CRM object waits."""
    return select(events.c.id, events.c.occurred_at).where(
        events.c.status == WAITING, events.c.occurred_at <= horizon,
        ~exists().where(_SAME_OBJECT_BEFORE, _earlier.c.status == WAITING),
    ).order_by(events.c.occurred_at, events.c.id).limit(limit)


def release_due(tx: Tx, horizon: datetime, limit: int) -> int:
    """Move up to ``limit`` waiting events whose time has come, and before which no event of the same CRM object
    waits, back to ingested; return how many."""
    rows = tx.conn.execute(for_update(tx.conn, due_waiting(horizon, limit))).all()
    if rows:
        tx.conn.execute(update(events).where(events.c.id.in_([row.id for row in rows]))
                        .values(status=EventStatus.INGESTED, reason=None))
    for event_id, occurred_at in rows:
        tx.audit("event.due", "event", event_id, {"occurred_at": isoformat(occurred_at)})
    return len(rows)


def next_ingested(horizon: datetime, limit: int) -> Select[Any]:
    """The next ``limit`` ingested events by id, each with ``waits_for``: the first earlier event of its CRM object
    that waits, or is ingested and dated after ``horizon``; None when there is none."""
    not_due = or_(_earlier.c.status == WAITING,
                  and_(_earlier.c.status == EventStatus.INGESTED, _earlier.c.occurred_at > horizon))
    waits_for = select(func.min(_earlier.c.id)).where(_SAME_OBJECT_BEFORE, not_due).scalar_subquery()
    return select(events, waits_for.label("waits_for")).where(events.c.status == EventStatus.INGESTED).order_by(
        events.c.id).limit(limit)


def hold(tx: Tx, rows: Sequence[Any], horizon: datetime, tolerance: timedelta) -> list[Any]:
    """Set waiting the ``rows`` (of :func:`next_ingested`) dated after ``horizon`` or behind an earlier event of
    their CRM object; return the others, due now."""
    due: list[Any] = []
    moves: list[dict[str, Any]] = []
    for row in rows:
        if row.occurred_at > horizon:
            reason = future_reason(row.occurred_at, tolerance)
            detail: dict[str, Any] = {"due_at": isoformat(row.occurred_at - tolerance)}
        elif row.waits_for is not None:
            reason = (f"waits for event {row.waits_for} of the same {row.object_type} {row.object_id}, which waits: "
                      "the events of a CRM object are calculated in the order they were ingested")
            detail = {"after_event": row.waits_for}
        else:
            due.append(row)
            continue
        moves.append({"event_id": row.id, "waiting_reason": reason})
        tx.audit("event.waiting", "event", row.id, {"occurred_at": isoformat(row.occurred_at), **detail,
                                                     "reason": reason})
    if moves:
        tx.conn.execute(_SET_WAITING, moves)
    return due
