"""Reads of API v1 for auditors (and every role above): the listings, ``explain``, ``trace`` and ``verify``
(docs/api.md, Reads).

Each listing pages by keyset through :mod:`payhub.reports` (the CLI's queries): ``after`` the last id seen, at most
``limit`` rows in ascending id order, and the relative URL of the ``next`` page with the same filters, null after
the last row (one row more than the page is read to know). Each answer adds the number of rows it returned to the
request's audit entry.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import islice
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from payhub import checkpoints, provenance, reports, states
from payhub.audit import verify as verify_chain
from payhub.audit_query import AuditFilters
from payhub.clock import isoformat, utcnow
from payhub.compliance.shown import Opener, reveals
from payhub.crosscheck import AuditedIds, differences
from payhub.db.schema import audit_log
from payhub.http.auth import require
from payhub.http.models import (
    AuditPage,
    CalculationPage,
    Detail,
    EventPage,
    Explanation,
    FundPage,
    Instant,
    Invalid,
    PayoutPage,
    ProgramVersionPage,
    RewardPage,
    TraceNode,
    VerifyReport,
)
from payhub.http.state import face

API = "/api/v1"
MAX_PAGE = 1000
"""The largest ``limit``."""
MAX_DIFFERENCES = 1000
"""The most differences between the tables and the chain that ``verify`` lists (it counts them all)."""
ID_BOUND = 2**63

router = APIRouter(prefix=API, tags=["reads"], dependencies=[Depends(require("auditor"))],
                   generate_unique_id_function=lambda route: route.name,  # operation ids: list_events, explain…
                   responses={401: {"model": Detail, "description": "No valid token."},
                              403: {"model": Detail, "description": "The token's role may not read."},
                              422: {"model": Invalid, "description": "A parameter is not valid."}})

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Rows per page, 1 to {MAX_PAGE}.")]
After = Annotated[int | None, Query(ge=0, lt=ID_BOUND, description="Rows with an id above this one (the last id "
                                    "of the previous page; `next` carries it).")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Detail, "description": "The reference names nothing."}}
Ref = Annotated[str, Path(min_length=1, max_length=600, description=(
    "`payout:N`, `reward:N` (or a bare `N`), `event:N`, `record:ID` (a CRM object id), an event key "
    "(`source:Type:id:transition`) or a CRM object id; URL-encoded."))]


def _text(value: Any) -> str:
    return isoformat(value) if isinstance(value, datetime) else str(value)


def _page(request: Request, rows: Iterator[dict[str, Any]], limit: int, cursor: Callable[[dict[str, Any]], Any],
          filters: dict[str, Any]) -> dict[str, Any]:
    """The first ``limit`` of ``rows`` (read with one more) and the URL of the page after the last of them."""
    items = list(islice(rows, limit + 1))
    following = None
    if len(items) > limit:
        del items[limit:]
        query = {name: _text(value) for name, value in filters.items() if value is not None}
        following = f"{request.url.path}?{urlencode({**query, 'after': cursor(items[-1]), 'limit': limit})}"
    request.state.audit_detail = {"rows": len(items)}
    return {"items": items, "next": following}


def _by_id(row: dict[str, Any]) -> Any:
    return row["id"]


@router.get("/events", response_model=EventPage, summary="List events")
def list_events(request: Request, after: After = None, limit: Limit = 100,
           status: Annotated[states.EventStatus | None, Query(description="Only events in this status.")] = None,
           source: Annotated[str | None, Query(max_length=200, description="Only events of this source.")] = None,
           ) -> dict[str, Any]:
    """Trigger events read from the sources, oldest first; waiting and quarantined ones carry their reason."""
    with face(request).rt.engine.connect() as conn:
        rows = reports.events(conn, status=status, source=source, after=after, limit=limit + 1)
        return _page(request, rows, limit, _by_id, {"status": status, "source": source})


@router.get("/rewards", response_model=RewardPage, summary="List rewards")
def list_rewards(request: Request, after: After = None, limit: Limit = 100,
            status: Annotated[states.RewardStatus | None, Query(description="Only rewards in this status.")] = None,
            payee: Annotated[str | None, Query(max_length=200, description="Only rewards of this payee.")] = None,
            program: Annotated[str | None, Query(max_length=200, description="Only rewards of this program.")] = None,
            ) -> dict[str, Any]:
    """Rewards calculated from events, oldest first: awaiting ones show their approvals, held and carried ones why."""
    with face(request).rt.engine.connect() as conn:
        rows = reports.rewards(conn, status=status, payee=payee, program=program, after=after, limit=limit + 1)
        return _page(request, rows, limit, _by_id, {"status": status, "payee": payee, "program": program})


@router.get("/calculations", response_model=CalculationPage, summary="List calculations that paid nothing")
def list_calculations(request: Request, after: After = None, limit: Limit = 100,
                 status: Annotated[reports.Unrewarded | None, Query(
                     description="`not_eligible` or `failed`; both when absent.")] = None,
                 payee: Annotated[str | None, Query(max_length=200, description="Only events of this payee.")] = None,
                 program: Annotated[str | None, Query(max_length=200, description="Only this program's.")] = None,
                 ) -> dict[str, Any]:
    """Calculations that produced no reward (`not_eligible`, or `failed` when the calculator or a rule raised), with
    the reason they recorded, by calculation id: what `payhub rewards list --not-eligible` lists."""
    with face(request).rt.engine.connect() as conn:
        rows = reports.unrewarded(conn, status=status, payee=payee, program=program, after=after, limit=limit + 1)
        return _page(request, rows, limit, lambda row: row["calculation"],
                     {"status": status, "payee": payee, "program": program})


@router.get("/payouts", response_model=PayoutPage, summary="List payouts")
def list_payouts(request: Request, after: After = None, limit: Limit = 100,
            status: Annotated[states.PayoutStatus | None, Query(description="Only payouts in this status.")] = None,
            rail: Annotated[str | None, Query(max_length=100, description="Only payouts through this rail.")] = None,
            payee: Annotated[str | None, Query(max_length=200, description="Only payouts to this payee.")] = None,
            ) -> dict[str, Any]:
    """Payouts sent through the rails, oldest first, with their state, attempts and last reason."""
    with face(request).rt.engine.connect() as conn:
        rows = reports.payouts(conn, status=status, rail=rail, payee=payee, after=after, limit=limit + 1)
        return _page(request, rows, limit, _by_id, {"status": status, "rail": rail, "payee": payee})


def _fund_cursor(row: dict[str, Any]) -> str:
    key = json.dumps([row["program"], row["holder"], row["unit"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _fund_key(text: str) -> reports.FundKey:
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == 3 and all(isinstance(part, str) for part in key)):
        raise RequestValidationError([{"loc": ("query", "after"), "type": "value_error",
                                       "msg": "not a position in the funds listing (use the `next` URL)"}])
    return key[0], key[1], key[2]


@router.get("/funds", response_model=FundPage, summary="List funds")
def list_funds(request: Request, limit: Limit = 100,
          after: Annotated[str | None, Query(max_length=8000, description=(
              "The position after the last fund of the previous page: opaque, taken from `next`."))] = None,
          program: Annotated[str | None, Query(max_length=200, description="Only this program's funds.")] = None,
          holder: Annotated[str | None, Query(max_length=200, description=(
              "Only this holder's: a payee or partner id (MDF allocations are held as `<partner>:<period>`)."))] = None,
          at: Annotated[Instant | None, Query(description=(
              "The time to show the funds at (ISO 8601 with an offset, or a date); default now. `next` keeps the "
              "time of the first page."))] = None,
          ) -> dict[str, Any]:
    """Each fund a program keeps for a holder (co-op accruals, MDF allocations, loyalty points), one per program,
    holder and unit, in that order: credited, spent, expired unspent, the balance (oldest credits spent first) and
    when the next credit with something left lapses."""
    key = _fund_key(after) if after is not None else None
    at = at or utcnow()
    with face(request).rt.engine.connect() as conn:
        rows = reports.funds(conn, program=program, holder=holder, at=at, after=key, limit=limit + 1)
        return _page(request, rows, limit, _fund_cursor, {"program": program, "holder": holder, "at": at})


@router.get("/programs", response_model=ProgramVersionPage, summary="List program versions")
def list_program_versions(request: Request, after: After = None, limit: Limit = 100,
             program: Annotated[str | None, Query(max_length=200, description="Only this program's versions.")] = None,
             ) -> dict[str, Any]:
    """Every version of every program, oldest first: a program's settings as they were each time they changed."""
    with face(request).rt.engine.connect() as conn:
        rows = reports.program_versions(conn, program=program, after=after, limit=limit + 1)
        return _page(request, rows, limit, _by_id, {"program": program})


@router.get("/audit", response_model=AuditPage, summary="Query the audit log")
def query_audit(request: Request, limit: Limit = 100,
          after: Annotated[int | None, Query(ge=0, lt=ID_BOUND, description=(
              "Entries with a sequence number above this one (`next` carries it)."))] = None,
          since: Annotated[Instant | None, Query(description="Entries at or after this time.")] = None,
          until: Annotated[Instant | None, Query(description="Entries before this time.")] = None,
          actor: Annotated[str | None, Query(max_length=200, description="Exact actor, e.g. `token:alice`.")] = None,
          action: Annotated[str | None, Query(max_length=100, description=(
              "Exact action, or a pattern with `*`, e.g. `payout.*`."))] = None,
          subject: Annotated[str | None, Query(max_length=700, description=(
              "`type:id` (e.g. `payout:12`) or a bare id."))] = None,
          ) -> dict[str, Any]:
    """Audit entries matching the filters, in chain order (oldest first), with their hashes. Personal values sealed
    in `detail` are shown opened to operators and admins (`[erased]` once their payee is erased), `[sealed]` to
    auditors; the export keeps the stored text, which the hashes cover."""
    filters = AuditFilters(since, until, actor, action, subject)
    principal = getattr(request.state, "principal", None)
    with face(request).rt.engine.connect() as conn:
        opener = Opener(conn, reveal=principal is not None and reveals(principal.role))
        rows = (opener.entry(row) for row in reports.audit_entries(conn, filters, after=after, limit=limit + 1))
        return _page(request, rows, limit, lambda row: row["seq"], {
            "since": since, "until": until, "actor": actor, "action": action, "subject": subject})


def _nothing(request: Request, ref: str) -> HTTPException:
    request.state.refusal = "nothing found"
    return HTTPException(404, f"nothing found for {ref!r}")


@router.get("/explain/{ref:path}", response_model=Explanation, responses=NOT_FOUND,
            summary="Explain a payout, reward, event or CRM record")
def explain(request: Request, ref: Ref) -> Any:
    """Why a payout, reward or event paid what it did, from the CRM record to the rail's document: what
    `payhub explain --format json` prints (`kind` says which answer)."""
    rt = face(request).rt
    rails = {name: section.plugin_name(name) for name, section in rt.settings.rails.items()}
    with rt.engine.connect() as conn:
        found = provenance.explain(conn, ref, rails)
    if found is None:
        raise _nothing(request, ref)
    return found


@router.get("/trace/{ref:path}", response_model=list[TraceNode], responses=NOT_FOUND,
            summary="Trace a CRM record to its payouts")
def trace(request: Request, ref: Ref) -> Any:
    """The chain CRM record → events → calculations → rewards → payouts → attempts: what
    `payhub audit trace --format json` prints. A bare number is a CRM object id here."""
    with face(request).rt.engine.connect() as conn:
        chain = provenance.trace(conn, ref)
    if not chain:
        raise _nothing(request, ref)
    return chain


@router.get("/verify", response_model=VerifyReport, summary="Verify the audit log")
def verify(request: Request, expect_head: Annotated[str | None, Query(max_length=64, description=(
        "A head hash recorded earlier elsewhere: the chain must pass through it."))] = None) -> dict[str, Any]:
    """`payhub audit verify` without signing: recompute the hash chain, compare the payouts and rewards with what it
    last recorded, and, when a checkpoint key (private or public) is configured, check the chain against the
    signed checkpoints of `audit.checkpoint_dir`. Reads the whole log: it takes as long as the CLI's."""
    rt = face(request).rt
    key = checkpoints.load_key(rt.settings)
    saved, problems = checkpoints.read(rt.settings.resolve(rt.settings.audit.checkpoint_dir)) if key else ([], [])
    ids = AuditedIds()
    with rt.engine.connect() as conn:
        result = verify_chain(conn, watch={cp.seq for cp in saved}, top_ids=ids.top)
        anchored = None if expect_head is None else conn.execute(
            select(audit_log.c.seq).where(audit_log.c.hash == expect_head.strip().lower())).first() is not None
        found: list[dict[str, str]] = []
        count = 0
        try:
            for difference in differences(conn, ids):
                count += 1
                if count <= MAX_DIFFERENCES:
                    found.append({"subject": difference.subject, "problem": difference.problem})
        except SQLAlchemyError as exc:  # tables dropped or reshaped outside payhub
            count += 1
            found.append({"subject": "payouts and rewards", "problem": f"cannot be read ({getattr(exc, 'orig', exc)})"})
    if key is not None:
        problems += checkpoints.check(saved, key, result)
    cut_issue = checkpoints.cut_problem(result.cut, key)  # a retention cut: signed with the checkpoint key
    if cut_issue is not None:
        problems.append(cut_issue)
    ok = result.ok and anchored is not False and not count and not problems
    request.state.audit_detail = {"ok": ok, "checked": result.checked, "first_bad": result.first_bad,
                                  "differences": count, "checkpoint_problems": len(problems)}
    return {
        "ok": ok, "checked": result.checked, "head_seq": result.head_seq, "head_hash": result.head_hash,
        "first_bad": result.first_bad, "problem": result.problem, "anchored": anchored,
        "differences": found, "difference_count": count,
        "checkpoints": {"checked": key is not None, "count": len(saved),
                        "latest_seq": max((cp.seq for cp in saved), default=None), "problems": problems}}
