"""Rails: the base class, the payout instructions it is given, its answers and the guarantees it declares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from payhub.api.settings import NoSettings, PluginSettings

__all__ = [
    "Outcome",
    "Payee",
    "PayoutInstruction",
    "Rail",
    "RailCapabilities",
    "RailResult",
]


@dataclass(frozen=True, slots=True)
class Payee:
    """Who is paid, and how. ``details`` holds rail-specific payout details (account, IBAN, email...).

    ``min_payout`` is the smallest payout the payee accepts in ``currency``; smaller balances carry forward.
    ``aliases`` are other names the payee is known by (screened like the name); ``flags`` mark payees that
    compliance rules treat apart (``government_official``, ``healthcare_professional``, or an admin's own flags).
    """

    id: str
    name: str
    country: str | None = None
    currency: str | None = None
    email: str | None = None
    rail: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)
    min_payout: Decimal | None = None
    aliases: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()


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


