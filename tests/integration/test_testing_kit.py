"""The plugin author's kit, ``payhub.testing``: ``throwaway_database`` makes a new, empty SQLite or PostgreSQL
database per block and drops it after; ``invoke_cli`` runs the command line in-process and leaves the process as
it found it; ``write_distribution`` writes a distribution whose plugins payhub loads by name."""

from __future__ import annotations

import json
import logging
import re
import signal
from pathlib import Path
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa

from payhub.testing import (
    PG_URL_VARIABLE,
    DatabaseUnavailable,
    invoke_cli,
    postgres_server_url,
    throwaway_database,
    write_distribution,
)

UNREACHABLE = r"PostgreSQL not reachable at .*127\.0\.0\.1:1/test"


def _server_or_skip() -> str:
    server = postgres_server_url()
    engine = sa.create_engine(server)
    try:
        with engine.connect():
            return server
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {server}: {exc}")
    finally:
        engine.dispose()


def _databases(server: str) -> set[str]:
    engine = sa.create_engine(server)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()


def test_sqlite_is_a_file_in_the_directory(tmp_path: Path) -> None:
    with throwaway_database("sqlite", tmp_path) as url:
        assert url == f"sqlite:///{tmp_path / 'payhub.db'}"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        engine.dispose()
    assert (tmp_path / "payhub.db").exists()


@pytest.mark.postgres
def test_postgres_is_new_and_empty_and_dropped_with_its_connections_still_open(tmp_path: Path) -> None:
    server = _server_or_skip()
    with throwaway_database("postgres", tmp_path) as url, throwaway_database("postgres", tmp_path) as other:
        name = sa.make_url(url).database
        assert name and url != other and name in _databases(server)
        engine = sa.create_engine(url)
        conn = engine.connect()
        assert sa.inspect(conn).get_table_names() == []
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        conn.commit()
    try:
        assert name not in _databases(server)
        assert sa.make_url(other).database not in _databases(server)
    finally:
        conn.invalidate()
        engine.dispose()


def test_an_unreachable_server_raises_before_the_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PG_URL_VARIABLE, "postgresql+psycopg://postgres@127.0.0.1:1/test")
    entered = False
    with pytest.raises(DatabaseUnavailable, match=UNREACHABLE), throwaway_database("postgres", tmp_path):
        entered = True
    assert not entered


def test_an_unreachable_server_is_reported_to_unavailable_instead(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PG_URL_VARIABLE, "postgresql+psycopg://postgres@127.0.0.1:1/test")
    reasons: list[str] = []

    class Skipped(Exception):
        pass

    def unavailable(reason: str) -> NoReturn:
        reasons.append(reason)
        raise Skipped

    with pytest.raises(Skipped), throwaway_database("postgres", tmp_path, unavailable):
        pass
    assert len(reasons) == 1 and re.match(UNREACHABLE, reasons[0])


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    kind: Any = "mysql"
    with pytest.raises(ValueError, match="unknown database kind 'mysql'"), throwaway_database(kind, tmp_path):
        pass


def test_invoke_cli_runs_the_daemon_and_restores_logging_and_signal_handlers(tmp_path: Path) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n[log]\nlevel = "DEBUG"\n')
    root = logging.getLogger()
    before = (root.handlers[:], root.level, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    assert invoke_cli("-c", str(config), "db", "upgrade").exit_code == 0
    result = invoke_cli("-c", str(config), "run", "--once", "--no-progress", env={"PAYHUB_LOG__FORMAT": "json"})
    assert result.exit_code == 0, result.output
    assert '"level": "INFO"' in result.stderr  # the settings and the environment were applied during the call
    assert (root.handlers, root.level, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_write_distribution_is_found_by_entry_point_with_its_name_and_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "from payhub.testing import FakeRail as Kit\n"
    site = write_distribution(tmp_path / "site", "payhub-kit-check", "[payhub.rails]\nkit = payhub_kit_check:Kit\n",
                              version="3.1", modules={"payhub_kit_check": module})
    assert site == tmp_path / "site"
    assert sorted(p.name for p in site.iterdir()) == ["payhub_kit_check-3.1.dist-info", "payhub_kit_check.py"]
    monkeypatch.syspath_prepend(str(site))
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n[rails.k]\nplugin = "kit"\n')
    result = invoke_cli("-c", str(config), "plugins", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    [listed] = [row for row in json.loads(result.stdout) if row["section"] == "k"]
    assert (listed["distribution"], listed["version"], listed["state"]) == ("payhub-kit-check", "3.1", "loaded")
