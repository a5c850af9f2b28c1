"""KPI periods (payhub.kpis.Period): the four forms, their bounds in UTC, and clear refusals of everything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from payhub.errors import InvalidRecord
from payhub.kpis import MAX_DAYS, Period, PeriodError


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("text", "start", "end", "label"), [
    ("2026-Q4", utc(2026, 10, 1), utc(2027, 1, 1), "2026-Q4"),
    ("2026-q1", utc(2026, 1, 1), utc(2026, 4, 1), "2026-Q1"),
    ("2026-Q2", utc(2026, 4, 1), utc(2026, 7, 1), "2026-Q2"),
    ("2026-11", utc(2026, 11, 1), utc(2026, 12, 1), "2026-11"),
    ("2026-12", utc(2026, 12, 1), utc(2027, 1, 1), "2026-12"),
    ("2028-02", utc(2028, 2, 1), utc(2028, 3, 1), "2028-02"),
    ("2026", utc(2026, 1, 1), utc(2027, 1, 1), "2026"),
    (" 2026-Q4 ", utc(2026, 10, 1), utc(2027, 1, 1), "2026-Q4"),
    ("2026-10-01..2026-12-31", utc(2026, 10, 1), utc(2027, 1, 1), "2026-10-01..2026-12-31"),
    ("2026-11-15..2026-11-15", utc(2026, 11, 15), utc(2026, 11, 16), "2026-11-15..2026-11-15"),
    ("2024-02-29..2024-03-01", utc(2024, 2, 29), utc(2024, 3, 2), "2024-02-29..2024-03-01"),
    ("9998", utc(9998, 1, 1), utc(9999, 1, 1), "9998"),
    ("1970-01", utc(1970, 1, 1), utc(1970, 2, 1), "1970-01"),
])
def test_forms_and_bounds(text: str, start: datetime, end: datetime, label: str) -> None:
    period = Period.parse(text)
    assert (period.start, period.end, period.label) == (start, end, label)
    assert period.start.tzinfo is UTC and period.end.tzinfo is UTC
    assert Period.parse(period.label) == period  # the label reads back as the same period


@pytest.mark.parametrize(("text", "says"), [
    ("", "missing"),
    ("   ", "missing"),
    ("2026-Q5", "Q1 to Q4"),
    ("2026-Q0", "Q1 to Q4"),
    ("2026-13", "01 to 12"),
    ("2026-00", "01 to 12"),
    ("1969", "between 1970 and 9998"),
    ("9999", "between 1970 and 9998"),
    ("0000-Q1", "between 1970 and 9998"),
    ("9999-12-01..9999-12-31", "between 1970 and 9998"),
    ("2026-02-30..2026-03-01", "not a date of the calendar"),
    ("2026-12-31..2026-10-01", "ends before it starts"),
    ("2000-01-01..2026-12-31", f"at most {MAX_DAYS} days"),
    ("Q4 2026", "not one of the forms"),
    ("2026-Q4; drop table", "not one of the forms"),
    ("２０２６", "not one of the forms"),  # full-width digits are not ASCII digits
    ("2026-10-01 .. 2026-12-31", "not one of the forms"),
    ("26-Q4", "not one of the forms"),
    ("2026-1", "not one of the forms"),
    ("<script>alert(1)</script>", "not one of the forms"),
    ("2026" * 100, "too long"),
])
def test_refusals_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(PeriodError) as info:
        Period.parse(text)
    assert says in str(info.value)
    if says in ("missing", "not one of the forms", "too long"):  # what is accepted, when the form is wrong
        assert "2026-Q4, 2026-11, 2026 or 2026-10-01..2026-12-31" in str(info.value)
    assert len(str(info.value)) < 200  # a huge input is not echoed whole
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidRecord)


@pytest.mark.parametrize("value", [None, 2026, b"2026-Q4"])
def test_only_text_is_read(value: object) -> None:
    with pytest.raises(PeriodError, match="text like"):
        Period.parse(value)


def test_longest_range_is_accepted() -> None:
    first = datetime(2020, 1, 1, tzinfo=UTC)
    last = first + timedelta(days=MAX_DAYS - 1)
    period = Period.parse(f"{first.date()}..{last.date()}")
    assert period.end - period.start == timedelta(days=MAX_DAYS)


def test_months_and_budget_labels_of_a_period() -> None:
    q4 = Period.parse("2026-Q4")
    assert q4.months() == ["2026-10", "2026-11", "2026-12"]
    assert q4.labels("month") == ["2026-10", "2026-11", "2026-12"]
    assert q4.labels("quarter") == ["2026-Q4"]
    assert q4.labels("year") == ["2026"]
    span = Period.parse("2026-11-20..2027-02-03")
    assert span.months() == ["2026-11", "2026-12", "2027-01", "2027-02"]
    assert span.labels("quarter") == ["2026-Q4", "2027-Q1"]
    assert span.labels("year") == ["2026", "2027"]
    assert Period.parse("2026-11").labels("quarter") == ["2026-Q4"]


def test_default_is_the_quarter_of_a_moment() -> None:
    assert Period.quarter_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)).label == "2026-Q4"
    assert Period.quarter_of(datetime(2027, 1, 1, tzinfo=UTC)).label == "2027-Q1"
