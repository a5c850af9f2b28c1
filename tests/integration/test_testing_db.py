"""payhub.testing's databases: a migrated database is a copy of a template migrated once per process, at this payhub's
revision, independent of every other copy, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from payhub.db import migrate
from payhub.db.engine import make_engine, sqlite_file
from payhub.testing import DatabaseKind, migrate_database, throwaway_database


def revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return migrate.current_revision(engine)
    finally:
        engine.dispose()


def write_a_table(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE scratch (n INTEGER)"))
    finally:
        engine.dispose()


def tables(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_migrated_copies_are_at_the_head_revision_and_independent(db_url: str, tmp_path: Path) -> None:
    kind: DatabaseKind = "sqlite" if db_url.startswith("sqlite") else "postgres"
    migrate_database(db_url)
    assert revision(db_url) == migrate.head_revision()
    write_a_table(db_url)
    (tmp_path / "other").mkdir()
    with throwaway_database(kind, tmp_path / "other", pytest.skip, migrated=True) as other:
        assert other != db_url
        assert revision(other) == migrate.head_revision()
        assert "events" in tables(other) and "scratch" not in tables(other)  # the first copy's table is its own


def test_a_new_database_is_copied_not_migrated_and_one_at_the_head_is_left_alone(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kind: DatabaseKind = "sqlite" if db_url.startswith("sqlite") else "postgres"
    migrate_database(db_url)  # the process's template exists from here on
    upgrades: list[object] = []
    monkeypatch.setattr(migrate, "upgrade", lambda *args, **kwargs: upgrades.append(args))
    migrate_database(db_url)  # already at the head
    (tmp_path / "new").mkdir()
    with throwaway_database(kind, tmp_path / "new", pytest.skip) as url:
        migrate_database(url)
        assert upgrades == []
        monkeypatch.undo()
        assert revision(url) == migrate.head_revision()


def test_a_copied_sqlite_file_is_private(tmp_path: Path) -> None:
    with throwaway_database("sqlite", tmp_path, migrated=True) as url:
        path = sqlite_file(url)
        assert path is not None
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 & ~0o040 == 0  # at most group-readable
        assert not os.path.exists(path + "-wal") or os.path.getsize(path + "-wal") == 0


@pytest.mark.postgres
def test_a_postgres_database_in_use_is_upgraded_in_place(tmp_path: Path) -> None:
    with throwaway_database("postgres", tmp_path, pytest.skip) as url:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as held:  # a connection the copy would have to cut
                migrate_database(url)
                assert held.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert revision(url) == migrate.head_revision()
        finally:
            engine.dispose()
