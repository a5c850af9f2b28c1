"""The audit store: appending entries to the hash chain, inside the caller's transaction.

The ``audit_head`` row holds the last sequence number and hash and is locked while appending, so entries are strictly
ordered even with several replicas. What an entry holds, how it is hashed and how the chain is verified:
:mod:`payhub.audit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from sqlalchemy import Connection, select

from payhub import metrics
from payhub.audit import FIELDS, AuditHeadDamaged, Entry, canonical_json, hash_fields
from payhub.clock import isoformat, utcnow
from payhub.db.schema import audit_log

COLUMNS = (*FIELDS, "hash")

# The statements of every append, as the driver takes them (paramstyle "qmark" on SQLite, "format" on psycopg).
_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
_INSERT = f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join(['?'] * len(COLUMNS))})"
_MOVE = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"
_PG = {"head": _HEAD + " FOR UPDATE", "insert": _INSERT.replace("?", "%s"), "move": _MOVE.replace("?", "%s")}
_QMARK = {"head": _HEAD, "insert": _INSERT, "move": _MOVE}


def _statements(conn: Connection) -> dict[str, str]:
    if conn.dialect.paramstyle == "qmark":
        return _QMARK
    return _PG if conn.dialect.name == "postgresql" else {**_PG, "head": _HEAD}


class _Rows(Sequence[dict[str, Any]]):
    """The rows an append wrote, as :data:`COLUMNS` dicts made only when read (most transactions never read them);
    equal to, and added like, the list of those dicts."""

    __slots__ = ("_values",)

    def __init__(self, values: list[tuple[Any, ...]]) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [dict(zip(COLUMNS, v, strict=True)) for v in self._values[index]]
        return dict(zip(COLUMNS, self._values[index], strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for v in self._values:
            yield dict(zip(COLUMNS, v, strict=True))

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, _Rows) else other)

    __hash__ = None  # type: ignore[assignment]  # compared by value, like the list it stands for

    def __add__(self, other: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*self, *other]

    def __radd__(self, other: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*other, *self]


class AuditWriter:
    """Appends entries inside the caller's transaction. ``actor`` and ``origin`` are the defaults for entries."""

    def __init__(self, actor: str, origin: str) -> None:
        self.actor = actor
        self.origin = origin

    def append(self, conn: Connection, entries: Iterable[Entry]) -> Sequence[dict[str, Any]]:
        """Write ``entries`` in order, chained after the current head (its row locked until the caller's transaction
        ends); return the rows written (dicts of :data:`COLUMNS`, made when read).

        Three statements whatever the number of entries, handed to the driver as fixed text: the head read (``FOR
        UPDATE`` on PostgreSQL), one ``executemany`` of plain text and integers, the head moved. Each entry's hash
        payload is :func:`payhub.audit.hash_fields`'s.
        """
        batch = entries if isinstance(entries, list) else list(entries)
        if not batch:
            return []
        sql = _statements(conn)
        head = conn.exec_driver_sql(sql["head"]).all()
        if len(head) != 1 or not isinstance(head[0][0], int) or not isinstance(head[0][1], str):
            raise AuditHeadDamaged("the audit head row is missing or damaged; nothing can be recorded until it is "
                                   "repaired (run `payhub audit verify`)")
        seq, prev = head[0]
        at = isoformat(utcnow())
        hashed, encode, default_actor, origin = hash_fields, canonical_json, self.actor, self.origin
        values: list[tuple[Any, ...]] = []
        for entry in batch:
            seq += 1
            fields = (seq, at, entry.actor or default_actor, entry.action, entry.subject_type, str(entry.subject_id),
                      entry.outcome, origin, encode(entry.detail) if entry.detail else "{}", prev)
            prev = hashed(fields)
            values.append(fields + (prev,))
        conn.exec_driver_sql(sql["insert"], values)
        conn.exec_driver_sql(sql["move"], (seq, prev))
        metrics.AUDIT_ENTRIES.inc(len(values))
        return _Rows(values)


def entries_of(conn: Connection, subject_type: str, action: str, subject_ids: Iterable[str]) -> list[tuple[str, str]]:
    """``(subject_id, detail)`` of the entries recording ``action`` on the subjects, in chain order."""
    return [(subject, detail) for subject, detail in conn.execute(
        select(audit_log.c.subject_id, audit_log.c.detail).where(
            audit_log.c.subject_type == subject_type, audit_log.c.action == action,
            audit_log.c.subject_id.in_(list(subject_ids))).order_by(audit_log.c.seq))]
