"""Pieces the program calculators share: parameter types, periods, event attributes, payees."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field

from payhub.api import Amount, CalculationError, Event, History, InvalidRecord, NotEligible
from payhub.api import Currency as Currency  # re-exported for the calculators
from payhub.clock import Period as Period  # re-exported for the calculators
from payhub.clock import parse_instant
from payhub.clock import period_bounds as period_bounds
from payhub.money import parse_amount, quantize

Percent = Annotated[Amount, Field(ge=0, le=100)]
"""A percentage from 0 to 100, as decimal text ("1.5")."""

EVER = datetime.min.replace(tzinfo=UTC)
"""The start of time, to read a History over all of it."""



def apply_cap(history: History, program: str, payee_id: str, currency: str, earned: Decimal, cap: Decimal,
              since: datetime, until: datetime, cap_name: str) -> tuple[Decimal, dict[str, str]]:
    """What is left to pay of ``earned`` under ``cap`` for events in [since, until), and the details to record
    when the cap cut it (``earned``, ``capped``, ``cap``). Amounts are in ``currency``'s minor units. Raises
    NotEligible, naming ``cap_name`` (the key and its period), when nothing is left."""
    cap = quantize(cap, currency)
    already = history.rewarded_between(program, payee_id, currency, since, until)
    paid = max(Decimal(0), min(earned, cap - already))
    if paid == 0 < earned:
        raise NotEligible(f"{cap_name} of {cap} {currency} is reached: {payee_id} already earned {already} "
                          f"{currency}; this event would earn {earned} {currency}")
    if paid < earned:
        return paid, {"earned": str(earned), "capped": str(earned - paid), "cap": str(cap)}
    return paid, {}


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(0), UTC)


def attribute_date(event: Event, name: str) -> date | None:
    """The date in attribute ``name`` (ISO 8601 date or date-time), None when absent or empty."""
    value: Any = event.attributes.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return parse_instant(value, default_tz=UTC).date()
    except InvalidRecord:
        raise CalculationError(f"attribute `{name}` = {value!r} is not an ISO 8601 date") from None


def attribute_quantity(event: Event) -> Decimal:
    """The event's ``quantity`` attribute as a positive whole number."""
    try:
        quantity = Decimal(str(event.attributes["quantity"]).strip())
    except (KeyError, ArithmeticError, ValueError):
        raise CalculationError("a per-unit program needs a numeric `quantity` attribute") from None
    if not quantity.is_finite() or quantity <= 0 or quantity != quantity.to_integral_value():
        raise CalculationError(f"quantity {quantity} is not a positive whole number")
    return quantity


def event_money(event: Event, *, allow_negative: bool = False) -> tuple[Decimal, str]:
    """The event's amount and currency; raises CalculationError when either is missing or, unless
    ``allow_negative`` (for programs that take refunds and credit notes back), when the amount is negative."""
    if event.amount is None or event.currency is None:
        raise CalculationError("the event has no amount and currency")
    if event.amount < 0 and not allow_negative:
        raise CalculationError(f"negative event amount {event.amount}: send returns and refunds as their own event "
                               "types with a positive amount (return_event_types, refund_event_types)")
    return event.amount, event.currency


def attribute_amount(event: Event, name: str) -> Decimal | None:
    """The exact amount in attribute ``name`` (decimal text or an integer), None when absent or empty; a float, an
    exponent or anything else unreadable raises CalculationError."""
    value: Any = event.attributes.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, float):
        raise CalculationError(f"attribute `{name}` = {value!r} must be decimal text (\"{value}\"): a float is not "
                               "exact")
    try:
        return parse_amount(value)
    except InvalidRecord as exc:
        raise CalculationError(f"attribute `{name}`: {exc}") from None


def attribute_count(event: Event, name: str) -> int:
    """The positive whole number in attribute ``name`` (an integer or its text); raises CalculationError when it is
    missing or is not one."""
    value: Any = event.attributes.get(name)
    if value is None or value == "":
        raise CalculationError(f"the event needs a `{name}` attribute (a positive whole number)")
    if isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except ArithmeticError:
            raise CalculationError(f"attribute `{name}` = {value!r} is not a number") from None
    else:
        raise CalculationError(f"attribute `{name}` = {value!r} must be a whole number or its text")
    if not number.is_finite() or number <= 0 or number != number.to_integral_value():
        raise CalculationError(f"attribute `{name}` = {value!r} is not a positive whole number")
    return int(number)


def partner(event: Event) -> str:
    """The event's partner; raises CalculationError when it has none."""
    if not event.partner_id:
        raise CalculationError("the program pays the partner but the event has no partner_id")
    return event.partner_id
