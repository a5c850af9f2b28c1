"""The pytest11 plugin ``payhub``: a plugin's test module, with no conftest and no fixture of its own, gets the kit's
fixtures because payhub is installed."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio", "-p", "no:respx", "-p", "no:xdist")
"""Plugins the inner sessions do not need (they only slow them down)."""

PLUGIN_TESTS = '''
import pytest
from payhub.api import SourceRecord
from payhub.testing import FakeRail, FakeSource, Harness, ManualClock


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_pays_through_the_kit(payhub_harness, payhub_fake_source, payhub_fake_rail, payhub_clock, payhub_db_url):
    assert isinstance(payhub_fake_source, FakeSource) and isinstance(payhub_fake_rail, FakeRail)
    assert isinstance(payhub_clock, ManualClock) and payhub_clock.installed
    harness = payhub_harness(
        {"programs": {"flat": {"calculator": "flat", "amount": "25", "currency": "EUR"}},
         "routing": {"default_rail": "fake"}},
        {"sources.fake": payhub_fake_source, "rails.fake": payhub_fake_rail},
        payees=[{"id": "p1", "name": "Partner One", "country": "FR"}])
    assert isinstance(harness, Harness) and harness.clock is payhub_clock
    assert harness.database_url == payhub_db_url
    payhub_fake_rail.plan("retryable")
    payhub_fake_source.push(SourceRecord("Deal", "1", "won", "deal_won", "2026-02-01", "p1", "100", "EUR"))
    harness.run_until_idle(skip_waits=True)
    [payout] = harness.payouts()
    assert payout.status == "sent" and payhub_fake_rail.accepted == {payout.idempotency_key: 1}
    assert [r.object_id for r in payhub_fake_source.consumed()] == ["1"]
    harness.assert_exactly_once()


def test_the_database_fixture_runs_on_both(payhub_db_url):
    assert payhub_db_url.startswith(("sqlite:///", "postgresql+psycopg://"))
'''


def test_a_plugins_tests_get_the_kits_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_my_plugin=PLUGIN_TESTS)
    result = pytester.runpytest(*QUIET, "-k", "not postgres")
    result.assert_outcomes(passed=2, deselected=1)  # payhub_db_url's PostgreSQL parameter, left out here


def test_without_the_plugin_the_fixtures_are_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_my_plugin=PLUGIN_TESTS)
    result = pytester.runpytest(*QUIET, "-p", "no:payhub", "-k", "not postgres")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'payhub_*' not found*"])
