"""Scheduling with the ``ecb_rates`` provider loaded from the settings: a reward whose rate date is a TARGET business
day missing from the rates file is held ``fx_rate`` exactly like one dated past the newest row, and both are paid at
their own day's rate once the file is completed; closing days convert at the previous publication's rate."""

from __future__ import annotations

import logging
import os
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_fx import HIST_SOURCE, ecb_file
from test_program_rules import BASE, PCT, all_payouts, deal, items, payout_money, reward_rows, run, schedule, verified

from payhub.pipeline.schedule import schedule_batch
from payhub.runtime import Runtime
from payhub.testing import FakeRail
from payhub.worker import Worker

PAYEES = "id,name,country,currency\np1,One,DE,EUR\n"


def rates_world(make_runtime: Any, tmp_path: Path, rates: str, payees: str = PAYEES) -> Runtime:
    """A runtime with program ``p`` paying in the payee's currency at the event date's ECB rate from ``rates``."""
    (tmp_path / "payees.csv").write_text(payees)
    (tmp_path / "eurofxref-hist.csv").write_text(rates)
    rt: Runtime = make_runtime(BASE + textwrap.dedent(f"""
        [programs.p]
        {PCT}payout_currency = "payee"
        fx_date = "event"

        [rails.r]
        plugin = "fake"

        [hooks.fx]
        plugin = "ecb_rates"
        path = "eurofxref-hist.csv"
    """))
    return rt


def held(rt: Runtime) -> dict[str, tuple[str, str | None, str | None]]:
    return {r.object_id: (r.status, r.hold_code, r.hold_reason) for r in reward_rows(rt) if r.status == "held"}


def reason(day: str) -> str:
    return f"no reference rate USD->EUR for {day} (event date) from any FX provider; the reward waits for one"


def test_a_business_day_missing_from_the_file_holds_the_reward_until_the_file_has_it(
        make_runtime: Any, tmp_path: Path) -> None:
    # The file lacks Wednesday 8 April 2026 (between Tuesday's and Thursday's rows) and ends on Thursday the 9th.
    rt = rates_world(make_runtime, tmp_path, ecb_file(date(2026, 4, 8)))
    run(rt, deal("easter", "100.00", when="2026-04-06T10:00:00Z"),  # Easter Monday: Maundy Thursday's rate
        deal("gap", "100.00", when="2026-04-08T10:00:00Z"),  # the missing Wednesday
        deal("past", "100.00", when="2026-04-10T10:00:00Z"))  # Friday, past the newest row
    schedule(rt)
    [easter] = all_payouts(rt)
    assert payout_money(easter) == ("p1", "86.77", "EUR")  # 100.00 x 0.8676789588 (1 / 1.1525)
    [(_id, _amount, fx)] = items(rt, easter.id)
    assert fx is not None and (fx["rate"], fx["rate_date"], fx["source"]) == (
        "0.8676789588", "2026-04-02", HIST_SOURCE)
    assert held(rt) == {"gap": ("held", "fx_rate", reason("2026-04-08")),
                        "past": ("held", "fx_rate", reason("2026-04-10"))}
    assert schedule_batch(rt) == 0  # re-examined: still no rate, nothing changes

    new = tmp_path / "new.csv"  # the completed file, replaced atomically; the plugin reads it on the next request
    new.write_text(ecb_file().replace("Date,USD,JPY,GBP,\n", "Date,USD,JPY,GBP,\n2026-04-10,1.1711,186.43,0.87105,\n"))
    os.replace(new, tmp_path / "eurofxref-hist.csv")
    schedule(rt)
    assert held(rt) == {}
    _easter, paid = all_payouts(rt)
    assert payout_money(paid) == ("p1", "170.82", "EUR")  # 85.43 + 85.39, each at its own day's rate
    assert sorted((fx["rate_date"], fx["rate"], amount) for _id, amount, fx in items(rt, paid.id) if fx) == [
        ("2026-04-08", "0.8542627712", "85.43"),  # 1 / 1.1706
        ("2026-04-10", "0.8538980446", "85.39")]  # 1 / 1.1711
    assert {r.object_id: r.status for r in reward_rows(rt)} == {"easter": "scheduled", "gap": "scheduled",
                                                                "past": "scheduled"}
    verified(rt)


def test_a_holiday_after_a_missing_business_day_holds_the_reward(make_runtime: Any, tmp_path: Path) -> None:
    rt = rates_world(make_runtime, tmp_path, ecb_file(date(2025, 12, 31)))
    run(rt, deal("ny", "50.00", when="2026-01-01T12:00:00Z"),  # New Year's Day after a missing 31 December
        deal("xmas", "50.00", when="2025-12-26T12:00:00Z"))  # 26 December: 24 December's rate
    schedule(rt)
    [xmas] = all_payouts(rt)
    assert payout_money(xmas) == ("p1", "42.42", "EUR")  # 50.00 x 0.8483922966 (1 / 1.1787)
    assert held(rt) == {"ny": ("held", "fx_rate", reason("2026-01-01"))}
    verified(rt)


def test_a_rates_file_unreadable_at_start_up_holds_only_the_conversions_until_it_is_fixed(
        make_runtime: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon starts with a malformed file: the reward that needs a rate is held with the file's problem as the
    reason, the payout that needs none is sent, and once the file is replaced the held reward is converted at its
    own day's rate and sent, without a restart."""
    broken = ecb_file().replace("2026-04-08,1.1706,", "2026-04-08,1.17.06,")
    line = broken.splitlines().index("2026-04-08,1.17.06,185.13,0.86893,") + 1
    rt = rates_world(make_runtime, tmp_path, broken, payees=PAYEES + "p2,Two,US,USD\n")
    assert rt.plugins.failed("hook", "fx") is None  # started: the file is data, not a setting
    worker = Worker(rt)
    worker.start()
    try:
        run(rt, deal("eur", "100.00", when="2026-04-08T10:00:00Z"),  # p1 is paid in EUR: needs the file
            deal("usd", "40.00", payee="p2", when="2026-04-08T10:00:00Z"))  # p2 is paid in USD: needs no rate
        with caplog.at_level(logging.INFO):
            worker.run_once()
            worker.run_once()  # the daemon's next passes: the held reward is looked at again, nothing changes
        [usd] = all_payouts(rt)
        assert (payout_money(usd), usd.status) == (("p2", "40.00", "USD"), "sent")
        assert held(rt) == {"eur": (
            "held", "fx_rate", f"no reference rate USD->EUR for 2026-04-08 (event date) because an FX provider "
            f"failed: EcbRatesError: {tmp_path / 'eurofxref-hist.csv'}, line {line}: USD rate '1.17.06' is not a "
            "positive decimal number or N/A; the reward waits for one")}
        assert "no payouts are sent" not in caplog.text
        assert [r.levelname for r in caplog.records if r.name in ("payhub.fx", "payhub.builtin.ecb_rates")] == [
            "ERROR", "ERROR"]  # the file's problem when read, the failed lookup: once each, not once per pass

        fixed = tmp_path / "fixed.csv"
        fixed.write_text(ecb_file())
        os.replace(fixed, tmp_path / "eurofxref-hist.csv")
        worker.run_once()
    finally:
        worker.stop()
    assert held(rt) == {}
    _usd, eur = all_payouts(rt)
    assert (payout_money(eur), eur.status) == (("p1", "85.43", "EUR"), "sent")  # 100.00 / 1.1706
    [(_id, _amount, fx)] = items(rt, eur.id)
    assert fx is not None and (fx["rate"], fx["rate_date"]) == ("0.8542627712", "2026-04-08")
    rail = rt.plugins.rails["r"]
    assert isinstance(rail, FakeRail) and sorted(rail.accepted.values()) == [1, 1]  # each sent once
    verified(rt)
