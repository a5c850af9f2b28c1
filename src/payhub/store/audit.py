"""The audit store: appending entries to the hash chain, inside the caller's transaction.

The ``audit_head`` row holds the last sequence number and hash and is locked while appending, so entries are strictly
ordered even with several replicas. What an entry holds, how it is hashed and how the chain is verified:
:mod:`payhub.audit`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select, update

from payhub import metrics
from payhub.audit import FIELDS, AuditHeadDamaged, Entry, canonical_json, hash_fields
from payhub.clock import isoformat, utcnow
from payhub.db.schema import audit_head, audit_log

COLUMNS = (*FIELDS, "hash")


def _insert_sql(conn: Connection) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))})"


class AuditWriter:
    """Appends entries inside the caller's transaction. ``actor`` and ``origin`` are the defaults for entries."""

    def __init__(self, actor: str, origin: str) -> None:
        self.actor = actor
        self.origin = origin

    def append(self, conn: Connection, entries: Iterable[Entry]) -> list[dict[str, Any]]:
        """Write ``entries`` in order, chained after the current head; return the rows written."""
        batch = list(entries)
        if not batch:
            return []
        query = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        head = conn.execute(query).all()
        if len(head) != 1 or not isinstance(head[0].seq, int) or not isinstance(head[0].hash, str):
            raise AuditHeadDamaged("the audit head row is missing or damaged; nothing can be recorded until it is "
                                   "repaired (run `payhub audit verify`)")
        seq, prev = head[0]
        at = isoformat(utcnow())
        values = []
        for entry in batch:
            seq += 1
            fields = [seq, at, entry.actor or self.actor, entry.action, entry.subject_type, str(entry.subject_id),
                      entry.outcome, self.origin, canonical_json(entry.detail) if entry.detail else "{}", prev]
            prev = hash_fields(fields)
            fields.append(prev)
            values.append(fields)
        # Plain text and integers only: handed to the driver's executemany directly (the hot path of every stage).
        conn.exec_driver_sql(_insert_sql(conn), [tuple(v) for v in values])
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))
        metrics.AUDIT_ENTRIES.inc(len(values))
        return [dict(zip(COLUMNS, v, strict=True)) for v in values]


def entries_of(conn: Connection, subject_type: str, action: str, subject_ids: Iterable[str]) -> list[tuple[str, str]]:
    """``(subject_id, detail)`` of the entries recording ``action`` on the subjects, in chain order."""
    return [(subject, detail) for subject, detail in conn.execute(
        select(audit_log.c.subject_id, audit_log.c.detail).where(
            audit_log.c.subject_type == subject_type, audit_log.c.action == action,
            audit_log.c.subject_id.in_(list(subject_ids))).order_by(audit_log.c.seq))]
