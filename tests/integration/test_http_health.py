"""``/healthz`` and ``/readyz`` through httpx's ASGI transport, on SQLite and PostgreSQL: readiness answers 503 and
names the failing check for each condition (database unreachable, schema behind, failed hook plugin, source failed
permanently, the worker waiting out a database outage), and the probes are neither audited nor need a token."""

from __future__ import annotations

import socket
import sqlite3
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from cli_helpers import migrated, sql, write_config
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from payhub.api import PermanentSourceError, TransientSourceError
from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.http.app import create_app
from payhub.http.probes import reader_engine, reading
from payhub.pipeline.ingest import poll
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.testing import FakeSource
from payhub.worker import Worker

BASE = """
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [rails.r]
    plugin = "fake"
    [routing]
    default_rail = "r"
"""
MakeRuntime = Callable[..., Runtime]
CHECKS = ["database", "schema", "sources", "hooks", "sends", "database_outage"]


def get(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 52000))
        async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
            return await client.get(path, headers=headers)

    return anyio.run(call)


def readiness(app: FastAPI) -> tuple[int, dict[str, tuple[bool, str]]]:
    """The status of ``/readyz`` and its checks by name: (ok, detail)."""
    answer = get(app, "/readyz")
    body = answer.json()
    assert [c["name"] for c in body["checks"]] == CHECKS
    assert body["status"] == ("ready" if answer.status_code == 200 else "not ready")
    return answer.status_code, {c["name"]: (c["ok"], c["detail"]) for c in body["checks"]}


def failing(checks: dict[str, tuple[bool, str]]) -> set[str]:
    return {name for name, (ok, _detail) in checks.items() if not ok}


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_healthz_answers_without_a_database(tmp_path: Path) -> None:
    rt = Runtime(load_settings(write_config(tmp_path, f"sqlite:///{tmp_path / 'none.db'}", "")))
    try:
        answer = get(create_app(rt), "/healthz")
        assert (answer.status_code, answer.json()) == (200, {"status": "alive"})
    finally:
        rt.close()


def test_ready_without_token_and_not_audited(make_runtime: MakeRuntime, db_url: str) -> None:
    rt = make_runtime(BASE)
    poll(rt, "s")
    app = create_app(rt)
    head = sql(db_url, "SELECT seq FROM audit_head")
    status, checks = readiness(app)
    assert status == 200, checks
    assert failing(checks) == set()
    assert checks["schema"][1] == f"at revision {migrate.head_revision()}"
    assert checks["database_outage"][1] == "no worker in this process (payhub serve)"
    assert get(app, "/readyz", {"Authorization": "Bearer phk_wrong"}).status_code == 200  # a token is not looked at
    assert get(app, "/metrics").status_code == 200
    assert sql(db_url, "SELECT seq FROM audit_head") == head  # probes write no audit entry


def test_schema_behind(make_runtime: MakeRuntime, db_url: str) -> None:
    rt = make_runtime(BASE, migrate_db=False)
    sql(db_url, "SELECT 1")  # the database exists (a SQLite file is created), without tables
    app = create_app(rt)
    status, checks = readiness(app)
    assert (status, failing(checks)) == (503, {"schema", "sources"}), checks
    assert checks["schema"][1] == (f"the database is empty (no payhub tables) but this payhub needs revision "
                                   f"{migrate.head_revision()}; run `payhub db upgrade`")
    assert checks["sources"][1].startswith("cannot be checked: ")
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0005")
    finally:
        engine.dispose()
    status, checks = readiness(app)
    assert (status, failing(checks)) == (503, {"schema"}), checks
    assert checks["schema"][1] == (f"the database is at revision 0005 but this payhub needs revision "
                                   f"{migrate.head_revision()}; run `payhub db upgrade`")
    migrated(db_url)
    assert readiness(app)[0] == 200


def test_failed_hook_plugin(make_runtime: MakeRuntime) -> None:
    rt = make_runtime(BASE + "[hooks.misspelt]\n")
    status, checks = readiness(create_app(rt))
    assert (status, failing(checks)) == (503, {"hooks"}), checks
    assert checks["hooks"][1].startswith("no payout is sent while a hook plugin has failed: misspelt: failed to "
                                         "register")


def test_source_failed_permanently(make_runtime: MakeRuntime) -> None:
    rt = make_runtime(BASE)
    source = rt.plugins.sources["s"]
    assert isinstance(source, FakeSource)
    app = create_app(rt)
    source.error = TransientSourceError("CRM busy (503)")
    poll(rt, "s")
    status, checks = readiness(app)
    assert status == 200, checks  # a passing error is retried on the next poll: still ready
    assert checks["sources"] == (True, "1 configured, none failed permanently")
    source.error = PermanentSourceError("credentials refused (401)")
    poll(rt, "s")
    status, checks = readiness(app)
    assert (status, failing(checks)) == (503, {"sources"}), checks
    detail = checks["sources"][1]
    assert detail.startswith("failed permanently (polled again after a restart, once fixed): s: ")
    assert "credentials refused (401)" in detail


def test_source_no_longer_configured_does_not_count(make_runtime: MakeRuntime, db_url: str) -> None:
    rt = make_runtime(BASE)
    source = rt.plugins.sources["s"]
    assert isinstance(source, FakeSource)
    source.error = PermanentSourceError("credentials refused (401)")
    poll(rt, "s")
    sql(db_url, "UPDATE sources SET name = 'old' WHERE name = 's'")
    status, checks = readiness(create_app(rt))
    assert status == 200, checks


def test_postgres_connection_lost_between_probes(make_runtime: MakeRuntime, db_url: str) -> None:
    """The probes keep one PostgreSQL connection; one the server dropped (a restart, a failover) is replaced."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite probes connect afresh")
    app = create_app(make_runtime(BASE))
    assert readiness(app)[0] == 200
    sql(db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    status, checks = readiness(app)
    assert status == 200, checks


def test_statement_timeout_outlives_a_failed_read(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has no statement timeout")
    engine = reader_engine(db_url)
    try:
        with reading(engine, 2) as conn:
            with pytest.raises(DBAPIError):
                conn.exec_driver_sql("SELECT * FROM no_such_table")
            conn.rollback()
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "2s"
    finally:
        engine.dispose()


def test_postgres_unreachable(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/payhub"
    rt = Runtime(load_settings(write_config(tmp_path, url, "")))
    try:
        status, checks = readiness(create_app(rt))
    finally:
        rt.close()
    assert (status, failing(checks)) == (503, {"database", "schema", "sources"}), checks
    assert checks["database"][1].startswith("unreachable: OperationalError: ")
    assert checks["schema"][1] == "not checked: the database is unreachable"


def test_sqlite_file_missing_is_not_created(tmp_path: Path) -> None:
    database = tmp_path / "payhub.db"
    rt = Runtime(load_settings(write_config(tmp_path, f"sqlite:///{database}", "")))
    try:
        status, checks = readiness(create_app(rt))
    finally:
        rt.close()
    assert (status, failing(checks)) == (503, {"database", "schema", "sources"}), checks
    assert checks["database"][1] == f"unreachable: FileNotFoundError: the database file {database} does not exist"
    assert not database.exists()


def _waiting_worker(rt: Runtime) -> tuple[Worker, threading.Thread]:
    """A worker starting in a thread, waiting out the database outage (until ``rt.stop_event``)."""
    worker = Worker(rt)
    thread = threading.Thread(target=worker.start_waiting, daemon=True)
    thread.start()
    wait_for(lambda: worker.waiting, "the worker to wait for the database")
    return worker, thread


OUTAGE_SETTINGS = """
    [daemon]
    db_retry_initial_seconds = 0.01
    db_retry_max_seconds = 0.05
"""


def test_worker_waiting_for_postgres(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/payhub"
    rt = Runtime(load_settings(write_config(tmp_path, url, OUTAGE_SETTINGS)))
    worker, thread = _waiting_worker(rt)
    try:
        status, checks = readiness(create_app(rt, worker))
    finally:
        rt.stop_event.set()
        thread.join(10)
        worker.stop()
        rt.close()
    assert (status, failing(checks)) == (503, {"database", "schema", "sources", "database_outage"}), checks
    assert checks["database_outage"][1].startswith("the worker has been waiting for the database for ")


def test_worker_waiting_for_a_locked_sqlite_file(tmp_path: Path) -> None:
    """SQLite locked by another process: the probes still read (they take no write lock), so only the worker's
    outage fails; once the lock is gone and the worker has started, payhub is ready."""
    database = tmp_path / "payhub.db"
    url = f"sqlite:///{database}"
    migrated(url)
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "{url}"\nsqlite_busy_timeout_seconds = 0.05\n'
                      + textwrap.dedent(OUTAGE_SETTINGS))
    rt = Runtime(load_settings(config))
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held as another process would
    worker: Worker | None = None
    thread: threading.Thread | None = None
    try:
        worker, thread = _waiting_worker(rt)
        app = create_app(rt, worker)
        status, checks = readiness(app)
        assert (status, failing(checks)) == (503, {"database_outage"}), checks
        holder.execute("ROLLBACK")
        thread.join(20)
        assert not thread.is_alive() and not worker.waiting
        status, checks = readiness(app)
        assert status == 200, checks
        assert checks["database_outage"] == (True, "the worker reaches the database")
    finally:
        holder.close()
        rt.stop_event.set()
        if thread is not None:
            thread.join(10)
        if worker is not None:
            worker.stop()
        rt.close()
