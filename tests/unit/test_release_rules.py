"""The rules of releasing a held payout that need no database: which hold a payout is under and whether two
operators' release of a screening hold stands (both read from its audit entries, never from its columns), how
operators are told apart, and what a screening release's justification must be."""

from __future__ import annotations

import json
from typing import Any

import pytest

from payhub.audited import AuditRow
from payhub.errors import PayhubError
from payhub.pipeline.holds import covered, hold_denials, hold_recorded, screening_override
from payhub.pipeline.operator import operator_key
from payhub.pipeline.payout_actions import MIN_JUSTIFICATION, justification
from payhub.states import PayoutHold


def entries(*pairs: tuple[str, dict[str, Any] | str]) -> list[AuditRow]:
    """Audit rows of one payout in chain order from (action, detail) pairs."""
    return [AuditRow(seq, "7", action, "ok", detail if isinstance(detail, str) else json.dumps(detail))
            for seq, (action, detail) in enumerate(pairs, start=1)]


CREATED = ("payout.created", {"amount": "5.00"})
PRESEND = {"reason": "does not match its audit trail: amount", "check": "audit trail"}


@pytest.mark.parametrize(("rows", "hold"), [
    ([CREATED, ("payout.held", {"reason": "x", "hold_code": "screening"})], PayoutHold.SCREENING),
    ([CREATED, ("payout.held", {**PRESEND, "hold_code": "audit_trail"})], PayoutHold.AUDIT_TRAIL),
    ([CREATED, ("payout.held", PRESEND)], PayoutHold.AUDIT_TRAIL),  # written before hold codes: the check says
    ([CREATED, ("payout.held", {"reason": "does not match its audit trail: but no check named"})],
     PayoutHold.SCREENING),  # the reason's text decides nothing
    ([CREATED, ("payout.held", {**PRESEND, "hold_code": "tampered"})], PayoutHold.SCREENING),
    ([CREATED, ("payout.held", "not json")], PayoutHold.SCREENING),
    ([CREATED], PayoutHold.SCREENING),  # held in the row only
    ([CREATED, ("payout.held", {**PRESEND, "hold_code": "audit_trail"}), ("payout.released", {"reason": "ok"})],
     PayoutHold.SCREENING),  # the last status entry is not a hold
    ([CREATED, ("payout.held", {"reason": "hit", "hold_code": "screening"}),
      ("payout.release_requested", {"operator": "a"})], PayoutHold.SCREENING),  # requests are not status entries
    ([CREATED, ("payout.held", {"reason": "hit", "hold_code": "screening"}), ("payout.released", {}),
      ("payout.held", {**PRESEND, "hold_code": "audit_trail"})], PayoutHold.AUDIT_TRAIL),  # the last hold
])
def test_the_hold_a_payout_is_under_is_its_last_audited_hold(rows: list[tuple[str, Any]], hold: PayoutHold) -> None:
    assert hold_recorded(entries(*rows)) is hold


TWO = {"hold_code": "screening", "operators": ["ops:alice", "ops:bob"]}


@pytest.mark.parametrize(("rows", "overridden"), [
    ([CREATED, ("payout.held", {"hold_code": "screening"}), ("payout.released", TWO)], True),
    ([CREATED, ("payout.held", {"hold_code": "screening"}), ("payout.released", TWO),
      ("payout.held", {**PRESEND, "hold_code": "audit_trail"})], False),  # a later hold voids it
    ([CREATED, ("payout.held", {"hold_code": "screening"}), ("payout.released", TWO),
      ("payout.held", {**PRESEND, "hold_code": "audit_trail"}),
      ("payout.released", {"reason": "restored", "hold_code": "audit_trail"})], False),
    ([CREATED, ("payout.held", PRESEND), ("payout.released", {"reason": "ok", "hold_code": "audit_trail"})], False),
    ([CREATED, ("payout.released", {**TWO, "hold_code": "audit_trail"})], False),
    ([CREATED, ("payout.released", {**TWO, "operators": ["ops:alice", " OPS:ALICE"]})], False),  # one operator
    ([CREATED, ("payout.released", {**TWO, "operators": ["ops:alice"]})], False),
    ([CREATED, ("payout.released", {**TWO, "operators": "ops:alice and ops:bob"})], False),
    ([CREATED], False),
])
def test_only_two_operators_release_of_a_screening_hold_overrides_screening(rows: list[tuple[str, Any]],
                                                                            overridden: bool) -> None:
    assert (screening_override(entries(*rows)) is not None) is overridden


NEAR = "sanctions: possible match on 1 listed entry: eu of 2026-11-30: entry EU.1 'Chloe MARTINEZ', score 92.3"
OTHER = "sanctions: possible match on 1 listed entry: ofac_sdn of 2026-12-01: entry 7001 'PETROV, Ivan', score 100.0"


def test_a_release_covers_the_denials_of_the_hold_it_released_and_nothing_else() -> None:
    rows = entries(CREATED, ("payout.held", {"reason": NEAR, "denials": [NEAR], "hold_code": "screening"}),
                   ("payout.released", {**TWO, "covers": [NEAR]}))
    override = screening_override(rows)
    assert override is not None and override.entry == 3
    assert covered([NEAR], override)
    assert covered([f"  {NEAR.replace(' ', '   ')} "], override)  # white space is not a new denial
    assert not covered([OTHER], override)  # the payee renamed to a listed name
    assert not covered([NEAR, OTHER], override)  # one more denial
    assert not covered([NEAR.replace("92.3", "95.0")], override)  # a different score is a different denial
    assert not covered([], override) and not covered([NEAR], None)


def test_a_release_written_before_covers_were_recorded_covers_the_reason_of_the_hold_before_it() -> None:
    rows = entries(CREATED, ("payout.held", {"reason": f"{NEAR}; over limit", "hold_code": "screening"}),
                   ("payout.released", TWO))
    override = screening_override(rows)
    assert covered([NEAR, "over limit"], override)  # the joined reason, as the hold recorded it
    assert not covered([OTHER], override)


def test_the_denials_of_a_hold_are_its_last_held_entry() -> None:
    assert hold_denials(entries(CREATED)) == []
    assert hold_denials(entries(CREATED, ("payout.held", {"reason": NEAR}))) == [NEAR]
    assert hold_denials(entries(CREATED, ("payout.held", {"reason": "x; y", "denials": ["x", "y"]}),
                                ("payout.released", TWO), ("payout.held", {"reason": OTHER, "denials": [OTHER]}))
                        ) == [OTHER]


@pytest.mark.parametrize(("one", "other"), [
    ("Alice", "alice "),
    ("ops:alice", "  OPS:Alice\t"),
    ("ops:alice", "ops:\u200balice\u2060"),  # zero-width space and word joiner
    ("ops:alice", "ops:\uff41lice"),  # fullwidth a (NFKC)
    ("Stra\u00dfe", "STRASSE"),  # case folding, not lower()
    ("ops: alice  smith", "ops: alice smith"),
    ("e\u0301", "\u00e9"),  # combining accent vs precomposed
])
def test_operator_names_that_differ_only_in_case_width_invisible_characters_or_spaces_are_one_operator(
        one: str, other: str) -> None:
    assert operator_key(one) == operator_key(other)


def test_different_operators_stay_different_and_a_blank_name_is_empty() -> None:
    assert operator_key("ops:alice") != operator_key("ops:bob")
    assert operator_key("token:alice") != operator_key("user:alice")
    assert operator_key(" \u200b\t") == ""


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


@pytest.mark.parametrize("invisible", ["\u200b", "\u200d", "\u2060", "\ufeff", "\u202e"])
def test_format_characters_do_not_count_towards_a_justification(invisible: str) -> None:
    with pytest.raises(PayhubError, match="too short"):
        justification("x" * 15 + invisible * 15)
    with pytest.raises(PayhubError, match="a written justification is required"):
        justification(invisible * 30)
    assert justification("x" * MIN_JUSTIFICATION + invisible) == "x" * MIN_JUSTIFICATION + invisible
