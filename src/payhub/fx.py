"""Currency conversion: the core's one place to ask for an FX rate and to apply it.

Rates come from ``payhub_fx_rate`` hook plugins (for example the built-in ``ecb_rates``). The core never converts
at a rate it could not check: an answer that is malformed, or a provider that raises, counts as no rate, and the
caller holds the money it wanted to convert. A converted amount is rounded once, to the quote currency's minor
units, with the one rounding rule of :mod:`payhub.money`.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import Decimal, localcontext

import pluggy

from payhub.api import FxRate
from payhub.money import minor_units, quantize

log = logging.getLogger(__name__)

__all__ = ["convert", "find_rate", "rate_problem"]


def find_rate(hooks: pluggy.PluginManager, base: str, quote: str, on: date, rate_type: str) -> FxRate | None:
    """The ``rate_type`` rate converting ``base`` into ``quote`` that applies on ``on``, or None when none is known.

    Asks the ``payhub_fx_rate`` hook (the first provider that answers wins). None when no provider answers, when
    the providers raise (logged with the traceback; no other provider is asked then), or when the answer fails
    :func:`rate_problem` (logged): the caller must hold the conversion, never use another rate.
    """
    try:
        rate = hooks.hook.payhub_fx_rate(base=base, quote=quote, on=on, rate_type=rate_type)
    except Exception:  # noqa: BLE001 - a provider's bug is isolated: no rate
        log.exception("FX rate provider failed for %s->%s on %s (%s); no rate", base, quote, on, rate_type)
        return None
    if rate is None:
        return None
    problem = rate_problem(rate, base, quote, on)
    if problem is not None:
        log.error("FX rate provider answered %s->%s on %s (%s) with an unusable rate: %s; no rate",
                  base, quote, on, rate_type, problem)
        return None
    return rate  # type: ignore[no-any-return]  # checked by rate_problem


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
