"""Two simple calculators: a flat amount per event (or per unit) and a percentage of the event amount."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from payhub.api import (
    Amount,
    CalculationError,
    Calculator,
    Event,
    History,
    InvalidRecord,
    PluginSettings,
    RewardLine,
)
from payhub.money import check_currency


def _payee(event: Event, who: str) -> str:
    if who == "partner":
        if not event.partner_id:
            raise CalculationError("the program pays the partner but the event has no partner_id")
        return event.partner_id
    return event.payee_id


class FlatParams(PluginSettings):
    amount: Amount = Field(gt=0)
    currency: str
    per_unit: bool = Field(False, description="Multiply by the event's `quantity` attribute.")
    pay: Literal["payee", "partner"] = "payee"

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        try:
            return check_currency(value)
        except InvalidRecord as exc:
            raise ValueError(str(exc)) from None


class FlatAmount(Calculator):
    """``flat``: a fixed amount per event, or per unit of the event's ``quantity`` attribute."""

    params_model = FlatParams
    params: FlatParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        p = self.params
        amount = p.amount
        if p.per_unit:
            try:
                quantity = Decimal(str(event.attributes["quantity"]))
            except (KeyError, ArithmeticError, ValueError):
                raise CalculationError("per-unit program needs a numeric `quantity` attribute") from None
            if quantity <= 0 or quantity != quantity.to_integral_value():
                raise CalculationError(f"quantity {quantity} is not a positive whole number")
            amount *= quantity
        return [RewardLine(_payee(event, p.pay), amount, p.currency, f"{self.program}: flat {p.amount} {p.currency}"
                           + (f" x {event.attributes['quantity']}" if p.per_unit else ""))]


class PercentageParams(PluginSettings):
    percent: Amount = Field(gt=0, le=100, description='Percent of the event amount, e.g. "2.5".')
    pay: Literal["payee", "partner"] = "payee"


class Percentage(Calculator):
    """``percentage``: a percentage of the event amount, in the event's currency."""

    params_model = PercentageParams
    params: PercentageParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        if event.amount is None or event.currency is None:
            raise CalculationError("the event has no amount to take a percentage of")
        amount = event.amount * self.params.percent / 100
        return [RewardLine(_payee(event, self.params.pay), amount, event.currency,
                           f"{self.program}: {self.params.percent}% of {event.amount} {event.currency}")]
