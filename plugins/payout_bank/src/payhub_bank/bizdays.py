"""Business days of the payment systems: TARGET (T2) for SEPA in euro, the Federal Reserve for ACH in US dollars.

Holidays come from the ``holidays`` package (financial calendars ``XECB`` and ``XFED``).
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

CALENDARS = {"EUR": "XECB", "USD": "XFED"}


@lru_cache(maxsize=64)
def _closed(calendar: str, year: int) -> frozenset[date]:
    import holidays  # here: importing it takes a while, and a rail that never counts business days needs none

    return frozenset(holidays.financial_holidays(calendar, years=year))


def is_business_day(day: date, currency: str) -> bool:
    """Whether the payment system of ``currency`` settles on ``day``."""
    return day.weekday() < 5 and day not in _closed(CALENDARS[currency], day.year)


def business_day(today: date, offset: int, currency: str) -> date:
    """The ``offset``-th business day after ``today`` (``0``: today if it is one, else the next one)."""
    day = today
    if offset == 0:
        while not is_business_day(day, currency):
            day += timedelta(days=1)
        return day
    counted = 0
    while counted < offset:
        day += timedelta(days=1)
        if is_business_day(day, currency):
            counted += 1
    return day


def business_days_between(start: date, end: date, currency: str) -> int:
    """How many business days lie after ``start`` up to and including ``end`` (0 when ``end <= start``)."""
    count, day = 0, start
    while day < end:
        day += timedelta(days=1)
        if is_business_day(day, currency):
            count += 1
    return count
