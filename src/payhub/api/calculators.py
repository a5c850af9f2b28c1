"""Calculators: the base class, the event it is given, the lines it returns and the history it may read."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from payhub.api.settings import NoSettings, PluginSettings

__all__ = [
    "Calculator",
    "Event",
    "FundMovement",
    "History",
    "NotEligible",
    "RewardLine",
]


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


