"""Rules of the contract checks that first-party plugins rely on: a path or number setting is not a secret; a source
that reads its boundary again at each sync (``rereads_boundary``) passes the cursor checks, and only such a source."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from pydantic import SecretStr

from payhub.api import ConfigPath, FetchResult, PluginSettings, Source, SourceRecord
from payhub.testing.contracts.checks import by_name, run_check
from payhub.testing.contracts.settings_checks import SettingsSubject, secrets_are_secretstr
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
