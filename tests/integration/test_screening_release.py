"""Releasing held payouts through the in-process harness, on SQLite and PostgreSQL: a screening hold needs two
different operators with written justifications, all audited, and the released payout is sent exactly once without
being screened again; cancelling voids a pending request; an audit-trail hold keeps its one-operator release."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from payhub.api import ScreenDecision, SourceRecord, hookimpl
from payhub.clock import isoformat
from payhub.db.schema import payouts, release_requests
from payhub.errors import PayhubError
from payhub.pipeline import payout_actions
from payhub.runtime import Runtime
from payhub.testing import FakeRail, FakeSource, Harness
from payhub.testing.pytest_plugin import HarnessFactory

SETTINGS: dict[str, Any] = {
    "programs": {"full": {"calculator": "percentage", "percent": "100"}},
    "routing": {"default_rail": "bank"},
}
PAYEES = [{"id": "p1", "name": "Ivan Listed", "country": "DE"}, {"id": "p2", "name": "Partner Two", "country": "FR"}]
HIT = "sanctions: name matches SDN entry 36 (score 97)"


class ListScreen:
    """A screening hook denying payouts to the payees it lists; records every payout it screens."""

    def __init__(self, listed: set[str]) -> None:
        self.listed = listed
        self.screened: list[int] = []

    @hookimpl
    def payhub_screen_payout(self, payout: Any) -> ScreenDecision:
        self.screened.append(payout.payout_id)
        return ScreenDecision(payout.payee.id not in self.listed, HIT if payout.payee.id in self.listed else None)


Operator = Callable[[str], Runtime]


@pytest.fixture
def operator(payhub_harness: HarnessFactory) -> Iterator[Callable[[Harness, str], Runtime]]:
    """``operator(harness, actor)``: a CLI runtime on the harness's database signing as ``actor``."""
    made: list[Runtime] = []

    def factory(harness: Harness, actor: str) -> Runtime:
        made.append(Runtime.for_cli(harness.settings, actor))
        return made[-1]

    yield factory
    for rt in made:
        rt.close()


def deal(object_id: str, payee: str, amount: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-01-15T10:00:00Z", payee, amount, "EUR")


def screened_world(payhub_harness: HarnessFactory) -> tuple[Harness, FakeRail, ListScreen, int]:
    """p1's payout held by screening, p2's sent; return the harness, rail, screen and the held payout's id."""
    source, rail, screen = FakeSource("crm"), FakeRail("bank"), ListScreen({"p1"})
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail, "hooks.screen": screen},
                             payees=PAYEES)
    source.push(deal("006A", "p1", "500.00"), deal("006B", "p2", "200.00"))
    harness.run_until_idle(skip_waits=True)
    [held] = harness.payouts("held")
    assert held.payee_id == "p1" and held.reason == HIT
    return harness, rail, screen, held.id


def row(db: Runtime, payout_id: int) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(select(payouts).where(payouts.c.id == payout_id)).one()


def requests(db: Runtime, payout_id: int) -> list[tuple[str, str]]:
    with db.engine.connect() as conn:
        return [(r.operator, r.justification) for r in conn.execute(
            select(release_requests).where(release_requests.c.payout_id == payout_id))]


def entries(harness: Harness, payout_id: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(action, actor, outcome, detail) of the payout's audit entries."""
    return [(e.action, e.actor, e.outcome, dict(e.detail)) for e in harness.audit()
            if e.subject_type == "payout" and e.subject_id == str(payout_id)]


def test_two_different_operators_release_a_screening_hold_and_it_is_paid_once_under_their_release(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, rail, screen, held = screened_world(payhub_harness)
    alice, bob = operator(harness, "ops:alice"), operator(harness, "ops:bob")
    assert row(alice, held).hold_code == "screening"
    assert screen.screened.count(held) == 1

    first = payout_actions.release(alice, held, "  DOB and nationality differ from the SDN entry ")
    assert (first.released, first.hold_code, first.operators) == (False, "screening", ("ops:alice",))
    assert (row(alice, held).status, row(alice, held).released_by) == ("held", None)
    assert requests(alice, held) == [("ops:alice", "DOB and nationality differ from the SDN entry")]
    with pytest.raises(PayhubError, match=r"ops:alice already asked to release it .*second, different operator"):
        payout_actions.release(alice, held, "asking again, with more conviction")
    harness.run_until_idle(skip_waits=True)
    assert row(alice, held).status == "held"  # one operator is not enough
    assert rail.calls == [[harness.payouts("sent")[0].idempotency_key]]

    done = payout_actions.release(bob, held, "checked the passport copy on file")
    assert (done.released, done.operators) == (True, ("ops:alice", "ops:bob"))
    released = row(alice, held)
    assert (released.status, released.hold_code, released.released_by) == ("scheduled", None, "ops:alice and ops:bob")
    assert requests(alice, held) == []
    assert entries(harness, held)[-2:] == [
        ("payout.release_requested", "ops:alice", "requested", {
            "operator": "ops:alice", "justification": "DOB and nationality differ from the SDN entry",
            "hold_code": "screening", "hold_reason": HIT}),
        ("payout.released", "ops:bob", "ok", {
            "reason": "checked the passport copy on file", "hold_code": "screening",
            "operators": ["ops:alice", "ops:bob"],
            "justifications": ["DOB and nationality differ from the SDN entry", "checked the passport copy on file"],
            "requested_at": entries(harness, held)[-1][3]["requested_at"], "covers": [HIT]})]

    harness.run_until_idle(skip_waits=True)
    assert screen.screened.count(held) == 2  # screened again: the same denial, which the two operators released
    key = row(alice, held).idempotency_key
    assert [call for call in rail.calls if key in call] == [[key]]
    assert row(alice, held).status == "sent"
    harness.assert_exactly_once()
    assert harness.audit_problem() is None


def test_a_justification_is_required_and_refusals_record_nothing(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, _rail, _screen, held = screened_world(payhub_harness)
    alice = operator(harness, "ops:alice")
    before = len(harness.audit())
    with pytest.raises(PayhubError, match="a written justification is required"):
        payout_actions.release(alice, held, "  ")
    with pytest.raises(PayhubError, match="too short"):
        payout_actions.release(alice, held, "false positive")
    assert (requests(alice, held), len(harness.audit()), row(alice, held).status) == ([], before, "held")


def test_cancelling_voids_a_pending_release_request(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, rail, _screen, held = screened_world(payhub_harness)
    alice, bob = operator(harness, "ops:alice"), operator(harness, "ops:bob")
    payout_actions.release(alice, held, "not the listed person, per KYC file")
    payout_actions.cancel(alice, held, "partner asked to be paid next quarter")
    assert (row(alice, held).status, row(alice, held).hold_code, requests(alice, held)) == (
        "cancelled", None, [])
    with pytest.raises(PayhubError, match=f"payout {held} is cancelled; only held payouts can be released"):
        payout_actions.release(bob, held, "second opinion: release it now")
    assert len(rail.calls) == 1  # only p2's payout was ever sent


def test_an_audit_trail_hold_is_released_by_one_operator(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    source, rail = FakeSource("crm"), FakeRail("bank")
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail}, payees=PAYEES)
    alice = operator(harness, "ops:alice")
    source.push(deal("006A", "p2", "200.00"))
    harness.ingest()
    harness.calculate()
    harness.schedule()
    [scheduled] = harness.payouts("scheduled")
    with alice.engine.begin() as conn:  # an insider edits the amount: the pre-send check holds it
        conn.execute(update(payouts).where(payouts.c.id == scheduled.id).values(amount_minor=99_999))
    harness.disburse()
    held = row(alice, scheduled.id)
    assert (held.status, held.hold_code) == ("held", "audit_trail")
    with alice.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == scheduled.id).values(amount_minor=20_000))

    done = payout_actions.release(alice, scheduled.id, "amount restored")
    assert (done.released, done.hold_code, done.operators) == (True, "audit_trail", ("ops:alice",))
    assert (row(alice, scheduled.id).status, row(alice, scheduled.id).released_by) == ("scheduled", "ops:alice")
    assert entries(harness, scheduled.id)[-1] == ("payout.released", "ops:alice", "ok",
                                                  {"reason": "amount restored", "hold_code": "audit_trail"})
    harness.run_until_idle(skip_waits=True)
    assert row(alice, scheduled.id).status == "sent"
    assert rail.calls == [[scheduled.idempotency_key]]


def scheduled_world(payhub_harness: HarnessFactory, payee: str) -> tuple[Harness, FakeRail, ListScreen, int]:
    """One payout to ``payee`` scheduled (not yet disbursed), with the screen listing p1."""
    source, rail, screen = FakeSource("crm"), FakeRail("bank"), ListScreen({"p1"})
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail, "hooks.screen": screen},
                             payees=PAYEES)
    source.push(deal("006A", payee, "200.00"))
    harness.ingest()
    harness.calculate()
    harness.schedule()
    [scheduled] = harness.payouts("scheduled")
    return harness, rail, screen, scheduled.id


def edit(db: Runtime, payout_id: int, **values: Any) -> None:
    """An insider's change to the payout's row."""
    with db.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == payout_id).values(**values))


def test_a_payout_released_from_an_audit_trail_hold_is_screened_before_it_is_sent(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, rail, screen, payout = scheduled_world(payhub_harness, "p2")
    alice = operator(harness, "ops:alice")
    edit(alice, payout, amount_minor=99_999)
    harness.disburse()  # screening allows it, then the check before each send holds it
    assert screen.screened.count(payout) == 1
    assert (row(alice, payout).status, row(alice, payout).hold_code) == ("held", "audit_trail")
    held_entry = entries(harness, payout)[-1]
    assert (held_entry[0], held_entry[3]["hold_code"], held_entry[3]["check"]) == (
        "payout.held", "audit_trail", "audit trail")

    screen.listed.add("p2")  # the payee is listed meanwhile
    edit(alice, payout, amount_minor=20_000)
    done = payout_actions.release(alice, payout, "amount restored")
    assert (done.released, done.hold_code, row(alice, payout).released_by) == (True, "audit_trail", "ops:alice")
    harness.run_until_idle(skip_waits=True)
    assert screen.screened.count(payout) == 2  # screened again, not waved through by the one-operator release
    assert (row(alice, payout).status, row(alice, payout).hold_code, row(alice, payout).reason) == (
        "held", "screening", HIT)
    assert rail.calls == []
    assert harness.audit_problem() is None


def test_a_later_hold_voids_two_operators_screening_release(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, rail, screen, held = screened_world(payhub_harness)
    alice, bob = operator(harness, "ops:alice"), operator(harness, "ops:bob")
    payout_actions.release(alice, held, "DOB and nationality differ from the SDN entry")
    payout_actions.release(bob, held, "checked the passport copy on file")
    amount = row(alice, held).amount_minor
    edit(alice, held, amount_minor=amount + 1)
    harness.disburse()
    assert (row(alice, held).status, row(alice, held).hold_code) == ("held", "audit_trail")
    assert screen.screened.count(held) == 2  # the two operators' release covered the denial until this hold
    edit(alice, held, amount_minor=amount)
    payout_actions.release(alice, held, "amount restored")
    harness.run_until_idle(skip_waits=True)
    assert screen.screened.count(held) == 3
    assert (row(alice, held).status, row(alice, held).hold_code) == ("held", "screening")
    assert len(rail.calls) == 1  # only p2's payout


@pytest.mark.parametrize("tampered", [{"hold_code": "audit_trail"},
                                      {"hold_code": None, "reason": "does not match its audit trail: amount"}])
def test_an_edited_hold_code_does_not_make_a_screening_hold_a_one_operator_release(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime],
        tampered: dict[str, Any]) -> None:
    harness, rail, screen, held = screened_world(payhub_harness)
    alice, bob = operator(harness, "ops:alice"), operator(harness, "ops:bob")
    edit(alice, held, **tampered)
    first = payout_actions.release(alice, held, "the audit trail hold is cleared now")
    assert (first.released, first.hold_code) == (False, "screening")
    assert row(alice, held).status == "held"
    harness.run_until_idle(skip_waits=True)
    assert len(rail.calls) == 1
    assert payout_actions.release(bob, held, "second look: the SDN entry is someone else").released
    harness.run_until_idle(skip_waits=True)
    assert (row(alice, held).status, screen.screened.count(held)) == ("sent", 2)


@pytest.mark.parametrize("tampered", [{"released_by": "ops:alice and ops:bob"}, {"attempts": 1}])
def test_edited_columns_do_not_skip_screening(payhub_harness: HarnessFactory,
                                              operator: Callable[[Harness, str], Runtime],
                                              tampered: dict[str, Any]) -> None:
    harness, rail, screen, payout = scheduled_world(payhub_harness, "p1")
    edit(operator(harness, "ops:alice"), payout, **tampered)
    harness.disburse()
    assert screen.screened == [payout]
    assert [p.id for p in harness.payouts("held")] == [payout]
    assert rail.calls == []


@pytest.mark.parametrize("same", ["OPS:Alice ", " ops:alice", "ops:\u200balice", "ops:\uff41lice"])
def test_the_same_operator_under_another_spelling_is_not_a_second_operator(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime], same: str) -> None:
    harness, rail, _screen, held = screened_world(payhub_harness)
    payout_actions.release(operator(harness, "ops:alice"), held, "DOB and nationality differ from the SDN entry")
    with pytest.raises(PayhubError, match="already asked to release it"):
        payout_actions.release(operator(harness, same), held, "checked the passport copy on file")
    assert row(operator(harness, "ops:bob"), held).status == "held"
    with pytest.raises(PayhubError, match="an operator name is required"):
        payout_actions.release(operator(harness, " \u200b "), held, "checked the passport copy on file")
    assert payout_actions.release(operator(harness, "ops:bob"), held, "checked the passport copy on file").released


def test_cancelling_names_the_voided_release_requests_in_its_audit_entry(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, _rail, _screen, held = screened_world(payhub_harness)
    alice, bob = operator(harness, "ops:alice"), operator(harness, "ops:bob")
    payout_actions.release(alice, held, "not the listed person, per KYC file")
    with alice.engine.connect() as conn:
        requested_at = conn.execute(select(release_requests.c.requested_at)
                                    .where(release_requests.c.payout_id == held)).scalar_one()
    payout_actions.cancel(bob, held, "a true match: not paid")
    assert entries(harness, held)[-1] == ("payout.cancelled", "ops:bob", "failed", {
        "from": "held", "reason": "cancelled by operator: a true match: not paid",
        "voided_release_requests": [{"operator": "ops:alice", "requested_at": isoformat(requested_at)}]})
    assert requests(alice, held) == []
    assert harness.audit_problem() is None


def test_cancelling_without_a_pending_request_names_none(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, _rail, _screen, held = screened_world(payhub_harness)
    payout_actions.cancel(operator(harness, "ops:bob"), held, "a true match: not paid")
    assert "voided_release_requests" not in entries(harness, held)[-1][3]
