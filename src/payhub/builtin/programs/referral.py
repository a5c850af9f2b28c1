"""``referral``: a one-time flat fee per referred customer, or a share of the revenue the customer actually pays.

``mode = "flat"`` pays ``amount`` in ``currency`` to the referring partner for each referral event (use the core key
``event_types``, e.g. ``["referral_closed"]``, so that only the closing of a referral pays). Paid once per referral:
the referral is the event's CRM object, and its closing transition has one dedup key
(``source:object_type:object_id:transition``), so a re-sent or re-read closing is dropped at ingest and never
calculated twice. A second CRM object for the same customer is a second referral; to take a fee back when a
referral is cancelled, use the core key ``clawback_event_types``.

``mode = "revenue_share"`` pays ``percent`` of each payment the referred customer makes (the event amount, in its
currency) while the payment falls in the term: from the attribute ``referred_at`` (the day the referral started)
up to, not including, the same day ``months`` months later. A refund or credit note in the term, given either as a
negative amount or as an event whose type is in ``refund_event_types`` (with the refunded amount, positive, as
ingest requires today), gives a negative line of the same percent: the overpaid share is recouped from the
partner's later payouts. A refund is dated by its own event: one made after the term takes nothing back. Each
line is the payment's share rounded once by the one rounding rule, so over many payments the total can differ from
``percent`` of the total revenue by at most half a minor unit per payment.
"""

from __future__ import annotations

from calendar import monthrange
from datetime import date, timedelta
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from payhub.api import Amount, CalculationError, Calculator, Event, History, NotEligible, PluginSettings, RewardLine
from payhub.builtin.programs._common import Currency, Percent, attribute_date, event_money, partner
from payhub.money import quantize

_FLAT_KEYS = ("amount", "currency")
_SHARE_KEYS = ("percent", "months")


def add_months(day: date, months: int) -> date:
    """The same day ``months`` calendar months later; the month's last day when it is shorter (31 Jan + 1 = 28 Feb)."""
    years, month = divmod(day.month - 1 + months, 12)
    year = day.year + years
    return date(year, month + 1, min(day.day, monthrange(year, month + 1)[1]))


def _needed(value: object, info: ValidationInfo) -> object:
    """Check that ``info.field_name`` is given with its mode, and left out with the other mode."""
    mode = info.data.get("mode")
    name = info.field_name
    if mode is None:  # the mode itself is invalid and reported
        return value
    own = _FLAT_KEYS if mode == "flat" else _SHARE_KEYS
    if name in own and value is None:
        raise ValueError(f'mode = "{mode}" needs {name}')
    if name not in own and value is not None:
        other = "revenue_share" if mode == "flat" else "flat"
        raise ValueError(f'{name} belongs to mode = "{other}"; mode = "{mode}" uses {" and ".join(own)}')
    return value


class ReferralParams(PluginSettings):
    mode: Literal["flat", "revenue_share"]
    amount: Amount | None = Field(None, gt=0, validate_default=True, description="Flat: the fee per referral.")
    currency: Currency | None = Field(None, validate_default=True, description="Flat: the fee's currency.")
    percent: Percent | None = Field(None, gt=0, validate_default=True,
                                    description="Revenue share: percent of each payment.")
    months: int | None = Field(None, ge=1, le=120, validate_default=True,
                                       description="Revenue share: the term, in months from referred_at.")
    refund_event_types: list[str] = Field(
        default_factory=list, description="Revenue share: event types whose amount is refunded revenue.")

    @field_validator("amount", "currency", "percent", "months")
    @classmethod
    def _mode_keys(cls, value: object, info: ValidationInfo) -> object:
        return _needed(value, info)

    @field_validator("refund_event_types")
    @classmethod
    def _refunds_share(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("mode") == "flat":
            raise ValueError('refund_event_types belongs to mode = "revenue_share"; a flat fee is taken back with '
                             "the core key clawback_event_types")
        return value


class Referral(Calculator):
    """``referral``: a flat fee per referral, or ``percent`` of each payment within the term, to the partner."""

    params_model = ReferralParams
    params: ReferralParams

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        if self.params.mode == "flat":
            return self._flat(event)
        return self._revenue_share(event)

    def _flat(self, event: Event) -> list[RewardLine]:
        p = self.params
        if p.amount is None or p.currency is None:  # the params model requires both in this mode
            raise CalculationError("the flat referral program has no amount and currency")
        return [RewardLine(partner(event), quantize(p.amount, p.currency), p.currency,
                           f"{self.program}: referral fee {p.amount} {p.currency}",
                           {"referral": f"{event.object_type}:{event.object_id}"})]

    def _revenue_share(self, event: Event) -> list[RewardLine]:
        p = self.params
        if p.percent is None or p.months is None:  # the params model requires both in this mode
            raise CalculationError("the revenue-share referral program has no percent and months")
        amount, currency = event_money(event, allow_negative=True)
        if event.event_type in p.refund_event_types:
            if amount < 0:
                raise CalculationError(f"refund event with a negative amount {amount}: give the refunded amount "
                                       "(positive) with a refund event type, or a negative amount with another")
            amount = -amount
        payee = partner(event)
        started = attribute_date(event, "referred_at")
        if started is None:
            raise CalculationError("a revenue-share payment needs the `referred_at` attribute (the referral's "
                                   "start date)")
        ends = add_months(started, p.months)  # the first day after the term
        paid_on = event.occurred_at.date()
        kind = "revenue" if amount >= 0 else "refund"
        if paid_on < started:
            raise NotEligible(f"the {kind} is dated {paid_on}, before the referral started on {started}")
        if paid_on >= ends:
            raise NotEligible(f"the {kind} is dated {paid_on}, after the {p.months}-month term from {started}, "
                              f"which ended on {ends - timedelta(days=1)}")
        share = quantize(amount * p.percent / 100, currency)
        if share == 0:
            raise NotEligible(f"{p.percent}% of the {kind} of {amount} {currency} is {share} {currency}")
        details = {"referred_at": started.isoformat(), "term_ends": (ends - timedelta(days=1)).isoformat(),
                   kind: str(amount), "percent": str(p.percent)}
        return [RewardLine(payee, share, currency,
                           f"{self.program}: {p.percent}% of {kind} {amount} {currency}", details)]
