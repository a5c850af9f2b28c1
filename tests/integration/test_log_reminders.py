"""Conditions that last are logged when they begin or change, then at most every ``REMIND_SECONDS``: a failed hook
plugin stopping payouts does not write one line per idle pass of the daemon."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_program_rules import BASE, PAYEES, PCT, all_payouts, deal, run, schedule

from payhub.logs import REMIND_SECONDS, Reminder
from payhub.worker import Worker

pytestmark = pytest.mark.slow  # waits out the reminder interval


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_condition_is_due_when_it_begins_or_changes_then_once_per_interval() -> None:
    clock = Clock()
    reminder = Reminder(60, clock)
    assert reminder.due("a")
    clock.now += 59.9
    assert not reminder.due("a")
    assert reminder.due("b")  # another condition: at once
    clock.now += 0.1
    assert reminder.due("a")  # 60 s after "a" was logged
    assert not reminder.due("a") and not reminder.due("b")
    assert Reminder().every == REMIND_SECONDS == 60


def test_failed_hooks_stopping_payouts_are_logged_once_per_interval(
        make_runtime: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "payees.csv").write_text(PAYEES)
    rt = make_runtime(BASE + textwrap.dedent(f"""
        [programs.p]
        {PCT}
        [rails.r]
        plugin = "fake"

        [hooks.misspelt]
    """))
    assert rt.plugins.failed_hooks() == ["misspelt"]
    worker = Worker(rt)
    clock = Clock()
    worker.reminder = Reminder(clock=clock)
    worker.start()
    try:
        run(rt, deal("o1", "100.00"))
        schedule(rt)

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if "no payouts are sent" in r.getMessage()]

        with caplog.at_level(logging.ERROR):
            for _ in range(25):  # 25 s of idle passes
                worker.run_once()
                clock.now += 1
            assert lines() == ["no payouts are sent while hook plugins ['misspelt'] have failed (see `payhub plugins "
                               "list`); logged again every 60s while they are"]
            clock.now += 35  # 60 s after the first line
            worker.run_once()
            worker.run_once()
            assert len(lines()) == 2
    finally:
        worker.stop()
    [payout] = all_payouts(rt)
    assert (payout.status, payout.attempts) == ("scheduled", 0)  # still fail-closed: nothing was sent
