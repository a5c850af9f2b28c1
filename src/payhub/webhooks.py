"""What webhook deliveries leave in the database: the delivery ids remembered, so that a replay is refused, and the
object ids queued for the next poll of their source (see ``POST /webhooks/<source>`` in docs/api.md).

A delivery id is remembered for :data:`DELIVERY_MEMORY`; older ones are pruned now and then (:class:`Pruner`). An
object id is queued once per source: naming it again while it waits marks it received again, and a poll forgets
an id only as it was when the poll read it (:func:`forget`), so a change announced while the object was being read
is read on the next poll. Every function here works inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, delete, select

from payhub.api import Source
from payhub.clock import utcnow
from payhub.db.queries import dialect_insert, insert_ignore
from payhub.db.schema import webhook_deliveries, webhook_objects
from payhub.pipeline import storable

log = logging.getLogger(__name__)

DELIVERY_MEMORY = timedelta(days=1)
"""How long a delivery id is remembered (and a second delivery with it refused)."""
PRUNE_EVERY = 600.0
"""Seconds between two prunings of the remembered delivery ids in one process."""
DELIVERY_ID_LIMIT = storable.column_limit(webhook_deliveries, "delivery_id")
OBJECT_ID_LIMIT = storable.column_limit(webhook_objects, "object_id")


def receives_webhooks(source: Source) -> bool:
    """Whether ``source``'s class implements :meth:`~payhub.api.Source.webhook`."""
    return type(source).webhook is not Source.webhook


def reads_objects(source: Source) -> bool:
    """Whether ``source``'s class implements :meth:`~payhub.api.Source.read_objects`."""
    return type(source).read_objects is not Source.read_objects


# -------------------------------------------------------------------------------------------------- deliveries


def delivery_key(delivery_id: str) -> str:
    """``delivery_id`` as it is stored: itself, or ``sha256:<hex digest>`` when it is longer than the column or
    holds what a text column cannot (NUL, an unpaired surrogate); the same id always gives the same key."""
    if storable.text_problem(delivery_id, DELIVERY_ID_LIMIT) is None:
        return delivery_id
    return "sha256:" + hashlib.sha256(delivery_id.encode("utf-8", "surrogatepass")).hexdigest()


def remember(conn: Connection, source: str, delivery_id: str, now: datetime) -> bool:
    """Remember delivery ``delivery_id`` of ``source``; False when it is already remembered (a replay).

    On PostgreSQL a concurrent transaction remembering the same id waits for this one, and is refused once this one
    commits."""
    row = {"source": source, "delivery_id": delivery_key(delivery_id), "received_at": now}
    return bool(insert_ignore(conn, webhook_deliveries, [row], ("source", "delivery_id"),
                              webhook_deliveries.c.delivery_id))


def prune(conn: Connection, before: datetime) -> int:
    """Forget the deliveries received before ``before``; return how many."""
    return conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.received_at < before)).rowcount


class Pruner:
    """Prunes the deliveries older than :data:`DELIVERY_MEMORY`, at most once per ``every`` seconds (thread-safe):
    one indexed delete now and then, instead of one per delivery."""

    def __init__(self, every: float = PRUNE_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def maybe(self, engine: Engine) -> int:
        """Prune if it is time; return how many deliveries were forgotten. Errors are logged, never raised: a
        delivery already stored must not fail because housekeeping did."""
        with self._lock:
            now = self.clock()
            if now < self._next:
                return 0
            self._next = now + self.every
        try:
            with engine.begin() as conn:
                return prune(conn, utcnow() - DELIVERY_MEMORY)
        except Exception:  # noqa: BLE001 - tried again at the next interval
            log.warning("pruning the remembered webhook deliveries failed; trying again later", exc_info=True)
            return 0


PRUNER = Pruner()
"""The process's pruner."""


# --------------------------------------------------------------------------------------------- queued objects


@dataclass(frozen=True, slots=True)
class Queued:
    """An object id waiting to be read: its row, the id, and when a webhook last named it."""

    row: int
    object_id: str
    received_at: datetime


def queue(conn: Connection, source: str, object_ids: Sequence[str], now: datetime) -> int:
    """Queue ``object_ids`` of ``source`` for its next poll, each once (an id already waiting is marked received at
    ``now``); return how many distinct ids this queued or marked. Each id must fit the column
    (:data:`OBJECT_ID_LIMIT` characters, storable text)."""
    unique = list(dict.fromkeys(object_ids))
    if not unique:
        return 0
    stmt = dialect_insert(conn, webhook_objects)
    stmt = stmt.on_conflict_do_update(index_elements=["source", "object_id"],
                                      set_={"received_at": stmt.excluded.received_at})
    conn.execute(stmt, [{"source": source, "object_id": object_id, "received_at": now} for object_id in unique])
    return len(unique)


def waiting(conn: Connection, source: str, limit: int) -> list[Queued]:
    """The ``limit`` ids of ``source`` that have waited longest (in the order they were first queued)."""
    query = (select(webhook_objects.c.id, webhook_objects.c.object_id, webhook_objects.c.received_at)
             .where(webhook_objects.c.source == source).order_by(webhook_objects.c.id).limit(limit))
    return [Queued(row, object_id, received_at) for row, object_id, received_at in conn.execute(query)]


def forget(conn: Connection, read: Sequence[Queued]) -> None:
    """Take the ids that were ``read`` off the queue, except those a webhook named again since they were read."""
    if read:
        conn.execute(delete(webhook_objects).where(webhook_objects.c.id == bindparam("row"),
                                                   webhook_objects.c.received_at == bindparam("seen")),
                     [{"row": item.row, "seen": item.received_at} for item in read])


def requeue(conn: Connection, source: str, item: Queued) -> None:
    """Put ``item`` at the back of its source's queue, so that an id whose read keeps failing holds no other up."""
    gone = conn.execute(delete(webhook_objects).where(webhook_objects.c.id == item.row,
                                                      webhook_objects.c.received_at == item.received_at)).rowcount
    if gone:
        insert_ignore(conn, webhook_objects, [{"source": source, "object_id": item.object_id,
                                               "received_at": item.received_at}], ("source", "object_id"))
