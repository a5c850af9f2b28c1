"""``payhub.clock``: ISO 8601 in, aware UTC out; a wall time without offset takes a zone given as tzinfo or name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from payhub.api import InvalidRecord, isoformat, parse_instant


@pytest.mark.parametrize("zone", ["Europe/Berlin", ZoneInfo("Europe/Berlin")], ids=["name", "tzinfo"])
def test_a_wall_time_takes_the_default_zone_given_by_name_or_tzinfo(zone: str | ZoneInfo) -> None:
    assert parse_instant("2026-07-01T12:00:00", default_tz=zone) == datetime(2026, 7, 1, 10, tzinfo=UTC)
    assert parse_instant("2026-07-01T12:00:00+00:00", default_tz=zone) == datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert parse_instant(datetime(2026, 1, 1, 12), default_tz=zone) == datetime(2026, 1, 1, 11, tzinfo=UTC)


def test_a_fixed_offset_is_a_default_zone_too() -> None:
    east = timezone(timedelta(hours=3))
    assert parse_instant("2026-07-01T12:00:00", default_tz=east) == datetime(2026, 7, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize(("text", "utc"), [
    ("2026-03-29T02:30:00", datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),  # skipped: the offset before the change
    ("2026-10-25T02:30:00", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # repeated: the first of the two
])
def test_a_wall_time_in_a_dst_gap_or_fold_is_resolved_with_fold_0(text: str, utc: datetime) -> None:
    assert parse_instant(text, default_tz="Europe/Berlin") == utc


@pytest.mark.parametrize(("zone", "error", "message"), [
    ("Europe/Nowhere", ValueError, "'Europe/Nowhere' is not an IANA time zone"),
    ("../../etc/passwd", ValueError, "is not an IANA time zone"),
    ("", ValueError, "is not an IANA time zone"),
    (1, TypeError, "default_tz must be a tzinfo or an IANA time zone name, not int"),
])
def test_a_default_zone_that_is_not_one_is_refused_clearly(zone: object, error: type[Exception],
                                                           message: str) -> None:
    with pytest.raises(error, match=message):
        parse_instant("2026-07-01T12:00:00", default_tz=zone)  # type: ignore[arg-type]


def test_a_wall_time_without_a_default_zone_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="has no timezone offset"):
        parse_instant("2026-07-01T12:00:00")


def test_isoformat_takes_a_naive_datetime_as_utc() -> None:
    assert isoformat(datetime(2026, 1, 31, 9)) == "2026-01-31T09:00:00.000000Z"
    assert isoformat(datetime(2026, 1, 31, 10, tzinfo=ZoneInfo("Europe/Berlin"))) == "2026-01-31T09:00:00.000000Z"
