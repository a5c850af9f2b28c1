"""The bodies of API v1 (``/api/v1``) as pydantic models: what each route answers, described in OpenAPI.

Amounts are exact decimal text beside their currency (or fund unit); times are ISO 8601 in UTC (``…Z``); ids are
64-bit integers. A listing answers a page (``items`` and the relative URL of the ``next`` page, or null at the
end, see docs/api.md). The explanations of ``explain`` are derived from :mod:`payhub.provenance`'s typed answers, so
the document follows them.
"""

from __future__ import annotations

import types
from datetime import datetime
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints, is_typeddict

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from payhub import provenance, reports, states
from payhub.clock import parse_instant
from payhub.errors import InvalidRecord

Amount = Annotated[str, Field(description="Exact decimal text, e.g. `1234.50`; the currency is beside it.",
                              examples=["1234.50"])]


def _instant(value: object) -> object:
    if isinstance(value, datetime) or value is None:
        return value
    try:
        return parse_instant(value)
    except InvalidRecord as exc:
        raise ValueError(f"{exc} (ISO 8601 with an offset, e.g. 2026-01-31T00:00:00Z, or a date)") from None


Instant = Annotated[datetime, BeforeValidator(_instant)]
"""A query's time: ISO 8601 with an offset (``2026-01-31T09:00:00Z``), or a date (midnight UTC)."""


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True)


# ---------------------------------------------------------------------------------------------------- errors


class Detail(_Body):
    """Why a request was refused: no or a bad token (401), a role that may not (403), nothing found (404)."""

    detail: str


class Problem(_Body):
    where: str = Field(description="The parameter, e.g. `query.limit`.")
    problem: str


class Invalid(_Body):
    """A parameter that is not valid (422)."""

    error: str
    problems: list[Problem]


class Refused(_Body):
    """payhub refused the request (409), e.g. a reward not in a state the action accepts."""

    error: str


# ---------------------------------------------------------------------------------------------------- listings


class EventItem(_Body):
    """A trigger event read from a source."""

    id: int
    key: str = Field(description="The stable dedup key: source, object type, object id and transition.")
    source: str
    object: str = Field(description="The CRM record, `type:id`.")
    type: str
    occurred_at: datetime | None
    payee: str | None
    amount: str | None = Field(description="The exact decimal text the source sent.")
    currency: str | None
    status: states.EventStatus
    reason: str | None = Field(description="Why a waiting or quarantined event is so.")


class RewardItem(_Body):
    """A reward calculated from an event."""

    id: int
    event: int
    program: str
    payee: str
    amount: Amount
    currency: str
    status: states.RewardStatus
    approvals: str | None = Field(description="`given/needed` (e.g. `1/2`) for a reward that needs approval.")
    payout: int | None = Field(description="The payout carrying the reward.")
    hold_code: states.HoldCode | None = Field(description="The cause of a hold.")
    reason: str | None = Field(description="Why the reward is held or carried.")


class CalculationItem(_Body):
    """A calculation that paid nothing, and why."""

    calculation: int
    event: int
    object: str = Field(description="The CRM record, `type:id`.")
    program: str
    version: int = Field(description="The program version it ran with.")
    payee: str | None = Field(description="The event's payee.")
    status: reports.Unrewarded
    reason: str | None
    calculated_at: datetime


class PayoutItem(_Body):
    """A payout of rewards to one payee through one rail."""

    id: int
    payee: str
    rail: str
    amount: Amount
    currency: str
    items: int = Field(description="How many rewards it carries.")
    status: states.PayoutStatus
    attempts: int
    provider_ref: str | None
    reason: str | None = Field(description="The last reason, e.g. of a rejection or a hold.")
    route: str = Field(description="Why the payout went to its rail.")
    key: str = Field(description="The idempotency key, sent on every attempt.")
    hold_code: str | None = Field(
        description="Why a held payout is held: `screening` (released by two operators) or `audit_trail`; null "
                    "otherwise (and for payouts held before hold codes were recorded).")


class FundItem(_Body):
    """A fund a program keeps for a holder (co-op accruals, MDF allocations, loyalty points), at a time."""

    program: str
    holder: str
    unit: str = Field(description="A currency code, or `points`.")
    credited: Amount
    spent: Amount
    expired: Amount = Field(description="Credits that lapsed unspent.")
    balance: Amount = Field(description="What is left; the oldest credits are spent first.")
    next_expiry: datetime | None = Field(description="When the next credit with something left lapses.")


class ProgramVersionItem(_Body):
    """A version of a program: a new one is written whenever the program's settings change."""

    id: int
    program: str
    version: int
    calculator: str
    params: dict[str, Any] = Field(description="The program's settings section as it was.")
    fingerprint: str
    created_at: datetime


class AuditEntryItem(_Body):
    """An entry of the hash-chained audit log."""

    seq: int
    at: str = Field(description="ISO 8601 UTC, the exact text the chain hashes.",
                    examples=["2026-01-31T09:00:00.000000Z"])
    actor: str
    action: str
    subject_type: str
    subject_id: str
    outcome: str
    origin: str
    detail: Any = Field(description="What the entry records: a JSON object (the stored text itself when that is not "
                                    "JSON, i.e. changed outside payhub).")
    prev_hash: str
    hash: str


class EventPage(_Body):
    items: list[EventItem]
    next: str | None = Field(description="The next page's relative URL, or null after the last row.")


class RewardPage(_Body):
    items: list[RewardItem]
    next: str | None = Field(description="The next page's relative URL, or null after the last row.")


class CalculationPage(_Body):
    items: list[CalculationItem]
    next: str | None = Field(description="The next page's relative URL, or null after the last row.")


class PayoutPage(_Body):
    items: list[PayoutItem]
    next: str | None = Field(description="The next page's relative URL, or null after the last row.")


class FundPage(_Body):
    items: list[FundItem]
    next: str | None = Field(description="The next page's relative URL, or null after the last fund.")


class ProgramVersionPage(_Body):
    items: list[ProgramVersionItem]
    next: str | None = Field(description="The next page's relative URL, or null after the last row.")


class AuditPage(_Body):
    items: list[AuditEntryItem]
    next: str | None = Field(description="The next page's relative URL, or null after the last entry.")


# ---------------------------------------------------------------------------------------------------- verify


class DifferenceItem(_Body):
    subject: str = Field(description="e.g. `payout 12`.")
    problem: str


class CheckpointsReport(_Body):
    """The signed checkpoints of ``audit.checkpoint_dir``, checked when a checkpoint key (public or private) is
    configured. Over HTTP none is ever signed."""

    checked: bool
    count: int = Field(description="Checkpoints read.")
    latest_seq: int | None = Field(description="The entry of the latest checkpoint.")
    problems: list[str]


class VerifyReport(_Body):
    """The audit chain recomputed, the payouts and rewards compared with what it last recorded, and the
    checkpoints checked: ``ok`` when all of it holds."""

    ok: bool
    checked: int = Field(description="Entries that fit the chain, from entry 1.")
    head_seq: int | None
    head_hash: str | None
    first_bad: int | None = Field(description="The first entry that does not fit.")
    problem: str | None
    anchored: bool | None = Field(description="Whether the chain passes through `expect_head` (null without it).")
    differences: list[DifferenceItem] = Field(description="The first 1000 differences between the payouts and "
                                                          "rewards tables and what the chain last recorded.")
    difference_count: int = Field(description="All the differences found.")
    checkpoints: CheckpointsReport


# ---------------------------------------------------------------------------------------------------- trace


class TraceAttempt(_Body):
    kind: str = Field(description="send or lookup.")
    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    detail: str | None


class TracePayout(_Body):
    id: int
    key: str
    rail: str
    route: str
    amount: Amount
    currency: str
    status: str
    reason: str | None
    provider_ref: str | None
    released_by: str | None
    attempts: list[TraceAttempt]


class TraceCalculation(_Body):
    program: str
    version: int
    calculator: str
    status: str
    reason: str | None


class TraceEvent(_Body):
    id: int
    key: str
    status: str
    reason: str | None
    occurred_at: datetime | None
    amount: str | None
    currency: str | None


def _from_typed_dict(kind: type, made: dict[type, type[BaseModel]]) -> type[BaseModel]:
    """A model with the keys and types of the TypedDict ``kind``, nested TypedDicts made models too."""
    if kind not in made:
        fields: dict[str, Any] = {name: (_field(hint, made), ...) for name, hint in get_type_hints(kind).items()}
        made[kind] = create_model(kind.__name__, __base__=_Body, __doc__=kind.__doc__, **fields)
    return made[kind]


def _field(hint: Any, made: dict[type, type[BaseModel]]) -> Any:
    if is_typeddict(hint):
        return _from_typed_dict(hint, made)
    origin, args = get_origin(hint), get_args(hint)
    if origin is list:
        return list[_field(args[0], made)]  # type: ignore[misc]
    if origin in (Union, types.UnionType):
        return Union[tuple(_field(arg, made) for arg in args)]  # noqa: UP007 - built at run time
    return hint


_MADE: dict[type, type[BaseModel]] = {}
RelatedReward = _from_typed_dict(provenance.RelatedReward, _MADE)


class TraceReward(_Body):
    id: int
    program: str
    payee: str
    amount: Amount
    currency: str
    status: str
    hold_code: str | None
    hold_reason: str | None
    adjustments: list[RelatedReward]  # type: ignore[valid-type]  # built from provenance.RelatedReward
    payouts: list[TracePayout]


class TraceNode(_Body):
    """An event of the traced record, its calculations, rewards, their payouts and attempts."""

    event: TraceEvent
    calculations: list[TraceCalculation]
    rewards: list[TraceReward]


Trace = list[TraceNode]

Explanation = Annotated[  # type: ignore[valid-type]  # a union of models made at import
    Union[tuple(_from_typed_dict(kind, _MADE) for kind in get_args(provenance.Explanation))],  # noqa: UP007
    Field(discriminator="kind")]
"""The answer of ``explain``: a payout's, a reward's or an event's / record's (``kind``)."""
