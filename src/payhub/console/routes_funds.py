"""Console pages of funds and programs (docs/console.md, Funds and programs).

``GET /console/funds`` lists each fund a program keeps for a holder (co-op accruals, MDF allocations, loyalty
points) as ``payhub funds list`` does (:func:`payhub.reports.funds`): credited, spent, expired unspent, the balance
and the next expiry, at a chosen time, filtered by program and holder, a page at a time by the fund's key.

``GET /console/programs`` lists the programs in the settings or with recorded versions
(:func:`payhub.reports.program_summaries`: counted and found in SQL, no version's parameters read): the version the
settings select now (the one whose fingerprint is that of the program's section, as the daemon registers it), the
latest and how many. ``GET /console/programs/{name}`` shows the versions of one program, oldest first and a page at
a time (:func:`payhub.reports.program_versions`), with their parameters as the canonical JSON the fingerprint is
taken over; its current version is found by that fingerprint.

Query parameters are read by :mod:`payhub.console.params`: a bad one is answered 422 with a message (the funds and
programs pages show it with their form), a program name that cannot be one or names none is not found (404).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from payhub import reports
from payhub.audit import canonical_json
from payhub.clock import isoformat, parse_instant, utcnow
from payhub.console.params import (
    BAD_STATUS,
    MAX_ID,
    NAME_LENGTH,
    NUMBER_LENGTH,
    BadQuery,
    keyset,
    page_limit,
    query_params,
    refuse,
    refused,
    url,
    whole_number,
)
from payhub.console.web import PREFIX, Viewer, page, render
from payhub.errors import InvalidRecord
from payhub.http.state import face
from payhub.pipeline.calculate import program_parameters

router = APIRouter(prefix=PREFIX, include_in_schema=False)

FUNDS = f"{PREFIX}/funds"
FUND_PARAMETERS = {"program": NAME_LENGTH, "holder": NAME_LENGTH, "at": 64, "limit": NUMBER_LENGTH,
                   "after_program": NAME_LENGTH, "after_holder": NAME_LENGTH, "after_unit": 16}
"""The funds page's parameters and their longest text."""


def _fund_filters(params: Mapping[str, str]) -> dict[str, Any]:
    """The funds listing's arguments from the checked parameters: program, holder, the time (now when absent), the
    fund key to page after (the three ``after_`` parts together, or none) and the limit; else
    :class:`~payhub.console.params.BadQuery`."""
    at_text = params.get("at")
    try:
        at = parse_instant(at_text, default_tz=UTC) if at_text else utcnow()
    except InvalidRecord as exc:
        raise BadQuery(f"as of: {exc} (use ISO 8601, e.g. 2026-03-31 or 2026-03-31T12:00:00Z)") from None
    after_parts = [params.get(f"after_{part}") for part in ("program", "holder", "unit")]
    if any(part is not None for part in after_parts) and not all(part is not None for part in after_parts):
        raise BadQuery("after_program, after_holder and after_unit go together (use the next-page link)")
    after = (after_parts[0], after_parts[1], after_parts[2]) \
        if after_parts[0] is not None and after_parts[1] is not None and after_parts[2] is not None else None
    return {"program": params.get("program"), "holder": params.get("holder"), "at": at, "after": after,
            "limit": page_limit(params)}


@router.get("/funds")
def funds_page(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The funds matching the filters at the chosen time, a page at a time."""
    form = {name: request.query_params.get(name, "")[:FUND_PARAMETERS[name]] for name in ("program", "holder", "at")}
    context: dict[str, Any] = {"title": "Funds", "section": "Funds", "form": form, "funds": None, "next_href": None,
                               "at": None, "problem": None}
    try:
        chosen = _fund_filters(query_params(request, FUND_PARAMETERS))
    except BadQuery as exc:
        return render(request, "funds.html", viewer, status_code=BAD_STATUS,
                      **{**context, "problem": refused(request, exc)})
    limit = chosen["limit"]
    with face(request).rt.engine.connect() as conn:
        rows, following = keyset(
            reports.funds(conn, program=chosen["program"], holder=chosen["holder"], at=chosen["at"],
                          after=chosen["after"], limit=limit + 1), limit,
            lambda last: url(FUNDS, {"program": chosen["program"], "holder": chosen["holder"],
                                     "at": isoformat(chosen["at"]), "limit": limit, "after_program": last["program"],
                                     "after_holder": last["holder"], "after_unit": last["unit"]}))
    request.state.audit_detail = {"rows": len(rows)}
    return render(request, "funds.html", viewer, **{**context, "funds": rows, "next_href": following,
                                                   "at": chosen["at"]})


def program_href(name: str) -> str:
    """The console page of program ``name``."""
    return f"{PREFIX}/programs/{quote(name, safe='')}"


def _program_rows(request: Request) -> list[dict[str, Any]]:
    """Each program with versions or in the settings: its latest version, the version the settings select now
    (None when they are not registered yet, or the program is not enabled), and how many versions it has."""
    programs = face(request).rt.settings.programs
    fingerprints = {name: program_parameters(section)[1] for name, section in programs.items() if section.enabled}
    with face(request).rt.engine.connect() as conn:
        found = {name: {"name": name, **summary} for name, summary in
                 reports.program_summaries(conn, fingerprints).items()}
    for name in programs:
        found.setdefault(name, {"name": name, "count": 0, "latest": None, "current": None})
    for name, row in found.items():
        section = programs.get(name)
        row["href"] = program_href(name)
        row["state"] = "not in the settings" if section is None else "enabled" if section.enabled else "disabled"
        row["calculator"] = section.calculator if section is not None else row["latest"]["calculator"]
    return [found[name] for name in sorted(found)]


@router.get("/programs")
def programs_page(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """Every program with its current and latest version."""
    try:
        query_params(request, {})
    except BadQuery as exc:
        return render(request, "programs.html", viewer, status_code=BAD_STATUS, title="Programs",
                      section="Programs", programs=[], problem=refused(request, exc))
    rows = _program_rows(request)
    request.state.audit_detail = {"rows": len(rows)}
    return render(request, "programs.html", viewer, title="Programs", section="Programs", programs=rows,
                  problem=None)


@router.get("/programs/{name:path}")
def program_page(request: Request, name: str, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """Every version of program ``name``, oldest first, with its parameters, calculator, fingerprint and time."""
    if len(name) > NAME_LENGTH or "\x00" in name:
        request.state.refusal = "program name too long"
        raise HTTPException(404, f"no program has a name that long or with a NUL (at most {NAME_LENGTH} characters)")
    try:
        params = query_params(request, {"after": NUMBER_LENGTH, "limit": NUMBER_LENGTH})
        after = whole_number(params, "after", 0, MAX_ID)
        limit = page_limit(params)
    except BadQuery as exc:
        raise refuse(request, exc) from None
    section = face(request).rt.settings.programs.get(name)
    wanted = program_parameters(section)[1] if section is not None and section.enabled else None
    with face(request).rt.engine.connect() as conn:
        current = next((v["version"] for v in reports.program_versions(conn, program=name, fingerprint=wanted)),
                       None) if wanted is not None else None
        rows, following = keyset(reports.program_versions(conn, program=name, after=after, limit=limit + 1), limit,
                                 lambda last: url(program_href(name), {"after": last["id"], "limit": limit}))
    if not rows and section is None and after is None:
        request.state.refusal = "nothing found"
        raise HTTPException(404, f"no program is named {name!r}")
    versions = []
    for row in rows:
        text = canonical_json(row["params"])
        versions.append({**row, "params_text": text, "current": row["version"] == current,
                         "intact": hashlib.sha256(text.encode()).hexdigest() == row["fingerprint"]})
    request.state.audit_detail = {"rows": len(versions)}
    state = "not in the settings" if section is None else "enabled" if section.enabled else "disabled"
    return render(request, "program.html", viewer, title=f"Program {name}", section="Programs", name=name,
                  state=state, current=current, versions=versions, next_href=following)
