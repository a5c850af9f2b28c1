"""The in-process harness on SQLite and PostgreSQL: a percentage program paid from a FakeSource through a FakeRail,
through a retry and an unknown outcome whose waits the ManualClock skips; and assert_exactly_once catching planted
breaches (a provider paying twice, a payout whose amount is not the sum of its items)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from payhub.api import ConfigError, Outcome, Payee, PayoutInstruction, SourceRecord
from payhub.testing import (
    ExactlyOnceError,
    FakeRail,
    FakeRailSettings,
    FakeSource,
    Harness,
    ManualClock,
    ProviderLedger,
    SourceView,
    WebhookDeliveryView,
    WebhookObjectView,
)
from payhub.testing.pytest_plugin import HarnessFactory

SETTINGS: dict[str, Any] = {
    "programs": {"pct": {"calculator": "percentage", "percent": "10"}},
    "routing": {"default_rail": "bank"},
    "rails": {"bank": {"max_attempts": 4, "retry_initial_seconds": 30, "retry_max_seconds": 120}},
}
PAYEES = [{"id": "p1", "name": "Partner One", "country": "DE", "iban": "DE02100100109307118603"}]


def deal(object_id: str, amount: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-01-15T10:00:00Z", "p1", amount, "EUR")


def paid_once(payhub_harness: HarnessFactory, rail: FakeRail) -> tuple[Harness, FakeSource]:
    source = FakeSource("crm")
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail}, payees=PAYEES)
    source.push(deal("006A", "1234.56"), deal("006B", "100.05"))
    harness.run_until_idle(skip_waits=True)
    return harness, source


def test_a_percentage_program_is_paid_once_through_a_retry_and_an_unknown_outcome(
        payhub_harness: HarnessFactory, payhub_clock: ManualClock) -> None:
    source, rail = FakeSource("crm"), FakeRail("bank")
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail}, payees=PAYEES)
    source.push(deal("006A", "1234.56"), deal("006B", "100.05"))
    rail.plan("retryable", "timeout_before_accept")
    start = payhub_clock.now()

    assert harness.ingest() == 2 and harness.calculate() == 2
    assert [(r.program, r.amount, r.currency, r.status) for r in harness.rewards()] == [
        ("pct", Decimal("123.46"), "EUR", "pending"), ("pct", Decimal("10.01"), "EUR", "pending")]
    assert harness.schedule() == 2 and harness.disburse() == 1
    [payout] = harness.payouts()
    assert (payout.status, payout.amount, payout.attempts) == ("retrying", Decimal("133.47"), 1)
    assert harness.run_until_idle()["disbursed"] == 0  # the backoff has not passed: nothing is due
    assert payout.next_attempt_at is not None and harness.next_attempt_at() == payout.next_attempt_at

    assert harness.skip_to_next_attempt() == payout.next_attempt_at
    assert harness.disburse() >= 1
    [payout] = harness.payouts()
    assert payout.status == "unknown"  # the send timed out; "not found" is not trusted while it may be in flight
    assert harness.run_until_idle()["disbursed"] == 0
    harness.run_until_idle(skip_waits=True)  # the lookup settle window passes on the clock, not in real time
    [payout] = harness.payouts()
    acceptance = rail.ledger.find(payout.idempotency_key)
    assert acceptance is not None
    assert (payout.status, payout.attempts, payout.provider_ref) == ("sent", 3, acceptance.provider_ref)
    assert rail.calls == [[payout.idempotency_key]] * 3 and rail.lookups
    assert rail.accepted == {payout.idempotency_key: 1}
    assert payhub_clock.now() - start >= timedelta(seconds=30 + 600)  # backoff + 10 x timeout_seconds

    rail.ledger.set_outcome(payout.idempotency_key, Outcome.PAID)
    harness.advance(harness.settings.rails["bank"].settle_interval_seconds + 1)
    assert harness.settle() == 1
    assert harness.payouts()[0].status == "paid"
    assert {r.status for r in harness.rewards()} == {"paid"}
    assert [e.object_id for e in harness.events("calculated")] == ["006A", "006B"]
    assert [(c.program, c.status) for c in harness.calculations()] == [("pct", "rewarded")] * 2
    actions = [entry.action for entry in harness.audit() if entry.subject_type == "payout"]
    assert actions[:5] == ["payout.created", "payout.sending", "payout.retrying", "payout.sending",
                           "payout.unknown"]
    assert actions[-2:] == ["payout.sent", "payout.paid"] and "payout.lookup" in actions
    harness.assert_exactly_once()


def test_a_resend_the_provider_deduplicated_is_not_a_second_payment(payhub_harness: HarnessFactory) -> None:
    rail = FakeRail("bank", FakeRailSettings(lookup=False, dedup_window_seconds=3600))
    rail.plan("timeout_after_accept")
    harness, _source = paid_once(payhub_harness, rail)
    [payout] = harness.payouts()
    assert payout.status == "sent"
    assert rail.calls == [[payout.idempotency_key]] * 2  # sent again inside the declared window
    assert rail.ledger.received == {payout.idempotency_key: 2} and rail.accepted == {payout.idempotency_key: 1}
    harness.assert_exactly_once()


def test_assert_exactly_once_catches_a_provider_that_paid_twice(payhub_harness: HarnessFactory) -> None:
    rail = FakeRail("bank")  # no dedup: every send is a payment
    harness, _source = paid_once(payhub_harness, rail)
    harness.assert_exactly_once()
    [payout] = harness.payouts("sent")
    rail.send([PayoutInstruction(payout.id, payout.idempotency_key, Payee("p1", "Partner One"), payout.amount,
                                 payout.currency, "planted", payout.next_attempt_at or harness.clock.now())])
    with pytest.raises(ExactlyOnceError, match=f"payout {payout.id} '{payout.idempotency_key}' was accepted 2 times"):
        harness.assert_exactly_once()


def test_assert_exactly_once_checks_the_ledgers_it_is_given(payhub_harness: HarnessFactory) -> None:
    harness, _source = paid_once(payhub_harness, FakeRail("bank"))
    elsewhere = ProviderLedger(dedup=False)
    [payout] = harness.payouts()
    for _ in range(2):
        elsewhere.accept(PayoutInstruction(payout.id, payout.idempotency_key, Payee("p1", "Partner One"),
                                           payout.amount, payout.currency, "planted", harness.clock.now()))
    harness.assert_exactly_once()
    with pytest.raises(ExactlyOnceError, match="accepted 2 times"):
        harness.assert_exactly_once(elsewhere)


def test_assert_exactly_once_catches_a_payout_that_is_not_the_sum_of_its_items(
        payhub_harness: HarnessFactory) -> None:
    harness, _source = paid_once(payhub_harness, FakeRail("bank"))
    [payout] = harness.payouts()
    engine = sa.create_engine(harness.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE payouts SET amount_minor = amount_minor + 1 WHERE id = :id"),
                         {"id": payout.id})
    finally:
        engine.dispose()
    with pytest.raises(ExactlyOnceError, match=r"is 133\.48 EUR but its items sum to 133\.47"):
        harness.assert_exactly_once()


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_settings_are_validated_by_payhubs_model(payhub_harness: HarnessFactory) -> None:
    with pytest.raises(ConfigError) as bad:
        payhub_harness({"rails": {"bank": {"max_attempts": 0}}}, {"rails.bank": FakeRail("bank")})
    assert "rails.bank.max_attempts" in str(bad.value)
    with pytest.raises(ConfigError) as given:
        payhub_harness({"rails": {"bank": {"lookup": False}}}, {"rails.bank": FakeRail("bank")})
    assert "rails.bank.lookup: given as an instance" in str(given.value)
    with pytest.raises(ConfigError, match="not a payhub.api.Rail"):
        payhub_harness(None, {"rails.bank": FakeSource("bank")})
    with pytest.raises(ConfigError, match="section key"):
        payhub_harness(None, {"bank": FakeRail("bank")})


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_plugins_load_by_name_next_to_given_instances(payhub_harness: HarnessFactory, plugin_path: Any) -> None:
    rail = FakeRail("bank")
    harness = payhub_harness({**SETTINGS, "sources": {"named": {"plugin": "fake"}}},
                             {"sources.crm": FakeSource("crm"), "rails.bank": rail}, payees=PAYEES)
    assert isinstance(harness.source("named"), FakeSource) and harness.source("named") is not harness.source("crm")
    assert harness.rail("bank") is rail and harness.plugin_failures() == {}


def test_close_gives_back_the_clock_and_removes_its_directory() -> None:
    with Harness({}) as harness:
        directory = harness.directory
        assert harness.clock.installed and (directory / "payhub.db").exists()
        assert harness.run_until_idle() == dict.fromkeys(("ingested", "calculated", "scheduled", "disbursed",
                                                          "settled"), 0)
    assert not harness.clock.installed and not directory.exists()
    harness.close()


def test_ingest_fetches_batch_by_batch_and_sources_show_each_cursor(payhub_harness: HarnessFactory) -> None:
    source = FakeSource("crm")
    harness = payhub_harness({"sources": {"crm": {"batch_size": 2}}}, {"sources.crm": source})
    assert [s.name for s in harness.sources()] in ([], ["crm"])
    source.push(*(deal(f"006{n}", "10.00") for n in range(5)))
    assert harness.ingest("crm", batches=1) == 2 and len(source.fetches()) == 1
    (view,) = harness.sources()
    assert view == SourceView("crm", "2", "ok", None, harness.clock.now(), True)
    assert harness.ingest("crm", batches=None) == 3  # until the source has nothing more ready
    assert [(s.cursor, s.more) for s in harness.sources()] == [("5", False)]
    assert [f.cursor for f in source.fetches()] == [None, "2", "4"]


def test_http_client_serves_payhubs_app_and_webhook_tables_read_back(payhub_harness: HarnessFactory) -> None:
    harness = payhub_harness(None, {"sources.crm": FakeSource("crm")})
    with harness.http_client() as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/v1/events").status_code == 401  # the API asks for a token
        assert http.post("/webhooks/crm", content=b"[]").status_code == 404  # the fake source takes no webhooks
    assert harness.webhook_deliveries() == [] and harness.webhook_objects() == []
    at = harness.clock.now()
    engine = sa.create_engine(harness.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO webhook_deliveries (source, delivery_id, received_at) "
                                 "VALUES ('crm', 'd1', :at)"), {"at": at})
            conn.execute(sa.text("INSERT INTO webhook_objects (source, object_id, received_at) "
                                 "VALUES ('crm', '006A', :at)"), {"at": at})
    finally:
        engine.dispose()
    assert harness.webhook_deliveries("crm") == [WebhookDeliveryView("crm", "d1", at)]
    assert harness.webhook_objects() == [WebhookObjectView("crm", "006A", at)]
    assert harness.webhook_objects("other") == []


def test_open_reads_a_database_another_harness_wrote_without_changing_it(payhub_harness: HarnessFactory) -> None:
    rail = FakeRail("bank")
    harness, _ = paid_once(payhub_harness, rail)
    with Harness.open(harness.database_url) as stored:
        assert stored.events() == harness.events() and len(stored.events()) == 2
        assert stored.rewards() == harness.rewards() and stored.payouts() == harness.payouts()
        assert stored.audit() == harness.audit() and stored.audit_problem() is None
        assert [s.cursor for s in stored.sources()] == ["2"] and not stored.sources()[0].more
        with pytest.raises(sa.exc.DBAPIError), stored._engine.begin() as conn:  # read-only
            conn.execute(sa.text("DELETE FROM audit_log"))
    assert len(harness.audit()) == len(stored.audit())

