"""schema.bind_time gives the driver exactly what SQLAlchemy binds for a UTC time column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, text
from sqlalchemy.dialects import postgresql

from payhub.db.schema import UTCDateTime, bind_time

MOMENTS = [datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 1, 6, 0, 0, 250, tzinfo=UTC),
           datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
           datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=-5)))]


@pytest.mark.parametrize("moment", MOMENTS)
def test_sqlite_text_equals_what_sqlalchemy_stores(moment: datetime) -> None:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=1, at=moment))
        stored = conn.execute(text("SELECT at FROM t")).scalar_one()
        assert bind_time(conn.dialect)(moment) == stored
        assert bind_time(conn.dialect)(None) is None


def test_postgresql_gets_the_instant_in_utc() -> None:
    moment = MOMENTS[-1]
    bound = bind_time(postgresql.psycopg.dialect())(moment)
    assert bound == moment and bound.utcoffset() == timedelta(0)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        bind_time(create_engine("sqlite://").dialect)(datetime(2026, 1, 1))
