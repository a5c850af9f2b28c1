"""The named states: the stored texts, the payout state machine and the rails' outcomes agree."""

from __future__ import annotations

from payhub import reports
from payhub.api import Outcome
from payhub.states import (
    FINAL_PAYOUT,
    PAYOUT_TRANSITIONS,
    AttemptOutcome,
    CalculationStatus,
    EventStatus,
    HoldCode,
    PayoutStatus,
    RewardStatus,
    values,
)


def test_members_are_their_stored_text() -> None:
    assert EventStatus.CALCULATED == "calculated"
    assert f"{RewardStatus.AWAITING_APPROVAL}" == "awaiting_approval"
    assert HoldCode("payout_failed") is HoldCode.PAYOUT_FAILED
    assert values(EventStatus) == ("waiting", "ingested", "calculated", "quarantined")


def test_every_payout_status_has_its_transitions() -> None:
    assert set(PAYOUT_TRANSITIONS) == set(PayoutStatus)
    assert all(following <= set(PayoutStatus) for following in PAYOUT_TRANSITIONS.values())
    assert {"rejected", "returned", "failed", "cancelled"} == FINAL_PAYOUT


def test_an_attempt_records_every_rail_outcome() -> None:
    assert set(values(Outcome)) <= set(values(AttemptOutcome))


def test_the_unrewarded_filter_is_every_calculation_status_but_rewarded() -> None:
    assert set(reports.UNREWARDED) == set(values(CalculationStatus)) - {CalculationStatus.REWARDED}
