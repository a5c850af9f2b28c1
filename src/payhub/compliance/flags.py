"""Payee flags as payhub compares them (docs/compliance.md#flag-caps).

A flag is written in the payees file's ``flags`` column and in ``[[compliance.gifts.flag_caps]] flag``. Both sides
go through :func:`flag_key` before they are compared, so that a flag cannot escape a cap by its spelling: Unicode
NFKC (full-width ``ｇｏｖ３`` is ``gov3``), format characters removed (category Cf: zero-width spaces and joiners,
direction marks, the byte order mark), white space trimmed, case folded.
"""

from __future__ import annotations

import unicodedata

__all__ = ["clean_flag", "flag_key", "flag_problem"]


def clean_flag(text: str) -> str:
    """``text`` as a flag is shown: NFKC-normalised, without format characters (Cf), trimmed; case kept."""
    normal = unicodedata.normalize("NFKC", text)
    return unicodedata.normalize("NFKC", "".join(ch for ch in normal if unicodedata.category(ch) != "Cf")).strip()


def flag_key(text: str) -> str:
    """What a flag is compared by: :func:`clean_flag`, case-folded. ``Gov3``, ``gov3\\u200b`` and ``ｇｏｖ３`` are
    all ``gov3``."""
    return clean_flag(text).casefold()


def flag_problem(text: str) -> str | None:
    """Why ``text`` cannot be a capped flag, in plain words, or None: empty once normalised, a ``;`` (it separates
    flags in the payees file), or a control character."""
    cleaned = clean_flag(text)
    if not cleaned:
        return "is empty (once invisible characters and surrounding spaces are removed)"
    if ";" in cleaned:
        return "contains ';', which separates flags in the payees file: give one flag per cap"
    controls = sorted({f"U+{ord(ch):04X}" for ch in cleaned if unicodedata.category(ch) == "Cc"})
    if controls:
        return f"contains control characters ({', '.join(controls)}): write the flag as plain text"
    return None
