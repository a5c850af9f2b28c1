"""The ``ecb_rates`` hook plugin: FX rates from the ECB's euro foreign exchange reference rates, read from a file.

It reads a local copy (never the network) of either file the European Central Bank publishes:

* the daily file ``eurofxref.csv`` (in ``eurofxref.zip``): a header ``Date, USD, JPY, ...`` and one row
  ``20 February 2026, 1.1767, 182.63, ...``, cells separated by ``", "``, each line ending with a separator;
* the historical file ``eurofxref-hist.csv`` (in ``eurofxref-hist.zip``): a header ``Date,USD,JPY,...`` and one
  row per publication day, newest first, ``2026-02-20,1.1767,182.63,...``, ``N/A`` where a currency was not
  quoted that day, each line ending with a comma.

Both give units of the currency per 1 EUR. Rows may come in any order; dates are ISO (``2026-02-20``) or
``DD Month YYYY`` (English month names); blank lines and a UTF-8 byte order mark are ignored; anything else that
is not a positive plain decimal number or ``N/A`` (an empty cell, a short row, a second row for one date) is an
error naming the file and the line.

A rate for ``on`` comes from the latest publication dated ``on`` or before, if it is at most ``max_age_days``
old and every day after it up to ``on`` is a TARGET closing day (weekends, 1 January, Good Friday, Easter Monday,
1 May, 25 and 26 December, and the ECB's few additional closing days, from the ``holidays`` package's ECB
calendar). A TARGET business day without a row, inside the file or past its newest row, is a rate missing from
the file (or not published yet): the plugin answers None rather than an older rate. A date before the oldest row
has no rate. A currency quoted ``N/A`` on that publication has no rate; the plugin does not look further back
for it.

Cross rates go through the euro: 1 ``base`` = rate(``quote``) / rate(``base``) ``quote``, with EUR = 1. Every
rate returned, direct ones included, is computed in Decimal and rounded to 10 significant digits with
ROUND_HALF_UP (``CROSS_CONTEXT``); the ECB publishes fewer digits than that, so EUR->X is exactly the published
figure. The relative error of any other rate is below 5e-10. ``base == quote`` is answered with exactly 1; a
currency the file's header does not name has no rate. Only requests whose ``rate_type`` equals the ``rate_type``
setting are answered; others are left to other providers.

The file is read at start-up and again whenever its modification time, size or inode changes (replace it
atomically: download to a temporary file, then rename). A file that cannot be read or parsed, at start-up or
later, does not stop the plugin: it is logged at ERROR (once for each new problem), and every lookup raises
:class:`EcbRatesError` naming the file and the problem until a readable file replaces it; the rates of an earlier
file are never used again. payhub counts that as no rate and holds the rewards that needed one, with the error as
the reason; payouts that need no conversion are not affected.
"""

from __future__ import annotations

import bisect
import csv
import io
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import holidays
from pydantic import Field

from payhub.api import ConfigPath, FxRate, PluginSettings, hookimpl
from payhub.errors import PayhubError

log = logging.getLogger(__name__)

CROSS_CONTEXT = Context(prec=10, rounding=ROUND_HALF_UP)
"""The precision of every rate this plugin returns: 10 significant digits, ROUND_HALF_UP."""

MONTHS = {
    name: number
    for number, name in enumerate(
        ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
         "november", "december"),
        start=1,
    )
}
_LONG_DATE = re.compile(r"(\d{1,2}) ([A-Za-z]+) (\d{4})")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RATE = re.compile(r"\d+(\.\d+)?|\.\d+")
_CURRENCY = re.compile(r"[A-Z]{3}")
MISSING = "N/A"  # the historical file's mark for a currency not quoted that day
EUR = "EUR"


class EcbRatesError(PayhubError):
    """The rates file cannot be read or is not in an ECB reference rates format; the message names file and line."""


class EcbRatesSettings(PluginSettings):
    path: ConfigPath
    max_age_days: int = Field(
        4, ge=0, le=366, description="Use a rate published at most this many days before the date.")
    rate_type: str = Field("reference", min_length=1, description="Answer only requests for this rate type.")


@dataclass(frozen=True, slots=True)
class RateTable:
    """The rates of one file: ``rows[d][currency]`` units per 1 EUR, only the currencies quoted on ``d``."""

    file: Path
    dates: tuple[date, ...]  # ascending
    rows: dict[date, dict[str, Decimal]]
    currencies: frozenset[str]

    def publication(self, on: date, max_age_days: int) -> date | None:
        """The publication date whose rates apply on ``on`` (see the module docstring), or None."""
        index = bisect.bisect_right(self.dates, on)
        if index == 0:
            return None
        published = self.dates[index - 1]
        if (on - published).days > max_age_days:
            return None
        if not all(target_closed(day) for day in _days_after(published, on)):
            return None  # a TARGET business day without a row: its rate is missing from the file
        return published

    def rate(self, base: str, quote: str, on: date, max_age_days: int) -> tuple[Decimal, date] | None:
        """1 ``base`` in ``quote`` and the publication date it comes from, or None."""
        known = self.currencies | {EUR}
        if base not in known or quote not in known:
            return None
        published = self.publication(on, max_age_days)
        if published is None:
            return None
        row = self.rows[published]
        base_per_eur = Decimal(1) if base == EUR else row.get(base)
        quote_per_eur = Decimal(1) if quote == EUR else row.get(quote)
        if base_per_eur is None or quote_per_eur is None:
            return None  # N/A on that publication
        return CROSS_CONTEXT.divide(quote_per_eur, base_per_eur), published


def _days_after(start: date, end: date) -> Iterable[date]:
    """The days in (``start``, ``end``]."""
    for offset in range(1, (end - start).days + 1):
        yield start + timedelta(days=offset)


@lru_cache(maxsize=64)
def _target_holidays(year: int) -> frozenset[date]:
    """The TARGET closing days of ``year`` that fall on weekdays: the ``holidays`` package's ECB calendar."""
    return frozenset(holidays.financial_holidays("XECB", years=year))


def target_closed(day: date) -> bool:
    """True on TARGET closing days, when the ECB publishes no reference rates."""
    return day.weekday() >= 5 or day in _target_holidays(day.year)


def _parse_date(text: str) -> date:
    match = _LONG_DATE.fullmatch(text)
    try:
        if _ISO_DATE.fullmatch(text):
            return date.fromisoformat(text)
        if match and match.group(2).lower() in MONTHS:
            return date(int(match.group(3)), MONTHS[match.group(2).lower()], int(match.group(1)))
    except ValueError as exc:
        raise ValueError(f"date {text!r}: {exc}") from None
    raise ValueError(f"date {text!r} is neither YYYY-MM-DD nor like '01 December 2026'")


def _trim(cells: list[str]) -> list[str]:
    """Cells without surrounding spaces and without the empty cells the trailing separator leaves."""
    stripped = [cell.strip() for cell in cells]
    while stripped and not stripped[-1]:
        stripped.pop()
    return stripped


def parse_rates(file: Path) -> RateTable:
    """Read an ECB reference rates CSV file (daily or historical); raise EcbRatesError naming file and line."""
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise EcbRatesError(f"{file}: cannot read the rates file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise EcbRatesError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: dict[date, dict[str, Decimal]] = {}
    line = 0
    try:
        for cells in reader:
            line = reader.line_num
            values = [cell.strip() for cell in cells]
            if not any(values):
                continue
            if header is None:
                header = _parse_header(_trim(values))
                continue
            day, rates = _parse_row(values, header)
            if day in rows:
                raise ValueError(f"a second row for {day.isoformat()}")
            rows[day] = rates
    except csv.Error as exc:
        raise EcbRatesError(f"{file}, line {reader.line_num}: {exc}") from exc
    except ValueError as exc:
        raise EcbRatesError(f"{file}, line {line}: {exc}") from None
    if header is None:
        raise EcbRatesError(f"{file}: empty, expected a header 'Date, USD, JPY, ...'")
    if not rows:
        raise EcbRatesError(f"{file}: no rates below the header")
    return RateTable(file, tuple(sorted(rows)), rows, frozenset(header))


def _parse_header(values: list[str]) -> list[str]:
    if values[0] != "Date":
        raise ValueError(f"expected a header starting with 'Date', found {values[0]!r}")
    currencies = values[1:]
    seen: set[str] = set()
    for code in currencies:
        if not _CURRENCY.fullmatch(code) or code == EUR:
            raise ValueError(f"header cell {code!r} is not a currency code quoted against the euro")
        if code in seen:
            raise ValueError(f"currency {code} appears twice in the header")
        seen.add(code)
    if not currencies:
        raise ValueError("the header names no currency")
    return currencies


def _parse_row(cells: list[str], header: list[str]) -> tuple[date, dict[str, Decimal]]:
    found = len(_trim(cells)) - 1
    if found > len(header):
        raise ValueError(f"{found} values for {len(header)} currencies")
    if len(cells) <= len(header):
        raise ValueError(f"{len(cells) - 1} values for {len(header)} currencies (a truncated line?)")
    day = _parse_date(cells[0])
    rates = {}
    for code, cell in zip(header, cells[1:], strict=False):
        if cell == MISSING:
            continue
        if not cell:
            raise ValueError(f"no {code} rate (an empty cell: a truncated line? the ECB writes N/A for none)")
        rate = Decimal(cell) if _RATE.fullmatch(cell) else Decimal(0)
        if rate <= 0:
            raise ValueError(f"{code} rate {cell!r} is not a positive decimal number or N/A")
        rates[code] = rate
    return day, rates


class EcbRates:
    """``payhub_fx_rate`` from a local ECB reference rates file; settings :class:`EcbRatesSettings`."""

    settings_model: ClassVar[type[PluginSettings]] = EcbRatesSettings

    def __init__(self, settings: EcbRatesSettings) -> None:
        self.settings = settings
        self.path: Path = settings.path
        self.source = f"ECB euro reference rates {self.path.name}"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None  # of the file last parsed, readable or not
        self._rates: RateTable | str = ""  # the file's rates, or why it cannot be read
        with self._lock:
            self._refresh()  # an unreadable file is logged, not fatal: lookups raise until it is fixed

    def table(self) -> RateTable:
        """The file's rates, read again if the file changed since the last read; raises EcbRatesError naming the
        file and the problem while it cannot be read or parsed."""
        with self._lock:
            self._refresh()
            if isinstance(self._rates, str):
                raise EcbRatesError(self._rates)  # a new exception each time, so no traceback grows
            return self._rates

    def _refresh(self) -> None:
        """Read the file if it changed since the last read (or cannot be found); log each change of state."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._stamp = None
            self._failed(f"{self.path}: cannot read the rates file: {exc.strerror or exc}")
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            table = parse_rates(self.path)
        except EcbRatesError as exc:
            self._failed(str(exc))
            return
        self._rates = table
        log.info("%s read: rates of %d days, %s to %s", self.path, len(table.dates), table.dates[0], table.dates[-1])

    def _failed(self, problem: str) -> None:
        """Record that the file cannot be read, logging the problem when it is new."""
        if problem != self._rates:
            log.error("%s; no FX rate is answered from it until a readable file replaces it", problem)
        self._rates = problem

    @hookimpl
    def payhub_fx_rate(self, base: str, quote: str, on: date, rate_type: str) -> FxRate | None:
        if rate_type != self.settings.rate_type:
            return None
        if base == quote:
            return FxRate(base, quote, Decimal(1), self.source, on)
        found = self.table().rate(base, quote, on, self.settings.max_age_days)
        if found is None:
            return None
        rate, published = found
        return FxRate(base, quote, rate, self.source, published)
