"""Console pages: the approvals queue and the held rewards and payouts, with the operators' decisions on them
(docs/console.md, Approvals and holds).

``GET /console/approvals`` lists the rewards awaiting approval, with who approved each so far and how many approvals
it needs; ``GET /console/held`` lists the held rewards, the held payouts (a screening hold with its denials and any
pending release request) and the payouts whose outcome is not known (``unknown``, ``unresolved``). Each list pages
by keyset through :mod:`payhub.reports`.

The actions are form posts (operator role, CSRF checked by :func:`~payhub.console.web.action`):
``/console/rewards/{id}/approve|hold|release|cancel``, ``/console/rewards/approve`` (the checked rows of the
queue) and ``/console/payouts/{id}/release|cancel|resolve``. Each calls the same decision as the API and the CLI
(:mod:`payhub.pipeline.reward_actions`, :mod:`payhub.pipeline.payout_actions`) through a runtime signing as the
session's token, so four-eyes approvals and two-operator releases count each token as its own person. The answer
is a 303 back to the page the form was on (``back``, a console path) with a notice saying what was done, or why it
was refused (nothing changed then). A malformed id is answered 404, a malformed query parameter or form 422.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import Connection, select

from payhub import reports
from payhub.compliance.shown import Opener
from payhub.console.web import PREFIX, Viewer, action, done, local_path, opener, page, query_string, render
from payhub.db.schema import approvals, events
from payhub.errors import PayhubError
from payhub.http.routes_actions import ID_BOUND, MAX_NAME, MAX_TEXT
from payhub.http.state import acting, face
from payhub.pipeline import holds, payout_actions, reward_actions
from payhub.pipeline.operator import operator_key
from payhub.runtime import Runtime, Tx
from payhub.states import HoldCode, PayoutHold, PayoutStatus, RewardStatus
from payhub.store import release_requests
from payhub.tokens import recordable

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 50
"""Rows per list unless ``limit`` says otherwise."""
MAX_PAGE = 200
"""The largest ``limit``."""
MAX_FILTER = 200
"""The longest program or payee filter (as the database stores them)."""
MAX_BULK = MAX_PAGE
"""The most rewards one bulk approval names."""
OPEN_STATES: tuple[str, ...] = (PayoutStatus.UNRESOLVED, PayoutStatus.UNKNOWN)
"""Payout states whose outcome is not known and which an operator may resolve (``payout_actions.resolve``)."""
RESOLUTIONS = {"paid": "paid", "sent": "sent (accepted, not yet paid)", "not-sent": "not sent (send it again)"}
"""The outcomes an operator may record for an unresolved or unknown payout, as the form offers them."""
_ID = re.compile(r"[0-9]{1,19}")

Operator = Annotated[Viewer, Depends(action("operator"))]
Reader = Annotated[Viewer, Depends(page("auditor"))]


# --------------------------------------------------------------------------------------------- parameters


def _invalid(request: Request, message: str) -> HTTPException:
    request.state.refusal = message
    return HTTPException(422, message)


def _param(request: Request, name: str, max_length: int = MAX_FILTER) -> str:
    """The query parameter ``name`` ('' when absent), trimmed; 422 when given twice, too long or not storable."""
    given = request.query_params.getlist(name)
    if len(given) > 1:
        raise _invalid(request, f"the parameter {name} is given more than once")
    value = given[0] if given else ""
    if len(value) > max_length:
        raise _invalid(request, f"the parameter {name} is longer than {max_length} characters")
    try:
        return recordable(value)
    except ValueError as exc:
        raise _invalid(request, f"the parameter {name} {exc}") from None


def _choice(request: Request, name: str, allowed: Iterable[str], default: str = "") -> str:
    value = _param(request, name) or default
    if value and value not in allowed:
        raise _invalid(request, f"the parameter {name} must be one of {', '.join(allowed)}")
    return value


def _number(request: Request, name: str, low: int = 0, high: int = ID_BOUND - 1) -> int | None:
    """The query parameter ``name`` as an integer from ``low`` to ``high`` (None when absent); else 422."""
    text = _param(request, name)
    if not text:
        return None
    if not _ID.fullmatch(text) or not low <= int(text) <= high:
        raise _invalid(request, f"the parameter {name} must be a whole number from {low} to {high}")
    return int(text)


def _limit(request: Request) -> int:
    return _number(request, "limit", 1, MAX_PAGE) or PAGE_SIZE


def _row_id(request: Request, text: str, kind: str) -> int:
    """A reward's or payout's id from the path; 404 when it cannot be one."""
    if not _ID.fullmatch(text) or not 1 <= int(text) < ID_BOUND:
        request.state.refusal = f"not a {kind} id"
        raise HTTPException(404, f"there is no such {kind}: its id must be a whole number from 1")
    return int(text)


def _page(rows: Iterable[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The first ``limit`` rows, and whether there are more (one more row is read to know)."""
    found = list(islice(rows, limit + 1))
    return found[:limit], len(found) > limit


def _path(name: str, values: dict[str, Any]) -> str:
    query = query_string(values)
    return f"{PREFIX}/{name}" + (f"?{query}" if query else "")


# ------------------------------------------------------------------------------------------------ approvals


def _approvals(conn: Connection, reward_ids: list[int]) -> dict[int, list[Any]]:
    """Who approved each reward and when, in order."""
    given: dict[int, list[Any]] = {}
    if reward_ids:
        for row in conn.execute(select(approvals).where(approvals.c.reward_id.in_(reward_ids))
                                .order_by(approvals.c.approved_at, approvals.c.approver)):
            given.setdefault(row.reward_id, []).append(row)
    return given


def _events(conn: Connection, event_ids: list[int]) -> dict[int, Any]:
    """The CRM reference of each event: its key, source, object and type."""
    if not event_ids:
        return {}
    query = select(events.c.id, events.c.key, events.c.source, events.c.object_type, events.c.object_id,
                   events.c.event_type).where(events.c.id.in_(sorted(set(event_ids))))
    return {row.id: row for row in conn.execute(query)}


def _needed(row: dict[str, Any]) -> int:
    """The approvals a reward needs, from its listing's ``given/needed`` (at least one)."""
    text = row.get("approvals") or "0/1"
    return max(int(text.rpartition("/")[2]), 1)


@router.get("/approvals")
def approvals_page(request: Request, viewer: Reader) -> Response:
    """Rewards awaiting approval, oldest (or newest) first, by program and payee."""
    program, payee = _param(request, "program"), _param(request, "payee")
    order = _choice(request, "order", ("oldest", "newest"), "oldest")
    newest = order == "newest"
    after, before, limit = _number(request, "after"), _number(request, "before"), _limit(request)
    if (after is not None and newest) or (before is not None and not newest):
        raise _invalid(request, "after pages the oldest-first queue, before the newest-first one")
    filters = {"program": program, "payee": payee, "order": "newest" if newest else "", "limit": limit
               if limit != PAGE_SIZE else ""}
    me = viewer.principal.actor
    with face(request).rt.engine.connect() as conn:
        rows, more = _page(reports.rewards(conn, status=RewardStatus.AWAITING_APPROVAL, program=program or None,
                                           payee=payee or None, after=after, before=before, newest_first=newest,
                                           limit=limit + 1), limit)
        given = _approvals(conn, [r["id"] for r in rows])
        refs = _events(conn, [r["event"] for r in rows])
    queue = [{**row, "needed": _needed(row), "given": given.get(row["id"], []), "ref": refs.get(row["event"]),
              "mine": next((a for a in given.get(row["id"], []) if a.approver == me), None)} for row in rows]
    request.state.audit_detail = {"rows": len(queue)}
    cursor = {"before" if newest else "after": rows[-1]["id"]} if more else None
    here = _path("approvals", {**filters, "after": after, "before": before})
    return render(request, "approvals.html", viewer, title="Approvals", section="Approvals", rows=queue,
                  filters=filters, program=program, payee=payee, newest=newest, here=here, max_bulk=MAX_BULK,
                  programs=sorted(face(request).rt.settings.programs),
                  next_href=_path("approvals", {**filters, **cursor}) if cursor else None)


# ----------------------------------------------------------------------------------------------------- held


def _held_payouts(conn: Connection, rows: list[dict[str, Any]], shown: Opener) -> list[dict[str, Any]]:
    """Each held payout with the hold its audit chain records, that hold's denials and the pending release
    requests (who asked, when, why); its reason and denials as ``shown`` shows sealed values."""
    recorded = holds.payout_entries(conn, [r["id"] for r in rows])
    found = []
    for row in rows:
        entries = recorded.get(row["id"], [])
        found.append({**row, "reason": shown(row["reason"]), "hold": holds.hold_recorded(entries).value,
                      "denials": [shown(text) for text in holds.hold_denials(entries)],
                      "requests": release_requests.pending(Tx(conn), row["id"])})
    return found


@router.get("/held")
def held_page(request: Request, viewer: Reader) -> Response:
    """Held rewards, held payouts and payouts of unknown outcome, each list paged and filtered on its own."""
    payee = _param(request, "payee")
    reward_code = _choice(request, "reward_code", [c.value for c in HoldCode])
    payout_code = _choice(request, "payout_code", [c.value for c in PayoutHold])
    state = _choice(request, "state", OPEN_STATES)
    limit = _limit(request)
    cursors = {name: _number(request, name) for name in ("rewards_after", "payouts_after", "open_after")}
    filters = {"payee": payee, "reward_code": reward_code, "payout_code": payout_code, "state": state,
               "limit": limit if limit != PAGE_SIZE else ""}
    with face(request).rt.engine.connect() as conn:
        shown = opener(conn, viewer)
        rewards, more_rewards = _page(reports.rewards(
            conn, status=RewardStatus.HELD, hold_code=reward_code or None, payee=payee or None,
            after=cursors["rewards_after"], limit=limit + 1), limit)
        payouts, more_payouts = _page(reports.payouts(
            conn, status=PayoutStatus.HELD, hold_code=payout_code or None, payee=payee or None,
            after=cursors["payouts_after"], limit=limit + 1), limit)
        payouts = _held_payouts(conn, payouts, shown)
        open_, more_open = _page(reports.payouts(
            conn, status=state or OPEN_STATES, payee=payee or None, after=cursors["open_after"], limit=limit + 1),
            limit)
        for row in (*rewards, *open_):  # on the listing's connection: keys are read there
            row["reason"] = shown(row["reason"])
    request.state.audit_detail = {"rows": len(rewards) + len(payouts) + len(open_)}
    me = operator_key(viewer.principal.actor)
    for row in payouts:
        row["mine"] = next((r for r in row["requests"] if operator_key(r.operator) == me), None)
    here = _path("held", {**filters, **cursors})

    def following(name: str, rows: list[dict[str, Any]], more: bool) -> str | None:
        return _path("held", {**filters, **cursors, name: rows[-1]["id"]}) if more else None

    return render(request, "held.html", viewer, title="Held", section="Held", filters=filters, here=here,
                  rewards=rewards, payouts=payouts, open=open_, reward_codes=[c.value for c in HoldCode],
                  payout_codes=[c.value for c in PayoutHold], states=OPEN_STATES, resolutions=RESOLUTIONS,
                  min_justification=payout_actions.MIN_JUSTIFICATION,
                  next_rewards=following("rewards_after", rewards, more_rewards),
                  next_payouts=following("payouts_after", payouts, more_payouts),
                  next_open=following("open_after", open_, more_open))


# ------------------------------------------------------------------------------------------------- actions


class _Refusal(Exception):
    """A form field the decision cannot take: said in the notice, nothing is decided."""


def _text(viewer: Viewer, name: str, max_length: int = MAX_TEXT, *, required: bool = True) -> str:
    """The form field ``name`` as the API takes a reason: at most ``max_length`` characters, storable, without a
    token in it, not blank when ``required``."""
    value = viewer.field(name)
    if len(value) > max_length:
        raise _Refusal(f"the {name.replace('_', ' ')} is longer than {max_length} characters")
    try:
        value = recordable(value)
    except ValueError as exc:
        raise _Refusal(f"the {name.replace('_', ' ')} {exc}") from None
    if required and not value:
        raise _Refusal(f"a {name.replace('_', ' ')} is required (it is recorded in the audit log)")
    return value


def _decide(request: Request, viewer: Viewer, default: str, what: str, asked: dict[str, Any],
            decision: Callable[[Runtime], str]) -> Response:
    """Run ``decision`` signed by the session's token, then go back to the form's page with what it did, or with
    why ``what`` was refused (a :class:`~payhub.errors.PayhubError`, or a field it cannot take). A refusal is
    answered by the same redirect, but the request's audit entry says ``refused`` with the reason, as the API's 409
    is recorded."""
    request.state.audit_detail = {"asked": asked}
    try:
        notice = decision(acting(request, viewer.principal))
    except (PayhubError, _Refusal) as exc:
        request.state.outcome = "refused"
        request.state.refusal = str(exc)
        notice = f"{what} refused: {exc}"
    return done(request, viewer, local_path(viewer.field("back"), default), notice)


def _approved(approval: reward_actions.Approval, actor: str) -> str:
    state = ("it is now pending and will be scheduled" if approval.pending
             else "it needs another approval by a different operator")
    return (f"Reward {approval.reward_id} approved by {actor} ({approval.approvals} of {approval.needed} "
            f"approvals): {state}.")


QUEUE = f"{PREFIX}/approvals"
HELD = f"{PREFIX}/held"


@router.post("/rewards/{reward_id}/approve")
def approve(request: Request, reward_id: str, viewer: Operator) -> Response:
    rid = _row_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        return _approved(reward_actions.approve(rt, [rid])[0], viewer.principal.actor)

    return _decide(request, viewer, QUEUE, f"Approving reward {rid}", {"ids": [rid]}, decision)


@router.post("/rewards/approve")
def approve_checked(request: Request, viewer: Operator) -> Response:
    """Approve the checked rewards of the queue: all of them, or none when any is refused."""
    given = viewer.form.getlist("id") if viewer.form is not None else []
    if len(given) > MAX_BULK:
        raise _invalid(request, f"at most {MAX_BULK} rewards are approved at once")
    if not all(isinstance(v, str) and _ID.fullmatch(v) and 1 <= int(v) < ID_BOUND for v in given):
        raise _invalid(request, "each id must be a reward's id")
    ids = list(dict.fromkeys(int(str(v)) for v in given))

    def decision(rt: Runtime) -> str:
        if not ids:
            raise _Refusal("no reward was checked")
        done_ = reward_actions.approve(rt, ids)
        parts = [f"{a.reward_id} ({'pending' if a.pending else f'{a.approvals} of {a.needed}'})" for a in done_]
        return f"{len(done_)} rewards approved by {viewer.principal.actor}: {', '.join(parts)}."

    return _decide(request, viewer, QUEUE, "Approving the checked rewards", {"ids": ids}, decision)


@router.post("/rewards/{reward_id}/hold")
def hold(request: Request, reward_id: str, viewer: Operator) -> Response:
    rid = _row_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        reason = _text(viewer, "reason")
        reward_actions.hold(rt, [rid], reason)
        return f"Reward {rid} held by {viewer.principal.actor} (hold code operator)."

    return _decide(request, viewer, QUEUE, f"Holding reward {rid}", {"ids": [rid]}, decision)


@router.post("/rewards/{reward_id}/release")
def release(request: Request, reward_id: str, viewer: Operator) -> Response:
    rid = _row_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        moved = reward_actions.release(rt, [rid], _text(viewer, "reason"))
        status = moved[rid]
        then = ("it is pending and will be scheduled" if status == RewardStatus.PENDING
                else "it is back in the approvals queue")
        return f"Reward {rid} released by {viewer.principal.actor}: {then}."

    return _decide(request, viewer, HELD, f"Releasing reward {rid}", {"ids": [rid]}, decision)


@router.post("/rewards/{reward_id}/cancel")
def cancel(request: Request, reward_id: str, viewer: Operator) -> Response:
    rid = _row_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        reward_actions.cancel(rt, [rid], _text(viewer, "reason"))
        return f"Reward {rid} cancelled by {viewer.principal.actor}: it will never be paid."

    return _decide(request, viewer, QUEUE, f"Cancelling reward {rid}", {"ids": [rid]}, decision)


@router.post("/payouts/{payout_id}/release")
def release_payout(request: Request, payout_id: str, viewer: Operator) -> Response:
    pid = _row_id(request, payout_id, "payout")

    def decision(rt: Runtime) -> str:
        done_ = payout_actions.release(rt, pid, _text(viewer, "reason"))
        if not done_.released:
            return (f"Payout {pid}: the release requested by {done_.operators[0]} is recorded; a {done_.hold_code} "
                    "hold is released by a second, different operator.")
        return (f"Payout {pid} released from its {done_.hold_code} hold by {' and '.join(done_.operators)}: it is "
                "scheduled, and screened and checked again before it is sent.")

    return _decide(request, viewer, HELD, f"Releasing payout {pid}", {"payout": pid}, decision)


@router.post("/payouts/{payout_id}/cancel")
def cancel_payout(request: Request, payout_id: str, viewer: Operator) -> Response:
    pid = _row_id(request, payout_id, "payout")

    def decision(rt: Runtime) -> str:
        payout_actions.cancel(rt, pid, _text(viewer, "reason"))
        return (f"Payout {pid} cancelled by {viewer.principal.actor}: its rewards are held as owed (release them to "
                "pay them in a new payout).")

    return _decide(request, viewer, HELD, f"Cancelling payout {pid}", {"payout": pid}, decision)


@router.post("/payouts/{payout_id}/resolve")
def resolve_payout(request: Request, payout_id: str, viewer: Operator) -> Response:
    pid = _row_id(request, payout_id, "payout")
    outcome = viewer.field("outcome")
    if outcome not in RESOLUTIONS:
        raise _invalid(request, f"the outcome must be one of {', '.join(RESOLUTIONS)}")

    def decision(rt: Runtime) -> str:
        reason = _text(viewer, "reason")
        reference = _text(viewer, "provider_ref", MAX_NAME, required=False)
        status = payout_actions.resolve(rt, pid, outcome, reason, reference or None)
        then = ("it is sent again with the same idempotency key" if status == PayoutStatus.RETRYING
                else f"it is {status}, without being sent again")
        return f"Payout {pid} resolved by {viewer.principal.actor} as {outcome}: {then}."

    return _decide(request, viewer, HELD, f"Resolving payout {pid}", {"payout": pid, "outcome": outcome}, decision)
