"""``coop``: co-op funds accrued to the partner as a percent of its purchases (claims are not handled yet)."""

from __future__ import annotations

from pydantic import Field

from payhub.api import Amount, Calculator, Event, History, PluginSettings, RewardLine
from payhub.builtin.programs._common import event_money, partner


class CoopParams(PluginSettings):
    percent: Amount = Field(gt=0, le=100, description="Percent of each purchase accrued to the partner.")


class Coop(Calculator):
    """``coop``: accrues ``percent`` of the event amount to the event's partner, in the event's currency."""

    params_model = CoopParams
    params: CoopParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        amount, currency = event_money(event)
        accrued = amount * self.params.percent / 100
        return [RewardLine(partner(event), accrued, currency,
                           f"{self.program}: co-op accrual {self.params.percent}% of {amount} {currency}",
                           {"purchase": str(amount)})]
