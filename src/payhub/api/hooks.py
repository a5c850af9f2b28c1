"""Hooks: the ``hookimpl`` marker and the values hook implementations return."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pluggy

__all__ = [
    "FxRate",
    "ScreenDecision",
    "hookimpl",
]


hookimpl = pluggy.HookimplMarker("payhub")
"""Decorator for hook implementations in ``payhub.hooks`` plugins (the specifications: :mod:`payhub.hookspecs`)."""


@dataclass(frozen=True, slots=True)
class ScreenDecision:
    """A screening hook's verdict on a payout: ``allow=False`` holds it with ``reason``."""

    allow: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FxRate:
    """A conversion rate: 1 ``base`` = ``rate`` ``quote``, published by ``source`` for ``rate_date``."""

    base: str
    quote: str
    rate: Decimal
    source: str
    rate_date: date
