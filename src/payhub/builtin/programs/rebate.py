"""``rebate``: a volume rebate over a quarter or a year, by a tier table, accrued event by event to the partner.

Each event pays the change of the period's rebate that its amount causes (a return, an event of a
``return_event_types`` type, lowers the volume and takes back the difference, also when it drops the partner a
tier: the true-up)::

    paid = round(rebate(volume before + amount)) - round(rebate(volume before))

where ``volume before`` is the partner's volume in the period already calculated by the program (in the event's
currency) and ``round`` is the one rounding rule to the currency's minor units. The rounded totals telescope: the
accruals of a period always add up, to the minor unit, to the rounded rebate of the period's whole volume, however
the volume was split into events and in whatever order they were calculated.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from payhub.api import Amount, Calculator, Event, History, NotEligible, PluginSettings, RewardLine
from payhub.builtin.programs._common import Percent, event_money, partner, period_bounds
from payhub.money import quantize


class Tier(PluginSettings):
    up_to: Amount | None = Field(None, gt=0, description="Upper bound of the band (inclusive); none = open-ended.")
    percent: Percent


def marginal_rebate(volume: Decimal, tiers: Sequence[Tier]) -> Decimal:
    """Each tier's rate applies to the part of ``volume`` inside its band (unrounded)."""
    total = Decimal(0)
    lower = Decimal(0)
    for tier in tiers:
        if volume <= lower:
            break
        upper = volume if tier.up_to is None else min(volume, tier.up_to)
        total += (upper - lower) * tier.percent / 100
        if tier.up_to is None:
            break
        lower = tier.up_to
    return total


def retroactive_rebate(volume: Decimal, tiers: Sequence[Tier]) -> Decimal:
    """The rate of the highest tier reached applies to all of ``volume`` (unrounded)."""
    if volume <= 0:
        return Decimal(0)
    for tier in tiers:
        if tier.up_to is None or volume <= tier.up_to:
            return volume * tier.percent / 100
    raise ValueError("the tier table has no open-ended last tier")


class RebateParams(PluginSettings):
    period: Literal["quarter", "year"] = "quarter"
    mode: Literal["marginal", "retroactive"] = "marginal"
    tiers: list[Tier] = Field(min_length=1)
    return_event_types: list[str] = Field(
        default_factory=list, description="Event types whose amount is returned volume (returns, credit notes).")

    @field_validator("tiers")
    @classmethod
    def _table(cls, tiers: list[Tier], info: ValidationInfo) -> list[Tier]:
        previous: Tier | None = None
        for number, tier in enumerate(tiers, start=1):
            if previous is not None:
                assert previous.up_to is not None  # checked on the previous round
                if tier.up_to is not None and tier.up_to <= previous.up_to:
                    raise ValueError(f"tiers must be ascending and must not overlap: tier {number} up_to "
                                     f"{tier.up_to} is not above tier {number - 1} up_to {previous.up_to}")
            if tier.up_to is None and number != len(tiers):
                raise ValueError(f"only the last tier may be open-ended (without up_to); tier {number} is")
            previous = tier
        if tiers[-1].up_to is not None:
            raise ValueError("the last tier must be open-ended (leave out its up_to)")
        if info.data.get("mode") == "retroactive":
            for number in range(1, len(tiers)):
                if tiers[number].percent < tiers[number - 1].percent:
                    raise ValueError(f"retroactive rates must not go down: tier {number + 1} "
                                     f"{tiers[number].percent}% is below tier {number} {tiers[number - 1].percent}% "
                                     "(reaching a tier would take back rebate already paid)")
        return tiers

    def rebate(self, volume: Decimal) -> Decimal:
        tiers = self.tiers
        return marginal_rebate(volume, tiers) if self.mode == "marginal" else retroactive_rebate(volume, tiers)


class Rebate(Calculator):
    """``rebate``: accrues the partner's period rebate on each event, in the event's currency."""

    params_model = RebateParams
    params: RebateParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        p = self.params
        amount, currency = event_money(event)
        payee = partner(event)
        since, until, label = period_bounds(event.occurred_at, p.period)
        before = history.total_volume(self.program, payee, currency, since, until, p.return_event_types)
        after = before - amount if event.event_type in p.return_event_types else before + amount
        rebate_before = quantize(p.rebate(before), currency)
        rebate_after = quantize(p.rebate(after), currency)
        if rebate_after == rebate_before:
            raise NotEligible(f"the {p.mode} rebate of {payee} for {label} stays {rebate_after} {currency}: the "
                              f"volume goes from {before} to {after} {currency}")
        details = {"period": label, "mode": p.mode, "volume_before": str(before), "volume_after": str(after),
                   "rebate_before": str(rebate_before), "rebate_after": str(rebate_after)}
        return [RewardLine(payee, rebate_after - rebate_before, currency,
                           f"{self.program}: {p.mode} rebate {label}, volume {after} {currency}", details)]
