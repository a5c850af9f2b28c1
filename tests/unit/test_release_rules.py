"""The rules of releasing a held payout that need no database: which hold a payout is under (hold code, or the
reason of a payout held before hold codes were recorded) and what a screening release's justification must be."""

from __future__ import annotations

import pytest

from payhub.errors import PayhubError
from payhub.pipeline.payout_actions import MIN_JUSTIFICATION, hold_of, justification
from payhub.states import PayoutHold


@pytest.mark.parametrize(("code", "reason", "hold"), [
    ("screening", "does not match its audit trail: x", PayoutHold.SCREENING),  # the code decides
    ("audit_trail", "over screening limit 1000", PayoutHold.AUDIT_TRAIL),
    (None, "does not match its audit trail: amount 5 EUR differs", PayoutHold.AUDIT_TRAIL),
    (None, "over screening limit 1000", PayoutHold.SCREENING),
    (None, None, PayoutHold.SCREENING),
    ("tampered", "does not match its audit trail: x", PayoutHold.SCREENING),  # unknown code: the stricter release
])
def test_the_hold_a_payout_is_under(code: str | None, reason: str | None, hold: PayoutHold) -> None:
    assert hold_of(code, reason) is hold


def test_a_justification_is_required() -> None:
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(PayhubError, match="a written justification is required"):
            justification(blank)


def test_a_justification_is_long_enough_counting_runs_of_white_space_once() -> None:
    assert MIN_JUSTIFICATION == 20
    with pytest.raises(PayhubError, match="too short: .* at least 20 characters"):
        justification("looks fine")
    with pytest.raises(PayhubError, match="too short"):
        justification("a" + " " * 30 + "b")  # padding is not a justification
    assert justification("  not the listed party (DOB)  ") == "not the listed party (DOB)"
    assert justification("x" * MIN_JUSTIFICATION) == "x" * MIN_JUSTIFICATION
    with pytest.raises(PayhubError, match="too short"):
        justification("x" * (MIN_JUSTIFICATION - 1))
