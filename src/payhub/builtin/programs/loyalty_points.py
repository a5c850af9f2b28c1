"""``loyalty_points``: points awarded per amount spent or per action, multiplied by tier, expiring, and redeemed.

The points are a fund the program keeps for each holder (the event's payee, or its partner with
``holder = "partner"``), in the unit ``points``; they are not a payment until redeemed.

* **Earning.** An event whose ``activity`` attribute is listed in ``points_per_action`` earns those points;
  otherwise, with ``points_per_unit_amount``, an event with an amount in ``currency`` earns amount x that rate.
  The holder's tier is the highest whose ``min_points`` the points credited to it in the current ``tier_period``
  before this event reach (read with History.fund_credited); its multiplier applies to the event's points. The
  award is rounded to whole points by the one rounding rule and credited with an expiry of ``expiry_days``.
* **Redemption.** An event whose type is in ``redemption_event_types`` carries the attribute ``points``. If the
  holder's balance at the event (History.fund_balance: credits less expired and spent points, oldest first) covers
  it, the points are spent and, with ``value_per_point``, the holder is paid points x value_per_point in
  ``currency``; otherwise the calculation fails with both numbers.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

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
from payhub.builtin.programs._common import Currency, attribute_count, event_money, partner, period_bounds
from payhub.funds import POINTS, round_unit
from payhub.money import quantize


class LoyaltyTier(PluginSettings):
    name: str = Field(min_length=1)
    min_points: int = Field(
        ge=0, le=10**12, description="Points credited in the tier period from which the tier applies.")
    multiplier: Amount = Field(gt=0, description="Multiplies the points of each award (\"1.5\").")


class LoyaltyPointsParams(PluginSettings):
    points_per_unit_amount: Amount | None = Field(None, gt=0, description="Points per 1 of `currency` spent.")
    points_per_action: dict[str, Annotated[int, Field(ge=1, le=10**9)]] = Field(
        default_factory=dict, validate_default=True, description="Points per value of the `activity` attribute.")
    value_per_point: Amount | None = Field(None, gt=0, description="What one redeemed point pays, in `currency`.")
    currency: Currency | None = Field(None, validate_default=True,
                                      description="Currency of points_per_unit_amount and value_per_point.")
    tiers: list[LoyaltyTier] = Field(default_factory=list, description="Multipliers by points earned in the period.")
    tier_period: Literal["quarter", "year"] = "year"
    expiry_days: int | None = Field(
        None, ge=1, le=3660, description="Days after an award when its unspent points lapse.")
    redemption_event_types: list[str] = Field(default_factory=lambda: ["points_redemption"])
    holder: Literal["payee", "partner"] = "payee"

    @field_validator("points_per_action")
    @classmethod
    def _some_rule(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        if "points_per_unit_amount" not in info.data:
            return value  # an invalid rate was given and is reported
        if not value and info.data["points_per_unit_amount"] is None:
            raise ValueError("give points_per_unit_amount (with currency) or points_per_action, or both")
        return value

    @field_validator("currency")
    @classmethod
    def _money_needs_currency(cls, value: str | None, info: ValidationInfo) -> str | None:
        needing = [key for key in ("points_per_unit_amount", "value_per_point") if info.data.get(key) is not None]
        if value is None and needing:
            raise ValueError(f"{' and '.join(needing)} need a currency")
        return value

    @field_validator("tiers")
    @classmethod
    def _table(cls, tiers: list[LoyaltyTier]) -> list[LoyaltyTier]:
        for number in range(1, len(tiers)):
            before, tier = tiers[number - 1], tiers[number]
            if tier.min_points <= before.min_points:
                raise ValueError(f"tiers must be ascending and must not overlap: tier {number + 1} ({tier.name}) "
                                 f"min_points {tier.min_points} is not above tier {number} ({before.name}) "
                                 f"min_points {before.min_points}")
        names = [tier.name for tier in tiers]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"tier names must be unique: {', '.join(repeated)} repeated")
        return tiers

    def tier(self, credited: Decimal) -> LoyaltyTier | None:
        """The highest tier whose ``min_points`` ``credited`` reaches, if any."""
        reached = [tier for tier in self.tiers if credited >= tier.min_points]
        return reached[-1] if reached else None


class LoyaltyPoints(Calculator):
    """``loyalty_points``: awards expiring points to the holder, by tier; redeems them against the balance."""

    params_model = LoyaltyPointsParams
    params: LoyaltyPointsParams

    def holder(self, event: Event) -> str:
        return partner(event) if self.params.holder == "partner" else event.payee_id

    def calculate(self, event: Event, history: History) -> list[RewardLine | FundMovement]:
        if event.event_type in self.params.redemption_event_types:
            return self._redeem(event, history)
        return self._award(event, history)

    def _award(self, event: Event, history: History) -> list[RewardLine | FundMovement]:
        p = self.params
        activity = str(event.attributes.get("activity", "")).strip()
        details: dict[str, str] = {}
        if activity and activity in p.points_per_action:
            base = Decimal(p.points_per_action[activity])
            details["activity"] = activity
        elif p.points_per_unit_amount is not None and event.amount is not None:
            amount, currency = event_money(event)
            if currency != p.currency:
                raise CalculationError(f"the event is in {currency}, points_per_unit_amount in {p.currency}: "
                                       "amounts in other currencies earn no points (they are not converted)")
            base = amount * p.points_per_unit_amount
            details["amount"] = f"{amount} {currency}"
        else:
            raise NotEligible(self._no_rule(event, activity))
        holder = self.holder(event)
        text = f"{self.program}: points"
        multiplier = Decimal(1)
        if p.tiers:
            since, _until, label = period_bounds(event.occurred_at, p.tier_period)
            credited = history.fund_credited(self.program, holder, POINTS, since, event.occurred_at)
            tier = p.tier(credited)
            if tier is not None:
                multiplier = tier.multiplier
                details["tier"] = tier.name
                text += f" ({tier.name} x{multiplier})"
            details |= {"tier_period": label, "credited_in_period": str(credited), "multiplier": str(multiplier)}
        points = round_unit(base * multiplier, POINTS)
        details["base_points"] = str(base)
        if points <= 0:
            raise NotEligible(f"{base} points x {multiplier} is {points} points once rounded to whole points")
        expires = event.occurred_at + timedelta(days=p.expiry_days) if p.expiry_days is not None else None
        if expires is not None:
            details["expires_at"] = expires.isoformat()
        return [FundMovement(holder, points, POINTS, expires, text, details)]

    def _no_rule(self, event: Event, activity: str) -> str:
        """Why an event that is not a redemption earns no points."""
        p = self.params
        action = f"activity {activity!r} is not in points_per_action" if activity else "the event names no `activity`"
        if p.points_per_unit_amount is None:
            return f"{action}, and the program awards points per action only"
        return f"{action}, and the event has no amount to earn points_per_unit_amount on"

    def _redeem(self, event: Event, history: History) -> list[RewardLine | FundMovement]:
        p = self.params
        points = attribute_count(event, "points")
        holder = self.holder(event)
        balance = history.fund_balance(self.program, holder, POINTS, event.occurred_at)
        if balance < points:
            raise CalculationError(f"not enough points for {holder}: balance {balance} points, redemption "
                                   f"{points} points")
        text = f"{self.program}: redeemed {points} points"
        details = {"points": str(points), "balance_before": str(balance)}
        lines: list[RewardLine | FundMovement] = [FundMovement(holder, Decimal(-points), POINTS, None, text, details)]
        if p.value_per_point is not None and p.currency is not None:
            value = quantize(points * p.value_per_point, p.currency)
            lines.append(RewardLine(holder, value, p.currency, text,
                                    details | {"value_per_point": str(p.value_per_point)}))
        return lines
