"""Screening before every send attempt, on SQLite and PostgreSQL: a payee renamed after two operators released a
near match, or between a payout's attempts, is held before the next send; the same near match goes on under the
release; a retry that screens clear is sent once; a payout an earlier send may have reached is made unresolved,
never sent again; the rail accepts each payout at most once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import select

from payhub.api import PayoutInstruction, RailResult, ScreenDecision, SourceRecord, hookimpl
from payhub.db.schema import payouts
from payhub.errors import PayhubError
from payhub.pipeline import payout_actions
from payhub.runtime import Runtime
from payhub.testing import FakeRail, FakeSource, Harness, invoke_cli
from payhub.testing.fakes import FakeRailSettings
from payhub.testing.pytest_plugin import HarnessFactory

SETTINGS: dict[str, Any] = {
    "programs": {"full": {"calculator": "percentage", "percent": "100"}},
    "routing": {"default_rail": "bank"},
}
NEAR = "sanctions: possible match on 1 listed entry: eu of 2026-11-30: entry EU.9 'Chloe MARTINEZ', score 92.3"
LISTED = ("sanctions: possible match on 1 listed entry: ofac_sdn of 2026-12-01: entry 7001 'PETROV, Ivan "
          "Sergeyevich', score 100.0")
WATCHLIST = {"Chloe Martinez-Ruiz": NEAR, "Ivan Sergeyevich Petrov": LISTED}


class ListingRail(FakeRail):
    """A fake rail that calls ``after_send`` once each send has been answered (to change the world between two
    attempts of one disbursement pass)."""

    after_send: Callable[[], None] = staticmethod(lambda: None)

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        try:
            return super().send(instructions)
        finally:
            self.after_send()


def hold_code(db: Runtime, payout_id: int) -> str | None:
    """The payout row's hold code (listings show it)."""
    with db.engine.connect() as conn:
        return conn.execute(select(payouts.c.hold_code).where(payouts.c.id == payout_id)).scalar_one()


class NameScreen:
    """Denies payouts whose payee's name is on its ``listed`` (at first :data:`WATCHLIST`), with that name's reason;
    records each screening as (payout id, payee name)."""

    def __init__(self) -> None:
        self.listed = dict(WATCHLIST)
        self.screened: list[tuple[int, str]] = []

    @hookimpl
    def payhub_screen_payout(self, payout: Any) -> ScreenDecision:
        self.screened.append((payout.payout_id, payout.payee.name))
        reason = self.listed.get(payout.payee.name)
        return ScreenDecision(reason is None, reason or "")


def write_payees(harness: Harness, names: dict[str, str]) -> None:
    """The payees file with ``names`` (id → name); read again at the next ingest or schedule pass."""
    lines = ["id,name,country"] + [f"{payee},{name},DE" for payee, name in names.items()]
    (harness.directory / "payees.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def operator() -> Iterator[Callable[[Harness, str], Runtime]]:
    made: list[Runtime] = []

    def factory(harness: Harness, actor: str) -> Runtime:
        made.append(Runtime.for_cli(harness.settings, actor))
        return made[-1]

    yield factory
    for rt in made:
        rt.close()


def world(payhub_harness: HarnessFactory, names: dict[str, str], rail: FakeRail | None = None
          ) -> tuple[Harness, FakeRail, NameScreen, FakeSource]:
    source, screen = FakeSource("crm"), NameScreen()
    rail = rail or FakeRail("bank")
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail, "hooks.screen": screen},
                             payees=[{"id": payee, "name": name, "country": "DE"} for payee, name in names.items()])
    for n, payee in enumerate(names):
        source.push(SourceRecord("Opportunity", f"006{n}", "won", "deal_won", "2026-01-15T10:00:00Z", payee,
                                 "300.00", "EUR"))
    return harness, rail, screen, source


def payout_of(harness: Harness, payee: str) -> Any:
    [found] = [p for p in harness.payouts() if p.payee_id == payee]
    return found


def entries(harness: Harness, payout_id: int, action: str) -> list[Any]:
    return [e for e in harness.audit(action) if e.subject_id == str(payout_id)]


def sends(rail: FakeRail, key: str) -> int:
    return sum(call.count(key) for call in rail.calls)


def test_a_payee_renamed_after_two_operators_released_a_near_match_is_held_again_the_other_is_paid(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    names = {"rep-chloe": "Chloe Martinez-Ruiz", "rep-clara": "Chloe Martinez-Ruiz"}
    harness, rail, screen, _source = world(payhub_harness, names)
    harness.run_until_idle(skip_waits=True)
    chloe, clara = payout_of(harness, "rep-chloe"), payout_of(harness, "rep-clara")
    assert (chloe.status, chloe.reason, clara.status) == ("held", NEAR, "held")
    alice, bob = operator(harness, "ops:alice"), operator(harness, "ops:bob")
    for payout in (chloe.id, clara.id):
        payout_actions.release(alice, payout, "date of birth differs from the EU entry")
        assert payout_actions.release(bob, payout, "passport copy on file: another person").released
    write_payees(harness, {**names, "rep-chloe": "Ivan Sergeyevich Petrov"})  # renamed to a listed name

    harness.run_until_idle(skip_waits=True)
    chloe, clara = payout_of(harness, "rep-chloe"), payout_of(harness, "rep-clara")
    assert (chloe.status, hold_code(alice, chloe.id), chloe.reason, chloe.attempts) == (
        "held", "screening", LISTED, 0)
    assert sends(rail, chloe.idempotency_key) == 0 and chloe.idempotency_key not in rail.accepted
    released = entries(harness, chloe.id, "payout.released")[-1]
    assert released.detail["covers"] == [NEAR]
    again = entries(harness, chloe.id, "payout.held")[-1]
    assert (again.detail["denials"], again.detail["not_covered_by"], again.detail["hold_code"]) == (
        [LISTED], released.seq, "screening")
    # The same near match, released by two operators: screened again and sent under their release, once.
    assert clara.status == "sent" and rail.accepted[clara.idempotency_key] == 1
    assert (clara.id, "Chloe Martinez-Ruiz") in screen.screened[-3:]
    [sending] = entries(harness, clara.id, "payout.sending")
    assert sending.detail["screening_override"] == entries(harness, clara.id, "payout.released")[-1].seq

    # Held again, it needs a new two-operator release: the earlier one covered another person.
    payout_actions.release(alice, chloe.id, "operator one looked at the renamed payee")
    harness.run_until_idle(skip_waits=True)
    assert payout_of(harness, "rep-chloe").status == "held"
    with pytest.raises(PayhubError, match="already asked"):
        payout_actions.release(operator(harness, "OPS:Alice"), chloe.id, "a second look by the same person")
    assert sends(rail, chloe.idempotency_key) == 0
    harness.assert_exactly_once()

    explained = invoke_cli("-c", str(harness.settings_file), "explain", f"payout:{clara.id}")
    assert explained.exit_code == 0, explained.output
    text = " ".join(explained.stdout.split())
    assert "released by ops:alice and ops:bob at" in text
    assert f"two operators' release (entry {sending.detail['screening_override']}) covers it" in text


def test_a_retry_after_the_payee_was_renamed_is_held_before_it_is_sent(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    rail = FakeRail("bank", FakeRailSettings(lookup=False))  # an unknown outcome needs an operator
    harness, rail, screen, _source = world(payhub_harness, {"p-retry": "Partner Retry"}, rail)
    rail.plan("timeout_before_accept")
    harness.run_until_idle(skip_waits=True)
    payout = payout_of(harness, "p-retry")
    assert (payout.status, sends(rail, payout.idempotency_key)) == ("unresolved", 1)
    alice = operator(harness, "ops:alice")
    payout_actions.resolve(alice, payout.id, "not-sent", "the provider has no record")
    write_payees(harness, {"p-retry": "Ivan Sergeyevich Petrov"})

    harness.run_until_idle(skip_waits=True)
    payout = payout_of(harness, "p-retry")
    assert (payout.status, hold_code(alice, payout.id), payout.reason, payout.attempts) == (
        "held", "screening", LISTED, 1)
    assert screen.screened == [(payout.id, "Partner Retry"), (payout.id, "Ivan Sergeyevich Petrov")]
    assert sends(rail, payout.idempotency_key) == 1 and payout.idempotency_key not in rail.accepted
    harness.assert_exactly_once()


def test_a_payee_renamed_before_the_lookup_that_finds_nothing_is_held_in_that_round(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    harness, rail, screen, _source = world(payhub_harness, {"p-retry": "Partner Retry"})
    rail.plan("timeout_before_accept")
    harness.ingest()
    harness.calculate()
    harness.schedule()
    harness.disburse()
    payout = payout_of(harness, "p-retry")
    assert payout.status == "unknown"
    write_payees(harness, {"p-retry": "Ivan Sergeyevich Petrov"})

    harness.run_until_idle(skip_waits=True)  # looked up (not screened), not found, then screened before the resend
    payout = payout_of(harness, "p-retry")
    assert (payout.status, hold_code(operator(harness, "ops:alice"), payout.id), payout.reason) == (
        "held", "screening", LISTED)
    assert rail.lookups and sends(rail, payout.idempotency_key) == 1
    assert [name for _id, name in screen.screened] == ["Partner Retry", "Ivan Sergeyevich Petrov"]
    harness.assert_exactly_once()


def test_a_retry_that_screens_clear_is_sent_once(payhub_harness: HarnessFactory) -> None:
    harness, rail, screen, _source = world(payhub_harness, {"p1": "Partner One"})
    rail.plan("retryable", "timeout_before_accept")
    harness.run_until_idle(skip_waits=True)
    payout = payout_of(harness, "p1")
    assert (payout.status, sends(rail, payout.idempotency_key), rail.accepted[payout.idempotency_key]) == (
        "sent", 3, 1)
    assert screen.screened == [(payout.id, "Partner One")] * 3  # every send attempt, no lookup
    assert [len(e.detail["screened_by"]) for e in entries(harness, payout.id, "payout.sending")] == [1, 1, 1]
    harness.assert_exactly_once()


def test_a_denial_after_a_send_that_may_have_reached_the_rail_makes_it_unresolved_without_sending(
        payhub_harness: HarnessFactory, operator: Callable[[Harness, str], Runtime]) -> None:
    # No lookup, but a dedup window: an unknown outcome is sent again with the same key in the next round.
    rail = ListingRail("bank", FakeRailSettings(lookup=False, dedup_window_seconds=3600))
    harness, rail, screen, _source = world(payhub_harness, {"p1": "Partner One"}, rail)
    rail.plan("timeout_after_accept")  # the provider took it; the answer was lost
    rail.after_send = lambda: screen.listed.update({"Partner One": LISTED})  # listed before the resend
    harness.run_until_idle(skip_waits=True)
    payout = payout_of(harness, "p1")
    assert (payout.status, hold_code(operator(harness, "ops:alice"), payout.id)) == ("unresolved", None)
    assert LISTED in (payout.reason or "") and "an earlier send may have reached the rail" in (payout.reason or "")
    assert sends(rail, payout.idempotency_key) == 1 and rail.accepted[payout.idempotency_key] == 1
    assert len(screen.screened) == 2
    [entry] = entries(harness, payout.id, "payout.unresolved")
    assert entry.detail["denials"] == [LISTED]
    alice = operator(harness, "ops:alice")
    with pytest.raises(PayhubError, match="only held payouts can be released"):
        payout_actions.release(alice, payout.id, "the provider says it was never paid")
    assert payout_actions.resolve(alice, payout.id, "sent", "seen in the provider's portal") == "sent"
    harness.assert_exactly_once()
