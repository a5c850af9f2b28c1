"""The periods of ``routing.payout_cadence`` (UTC calendar days, ISO weeks from Monday, calendar months) and the
setting's validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from payhub.errors import ConfigError
from payhub.pipeline.schedule import CADENCES, period_start
from payhub.settings import RoutingSettings, load_settings


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(("cadence", "moment", "start"), [
    ("daily", "2026-10-05T00:00:00Z", "2026-10-05T00:00:00Z"),
    ("daily", "2026-10-05T23:59:59.999999Z", "2026-10-05T00:00:00Z"),
    ("daily", "2026-10-06T01:30:00+02:00", "2026-10-05T00:00:00Z"),  # 23:30 UTC the day before
    ("weekly", "2026-10-05T00:00:00Z", "2026-10-05T00:00:00Z"),  # a Monday
    ("weekly", "2026-10-11T23:59:59Z", "2026-10-05T00:00:00Z"),  # its Sunday
    ("weekly", "2027-01-02T12:00:00Z", "2026-12-28T00:00:00Z"),  # across a year end
    ("monthly", "2026-10-31T23:59:59Z", "2026-10-01T00:00:00Z"),
    ("monthly", "2028-02-29T12:00:00Z", "2028-02-01T00:00:00Z"),
    ("monthly", "2026-12-31T23:00:00-05:00", "2027-01-01T00:00:00Z"),  # 04:00 UTC on New Year's Day
])
def test_period_start(cadence: str, moment: str, start: str) -> None:
    assert period_start(cadence, at(moment)) == at(start)
    assert period_start(cadence, at(moment)).tzinfo == UTC  # type: ignore[union-attr]


def test_pass_has_no_period_and_unknown_cadences_are_refused() -> None:
    assert period_start("pass", datetime.now(UTC)) is None
    with pytest.raises(ValueError, match="one of pass, daily, weekly, monthly"):
        period_start("hourly", datetime.now(UTC))


@pytest.mark.parametrize("cadence", [c for c in CADENCES if c != "pass"])
def test_every_moment_is_in_the_period_it_starts(cadence: str) -> None:
    moment = datetime(2026, 1, 1, 7, tzinfo=UTC)
    for _ in range(800):
        start = period_start(cadence, moment)
        assert start is not None and start <= moment
        assert period_start(cadence, start) == start
        assert period_start(cadence, start - timedelta(microseconds=1)) != start  # the previous period
        moment += timedelta(hours=13)


def test_setting_values() -> None:
    assert RoutingSettings().payout_cadence == "pass"
    assert RoutingSettings(payout_cadence=" Monthly ").payout_cadence == "monthly"  # type: ignore[arg-type]
    assert set(CADENCES) == {"pass", "daily", "weekly", "monthly"}


@pytest.mark.parametrize(("value", "shown"), [('"fortnightly"', "'fortnightly'"), ("7", "int"), ('""', "''"),
                                               ("true", "bool")])
def test_a_bad_cadence_stops_start_up_naming_the_key(tmp_path: Path, value: str, shown: str) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text(f"[routing]\npayout_cadence = {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    text = str(raised.value)
    assert "routing.payout_cadence" in text
    assert f"must be one of 'pass', 'daily', 'weekly', 'monthly', not {shown}" in text


def test_an_offset_moment_is_taken_in_utc() -> None:
    east = timezone(timedelta(hours=14))
    assert period_start("daily", datetime(2026, 10, 6, 9, tzinfo=east)) == at("2026-10-05T00:00:00Z")
