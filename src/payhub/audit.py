"""The append-only, hash-chained audit log: what an entry holds, its hash, and the verification of the chain.

Each entry is written in the same transaction as the change it records (by :class:`payhub.store.audit.AuditWriter`).
Entry ``n`` stores the SHA-256 of its own fields plus the hash of entry ``n-1`` (``prev_hash``); the first entry
links to 64 zeros. The ``audit_head`` row holds the last sequence number and hash, and is locked while appending,
so entries are strictly ordered even with several replicas. :func:`verify` recomputes the chain and names the first
entry that does not fit: an edited entry fails its hash, a deleted one leaves a gap (or a head that points past the
end), an inserted or reordered one breaks the link to its predecessor, an entry past the head or a damaged head row
is named as such. Someone able to rewrite the whole database can rebuild a consistent chain, or cut its end and
move the head back: signed checkpoints (:mod:`payhub.checkpoints`), made with a key that is not in the database,
catch both.

After a retention cut (``payhub retention apply``, :mod:`payhub.compliance.retention`) the entries up to the cut's
``seq`` live in an archive file, and the ``audit_cut`` row records that ``seq`` and its hash, signed with the
checkpoint key: the chain then starts at entry ``seq + 1``, linked to that hash. The signature is checked by
:func:`payhub.checkpoints.cut_problem`; a log that starts after entry 1 without a cut row fails.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError

from payhub.clock import isoformat
from payhub.db.schema import audit_cut, audit_head, audit_log
from payhub.errors import PayhubError

GENESIS = "0" * 64
CUT_DOMAIN = "payhub audit cut v1"
FIELDS = ("seq", "at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail", "prev_hash")


class AuditHeadDamaged(PayhubError):
    """The head row cannot be appended to: missing, doubled or not a number (changed outside payhub)."""


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
    return hash_fields([row[name] for name in FIELDS])


def hash_fields(values: list[Any]) -> str:
    """SHA-256 over ``values`` (an entry's FIELDS, in order): each written as ``<length>:<text>;``."""
    payload = "".join([f"{len(text)}:{text};" for text in map(str, values)])
    return hashlib.sha256(payload.encode()).hexdigest()


HEX_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Cut:
    """A retention cut: entries 1..``seq`` were archived to ``archive`` (whose SHA-256 is ``archive_sha256``) and
    deleted; entry ``seq`` had hash ``hash``. ``top_payout`` / ``top_reward``: the highest payout and reward ids
    some of whose entries this cut or an earlier one archived (0: none). ``signature`` is the checkpoint key's
    (``key_id``) over :meth:`message`, which covers every other field."""

    seq: int
    hash: str
    at: str
    archive: str
    archive_sha256: str
    key_id: str
    signature: str
    top_payout: int = 0
    top_reward: int = 0

    def message(self) -> bytes:
        """The signed bytes: a domain tag, then seq, hash, time, archive name, its SHA-256, the highest archived
        payout and reward ids, and the key id."""
        return (f"{CUT_DOMAIN}\n{self.seq}\n{self.hash}\n{self.at}\n{self.archive}\n{self.archive_sha256}\n"
                f"{self.top_payout}\n{self.top_reward}\n{self.key_id}\n").encode()

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "archive": self.archive,
                "archive_sha256": self.archive_sha256, "top_payout": self.top_payout, "top_reward": self.top_reward,
                "key_id": self.key_id, "signature": self.signature}

    def archived_ids(self) -> dict[str, int]:
        """The highest ``payout`` and ``reward`` ids some of whose entries are archived (signed with the cut)."""
        return {"payout": self.top_payout, "reward": self.top_reward}


def read_cut(conn: Connection) -> Cut | None | str:
    """The retention cut, None when the log was never cut, or why the ``audit_cut`` table is not usable."""
    try:
        with conn.begin_nested():
            rows = conn.execute(select(audit_cut)).mappings().all()
    except DBAPIError as exc:
        return f"the retention cut cannot be read ({_db_reason(exc)})"
    if not rows:
        return None
    if len(rows) > 1 or rows[0]["id"] != 1:
        return f"the audit_cut table holds {len(rows)} row(s) instead of one row with id 1"
    row = rows[0]
    seq, digest, at = row["seq"], row["hash"], row["at"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return f"the retention cut's sequence number {seq!r} is not a positive whole number"
    if not isinstance(digest, str) or not HEX_HASH.fullmatch(digest):
        return f"the retention cut's hash {digest!r} is not a SHA-256 hex digest"
    if not isinstance(at, datetime):
        return "the retention cut's time is missing"
    tops = row["top_payout"], row["top_reward"]
    if not all(isinstance(top, int) and not isinstance(top, bool) and top >= 0 for top in tops):
        return f"the retention cut's highest archived ids {tops!r} are not whole numbers"
    return Cut(seq, digest, isoformat(at), str(row["archive"]), str(row["archive_sha256"]), str(row["key_id"]),
               str(row["signature"]), *tops)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify`.

    ``checked`` entries fit, from entry ``first`` (1, or the entry after the retention ``cut``); ``first_bad`` is
    the sequence number of the first that does not (None when the problem is the head row itself). ``head_seq`` /
    ``head_hash`` are what the head row records (None when it cannot be read). ``hashes`` holds the recomputed hash
    of each watched entry among those that fit.
    """

    ok: bool
    checked: int
    head_seq: int | None
    head_hash: str | None
    first_bad: int | None = None
    problem: str | None = None
    hashes: dict[int, str] = field(default_factory=dict)
    cut: Cut | None = None
    first: int = 1

    @property
    def last(self) -> int:
        """The sequence number of the last entry that fits (``first - 1`` when none does)."""
        return self.first + self.checked - 1


def read_head(conn: Connection) -> tuple[int, str] | str:
    """The head's (seq, hash), or why the head row is not usable (missing, doubled, non-integer, not a hash)."""
    try:
        with conn.begin_nested():  # a savepoint: on PostgreSQL a failed read must not abort the caller's transaction
            rows = conn.execute(select(audit_head.c.id, audit_head.c.seq, audit_head.c.hash)).all()
    except DBAPIError as exc:
        return f"the audit head cannot be read ({_db_reason(exc)})"
    if not rows:
        return "the audit head row is missing (deleted outside payhub)"
    if len(rows) > 1 or rows[0].id != 1:
        return f"the audit head table holds {len(rows)} row(s) with ids {sorted(map(str, (r.id for r in rows)))} " \
               "instead of one row with id 1"
    seq, digest = rows[0].seq, rows[0].hash
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return f"the audit head's sequence number {seq!r} is not a whole number"
    if not isinstance(digest, str) or not HEX_HASH.fullmatch(digest):
        return f"the audit head's hash {digest!r} is not a SHA-256 hex digest"
    return seq, digest


class _Chain:
    """Checks rows one by one against the chain they must continue: ``seq`` next, linked to ``prev``."""

    def __init__(self, seq: int, prev: str) -> None:
        self.expected, self.prev = seq, prev

    def problem(self, row: dict[str, Any]) -> tuple[int, str] | None:
        """(first bad seq, why) if ``row`` does not continue the chain; else advance past it."""
        seq = row["seq"]
        if seq != self.expected:
            return self.expected, f"entry {self.expected} is missing (the next entry is {seq})"
        if row["prev_hash"] != self.prev:
            return seq, (f"entry {seq} does not link to entry {seq - 1} "
                         "(inserted, reordered, or its predecessor was altered)")
        if entry_hash(row) != row["hash"]:
            return seq, f"entry {seq} was altered (its content does not match its hash)"
        self.prev, self.expected = row["hash"], seq + 1
        return None


def verify(conn: Connection, progress: Callable[[int], Any] | None = None, *, watch: Collection[int] = (),
           on_entry: Callable[[dict[str, Any]], Any] | None = None) -> VerifyResult:
    """Recompute the whole chain and check it ends at its head; name the first entry edited, deleted, inserted or
    reordered, an entry past the head, or a damaged head row. Never raises for damaged data.

    ``watch``: sequence numbers whose recomputed hashes to return (signed checkpoints). ``on_entry`` sees every row
    read, including those after a failure (the log is then read to its end). After a retention cut the chain starts
    at the cut (whose signature the caller checks, :func:`payhub.checkpoints.cut_problem`).
    """
    head = read_head(conn)
    cut = read_cut(conn)
    first, prev = (cut.seq + 1, cut.hash) if isinstance(cut, Cut) else (1, GENESIS)
    chain, checked, hashes = _Chain(first, prev), 0, {}
    bad: tuple[int | None, str] | None = (None, cut) if isinstance(cut, str) else None
    try:
        for row in _stream(conn):
            if on_entry is not None:
                on_entry(row)
            if progress is not None:
                progress(1)
            if bad is not None:
                continue
            found = chain.problem(row)
            if found is not None:
                if found[0] == 1 and cut is None:
                    found = 1, (f"{found[1]}, and no retention cut records the entries before {row['seq']} as "
                                "archived (deleted outside payhub, or the audit_cut row was deleted)")
                bad = found
                if on_entry is None:
                    break
                continue
            checked += 1
            if row["seq"] in watch:
                hashes[row["seq"]] = row["hash"]
    except DBAPIError as exc:
        last = first + checked - 1
        bad = bad or (last + 1, f"the audit log cannot be read past entry {last} ({_db_reason(exc)})")
    head_seq, head_hash = head if isinstance(head, tuple) else (None, None)
    last = first + checked - 1
    kept = cut if isinstance(cut, Cut) else None
    if bad is None:
        if isinstance(head, str):
            bad = None, head
        elif last < head[0]:  # the last entries were deleted
            bad = last + 1, f"the log ends at entry {last} but its head records entry {head[0]}"
        elif last > head[0]:  # entries were added after the head, or the head was moved back
            bad = head[0] + 1, (f"the log ends at entry {last} but its head records entry {head[0]} (entries past "
                                "the head were added outside payhub, or the head was moved back)")
        elif chain.prev != head[1]:  # the last entry was rewritten with a new hash (or the head was)
            bad = head[0], f"entry {head[0]} does not match the hash its head records"
    if bad is not None:
        return VerifyResult(False, checked, head_seq, head_hash, bad[0], bad[1], hashes, kept, first)
    return VerifyResult(True, checked, head_seq, head_hash, hashes=hashes, cut=kept, first=first)


def verify_since(conn: Connection, seq: int, digest: str, upto: int) -> str | None:
    """Why entries ``seq``..``upto`` do not continue a chain whose entry ``seq`` had hash ``digest``, or None.

    Used before signing a checkpoint: only the entries appended since the previous checkpoint are read. When a
    retention cut lies at or after ``seq``, the entries from the cut on are read instead (the archive holds the
    others); a checkpoint of the cut's own entry must match the cut's hash. The cut's signature is the caller's.
    """
    if upto < seq:
        return f"the log's head is entry {upto}, before entry {seq} recorded earlier (the log was cut back)"
    cut = read_cut(conn)
    if isinstance(cut, str):
        return cut
    from_cut = cut is not None and seq <= cut.seq
    if cut is not None and from_cut:
        if seq == cut.seq and digest != cut.hash:
            return f"entry {seq} was recorded with hash {digest}, but the retention cut records {cut.hash}"
        seq, digest = cut.seq, cut.hash
    query = select(audit_log).where(audit_log.c.seq >= (seq + 1 if from_cut else seq), audit_log.c.seq <= upto
                                    ).order_by(audit_log.c.seq)
    chain = _Chain(seq + 1, digest)
    try:
        rows = iter(dict(r) for r in conn.execute(query.execution_options(yield_per=5000)).mappings())
        if not from_cut:
            first = next(rows, None)
            if first is None or first["seq"] != seq:
                return f"entry {seq} recorded earlier is missing"
            if first["hash"] != digest or entry_hash(first) != digest:
                return f"entry {seq} no longer has the hash recorded earlier (the chain was rewritten)"
        for row in rows:
            found = chain.problem(row)
            if found is not None:
                return found[1]
    except DBAPIError as exc:
        return f"the audit log cannot be read ({_db_reason(exc)})"
    if chain.expected != upto + 1:
        return f"the log ends at entry {chain.expected - 1} but its head records entry {upto}"
    return None


def _db_reason(exc: DBAPIError) -> str:
    return str(exc.orig or exc).strip().splitlines()[0]


def _stream(conn: Connection) -> Iterator[dict[str, Any]]:
    # Options of the statement, not of ``conn``: a streaming connection would send its later statements (a
    # savepoint, on PostgreSQL) through a server-side cursor too.
    result = conn.execute(select(audit_log).order_by(audit_log.c.seq).execution_options(yield_per=5000))
    for row in result.mappings():
        yield dict(row)
