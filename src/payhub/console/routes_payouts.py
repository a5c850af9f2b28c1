"""Console pages of one payout, reward and event with their whole provenance (docs/console.md, Search and provenance).

``GET /console/payouts/{id}``, ``/console/rewards/{id}`` and ``/console/events/{id}`` draw
:func:`payhub.provenance.explain`'s answer (what ``payhub explain`` prints and ``/api/v1/explain`` returns) from the
CRM record down to the rail's document. An id that is not a whole number is refused (422), one that names nothing is
not found (404); the pages take no query parameters (any is refused, 422: :mod:`payhub.console.params`).

Text from outside payhub (CRM records, plugins' reasons, audit details) is clipped by the templates' filters
(:func:`payhub.console.web.clip`, :func:`~payhub.console.web.json_text`) and its control and format characters (bidi
overrides, zero-width characters) are shown as escapes; autoescaping does the rest. Personal values
sealed in the answer are shown as the API's audit reads show them (:class:`payhub.compliance.shown.Opener`): opened
for operators and admins, ``[erased]`` once their payee is erased, ``[sealed]`` for auditors.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Connection

from payhub import provenance, reports
from payhub.console.params import not_found, page_id
from payhub.console.web import PREFIX, Viewer, opener, page, render
from payhub.http.state import face

router = APIRouter(prefix=PREFIX, include_in_schema=False)


# ------------------------------------------------------------------------------------------------ shared reads


def rail_plugins(request: Request) -> dict[str, str]:
    """Each configured rail's name to its plugin's, to read the rails' document references."""
    return {name: section.plugin_name(name) for name, section in face(request).rt.settings.rails.items()}


def explained(conn: Connection, request: Request, viewer: Viewer, ref: str) -> Any:
    """:func:`payhub.provenance.explain` of ``ref`` with sealed personal values shown for the viewer's role, or
    None when ``ref`` names nothing."""
    found = provenance.explain(conn, ref, rail_plugins(request))
    if found is None:
        return None
    return opener(conn, viewer)(found)


def payout_rows(conn: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The payouts listing's rows (:data:`payhub.reports.PAYOUT_COLUMNS`: hold code, attempts) of ``ids``, read in
    one query."""
    return {row["id"]: row for row in reports.payouts(conn, ids=ids)} if ids else {}


# ------------------------------------------------------------------------------------------------ pages


@router.get("/payouts/{payout_id}")
def payout_page(request: Request, payout_id: str, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """A payout's whole provenance: each item from its CRM record to its approvals, then screening, the payout,
    its attempts and the rail's document."""
    number = page_id(request, payout_id, "payout")
    with face(request).rt.engine.connect() as conn:
        found = explained(conn, request, viewer, f"payout:{number}")
        if found is None:
            raise not_found(request, "payout", number)
        row = payout_rows(conn, [number]).get(number, {})
    request.state.audit_detail = {"payout": number, "items": len(found["items"])}
    return render(request, "payout.html", viewer, title=f"Payout {number}", section="Search", data=found,
                  payout=found["payout"], hold_code=row.get("hold_code"), attempt_count=row.get("attempts"))


@router.get("/rewards/{reward_id}")
def reward_page(request: Request, reward_id: str, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """A reward's provenance: CRM record, program version, calculation, rules, approvals, and its payouts."""
    number = page_id(request, reward_id, "reward")
    with face(request).rt.engine.connect() as conn:
        found = explained(conn, request, viewer, f"reward:{number}")
        if found is None:
            raise not_found(request, "reward", number)
        rows = payout_rows(conn, [p["id"] for p in found["payouts"]])
    request.state.audit_detail = {"reward": number}
    return render(request, "reward.html", viewer, title=f"Reward {number}", section="Search", data=found,
                  hold_codes={k: v.get("hold_code") for k, v in rows.items()})


@router.get("/events/{event_id}")
def event_page(request: Request, event_id: str, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """An event: its CRM record, every program's calculation of it, its rewards, fund movements and payouts."""
    number = page_id(request, event_id, "event")
    with face(request).rt.engine.connect() as conn:
        found = explained(conn, request, viewer, f"event:{number}")
        if found is None or not found["events"]:
            raise not_found(request, "event", number)
    request.state.audit_detail = {"event": number}
    return render(request, "event.html", viewer, title=f"Event {number}", section="Search", data=found,
                  view=found["events"][0])
