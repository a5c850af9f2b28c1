"""The public contracts for plugin authors: models, base classes and errors.

A plugin is an ordinary pip package that registers a class in one of the entry-point groups

* ``payhub.sources``     -> a :class:`Source` subclass
* ``payhub.calculators`` -> a :class:`Calculator` subclass
* ``payhub.rails``       -> a :class:`Rail` subclass
* ``payhub.hooks``       -> an object or module with ``@hookimpl`` functions (see :mod:`payhub.hookspecs`)

and is enabled by naming it in the settings file. Each class declares a pydantic ``settings_model`` (sources, rails)
or ``params_model`` (calculators); the core validates the plugin's settings section against it at start-up.

Contracts are synchronous and batch-shaped. The core owns threads, transactions, retries and the audit log;
a plugin only talks to its system. Anything a plugin raises other than the errors below is treated as a bug in
that plugin and isolated to its own work: a source's fetch is narrowed down to the record that sets it off (the
records before it are stored) and the error is recorded and retried at the next poll, a calculation is recorded as
failed, and a rail call that raised has an unknown outcome (looked up before any new attempt). The rest of payhub
goes on. Calls that run longer than their timeout are abandoned: transient for a source, unknown for a rail.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol

import pluggy
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from payhub.errors import (
    CalculationError,
    InvalidRecord,
    PermanentRailError,
    PermanentSourceError,
    RetryableRailError,
    TransientSourceError,
    UnknownOutcomeError,
)
from payhub.files import prepare_sqlite_file, private_file_mode, private_mkstemp
from payhub.integers import whole_numbers

__all__ = [
    "Calculator",
    "Amount",
    "Currency",
    "CalculationError",
    "ConfigPath",
    "FileNamePart",
    "MAX_AMOUNT",
    "Event",
    "FetchResult",
    "FundMovement",
    "FxRate",
    "History",
    "InvalidRecord",
    "NoSettings",
    "NotEligible",
    "Outcome",
    "Payee",
    "PayoutInstruction",
    "PermanentRailError",
    "PermanentSourceError",
    "PluginSettings",
    "Rail",
    "RailCapabilities",
    "RailResult",
    "RetryableRailError",
    "RewardLine",
    "ScreenDecision",
    "Source",
    "SourceRecord",
    "TransientSourceError",
    "WebhookRefused",
    "WebhookRequest",
    "WebhookResult",
    "UnknownOutcomeError",
    "hookimpl",
    "prepare_sqlite_file",
    "private_file_mode",
    "private_mkstemp",
]

hookimpl = pluggy.HookimplMarker("payhub")
"""Decorator for hook implementations in ``payhub.hooks`` plugins."""


class PluginSettings(BaseModel):
    """Base for plugin settings models: unknown keys are errors, values are validated, secrets are SecretStr.

    Numbers must be finite (``inf`` and ``nan`` are refused) and ``int`` keys whole (``true``, ``1.0`` and ``1e3``
    are refused, see :mod:`payhub.integers`); give every numeric key a lower and an upper bound
    (``Field(ge=…, le=…)``) and document them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    _whole_numbers = field_validator("*", mode="before")(whole_numbers)


class NoSettings(PluginSettings):
    """For plugins that take no settings."""


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    if "\0" in str(value):
        raise ValueError("a path cannot hold a NUL character")
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return value if value.is_absolute() or base is None else Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path setting; relative paths are relative to the settings file's directory."""

_FILE_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _file_name_part(value: str) -> str:
    if not _FILE_NAME_PART.fullmatch(value):
        raise ValueError("1-64 letters, digits, '.', '_' or '-', starting with a letter or digit: a part of a file "
                         "name, so no '/', '\\' or '..' that could lead out of its directory")
    return value


FileNamePart = Annotated[str, AfterValidator(_file_name_part)]
"""A setting that becomes part of a file name (a prefix): it cannot name another directory."""


class JsonFloat(float):
    """A number with a fraction or exponent read from JSON text (a ``PAYHUB_…`` variable holding a table or a
    list); ``text`` is how it was written."""

    text: str

    def __new__(cls, text: str) -> JsonFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _plain_amount(value: Any) -> Any:
    if isinstance(value, JsonFloat):
        raise ValueError(f'write decimal amounts as strings, in JSON too: quote it ("{value.text}"), a float is not '
                         "exact")
    if isinstance(value, float):
        raise ValueError(f'write decimal amounts as strings ("{value}"), a float is not exact')
    if isinstance(value, str):
        from payhub.money import parse_amount

        try:
            return parse_amount(value)
        except InvalidRecord as exc:
            raise ValueError(str(exc)) from None
    return value


MAX_AMOUNT = Decimal("1000000000000")
"""The largest amount setting (10^12 in absolute value), far below what the database stores in minor units."""

Amount = Annotated[Decimal, BeforeValidator(_plain_amount), Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
"""A decimal setting given as plain decimal text or an integer; floats and exponents are refused, and its absolute
value is at most :data:`MAX_AMOUNT`."""


def _currency_code(value: str) -> str:
    from payhub.money import check_currency

    try:
        return check_currency(value)
    except InvalidRecord as exc:
        raise ValueError(str(exc)) from None


Currency = Annotated[str, AfterValidator(_currency_code)]
"""A currency setting: an ISO 4217 code with minor units, upper-cased."""


# ---------------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One trigger as a source read it, before validation.

    Its dedup key is ``<source name>:<object_type>:<object_id>:<transition>`` (``%`` and ``:`` percent-encoded in
    the first three parts; ids compared after Unicode NFC, with BOM and zero-width characters removed); give every
    business transition of a CRM object its own stable ``transition`` (``won``, ``registered``, ``refunded``) so
    re-reading it adds nothing. Fields may hold raw text: the core parses ``occurred_at`` (ISO 8601) and ``amount``
    (decimal text) and quarantines the record with a reason when anything is wrong, including values of the wrong
    type or that the database cannot store. Set ``problem`` when the source already knows the record is malformed
    (or use :meth:`quarantined`); ``raw`` is the original text, kept for the quarantine listing.
    """

    object_type: str
    object_id: str
    transition: str
    event_type: str
    occurred_at: datetime | str | None
    payee_id: str | None
    amount: Decimal | str | None = None
    currency: str | None = None
    partner_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    raw: str | None = None
    problem: str | None = None

    @classmethod
    def quarantined(cls, problem: str, raw: str, *, object_type: str = "", object_id: str = "",
                    transition: str = "") -> SourceRecord:
        """A record the source could not make sense of, handed over to be quarantined with ``problem``.

        ``raw`` is the original text (the CRM's JSON, the file's line). Give the identity when it is known, so
        that a corrected record sent later under it replaces the quarantined event; without it the event is keyed
        by the content of ``raw``, and reading the same text again adds nothing.
        """
        return cls(object_type, object_id, transition, "", None, None, raw=raw, problem=problem or "malformed record")


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one :meth:`Source.fetch` call read.

    ``cursor`` is opaque text the core stores in the same transaction as ``records`` and passes to the next fetch.
    ``more`` is true when further records are ready now (the core fetches again without waiting for the interval).
    """

    records: Sequence[SourceRecord]
    cursor: str | None
    more: bool = False


class Source(ABC):
    """Pulls trigger events from a system, incrementally, from a resumable cursor.

    ``fetch`` must be safe to repeat from the same cursor: the core commits each batch's records together with its
    cursor, so a crash before that commit loses both, and the next fetch starts again from the last stored cursor
    (records read twice dedup by key). Raise TransientSourceError for passing trouble, PermanentSourceError for
    problems an admin must fix.
    """

    settings_model: ClassVar[type[PluginSettings]] = NoSettings

    def __init__(self, name: str, settings: PluginSettings) -> None:
        self.name = name
        self.settings = settings

    @abstractmethod
    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        """Return at most ``limit`` records after ``cursor`` and the cursor to continue from."""

    def webhook(self, request: WebhookRequest) -> WebhookResult:
        """Optional: check and parse one delivery POSTed to ``/webhooks/<source name>``.

        Verify its signature and freshness first, on the raw ``request.body``; raise :class:`WebhookRefused` for
        anything that is not a genuine, well-formed delivery. Return the records it carries (stored at once, deduped
        by key like fetched ones), or the ids of the objects it names (queued in the database and handed to
        :meth:`read_objects` by the next poll of any replica), and the sender's delivery id when it has one (a
        second delivery with the same id is refused). Runs in the HTTP server's threads, concurrently with
        ``fetch``: keep it free of shared mutable state. Sources without webhooks do not override it (404).
        """
        raise NotImplementedError

    def read_objects(self, object_ids: Sequence[str]) -> Sequence[SourceRecord]:
        """Optional, with a :meth:`webhook` that returns ``object_ids``: read these objects now (at most the
        source's ``batch_size``) and return their records. Called by the worker, never concurrently with
        ``fetch``; ids that no longer exist return nothing. The ids are forgotten in the transaction that stores
        the records, so a failure (raise as in ``fetch``) leaves them queued for the next poll."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; called once at shutdown."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A POST to ``/webhooks/<source name>`` as it arrived.

    ``url`` is the URL the sender called (scheme and host as the client sent them, after trusted proxy headers;
    a source whose signature covers the URL may let the admin set the public one). ``headers`` keep arrival order
    and repeats, names in lower case. ``body`` is the raw body, at most ``http.max_body_bytes``. ``received_at``
    is aware UTC.
    """

    method: str
    url: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in arrival order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What :meth:`Source.webhook` made of a genuine delivery: ``records`` to store now, ``object_ids`` to read on
    the next poll, and the sender's ``delivery_id`` (unique per message, the same on a resend), remembered for a
    day so that a replay is refused."""

    records: Sequence[SourceRecord] = ()
    object_ids: Sequence[str] = ()
    delivery_id: str | None = None


class WebhookRefused(Exception):
    """A delivery that is not accepted. ``status``: 400 malformed, 401 signature or timestamp refused, 409
    replayed, 413 too large, 422 understood but not usable; ``reason`` is answered to the sender and audited, so
    it must not hold secrets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ----------------------------------------------------------------------------------------------- calculators


@dataclass(frozen=True, slots=True)
class Event:
    """A validated trigger event, as calculators see it. ``amount`` is exact; ``occurred_at`` is aware UTC."""

    id: int
    key: str
    source: str
    object_type: str
    object_id: str
    transition: str
    event_type: str
    occurred_at: datetime
    payee_id: str
    partner_id: str | None
    amount: Decimal | None
    currency: str | None
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RewardLine:
    """Money a calculator grants to a payee. The core rounds ``amount`` to the currency's minor units once.

    A negative amount is an adjustment (a clawback, a true-up, a recouped overpayment): it is netted against the
    payee's next payouts in the same currency, or carried forward; a paid payout is never rewritten.
    """

    payee_id: str
    amount: Decimal
    currency: str
    description: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FundMovement:
    """A movement on a fund the program keeps for a holder (co-op accruals, loyalty points), not a payment.

    ``unit`` is a currency code or ``"points"``; the core rounds ``amount`` to the currency's minor units (whole
    points). A positive amount credits the fund, and expires at ``expires_at`` if given; a negative amount spends
    it, oldest unexpired credits first. Calculators read balances through :meth:`History.fund_balance`.
    """

    holder_id: str
    amount: Decimal
    unit: str
    expires_at: datetime | None = None
    description: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


class History(Protocol):
    """Read-only view of what was already rewarded, for caps and tiers."""

    def total_rewarded(
        self, program: str, payee_id: str, currency: str, since: datetime | None = None
    ) -> Decimal:
        """Sum of the rewards of ``program`` to ``payee_id`` in ``currency`` (since ``since``, if given)."""
        ...

    def rewarded_between(
        self, program: str, payee_id: str, currency: str, since: datetime, until: datetime
    ) -> Decimal:
        """Sum of the rewards of ``program`` to ``payee_id`` in ``currency`` for events that occurred in
        ``[since, until)`` (by the event's ``occurred_at``, not by when the reward was recorded)."""
        ...

    def total_volume(
        self, program: str, partner_id: str, currency: str, since: datetime, until: datetime,
        returns: Collection[str] = (),
    ) -> Decimal:
        """Sum of the amounts in ``currency`` of the events of ``partner_id`` that occurred in ``[since, until)``
        and that ``program`` already calculated without failure (rewarded, or not eligible); the amounts of events
        whose type is in ``returns`` (returns, credit notes) count negative."""
        ...

    def fund_balance(self, program: str, holder_id: str, unit: str, at: datetime) -> Decimal:
        """What is left at ``at`` on the fund of ``program`` for ``holder_id`` in ``unit``: the credits of events
        that occurred before ``at``, less what expired unspent, less what was spent (oldest credits first)."""
        ...

    def fund_credited(self, program: str, holder_id: str, unit: str, since: datetime, until: datetime) -> Decimal:
        """Sum of the credits (not net of spending or expiry) of events that occurred in ``[since, until)``."""
        ...


class NotEligible(Exception):
    """Raised by :meth:`Calculator.calculate` to say why an event earns nothing under the program.

    Not an error: the calculation is recorded ``not_eligible`` with ``reason`` (in the calculation and its audit
    entry, shown by ``explain``), once, and never retried. Name the rule and the numbers that decided it: "the deal
    closed on 2026-04-02, after the window 2026-01-01 .. 2026-03-31".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Calculator(ABC):
    """Turns an event into reward lines for one program. Pure and deterministic: same inputs, same lines.

    One instance is made per program, with that program's validated ``params``. Raise :class:`NotEligible` with
    the reason when the event simply earns nothing (outside the window, below a threshold, a fund used up), and
    CalculationError (the reason is recorded, the calculation fails and can be retried) when the event cannot be
    rewarded as it stands. An empty list is recorded as not eligible with a generic reason. The core then applies
    the program's rules around the calculator: splits, budgets, approvals, clawbacks and currency conversion (see
    docs/programs.md).
    """

    params_model: ClassVar[type[PluginSettings]] = NoSettings

    def __init__(self, program: str, params: PluginSettings) -> None:
        self.program = program
        self.params = params

    @abstractmethod
    def calculate(self, event: Event, history: History) -> Sequence[RewardLine | FundMovement]:
        """Reward lines and fund movements for ``event`` under this program (possibly none)."""


# ---------------------------------------------------------------------------------------------------- rails


@dataclass(frozen=True, slots=True)
class Payee:
    """Who is paid, and how. ``details`` holds rail-specific payout details (account, IBAN, email...).

    ``min_payout`` is the smallest payout the payee accepts in ``currency``; smaller balances carry forward.
    """

    id: str
    name: str
    country: str | None = None
    currency: str | None = None
    email: str | None = None
    rail: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)
    min_payout: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PayoutInstruction:
    """One payout to send. ``idempotency_key`` is fixed before the first attempt and identical on every attempt."""

    payout_id: int
    idempotency_key: str
    payee: Payee
    amount: Decimal
    currency: str
    reference: str
    created_at: datetime


class Outcome(StrEnum):
    """What a rail says happened to one payout."""

    ACCEPTED = "accepted"  # the rail has it; settlement follows (or, for export rails, is out of band)
    PAID = "paid"  # final: the money reached the payee
    REJECTED = "rejected"  # final: refused, never retried
    RETURNED = "returned"  # final: paid, then returned; the money is owed again
    RETRY = "retry"  # not accepted; trying again may succeed
    UNKNOWN = "unknown"  # may or may not have been accepted


@dataclass(frozen=True, slots=True)
class RailResult:
    """The outcome of one payout, from :meth:`Rail.send` or :meth:`Rail.lookup`."""

    idempotency_key: str
    outcome: Outcome
    provider_ref: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RailCapabilities:
    """What the provider behind a rail guarantees; the core decides from this when a retry is safe.

    ``lookup``: :meth:`Rail.lookup` can find a payout by its idempotency key (required to resolve unknown outcomes
    automatically). ``dedup_field`` / ``dedup_window``: the provider drops a repeated key within this window.
    ``countries`` / ``currencies``: what it serves (None = any). ``max_batch``: most instructions per send call.
    ``max_amounts``: the largest single payout per currency (absent currency = no limit). ``return_window``: how
    long after a payout is paid the provider may still return it (ACH returns); paid payouts are looked up that
    long, and a return holds their rewards as owed again.
    """

    lookup: bool
    reports_status: bool = False
    dedup_field: str | None = None
    dedup_window: timedelta | None = None
    countries: frozenset[str] | None = None
    currencies: frozenset[str] | None = None
    max_batch: int = 100
    max_amounts: Mapping[str, Decimal] = field(default_factory=dict)
    return_window: timedelta | None = None


class Rail(ABC):
    """Disburses payout instructions through one provider.

    ``send`` returns one RailResult per instruction (any order). Raise RetryableRailError when nothing was
    accepted, UnknownOutcomeError when the request may have been accepted (timeout after sending), or
    PermanentRailError when the whole batch was refused; these apply to every instruction of the call.
    ``lookup`` answers, for each key, the payout's current RailResult or None if the rail never received it.
    """

    settings_model: ClassVar[type[PluginSettings]] = NoSettings

    def __init__(self, name: str, settings: PluginSettings) -> None:
        self.name = name
        self.settings = settings

    @property
    @abstractmethod
    def capabilities(self) -> RailCapabilities:
        """The provider's guarantees."""

    @abstractmethod
    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        """Submit ``instructions``; each carries its fixed idempotency key."""

    def check_payee(self, payee: Payee, currency: str) -> str | None:
        """Why this rail cannot pay ``payee`` in ``currency`` (missing or invalid payout details), or None when it
        can. Routing then tries the next rail; with none left, the rewards are held with every reason."""
        return None

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        """Current state of each payout by idempotency key; None when the rail has never seen the key."""
        raise NotImplementedError(f"rail {self.name!r} cannot look payouts up")

    def close(self) -> None:
        """Release connections; called once at shutdown."""


# ---------------------------------------------------------------------------------------------------- hooks


@dataclass(frozen=True, slots=True)
class ScreenDecision:
    """A screening hook's verdict on a payout: ``allow=False`` holds it with ``reason``."""

    allow: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FxRate:
    """A conversion rate: 1 ``base`` = ``rate`` ``quote``, published by ``source`` for ``rate_date``."""

    base: str
    quote: str
    rate: Decimal
    source: str
    rate_date: date
