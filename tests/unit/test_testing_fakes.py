"""The kit's fakes and clock: a provider ledger with and without deduplication, the spying FakeRail, the file-backed
FakeSource read by a second instance, ManualClock, and the package's lazily imported public names."""

from __future__ import annotations

import ast
import importlib
import inspect
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import payhub.testing
from payhub import clock
from payhub.api import Outcome, Payee, PayoutInstruction, RetryableRailError, SourceRecord, UnknownOutcomeError
from payhub.testing import (
    FakeRail,
    FakeRailSettings,
    FakeSource,
    FakeSourceSettings,
    Fetch,
    ManualClock,
    ProviderLedger,
)

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def instruction(key: str = "ph-0001", payout_id: int = 1) -> PayoutInstruction:
    return PayoutInstruction(payout_id, key, Payee("p1", "Partner One"), Decimal("10.00"), "EUR", "ref", START)


def deal(n: int) -> SourceRecord:
    return SourceRecord("Opportunity", str(n), "won", "deal_won", "2026-01-01T00:00:00Z", "p1", "12.50", "EUR",
                        attributes={"product": "x", "quantity": Decimal("2")})


def test_a_deduplicating_provider_answers_a_resend_with_the_first_acceptance_and_counts_one_payment() -> None:
    ledger = ProviderLedger()
    first, again = ledger.accept(instruction()), ledger.accept(instruction())
    assert again == first
    assert ledger.accepted == {"ph-0001": 1} and ledger.received == {"ph-0001": 2}
    assert ledger.paid_twice() == []


def test_a_provider_without_dedup_pays_each_send() -> None:
    ledger = ProviderLedger(dedup=False)
    first, again = ledger.accept(instruction()), ledger.accept(instruction())
    assert first.provider_ref != again.provider_ref
    assert ledger.accepted == {"ph-0001": 2} and ledger.paid_twice() == ["ph-0001"]
    assert ledger.find("ph-0001") == first and ledger.find("ph-9999") is None


def test_dedup_holds_within_the_window_only() -> None:
    ledger = ProviderLedger(window=timedelta(hours=1))
    with ManualClock(START) as manual:
        ledger.accept(instruction())
        manual.advance(timedelta(minutes=59))
        ledger.accept(instruction())
        assert ledger.accepted == {"ph-0001": 1}
        manual.advance(60)
        ledger.accept(instruction())
    assert ledger.accepted == {"ph-0001": 2}
    assert [a.at for a in ledger.acceptances] == [START, START + timedelta(minutes=60)]


def test_fake_rail_does_not_count_a_resend_its_provider_deduplicated() -> None:
    rail = FakeRail("r", FakeRailSettings(lookup=False, dedup_window_seconds=3600))
    rail.plan("timeout_after_accept")
    with pytest.raises(UnknownOutcomeError):
        rail.send([instruction()])
    [result] = rail.send([instruction()])  # the core resends inside the declared window
    assert result.outcome == Outcome.ACCEPTED
    assert rail.calls == [["ph-0001"], ["ph-0001"]]
    assert rail.accepted == {"ph-0001": 1} and rail.ledger.received == {"ph-0001": 2}


def test_fake_rail_without_a_declared_window_shows_a_resend_as_a_second_payment() -> None:
    rail = FakeRail("r")
    rail.send([instruction()])
    rail.send([instruction()])
    assert rail.accepted == {"ph-0001": 2}


def test_a_provider_that_drops_the_dedup_it_declares_pays_twice() -> None:
    rail = FakeRail("r", FakeRailSettings(dedup_window_seconds=3600, dedup=False))
    assert rail.capabilities.dedup_window == timedelta(hours=1)
    rail.send([instruction()])
    rail.send([instruction()])
    assert rail.ledger.paid_twice() == ["ph-0001"]


def test_the_spy_records_sends_lookups_and_plays_the_planned_faults_in_order() -> None:
    ledger = ProviderLedger()
    rail = FakeRail("r", ledger=ledger)
    rail.plan("retryable", "duplicate", "lookup_fails")
    with pytest.raises(RetryableRailError):
        rail.send([instruction()])
    results = rail.send([instruction("ph-a", 1), instruction("ph-b", 2)])
    assert [r.idempotency_key for r in results] == ["ph-a", "ph-b", "ph-a", "ph-b", "ph-never-sent"]
    with pytest.raises(RetryableRailError, match="lookup"):
        rail.lookup(["ph-a"])
    found = rail.lookup(["ph-a", "ph-0001"])
    assert found["ph-0001"] is None
    assert found["ph-a"] is not None and found["ph-a"].provider_ref == ledger.find("ph-a").provider_ref  # type: ignore[union-attr]
    ledger.set_outcome("ph-a", Outcome.PAID)
    assert rail.lookup(["ph-a"])["ph-a"].outcome == Outcome.PAID  # type: ignore[union-attr]
    assert rail.calls == [["ph-0001"], ["ph-a", "ph-b"]]
    assert [i.payout_id for i in rail.sent] == [1, 1, 2]
    assert rail.lookups == [["ph-a"], ["ph-a", "ph-0001"], ["ph-a"]]
    assert not rail.faults and rail.accepted == {"ph-a": 1, "ph-b": 1}
    with pytest.raises(KeyError):
        ledger.set_outcome("ph-0001", Outcome.PAID)


def test_a_file_backed_source_serves_what_another_instance_pushed_and_shows_what_was_consumed(tmp_path: Path) -> None:
    settings = FakeSourceSettings(path=tmp_path / "records.jsonl")
    feeder, reader = FakeSource("crm", settings), FakeSource("crm", settings)
    assert reader.fetch(None, 10).records == [] and feeder.consumed() == []
    feeder.push(deal(1), deal(2), deal(3))
    first = reader.fetch(None, 2)
    assert ([r.object_id for r in first.records], first.cursor, first.more) == (["1", "2"], "2", True)
    assert reader.fetch(None, 2).records == first.records  # repeatable from a cursor
    rest = reader.fetch(first.cursor, 2)
    assert ([r.object_id for r in rest.records], rest.cursor, rest.more) == (["3"], "3", False)
    empty = reader.fetch(rest.cursor, 2)
    assert (empty.records, empty.cursor, empty.more) == ([], "3", False)
    assert feeder.fetches() == [Fetch(None, 10, 0), Fetch(None, 2, 2), Fetch(None, 2, 2), Fetch("2", 2, 1),
                                Fetch("3", 2, 0)]
    [one, two, three] = feeder.consumed()
    assert (three.amount, three.attributes) == ("12.50", {"product": "x", "quantity": "2"})  # decimals as text
    feeder.push(deal(4))
    assert [r.object_id for r in reader.fetch(empty.cursor, 2).records] == ["4"]


def test_a_file_backed_source_stores_only_source_records(tmp_path: Path) -> None:
    source = FakeSource("crm", FakeSourceSettings(path=tmp_path / "records.jsonl"))
    with pytest.raises(TypeError, match="SourceRecord"):
        source.push("not a record")  # type: ignore[arg-type]


def test_an_in_memory_source_keeps_any_object_and_logs_its_fetches() -> None:
    source = FakeSource("crm")
    odd = object()
    source.push(deal(1), odd)  # type: ignore[arg-type]
    assert source.fetch(None, 5).records == [deal(1), odd]
    assert source.fetches() == [Fetch(None, 5, 2)] and len(source.consumed()) == 2
    source.error = RetryableRailError("boom")
    with pytest.raises(RetryableRailError):
        source.fetch("2", 5)


def test_manual_clock_is_what_payhub_reads_while_installed() -> None:
    manual = ManualClock(START)
    assert not manual.installed
    with manual:
        assert manual.installed and clock.utcnow() == START
        assert manual.advance(timedelta(days=1)) == clock.utcnow() == START + timedelta(days=1)
        assert manual.set(START + timedelta(days=2)) == clock.utcnow()
        with pytest.raises(ValueError, match="backwards"):
            manual.advance(-1)
        with pytest.raises(ValueError, match="backwards"):
            manual.set(START)
    assert clock.source is clock.system_now and not manual.installed
    with pytest.raises(ValueError, match="aware"):
        ManualClock(datetime(2026, 1, 1))  # noqa: DTZ001 - the naive time is the point
    with pytest.raises(RuntimeError, match="not installed"):
        manual.uninstall()


def test_manual_clocks_uninstall_in_the_reverse_order_of_their_installs() -> None:
    first, second = ManualClock(START), ManualClock(START + timedelta(days=1))
    first.install()
    second.install()
    with pytest.raises(RuntimeError, match="not the clock payhub reads now .*reverse order"):
        first.uninstall()
    assert second.installed and clock.utcnow() == START + timedelta(days=1)  # nothing changed
    second.uninstall()
    assert first.installed
    first.uninstall()
    assert clock.source is clock.system_now
    with pytest.raises(RuntimeError, match="is not installed"):
        first.uninstall()
    assert clock.source is clock.system_now
    with first, first:  # the same clock on top of itself
        assert first.installed
    assert clock.source is clock.system_now


def test_manual_clock_refuses_what_is_not_a_forward_step_or_an_aware_time() -> None:
    manual = ManualClock("2026-03-01T09:00:00Z")
    assert manual.now() == START and ManualClock("2026-03-01").now() == START.replace(hour=0)
    assert ManualClock(START.date()).now() == START.replace(hour=0)
    assert manual.advance(Decimal("1.5")) == START + timedelta(seconds=1.5)
    with pytest.raises(ValueError, match=r"^a clock never goes backwards: advance by -5 s$"):
        manual.advance(-5)
    with pytest.raises(ValueError, match=r"advance by -0\.5 s$"):
        manual.advance(timedelta(seconds=-0.5))
    for step in (True, "5", None):
        with pytest.raises(TypeError, match="advance takes a timedelta or a number of seconds"):
            manual.advance(step)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        manual.advance(float("nan"))
    with pytest.raises(ValueError, match="needs an aware time, with a UTC offset"):
        manual.set(datetime(2027, 1, 1))  # noqa: DTZ001 - the naive time is the point
    with pytest.raises(ValueError, match="needs an aware time"):
        ManualClock("2026-01-01T09:00:00")
    with pytest.raises(ValueError, match="'tomorrow' is not ISO 8601 text"):
        ManualClock("tomorrow")
    with pytest.raises(TypeError, match="takes an aware datetime, a date or ISO 8601 text, not int"):
        ManualClock(1767225600)  # type: ignore[arg-type]
    assert manual.set("2027-01-01T00:00:00+01:00") == datetime(2026, 12, 31, 23, tzinfo=UTC)
    with pytest.raises(ValueError, match="never goes backwards: set to 2026-01-01T00:00:00\\+00:00"):
        manual.set("2026-01-01")


def test_public_names_are_sorted_resolve_and_are_typed_where_they_are_defined() -> None:
    names = payhub.testing.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(payhub.testing, name) is not None
    lazy = payhub.testing._LAZY
    for name, module in lazy.items():
        assert name in names
        assert getattr(importlib.import_module(f"payhub.testing.{module}"), name) is getattr(payhub.testing, name)
    tree = ast.parse(inspect.getsource(payhub.testing))
    [guarded] = [node for node in tree.body if isinstance(node, ast.If)]
    typed = {alias.asname: f"{node.module}" for node in guarded.body if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    assert typed == {name: f"payhub.testing.{module}" for name, module in lazy.items()}
    with pytest.raises(AttributeError):
        payhub.testing.NoSuchName  # noqa: B018


PAYHUB_KEY = "ph-" + "0123456789abcdef" * 2


@pytest.mark.parametrize("key", [PAYHUB_KEY, "ph-0001", "ph-" + "0123456789ABCDEF" * 2, "other:key"])
def test_a_compact_ledger_counts_payments_and_resends_per_key_as_the_full_one(key: str) -> None:
    full, compact = ProviderLedger(dedup=False), ProviderLedger(dedup=False, compact=True)
    for ledger in (full, compact):
        first, again = ledger.accept(instruction(key)), ledger.accept(instruction(key))
        assert (first.provider_ref, again.provider_ref) == (f"fake-{key[-8:]}", f"fake-{key[-8:]}-2")
        ledger.accept(instruction("ph-0002"))
    assert compact.accepted == full.accepted == {key: 2, "ph-0002": 1}
    assert compact.received == full.received and compact.paid_twice() == full.paid_twice() == [key]
    assert compact.first_ref(key) == full.first_ref(key) == f"fake-{key[-8:]}" and compact.first_ref("x") is None
    with pytest.raises(RuntimeError, match="compact"):
        compact.find(key)
    with pytest.raises(RuntimeError, match="compact"):
        _ = compact.acceptances


def test_a_compact_deduplicating_ledger_keeps_the_window_from_the_first_acceptance() -> None:
    ledger = ProviderLedger(window=timedelta(hours=1), compact=True)
    with ManualClock(START) as manual:
        first = ledger.accept(instruction(PAYHUB_KEY))
        manual.advance(timedelta(minutes=59))
        assert ledger.accept(instruction(PAYHUB_KEY)).provider_ref == first.provider_ref
        assert ledger.accepted == {PAYHUB_KEY: 1} and ledger.received == {PAYHUB_KEY: 2}
        manual.advance(60)
        assert ledger.accept(instruction(PAYHUB_KEY)).provider_ref.endswith("-2")
    assert ledger.accepted == {PAYHUB_KEY: 2} and ledger.received == {PAYHUB_KEY: 3}


def test_a_compact_ledger_holds_a_payhub_key_in_far_less_memory_than_its_acceptance() -> None:
    keys = [f"ph-{n:032x}" for n in range(1, 2001)]
    full, compact = ProviderLedger(dedup=False), ProviderLedger(dedup=False, compact=True)
    for ledger in (full, compact):
        for n, key in enumerate(keys):
            ledger.accept(instruction(key, n))
    assert compact.accepted == full.accepted
    assert compact.nbytes() / len(keys) < 120 and compact.nbytes() * 3 < full.nbytes()


def test_a_fake_rail_that_does_not_record_keeps_counts_only_and_still_looks_up() -> None:
    rail = FakeRail("r", FakeRailSettings(record=False))
    assert rail.ledger.compact
    rail.send([instruction(PAYHUB_KEY), instruction("ph-0002", 2)])
    assert rail.calls == [] and rail.sent == [] and rail.accepted == {PAYHUB_KEY: 1, "ph-0002": 1}
    rail.ledger.set_outcome(PAYHUB_KEY, Outcome.PAID)
    found = rail.lookup([PAYHUB_KEY, "ph-0002", "ph-0003"])
    assert found[PAYHUB_KEY] is not None and found[PAYHUB_KEY].outcome == Outcome.PAID
    assert found["ph-0002"] is not None and found["ph-0002"].provider_ref == "fake-ph-0002"
    assert found["ph-0003"] is None and rail.lookups == []


def test_keep_counts_only_switches_a_fresh_rail_and_refuses_one_that_was_paid() -> None:
    rail = FakeRail("r")
    rail.keep_counts_only()
    rail.send([instruction()])
    assert rail.ledger.compact and rail.calls == [] and rail.accepted == {"ph-0001": 1}
    used = FakeRail("r")
    used.send([instruction()])
    with pytest.raises(RuntimeError, match="already"):
        used.keep_counts_only()
    shared = ProviderLedger()
    given = FakeRail("r", ledger=shared)
    given.keep_counts_only()
    given.send([instruction()])
    assert given.ledger is shared and not shared.compact and given.calls == [] and shared.accepted == {"ph-0001": 1}
