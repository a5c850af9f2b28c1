"""Hooks: the ``hookimpl`` marker and the values hook implementations return."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pluggy

__all__ = [
    "FxRate",
    "SanctionsEntry",
    "SanctionsList",
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


@dataclass(frozen=True, slots=True)
class SanctionsEntry:
    """One listed party: its id on the list, its primary name, its aliases and the countries the list gives for it
    (ISO 3166 alpha-2, where known), and the sanctions programmes it is listed under."""

    entry_id: str
    name: str
    aliases: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    kind: str = ""  # individual, entity, vessel, aircraft (as the list says), or empty


@dataclass(frozen=True, slots=True)
class SanctionsList:
    """A sanctions list as published: its name, the date it was published (the list's own date), a SHA-256 over
    the bytes it was read from (shown in the audit log), and its entries."""

    name: str
    published_on: date
    sha256: str
    entries: tuple[SanctionsEntry, ...]
