"""Money helpers, re-exported from :mod:`payhub.money` (the one implementation).

Amounts are :class:`decimal.Decimal`; each ISO 4217 currency has its minor units (JPY 0, EUR 2, BHD 3) and there
is one rounding rule, :data:`ROUNDING` (``ROUND_HALF_UP``). Unknown or unpayable currencies raise
:class:`~payhub.errors.InvalidRecord`.
"""

from __future__ import annotations

from payhub.money import (
    ROUNDING,
    check_currency,
    format_money,
    from_minor,
    minor_units,
    parse_amount,
    quantize,
    split,
    to_minor,
)

__all__ = [
    "ROUNDING",
    "check_currency",
    "format_money",
    "from_minor",
    "minor_units",
    "parse_amount",
    "quantize",
    "split",
    "to_minor",
]
