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

import bisect
import contextlib
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Collection, Generator, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from payhub.clock import isoformat
from payhub.db.schema import audit_cut, audit_head
from payhub.errors import PayhubError

if TYPE_CHECKING:
    from concurrent.futures import Future

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
    return hash_fields(tuple([row[name] for name in FIELDS]))


def hash_fields(values: Sequence[Any]) -> str:
    """SHA-256 over ``values``: an entry's FIELDS in order (a tuple or list), or a row of :data:`ENTRY_COLUMNS`
    whose last item, the entry's own hash, is left out. Each field's ``str`` is written as ``<length>:<text>;``.
    The one definition of the hash payload: the writer, :func:`verify` and :func:`entry_hash` all hash through it.
    When every field but ``seq`` is already text (what payhub stores) the payload is built in one step; the bytes
    are the same."""
    if len(values) == len(FIELDS):
        seq, at, actor, action, stype, sid, outcome, origin, detail, prev = values
    else:  # a row read with its hash (no copy of the row is made: verify hashes millions)
        seq, at, actor, action, stype, sid, outcome, origin, detail, prev, _ = values
    if type(at) is type(actor) is type(action) is type(stype) is type(sid) is type(outcome) is type(origin) \
            is type(detail) is type(prev) is str:
        number = str(seq)
        payload = (f"{len(number)}:{number};{len(at)}:{at};{len(actor)}:{actor};{len(action)}:{action};"
                   f"{len(stype)}:{stype};{len(sid)}:{sid};{len(outcome)}:{outcome};{len(origin)}:{origin};"
                   f"{len(detail)}:{detail};{len(prev)}:{prev};")
    else:
        payload = "".join([f"{len(text)}:{text};" for text in map(str, values[:len(FIELDS)])])
    return sha256(payload.encode()).hexdigest()


class _Lengths(dict[int, str]):
    """``n`` → ``"n:"``, kept for lengths below 4096 (so the table stays small whatever the log holds)."""

    def __missing__(self, length: int) -> str:
        text = f"{length}:"
        if length < 4096:
            self[length] = text
        return text


_LENGTH = _Lengths()
_PLAIN = frozenset((int, str))


def hash_rows(rows: Sequence[Sequence[Any]]) -> list[str] | None:
    """:func:`hash_fields` of each of ``rows`` (read with their hash, as :func:`read_entries` gives them), the same
    payload rule built in one comprehension for a chunk; None when a row holds a value other than text (``seq``
    aside), for which the caller hashes row by row."""
    if not set(map(type, itertools.chain.from_iterable(rows))) <= _PLAIN:
        return None
    n = _LENGTH
    try:  # len() of a number raises: such a chunk is hashed row by row
        return [sha256(f"{n[len(str(s))]}{s};{n[len(a)]}{a};{n[len(b)]}{b};{n[len(c)]}{c};{n[len(d)]}{d};"
                       f"{n[len(e)]}{e};{n[len(f)]}{f};{n[len(g)]}{g};{n[len(h)]}{h};{n[len(p)]}{p};".encode()
                       ).hexdigest()
                for s, a, b, c, d, e, f, g, h, p, _ in rows]
    except TypeError:
        return None


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


ENTRY_COLUMNS = (*FIELDS, "hash")
"""The columns :func:`read_entries` gives, in order: the hashed FIELDS, then the entry's own hash."""

CHUNK = 5000
"""Entries read from the database at a time while verifying."""

MAX_ID_DIGITS = 18
"""Subject ids longer than this are not ids of rows (64-bit integers): :func:`verify`'s ``top_ids`` skips them."""

_SELECT = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_log"
_cursors = itertools.count(1)


def read_entries(conn: Connection, *, first: int | None = None, last: int | None = None, chunk: int = CHUNK
                 ) -> Generator[list[tuple[Any, ...]], None, None]:
    """The entries with ``first <= seq <= last`` (bounds optional) in ``seq`` order, as raw column tuples
    (:data:`ENTRY_COLUMNS`, the values the driver gives) in lists of at most ``chunk``: see :func:`driver_chunks`."""
    where = [f"seq >= {int(first)}"] if first is not None else []
    where += [f"seq <= {int(last)}"] if last is not None else []
    return driver_chunks(conn, f"{_SELECT}{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY seq", None,
                         chunk)


def driver_chunks(conn: Connection, sql: str, params: Any, chunk: int
                  ) -> Generator[list[tuple[Any, ...]], None, None]:
    """The rows of the query ``sql`` (in the driver's paramstyle, with ``params``) as the driver's tuples, in lists
    of at most ``chunk``.

    One statement, read from one snapshot through the DBAPI cursor (a server-side cursor on PostgreSQL), so memory
    does not grow with the result and no SQLAlchemy row is built. Runs inside ``conn``'s transaction (begun if none
    is); a driver error is raised as :class:`sqlalchemy.exc.DBAPIError`. Close the generator early to close the
    cursor.
    """
    if not conn.in_transaction():
        conn.begin()
    base = conn.dialect.loaded_dbapi.Error
    try:
        driver: Any = conn.connection.driver_connection
        if conn.dialect.name == "postgresql":
            cursor = driver.cursor(name=f"payhub_audit_read_{next(_cursors)}")
            cursor.itersize = chunk
        else:
            cursor = driver.cursor()
            cursor.arraysize = chunk
    except base as exc:
        raise DBAPIError.instance(sql, params, exc, base) from exc
    try:
        try:
            cursor.execute(sql, params if params is not None else ())
            while rows := cursor.fetchmany(chunk):
                yield rows
        except base as exc:
            raise DBAPIError.instance(sql, params, exc, base) from exc
    finally:
        with contextlib.suppress(Exception):  # a failed transaction may refuse to close the cursor: it goes with it
            cursor.close()


_link_of, _hash_of, _seq_of = itemgetter(9), itemgetter(10), itemgetter(0)


def _fits(rows: list[tuple[Any, ...]], expected: int, prev: str) -> bool:
    """Whether every row of ``rows`` fits the chain (entry ``expected`` next, linked to ``prev``), found without a
    call per row: the sequence numbers, links and hashes (:func:`hash_rows`) of the chunk are compared as lists.
    False means "not shown here": :func:`_check` then decides, row by row, and names the problem."""
    if not rows:
        return False
    digests = list(map(_hash_of, rows))
    if list(map(_seq_of, rows)) != list(range(expected, expected + len(rows))):
        return False
    links = list(map(_link_of, rows))
    return links[0] == prev and links[1:] == digests[:-1] and hash_rows(rows) == digests


def _check(rows: list[tuple[Any, ...]], expected: int, prev: str) -> tuple[int, str, tuple[int, str] | None]:
    """Check ``rows`` (raw :data:`ENTRY_COLUMNS` tuples) against the chain they must continue: entry ``expected``
    next, linked to ``prev``. Returns how many rows fit, the hash of the last that fits (``prev`` when none), and the
    first problem: (bad seq, why), or None.

    Each hash is :func:`hash_fields`'s over the row, so the result is :func:`entry_hash`'s.
    """
    if _fits(rows, expected, prev):
        return len(rows), rows[-1][10], None
    hashed, start = hash_fields, expected
    for row in rows:
        seq, link, digest = row[0], row[9], row[10]
        if seq != expected:
            return expected - start, prev, (expected, f"entry {expected} is missing (the next entry is {seq})")
        if link != prev:
            return expected - start, prev, (seq, f"entry {seq} does not link to entry {seq - 1} "
                                                 "(inserted, reordered, or its predecessor was altered)")
        fits = hashed(row) == digest
        if not fits:
            return expected - start, prev, (seq, f"entry {seq} was altered (its content does not match its hash)")
        prev, expected = digest, expected + 1
    return expected - start, prev, None


def _top_ids(rows: list[tuple[Any, ...]], tops: MutableMapping[str, int]) -> None:
    """Raise ``tops[subject_type]`` to the highest whole-number subject id (up to 18 digits) of ``rows``."""
    for row in rows:
        kind = row[4]
        if kind in tops:
            subject = row[5]
            if isinstance(subject, str) and subject.isascii() and subject.isdigit() and len(subject) <= MAX_ID_DIGITS:
                number = int(subject)
                if number > tops[kind]:
                    tops[kind] = number


def verify(conn: Connection, progress: Callable[[int], Any] | None = None, *, watch: Collection[int] = (),
           on_entry: Callable[[dict[str, Any]], Any] | None = None,
           top_ids: MutableMapping[str, int] | None = None, workers: Workers | None = None) -> VerifyResult:
    """Recompute the whole chain and check it ends at its head; name the first entry edited, deleted, inserted or
    reordered, an entry past the head, or a damaged head row. Never raises for damaged data. Reads the log in chunks
    of raw rows (:func:`read_entries`): memory stays flat however long it is.

    ``progress`` is called with the number of entries read, a chunk at a time. ``watch``: sequence numbers whose
    recomputed hashes to return (signed checkpoints). ``top_ids`` maps subject types to a number that is raised to
    the highest whole-number subject id of that type among the entries read; ``on_entry`` sees every row read, as a
    dict of :data:`ENTRY_COLUMNS` (one dict per entry: for tools, not for every verification). With either, the log
    is read to its end after a failure. After a retention cut the chain starts at the cut (whose signature the
    caller checks, :func:`payhub.checkpoints.cut_problem`).

    With ``workers`` (and no ``on_entry``), a log of at least :data:`PARALLEL_MIN` entries up to its head is checked
    in ranges by the worker processes (:func:`_parallel_prefix`); from the first range that is not sound, and past
    the head, it is read here as above, so the result is the same as one process reading it all.
    """
    head = read_head(conn)
    cut = read_cut(conn)
    first, prev = (cut.seq + 1, cut.hash) if isinstance(cut, Cut) else (1, GENESIS)
    expected, hashes = first, dict[int, str]()
    watched = sorted(set(watch))
    bad: tuple[int | None, str] | None = (None, cut) if isinstance(cut, str) else None
    read_all = on_entry is not None or top_ids is not None
    since: int | None = None  # read from this entry on (None: from the start)
    shown = 0  # entries of the serial read already given to ``progress`` by the parallel one
    if workers is not None and on_entry is None and bad is None and isinstance(head, tuple) \
            and head[0] - first + 1 >= PARALLEL_MIN:
        expected, prev, shown = _parallel_prefix(workers, first, head[0], prev, watched, hashes, progress, top_ids)
        since = expected if expected > first else None
    try:
        for rows in read_entries(conn, first=since):
            if on_entry is not None:
                for row in rows:
                    on_entry(dict(zip(ENTRY_COLUMNS, row, strict=True)))
            if top_ids is not None:
                _top_ids(rows, top_ids)
            if progress is not None:
                if shown >= len(rows):
                    shown -= len(rows)
                else:
                    progress(len(rows) - shown)
                    shown = 0
            if bad is not None:
                if read_all:
                    continue
                break
            start = expected
            fitting, prev, found = _check(rows, expected, prev)
            expected += fitting
            for seq in watched[bisect.bisect_left(watched, start):bisect.bisect_left(watched, expected)]:
                hashes[seq] = rows[seq - start][-1]
            if found is not None:
                if found[0] == 1 and cut is None:
                    found = 1, (f"{found[1]}, and no retention cut records the entries before {rows[0][0]} as "
                                "archived (deleted outside payhub, or the audit_cut row was deleted)")
                bad = found
                if not read_all:
                    break
    except DBAPIError as exc:
        last = expected - 1
        bad = bad or (last + 1, f"the audit log cannot be read past entry {last} ({_db_reason(exc)})")
    checked = expected - first
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
        elif prev != head[1]:  # the last entry was rewritten with a new hash (or the head was)
            bad = head[0], f"entry {head[0]} does not match the hash its head records"
    if bad is not None:
        return VerifyResult(False, checked, head_seq, head_hash, bad[0], bad[1], hashes, kept, first)
    return VerifyResult(True, checked, head_seq, head_hash, hashes=hashes, cut=kept, first=first)


# ------------------------------------------------------------------------------------------------- worker processes

PARALLEL_MIN = 200_000
"""Entries up to the head from which :func:`verify` with ``workers`` splits the chain into ranges; below, the worker
processes cost more than they save and one process reads it all."""

RANGE = 25_000
"""Entries per range a worker process checks (one statement, read in chunks of :data:`CHUNK`)."""

_worker_engine: Engine | None = None
_worker_snapshot: str | None = None
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends


def share_snapshot(conn: Connection) -> str | None:
    """On PostgreSQL, make ``conn``'s next transaction REPEATABLE READ and export its snapshot (``pg_export_snapshot``)
    for :class:`Workers`, so that the head, the log and the tables are all read as of one instant however many
    entries are appended meanwhile (under READ COMMITTED, entries committed after the head was read would look like
    entries added past the head). Call before ``conn``'s transaction begins; the snapshot lasts while it is open.
    None on SQLite, where one read transaction already sees one state."""
    if conn.dialect.name != "postgresql":
        return None
    conn.execution_options(isolation_level="REPEATABLE READ")
    return str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())


class Workers:
    """Worker processes, each with its own connection to the database (its own snapshot per task), that check
    ranges of the chain (:func:`verify`) and of the payouts and rewards (:func:`payhub.crosscheck.differences`).

    Forked from this process, so they start without importing anything; a context manager that stops them.
    :meth:`start` gives None where they cannot serve: an in-memory SQLite database, one CPU, not Linux.
    A worker that fails or dies makes its range "not checked": the caller reads that range itself, so a failure
    (a database error, a damaged entry) is found and named in this process, exactly as without workers.
    """

    def __init__(self, url: str, processes: int, snapshot: str | None = None) -> None:
        import multiprocessing  # here, not at import: most commands never start workers
        from concurrent.futures import ProcessPoolExecutor

        self.processes = processes
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_start_worker, initargs=(url, os.getpid(), snapshot))
        # With fork every process starts on the first task: start them now, before this process starts threads
        # (the progress display's) that a fork would copy mid-flight.
        for done in [self.pool.submit(os.getpid) for _ in range(processes)]:
            done.result()

    @classmethod
    def start(cls, engine: Engine, entries: int, processes: int | None = None, snapshot: str | None = None
              ) -> Workers | None:
        """Workers for ``engine``'s database when the log has at least :data:`PARALLEL_MIN` ``entries``, else None.
        ``snapshot``: a PostgreSQL snapshot (:func:`share_snapshot`) every worker transaction reads from."""
        import multiprocessing

        affinity = getattr(os, "sched_getaffinity", None)
        count = processes if processes is not None else min(4, len(affinity(0)) if affinity else os.cpu_count() or 1)
        url = engine.url
        memory = url.get_backend_name() == "sqlite" and (
            not url.database or url.database == ":memory:" or url.database.startswith("file:")
            or url.query.get("mode") == "memory")
        # fork only where it is safe with the libraries loaded (Linux; macOS's system frameworks are not)
        if entries < PARALLEL_MIN or count < 2 or memory or not sys.platform.startswith("linux") \
                or "fork" not in multiprocessing.get_all_start_methods():
            return None
        try:
            return cls(url.render_as_string(hide_password=False), count, snapshot)
        except (OSError, RuntimeError):  # no processes to be had: one process does it all
            return None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """``fn(*args)`` in a worker; a pool broken by a worker that died gives a future holding that error (the
        caller then does the work itself), not an exception here."""
        try:
            return self.pool.submit(fn, *args)
        except RuntimeError as exc:  # BrokenProcessPool, or the pool was shut down
            from concurrent.futures import Future

            failed: Future[Any] = Future()
            failed.set_exception(exc)
            return failed

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_worker(url: str, parent: int, snapshot: str | None) -> None:
    """In a worker: an engine of its own whose transactions only read (SQLite: a deferred BEGIN, not payhub's
    BEGIN IMMEDIATE, which would wait for the parent's own transaction; PostgreSQL: from ``snapshot`` when given).
    The worker ends with its parent, however the parent ends (SIGTERM, SIGKILL), instead of waiting for work."""
    global _worker_engine, _worker_snapshot
    import ctypes
    import signal

    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's: it stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the line above
        os._exit(1)
    _worker_snapshot = snapshot if snapshot is not None and _SNAPSHOT_ID.fullmatch(snapshot) else None

    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30.0})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        _worker_engine = engine
    else:
        from payhub.db.engine import make_engine

        _worker_engine = make_engine(url)


@contextlib.contextmanager
def worker_connection() -> Iterator[Connection]:
    """In a worker process: a connection to the database, in a read transaction rolled back on exit."""
    if _worker_engine is None:
        raise RuntimeError("not a worker process")
    with _worker_engine.connect() as conn:
        if _worker_snapshot is not None:
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{_worker_snapshot}'")
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()


@dataclass(frozen=True, slots=True)
class _Span:
    """A worker's check of entries ``low``..``high``, of which it read ``read``: ``sound`` when every one is there
    and fits, the first linked to ``link``; ``last`` is the hash of ``high``."""

    low: int
    high: int
    read: int
    sound: bool
    link: str = ""
    last: str = ""
    hashes: dict[int, str] = field(default_factory=dict)
    tops: dict[str, int] = field(default_factory=dict)


def _check_span(low: int, high: int, below: bool, watched: list[int], kinds: list[str]) -> _Span:
    """In a worker: check entries ``low``..``high`` (and, when ``below``, that none comes before ``low``)."""
    tops = dict.fromkeys(kinds, 0)
    hashes: dict[int, str] = {}
    expected, prev, link, read = low, "", "", 0
    try:
        with worker_connection() as conn:
            for rows in read_entries(conn, first=None if below else low, last=high):
                read += len(rows)
                if kinds:
                    _top_ids(rows, tops)
                if not link:
                    link = prev = rows[0][9]
                    if rows[0][0] != low or not isinstance(link, str):
                        return _Span(low, high, read, False)
                start = expected
                fitting, prev, found = _check(rows, expected, prev)
                expected += fitting
                if found is not None:
                    return _Span(low, high, read, False)
                for seq in watched[bisect.bisect_left(watched, start):bisect.bisect_left(watched, expected)]:
                    hashes[seq] = rows[seq - start][-1]
    except Exception:  # noqa: BLE001 - whatever it was, this process reads the range again and says what it is
        return _Span(low, high, read, False)
    return _Span(low, high, read, expected == high + 1, link, prev, hashes, tops)


def _parallel_prefix(workers: Workers, first: int, head: int, prev: str, watched: list[int], hashes: dict[int, str],
                     progress: Callable[[int], Any] | None, top_ids: MutableMapping[str, int] | None
                     ) -> tuple[int, str, int]:
    """Check entries ``first``..``head`` in ranges on ``workers``; return the first entry not shown to fit (the
    start of the first range that is not sound or does not link to the one before: ``head + 1`` when all are), the
    hash it must link to, and how many entries from there on ``progress`` was already given.

    The sound ranges before it add their watched hashes to ``hashes`` and their subject ids to ``top_ids``."""
    from concurrent.futures import as_completed

    kinds = list(top_ids) if top_ids is not None else []
    bounds = [(low, min(low + RANGE - 1, head)) for low in range(first, head + 1, RANGE)]
    futures = {workers.submit(_check_span, low, high, low == first,
                              watched[bisect.bisect_left(watched, low):bisect.bisect_right(watched, high)], kinds): low
               for low, high in bounds}
    spans: dict[int, _Span] = {}
    try:
        for done in as_completed(futures):
            span = done.result()
            spans[span.low] = span
            if progress is not None and span.read:
                progress(span.read)
    except Exception:  # noqa: BLE001 - a worker died (BrokenProcessPool) or the pool is gone: read it all here
        for future in futures:
            future.cancel()
    expected, reported = first, sum(span.read for span in spans.values())
    for low, high in bounds:
        span = spans.get(low)
        if span is None or not span.sound or span.link != prev:
            break
        expected, prev = high + 1, span.last
        reported -= span.read
        hashes.update(span.hashes)
        if top_ids is not None:
            for kind, top in span.tops.items():
                top_ids[kind] = max(top_ids[kind], top)
    return expected, prev, reported


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
    expected, prev, opened = seq + 1, digest, from_cut
    try:
        for rows in read_entries(conn, first=seq + 1 if from_cut else seq, last=upto):
            if not opened:  # the entry recorded earlier comes first, unchanged
                opened, row = True, rows[0]
                if row[0] != seq:
                    return f"entry {seq} recorded earlier is missing"
                if row[-1] != digest or hash_fields(row) != digest:
                    return f"entry {seq} no longer has the hash recorded earlier (the chain was rewritten)"
                rows = rows[1:]
            fitting, prev, found = _check(rows, expected, prev)
            expected += fitting
            if found is not None:
                return found[1]
    except DBAPIError as exc:
        return f"the audit log cannot be read ({_db_reason(exc)})"
    if not opened:
        return f"entry {seq} recorded earlier is missing"
    if expected != upto + 1:
        return f"the log ends at entry {expected - 1} but its head records entry {upto}"
    return None


def _db_reason(exc: DBAPIError) -> str:
    return str(exc.orig or exc).strip().splitlines()[0]
