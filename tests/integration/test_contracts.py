"""The contract suites judge plugins right: the reference rail passes RailContract, and deliberately broken plugins
fail exactly the contract tests for what they break. The suites run in an inner pytest session (in this process),
whose outcomes are read per test."""

from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.slow  # one inner run of about 70 contract tests: 10-15 s

PLUGINS = textwrap.dedent('''
    import random
    import threading
    import uuid
    from datetime import UTC, datetime
    from decimal import Decimal

    import httpx
    import pytest
    from payhub.api import (Calculator, Event, FetchResult, PermanentSourceError, PluginSettings, RetryableRailError,
                            RewardLine, Source, SourceRecord, TransientSourceError, hookimpl)
    from payhub.testing.contracts import CalculatorContract, HookContract, RailContract, SourceContract
    from payhub.testing.provider import FaultProvider, ProviderRail, ProviderRailSettings


    class DoublePayingRail(ProviderRail):
        """Forgets the provider's idempotency key: every resend is a new payment."""

        def _payment(self, instruction):
            payment = super()._payment(instruction)
            del payment["idempotency_key"]
            return payment


    class MisclassifyingRail(ProviderRail):
        """Takes a read timeout after sending for 'nothing happened'."""

        def send(self, instructions):
            try:
                return super().send(instructions)
            except Exception as exc:
                if isinstance(exc.__cause__, httpx.ReadTimeout):
                    raise RetryableRailError("timed out, try again") from exc
                raise


    class LenientLookupRail(ProviderRail):
        """Takes a provider it cannot reach, or one too slow to answer a lookup, for "never received"."""

        def lookup(self, keys):
            try:
                return super().lookup(keys)
            except RetryableRailError as exc:
                if isinstance(exc.__cause__, (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError)):
                    return dict.fromkeys(keys)
                raise


    class RetryOn500Rail(ProviderRail):
        """Takes any server error for "busy, send again"."""

        def send(self, instructions):
            try:
                return super().send(instructions)
            except Exception as exc:
                if "HTTP 500" in str(exc):
                    raise RetryableRailError("server error, try again") from exc
                raise


    class HiddenClientRail(ProviderRail):
        """Keeps a second client, with no timeout at all, in a list."""

        def __init__(self, name, settings):
            super().__init__(name, settings)
            self.pool = [httpx.Client(timeout=None)]

        def close(self):
            super().close()
            self.pool[0].close()


    def only(*names):
        """Keep only these contract tests of a suite (the others are not collected)."""
        def keep(cls):
            for attr in dir(cls):
                if attr.startswith("test_") and attr.removeprefix("test_") not in names:
                    setattr(cls, attr, None)
            return cls
        return keep


    class LeakySettings(ProviderRailSettings):
        webhook_secret: str = "s3cret"
        timeout_seconds: float = 1.0


    class LeakyRail(ProviderRail):
        settings_model = LeakySettings


    class RailSuite(RailContract):
        rail_class = ProviderRail
        settings_class = ProviderRailSettings

        @pytest.fixture(scope="class")
        def faults(self):
            with FaultProvider(api_key="k", stall_limit=5) as provider:
                yield provider

        @pytest.fixture
        def rail_timeout_seconds(self):
            return 2.0

        @pytest.fixture
        def plugin_factory(self, faults):
            return lambda: self.rail_class("rail", self.settings_class(
                base_url=faults.url, api_key="k", http_timeout_seconds=0.2, connect_timeout_seconds=0.2))


    class TestReferenceRail(RailSuite):
        pass


    class TestDoublePayingRail(RailSuite):
        rail_class = DoublePayingRail


    class TestMisclassifyingRail(RailSuite):
        rail_class = MisclassifyingRail


    class TestLeakyRail(RailSuite):
        rail_class = LeakyRail
        settings_class = LeakySettings


    class TestLenientLookupRail(RailSuite):
        rail_class = LenientLookupRail


    @only("error_after_accept_is_unknown", "timeout_after_sending_is_unknown", "refusal_before_accept_is_retryable")
    class TestRetryOn500Rail(RailSuite):
        rail_class = RetryOn500Rail


    @only("max_batch_respected")
    class TestSmallProvider(RailSuite):
        @pytest.fixture(scope="class")
        def faults(self):
            with FaultProvider(api_key="k", max_batch=10) as provider:
                yield provider


    @only("max_batch_respected")
    class TestBigBatch(RailSuite):
        @pytest.fixture(scope="class")
        def faults(self):
            with FaultProvider(api_key="k", max_batch=400) as provider:
                yield provider

        @pytest.fixture
        def plugin_factory(self, faults):
            return lambda: ProviderRail("rail", ProviderRailSettings(
                base_url=faults.url, api_key="k", http_timeout_seconds=1, connect_timeout_seconds=0.2,
                max_batch=5000))


    @only("http_timeout_below_timeout_seconds")
    class TestHiddenClientRail(RailSuite):
        rail_class = HiddenClientRail


    @only("hung_provider_is_bounded")
    class TestSlowRail(RailSuite):
        @pytest.fixture
        def plugin_factory(self, faults):
            return lambda: ProviderRail("rail", ProviderRailSettings(
                base_url=faults.url, api_key="k", http_timeout_seconds=30, connect_timeout_seconds=0.2))


    class Upstream:
        def __init__(self):
            self.records = []
            self.faults = []

        def add(self, count):
            for _ in range(count):
                n = len(self.records)
                self.records.append(SourceRecord("Deal", f"d{n}", "won", "deal_won", "2026-01-01T00:00:00Z", "p1",
                                                 "10.00", "EUR"))

        def plan(self, *faults):
            self.faults.extend(faults)


    class ListSource(Source):
        def __init__(self, upstream):
            super().__init__("list", PluginSettings())
            self.upstream = upstream

        def fetch(self, cursor, limit):
            if self.upstream.faults:
                fault = self.upstream.faults.pop(0)
                raise (TransientSourceError if fault == "transient" else PermanentSourceError)(fault)
            start = int(cursor or 0)
            batch = self.upstream.records[start:start + limit]
            return FetchResult(batch, str(start + len(batch)), more=start + len(batch) < len(self.upstream.records))


    class GreedySource(ListSource):
        def fetch(self, cursor, limit):
            return super().fetch(cursor, 10_000)


    class BackslidingSource(ListSource):
        def fetch(self, cursor, limit):
            result = super().fetch(cursor, limit)
            return FetchResult(result.records, str(max(int(result.cursor) - 1, 0)), result.more)


    class SourceSuite(SourceContract):
        source_class = ListSource

        @pytest.fixture
        def upstream(self):
            return Upstream()

        @pytest.fixture
        def faults(self, upstream):
            return upstream

        @pytest.fixture
        def plugin_factory(self, upstream):
            return lambda: self.source_class(upstream)


    class TestListSource(SourceSuite):
        pass


    class TestGreedySource(SourceSuite):
        source_class = GreedySource


    class TestBackslidingSource(SourceSuite):
        source_class = BackslidingSource


    class Tenth(Calculator):
        def calculate(self, event, history):
            return [RewardLine(event.payee_id, event.amount / 10, event.currency)]


    class Jittery(Tenth):
        def calculate(self, event, history):
            return [RewardLine(event.payee_id, event.amount / 10 + Decimal(random.randint(1, 10**6)) / 100,
                               event.currency)]


    class Nosy(Tenth):
        def calculate(self, event, history):
            with open(__file__) as fh:
                fh.read(1)
            return super().calculate(event, history)


    class CalculatorSuite(CalculatorContract):
        calculator_class = Tenth

        @pytest.fixture
        def plugin_factory(self):
            return lambda: self.calculator_class("program", PluginSettings())

        @pytest.fixture
        def sample_events(self):
            at = datetime(2026, 1, 1, tzinfo=UTC)
            return [Event(n, f"crm:Deal:d{n}:won", "crm", "Deal", f"d{n}", "won", "deal_won", at, "p1", None,
                          Decimal("100.00") * n, "EUR", {}) for n in (1, 2, 3)]


    class TestTenth(CalculatorSuite):
        pass


    class TestJittery(CalculatorSuite):
        calculator_class = Jittery


    class TestNosy(CalculatorSuite):
        calculator_class = Nosy


    class Screening:
        @hookimpl
        def payhub_screen_payout(self, payout):
            return None


    class Misspelt:
        @hookimpl
        def payhub_screen_payouts(self, payout):
            return None


    class TestScreening(HookContract):
        @pytest.fixture
        def plugin_factory(self):
            return Screening


    class TestMisspelt(HookContract):
        @pytest.fixture
        def plugin_factory(self):
            return Misspelt
''')


MESSAGES: dict[str, dict[str, str]] = {}
"""Each test class of PLUGINS → {test name: the failure's text}, filled by the inner run."""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Each test class of PLUGINS → {test name: passed | failed | skipped}, from one inner pytest run."""
    directory = tmp_path_factory.mktemp("contracts")
    (directory / "test_inner_contract_subjects.py").write_text(PLUGINS)  # a name no other test module has

    class Collector:
        def __init__(self) -> None:
            self.found: dict[str, dict[str, str]] = {}

        def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
            if report.when == "call" or report.outcome != "passed":
                _, cls, name = report.nodeid.split("::")
                current = self.found.setdefault(cls, {}).get(name)
                if current in (None, "passed"):
                    self.found[cls][name] = report.outcome
                if report.failed:
                    MESSAGES.setdefault(cls, {})[name.removeprefix("test_")] = str(report.longrepr)

    collector = Collector()
    code = pytest.main([str(directory), "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir",
                        str(directory)], plugins=[collector])
    assert code in (0, 1), f"the inner run did not complete (exit code {code})"
    return collector.found


def failed(outcomes: dict[str, dict[str, str]], cls: str) -> set[str]:
    return {name.removeprefix("test_") for name, outcome in outcomes[cls].items() if outcome == "failed"}


def test_the_reference_rail_passes_every_contract_test(outcomes: dict[str, dict[str, str]]) -> None:
    assert set(outcomes["TestReferenceRail"].values()) == {"passed"}
    assert len(outcomes["TestReferenceRail"]) == 22


def test_a_lookup_taking_an_unreachable_or_slow_provider_for_never_received_fails(
        outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestLenientLookupRail") == {"lookup_raises_when_unreachable", "lookup_raises_on_timeout"}
    assert "lookup answered None (never received) for a payout the provider had accepted, while the provider was " \
        "unreachable" in MESSAGES["TestLenientLookupRail"]["lookup_raises_when_unreachable"]


def test_a_rail_retrying_a_server_error_after_sending_fails(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestRetryOn500Rail") == {"error_after_accept_is_unknown"}
    assert "then answered HTTP 500: the rail raised RetryableRailError: server error, try again" in \
        MESSAGES["TestRetryOn500Rail"]["error_after_accept_is_unknown"]


def test_max_batch_is_sent_in_full_and_named_as_declared(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestSmallProvider") == {"max_batch_respected"}
    message = MESSAGES["TestSmallProvider"]["max_batch_respected"]
    assert "a send of 100 payouts (capabilities.max_batch = 100;" in message and "HTTP 413" in message
    assert failed(outcomes, "TestBigBatch") == {"max_batch_respected"}  # declares 5000, the provider takes 400
    assert "a send of 1000 payouts (capabilities.max_batch = 5000, sent 1000" in MESSAGES["TestBigBatch"][
        "max_batch_respected"]


def test_a_client_without_timeouts_in_a_list_is_found(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestHiddenClientRail") == {"http_timeout_below_timeout_seconds"}
    assert "the httpx client pool[0] has no connect, read, write, pool timeout" in MESSAGES["TestHiddenClientRail"][
        "http_timeout_below_timeout_seconds"]


def test_a_send_outlasting_timeout_seconds_is_reported_with_its_time(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestSlowRail") == {"hung_provider_is_bounded"}
    assert "a send to a provider that does not answer took 2." in MESSAGES["TestSlowRail"]["hung_provider_is_bounded"]


def test_a_rail_that_pays_twice_on_resend_fails_the_resend_tests(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestDoublePayingRail") == {"resend_never_pays_twice",
                                                         "resend_after_lost_answer_never_pays_twice"}


def test_a_rail_that_retries_after_a_timeout_fails_the_timeout_tests(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestMisclassifyingRail") == {"timeout_after_sending_is_unknown",
                                                           "hung_provider_is_bounded"}


def test_plain_secrets_and_core_keys_fail_the_settings_tests(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestLeakyRail") == {"secrets_are_secretstr", "no_core_key_collision"}


def test_sources(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestListSource") == set()
    assert failed(outcomes, "TestGreedySource") == {"limit_respected", "repeatable_from_cursor",
                                                     "cursor_moves_forward"}
    assert failed(outcomes, "TestBackslidingSource") == {"cursor_moves_forward", "empty_fetch_keeps_place"}


def test_calculators(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestTenth") == set()
    assert failed(outcomes, "TestJittery") == {"deterministic"}
    assert failed(outcomes, "TestNosy") == {"no_io_during_calculate"}


def test_hooks(outcomes: dict[str, dict[str, str]]) -> None:
    assert failed(outcomes, "TestScreening") == set()
    assert failed(outcomes, "TestMisspelt") == {"hookimpls_match_specs"}
