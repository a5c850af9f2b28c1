"""Which database errors the daemon waits out (transient faults) and which stop it, with real errors from SQLite
and PostgreSQL; the worker's wait loop; and the bounds of the outage settings."""

from __future__ import annotations

import logging
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from payhub.cli import fail_cleanly
from payhub.db.engine import make_engine
from payhub.db.faults import describe, is_transient
from payhub.errors import ConfigError
from payhub.settings import Settings, load_settings
from payhub.worker import Worker


def _error(engine: sa.Engine, sql: str) -> BaseException:
    """The exception ``sql`` raises on ``engine``."""
    with pytest.raises(sa_exc.SQLAlchemyError) as info, engine.begin() as conn:
        conn.execute(sa.text(sql))
    return info.value


def _locked_error(path: Path) -> BaseException:
    """A real "database is locked": another connection holds the write lock past a 0.05 s busy timeout."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    engine = make_engine(f"sqlite:///{path}", sqlite_busy_timeout=0.05)
    try:
        with pytest.raises(sa_exc.OperationalError) as info, engine.begin():
            pass
        return info.value
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()


def test_sqlite_errors(tmp_path: Path) -> None:
    locked = _locked_error(tmp_path / "x.db")
    assert is_transient(locked) and "database is locked" in describe(locked)
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1, 'a')"))
        for sql in ("INSERT INTO t VALUES (1, 'b')",  # IntegrityError: unique
                    "INSERT INTO t VALUES (2, NULL)",  # IntegrityError: not null
                    "SELECT * FROM missing",  # OperationalError, but an SQL error: no such table
                    "SELEC 1"):  # OperationalError: syntax
            assert not is_transient(_error(engine, sql)), sql
    finally:
        engine.dispose()
    assert not is_transient(ValueError("database is locked"))  # not a database error at all


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_postgres_refusing_connections_is_transient() -> None:
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/payhub")
    try:
        with pytest.raises(sa_exc.OperationalError) as info, engine.connect():
            pass
    finally:
        engine.dispose()
    assert is_transient(info.value) and "refused" in describe(info.value)


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgres_errors(db_url: str) -> None:
    engine = make_engine(db_url)
    killer = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR(3))"))
            conn.execute(sa.text("INSERT INTO t VALUES (1, 'a')"))
        data_errors = {"INSERT INTO t VALUES (1, 'b')": sa_exc.IntegrityError,
                       "INSERT INTO t VALUES (2, 'long')": sa_exc.DataError,
                       "SELECT 1/0": sa_exc.DataError,
                       "SELECT * FROM missing": sa_exc.ProgrammingError}
        for sql, kind in data_errors.items():
            error = _error(engine, sql)
            assert isinstance(error, kind) and not is_transient(error), sql
        # The server ends the session (as on a restart or failover): the connection is lost mid-transaction.
        with pytest.raises(sa_exc.DBAPIError) as info, engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with killer.begin() as other:
                other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.execute(sa.text("SELECT 1"))
        assert is_transient(info.value), describe(info.value)
        # A transaction cancelled for a conflict with another (serialization failure) is worth doing again.
        with pytest.raises(sa_exc.OperationalError) as info, engine.connect() as conn:
            conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            conn.execute(sa.text("SELECT v FROM t WHERE id = 1")).all()
            with killer.begin() as other:
                other.execute(sa.text("UPDATE t SET v = 'c' WHERE id = 1"))
            conn.execute(sa.text("UPDATE t SET v = 'd' WHERE id = 1"))
        assert is_transient(info.value) and "could not serialize" in describe(info.value)
    finally:
        engine.dispose()
        killer.dispose()


class _Pass:
    """Stands in for one pass of the pipeline: raises the given errors in turn, then stops the worker."""

    def __init__(self, worker: Worker, errors: list[BaseException]) -> None:
        self.worker, self.errors, self.calls = worker, errors, 0

    def __call__(self, force: bool) -> bool:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.worker.rt.stop_event.set()
        return True


@pytest.fixture
def worker(make_runtime: Callable[..., Any]) -> Worker:
    rt = make_runtime("""
        [daemon]
        db_retry_initial_seconds = 0.01
        db_retry_max_seconds = 0.02
        db_outage_log_seconds = 1
    """)
    return Worker(rt)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_worker_waits_out_transient_faults(worker: Worker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    locked = _locked_error(tmp_path / "other.db")
    fake = _Pass(worker, [locked, locked, locked])
    worker._pass = fake  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="payhub.worker"):
        worker.run_forever()
    assert fake.calls == 4
    mine = [r for r in caplog.records if r.name == "payhub.worker"]
    warnings = [r.getMessage() for r in mine if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "database unavailable: OperationalError: database is locked" in warnings[0]
    assert any("database available again" in r.getMessage() and r.levelno == logging.INFO for r in mine)
    assert not worker.waiting


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_worker_does_not_loop_on_a_data_error(worker: Worker) -> None:
    engine = worker.rt.engine
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    duplicate = _error(engine, "INSERT INTO t VALUES (1)")
    fake = _Pass(worker, [duplicate])
    worker._pass = fake  # type: ignore[method-assign]
    with pytest.raises(sa_exc.IntegrityError):
        worker.run_forever()
    assert fake.calls == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_stop_during_an_outage_ends_the_wait(worker: Worker, tmp_path: Path) -> None:
    locked = _locked_error(tmp_path / "other.db")

    class Forever(_Pass):
        def __call__(self, force: bool) -> bool:
            self.calls += 1
            if self.calls == 3:
                self.worker.rt.stop_event.set()  # as the signal handler does
            raise locked

    fake = Forever(worker, [])
    worker._pass = fake  # type: ignore[method-assign]
    worker.run_forever()  # returns: stopped, not failed
    assert fake.calls == 3


@pytest.mark.parametrize(("body", "key"), [
    ("[daemon]\ndb_retry_initial_seconds = 5\ndb_retry_max_seconds = 1\n", "daemon.db_retry_max_seconds"),
    ("[daemon]\ndb_retry_max_seconds = inf\n", "daemon.db_retry_max_seconds"),
    ("[daemon]\ndb_retry_initial_seconds = 0\n", "daemon.db_retry_initial_seconds"),
    ("[daemon]\ndb_outage_log_seconds = nan\n", "daemon.db_outage_log_seconds"),
    ("[database]\nsqlite_busy_timeout_seconds = -1\n", "database.sqlite_busy_timeout_seconds"),
    ("[database]\nsqlite_busy_timeout_seconds = 1e308\n", "database.sqlite_busy_timeout_seconds"),
])
def test_outage_settings_are_bounded(tmp_path: Path, body: str, key: str) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert [k for k, _message in info.value.problems] == [key]


def test_outage_settings_defaults() -> None:
    settings = Settings()
    assert settings.database.sqlite_busy_timeout_seconds == 30
    assert (settings.daemon.db_retry_initial_seconds, settings.daemon.db_retry_max_seconds,
            settings.daemon.db_outage_log_seconds) == (1.0, 30.0, 60.0)


@pytest.mark.parametrize("fault", [
    sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
    sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed"), connection_invalidated=True),
    sa_exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"),
])
def test_commands_report_an_unavailable_database_in_one_line(fault: Exception,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    @fail_cleanly
    def command() -> None:
        raise fault

    with pytest.raises(SystemExit) as stopped:
        command()
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("database unavailable: ") and "Traceback" not in err and "SELECT" not in err
