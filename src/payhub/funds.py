"""Fund arithmetic: the balance of a fund whose credits expire and whose spending takes the oldest credit first.

A fund (co-op accruals, loyalty points) is a list of entries ``(occurred_at, amount, expires_at)``: positive
amounts are credits, which lapse unspent at ``expires_at``; negative amounts are spending, taken from the oldest
credit that has not lapsed at the time of the spending. The same entries always give the same balance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from payhub.money import ROUNDING, check_currency, quantize

Entry = tuple[datetime, Decimal, datetime | None]

POINTS = "points"


def check_unit(unit: str) -> str:
    """``points``, or an upper-case ISO 4217 code; raises InvalidRecord otherwise."""
    return POINTS if unit == POINTS else check_currency(unit)


def round_unit(amount: Decimal, unit: str) -> Decimal:
    """``amount`` rounded to the unit's minor units (whole points), by the one rounding rule."""
    return quantize(amount, unit) if unit != POINTS else amount.quantize(Decimal(1), rounding=ROUNDING)


def unit_text(amount: Decimal, unit: str) -> str:
    """``amount`` as text with the unit's minor units, as every view shows fund amounts: ``0.00`` EUR, ``0`` JPY,
    ``0.000`` BHD, ``0`` points. Fund entries are stored rounded (:func:`round_unit`), so their sums show exactly."""
    return str(round_unit(amount, unit) + 0)  # + 0: never "-0.00"


@dataclass(slots=True)
class Credit:
    """A credit's amount not spent yet and when it lapses (None: never)."""

    left: Decimal
    expires_at: datetime | None

    def alive(self, at: datetime) -> bool:
        return self.expires_at is None or self.expires_at > at


class Fund:
    """A fund's state after its entries so far, applied in time order (the oldest first)."""

    def __init__(self) -> None:
        self.credits: list[Credit] = []  # oldest first
        self.overspent = Decimal(0)
        self.last: datetime | None = None  # when the latest entry applied occurred

    def apply(self, occurred: datetime, amount: Decimal, expires: datetime | None) -> None:
        """Apply one entry; it must not have occurred before the entries already applied."""
        self.last = occurred
        if amount >= 0:
            self.credits.append(Credit(amount, expires))
            return
        spend = -amount
        for credit in self.credits:
            if spend == 0:
                break
            if credit.alive(occurred):
                taken = min(credit.left, spend)
                credit.left -= taken
                spend -= taken
        self.overspent += spend
        self.credits = [credit for credit in self.credits if credit.left and credit.alive(occurred)]

    def balance(self, at: datetime) -> Decimal:
        """What is left at ``at`` (not before the latest entry applied): unexpired credits less the overspent."""
        return sum((credit.left for credit in self.credits if credit.alive(at)), Decimal(0)) - self.overspent

    def next_expiry(self, at: datetime) -> datetime | None:
        """When the next credit with something left lapses after ``at`` (not before the latest entry applied), or
        None: credits spent in full, already lapsed or that never lapse do not count."""
        return min((credit.expires_at for credit in self.credits
                    if credit.left and credit.expires_at is not None and credit.expires_at > at), default=None)

    def copy(self) -> Fund:
        twin = Fund()
        twin.credits = [Credit(credit.left, credit.expires_at) for credit in self.credits]
        twin.overspent, twin.last = self.overspent, self.last
        return twin


def replay(entries: Iterable[Entry], at: datetime) -> Fund:
    """The fund after the entries that occurred at or before ``at``, applied in time order."""
    fund = Fund()
    for occurred, amount, expires in sorted(entries, key=lambda entry: entry[0]):
        if occurred > at:
            break
        fund.apply(occurred, amount, expires)
    return fund


def balance(entries: Iterable[Entry], at: datetime) -> Decimal:
    """What is left at ``at`` of the entries that occurred at or before it (negative when overspent)."""
    return replay(entries, at).balance(at)
