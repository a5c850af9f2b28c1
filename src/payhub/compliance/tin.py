"""Taxpayer identification numbers: what kind a number is and whether it is well formed (python-stdnum).

Only the kind and the status leave this module; the number itself is sealed with the payee's personal key
(:mod:`payhub.compliance.personal`) and never logged, listed or audited.
"""

from __future__ import annotations

import re

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError
from stdnum.us import ein, itin, ssn
from stdnum.util import get_cc_module

from payhub.states import TinStatus

_SEPARATORS = re.compile(r"[\s./-]+")
"""What people write between the groups of a number: spaces, dots, hyphens, slashes."""
EU_VAT_PREFIXES = frozenset(state.upper() for state in eu_vat.MEMBER_STATES) | {"EL", "XI"}


def classify(country: str | None, tin: str | None) -> tuple[str | None, TinStatus]:
    """(kind, status) of ``tin`` for a payee of ``country`` (ISO 3166 alpha-2): kinds ``ssn``, ``itin``,
    ``ein`` for the US, ``vat`` for an EU VAT number, ``tin`` or ``vat`` from python-stdnum's module for other
    countries, ``other`` where it has none (status ``unchecked``). Spaces, dots, hyphens and slashes between the
    groups of the number do not count (``536 90 4399`` is ``536-90-4399``)."""
    text = (tin or "").strip()
    if not text:
        return None, TinStatus.MISSING
    grouped = _SEPARATORS.sub("-", text).strip("-")  # 536 90 4399, 536.90.4399: 536-90-4399 (the groups kept)
    if country == "US" or country is None and _us_shaped(grouped):
        text = grouped  # the grouping tells an SSN (3-2-4) from an EIN (2-7)
        for kind, us_module in (("ssn", ssn), ("itin", itin), ("ein", ein)):
            if _valid(us_module, text):
                return kind, TinStatus.VALID
        return "us_tin", TinStatus.INVALID
    text = grouped.replace("-", "")  # compact: python-stdnum's rules read the digits and letters
    code = (country or "").upper()
    prefixed = text if text[:2].upper() in EU_VAT_PREFIXES else f"{'EL' if code == 'GR' else code}{text}"
    if code in EU_VAT_PREFIXES or code == "GR":
        return "vat", TinStatus.VALID if _valid(eu_vat, prefixed) else TinStatus.INVALID
    for kind in ("tin", "vat"):
        module = get_cc_module(code.lower(), kind) if code.isalpha() and len(code) == 2 else None
        if module is not None:
            return kind, TinStatus.VALID if _valid(module, text) else TinStatus.INVALID
    return "other", TinStatus.UNCHECKED


def _us_shaped(text: str) -> bool:
    digits = "".join(ch for ch in text if ch.isdigit())
    return len(digits) == 9 and all(ch.isdigit() or ch in "- " for ch in text)


def _valid(module: object, text: str) -> bool:
    try:
        return bool(module.is_valid(text))  # type: ignore[attr-defined]
    except (ValidationError, ValueError, TypeError):
        return False
