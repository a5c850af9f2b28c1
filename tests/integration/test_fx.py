"""FX rates: the ``ecb_rates`` provider on files in the ECB's two real CSV formats, and ``payhub.fx``.

The sample files follow the ECB's published layouts: the daily ``eurofxref.csv`` (``Date, USD, ...`` with a space
after each comma, a long date, a separator at the end of each line) and the historical ``eurofxref-hist.csv``
(ISO dates, newest first, ``N/A`` for a currency not quoted that day, a comma at the end of each line).
"""

from __future__ import annotations

import logging
import os
import textwrap
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pluggy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payhub.api import FxRate, hookimpl
from payhub.builtin.ecb_rates import EcbRates, EcbRatesError, EcbRatesSettings, target_closed
from payhub.errors import ConfigError
from payhub.fx import convert, find_rate
from payhub.money import minor_units
from payhub.plugins import load_plugins, new_plugin_manager
from payhub.settings import load_settings

DAILY = (
    "Date, USD, JPY, GBP, CHF, ISK, \n"
    "27 November 2026, 1.0487, 162.80, 0.85000, 0.9353, 145.50, \n"
)

# Newest first, as the ECB publishes it: Thu 26 Nov to Mon 28 Dec 2026, with a weekend (28-29 Nov), three weeks
# of business days missing from the file (2-23 Dec), Christmas (25-27 Dec), ISK not quoted on 24 Dec and CYP (gone
# with the euro) never.
HIST = (
    "Date,USD,JPY,GBP,ISK,CYP,\n"
    "2026-12-28,1.0601,165.10,0.86100,146.30,N/A,\n"
    "2026-12-24,1.0590,164.90,0.86050,N/A,N/A,\n"
    "2026-12-01,1.0512,163.45,0.85230,144.90,N/A,\n"
    "2026-11-30,1.0498,163.02,0.85111,145.10,N/A,\n"
    "2026-11-27,1.0487,162.80,0.85000,145.50,N/A,\n"
    "2026-11-26,1.0455,162.44,0.84960,145.70,N/A,\n"
)
HIST_SOURCE = "ECB euro reference rates eurofxref-hist.csv"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def provider(path: Path, **overrides: Any) -> EcbRates:
    return EcbRates(EcbRatesSettings.model_validate({"path": path, **overrides}))


@pytest.fixture
def hist(tmp_path: Path) -> EcbRates:
    return provider(write(tmp_path, "eurofxref-hist.csv", HIST))


def ask(plugin: EcbRates, base: str, quote: str, on: date, rate_type: str = "reference") -> FxRate | None:
    return plugin.payhub_fx_rate(base=base, quote=quote, on=on, rate_type=rate_type)


def answer(plugin: EcbRates, base: str, quote: str, on: date) -> tuple[Decimal, date]:
    rate = ask(plugin, base, quote, on)
    assert rate is not None, f"no rate for {base}->{quote} on {on}"
    return rate.rate, rate.rate_date


# ----------------------------------------------------------------------------------------------- the files


def test_historical_file_gives_the_published_rates(hist: EcbRates) -> None:
    assert ask(hist, "EUR", "USD", date(2026, 11, 30)) == FxRate(
        "EUR", "USD", Decimal("1.0498"), HIST_SOURCE, date(2026, 11, 30))
    assert answer(hist, "EUR", "GBP", date(2026, 12, 28)) == (Decimal("0.86100"), date(2026, 12, 28))
    assert answer(hist, "EUR", "JPY", date(2026, 11, 26)) == (Decimal("162.44"), date(2026, 11, 26))


def test_daily_file_with_spaces_and_long_date(tmp_path: Path) -> None:
    daily = provider(write(tmp_path, "eurofxref.csv", DAILY))
    assert ask(daily, "EUR", "CHF", date(2026, 11, 27)) == FxRate(
        "EUR", "CHF", Decimal("0.9353"), "ECB euro reference rates eurofxref.csv", date(2026, 11, 27))
    assert answer(daily, "EUR", "ISK", date(2026, 11, 27)) == (Decimal("145.50"), date(2026, 11, 27))
    assert ask(daily, "EUR", "USD", date(2026, 11, 26)) is None  # before the only publication


def test_crlf_line_endings_and_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "eurofxref-hist.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HIST.replace("\n", "\r\n").encode())
    assert answer(provider(path), "EUR", "USD", date(2026, 12, 1)) == (Decimal("1.0512"), date(2026, 12, 1))


def test_rates_to_euro_and_cross_rates_are_rounded_to_10_significant_digits(hist: EcbRates) -> None:
    on = date(2026, 11, 30)
    # 1 / 1.0498 = 0.95256239283...; 0.85111 / 1.0498 = 0.81073537816727...
    assert answer(hist, "USD", "EUR", on) == (Decimal("0.9525623928"), on)
    assert answer(hist, "USD", "GBP", on) == (Decimal("0.8107353782"), on)
    assert answer(hist, "GBP", "JPY", on) == (Decimal("191.5381091"), on)
    assert answer(hist, "JPY", "GBP", on) == (Decimal("0.005220893142"), on)


def test_same_currency_is_one(hist: EcbRates) -> None:
    assert ask(hist, "USD", "USD", date(2026, 11, 29)) == FxRate(
        "USD", "USD", Decimal(1), HIST_SOURCE, date(2026, 11, 29))


# ------------------------------------------------------------------------------------------- the rate date


@pytest.mark.parametrize(("on", "published"), [
    (date(2026, 11, 28), date(2026, 11, 27)),  # Saturday
    (date(2026, 11, 29), date(2026, 11, 27)),  # Sunday
    (date(2026, 12, 25), date(2026, 12, 24)),  # Christmas, a TARGET closing day
    (date(2026, 12, 27), date(2026, 12, 24)),  # three days after the last publication
    (date(2026, 12, 28), date(2026, 12, 28)),
])
def test_a_day_without_rates_uses_the_last_publication_before_it(hist: EcbRates, on: date, published: date) -> None:
    assert answer(hist, "USD", "JPY", on)[1] == published


@pytest.mark.parametrize("on", [
    date(2026, 12, 2),  # a Wednesday without a row between 1 and 24 December: missing, not a holiday
    date(2026, 12, 5),  # a Saturday after business days without a row
    date(2026, 12, 6),
    date(2026, 12, 22),
    date(2026, 11, 25),  # before the first row of the file
])
def test_no_rate_across_missing_business_days(hist: EcbRates, on: date) -> None:
    assert ask(hist, "EUR", "USD", on) is None


def test_max_age_days_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "eurofxref-hist.csv", HIST)
    strict = provider(path, max_age_days=2)
    assert answer(strict, "EUR", "USD", date(2026, 12, 26))[1] == date(2026, 12, 24)
    assert ask(strict, "EUR", "USD", date(2026, 12, 27)) is None
    exact = provider(path, max_age_days=0)
    assert ask(exact, "EUR", "USD", date(2026, 11, 28)) is None
    assert answer(exact, "EUR", "USD", date(2026, 11, 27))[1] == date(2026, 11, 27)


def test_a_business_day_after_the_newest_row_has_no_rate_yet(tmp_path: Path) -> None:
    daily = provider(write(tmp_path, "eurofxref.csv", DAILY))  # Friday 27 November 2026
    assert answer(daily, "EUR", "USD", date(2026, 11, 29))[1] == date(2026, 11, 27)  # the weekend after it
    assert ask(daily, "EUR", "USD", date(2026, 11, 30)) is None  # Monday's rate: not downloaded yet
    hist = provider(write(tmp_path, "eurofxref-hist.csv", HIST))  # newest row: Monday 28 December
    assert ask(hist, "EUR", "USD", date(2026, 12, 29)) is None


def test_target_closing_days() -> None:
    closed = [date(2026, 1, 1), date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 1), date(2026, 12, 25),
              date(2026, 12, 26), date(2026, 11, 28), date(2026, 11, 29),
              date(2024, 3, 29), date(2024, 4, 1), date(2027, 3, 26), date(2027, 3, 29),  # Good Friday, Easter Monday
              date(2001, 12, 31)]  # the ECB's additional closing day of the euro cash changeover
    assert all(target_closed(day) for day in closed)
    assert not any(target_closed(day) for day in (date(2026, 4, 2), date(2026, 4, 7), date(2026, 12, 24),
                                                  date(2026, 12, 31), date(2026, 11, 30), date(2027, 3, 25)))


def test_easter_monday_after_the_newest_row(tmp_path: Path) -> None:
    path = write(tmp_path, "eurofxref.csv", "Date, USD, \n02 April 2026, 1.0800, \n")  # Maundy Thursday
    daily = provider(path)
    assert answer(daily, "EUR", "USD", date(2026, 4, 6))[1] == date(2026, 4, 2)  # Good Friday to Easter Monday
    assert ask(daily, "EUR", "USD", date(2026, 4, 7)) is None


# ----------------------------------------------------------------- business days missing inside the file

# Real rows of the ECB's historical file (USD, JPY, GBP), newest first: Christmas 2025 and New Year (closed 25-26 Dec
# and 1 Jan), Easter 2026 (closed Good Friday 3 April and Easter Monday 6 April), with the weekends between.
ECB_ROWS = {
    date(2026, 4, 9): "1.1685,185.7,0.87053", date(2026, 4, 8): "1.1706,185.13,0.86893",
    date(2026, 4, 7): "1.1557,184.73,0.87258", date(2026, 4, 2): "1.1525,183.94,0.87253",
    date(2026, 4, 1): "1.1605,183.73,0.87113",
    date(2026, 1, 5): "1.1664,182.93,0.8676", date(2026, 1, 2): "1.1721,183.94,0.8719",
    date(2025, 12, 31): "1.175,184.09,0.8726", date(2025, 12, 30): "1.1757,183.48,0.8712",
    date(2025, 12, 29): "1.1766,183.97,0.8726", date(2025, 12, 24): "1.1787,183.83,0.8729",
    date(2025, 12, 23): "1.1786,183.89,0.8729", date(2025, 12, 22): "1.1745,184.77,0.8742",
    date(2025, 12, 19): "1.1712,184.15,0.876",
}


def ecb_file(*without: date) -> str:
    """The historical file of ``ECB_ROWS`` less the rows dated ``without``."""
    rows = [f"{day.isoformat()},{cells},\n" for day, cells in sorted(ECB_ROWS.items(), reverse=True)
            if day not in without]
    return "Date,USD,JPY,GBP,\n" + "".join(rows)


def test_the_sample_has_a_row_for_every_target_business_day() -> None:
    for day in (date(2025, 12, 19) + timedelta(days=n) for n in range((date(2026, 1, 5) - date(2025, 12, 19)).days)):
        assert (day in ECB_ROWS) != target_closed(day), day
    for day in (date(2026, 4, 1) + timedelta(days=n) for n in range(9)):
        assert (day in ECB_ROWS) != target_closed(day), day


@pytest.mark.parametrize(("on", "published"), [
    (date(2025, 12, 25), date(2025, 12, 24)),  # Christmas
    (date(2025, 12, 26), date(2025, 12, 24)),  # 26 December
    (date(2025, 12, 28), date(2025, 12, 24)),  # and the weekend after them
    (date(2026, 1, 1), date(2025, 12, 31)),  # New Year's Day
    (date(2026, 1, 4), date(2026, 1, 2)),  # a weekend
    (date(2026, 4, 3), date(2026, 4, 2)),  # Good Friday
    (date(2026, 4, 6), date(2026, 4, 2)),  # Easter Monday, four days after Maundy Thursday
    (date(2026, 4, 8), date(2026, 4, 8)),
])
def test_only_target_closing_days_fall_back_to_the_previous_publication(
        tmp_path: Path, on: date, published: date) -> None:
    plugin = provider(write(tmp_path, "eurofxref-hist.csv", ecb_file()))
    rate = ask(plugin, "EUR", "USD", on)
    assert rate == FxRate("EUR", "USD", Decimal(ECB_ROWS[published].split(",")[0]), HIST_SOURCE, published)


def test_a_wednesday_missing_between_tuesday_and_thursday_has_no_rate(tmp_path: Path) -> None:
    plugin = provider(write(tmp_path, "eurofxref-hist.csv", ecb_file(date(2026, 4, 8))))
    assert ask(plugin, "USD", "EUR", date(2026, 4, 8)) is None  # never Tuesday's rate
    assert answer(plugin, "USD", "EUR", date(2026, 4, 7)) == (Decimal("0.8652764558"), date(2026, 4, 7))
    assert answer(plugin, "USD", "EUR", date(2026, 4, 9)) == (Decimal("0.8557980317"), date(2026, 4, 9))


@pytest.mark.parametrize(("without", "on"), [
    (date(2025, 12, 31), date(2025, 12, 31)),  # the business day itself
    (date(2025, 12, 31), date(2026, 1, 1)),  # a holiday after a missing business day
    (date(2025, 12, 29), date(2025, 12, 29)),  # a missing Monday after Christmas and a weekend
    (date(2025, 12, 24), date(2025, 12, 27)),  # Christmas and a Saturday after a missing Wednesday
    (date(2026, 4, 7), date(2026, 4, 7)),  # a missing Tuesday after Easter Monday
    (date(2026, 1, 2), date(2026, 1, 4)),  # a weekend after New Year's Day and a missing Friday
])
def test_a_gap_spanning_closing_days_and_a_missing_business_day_has_no_rate(
        tmp_path: Path, without: date, on: date) -> None:
    plugin = provider(write(tmp_path, "eurofxref-hist.csv", ecb_file(without)), max_age_days=10)
    assert ask(plugin, "EUR", "USD", on) is None
    assert ask(plugin, "GBP", "JPY", on) is None


def test_closing_days_before_a_missing_business_day_still_fall_back(tmp_path: Path) -> None:
    plugin = provider(write(tmp_path, "eurofxref-hist.csv", ecb_file(date(2026, 4, 7))))
    assert answer(plugin, "EUR", "USD", date(2026, 4, 6))[1] == date(2026, 4, 2)  # only closing days in between
    assert ask(plugin, "EUR", "USD", date(2026, 4, 7)) is None


@pytest.mark.parametrize("on", [date(2025, 12, 18), date(2025, 12, 14), date(1999, 1, 1)])
def test_a_date_before_the_oldest_row_has_no_rate(tmp_path: Path, on: date) -> None:
    plugin = provider(write(tmp_path, "eurofxref-hist.csv", ecb_file()), max_age_days=366)
    assert ask(plugin, "EUR", "USD", on) is None


def test_a_completed_file_answers_the_missing_day(tmp_path: Path) -> None:
    path = write(tmp_path, "eurofxref-hist.csv", ecb_file(date(2026, 4, 8)))
    plugin = provider(path)
    assert ask(plugin, "EUR", "USD", date(2026, 4, 8)) is None
    new = write(tmp_path, "new.csv", ecb_file())
    os.replace(new, path)
    assert answer(plugin, "EUR", "USD", date(2026, 4, 8)) == (Decimal("1.1706"), date(2026, 4, 8))


# ------------------------------------------------------------------------------------ unknown and missing


@pytest.mark.parametrize(("base", "quote", "on"), [
    ("USD", "XYZ", date(2026, 11, 30)),  # not in the file
    ("XYZ", "EUR", date(2026, 11, 30)),
    ("EUR", "CHF", date(2026, 11, 30)),  # a real currency the file does not quote
    ("EUR", "CYP", date(2026, 11, 30)),  # a column that is N/A on every row
    ("ISK", "USD", date(2026, 12, 24)),  # N/A on that publication
    ("GBP", "ISK", date(2026, 12, 26)),  # N/A on the publication that applies; an older one is not used
])
def test_unknown_or_unquoted_currency_has_no_rate(hist: EcbRates, base: str, quote: str, on: date) -> None:
    assert ask(hist, base, quote, on) is None


def test_isk_is_quoted_again_later(hist: EcbRates) -> None:
    assert answer(hist, "ISK", "EUR", date(2026, 12, 28)) == (Decimal("0.006835269993"), date(2026, 12, 28))


def test_other_rate_types_are_left_to_other_providers(tmp_path: Path) -> None:
    path = write(tmp_path, "eurofxref-hist.csv", HIST)
    assert ask(provider(path), "EUR", "USD", date(2026, 11, 30), rate_type="month_end") is None
    custom = provider(path, rate_type="ecb")
    assert ask(custom, "EUR", "USD", date(2026, 11, 30), rate_type="reference") is None
    assert ask(custom, "EUR", "USD", date(2026, 11, 30), rate_type="ecb") is not None


# ------------------------------------------------------------------------------------------------ reloading


def test_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "eurofxref-hist.csv", HIST)
    plugin = provider(path)
    assert ask(plugin, "EUR", "USD", date(2026, 12, 29)) is None
    with path.open("a") as fh:  # rows may come in any order
        fh.write("2026-12-29,1.0622,165.30,0.86200,146.50,N/A,\n")
    assert answer(plugin, "EUR", "USD", date(2026, 12, 29)) == (Decimal("1.0622"), date(2026, 12, 29))
    # the ECB's own way: the whole file replaced, the new day on top
    new = tmp_path / "new.csv"
    new.write_text(HIST.replace("CYP,\n", "CYP,\n2026-12-30,1.0700,165.00,0.86300,146.00,N/A,\n", 1))
    os.replace(new, path)
    assert answer(plugin, "EUR", "USD", date(2026, 12, 30)) == (Decimal("1.0700"), date(2026, 12, 30))
    # the new file has no row for Tuesday the 29th: a business day missing inside the file has no rate, like one
    # past the newest row; never the 28th's
    assert ask(plugin, "EUR", "USD", date(2026, 12, 29)) is None


def test_unchanged_file_is_not_parsed_again(hist: EcbRates) -> None:
    table = hist.table()
    assert ask(hist, "EUR", "USD", date(2026, 11, 30)) is not None
    assert hist.table() is table


def test_file_broken_after_start_raises_until_fixed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "eurofxref-hist.csv", HIST)
    plugin = provider(path)
    write(tmp_path, "eurofxref-hist.csv", HIST + "2026-12-29,1.06.22,165.30,0.86200,146.50,N/A,\n")
    with pytest.raises(EcbRatesError, match=r"eurofxref-hist\.csv, line 8: USD rate '1\.06\.22'"):
        ask(plugin, "EUR", "USD", date(2026, 11, 30))
    hooks = new_plugin_manager()
    hooks.register(plugin, name="fx")
    with caplog.at_level(logging.ERROR, logger="payhub.fx"):
        assert find_rate(hooks, "EUR", "USD", date(2026, 11, 30), "reference") == (
            f"because an FX provider failed: EcbRatesError: {path}, line 8: USD rate '1.06.22' is not a positive "
            "decimal number or N/A")
    assert "line 8" in caplog.text
    write(tmp_path, "eurofxref-hist.csv", HIST)
    assert isinstance(find_rate(hooks, "EUR", "USD", date(2026, 11, 30), "reference"), FxRate)
    path.unlink()
    with pytest.raises(EcbRatesError, match="cannot read the rates file"):
        ask(plugin, "EUR", "USD", date(2026, 11, 30))


# ------------------------------------------------------------------------------------------ malformed files


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("", None, "empty"),
    ("Date,USD,\n", None, "no rates below the header"),
    ("Datum,USD,\n2026-11-30,1.0498,\n", 1, "expected a header starting with 'Date'"),
    ("Date,USD,EUR,\n2026-11-30,1.0498,1,\n", 1, "'EUR' is not a currency code"),
    ("Date,USD,usd,\n", 1, "'usd' is not a currency code"),
    ("Date,USD,USD,\n", 1, "USD appears twice"),
    ("Date,USD,JPY,\n2026-11-30,1.0498,163.02,\n2026-11-27,1.0487\n", 3, "1 values for 2 currencies"),
    ("Date,USD,JPY,\n2026-11-30,1.0498,163.02,\n2026-11-27,1.0487,\n", 3, "no JPY rate (an empty cell"),
    ("Date,USD,\n2026-11-30,1.0498,2.0,\n", 2, "2 values for 1 currencies"),
    ("Date,USD,JPY,\n2026-11-30,,163.02,\n", 2, "no USD rate"),
    ("Date,USD,\n2026-11-30,0,\n", 2, "USD rate '0'"),
    ("Date,USD,\n2026-11-30,-1.0498,\n", 2, "USD rate '-1.0498'"),
    ("Date,USD,\n2026-11-30,1.05e0,\n", 2, "USD rate '1.05e0'"),
    ("Date,USD,\n2026-11-30,n/a,\n", 2, "USD rate 'n/a'"),
    ("Date,USD,\n2026-13-30,1.0498,\n", 2, "date '2026-13-30'"),
    ("Date,USD,\n30/11/2026,1.0498,\n", 2, "date '30/11/2026' is neither"),
    ("Date, USD, \n31 Novembre 2026, 1.0498, \n", 2, "date '31 Novembre 2026'"),
    ("Date, USD, \n31 November 2026, 1.0498, \n", 2, "day is out of range"),
    ("Date,USD,\n2026-11-30,1.0498,\n\n2026-11-30,1.0499,\n", 4, "a second row for 2026-11-30"),
])
def test_malformed_file_names_file_and_line(tmp_path: Path, text: str, line: int | None, problem: str) -> None:
    path = write(tmp_path, "eurofxref-hist.csv", text)
    with pytest.raises(EcbRatesError) as info:
        provider(path).table()
    message = str(info.value)
    where = f"{path}, line {line}: " if line else f"{path}: "
    assert message.startswith(where), message
    assert problem in message


def test_missing_file_raises_on_lookup(tmp_path: Path) -> None:
    with pytest.raises(EcbRatesError, match="nope.csv: cannot read the rates file"):
        ask(provider(tmp_path / "nope.csv"), "EUR", "USD", date(2026, 11, 30))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "eurofxref.csv"
    path.write_bytes(b"Date, USD, \n27 November 2026, 1\xff0487, \n")
    with pytest.raises(EcbRatesError, match="not UTF-8 text"):
        provider(path).table()


# ------------------------------------------------------------------------------- loaded from the settings


def config(directory: Path, body: str) -> Path:
    path = directory / "payhub.toml"
    path.write_text('[database]\nurl = "sqlite:///payhub.db"\n\n' + textwrap.dedent(body))
    return path


def test_plugin_enabled_in_settings_answers_the_hook(make_runtime: Any, tmp_path: Path) -> None:
    (tmp_path / "rates").mkdir()
    write(tmp_path / "rates", "eurofxref-hist.csv", HIST)
    rt = make_runtime('[hooks.fx]\nplugin = "ecb_rates"\npath = "rates/eurofxref-hist.csv"\n')
    [status] = rt.plugins.statuses
    assert (status.section, status.kind, status.plugin, status.distribution, status.state) == (
        "fx", "hook", "ecb_rates", "payhub", "loaded")
    rate = rt.plugins.hooks.hook.payhub_fx_rate(base="USD", quote="GBP", on=date(2026, 11, 29),
                                                rate_type="reference")
    assert rate == FxRate("USD", "GBP", Decimal("0.8105273195"), HIST_SOURCE, date(2026, 11, 27))
    assert find_rate(rt.plugins.hooks, "USD", "GBP", date(2026, 11, 29), "reference") == rate


@pytest.mark.parametrize(("text", "problem"), [
    ("Date, USD, \n27 November 2026, 1.04.87, \n", "{path}, line 2: USD rate '1.04.87' is not a positive decimal "
                                                   "number or N/A"),
    (None, "{path}: cannot read the rates file: No such file or directory"),
])
def test_unreadable_file_at_start_up_answers_no_rate_until_a_readable_one_replaces_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str | None, problem: str) -> None:
    path = tmp_path / "eurofxref.csv"
    if text is not None:
        path.write_text(text)
    problem = problem.format(path=path)
    with caplog.at_level(logging.INFO):
        plugins = load_plugins(load_settings(config(tmp_path, '[hooks.fx]\nplugin = "ecb_rates"\n'
                                                              'path = "eurofxref.csv"\n')))
        [status] = plugins.statuses
        assert (status.state, status.reason) == ("loaded", None)  # started: the file is data, not a setting
        assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "payhub.builtin.ecb_rates"] == [
            ("ERROR", f"{problem}; no FX rate is answered from it until a readable file replaces it")]
        for _ in range(3):  # asked again and again: the reason each time, the file's problem logged once
            assert find_rate(plugins.hooks, "EUR", "USD", date(2026, 11, 27), "reference") == (
                f"because an FX provider failed: EcbRatesError: {problem}")
        assert len([r for r in caplog.records if r.name == "payhub.builtin.ecb_rates"]) == 1
        caplog.clear()
        new = tmp_path / "new.csv"
        new.write_text(DAILY)
        os.replace(new, path)  # fixed, without a restart
        assert find_rate(plugins.hooks, "EUR", "USD", date(2026, 11, 27), "reference") == FxRate(
            "EUR", "USD", Decimal("1.0487"), "ECB euro reference rates eurofxref.csv", date(2026, 11, 27))
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "payhub.builtin.ecb_rates"] == [
        ("INFO", f"{path} read: rates of 1 days, 2026-11-27 to 2026-11-27")]


@pytest.mark.parametrize(("body", "key", "problem"), [
    ('[hooks.fx]\nplugin = "ecb_rates"\n', "hooks.fx.path", "Field required"),
    ('[hooks.fx]\nplugin = "ecb_rates"\npath = "x.csv"\nmax_age_days = -1\n', "hooks.fx.max_age_days",
     "greater than or equal to 0"),
    ('[hooks.fx]\nplugin = "ecb_rates"\npath = "x.csv"\nurl = "https://www.ecb.europa.eu"\n', "hooks.fx.url", ""),
])
def test_invalid_settings_stop_start_up(tmp_path: Path, body: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_plugins(load_settings(config(tmp_path, body)))
    assert [k for k, _ in info.value.problems] == [key]
    assert problem in info.value.problems[0][1]


# ---------------------------------------------------------------------------------------------- payhub.fx


class Answer:
    """A provider that answers whatever it is told to."""

    def __init__(self, result: Any) -> None:
        self.result = result

    @hookimpl
    def payhub_fx_rate(self, base: str, quote: str, on: date, rate_type: str) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def manager(*plugins: object) -> pluggy.PluginManager:
    hooks = new_plugin_manager()
    for plugin in plugins:
        hooks.register(plugin)
    return hooks


ON = date(2026, 11, 30)
GOOD = FxRate("USD", "EUR", Decimal("0.9525623928"), "test", date(2026, 11, 27))


def test_find_rate_returns_a_valid_answer() -> None:
    assert find_rate(manager(Answer(GOOD)), "USD", "EUR", ON, "reference") == GOOD
    assert find_rate(manager(), "USD", "EUR", ON, "reference") == "from any FX provider"
    assert find_rate(manager(Answer(None)), "USD", "EUR", ON, "reference") == "from any FX provider"
    # the first provider that answers wins; pluggy calls the last registered first
    assert find_rate(manager(Answer(GOOD), Answer(None)), "USD", "EUR", ON, "reference") == GOOD


@pytest.mark.parametrize(("result", "problem"), [
    ({"rate": "0.95"}, "expected an FxRate, got dict"),
    (FxRate("EUR", "USD", Decimal("1.05"), "test", ON), "the rate is for EUR->USD"),
    (FxRate("USD", "EUR", 0.95, "test", ON), "is not a positive finite Decimal"),  # type: ignore[arg-type]
    (FxRate("USD", "EUR", Decimal("NaN"), "test", ON), "is not a positive finite Decimal"),
    (FxRate("USD", "EUR", Decimal("Infinity"), "test", ON), "is not a positive finite Decimal"),
    (FxRate("USD", "EUR", Decimal("0"), "test", ON), "is not a positive finite Decimal"),
    (FxRate("USD", "EUR", Decimal("-0.95"), "test", ON), "is not a positive finite Decimal"),
    (FxRate("USD", "EUR", Decimal("0.95"), " ", ON), "names no source"),
    (FxRate("USD", "EUR", Decimal("0.95"), "test", date(2026, 12, 1)), "rate_date 2026-12-01 is after 2026-11-30"),
    (FxRate("USD", "EUR", Decimal("0.95"), "test", datetime(2026, 11, 30, 12)), "is not a date"),
    (FxRate("USD", "EUR", Decimal("0.95"), "test", "2026-11-30"), "is not a date"),  # type: ignore[arg-type]
])
def test_find_rate_refuses_a_malformed_answer(result: Any, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="payhub.fx"):
        why = find_rate(manager(Answer(result)), "USD", "EUR", ON, "reference")
    assert isinstance(why, str) and why.startswith("because an FX provider's answer is unusable: ")
    assert problem in why
    assert problem in caplog.text


def test_find_rate_treats_a_raising_provider_as_no_rate(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="payhub.fx"):
        assert find_rate(manager(Answer(ZeroDivisionError("bug"))), "USD", "EUR", ON, "reference") == (
            "because an FX provider failed: ZeroDivisionError: bug")
    assert "FX rate provider failed for USD->EUR on 2026-11-30 (reference): ZeroDivisionError: bug" in caplog.text
    assert "Traceback" in caplog.text  # a bug: where it is matters


def test_a_provider_failing_on_every_request_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    hooks = manager(Answer(EcbRatesError("/x/eurofxref-hist.csv, line 3: USD rate '1.0.1' is not ...")))
    with caplog.at_level(logging.ERROR, logger="payhub.fx"):
        for day in range(1, 26):  # every pass of the daemon asks again, for each held reward's date
            assert find_rate(hooks, "USD", "EUR", date(2026, 3, day), "reference") == (
                "because an FX provider failed: EcbRatesError: /x/eurofxref-hist.csv, line 3: USD rate '1.0.1' is "
                "not ...")
    [record] = caplog.records
    assert record.getMessage() == (
        "FX rate provider failed for USD->EUR on 2026-03-01 (reference): EcbRatesError: /x/eurofxref-hist.csv, "
        "line 3: USD rate '1.0.1' is not ...; no rate (this failure is logged again in 60s at the earliest)")
    assert not record.exc_info  # payhub's own error says it all: no traceback
    hooks.hook.payhub_fx_rate.get_hookimpls()[0].plugin.result = EcbRatesError("/x/eurofxref-hist.csv: empty")
    with caplog.at_level(logging.ERROR, logger="payhub.fx"):
        find_rate(hooks, "USD", "EUR", ON, "reference")  # another failure: logged at once
    assert len(caplog.records) == 2 and "empty" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(("amount", "rate", "quote", "expected"), [
    ("100.00", "162.805", "JPY", "16281"),  # 16280.5 rounds half up
    ("-100.00", "162.805", "JPY", "-16281"),  # and away from zero for a clawback
    ("10.00", "0.8107353782", "GBP", "8.11"),
    ("1234.56", "0.3768", "BHD", "465.182"),  # 465.18221
    ("0.01", "0.0001", "EUR", "0.00"),
    ("123456789012345678901234567890.12", "1.2345678901", "USD", "152415787529492467652949246765.29"),
])
def test_convert_rounds_once_to_the_quote_minor_units(amount: str, rate: str, quote: str, expected: str) -> None:
    fx = FxRate("XXX", quote, Decimal(rate), "test", ON)
    result = convert(Decimal(amount), fx)
    assert result == Decimal(expected)
    assert str(result) == expected


def test_convert_refuses_a_float_or_nan() -> None:
    with pytest.raises(ValueError, match="not a finite Decimal"):
        convert(1.5, GOOD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a finite Decimal"):
        convert(Decimal("NaN"), GOOD)


CURRENCIES = ["EUR", "USD", "JPY", "GBP", "ISK"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amount=st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=False,
                       allow_infinity=False, places=6),
    base=st.sampled_from(CURRENCIES),
    quote=st.sampled_from(CURRENCIES),
    on=st.dates(min_value=date(2026, 11, 26), max_value=date(2026, 12, 28)),
)
def test_converted_amounts_never_have_more_decimals_than_the_quote_currency(
    hist: EcbRates, amount: Decimal, base: str, quote: str, on: date
) -> None:
    hooks = new_plugin_manager()
    hooks.register(hist)
    rate = find_rate(hooks, base, quote, on, "reference")
    if isinstance(rate, str):
        return
    converted = convert(amount, rate)
    exponent = converted.as_tuple().exponent
    assert isinstance(exponent, int) and -exponent <= minor_units(quote)
    with localcontext() as ctx:
        ctx.prec = 60
        assert abs(converted - amount * rate.rate) <= Decimal(1).scaleb(-minor_units(quote)) / 2
