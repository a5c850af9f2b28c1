"""Text for bank files: transliteration to the character sets banks accept, and short identifiers.

SEPA (EPC "SEPA Requirements for an Extended Character Set", basic Latin set): ``a-z A-Z 0-9 / - ? : ( ) . , ' +``
and space. NACHA: upper-case letters, digits and a few punctuation marks. Letters outside ASCII are transliterated
(``Müller`` -> ``Muller``, ``Łódź`` -> ``Lodz``, ``ß`` -> ``ss``) with anyascii; anything else becomes a space.
"""

from __future__ import annotations

import hashlib
import re

from anyascii import anyascii

SEPA_ALLOWED = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")
ACH_ALLOWED = re.compile(r"[^A-Z0-9 .,'&/()\-]")
# Replacements before the generic rule, so the meaning survives.
_SEPA_MAP = str.maketrans({"&": "+", "_": "-", '"': "'", ";": ",", "!": ".", "*": ".", "\\": "/"})
_ACH_MAP = str.maketrans({"_": "-", '"': "'", ";": ",", "+": "&"})
ID_CHARS = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]+")
KEY_FORM = re.compile(r"ph-([0-9a-f]{32})")


def _squash(text: str) -> str:
    return " ".join(text.split())


def sepa_text(value: str, limit: int) -> str:
    """``value`` in the SEPA basic Latin character set, at most ``limit`` characters."""
    text = anyascii(value).translate(_SEPA_MAP)
    return _squash(SEPA_ALLOWED.sub(" ", text))[:limit].strip()


def ach_text(value: str, limit: int) -> str:
    """``value`` as NACHA alphanumeric text (upper case), at most ``limit`` characters."""
    text = anyascii(value).upper().translate(_ACH_MAP)
    return _squash(ACH_ALLOWED.sub(" ", text))[:limit].strip()


def is_sepa_identifier(value: str) -> bool:
    """An identifier the EPC guidelines allow: 1-35 characters of the SEPA set, no leading, trailing or double
    slash, no space (banks trim spaces)."""
    return (0 < len(value) <= 35 and ID_CHARS.fullmatch(value) is not None and " " not in value
            and not value.startswith("/") and not value.endswith("/") and "//" not in value)


def end_to_end_id(key: str) -> str:
    """The EndToEndId / InstrId of a payout: its idempotency key when that fits (``ph-`` + 32 hex digits is exactly
    35 characters), else ``PH`` + the first 33 hex digits of the key's SHA-256 (deterministic, so every attempt
    uses the same id)."""
    if is_sepa_identifier(key):
        return key
    return "PH" + hashlib.sha256(key.encode()).hexdigest()[:33]


def ach_individual_id(key: str) -> str:
    """The 15-character NACHA individual identification number of a payout: for payhub's ``ph-<32 hex>`` keys the
    first 15 hex digits of the key (upper case, so ``ph-0a1b…`` is ``0A1B…``), else the first 15 hex digits of the
    key's SHA-256."""
    match = KEY_FORM.fullmatch(key)
    digits = match.group(1) if match else hashlib.sha256(key.encode()).hexdigest()
    return digits[:15].upper()


def mask_account(value: str) -> str:
    """An account number or IBAN shortened for reasons and logs: ``DE89…3000``."""
    compact = "".join(value.split())
    if len(compact) <= 8:
        return "…" + compact[-2:]
    return f"{compact[:4]}…{compact[-4:]}"
