"""Reading the audit log by filters, in ``seq`` order, streamed: the CLI's ``audit query|export`` and the API's
audit reads and exports share it, so a million entries cost flat memory on both paths.

The export formats are defined here once, for both faces: a JSON Lines line per entry (:func:`jsonl_row`, every
value the stored text, ``detail`` as the JSON object it stores, so the chain recomputes from the file) and a CSV row
(:func:`csv_row`, ``detail`` as its stored text; the writer neutralises formulas, see :mod:`payhub.csvsafe`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, select
from sqlalchemy.pool import NullPool

from payhub.audit import driver_chunks
from payhub.clock import isoformat
from payhub.db.engine import CONNECT_TIMEOUT, sqlite_file
from payhub.db.schema import audit_log

STREAM_ROWS = 2000
"""Rows fetched from the database at a time while streaming."""

COLUMNS = ("seq", "at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail")
"""The fields of an entry as ``audit query`` shows them."""

EXPORT_COLUMNS = (*COLUMNS, "prev_hash", "hash")
"""The fields of an exported entry, in the order of the JSON Lines objects and of the CSV header."""

_string = encode_basestring  # a JSON string as json.dumps(..., ensure_ascii=False) writes it

SQLITE_READ_TIMEOUT = 30.0
"""Seconds a long read on SQLite waits for a lock (in WAL mode a reader waits only while the file is recovered)."""

_readers: dict[str, Engine] = {}
_readers_lock = threading.Lock()


def reader(engine: Engine) -> Engine:
    """The engine for long reads (exports, streamed queries) of ``engine``'s database: each read gets a connection of
    its own, made for it and closed after it, never one of the pool the worker uses. On SQLite it is a plain
    connection, whose read never takes the write lock: ``engine`` begins every transaction with ``BEGIN IMMEDIATE``,
    which would hold off every writer (the daemon, the audit entry of the read itself) for as long as the stream
    lasts; a single ``SELECT`` still reads one snapshot from its first row to its last. An in-memory database, or a
    file that does not exist yet, is read through ``engine`` itself."""
    url = engine.url
    path = sqlite_file(url.render_as_string(hide_password=False))
    if url.get_backend_name() == "sqlite" and (path is None or not os.path.exists(path)):
        return engine
    key = url.render_as_string(hide_password=False)
    with _readers_lock:
        found = _readers.get(key)
        if found is None:
            if path is not None:
                found = create_engine(url, poolclass=NullPool,
                                      connect_args={"timeout": SQLITE_READ_TIMEOUT, "check_same_thread": False})
            else:
                timeout = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT}
                found = create_engine(url, poolclass=NullPool, connect_args=timeout)
            _readers[key] = found
    return found


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """The filters of ``audit query``: time range (``since`` inclusive, ``until`` exclusive), exact actor, action
    (exact, or a pattern with ``*``), subject (``type:id`` or a bare id)."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    subject: str | None = None

    def used(self) -> dict[str, Any]:
        """The filters given, for the audit entry that records the read."""
        return {k: v for k, v in (("since", self.since), ("until", self.until), ("actor", self.actor),
                                  ("action", self.action), ("subject", self.subject)) if v}


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def select_entries(filters: AuditFilters, *, after: int | None = None, limit: int | None = None) -> Select[Any]:
    """The entries matching ``filters`` with ``seq`` above ``after``, oldest first, at most ``limit``."""
    query = select(audit_log).order_by(audit_log.c.seq)
    if after is not None:
        query = query.where(audit_log.c.seq > after)
    if filters.since:
        query = query.where(audit_log.c.at >= isoformat(filters.since))
    if filters.until:
        query = query.where(audit_log.c.at < isoformat(filters.until))
    if filters.actor:
        query = query.where(audit_log.c.actor == filters.actor)
    if filters.action:
        action = filters.action
        query = query.where(audit_log.c.action.like(_like(action), escape="\\") if "*" in action
                            else audit_log.c.action == action)
    if filters.subject:
        stype, sep, sid = filters.subject.partition(":")
        query = query.where(audit_log.c.subject_type == stype, audit_log.c.subject_id == sid) if sep else \
            query.where(audit_log.c.subject_id == filters.subject)
    if limit is not None:
        query = query.limit(limit)
    return query


def iter_entries(conn: Connection, filters: AuditFilters, *, after: int | None = None,
                 limit: int | None = None) -> Generator[dict[str, Any], None, None]:
    """The matching entries as dicts (``detail`` kept as its stored JSON text), streamed from the database:
    :data:`STREAM_ROWS` at a time (a server-side cursor on PostgreSQL), so memory does not grow with the count.
    The query runs at once (a database error is raised here, not at the first entry). Closing the generator early
    closes the cursor: close it before ``conn``."""
    result = conn.execution_options(yield_per=STREAM_ROWS).execute(select_entries(filters, after=after, limit=limit))

    def entries() -> Generator[dict[str, Any], None, None]:
        try:
            keys = tuple(result.keys())
            for row in result:
                yield dict(zip(keys, row, strict=True))
        finally:
            result.close()

    return entries()


def iter_rows(conn: Connection, filters: AuditFilters, *, after: int | None = None, limit: int | None = None
              ) -> Generator[list[tuple[Any, ...]], None, None]:
    """The matching entries as the driver's tuples of :data:`EXPORT_COLUMNS` (``detail`` its stored text), in lists
    of at most :data:`STREAM_ROWS`: the statement is compiled once and read through the DBAPI cursor (server-side on
    PostgreSQL), so memory stays flat and no SQLAlchemy row is built. A driver error is raised as
    :class:`sqlalchemy.exc.DBAPIError`. Close the generator early to close the cursor, before ``conn``."""
    compiled = select_entries(filters, after=after, limit=limit).compile(
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args: Any = tuple(params[name] for name in compiled.positiontup or ()) if compiled.positional else params
    return driver_chunks(conn, str(compiled), args, STREAM_ROWS)


def detail_value(text: str) -> Any:
    """A stored ``detail`` as the JSON value it holds; text that is not JSON (changed outside payhub) stays text,
    so an export still shows it and the entry fails its hash when the chain is recomputed."""
    try:
        return json.loads(text)
    except ValueError:
        return text


_encode = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
"""``json.dumps(value, ensure_ascii=False)`` for a value read from JSON (acyclic), the encoder made once."""
_decode = json.JSONDecoder().decode
"""``json.loads``, the decoder made once."""


def jsonl_row(row: Sequence[Any]) -> str:
    """The entry ``row`` (its values of :data:`EXPORT_COLUMNS`, in order) as one line of JSON Lines, with its newline:
    ``json.dumps(…, ensure_ascii=False)`` of the object of those columns in order, each value the stored text
    unchanged (non-ASCII as is), ``detail`` as the JSON value it stores (its canonical JSON is the stored text), or
    as text when it is not JSON. The one definition of the line, for the CLI's and the API's exports; written out
    field by field when the fields have the types payhub stores (an export writes millions)."""
    seq, at, actor, action, stype, sid, outcome, origin, detail, prev, digest = row
    if type(seq) is int and type(at) is type(actor) is type(action) is type(stype) is type(sid) is type(outcome) \
            is type(origin) is type(detail) is type(prev) is type(digest) is str:
        text = _string
        try:
            value = _decode(detail)
        except ValueError:
            value = detail
        return (f'{{"seq": {seq}, "at": {text(at)}, "actor": {text(actor)}, "action": {text(action)}, '
                f'"subject_type": {text(stype)}, "subject_id": {text(sid)}, "outcome": {text(outcome)}, '
                f'"origin": {text(origin)}, "detail": {_encode(value)}, "prev_hash": {text(prev)}, '
                f'"hash": {text(digest)}}}\n')
    # A field of another type: a row changed outside payhub (SQLite keeps any type).
    return json.dumps({c: detail_value(v) if c == "detail" else v for c, v in zip(EXPORT_COLUMNS, row, strict=True)},
                      ensure_ascii=False) + "\n"


def jsonl_line(entry: dict[str, Any]) -> str:
    """``entry`` (a dict of :data:`EXPORT_COLUMNS`) as :func:`jsonl_row` writes it."""
    return jsonl_row(tuple([entry[c] for c in EXPORT_COLUMNS]))


def csv_row(entry: dict[str, Any]) -> list[Any]:
    """``entry`` as the cells of a CSV row under :data:`EXPORT_COLUMNS`, ``detail`` as its stored text; write it with
    :func:`payhub.csvsafe.writer`."""
    return [entry[c] for c in EXPORT_COLUMNS]
