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
was refused (nothing changed then; the request's audit entry says ``refused``). A malformed id, query parameter (an
unknown one among them) or form field is answered 422, an id that cannot name a row 404 (:mod:`payhub.console.params`);
an id that names no row is refused by the decision, with a notice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Connection, select

from payhub import reports
from payhub.compliance.shown import Opener
from payhub.console.params import (
    MAX_ID,
    MAX_PAGE,
    NAME_LENGTH,
    NUMBER_LENGTH,
    BadQuery,
    choice,
    keyset,
    number_in,
    page_limit,
    path_id,
    query_params,
    refuse,
    url,
    whole_number,
)
from payhub.console.web import PREFIX, Viewer, action, done, local_path, opener, page, render
from payhub.db.schema import approvals, events
from payhub.errors import PayhubError
from payhub.http.routes_actions import MAX_NAME, MAX_TEXT
from payhub.http.state import acting, face
from payhub.pipeline import holds, payout_actions, reward_actions
from payhub.pipeline.operator import operator_key
from payhub.runtime import Runtime, Tx
from payhub.states import HoldCode, PayoutHold, PayoutStatus, RewardStatus
from payhub.store import release_requests
from payhub.tokens import recordable

router = APIRouter(prefix=PREFIX, include_in_schema=False)

MAX_BULK = MAX_PAGE
"""The most rewards one bulk approval names: a page of the queue."""
OPEN_STATES: tuple[str, ...] = (PayoutStatus.UNRESOLVED, PayoutStatus.UNKNOWN)
"""Payout states whose outcome is not known and which an operator may resolve (``payout_actions.resolve``)."""
RESOLUTIONS = {"paid": "paid", "sent": "sent (accepted, not yet paid)", "not-sent": "not sent (send it again)"}
"""The outcomes an operator may record for an unresolved or unknown payout, as the form offers them."""
QUEUE = f"{PREFIX}/approvals"
HELD = f"{PREFIX}/held"
QUEUE_PARAMETERS = {"program": NAME_LENGTH, "payee": NAME_LENGTH, "order": 10, "after": NUMBER_LENGTH,
                    "before": NUMBER_LENGTH, "limit": NUMBER_LENGTH}
"""The approvals page's parameters and their longest text."""
HELD_CURSORS = ("rewards_after", "payouts_after", "open_after")
"""The held page's three listings' keyset cursors."""
HELD_PARAMETERS = {"payee": NAME_LENGTH, "reward_code": 40, "payout_code": 40, "state": 40, "limit": NUMBER_LENGTH,
                   **{name: NUMBER_LENGTH for name in HELD_CURSORS}}
"""The held page's parameters and their longest text."""

Operator = Annotated[Viewer, Depends(action("operator"))]
Reader = Annotated[Viewer, Depends(page("auditor"))]


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
    """The approvals a reward of the queue needs (at least one: it is in the queue)."""
    return max(int(row["approvals_needed"]), 1)


@router.get("/approvals")
def approvals_page(request: Request, viewer: Reader) -> Response:
    """Rewards awaiting approval, oldest (or newest) first, by program and payee."""
    try:
        params = query_params(request, QUEUE_PARAMETERS)
        newest = choice(params, "order", ("oldest", "newest"), "oldest") == "newest"
        after, before = whole_number(params, "after", 0, MAX_ID), whole_number(params, "before", 1, MAX_ID)
        limit = page_limit(params)
        if (after is not None and newest) or (before is not None and not newest):
            raise BadQuery("after pages the oldest-first queue, before the newest-first one")
    except BadQuery as exc:
        raise refuse(request, exc) from None
    program, payee = params.get("program", ""), params.get("payee", "")
    filters = {"program": program, "payee": payee, "order": "newest" if newest else "", "limit": limit}
    me = viewer.principal.actor
    with face(request).rt.engine.connect() as conn:
        rows, next_href = keyset(
            reports.rewards(conn, status=RewardStatus.AWAITING_APPROVAL, program=program or None, payee=payee or None,
                            after=after, before=before, newest_first=newest, limit=limit + 1, needed=True), limit,
            lambda last: url(QUEUE, {**filters, "before" if newest else "after": last["id"]}))
        given = _approvals(conn, [r["id"] for r in rows])
        refs = _events(conn, [r["event"] for r in rows])
    queue = [{**row, "needed": _needed(row), "given": given.get(row["id"], []), "ref": refs.get(row["event"]),
              "mine": next((a for a in given.get(row["id"], []) if a.approver == me), None)} for row in rows]
    request.state.audit_detail = {"rows": len(queue)}
    return render(request, "approvals.html", viewer, title="Approvals", section="Approvals", rows=queue,
                  filters=filters, program=program, payee=payee, newest=newest, max_bulk=MAX_BULK,
                  here=url(QUEUE, {**filters, "after": after, "before": before}),
                  programs=sorted(face(request).rt.settings.programs), next_href=next_href)


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
    try:
        params = query_params(request, HELD_PARAMETERS)
        reward_code = choice(params, "reward_code", [c.value for c in HoldCode])
        payout_code = choice(params, "payout_code", [c.value for c in PayoutHold])
        state = choice(params, "state", OPEN_STATES)
        limit = page_limit(params)
        cursors = {name: whole_number(params, name, 0, MAX_ID) for name in HELD_CURSORS}
    except BadQuery as exc:
        raise refuse(request, exc) from None
    payee = params.get("payee", "")
    filters = {"payee": payee, "reward_code": reward_code, "payout_code": payout_code, "state": state,
               "limit": limit}

    def following(name: str) -> Callable[[dict[str, Any]], str]:
        return lambda last: url(HELD, {**filters, **cursors, name: last["id"]})

    with face(request).rt.engine.connect() as conn:
        shown = opener(conn, viewer)
        rewards, next_rewards = keyset(reports.rewards(
            conn, status=RewardStatus.HELD, hold_code=reward_code or None, payee=payee or None,
            after=cursors["rewards_after"], limit=limit + 1), limit, following("rewards_after"))
        payouts, next_payouts = keyset(reports.payouts(
            conn, status=PayoutStatus.HELD, hold_code=payout_code or None, payee=payee or None,
            after=cursors["payouts_after"], limit=limit + 1), limit, following("payouts_after"))
        payouts = _held_payouts(conn, payouts, shown)
        open_, next_open = keyset(reports.payouts(
            conn, status=state or OPEN_STATES, payee=payee or None, after=cursors["open_after"], limit=limit + 1),
            limit, following("open_after"))
        for row in (*rewards, *open_):  # on the listing's connection: keys are read there
            row["reason"] = shown(row["reason"])
    request.state.audit_detail = {"rows": len(rewards) + len(payouts) + len(open_)}
    me = operator_key(viewer.principal.actor)
    for row in payouts:
        row["mine"] = next((r for r in row["requests"] if operator_key(r.operator) == me), None)
    return render(request, "held.html", viewer, title="Held", section="Held", filters=filters,
                  here=url(HELD, {**filters, **cursors}), rewards=rewards, payouts=payouts, open=open_,
                  reward_codes=[c.value for c in HoldCode], payout_codes=[c.value for c in PayoutHold],
                  states=OPEN_STATES, resolutions=RESOLUTIONS, min_justification=payout_actions.MIN_JUSTIFICATION,
                  next_rewards=next_rewards, next_payouts=next_payouts, next_open=next_open)


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
    """The notice of an approval given by ``actor``: how many of the approvals needed, and what happens next."""
    state = ("it is now pending and will be scheduled" if approval.pending
             else "it needs another approval by a different operator")
    return (f"Reward {approval.reward_id} approved by {actor} ({approval.approvals} of {approval.needed} "
            f"approvals): {state}.")


@router.post("/rewards/{reward_id}/approve")
def approve(request: Request, reward_id: str, viewer: Operator) -> Response:
    """Approve one reward, as the session's token (four eyes: a second approval needs another token)."""
    rid = path_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        return _approved(reward_actions.approve(rt, [rid])[0], viewer.principal.actor)

    return _decide(request, viewer, QUEUE, f"Approving reward {rid}", {"ids": [rid]}, decision)


@router.post("/rewards/approve")
def approve_checked(request: Request, viewer: Operator) -> Response:
    """Approve the checked rewards of the queue: all of them, or none when any is refused."""
    given = viewer.form.getlist("id") if viewer.form is not None else []
    if len(given) > MAX_BULK:
        raise refuse(request, f"at most {MAX_BULK} rewards are approved at once")
    numbers = [number_in(v, 1, MAX_ID) if isinstance(v, str) else None for v in given]
    if None in numbers:
        raise refuse(request, "each id must be a reward's id")
    ids = list(dict.fromkeys(n for n in numbers if n is not None))

    def decision(rt: Runtime) -> str:
        if not ids:
            raise _Refusal("no reward was checked")
        done_ = reward_actions.approve(rt, ids)
        parts = [f"{a.reward_id} ({'pending' if a.pending else f'{a.approvals} of {a.needed}'})" for a in done_]
        return f"{len(done_)} rewards approved by {viewer.principal.actor}: {', '.join(parts)}."

    return _decide(request, viewer, QUEUE, "Approving the checked rewards", {"ids": ids}, decision)


@router.post("/rewards/{reward_id}/hold")
def hold(request: Request, reward_id: str, viewer: Operator) -> Response:
    """Hold one reward (hold code ``operator``), with the form's reason."""
    rid = path_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        reason = _text(viewer, "reason")
        reward_actions.hold(rt, [rid], reason)
        return f"Reward {rid} held by {viewer.principal.actor} (hold code operator)."

    return _decide(request, viewer, QUEUE, f"Holding reward {rid}", {"ids": [rid]}, decision)


@router.post("/rewards/{reward_id}/release")
def release(request: Request, reward_id: str, viewer: Operator) -> Response:
    """Release one held reward, with the form's reason: pending, or back in the queue while it lacks approvals."""
    rid = path_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        moved = reward_actions.release(rt, [rid], _text(viewer, "reason"))
        status = moved[rid]
        then = ("it is pending and will be scheduled" if status == RewardStatus.PENDING
                else "it is back in the approvals queue")
        return f"Reward {rid} released by {viewer.principal.actor}: {then}."

    return _decide(request, viewer, HELD, f"Releasing reward {rid}", {"ids": [rid]}, decision)


@router.post("/rewards/{reward_id}/cancel")
def cancel(request: Request, reward_id: str, viewer: Operator) -> Response:
    """Cancel one reward, with the form's reason: it is never paid."""
    rid = path_id(request, reward_id, "reward")

    def decision(rt: Runtime) -> str:
        reward_actions.cancel(rt, [rid], _text(viewer, "reason"))
        return f"Reward {rid} cancelled by {viewer.principal.actor}: it will never be paid."

    return _decide(request, viewer, QUEUE, f"Cancelling reward {rid}", {"ids": [rid]}, decision)


@router.post("/payouts/{payout_id}/release")
def release_payout(request: Request, payout_id: str, viewer: Operator) -> Response:
    """Release a held payout, with the form's reason: a screening hold needs two different operators (the first
    request is recorded), an audit-trail hold one."""
    pid = path_id(request, payout_id, "payout")

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
    """Cancel a payout the rail never accepted, with the form's reason; its rewards are held as owed."""
    pid = path_id(request, payout_id, "payout")

    def decision(rt: Runtime) -> str:
        payout_actions.cancel(rt, pid, _text(viewer, "reason"))
        return (f"Payout {pid} cancelled by {viewer.principal.actor}: its rewards are held as owed (release them to "
                "pay them in a new payout).")

    return _decide(request, viewer, HELD, f"Cancelling payout {pid}", {"payout": pid}, decision)


@router.post("/payouts/{payout_id}/resolve")
def resolve_payout(request: Request, payout_id: str, viewer: Operator) -> Response:
    """Record what the provider says of an unresolved or unknown payout (``outcome``, ``reason``, optional
    ``provider_ref``): settled without a new send, or sent again with the same idempotency key."""
    pid = path_id(request, payout_id, "payout")
    outcome = viewer.field("outcome")
    if outcome not in RESOLUTIONS:
        raise refuse(request, f"the outcome must be one of {', '.join(RESOLUTIONS)}")

    def decision(rt: Runtime) -> str:
        reason = _text(viewer, "reason")
        reference = _text(viewer, "provider_ref", MAX_NAME, required=False)
        status = payout_actions.resolve(rt, pid, outcome, reason, reference or None)
        then = ("it is sent again with the same idempotency key" if status == PayoutStatus.RETRYING
                else f"it is {status}, without being sent again")
        return f"Payout {pid} resolved by {viewer.principal.actor} as {outcome}: {then}."

    return _decide(request, viewer, HELD, f"Resolving payout {pid}", {"payout": pid, "outcome": outcome}, decision)
