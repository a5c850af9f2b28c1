"""A long ``Retry-After`` is remembered in the cursor: no request to HubSpot before it, across polls and restarts.

The source runs against the simulator with a wall clock the test moves by hand, so no test waits for real time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from email.utils import format_datetime
from typing import Any

import pytest
from payhub_simulators.hubspot import TOKEN_PATH, HubSpotSimulator

from payhub.api import TransientSourceError
from payhub.testing import Harness
from payhub_hubspot import HubSpotSource
from payhub_hubspot.client import RETRY_AFTER_CAP_SECONDS, retry_after_seconds
from payhub_hubspot.source import SEARCH_PATH, Cursor, from_ms

HOUR = 3_600_000
NOW = 1_900_000_000.0  # a fixed "now" for the pure parsing tests


@pytest.fixture
def runtime_db_url(both_databases: str) -> str:
    """The runtimes of this module run on SQLite and on PostgreSQL."""
    return both_databases


class WallClock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


def not_before(cursor: str | None) -> int | None:
    return Cursor.decode(cursor, 0).nb


def hold(rt: Harness, wall: WallClock) -> None:
    """Give the harness's source the test's wall clock."""
    source = rt.source("hs")
    assert isinstance(source, HubSpotSource)
    source.wall_clock = wall


def waiting_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "no request" in r.getMessage()]


def test_long_retry_after_is_kept_across_polls_and_a_restart(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], wall: WallClock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="payhub_hubspot")
    won = [sim.add_deal(at_ms=sim.now_ms() - HOUR + n) for n in range(3)]
    sim.fail(SEARCH_PATH, 429, times=1, headers={"Retry-After": "600"})
    source = make_source(max_retry_after_seconds=60, wall_clock=wall)
    first = source.fetch(None, 100)  # not an error: the poll ends, and the cursor says until when to wait
    until = int(wall.now * 1000) + 600_000
    assert (list(first.records), first.more, not_before(first.cursor)) == ([], False, until)
    [warning] = waiting_logs(caplog)
    assert warning.levelno == logging.WARNING and from_ms(until).isoformat() in warning.getMessage()
    asked = len(sim.requests)

    wall.now += 300
    caplog.clear()
    for _ in range(3):  # polls before the instant: no request at all, the same cursor, nothing logged again
        again = source.fetch(first.cursor, 100)
        assert (list(again.records), again.cursor, again.more) == ([], first.cursor, False)
    assert len(sim.requests) == asked and waiting_logs(caplog) == []

    restarted = make_source(max_retry_after_seconds=60, wall_clock=wall)  # a new process, the stored cursor
    wall.now += 299
    for _ in range(2):
        assert list(restarted.fetch(first.cursor, 100).records) == [] and len(sim.requests) == asked
    [info] = waiting_logs(caplog)  # the new process says once why it is quiet
    assert info.levelno == logging.INFO and from_ms(until).isoformat() in info.getMessage()

    wall.now += 1  # the instant HubSpot gave: called again, and the wait is forgotten
    result = restarted.fetch(first.cursor, 100)
    assert sorted(r.object_id for r in result.records) == won
    assert len(sim.requests) > asked and not_before(result.cursor) is None


def test_long_retry_after_in_the_middle_of_a_fetch_keeps_what_was_read(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], wall: WallClock) -> None:
    won = [sim.add_deal(at_ms=sim.now_ms() - HOUR + n) for n in range(30)]
    sim.fail(SEARCH_PATH, 429, times=1, skip=2, headers={"Retry-After": "120"})  # the third page
    source = make_source(page_size=10, wall_clock=wall)
    first = source.fetch(None, 1000)
    assert [r.object_id for r in first.records] == won[:20] and not first.more
    assert not_before(first.cursor) == int(wall.now * 1000) + 120_000
    assert Cursor.decode(first.cursor, 0).after == won[19]
    wall.now += 121
    rest = source.fetch(first.cursor, 1000)
    assert [r.object_id for r in rest.records] == won[20:]


def test_long_retry_after_of_the_token_endpoint(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                                wall: WallClock) -> None:
    sim.add_deal(at_ms=sim.now_ms() - HOUR)
    sim.fail(TOKEN_PATH, 429, times=1, headers={"Retry-After": "900"})
    source = make_source(refresh_token=sim.refresh_token, client_id=sim.client_id, client_secret=sim.client_secret,
                         wall_clock=wall)
    first = source.fetch(None, 10)
    assert not_before(first.cursor) == int(wall.now * 1000) + 900_000
    assert [r.path for r in sim.requests] == [TOKEN_PATH]
    wall.now += 899
    source.fetch(first.cursor, 10)
    assert len(sim.requests) == 1 and sim.token_grants == 0
    wall.now += 1
    assert len(source.fetch(first.cursor, 10).records) == 1 and sim.token_grants == 1


def test_the_daemon_stores_the_wait_and_a_restarted_daemon_keeps_it(
        sim: HubSpotSimulator, hs_harness: Callable[..., Harness], wall: WallClock) -> None:
    deal = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    sim.fail(SEARCH_PATH, 429, times=1, headers={"Retry-After": "3000"})
    rt = hs_harness()
    hold(rt, wall)
    assert rt.ingest("hs", batches=None) == 0

    def stored() -> tuple[str | None, str, str | None]:
        (row,) = [s for s in rt.sources() if s.name == "hs"]
        return row.cursor, row.status, row.reason

    cursor, status, reason = stored()
    assert not_before(cursor) == int(wall.now * 1000) + 3_000_000 and (status, reason) == ("ok", None)
    asked = len(sim.requests)
    rt = hs_harness()  # a restart: a new source, the cursor from the database
    hold(rt, wall)
    wall.now += 2999
    assert rt.ingest("hs", batches=None) == 0 and len(sim.requests) == asked and stored() == (cursor, "ok", None)
    wall.now += 1
    assert rt.ingest("hs", batches=None) == 1
    assert [e.object_id for e in rt.events()] == [deal]
    assert not_before(stored()[0]) is None


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("0.2", 0.2), ("007", 7.0),
    ("86400", 86_400.0), ("86401", RETRY_AFTER_CAP_SECONDS), ("99999999999", RETRY_AFTER_CAP_SECONDS),
    ("9" * 5000, RETRY_AFTER_CAP_SECONDS), ("1" + "0" * 400 + ".5", RETRY_AFTER_CAP_SECONDS),
    (format_datetime(from_ms(int((NOW + 600) * 1000)), usegmt=True), 600.0),  # an HTTP date: from now
    (format_datetime(from_ms(int((NOW - 600) * 1000)), usegmt=True), 0.0),  # in the past: at once
    ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_CAP_SECONDS),
    ("-5", None), ("+5", None), ("-0", None), ("1e3", None), ("inf", None), ("nan", None), ("Infinity", None),
    ("0x10", None), ("١٢٠", None), ("120s", None), ("soon", None), ("10, 20", None), ("", None), (None, None),
    ("Wed, 32 Foo 2026 99:99:99 GMT", None), ("x" * 10_000, None), ("Fri, 31 Dec 99999 23:59:59 GMT", None),
])
def test_hostile_retry_after_values_are_bounded(header: str | None, seconds: float | None) -> None:
    got = retry_after_seconds(header, NOW)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(("header", "wait"), [
    ("99999999999", RETRY_AFTER_CAP_SECONDS),  # huge: a day at most
    ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_CAP_SECONDS),
    ("3600.5", 3600.5),
])
def test_hostile_long_retry_after_waits_at_most_a_day(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], wall: WallClock, header: str,
        wait: float) -> None:
    sim.fail(SEARCH_PATH, 429, times=1, headers={"Retry-After": header})
    first = make_source(wall_clock=wall).fetch(None, 10)
    assert not_before(first.cursor) == int((wall.now + wait) * 1000)


@pytest.mark.parametrize("header", ["-5", "garbage", "inf", "nan", "1e9", "١٢٠"])
def test_unreadable_retry_after_backs_off_within_the_poll(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], wall: WallClock, header: str) -> None:
    deal = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    sim.fail(SEARCH_PATH, 429, times=2, headers={"Retry-After": header})
    slept: list[float] = []
    result = make_source(wall_clock=wall, sleep=slept.append).fetch(None, 10)
    assert [r.object_id for r in result.records] == [deal] and not_before(result.cursor) is None
    # Backoffs are at least half of retry_initial_seconds (0.01); the rate limiter's own waits are about 1 ms.
    backoffs = [s for s in slept if s > 0.004]
    assert len(backoffs) == 2 and max(backoffs) <= 0.05  # retry_max_seconds of the test settings


def test_a_stored_wait_beyond_a_day_is_brought_back(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                                   wall: WallClock) -> None:
    source = make_source(wall_clock=wall)
    far = json.loads(source.fetch(None, 10).cursor or "{}")
    far["nb"] = int(wall.now * 1000) + 10 * 365 * 86_400_000  # a clock set back by years, or an edited row
    asked = len(sim.requests)
    result = source.fetch(json.dumps(far), 10)
    assert len(sim.requests) == asked
    assert not_before(result.cursor) == int((wall.now + RETRY_AFTER_CAP_SECONDS) * 1000)


def test_a_cursor_without_the_wait_is_read_as_before(make_source: Callable[..., HubSpotSource]) -> None:
    old = '{"after":null,"end":null,"start":1767225600000,"sweep":null,"sweep_next":0,"sweep_since":0,"v":1}'
    state = Cursor.decode(old, 0)
    assert state.nb is None and state.encode() == old


def test_daily_limit_with_retry_after_waits_without_calling(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], wall: WallClock) -> None:
    body: dict[str, Any] = {"status": "error", "message": "You have reached your daily limit.",
                            "errorType": "RATE_LIMIT", "policyName": "DAILY", "correlationId": "c0ffee"}
    sim.fail(SEARCH_PATH, 429, times=1, headers={"Retry-After": "30"}, body=body)
    source = make_source(wall_clock=wall)
    first = source.fetch(None, 10)  # a daily limit is never waited for inside a poll, even a short one
    assert not_before(first.cursor) == int(wall.now * 1000) + 30_000
    sim.fail(SEARCH_PATH, 429, times=1, body=body)  # without Retry-After: transient, as before
    wall.now += 30
    with pytest.raises(TransientSourceError, match="daily request limit"):
        source.fetch(first.cursor, 10)
