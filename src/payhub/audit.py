"""The append-only, hash-chained audit log.

Each entry is written in the same transaction as the change it records. Entry ``n`` stores the SHA-256 of its own
fields plus the hash of entry ``n-1`` (``prev_hash``); the first entry links to 64 zeros. The ``audit_head`` row
holds the last sequence number and hash, and is locked while appending, so entries are strictly ordered even with
several replicas. :func:`verify` recomputes the chain and names the first entry that does not fit: an edited
entry fails its hash, a deleted one leaves a gap (or a head that points past the end), an inserted or reordered
one breaks the link to its predecessor. Someone able to rewrite the whole database can rebuild a consistent
chain; anchor the head elsewhere (``payhub audit verify`` prints it, ``--expect-head`` checks it, and the
``payhub_audit_entry`` hook streams entries off-host).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from payhub.clock import isoformat, utcnow
from payhub.db.schema import audit_head, audit_log

GENESIS = "0" * 64
FIELDS = ("seq", "at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail", "prev_hash")


@dataclass(frozen=True, slots=True)
class Entry:
    """One change to record. ``actor`` is who did it; the writer's ``origin`` says where it ran."""

    action: str
    subject_type: str
    subject_id: str | int
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"
    actor: str | None = None


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return isoformat(value)
    return str(value)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces; Decimals and datetimes become text. Used for hashing and storage."""
    return _ENCODER.encode(value)


def entry_hash(row: dict[str, Any]) -> str:
    """SHA-256 over the entry's fields (``detail`` as stored text) and the previous entry's hash.

    Each field is written as ``<length>:<text>;`` in the order of FIELDS, so no two entries share a payload.
    """
    return _hash([row[name] for name in FIELDS])


def _hash(values: list[Any]) -> str:
    payload = "".join([f"{len(text)}:{text};" for text in map(str, values)])
    return hashlib.sha256(payload.encode()).hexdigest()


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
        seq, prev = conn.execute(query).one()
        at = isoformat(utcnow())
        values = []
        for entry in batch:
            seq += 1
            fields = [seq, at, entry.actor or self.actor, entry.action, entry.subject_type, str(entry.subject_id),
                      entry.outcome, self.origin, canonical_json(entry.detail) if entry.detail else "{}", prev]
            prev = _hash(fields)
            fields.append(prev)
            values.append(fields)
        # Plain text and integers only: handed to the driver's executemany directly (the hot path of every stage).
        conn.exec_driver_sql(_insert_sql(conn), [tuple(v) for v in values])
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))
        return [dict(zip(COLUMNS, v, strict=True)) for v in values]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify`. ``first_bad`` is the sequence number of the first entry that does not fit."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad: int | None = None
    problem: str | None = None


def verify(conn: Connection, progress: Any = None) -> VerifyResult:
    """Recompute the whole chain; stop at the first entry that was edited, deleted, inserted or reordered."""
    head_seq, head_hash = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    expected_seq, prev, checked = 1, GENESIS, 0
    for row in _stream(conn):
        if row["seq"] != expected_seq:
            return VerifyResult(False, checked, head_seq, head_hash, expected_seq,
                                f"entry {expected_seq} is missing (the next entry is {row['seq']})")
        if row["prev_hash"] != prev:
            return VerifyResult(False, checked, head_seq, head_hash, row["seq"],
                                f"entry {row['seq']} does not link to entry {row['seq'] - 1} "
                                "(inserted, reordered, or its predecessor was altered)")
        if entry_hash(row) != row["hash"]:
            return VerifyResult(False, checked, head_seq, head_hash, row["seq"],
                                f"entry {row['seq']} was altered (its content does not match its hash)")
        prev, expected_seq, checked = row["hash"], expected_seq + 1, checked + 1
        if progress is not None:
            progress(1)
    if checked < head_seq:  # the last entries were deleted
        return VerifyResult(False, checked, head_seq, head_hash, checked + 1,
                            f"the log ends at entry {checked} but its head records entry {head_seq}")
    if checked > head_seq:  # entries were added after the head
        return VerifyResult(False, checked, head_seq, head_hash, head_seq + 1,
                            f"the log ends at entry {checked} but its head records entry {head_seq}")
    if prev != head_hash:  # the last entry was rewritten with a new hash (or the head was)
        return VerifyResult(False, checked, head_seq, head_hash, head_seq,
                            f"entry {head_seq} does not match the hash its head records")
    return VerifyResult(True, checked, head_seq, head_hash)


def _stream(conn: Connection) -> Iterator[dict[str, Any]]:
    result = conn.execution_options(yield_per=5000).execute(select(audit_log).order_by(audit_log.c.seq))
    for row in result.mappings():
        yield dict(row)
