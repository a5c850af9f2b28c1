"""The in-process harness on SQLite and PostgreSQL: a percentage program paid from a FakeSource through a FakeRail,
through a retry and an unknown outcome whose waits the ManualClock skips; and assert_exactly_once catching planted
breaches (a provider paying twice, a payout whose amount is not the sum of its items)."""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from payhub.api import (
    ConfigError,
    Outcome,
    Payee,
    PayoutInstruction,
    RailResult,
    RetryableRailError,
    SourceRecord,
    UnknownOutcomeError,
)
from payhub.testing import (
    ExactlyOnceError,
    FakeRail,
    FakeRailSettings,
    FakeSource,
    FakeSourceSettings,
    Harness,
    ManualClock,
    ProviderLedger,
    SourceView,
    WebhookDeliveryView,
    WebhookObjectView,
    invoke_cli,
)
from payhub.testing.pytest_plugin import HarnessFactory

SETTINGS: dict[str, Any] = {
    "programs": {"pct": {"calculator": "percentage", "percent": "10"}},
    "routing": {"default_rail": "bank"},
    "rails": {"bank": {"max_attempts": 4, "retry_initial_seconds": 30, "retry_max_seconds": 120}},
}
PAYEES = [{"id": "p1", "name": "Partner One", "country": "DE", "iban": "DE02100100109307118603"}]


class TimeoutIsRetryableRail(FakeRail):
    """A rail with the bug money-safety tests look for: a read timeout (the provider may have paid) is reported as
    retryable (the provider did not pay), so payhub gives up on a payout that was paid."""

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        try:
            return super().send(instructions)
        except UnknownOutcomeError as exc:
            raise RetryableRailError(str(exc)) from exc


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


def test_assert_exactly_once_catches_a_paid_payout_recorded_failed_and_paid_again(
        payhub_harness: HarnessFactory) -> None:
    rail = TimeoutIsRetryableRail("bank")  # its provider does not deduplicate
    source = FakeSource("crm")
    harness = payhub_harness({**SETTINGS, "rails": {"bank": {"max_attempts": 1}}},
                             {"sources.crm": source, "rails.bank": rail}, payees=PAYEES)
    source.push(deal("006A", "1234.56"))
    rail.plan("timeout_after_accept")
    harness.run_until_idle(skip_waits=True)
    [first] = harness.payouts()
    [reward] = harness.rewards()
    assert (first.status, reward.status, reward.hold_code) == ("failed", "held", "payout_failed")
    assert rail.accepted == {first.idempotency_key: 1}  # the provider paid it
    with pytest.raises(ExactlyOnceError) as failed:
        harness.assert_exactly_once()
    assert failed.value.problems == [f"the provider accepted payout {first.id} (key {first.idempotency_key!r}), "
                                     f"which payhub recorded failed ({first.reason})"]

    released = invoke_cli("-c", str(harness.settings_file), "rewards", "release", str(reward.id),
                          "--reason", "paid again")
    assert released.exit_code == 0, released.output
    harness.run_until_idle(skip_waits=True)
    [_, second] = harness.payouts()
    assert second.status == "sent" and second.idempotency_key != first.idempotency_key
    with pytest.raises(ExactlyOnceError) as twice:
        harness.assert_exactly_once()
    assert f"reward {reward.id} was paid by the provider in payouts {first.id} and {second.id}" in twice.value.problems

    rail.ledger.set_outcome(first.idempotency_key, Outcome.RETURNED)  # the first payment came back: paid once
    harness.assert_exactly_once()


def test_assert_exactly_once_accepts_a_payment_the_provider_rejected_after_accepting(
        payhub_harness: HarnessFactory) -> None:
    rail = FakeRail("bank")
    harness, _source = paid_once(payhub_harness, rail)
    [payout] = harness.payouts()
    rail.ledger.set_outcome(payout.idempotency_key, Outcome.REJECTED, "beneficiary bank refused")
    harness.advance(harness.settings.rails["bank"].settle_interval_seconds + 1)
    assert harness.settle() == 1 and harness.payouts()[0].status == "rejected"
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
def test_settings_that_are_not_tables_or_toml_are_refused_by_name(payhub_harness: HarnessFactory) -> None:
    settings: object
    for settings in ([("rails", {})], 5, b"[rails.bank]"):
        with pytest.raises(TypeError, match="settings file's tables as a dict, or its TOML text, or None; not"):
            payhub_harness(settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"not valid TOML: .*\(at line 3, column 16\)"):
        payhub_harness("""
            [rails.bank]
            max_attempts = = 5
            """, {"rails.bank": FakeRail("bank")})
    with pytest.raises(ConfigError, match="named by text, not int 1"):
        payhub_harness({1: {}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="database: a table is required, not str"):
        payhub_harness({"database": "sqlite:///x.db"})
    with pytest.raises(ConfigError) as rails:
        payhub_harness({"rails": ["bank"]}, {"rails.bank": FakeRail("bank")})
    assert rails.value.problems[0][0] == "rails"
    with pytest.raises(ConfigError) as text:
        payhub_harness({"rails": {"bank": {"max_attempts": "five"}}}, {"rails.bank": FakeRail("bank")})
    assert str(text.value) == ("rails.bank.max_attempts: Value error, a whole number is required, written in "
                               "digits with an optional sign")


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_plugins_load_by_name_next_to_given_instances(payhub_harness: HarnessFactory, plugin_path: Any) -> None:
    rail = FakeRail("bank")
    harness = payhub_harness({**SETTINGS, "sources": {"named": {"plugin": "fake"}}},
                             {"sources.crm": FakeSource("crm"), "rails.bank": rail}, payees=PAYEES)
    assert isinstance(harness.source("named"), FakeSource) and harness.source("named") is not harness.source("crm")
    assert harness.rail("bank") is rail and harness.plugin_failures() == {}


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_the_settings_file_names_given_instances_so_the_command_line_explains_a_payout(
        payhub_harness: HarnessFactory, tmp_path: Path) -> None:
    rail = FakeRail("bank", FakeRailSettings(lookup=False, dedup_window_seconds=3600, currencies=["EUR"]))
    source = FakeSource("crm", FakeSourceSettings(path=tmp_path / "records.jsonl"))
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail}, payees=PAYEES)
    source.push(deal("006A", "1234.56"))
    harness.run_until_idle()
    [payout] = harness.payouts("sent")

    explained = invoke_cli("-c", str(harness.settings_file), "explain", f"payout:{payout.id}")
    assert explained.exit_code == 0, explained.output
    assert payout.idempotency_key in explained.stdout
    listed = invoke_cli("-c", str(harness.settings_file), "plugins", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert {(s["section"], s["state"]) for s in json.loads(listed.stdout)} == {("crm", "loaded"), ("bank", "loaded"),
                                                                              ("pct", "loaded")}
    written = tomllib.loads(harness.settings_file.read_text())
    assert written["rails"]["bank"] | {"plugin": "?"} == {"plugin": "?", "max_attempts": 4, "retry_initial_seconds": 30,
                                                          "retry_max_seconds": 120, "lookup": False,
                                                          "dedup_window_seconds": 3600.0, "currencies": ["EUR"]}
    assert written["sources"]["crm"]["path"] == str(tmp_path / "records.jsonl")
    site = str(harness.directory / "harness-site")
    assert site in sys.path
    harness.close()
    assert site not in sys.path


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_the_settings_file_disables_an_instance_whose_class_cannot_be_imported(
        payhub_harness: HarnessFactory) -> None:
    class LocalRail(FakeRail):
        pass

    harness = payhub_harness(SETTINGS, {"sources.crm": FakeSource("crm"), "rails.bank": LocalRail("bank")},
                             payees=PAYEES)
    text = harness.settings_file.read_text()
    assert "# rails.bank: given to the harness as a " in text and "cannot import by name: disabled here" in text
    assert tomllib.loads(text)["rails"]["bank"]["enabled"] is False
    checked = invoke_cli("-c", str(harness.settings_file), "config", "check")
    assert checked.exit_code == 0, checked.output


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

