"""What every operator decision (on rewards or payouts) requires, whatever it decides."""

from __future__ import annotations

import unicodedata

from payhub.errors import PayhubError


def required_reason(reason: str) -> str:
    """``reason`` without surrounding white space; PayhubError when nothing visible is left (white space and
    format characters such as zero-width spaces or direction marks alone are no reason)."""
    text = (reason or "").strip()
    if not operator_key(text):
        raise PayhubError("a reason is required (it is recorded in the audit log)")
    return text


def operator_key(actor: str) -> str:
    """The identity ``actor`` (an audit-log actor name) stands for when operators are told apart: NFKC-normalised,
    without format characters (zero-width spaces and joiners, direction marks), white space trimmed and each run of
    it counted as one, case-folded. ``"Alice"``, ``"alice "`` and ``"ALICE\\u200b"`` are one operator."""
    text = unicodedata.normalize("NFKC", actor or "")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", " ".join(text.split()).casefold())
