"""Operator actions of API v1: approve, hold, release and cancel rewards; resolve, release and cancel payouts; retry
failed calculations (docs/api.md, Actions).

Each route needs the ``operator`` role (an ``admin`` has it too) and calls the same decision as the CLI
(:mod:`payhub.pipeline.reward_actions`, :mod:`payhub.pipeline.payout_actions`,
:func:`payhub.pipeline.calculate.retry_failed`) with a runtime that signs its audit entries as the token
(``token:<name>``) from ``http@<client address>``: the same rules, the same entries, and four-eyes approvals count
each token as its own approver. A refused decision raises :class:`~payhub.errors.PayhubError`, answered 409 with its
text by the app; a body or id outside the bounds below is answered 422 before anything is decided.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from payhub.http.auth import require
from payhub.http.models import Detail, Invalid, Refused
from payhub.http.state import acting
from payhub.pipeline import payout_actions, reward_actions
from payhub.pipeline.calculate import retry_failed
from payhub.runtime import Runtime
from payhub.tokens import Principal, recordable

API = "/api/v1"
ID_BOUND = 2**63
"""Row ids are below this (64-bit integers in the database); as a float it is exact, so OpenAPI states it exactly."""
MAX_IDS = 1000
"""The most rewards one call decides on."""
MAX_TEXT = 2000
"""The longest reason or note, in characters."""
MAX_NAME = 200
"""The longest program name or provider reference (as the database stores them)."""

RewardStatus = Literal["awaiting_approval", "pending", "held", "cancelled"]
PayoutStatus = Literal["retrying", "sent", "paid", "scheduled", "cancelled", "held"]
Operator = Annotated[Principal, Depends(require("operator"))]
RowId = Annotated[int, Strict(), Field(ge=1, lt=ID_BOUND)]
PayoutId = Annotated[int, Path(ge=1, lt=ID_BOUND, description="The payout's id.")]


def _required(value: str) -> str:
    if not value:
        raise ValueError("must not be blank (it is recorded in the audit log)")
    return value


Reason = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(recordable), AfterValidator(_required)]
Note = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(recordable)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(recordable), AfterValidator(_required)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Approve(_Body):
    """Rewards to approve, and an optional note recorded with each approval."""

    ids: list[RowId] = Field(min_length=1, max_length=MAX_IDS, description="Reward ids (each once is enough).")
    note: Note | None = Field(None, description="Recorded with each approval in the audit log.")


class Decide(_Body):
    """Rewards to hold, release or cancel, and why."""

    ids: list[RowId] = Field(min_length=1, max_length=MAX_IDS, description="Reward ids (each once is enough).")
    reason: Reason = Field(description="Why; recorded in the audit log.")


class Resolve(_Body):
    """What the provider says of a payout whose outcome the rail cannot tell."""

    outcome: Literal["sent", "paid", "not-sent"] = Field(
        description="The provider has the payout (sent, paid), or never received it (not-sent: it is sent again "
                    "with the same idempotency key).")
    reason: Reason = Field(description="How this was established; recorded in the audit log.")
    provider_ref: Name | None = Field(None, description="The provider's reference for the payout, if it has one.")


class Because(_Body):
    """Why; recorded in the audit log."""

    reason: Reason


class Retry(_Body):
    """Which failed calculations to run again: all, or only those of one program or one event."""

    program: Name | None = None
    event_id: RowId | None = None


class RewardState(BaseModel):
    id: int
    status: RewardStatus


class ApprovedReward(RewardState):
    approvals: int = Field(description="Distinct approvers so far.")
    needed: int = Field(description="Approvals the reward needs.")


class Approved(BaseModel):
    actor: str = Field(description="Who the audit log records: token:<name>.")
    rewards: list[ApprovedReward]


class Decided(BaseModel):
    actor: str = Field(description="Who the audit log records: token:<name>.")
    rewards: list[RewardState]


class PayoutState(BaseModel):
    actor: str = Field(description="Who the audit log records: token:<name>.")
    id: int
    status: PayoutStatus


class PayoutRelease(PayoutState):
    hold_code: Literal["screening", "audit_trail"] | None = Field(
        description="The payout's hold code now, as listings show it: null once released, `screening` while a "
                    "screening hold awaits its second operator.")
    released_hold: Literal["screening", "audit_trail"] = Field(description="The hold released (or to be released).")
    release: Literal["released", "awaiting_second_operator"] = Field(
        description="`released`: the payout is `scheduled`; `awaiting_second_operator`: a screening hold, this "
                    "token's request is recorded and a second, different token must release it.")
    operators: list[str] = Field(description="The tokens that asked for the release, first first.")


class Retried(BaseModel):
    actor: str = Field(description="Who the audit log records: token:<name>.")
    retried: int = Field(description="Failed calculations that run again on the next pass.")


ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "No valid token."},
    403: {"model": Detail, "description": "The token's role is not operator or admin."},
    409: {"model": Refused, "description": "Refused as a whole, naming each id refused (unknown, in a state the "
                                           "action does not accept, already approved by this token); nothing "
                                           "changed."},
    422: {"model": Invalid, "description": "A body or id out of bounds; nothing was decided."}}

router = APIRouter(prefix=API, tags=["actions"], responses=ANSWERS)


def _acting(request: Request, principal: Principal, asked: dict[str, Any]) -> Runtime:
    """The runtime signing as ``principal`` from the request's origin; ``asked`` goes into the request's audit
    entry, so a refused request records what it asked for."""
    request.state.audit_detail = {"asked": asked}
    return acting(request, principal)


def _ids(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))


@router.post("/rewards/approve", summary="Approve rewards awaiting approval")
def approve(body: Approve, request: Request, principal: Operator) -> Approved:
    """Record the token's approval of each reward; one with all the approvals it needs becomes ``pending``. A
    reward needing two approvals needs two different tokens. A refused call approves nothing and writes a
    ``reward.approval_refused`` entry on each named reward that exists."""
    rt = _acting(request, principal, body.model_dump(exclude_none=True))
    done = reward_actions.approve(rt, _ids(body.ids), body.note or None)
    return Approved(actor=principal.actor, rewards=[
        ApprovedReward(id=a.reward_id, status="pending" if a.pending else "awaiting_approval",
                       approvals=a.approvals, needed=a.needed) for a in done])


@router.post("/rewards/hold", summary="Hold rewards not yet scheduled")
def hold(body: Decide, request: Request, principal: Operator) -> Decided:
    """Hold rewards (hold code ``operator``) so they are not paid until released."""
    ids = _ids(body.ids)
    reward_actions.hold(_acting(request, principal, body.model_dump()), ids, body.reason)
    return Decided(actor=principal.actor, rewards=[RewardState(id=i, status="held") for i in ids])


@router.post("/rewards/release", summary="Release held rewards")
def release(body: Decide, request: Request, principal: Operator) -> Decided:
    """Release held rewards: back to ``pending``, or to ``awaiting_approval`` while approvals are missing."""
    moved = reward_actions.release(_acting(request, principal, body.model_dump()), _ids(body.ids), body.reason)
    return Decided(actor=principal.actor, rewards=[RewardState(id=i, status=cast(RewardStatus, s))
                                                   for i, s in moved.items()])


@router.post("/rewards/cancel", summary="Cancel rewards not yet scheduled")
def cancel(body: Decide, request: Request, principal: Operator) -> Decided:
    """Cancel rewards: they are never paid and no longer count against their budget."""
    ids = _ids(body.ids)
    reward_actions.cancel(_acting(request, principal, body.model_dump()), ids, body.reason)
    return Decided(actor=principal.actor, rewards=[RewardState(id=i, status="cancelled") for i in ids])


@router.post("/payouts/{payout_id}/resolve", summary="Decide a payout whose outcome the rail cannot tell")
def resolve_payout(payout_id: PayoutId, body: Resolve, request: Request, principal: Operator) -> PayoutState:
    """Decide an ``unresolved`` or ``unknown`` payout: ``sent`` / ``paid`` settle it without sending; ``not-sent``
    sends it again with the same idempotency key (``retrying``)."""
    rt = _acting(request, principal, {"payout": payout_id, **body.model_dump(exclude_none=True)})
    status = payout_actions.resolve(rt, payout_id, body.outcome, body.reason, body.provider_ref)
    return PayoutState(actor=principal.actor, id=payout_id, status=cast(PayoutStatus, status))


@router.post("/payouts/{payout_id}/release", summary="Release a held payout (a screening hold: two operators)",
             responses={200: {"description": "Released: the payout is `scheduled` (`hold_code` null); released "
                                             "from a screening hold by two tokens, it is still screened before each "
                                             "send and goes on only while screening denies it for exactly the "
                                             "reasons of the hold they released."},
                        202: {"model": PayoutRelease, "description": "A screening hold: this token's request and "
                                                                     "justification are recorded; the payout stays "
                                                                     "`held` until a second, different token "
                                                                     "releases it."}})
def release_payout(payout_id: PayoutId, body: Because, request: Request, principal: Operator,
                   response: Response) -> PayoutRelease:
    """Release a ``held`` payout (``scheduled``); after a screening hold it is screened again before each send, and
    a denial other than those of the hold released holds it again.

    A ``screening`` hold needs two different tokens, each with a justification of at least
    20 characters (``MIN_JUSTIFICATION``) in ``reason``: the first call is answered 202 (``release``
    ``awaiting_second_operator``, the payout still ``held``), the second token's 200 (``released``, both named in
    ``operators``). The same token asking twice is refused (409). An ``audit_trail`` hold is released by one token."""
    done = payout_actions.release(_acting(request, principal, {"payout": payout_id, **body.model_dump()}),
                                  payout_id, body.reason)
    if not done.released:
        response.status_code = 202
    return PayoutRelease(actor=principal.actor, id=payout_id, status="scheduled" if done.released else "held",
                         hold_code=None if done.released else done.hold_code.value,
                         released_hold=done.hold_code.value,
                         release="released" if done.released else "awaiting_second_operator",
                         operators=list(done.operators))


@router.post("/payouts/{payout_id}/cancel", summary="Cancel a payout the rail never accepted")
def cancel_payout(payout_id: PayoutId, body: Because, request: Request, principal: Operator) -> PayoutState:
    """Cancel a ``scheduled``, ``held`` or ``retrying`` payout the rail never accepted; its rewards are held as
    owed (release them to pay them in a new payout)."""
    payout_actions.cancel(_acting(request, principal, {"payout": payout_id, **body.model_dump()}), payout_id,
                          body.reason)
    return PayoutState(actor=principal.actor, id=payout_id, status="cancelled")


@router.post("/calculations/retry", summary="Run failed calculations again")
def retry(body: Retry, request: Request, principal: Operator) -> Retried:
    """Forget failed calculations (all, or of one program or event) so they run on the next pass; an unknown
    program or event retries nothing."""
    rt = _acting(request, principal, body.model_dump(exclude_none=True))
    return Retried(actor=principal.actor, retried=retry_failed(rt, body.program, body.event_id))
