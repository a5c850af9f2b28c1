"""Currency conversion: the core's one place to ask for an FX rate and to apply it.

Rates come from ``payhub_fx_rate`` hook plugins (for example the built-in ``ecb_rates``). The core never converts
at a rate it could not check: an answer that is malformed, or a provider that raises, counts as no rate, and the
caller holds the money it wanted to convert, giving the provider's error as the reason. A converted amount is
rounded once, to the quote currency's minor units, with the one rounding rule of :mod:`payhub.money`.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import Decimal, localcontext
from weakref import WeakKeyDictionary

import pluggy

from payhub.api import FxRate
from payhub.errors import PayhubError
from payhub.logs import Reminder
from payhub.money import minor_units, quantize

log = logging.getLogger(__name__)

__all__ = ["NO_PROVIDER", "convert", "find_rate", "rate_problem"]

NO_PROVIDER = "from any FX provider"
"""Why there is no rate when no provider answered (see :func:`find_rate`)."""

_reminders: WeakKeyDictionary[pluggy.PluginManager, Reminder] = WeakKeyDictionary()  # per runtime's hooks


def find_rate(hooks: pluggy.PluginManager, base: str, quote: str, on: date, rate_type: str) -> FxRate | str:
    """The ``rate_type`` rate converting ``base`` into ``quote`` that applies on ``on``, or why there is none.

    Asks the ``payhub_fx_rate`` hook (the first provider that answers wins). Why there is none completes "no
    <rate_type> rate <base>-><quote> for <on>": :data:`NO_PROVIDER` when no provider answers; ``because an FX
    provider failed: <error>`` when one raises (no other provider is asked then); ``because an FX provider's answer
    is unusable: <problem>`` when the answer fails :func:`rate_problem`. The last two are logged at ERROR, each
    distinct failure at most every :data:`payhub.logs.REMIND_SECONDS` for one ``hooks``. The caller must hold the
    conversion, never use another rate.
    """
    try:
        rate = hooks.hook.payhub_fx_rate(base=base, quote=quote, on=on, rate_type=rate_type)
    except Exception as exc:  # noqa: BLE001 - a provider's failure is isolated: no rate
        failure = f"{type(exc).__name__}: {exc}"
        reminder = _reminder(hooks)
        if reminder.due(failure):
            log.error("FX rate provider failed for %s->%s on %s (%s): %s; no rate (this failure is logged again "
                      "in %.0fs at the earliest)", base, quote, on, rate_type, failure, reminder.every,
                      exc_info=not isinstance(exc, PayhubError))  # a payhub error says all there is to say
        return f"because an FX provider failed: {failure}"
    if rate is None:
        return NO_PROVIDER
    problem = rate_problem(rate, base, quote, on)
    if problem is not None:
        if _reminder(hooks).due(problem):
            log.error("FX rate provider answered %s->%s on %s (%s) with an unusable rate: %s; no rate",
                      base, quote, on, rate_type, problem)
        return f"because an FX provider's answer is unusable: {problem}"
    return rate  # type: ignore[no-any-return]  # checked by rate_problem


def _reminder(hooks: pluggy.PluginManager) -> Reminder:
    """The log reminder of ``hooks``' FX providers' failures."""
    found = _reminders.get(hooks)
    if found is None:
        found = _reminders[hooks] = Reminder()
    return found


def rate_problem(rate: object, base: str, quote: str, on: date) -> str | None:
    """Why ``rate`` is not a usable answer for ``base``->``quote`` on ``on``, or None when it is.

    Usable: an :class:`FxRate` for exactly ``base`` and ``quote``, whose ``rate`` is a positive finite Decimal,
    whose ``source`` is non-empty text, and whose ``rate_date`` is a date (not a datetime) no later than ``on``.
    """
    if not isinstance(rate, FxRate):
        return f"expected an FxRate, got {type(rate).__name__}"
    if (rate.base, rate.quote) != (base, quote):
        return f"the rate is for {rate.base}->{rate.quote}"
    if not isinstance(rate.rate, Decimal) or not rate.rate.is_finite() or rate.rate <= 0:
        return f"rate {rate.rate!r} is not a positive finite Decimal"
    if not isinstance(rate.source, str) or not rate.source.strip():
        return "the rate names no source"
    if not isinstance(rate.rate_date, date) or isinstance(rate.rate_date, datetime):
        return f"rate_date {rate.rate_date!r} is not a date"
    if rate.rate_date > on:
        return f"rate_date {rate.rate_date} is after {on}"
    return None


def convert(amount: Decimal, rate: FxRate) -> Decimal:
    """``amount`` of ``rate.base`` in ``rate.quote``: ``amount × rate.rate``, multiplied exactly, then rounded to the
    quote currency's minor units (ROUND_HALF_UP, :func:`payhub.money.quantize`).

    ``amount`` must be a finite Decimal (negative for adjustments); raises ValueError otherwise, and
    :class:`payhub.errors.InvalidRecord` when ``rate.quote`` is not a payable ISO 4217 currency.
    """
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"amount {amount!r} is not a finite Decimal")
    with localcontext() as ctx:
        ctx.prec = max(ctx.prec, len(amount.as_tuple().digits) + len(rate.rate.as_tuple().digits))
        product = amount * rate.rate  # exact: the one rounding is the quantize below
        ctx.prec = max(ctx.prec, product.adjusted() + 1 + minor_units(rate.quote))
        return quantize(product, rate.quote)
