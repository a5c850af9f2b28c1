"""Taxpayer identification numbers: what kind a number is and whether it is well formed (python-stdnum).

Only the kind and the status leave this module; the number itself is sealed with the payee's personal key
(:mod:`payhub.compliance.personal`) and never logged, listed or audited.
"""

from __future__ import annotations

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError
from stdnum.us import ein, itin, ssn
from stdnum.util import get_cc_module

from payhub.states import TinStatus

EU_VAT_PREFIXES = frozenset(state.upper() for state in eu_vat.MEMBER_STATES) | {"EL", "XI"}


def classify(country: str | None, tin: str | None) -> tuple[str | None, TinStatus]:
    """(kind, status) of ``tin`` for a payee of ``country`` (ISO 3166 alpha-2): kinds ``ssn``, ``itin``,
    ``ein`` for the US, ``vat`` for an EU VAT number, ``tin`` or ``vat`` from python-stdnum's module for other
    countries, ``other`` where it has none (status ``unchecked``)."""
    text = (tin or "").strip()
    if not text:
        return None, TinStatus.MISSING
    if country == "US" or country is None and _us_shaped(text):
        for kind, us_module in (("ssn", ssn), ("itin", itin), ("ein", ein)):
            if _valid(us_module, text):
                return kind, TinStatus.VALID
        return "us_tin", TinStatus.INVALID
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
