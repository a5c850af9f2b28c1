"""Future-dated events wait for their date: nothing is calculated before the day it rewards.

An event dated more than ``ingest.future_tolerance_seconds`` after now is stored ``waiting``, with the reason (by
ingest, audited in its ``event.ingested`` entry), and goes back to ``ingested`` once that time has come (audited
``event.due``); the calculate stage then calculates it like any other. A later event of the same CRM object waits
behind it, so that an object's events are calculated in the order they were ingested (the reversal of a won deal
after the win it takes back). The calculate stage also sets waiting (audited ``event.waiting``) the ingested events
that became early for it: ingested before, under a larger tolerance.

While flag caps are configured (``[compliance.gifts] flag_caps``), an event a program would reward a payee who is not
in the payees registry waits too (audited ``event.waiting`` with the ``payee``): the caps need the payee's flags,
and a reward is never calculated without them. It records the payee (``waits_for_payee``) and goes back to
``ingested`` (audited ``event.due``) once the payees registry has that payee; its programs calculated already keep
their results, the others run then. The later events of its CRM object wait behind it.

Waiting events are out of the ``ingested`` work list, so the calculate stage reads its next events by ``(status,
id)`` as before, and the due waiting ones by ``(status, occurred_at)``: however many wait, neither reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from payhub.clock import isoformat
from payhub.runtime import Tx
from payhub.states import EventStatus
from payhub.store import events as event_store

WAITING = EventStatus.WAITING
TOLERANCE_KEY = "ingest.future_tolerance_seconds"

def future_reason(occurred_at: datetime, tolerance: timedelta) -> str:
    """Why an event dated ``occurred_at`` waits."""
    return (f"dated {isoformat(occurred_at)}, in the future: waits until {isoformat(occurred_at - tolerance)} (its "
            f"date less {TOLERANCE_KEY} = {tolerance.total_seconds():g})")


def hold_new(row: dict[str, Any], horizon: datetime, tolerance: timedelta) -> None:
    """Make a new ``ingested`` events row dated after ``horizon`` (now plus ``tolerance``) a waiting one."""
    if row["status"] == EventStatus.INGESTED and row["occurred_at"] > horizon:
        row["status"], row["reason"] = WAITING, future_reason(row["occurred_at"], tolerance)


def release_due(tx: Tx, horizon: datetime, limit: int) -> int:
    """Move up to ``limit`` waiting events whose time has come, and before which no event of the same CRM object
    waits, back to ingested; return how many."""
    rows = event_store.claim_due_waiting(tx.conn, horizon, limit)
    event_store.release_waiting(tx.conn, [row.id for row in rows])
    for event_id, occurred_at in rows:
        tx.audit("event.due", "event", event_id, {"occurred_at": isoformat(occurred_at)})
    return len(rows)


def payee_reason(payee_id: str, program: str) -> str:
    """Why an event waits for its payee to be registered."""
    return (f"payee {payee_id} is not in the payees registry; flag caps (compliance.gifts.flag_caps) need its flags "
            f"to calculate program {program}: the event waits until the payee is registered")


def behind_reason(row: Any, event_id: int) -> str:
    """Why an event waits behind the waiting event ``event_id`` of its CRM object."""
    return (f"waits for event {event_id} of the same {row.object_type} {row.object_id}, which waits: the events of "
            "a CRM object are calculated in the order they were ingested")


def hold_for_payees(tx: Tx, waits: Sequence[tuple[Any, str | None, int | None, str]]) -> None:
    """Set waiting the events of ``waits``: ``(row, payee, after_event, reason)``, each waiting for a payee to be
    registered (``payee``) or behind an earlier event of its CRM object that does (``after_event``)."""
    moves: list[dict[str, Any]] = []
    for row, payee, after, reason in waits:
        moves.append({"event_id": row.id, "waiting_reason": reason, "waits_for_payee": payee})
        detail: dict[str, Any] = {"payee": payee} if payee is not None else {"after_event": after}
        tx.audit("event.waiting", "event", row.id, {"occurred_at": isoformat(row.occurred_at), **detail,
                                                    "reason": reason})
    event_store.set_waiting(tx.conn, moves)


def release_registered(tx: Tx, limit: int) -> int:
    """Move up to ``limit`` events waiting for a payee that the registry now has back to ingested; return how
    many."""
    rows = event_store.claim_registered_waiting(tx.conn, limit)
    event_store.release_waiting(tx.conn, [row.id for row in rows])
    for event_id, payee_id in rows:
        tx.audit("event.due", "event", event_id, {"payee": payee_id, "reason": f"payee {payee_id} is registered"})
    return len(rows)


def hold(tx: Tx, rows: Sequence[Any], horizon: datetime, tolerance: timedelta) -> list[Any]:
    """Set waiting the ``rows`` (of :func:`payhub.store.events.claim_ingested`) dated after ``horizon`` or behind an
    earlier event of their CRM object; return the others, due now."""
    due: list[Any] = []
    moves: list[dict[str, Any]] = []
    for row in rows:
        if row.occurred_at > horizon:
            reason = future_reason(row.occurred_at, tolerance)
            detail: dict[str, Any] = {"due_at": isoformat(row.occurred_at - tolerance)}
        elif row.waits_for is not None:
            reason = behind_reason(row, row.waits_for)
            detail = {"after_event": row.waits_for}
        else:
            due.append(row)
            continue
        moves.append({"event_id": row.id, "waiting_reason": reason, "waits_for_payee": None})
        tx.audit("event.waiting", "event", row.id, {"occurred_at": isoformat(row.occurred_at), **detail,
                                                     "reason": reason})
    event_store.set_waiting(tx.conn, moves)
    return due
