"""``activity``: a fixed reward per activity (certification, webinar, demo), capped per payee per period."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from payhub.api import Amount, Calculator, Event, History, NotEligible, PluginSettings, RewardLine
from payhub.builtin.programs._common import Currency, apply_cap, period_bounds
from payhub.money import quantize


class ActivityParams(PluginSettings):
    rewards: dict[str, Amount] = Field(min_length=1, description="Reward per value of the `activity` attribute.")
    currency: Currency
    cap_per_period: Amount | None = Field(None, gt=0, description="Most one payee earns per period.")
    period: Literal["month", "quarter"] = "month"

    @field_validator("rewards")
    @classmethod
    def _positive(cls, rewards: dict[str, Decimal]) -> dict[str, Decimal]:
        for activity, amount in rewards.items():
            if amount <= 0:
                raise ValueError(f"the reward for {activity!r} must be above 0, not {amount}")
        return rewards


class Activity(Calculator):
    """``activity``: ``rewards[activity]`` to the event's payee, within ``cap_per_period``."""

    params_model = ActivityParams
    params: ActivityParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        p = self.params
        activity = str(event.attributes.get("activity", "")).strip()
        if activity not in p.rewards:
            listed = ", ".join(sorted(p.rewards))
            raise NotEligible(f"activity {activity!r} earns nothing in this program (it rewards: {listed})"
                              if activity else f"the event names no `activity` (the program rewards: {listed})")
        earned = quantize(p.rewards[activity], p.currency)
        paid = earned
        details: dict[str, str] = {"activity": activity}
        if p.cap_per_period is not None:
            since, until, label = period_bounds(event.occurred_at, p.period)
            paid, capped = apply_cap(history, self.program, event.payee_id, p.currency, earned, p.cap_per_period,
                                     since, until, f"cap_per_period for {label}")
            if capped:
                details |= {"period": label, **capped}
        return [RewardLine(event.payee_id, paid, p.currency, f"{self.program}: {activity}", details)]
