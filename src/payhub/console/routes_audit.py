"""Console pages of the audit log (docs/console.md, Audit log): search, export and verify.

``GET /console/audit`` lists the entries that match the filters of ``payhub audit query`` (since, until, actor,
action, subject; :class:`payhub.audit_query.AuditFilters`), checked as the CLI and the API check them, a page at a
time by keyset on the sequence number: newest first (``before``) or in chain order as the CLI lists them
(``after``). Each entry's detail is shown as text, its sealed personal values opened or not by the viewer's role as
the API shows them (:mod:`payhub.compliance.shown`).

``GET /console/audit/export`` is the API's export (:func:`payhub.http.routes_export.audit_export`) with the same
filters: streamed, a download, the lines of ``payhub audit export``, CSV neutralised against spreadsheet formulas,
and recorded by an ``api.export`` entry when the stream ends.

``GET /console/audit/verify`` shows the last verification the audit log recorded (from the CLI, the API or this
page); with ``run=1`` it runs the API's verification (:func:`payhub.http.routes_reads.verify`: the chain, the
retention cut, the signed checkpoints and the tables against the chain) and shows its result and how long it took.
One verification runs at a time in a process: a second ``run=1`` while one runs is told so (409, ``Retry-After``).
After a retention cut both pages say which entries are archived where; the signed cut lines of the checkpoint
directory are read again only when its files (or the key) changed.

Query parameters are read by :mod:`payhub.console.params`: an unknown or repeated parameter, an over-long or
malformed value is answered by the page with a message (422), never by a partial or widened result.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import click
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Connection, select

from payhub import checkpoints
from payhub.audit import Cut, canonical_json, read_cut
from payhub.audit_query import AuditFilters, detail_value, iter_entries, select_entries
from payhub.cli.params import ACTOR
from payhub.clock import isoformat, parse_instant, utcnow
from payhub.compliance import retention
from payhub.compliance.shown import Opener
from payhub.console.params import (
    BAD_STATUS,
    MAX_ID,
    MAX_PAGE,
    NUMBER_LENGTH,
    PAGE_SIZE,
    BadQuery,
    choice,
    keyset,
    page_limit,
    query_params,
    refused,
    url,
    whole_number,
)
from payhub.console.web import PREFIX, Viewer, opener, page, query_string, render
from payhub.db.schema import audit_log
from payhub.errors import ConfigError, InvalidRecord
from payhub.http import routes_export, routes_reads
from payhub.http.state import face
from payhub.settings import Settings

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZES = (25, PAGE_SIZE, 500, MAX_PAGE)
"""The page sizes the form offers (``limit`` takes any from 1 to :data:`~payhub.console.params.MAX_PAGE`)."""
FILTER_LENGTHS = {"since": 64, "until": 64, "actor": 200, "action": 100, "subject": 700}
"""The longest text of each filter (the API's bounds; a time is at most 64 characters)."""
ORDERS = {"newest": "Newest first", "oldest": "Oldest first (chain order)"}
FORMATS = ("csv", "jsonl")
VERIFY_PATHS = (f"{PREFIX}/audit/verify", "/api/v1/verify")
"""The request paths whose ``api.request`` entries record a verification."""
RETRY_SECONDS = 10
"""The ``Retry-After`` of a verification refused because another one is running."""
_VERIFYING = threading.Lock()
"""Held while this process runs a verification from the verify page: one at a time (each reads the whole log)."""
_RUNNING: dict[str, Any] = {}
"""Who runs the verification holding :data:`_VERIFYING`, and since when (for the page that is refused)."""
_CUTS: dict[str, tuple[Any, list[Cut]]] = {}
"""Per checkpoint directory: the state of its files and key when read, and the signed cuts read then."""
_CUTS_LOCK = threading.Lock()
AUDIT = f"{PREFIX}/audit"


def _instant(params: Mapping[str, str], name: str) -> datetime | None:
    """The parameter ``name`` as an instant (ISO 8601 with an offset, or a date), None when absent; else
    :class:`~payhub.console.params.BadQuery`."""
    text = params.get(name)
    if text is None:
        return None
    try:
        return parse_instant(text)
    except InvalidRecord as exc:
        raise BadQuery(f"{name}: {exc} (use ISO 8601 with an offset, e.g. 2026-01-31T00:00:00Z, or a date)") from None


def _filters(params: Mapping[str, str]) -> AuditFilters:
    """The filters of ``audit query`` from the parameters, under the CLI's rules (the actor as ``--actor`` takes
    it) and the API's lengths."""
    actor = params.get("actor")
    if actor is not None:
        try:
            actor = ACTOR.convert(actor, None, None)
        except click.BadParameter as exc:
            raise BadQuery(f"actor: {exc.message}") from None
    return AuditFilters(since=_instant(params, "since"), until=_instant(params, "until"), actor=actor,
                        action=params.get("action"), subject=params.get("subject"))


def _filter_values(filters: AuditFilters) -> dict[str, str]:
    """The filters as the parameters that give them back (for links and the form)."""
    return {name: isoformat(value) if isinstance(value, datetime) else value
            for name, value in filters.used().items()}


def shown_detail(opener: Opener, stored: str) -> str:
    """An entry's stored detail as text, its sealed values shown per ``opener``: the canonical JSON of the
    object; stored text that is not JSON (altered outside payhub) as it is."""
    value = detail_value(stored)
    return value if isinstance(value, str) else canonical_json(opener(value))


@dataclass
class Listing:
    """A page of entries and the link to the next page (None after the last entry)."""

    entries: list[dict[str, Any]]
    next_href: str | None


def _listing(conn: Connection, viewer: Viewer, filters: AuditFilters, order: str, cursor: int | None,
             limit: int) -> Listing:
    """One page: in chain order the CLI's query (:func:`iter_entries`, ``cursor`` its ``--after``), newest first
    the same filters in descending order below ``cursor``; one entry more is read to know there are more."""
    if order == "oldest":
        with closing(iter_entries(conn, filters, after=cursor, limit=limit + 1)) as found:
            rows = list(found)
    else:
        query = select_entries(filters).order_by(None).order_by(audit_log.c.seq.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(audit_log.c.seq < cursor)
        rows = [dict(row) for row in conn.execute(query).mappings()]
    shown = opener(conn, viewer)
    page, following = keyset(rows, limit, lambda last: url(AUDIT, {
        **_filter_values(filters), "order": order, "limit": limit, "after" if order == "oldest" else "before":
        last["seq"]}))
    return Listing([{**row, "detail": shown_detail(shown, row["detail"])} for row in page], following)


def _signed_cuts(settings: Settings) -> list[Cut]:
    """The cut lines of the checkpoint directory whose signatures the configured key accepts ([] without a usable
    key or directory: verification names those). The files are read and their signatures checked again only when a
    checkpoint file's name, size or modification time changed, or the key did, since the last read in this
    process."""
    with contextlib.suppress(ConfigError, OSError):
        key = checkpoints.load_key(settings)
        directory = settings.resolve(settings.audit.checkpoint_dir)
        files = sorted(directory.glob(checkpoints.FILE_PATTERN)) if directory.is_dir() else []
        state = (key.key_id if key is not None else None,
                 tuple((path.name, stat.st_mtime_ns, stat.st_size) for path in files for stat in [path.stat()]))
        with _CUTS_LOCK:
            kept = _CUTS.get(str(directory))
        if kept is not None and kept[0] == state:
            return kept[1]
        signed = [c for c in checkpoints.read_cuts(directory) if checkpoints.cut_problem(c, key) is None]
        with _CUTS_LOCK:
            _CUTS[str(directory)] = (state, signed)
        return signed
    return []


def _cut_note(request: Request, conn: Connection) -> str | None:
    """Which entries the retention cut archived (they are not in the database), or None without a cut (then no
    checkpoint file is looked at)."""
    cut = read_cut(conn)
    if not isinstance(cut, Cut):
        return cut  # None, or why the cut cannot be read
    return retention.archived_note(conn, cut, _signed_cuts(face(request).rt.settings))


def _audit_context(request: Request, allowed: Mapping[str, int], **values: Any) -> dict[str, Any]:
    """What the audit page shows by default: the form as asked (cut to its bounds), nothing listed."""
    form = {name: request.query_params.get(name, "")[:length] for name, length in allowed.items()}
    form.setdefault("order", "newest")
    form.setdefault("limit", str(PAGE_SIZE))
    return {"title": "Audit log", "section": "Audit log", "orders": ORDERS, "page_sizes": PAGE_SIZES,
            "form": form, "entries": None, "next_href": None, "export_query": "", "problem": None,
            "cut_note": None, **values}


@router.get("/audit")
def audit_page(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The audit log's entries matching the filters, a page at a time."""
    allowed = {**FILTER_LENGTHS, "order": 10, "limit": NUMBER_LENGTH, "after": NUMBER_LENGTH, "before": NUMBER_LENGTH}
    context = _audit_context(request, allowed)
    try:
        params = query_params(request, allowed)
        filters = _filters(params)
        order = choice(params, "order", ORDERS, "newest")
        limit = page_limit(params)
        after, before = whole_number(params, "after", 0, MAX_ID), whole_number(params, "before", 1, MAX_ID)
        if (after is not None and order != "oldest") or (before is not None and order != "newest"):
            raise BadQuery("after goes with the oldest-first order, before with the newest-first order")
    except BadQuery as exc:
        return render(request, "audit.html", viewer, status_code=BAD_STATUS,
                      **{**context, "problem": refused(request, exc)})
    with face(request).rt.engine.connect() as conn:
        listing = _listing(conn, viewer, filters, order, after if order == "oldest" else before, limit)
    with face(request).rt.engine.connect() as conn:  # not after a streamed read: PostgreSQL refuses its SAVEPOINT
        cut_note = _cut_note(request, conn)
    request.state.audit_detail = {"rows": len(listing.entries)}
    values = _filter_values(filters)
    return render(request, "audit.html", viewer, **{
        **context, "form": {**context["form"], **values, "order": order, "limit": limit}, "entries": listing.entries,
        "next_href": listing.next_href,
        "export_query": query_string(values), "cut_note": cut_note})


@router.get("/audit/export")
def audit_export(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The matching entries as a CSV or JSON Lines download: the API's export, so the file is what
    ``payhub audit export`` writes for the same filters."""
    allowed = {**FILTER_LENGTHS, "format": 10, "after": NUMBER_LENGTH}
    try:
        params = query_params(request, allowed)
        filters = _filters(params)
        fmt = choice(params, "format", FORMATS, "jsonl")
        after = whole_number(params, "after", 0, MAX_ID)
    except BadQuery as exc:
        return render(request, "audit.html", viewer, status_code=BAD_STATUS, **_audit_context(
            request, FILTER_LENGTHS, problem=f"The export was not started: {refused(request, exc)}"))
    return routes_export.audit_export(request, "csv" if fmt == "csv" else "jsonl", after, filters.since,
                                      filters.until, filters.actor, filters.action, filters.subject)


def _last_verification(conn: Connection) -> dict[str, Any] | None:
    """The latest verification the audit log records: an ``audit.verify`` entry of the CLI, or the ``api.request``
    entry of a verification run through the API or this page (those carry ``checked``)."""
    by_cli = select(audit_log).where(audit_log.c.action == "audit.verify").order_by(audit_log.c.seq.desc()).limit(1)
    by_http = (select(audit_log).where(audit_log.c.action == "api.request", audit_log.c.subject_type == "api",
                                       audit_log.c.subject_id.in_(VERIFY_PATHS), audit_log.c.outcome == "ok",
                                       audit_log.c.detail.like('%"checked":%'))
               .order_by(audit_log.c.seq.desc()).limit(1))
    found = [row for query in (by_cli, by_http) for row in conn.execute(query).mappings()]
    if not found:
        return None
    latest = max(found, key=lambda row: row["seq"])
    detail = detail_value(latest["detail"])
    if not isinstance(detail, dict) or "checked" not in detail:
        return None
    seconds = detail.get("seconds")
    return {"seq": latest["seq"], "at": latest["at"], "actor": latest["actor"],
            "by": "payhub audit verify" if latest["action"] == "audit.verify" else latest["subject_id"],
            "ok": detail.get("ok") is True, "checked": detail.get("checked"), "first_bad": detail.get("first_bad"),
            "differences": detail.get("differences"),
            "seconds": float(seconds) if isinstance(seconds, int | float) else None}


@router.get("/audit/verify")
def verify_page(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The last recorded verification; with ``run=1`` a new one, its result and how long it took."""
    context: dict[str, Any] = {"title": "Verify the audit log", "section": "Audit log", "report": None,
                               "seconds": None, "problem": None, "last": None, "cut_note": None,
                               "expect_head": request.query_params.get("expect_head", "")[:64]}
    status = 200
    try:
        params = query_params(request, {"run": 1, "expect_head": 64})
        if params.get("run", "1") != "1":
            raise BadQuery("run: 1 runs the verification")
        expect_head = params.get("expect_head")
        if expect_head is not None and not all(c in "0123456789abcdefABCDEF" for c in expect_head):
            raise BadQuery("expect_head: a head hash is 64 hexadecimal digits")
    except BadQuery as exc:
        context["problem"], status, params = refused(request, exc), BAD_STATUS, {}
    with face(request).rt.engine.connect() as conn:
        context["last"] = _last_verification(conn)
    headers = {}
    if params.get("run") == "1":
        if _VERIFYING.acquire(blocking=False):
            try:
                _RUNNING.update(actor=viewer.principal.actor, since=utcnow())
                started = time.perf_counter()
                context["report"] = routes_reads.verify(request, expect_head=params.get("expect_head"))
                context["seconds"] = time.perf_counter() - started
            finally:
                _RUNNING.clear()
                _VERIFYING.release()
            request.state.audit_detail = {**getattr(request.state, "audit_detail", {}),
                                          "seconds": round(context["seconds"], 3)}
        else:
            running = dict(_RUNNING)
            by = f" (started by {running['actor']} at {isoformat(running['since'])})" if running else ""
            context["problem"], status = refused(
                request, f"A verification is running already{by}; one runs at a time, as each reads the whole "
                         f"log. Try again in a moment."), 409
            headers["Retry-After"] = str(RETRY_SECONDS)
    with face(request).rt.engine.connect() as conn:
        context["cut_note"] = _cut_note(request, conn)
    answer = render(request, "verify.html", viewer, status_code=status, **context)
    answer.headers.update(headers)
    return answer
