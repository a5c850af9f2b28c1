"""``deal_registration``: a bonus or a percent uplift when a registered deal closes within its protection window."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import Field, ValidationInfo, field_validator

from payhub.api import Amount, CalculationError, Calculator, Event, History, NotEligible, PluginSettings, RewardLine
from payhub.builtin.programs._common import Currency, Percent, attribute_date, event_money, partner
from payhub.money import quantize


class DealRegistrationParams(PluginSettings):
    bonus: Amount | None = Field(None, gt=0, description="A fixed bonus per protected deal (with currency).")
    currency: Currency | None = Field(None, validate_default=True, description="Currency of the bonus.")
    percent: Percent | None = Field(None, validate_default=True, description="Or a percent of the deal amount.")
    protection_days: int = Field(gt=0, le=3660, description="Days after registration within which the deal must close.")
    second_partner_share: Percent = Field(Decimal(0), description="Percent of the reward for a second partner.")

    @field_validator("currency")
    @classmethod
    def _bonus_currency(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("bonus") is not None and value is None:
            raise ValueError("a bonus needs its currency")
        return value

    @field_validator("percent")
    @classmethod
    def _one_kind(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        has_bonus = info.data.get("bonus") is not None or "bonus" not in info.data  # an invalid bonus was given
        if value is not None and has_bonus:
            raise ValueError("give either bonus or percent, not both")
        if value is None and not has_bonus:
            raise ValueError("give either bonus (with currency) or percent")
        if value is not None and value <= 0:
            raise ValueError("the uplift percent must be above 0")
        return value


class DealRegistration(Calculator):
    """``deal_registration``: rewards the registering partner (and a second partner's share) of a protected deal."""

    params_model = DealRegistrationParams
    params: DealRegistrationParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        p = self.params
        registered = attribute_date(event, "registered_at")
        if registered is None:
            raise NotEligible("the deal was not registered (it has no `registered_at` attribute)")
        closed = event.occurred_at.date()
        protected_until = registered + timedelta(days=p.protection_days)
        if closed < registered:
            raise NotEligible(f"the deal closed on {closed}, before its registration on {registered}")
        if closed > protected_until:
            raise NotEligible(f"the deal closed on {closed}, after its protection ended on {protected_until} "
                              f"({p.protection_days} days after its registration on {registered})")
        first = partner(event)
        if p.percent is not None:
            amount, currency = event_money(event)
            reward = quantize(amount * p.percent / 100, currency)
            text = f"{self.program}: {p.percent}% uplift on {amount} {currency}"
        else:
            if p.bonus is None or p.currency is None:  # the params model requires one of the two
                raise CalculationError("the program has neither bonus nor percent")
            currency = p.currency
            reward = quantize(p.bonus, currency)
            text = f"{self.program}: registration bonus {p.bonus} {currency}"
        details = {"registered_at": registered.isoformat(), "closed_on": closed.isoformat(),
                   "protected_until": protected_until.isoformat()}
        second = str(event.attributes.get("second_partner_id") or "").strip()
        if not second or second == first or p.second_partner_share == 0:
            return [RewardLine(first, reward, currency, text, details)]
        second_part = quantize(reward * p.second_partner_share / 100, currency)
        shares = {"reward": str(reward), "second_partner_share": str(p.second_partner_share)}
        return [
            RewardLine(first, reward - second_part, currency, text + " (first partner)", {**details, **shares}),
            RewardLine(second, second_part, currency, text + " (second partner)", {**details, **shares}),
        ]
