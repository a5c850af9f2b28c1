"""``coop``: co-op funds accrued to the partner as a percent of its purchases, and claims paid from them.

The accruals are a fund the program keeps for the partner, one per currency, not payments: a purchase credits
``percent`` of its amount (expiring after ``expiry_days``, if set); a claim (an event whose type is in
``claim_event_types``) pays the partner ``min(claimed cost x participation_percent, fund balance)`` and spends that
much from the fund, oldest unexpired accruals first. Credits and claims are in the event's currency: a claim in a
currency without accruals finds a balance of zero.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import Field

from payhub.api import Amount, Calculator, Event, FundMovement, History, NotEligible, PluginSettings, RewardLine
from payhub.builtin.programs._common import EVER, Percent, event_money, partner
from payhub.money import quantize


class CoopParams(PluginSettings):
    percent: Amount = Field(gt=0, le=100, description="Percent of each purchase accrued to the partner's fund.")
    expiry_days: int | None = Field(
        None, ge=1, le=3660, description="Days after the purchase when an unclaimed accrual lapses; none = never.")
    claim_event_types: list[str] = Field(default_factory=lambda: ["coop_claim"], min_length=1,
                                         description="Event types that are claims; every other event accrues.")
    participation_percent: Percent = Field(Decimal(100), gt=0, description="Percent of a claimed cost the vendor "
                                           "reimburses from the fund.")


class Coop(Calculator):
    """``coop``: purchases credit the partner's fund; claims pay the partner from it and spend it."""

    params_model = CoopParams
    params: CoopParams

    def calculate(self, event: Event, history: History) -> list[RewardLine | FundMovement]:
        if event.event_type in self.params.claim_event_types:
            return self._claim(event, history)
        return self._accrue(event)

    def _accrue(self, event: Event) -> list[RewardLine | FundMovement]:
        p = self.params
        amount, currency = event_money(event)
        accrued = quantize(amount * p.percent / 100, currency)
        expires = event.occurred_at + timedelta(days=p.expiry_days) if p.expiry_days is not None else None
        details = {"purchase": str(amount), "percent": str(p.percent)}
        if expires is not None:
            details["expires_at"] = expires.isoformat()
        return [FundMovement(partner(event), accrued, currency, expires,
                             f"{self.program}: co-op accrual {p.percent}% of {amount} {currency}", details)]

    def _claim(self, event: Event, history: History) -> list[RewardLine | FundMovement]:
        p = self.params
        cost, currency = event_money(event)
        holder = partner(event)
        share = quantize(cost * p.participation_percent / 100, currency)
        if share == 0:
            raise NotEligible(f"the claim is for {cost} {currency}: {p.participation_percent}% of it is "
                              f"{share} {currency}")
        balance = history.fund_balance(self.program, holder, currency, event.occurred_at)
        if balance <= 0:
            credited = history.fund_credited(self.program, holder, currency, EVER, event.occurred_at)
            raise NotEligible(f"the co-op fund of {holder} in {currency} is empty at the claim: its accruals "
                              f"({credited} {currency}) were spent or expired" if credited else
                              f"the co-op fund of {holder} in {currency} is empty at the claim: no purchase accrued "
                              "to it before")
        paid = min(share, balance)
        details = {"claimed": str(cost), "participation_percent": str(p.participation_percent), "share": str(share),
                   "balance": str(balance), "limit": "share" if paid == share else "balance"}
        text = f"{self.program}: co-op claim {p.participation_percent}% of {cost} {currency}"
        return [RewardLine(holder, paid, currency, text, details),
                FundMovement(holder, -paid, currency, None, text, details)]
