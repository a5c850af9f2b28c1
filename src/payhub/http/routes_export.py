"""Exports of API v1 for auditors (and every role above): the audit log, events, rewards and payouts, whole or
filtered, as JSON Lines or CSV, streamed in flat memory (docs/api.md, Paging and exports).

An export is one query read :data:`~payhub.audit_query.STREAM_ROWS` rows at a time (a server-side cursor on
PostgreSQL) on a database connection of its own (:func:`payhub.audit_query.reader`: not one of the worker's, and on
SQLite one that takes no write lock), opened and queried before the answer starts, so a database that cannot be
reached is an error status, not an empty file. The rows are written as they are read, about :data:`CHUNK_CHARS`
characters at a time; the server writes no faster than the client reads, and a client that leaves a chunk unread for
:data:`SEND_TIMEOUT_SECONDS` is cut off. The connection is closed when the stream ends, however it ends: complete,
failed, or the client gone mid-way. The request's ``api.request`` entry is written when the answer starts
(:mod:`payhub.http.audit`); when the stream ends an ``api.export`` entry records how many rows were sent and whether
the export was complete (outcome ``ok``) or cut short (``incomplete``).

The formats are the CLI's: the audit log's lines are those of ``payhub audit export`` (:mod:`payhub.audit_query`:
JSON Lines keeps the exact stored text, so the chain recomputes from it); CSV cells go through
:mod:`payhub.csvsafe`, so a spreadsheet runs no formula from them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Connection
from starlette.types import Message, Receive, Scope, Send

from payhub import csvsafe, reports, states
from payhub.audit_query import EXPORT_COLUMNS, AuditFilters, csv_row, iter_entries, jsonl_line, reader
from payhub.clock import isoformat, utcnow
from payhub.http.auth import require
from payhub.http.models import Detail, Instant, Invalid
from payhub.http.state import face, origin
from payhub.runtime import Runtime
from payhub.tokens import Principal

log = logging.getLogger(__name__)

API = "/api/v1"
CHUNK_CHARS = 64 * 1024
"""About how much text is handed to the server at a time."""
SEND_TIMEOUT_SECONDS = 60.0
"""How long a client may leave a chunk unread before its export is cut off (and its connection given back)."""
ID_BOUND = 2**63
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}

ExportFormat = Literal["jsonl", "csv"]
Format = Annotated[ExportFormat, Query(alias="format", description=(
    "`jsonl` (JSON Lines, one object per row) or `csv` (with a header; cells neutralised against spreadsheet "
    "formulas)."))]
After = Annotated[int | None, Query(ge=0, lt=ID_BOUND, description=(
    "Only rows with an id (for the audit log, a sequence number) above this one: resumes an export cut short."))]

STREAMED = {"description": "The rows, streamed as they are read.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                        "text/csv": {"schema": {"type": "string"}}}}
router = APIRouter(prefix=API, tags=["exports"], dependencies=[Depends(require("auditor"))],
                   responses={200: STREAMED,
                              401: {"model": Detail, "description": "No valid token."},
                              403: {"model": Detail, "description": "The token's role may not read."},
                              422: {"model": Invalid, "description": "A parameter is not valid."}})

Rows = Callable[[Connection], Iterator[dict[str, Any]]]


class _Tally:
    """What a stream sent: rows, and whether it reached the end."""

    def __init__(self) -> None:
        self.rows = 0
        self.complete = False

    def over(self, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            self.rows += 1
            yield row


def _jsonl(line: Callable[[dict[str, Any]], str], rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    parts: list[str] = []
    size = 0
    for row in rows:
        text = line(row)
        parts.append(text)
        size += len(text)
        if size >= CHUNK_CHARS:
            yield "".join(parts)
            parts, size = [], 0
    yield "".join(parts)


def _csv(columns: tuple[str, ...] | list[str], cells: Callable[[dict[str, Any]], list[Any]],
         rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csvsafe.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(cells(row))
        if buffer.tell() >= CHUNK_CHARS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _body(pieces: Iterator[str], tally: _Tally) -> Generator[bytes, None, None]:
    for piece in pieces:
        if piece:
            yield piece.encode("utf-8")
    tally.complete = True


class ExportResponse(StreamingResponse):
    """A streamed export that owns its database connection: when the answer ends, whatever ended it (the last row,
    an error, the client gone), the stream is closed, the connection given back, then ``finished`` called."""

    def __init__(self, body: Generator[bytes, None, None], conn: Connection, finished: Callable[[], None],
                 media_type: str, filename: str) -> None:
        super().__init__(body, media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})
        self._body = body
        self._conn = conn
        self._finished = finished

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            with anyio.fail_after(SEND_TIMEOUT_SECONDS):
                await send(message)

        try:
            await super().__call__(scope, receive, bounded_send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        # The body is suspended here: a thread reading it is always waited for before the answer ends.
        try:
            self._body.close()
        finally:
            self._conn.close()
            self._finished()


def _record(rt: Runtime, principal: Principal | None, where: str, path: str, detail: dict[str, Any],
            tally: _Tally) -> None:
    """The ``api.export`` entry of a stream that ended; logged, not raised, when it cannot be written (the answer
    has gone, and its ``api.request`` entry was written before it started)."""
    try:
        writer = rt.as_actor(principal.actor if principal is not None else "anonymous", where)
        with writer.transaction() as tx:
            tx.audit("api.export", "api", path, {**detail, "rows": tally.rows, "complete": tally.complete},
                     outcome="ok" if tally.complete else "incomplete")
    except Exception:  # noqa: BLE001 - nothing left to answer
        log.exception("the end of the export %s could not be recorded in the audit log", path)


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


def _export(request: Request, name: str, fmt: ExportFormat, rows: Rows, filters: dict[str, Any], *,
            jsonl: Callable[[dict[str, Any]], str], columns: tuple[str, ...] | list[str],
            cells: Callable[[dict[str, Any]], list[Any]]) -> ExportResponse:
    """Open a connection, start the query on it (errors surface here, as a status), and stream its rows."""
    rt = face(request).rt
    used = {key: isoformat(value) if isinstance(value, datetime) else value
            for key, value in filters.items() if value is not None}
    conn = reader(rt.engine).connect()
    try:
        found = rows(conn)
    except BaseException:
        conn.close()
        raise
    tally = _Tally()
    counted = tally.over(found)
    pieces = _csv(columns, cells, counted) if fmt == "csv" else _jsonl(jsonl, counted)
    principal: Principal | None = getattr(request.state, "principal", None)
    where, path = origin(request), request.url.path
    detail = {"format": fmt, "filters": used}
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return ExportResponse(_body(pieces, tally), conn, lambda: _record(rt, principal, where, path, detail, tally),
                          MEDIA_TYPES[fmt], f"payhub-{name}-{stamp}.{fmt}")


STREAM: dict[str, Any] = {"response_class": ExportResponse, "status_code": 200}
"""How an export route answers (``status_code``: the OpenAPI document cannot take it from the class)."""


def _line(columns: list[str]) -> Callable[[dict[str, Any]], str]:
    def line(row: dict[str, Any]) -> str:
        return json.dumps({c: row[c] for c in columns}, ensure_ascii=False, default=_text) + "\n"

    return line


def _cells(columns: list[str]) -> Callable[[dict[str, Any]], list[Any]]:
    def cells(row: dict[str, Any]) -> list[Any]:
        return [_text(row[c]) for c in columns]

    return cells


@router.get("/audit/export", **STREAM, operation_id="export_audit", summary="Export the audit log")
def audit_export(request: Request, fmt: Format = "jsonl", after: After = None,
                 since: Annotated[Instant | None, Query(description="Entries at or after this time.")] = None,
                 until: Annotated[Instant | None, Query(description="Entries before this time.")] = None,
                 actor: Annotated[str | None, Query(max_length=200, description=(
                     "Exact actor, e.g. `token:alice`."))] = None,
                 action: Annotated[str | None, Query(max_length=100, description=(
                     "Exact action, or a pattern with `*`, e.g. `payout.*`."))] = None,
                 subject: Annotated[str | None, Query(max_length=700, description=(
                     "`type:id` (e.g. `payout:12`) or a bare id."))] = None,
                 ) -> ExportResponse:
    """The matching entries in chain order with `prev_hash` and `hash`: what `payhub audit export` writes. JSON
    Lines keeps every stored text exactly (`detail` as its object), so the chain recomputes from an export without
    filters; CSV is for spreadsheets (a neutralised cell no longer matches its hash)."""
    filters = AuditFilters(since, until, actor, action, subject)
    return _export(request, "audit", fmt, lambda conn: iter_entries(conn, filters, after=after),
                   {"since": since, "until": until, "actor": actor, "action": action, "subject": subject,
                    "after": after},
                   jsonl=jsonl_line, columns=EXPORT_COLUMNS, cells=csv_row)


EventStatus = Annotated[states.EventStatus | None, Query(description="Only events in this status.")]
RewardStatus = Annotated[states.RewardStatus | None, Query(description="Only rewards in this status.")]
PayoutStatus = Annotated[states.PayoutStatus | None, Query(description="Only payouts in this status.")]
Source = Annotated[str | None, Query(max_length=200, description="Only events of this source.")]
Payee = Annotated[str | None, Query(max_length=200, description="Only rows of this payee.")]
Program = Annotated[str | None, Query(max_length=200, description="Only rewards of this program.")]
Rail = Annotated[str | None, Query(max_length=100, description="Only payouts through this rail.")]


@router.get("/events/export", **STREAM, operation_id="export_events", summary="Export events")
def events_export(request: Request, fmt: Format = "jsonl", after: After = None, status: EventStatus = None,
                  source: Source = None) -> ExportResponse:
    """Every matching event, oldest first, with the columns of `GET /api/v1/events`."""
    columns = reports.EVENT_COLUMNS
    return _export(request, "events", fmt,
                   lambda conn: reports.events(conn, status=status, source=source, after=after),
                   {"status": status, "source": source, "after": after},
                   jsonl=_line(columns), columns=columns, cells=_cells(columns))


@router.get("/rewards/export", **STREAM, operation_id="export_rewards", summary="Export rewards")
def rewards_export(request: Request, fmt: Format = "jsonl", after: After = None, status: RewardStatus = None,
                   payee: Payee = None, program: Program = None) -> ExportResponse:
    """Every matching reward, oldest first, with the columns of `GET /api/v1/rewards`."""
    columns = reports.REWARD_COLUMNS
    return _export(request, "rewards", fmt,
                   lambda conn: reports.rewards(conn, status=status, payee=payee, program=program, after=after),
                   {"status": status, "payee": payee, "program": program, "after": after},
                   jsonl=_line(columns), columns=columns, cells=_cells(columns))


@router.get("/payouts/export", **STREAM, operation_id="export_payouts", summary="Export payouts")
def payouts_export(request: Request, fmt: Format = "jsonl", after: After = None, status: PayoutStatus = None,
                   rail: Rail = None, payee: Payee = None) -> ExportResponse:
    """Every matching payout, oldest first, with the columns of `GET /api/v1/payouts`."""
    columns = reports.PAYOUT_COLUMNS
    return _export(request, "payouts", fmt,
                   lambda conn: reports.payouts(conn, status=status, rail=rail, payee=payee, after=after),
                   {"status": status, "rail": rail, "payee": payee, "after": after},
                   jsonl=_line(columns), columns=columns, cells=_cells(columns))
