"""``spiff``: a flat amount per deal or per unit for eligible products sold in a date window, paid to the rep."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from payhub.api import Amount, CalculationError, Calculator, Event, History, NotEligible, PluginSettings, RewardLine
from payhub.builtin.programs._common import Currency, apply_cap, attribute_quantity, day_start
from payhub.money import quantize


class SpiffParams(PluginSettings):
    amount: Amount = Field(gt=0, description="Paid per deal, or per unit with per = \"unit\".")
    currency: Currency
    per: Literal["deal", "unit"] = "deal"
    products: list[str] = Field(default_factory=list, description="Eligible `product` attributes; empty = all.")
    starts: date = Field(description="First day of the window (UTC), inclusive.")
    ends: date = Field(description="Last day of the window (UTC), inclusive.")
    min_deal_amount: Amount | None = Field(None, ge=0, description="Smaller deals earn nothing (program currency).")
    cap_per_payee: Amount | None = Field(None, gt=0, description="Most one rep earns from the program's window.")

    @field_validator("ends")
    @classmethod
    def _window(cls, value: date, info: ValidationInfo) -> date:
        starts = info.data.get("starts")
        if starts is not None and value < starts:
            raise ValueError(f"the window ends ({value}) before it starts ({starts})")
        return value


class Spiff(Calculator):
    """``spiff``: ``amount`` per deal (or per unit) for eligible products in ``[starts, ends]``, capped per rep."""

    params_model = SpiffParams
    params: SpiffParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        p = self.params
        closed = event.occurred_at.date()
        if not p.starts <= closed <= p.ends:
            raise NotEligible(f"the deal closed on {closed}, outside the program window {p.starts} .. {p.ends}")
        product = str(event.attributes.get("product", ""))
        if p.products and product not in p.products:
            raise NotEligible(f"product {product!r} is not eligible (products: {', '.join(p.products)})" if product
                              else f"the deal names no `product`; eligible products: {', '.join(p.products)}")
        if p.min_deal_amount is not None:
            if event.amount is None or event.currency is None:
                raise CalculationError("the program has a min_deal_amount but the event has no amount")
            if event.currency != p.currency:
                raise CalculationError(f"the deal is in {event.currency}, min_deal_amount in {p.currency}: "
                                       "amounts in different currencies are not compared")
            if event.amount < p.min_deal_amount:
                raise NotEligible(f"the deal amount {event.amount} {event.currency} is below min_deal_amount "
                                  f"{p.min_deal_amount} {p.currency}")
        units = attribute_quantity(event) if p.per == "unit" else Decimal(1)
        earned = quantize(p.amount * units, p.currency)
        paid, details = earned, dict[str, str]()
        if p.cap_per_payee is not None:
            paid, details = apply_cap(history, self.program, event.payee_id, p.currency, earned, p.cap_per_payee,
                                      day_start(p.starts), day_start(p.ends + timedelta(days=1)),
                                      f"cap_per_payee for the window {p.starts} .. {p.ends}")
        text = f"{self.program}: spiff {p.amount} {p.currency}" + (f" x {units}" if p.per == "unit" else "")
        return [RewardLine(event.payee_id, paid, p.currency, text, details)]
