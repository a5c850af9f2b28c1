"""Money rules: ISO 4217 currencies, minor units and the one rounding rule.

Amounts are :class:`decimal.Decimal` everywhere. Rewards and payouts are rounded to their currency's minor
units with ``ROUND_HALF_UP`` (half a minor unit rounds away from zero), once, when a reward line is recorded.
The database stores rounded amounts as integer minor units, so sums in SQL are exact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import lru_cache

from payhub.errors import InvalidRecord

ROUNDING = ROUND_HALF_UP
_PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)", re.ASCII)  # ASCII digits only


@lru_cache(maxsize=512)
def minor_units(currency: str) -> int:
    """Number of decimal places of ``currency`` (JPY 0, EUR 2, BHD 3); raises InvalidRecord if not payable."""
    import iso4217  # parses its XML table when first imported: only once a currency is checked

    try:
        exponent = iso4217.Currency(currency).exponent
    except ValueError:
        raise InvalidRecord(f"unknown currency {currency!r} (not an ISO 4217 code)") from None
    if exponent is None:
        raise InvalidRecord(f"currency {currency!r} has no minor unit and cannot be paid")
    return exponent


def check_currency(currency: object) -> str:
    """Return the upper-case ISO 4217 code or raise InvalidRecord."""
    if not isinstance(currency, str) or not currency.strip():
        raise InvalidRecord("currency is missing")
    code = currency.strip().upper()
    minor_units(code)
    return code


def parse_amount(value: object) -> Decimal:
    """Parse an amount from plain decimal text (no exponent, no separators) or a Decimal; floats are refused."""
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value.strip()):
            raise InvalidRecord(f"amount {value!r} is not a plain decimal number (like 1234.56)")
        amount = Decimal(value.strip())
    else:
        raise InvalidRecord(f"amount {value!r} must be a decimal string, not {type(value).__name__}")
    if not amount.is_finite():
        raise InvalidRecord(f"amount {value!r} is not a finite number")
    return amount


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` to the minor units of ``currency`` with the one rounding rule."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUNDING)


def to_minor(amount: Decimal, currency: str) -> int:
    """Integer minor units of an amount already rounded to ``currency``; raises ValueError if it is not."""
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more decimals than {currency} allows")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """Decimal amount of ``minor`` units of ``currency``."""
    return Decimal(minor).scaleb(-minor_units(currency))


def format_money(amount: Decimal, currency: str) -> str:
    """``1234.50 EUR`` with exactly the currency's minor units."""
    return f"{quantize(amount, currency)} {currency}"


def split(amount: Decimal, currency: str, percents: Sequence[Decimal | int], conserve: bool = True) -> list[Decimal]:
    """``amount`` shared by ``percents``, one part per percent, in order.

    Each percent is between 0 and 100; with ``conserve`` (the default) they add up to exactly 100, and every part
    but the first is cut to the currency's minor units (toward zero) and the first part, the primary's, is what the
    others leave: the parts add up exactly to the rounded ``amount``, the primary gets the rounding remainder, and no
    part has the opposite sign of ``amount``. Without it (overlay shares, any total) every part is rounded on its own
    by the one rule. Raises ValueError for a percent out of range or, with ``conserve``, percents not adding up to
    100.
    """
    shares = [Decimal(percent) for percent in percents]
    for percent in shares:
        if not (percent.is_finite() and 0 <= percent <= 100):
            raise ValueError(f"percent {percent} is not between 0 and 100")
    total = quantize(amount, currency)
    if not conserve:
        return [quantize(total * percent / 100, currency) for percent in shares]
    if sum(shares, Decimal(0)) != 100:
        raise ValueError(f"percents add up to {sum(shares, Decimal(0))}, not 100 (an overlay uses conserve=False)")
    unit = Decimal(1).scaleb(-minor_units(currency))
    others = [(total * percent / 100).quantize(unit, rounding=ROUND_DOWN) for percent in shares[1:]]
    return [total - sum(others, Decimal(0)), *others]
