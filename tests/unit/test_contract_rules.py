"""Rules of the contract checks that first-party plugins rely on: a path or number setting is not a secret, a camelCase
one is; a source that reads its boundary again at each sync (``rereads_boundary``) passes the cursor checks, and only
such a source; a calculator is deterministic over several calls and clock times, and a NaN amount is an invalid
line; a URL setting holds no credentials."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from payhub.api import (
    Calculator,
    ConfigPath,
    Event,
    FetchResult,
    History,
    PluginSettings,
    RewardLine,
    Source,
    SourceRecord,
    Url,
    utcnow,
)
from payhub.testing.contracts.calculator_checks import CALCULATOR_CHECKS, CalculatorSubject
from payhub.testing.contracts.checks import by_name, run_check
from payhub.testing.contracts.settings_checks import (
    CORE_KEYS,
    PluginKind,
    SettingsSubject,
    no_core_key_collision,
    secrets_are_secretstr,
)
from payhub.testing.contracts.source_checks import SOURCE_CHECKS, SourceSubject


class FileSecrets(PluginSettings):
    private_key: SecretStr | None = None
    private_key_file: ConfigPath | None = None
    token_store: Path | None = None
    token_refresh_margin_seconds: float = 60.0
    token_ttl: timedelta | None = None


class Places(PluginSettings):
    oauth_token_path: str = "/oauth/v3/token"
    api_key_header: str = "X-Api-Key"
    webhook_secret_name: str = "hook"


def test_a_key_naming_where_a_secret_goes_is_not_a_secret() -> None:
    secrets_are_secretstr(SettingsSubject(Places, "source"))


class PlainKeys(PluginSettings):
    api_key: str = ""
    client_secret: str | None = None
    credentials_json: str = ""


def test_plain_text_secrets_are_named() -> None:
    with pytest.raises(AssertionError, match="api_key, client_secret, credentials_json looks like a secret"):
        secrets_are_secretstr(SettingsSubject(PlainKeys, "source"))


class PathOrText(PluginSettings):
    private_key: str | Path | None = None


def test_a_path_to_a_secret_or_a_number_is_not_a_secret() -> None:
    secrets_are_secretstr(SettingsSubject(FileSecrets, "source"))


def test_a_secret_that_may_be_text_is_still_one() -> None:
    with pytest.raises(AssertionError, match="private_key looks like a secret"):
        secrets_are_secretstr(SettingsSubject(PathOrText, "source"))


class Records:
    """An upstream: n more records, each newer than the ones before."""

    def __init__(self) -> None:
        self.records: list[SourceRecord] = []

    def add(self, count: int) -> None:
        for _ in range(count):
            n = len(self.records)
            self.records.append(SourceRecord("Deal", f"d{n}", "won", "deal_won", "2026-01-01T00:00:00Z", "p1",
                                             "10.00", "EUR"))


class BoundarySource(Source):
    """Reads from its cursor on; once it reached the end, each new sync starts at the last record read (inclusive),
    as a source with a timestamp mark does."""

    def __init__(self, upstream: Records, slide: bool = False) -> None:
        super().__init__("boundary", PluginSettings())
        self.upstream, self.slide = upstream, slide

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        start = int(cursor or 0)
        if self.slide:
            start = max(start - 1, 0)  # every fetch steps back one record: mid-sync too
        elif start == len(self.upstream.records) and start:
            start -= 1  # a new sync after the end: the boundary record again
        batch = self.upstream.records[start:start + limit]
        end = start + len(batch)
        return FetchResult(batch, str(max(end, int(cursor or 0))), more=end < len(self.upstream.records))


def outcomes(slide: bool, rereads: bool) -> dict[str, str]:
    checks = by_name(SOURCE_CHECKS)
    found: dict[str, str] = {}
    for name in ("cursor_moves_forward", "empty_fetch_keeps_place"):
        upstream = Records()
        subject = SourceSubject(partial(BoundarySource, upstream, slide), upstream, rereads_boundary=rereads)
        found[name] = run_check(checks[name], subject).status
    return found


def test_a_source_reading_its_boundary_again_passes_when_it_says_so() -> None:
    assert outcomes(slide=False, rereads=True) == {"cursor_moves_forward": "passed",
                                                   "empty_fetch_keeps_place": "passed"}


def test_reading_the_boundary_again_fails_a_source_that_does_not_say_so() -> None:
    assert outcomes(slide=False, rereads=False)["empty_fetch_keeps_place"] == "failed"


def test_a_source_stepping_back_on_every_fetch_fails_either_way() -> None:
    assert outcomes(slide=True, rereads=True)["cursor_moves_forward"] == "failed"
    assert outcomes(slide=True, rereads=False)["cursor_moves_forward"] == "failed"


class CamelKeys(PluginSettings):
    clientSecret: str = ""  # noqa: N815 - as a provider's API spells it
    APIKey: str = ""  # noqa: N815
    apiKeyHeader: str = "X-Api-Key"  # noqa: N815 - where the key goes, not the key


def test_camel_case_secrets_are_named() -> None:
    with pytest.raises(AssertionError, match="clientSecret, APIKey looks like a secret"):
        secrets_are_secretstr(SettingsSubject(CamelKeys, "rail"))


class Shadowing(PluginSettings):
    enabled: bool = True
    max_attempts: int = 3


def test_core_key_clashes_are_named_in_plain_words() -> None:
    with pytest.raises(AssertionError, match="Shadowing: enabled and max_attempts are core keys of a rail section"):
        no_core_key_collision(SettingsSubject(Shadowing, "rail"))


@pytest.mark.parametrize(("url", "message"), [
    ("https://user:PW@pay.example/v1", "https://pay.example/v1 holds credentials (user:password@)"),
    ("https://pay.example/v1?token=abc&page=2", "the query of https://pay.example/v1 holds token"),
])
def test_a_url_setting_refuses_credentials(url: str, message: str) -> None:
    adapter = TypeAdapter(Url)
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python(url)
    (error,) = caught.value.errors()
    assert message in error["msg"] and "SecretStr" in error["msg"]
    assert "PW" not in error["msg"] and "abc" not in error["msg"]
    assert adapter.validate_python("https://pay.example/v1?page=2") == "https://pay.example/v1?page=2"


def line(event: Event, amount: Decimal | None = None, bonus: Decimal = Decimal(0)) -> RewardLine:
    """A tenth of the event's amount (or ``amount``), plus ``bonus``."""
    assert event.amount is not None and event.currency is not None
    return RewardLine(event.payee_id, (event.amount / 10 if amount is None else amount) + bonus, event.currency)


class Tenth(Calculator):
    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        return [line(event)]


class NotANumber(Tenth):
    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        return [line(event, Decimal("NaN"))]


class DriftsAfterThreeCalls(Tenth):
    """Answers differently from its fourth call on: two or three calls alone would not show it."""

    calls = 0

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        DriftsAfterThreeCalls.calls += 1
        return [line(event, bonus=Decimal(1) if DriftsAfterThreeCalls.calls > 3 else Decimal(0))]


class ClockReader(Tenth):
    """A reward that depends on payhub's clock (a weekend bonus read from now, not from the event)."""

    def calculate(self, event: Event, history: History) -> list[RewardLine]:
        bonus = Decimal(5) if utcnow().weekday() >= 5 else Decimal(0)
        return [line(event, bonus=bonus)]


def calculator_results(cls: type[Calculator]) -> dict[str, tuple[str, str]]:
    at = datetime(2026, 1, 7, tzinfo=UTC)
    events = [Event(1, "crm:Deal:d1:won", "crm", "Deal", "d1", "won", "deal_won", at, "p1", None, Decimal("100.00"),
                    "EUR", {})]
    subject = CalculatorSubject(lambda: cls("program", PluginSettings()), events)
    return {check.name: (result.status, result.detail) for check in CALCULATOR_CHECKS
            for result in [run_check(check, subject)]}


def test_a_nan_amount_is_an_invalid_line_not_a_nondeterministic_one() -> None:
    found = calculator_results(NotANumber)
    assert list(found) == ["valid_lines", "deterministic", "no_io_during_calculate"]
    assert found["valid_lines"] == ("failed", "event crm:Deal:d1:won: amount NaN is not finite")
    assert found["deterministic"][0] == "passed"


def test_determinism_is_checked_over_several_calls_and_clock_times() -> None:
    assert calculator_results(Tenth)["deterministic"] == ("passed", "")
    status, detail = calculator_results(DriftsAfterThreeCalls)["deterministic"]
    assert status == "failed" and "the first call gave lines" in detail
    status, detail = calculator_results(ClockReader)["deterministic"]
    assert status == "failed" and "a call with payhub's clock at" in detail


@pytest.mark.parametrize(("table", "kind"), [("sources", "source"), ("programs", "calculator"), ("rails", "rail"),
                                             ("hooks", "hook")])
def test_the_core_keys_in_the_plugin_guide_are_those_of_payhub_settings(table: str, kind: PluginKind) -> None:
    guide = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
    row = re.search(rf"^\| `\[{table}\.NAME\]` \| (.+) \|$", guide, re.MULTILINE)
    assert row is not None, f"docs/plugins.md has no core-key row for [{table}.NAME]"
    assert set(re.findall(r"`([a-z_]+)`", row.group(1))) == CORE_KEYS[kind]
