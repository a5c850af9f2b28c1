"""Observer hooks are isolated from each other: an implementation that raises is logged and counted, and every other
plugin's implementation of the same hook is still called (payhub_payout_failed, payhub_payout_settled,
payhub_audit_entry), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from payhub.api import Outcome, PayoutInstruction, SourceRecord, hookimpl
from payhub.metrics import PLUGIN_FAILURES
from payhub.testing import FakeRail, FakeSource
from payhub.testing.pytest_plugin import HarnessFactory

PAYEES = [{"id": "p1", "name": "Partner One", "country": "DE", "iban": "DE02100100109307118603"}]
SETTINGS: dict[str, Any] = {
    "programs": {"pct": {"calculator": "percentage", "percent": "10"}},
    "routing": {"default_rail": "bank"},
    "rails": {"bank": {"max_attempts": 1}},
}


class Broken:
    """Raises from every observer hook."""

    @hookimpl
    def payhub_payout_failed(self, payout: PayoutInstruction, outcome: str, reason: str) -> None:
        raise RuntimeError("observer bug")

    @hookimpl
    def payhub_payout_settled(self, payout: PayoutInstruction, outcome: str, provider_ref: str | None) -> None:
        raise RuntimeError("observer bug")

    @hookimpl
    def payhub_audit_entry(self, entry: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")


class Listener:
    """Records what each observer hook was told."""

    def __init__(self) -> None:
        self.failed: list[tuple[int, str]] = []
        self.settled: list[tuple[int, str]] = []
        self.entries: list[str] = []

    @hookimpl
    def payhub_payout_failed(self, payout: PayoutInstruction, outcome: str, reason: str) -> None:
        self.failed.append((payout.payout_id, outcome))

    @hookimpl
    def payhub_payout_settled(self, payout: PayoutInstruction, outcome: str, provider_ref: str | None) -> None:
        self.settled.append((payout.payout_id, outcome))

    @hookimpl
    def payhub_audit_entry(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry["action"])


def failures(section: str) -> float:
    return PLUGIN_FAILURES.labels("hook", section, "error")._value.get()


def deal(object_id: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-01-15T10:00:00Z", "p1", "100", "EUR")


@pytest.mark.parametrize("broken_first", [True, False], ids=["broken-registered-first", "broken-registered-last"])
def test_a_raising_observer_does_not_stop_the_others(payhub_harness: HarnessFactory, caplog: pytest.LogCaptureFixture,
                                                     broken_first: bool) -> None:
    source, rail, listener = FakeSource("crm"), FakeRail("bank"), Listener()
    order = ["broken", "listener"] if broken_first else ["listener", "broken"]
    settings = {**SETTINGS, "hooks": {name: {} for name in order}}  # hooks register in the order of the settings
    before = failures("broken")
    harness = payhub_harness(settings, {"sources.crm": source, "rails.bank": rail, "hooks.broken": Broken(),
                                        "hooks.listener": listener}, payees=PAYEES)
    source.push(deal("006A"), deal("006B"))
    rail.plan("reject")
    with caplog.at_level(logging.ERROR, logger="payhub"):
        harness.run_until_idle(skip_waits=True)

    [payout] = harness.payouts()
    assert payout.status == "rejected"
    assert listener.failed == [(payout.id, "rejected")]
    assert "payout.rejected" in listener.entries and "event.ingested" in listener.entries
    assert len(listener.entries) == len(harness.audit())  # told of every entry, though the other observer raised
    assert failures("broken") - before == len(listener.entries) + 1
    assert "plugin hooks.broken: payhub_payout_failed failed" in caplog.text

    source.push(deal("006C"))
    harness.run_until_idle(skip_waits=True)
    paid = harness.payouts("sent")[0]
    rail.ledger.set_outcome(paid.idempotency_key, Outcome.PAID)
    harness.advance(harness.settings.rails["bank"].settle_interval_seconds + 1)
    harness.settle()
    assert listener.settled == [(paid.id, "accepted"), (paid.id, "paid")]
    harness.assert_exactly_once()
