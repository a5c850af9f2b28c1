"""``mdf``: market development funds, an allocation per partner and period that approved claims draw on.

Each partner has ``allocation`` (in ``currency``) for each calendar ``period`` of activity. A claim event carries
the eligible cost of a marketing activity (the event amount, in the program currency), the attribute
``approved_amount`` and optionally ``activity_date`` (else the claim's own date is the activity's). It pays the
partner::

    paid = min(approved_amount, eligible cost x cofunding_percent, allocation left for the activity's period)

Use it or lose it: a claim made more than ``claim_deadline_days`` days after the last day of the activity's period
is not eligible, and what was left of that period's allocation is lost.

**Which period a claim draws on.** The allocation belongs to the period of the *activity*, while a claim is an event
that occurs later, often in the next period (a March webinar claimed on 10 April draws on Q1). The History reads
rewards by the occurred_at of their events, so ``rewarded_between(Q1)`` would miss that claim and would count it
against Q2 instead. So the program keeps each partner's allocation for each period as a fund of its own, whose
holder is ``<partner>:<period label>`` (e.g. ``acme:2026-Q1``), in the program currency:

* the first paid claim for a period credits the allocation to that fund, expiring when the period's claims close
  (``claim_deadline_days`` days after its last day): whatever was not claimed lapses, as the program says;
* every paid claim pays the partner a RewardLine and spends the same amount from the fund;
* the allocation left is the fund's balance read just before the claims close, which counts every claim for the
  period the program has calculated, whatever its claim date and in whatever order the claims were calculated.
  (Every eligible claim for a period occurs between the period's start and that moment.)

The allocation is credited once per partner and period, by the first claim that pays: changing ``allocation``
later applies to periods not yet credited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import Field

from payhub.api import (
    Amount,
    CalculationError,
    Calculator,
    Event,
    FundMovement,
    History,
    NotEligible,
    PluginSettings,
    RewardLine,
)
from payhub.builtin.programs._common import (
    Currency,
    Percent,
    Period,
    attribute_amount,
    attribute_date,
    day_start,
    event_money,
    partner,
    period_bounds,
)
from payhub.money import quantize

_JUST_BEFORE = timedelta(microseconds=1)


class MdfParams(PluginSettings):
    allocation: Amount = Field(gt=0, description="Each partner's fund for each period.")
    currency: Currency
    period: Period = Field("quarter", description="The calendar period an allocation belongs to (of the activity).")
    cofunding_percent: Percent = Field(Decimal(100), gt=0,
                                       description="Share of the eligible cost the vendor pays.")
    claim_deadline_days: int = Field(
        ge=0, le=3660, description="Claims made more than this many days after the last day of the activity's period "
                                   "are not eligible (0 = only during the period).")


def fund_holder(partner_id: str, label: str) -> str:
    """The holder of one partner's allocation for one period: ``acme:2026-Q1``."""
    return f"{partner_id}:{label}"


class Mdf(Calculator):
    """``mdf``: pays approved claims to the partner from its allocation for the activity's period."""

    params_model = MdfParams
    params: MdfParams

    def claims_close(self, period_end: datetime) -> datetime:
        """When the claims for the period that ends (exclusive) at ``period_end`` close."""
        return period_end + timedelta(days=self.params.claim_deadline_days)

    def calculate(self, event: Event, history: History) -> list[RewardLine | FundMovement]:
        p = self.params
        cost, currency = event_money(event)
        if currency != p.currency:
            raise CalculationError(f"the claim is in {currency}, the MDF allocation in {p.currency}: amounts in "
                                   "different currencies are not compared")
        payee = partner(event)
        approved = attribute_amount(event, "approved_amount")
        if approved is None:
            raise CalculationError("an MDF claim needs the `approved_amount` attribute")
        if approved < 0:
            raise CalculationError(f"approved_amount {approved} is negative")
        claimed_on = event.occurred_at.date()
        activity = attribute_date(event, "activity_date") or claimed_on
        if activity > claimed_on:
            raise CalculationError(f"activity_date {activity} is after the claim ({claimed_on}): only activities "
                                   "that took place can be claimed")
        start, end, label = period_bounds(day_start(activity), p.period)
        closes = self.claims_close(end)
        last_day = (closes - timedelta(days=1)).date()
        if event.occurred_at >= closes:
            raise NotEligible(f"claimed on {claimed_on}, after the claim deadline {last_day} for {label} "
                              f"(claim_deadline_days = {p.claim_deadline_days}): the period's allocation is lost")
        holder = fund_holder(payee, label)
        credited = history.fund_credited(self.program, holder, currency, start, closes) > 0
        left = history.fund_balance(self.program, holder, currency, closes - _JUST_BEFORE)
        if not credited:
            left += quantize(p.allocation, currency)
        approved = quantize(approved, currency)
        cofunded = quantize(cost * p.cofunding_percent / 100, currency)
        paid = max(Decimal(0), min(approved, cofunded, left))
        if paid == 0:
            raise NotEligible(
                f"the approved amount is {approved} {currency}" if approved == 0 else
                f"the eligible cost is {cost} {currency}: {p.cofunding_percent}% of it is {cofunded} {currency}"
                if cofunded == 0 else
                f"the allocation of {payee} for {label} is used up: {left} {currency} left")
        limit = "approved" if paid == approved else "cofunding" if paid == cofunded else "allocation"
        details = {"period": label, "activity_date": activity.isoformat(), "approved": str(approved),
                   "eligible": str(cost), "cofunding_percent": str(p.cofunding_percent), "cofunded": str(cofunded),
                   "allocation_left": str(left), "limit": limit,
                   "claims_close": last_day.isoformat()}
        text = f"{self.program}: MDF claim for {label}"
        lines: list[RewardLine | FundMovement] = []
        if not credited:
            lines.append(FundMovement(holder, quantize(p.allocation, currency), currency, closes,
                                      f"{self.program}: MDF allocation {label}", {"period": label}))
        lines += [RewardLine(payee, paid, currency, text, details),
                  FundMovement(holder, -paid, currency, None, text, details)]
        return lines
