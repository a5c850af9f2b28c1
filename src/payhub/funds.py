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


@dataclass(slots=True)
class _Credit:
    left: Decimal
    expires_at: datetime | None

    def alive(self, at: datetime) -> bool:
        return self.expires_at is None or self.expires_at > at


def balance(entries: Iterable[Entry], at: datetime) -> Decimal:
    """What is left at ``at`` of the entries that occurred at or before it (negative when overspent)."""
    credits: list[_Credit] = []  # oldest first
    overspent = Decimal(0)
    for occurred, amount, expires in sorted(entries, key=lambda entry: entry[0]):
        if occurred > at:
            break
        if amount >= 0:
            credits.append(_Credit(amount, expires))
            continue
        spend = -amount
        for credit in credits:
            if credit.alive(occurred):
                taken = min(credit.left, spend)
                credit.left -= taken
                spend -= taken
        overspent += spend
        credits = [credit for credit in credits if credit.left and credit.alive(occurred)]
    return sum((credit.left for credit in credits if credit.alive(at)), Decimal(0)) - overspent
