"""Two simple calculators: a flat amount per event (or per unit) and a percentage of the event amount."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from payhub.api import Amount, CalculationError, Calculator, Event, History, PluginSettings, RewardLine
from payhub.builtin.programs._common import Currency, attribute_quantity, partner


def _payee(event: Event, who: str) -> str:
    return partner(event) if who == "partner" else event.payee_id


class FlatParams(PluginSettings):
    amount: Amount = Field(gt=0)
    currency: Currency
    per_unit: bool = Field(False, description="Multiply by the event's `quantity` attribute.")
    pay: Literal["payee", "partner"] = "payee"


class FlatAmount(Calculator):
    """``flat``: a fixed amount per event, or per unit of the event's ``quantity`` attribute."""

    params_model = FlatParams
    params: FlatParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        p = self.params
        units = attribute_quantity(event) if p.per_unit else None
        amount = p.amount * units if units is not None else p.amount
        return [RewardLine(_payee(event, p.pay), amount, p.currency, f"{self.program}: flat {p.amount} {p.currency}"
                           + (f" x {units}" if units is not None else ""))]


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
