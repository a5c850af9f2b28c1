"""What every operator decision (on rewards or payouts) requires, whatever it decides."""

from __future__ import annotations

from payhub.errors import PayhubError


def required_reason(reason: str) -> str:
    """``reason`` without surrounding white space; PayhubError when nothing is left."""
    text = (reason or "").strip()
    if not text:
        raise PayhubError("a reason is required (it is recorded in the audit log)")
    return text
