"""The named states, re-exported from :mod:`payhub.states`: each member equals the text stored, shown and
audited (``PayoutStatus.REJECTED == "rejected"``), e.g. the ``outcome`` given to ``payhub_payout_failed``.
"""

from __future__ import annotations

from payhub.states import (
    EventStatus,
    HoldCode,
    PayoutStatus,
    RewardStatus,
)

__all__ = [
    "EventStatus",
    "HoldCode",
    "PayoutStatus",
    "RewardStatus",
]
