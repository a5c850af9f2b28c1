"""A database outage during ``payhub run``: the daemon waits it out, logs it, and finishes the work afterwards.

Real ``payhub run`` subprocesses against a real database:

* SQLite: another connection holds ``BEGIN EXCLUSIVE`` for ``PAYHUB_TEST_OUTAGE_SECONDS`` (default 3), far longer
  than the busy timeout, while events arrive.
* SQLite: the lock is taken right after the rail accepted a payout and before payhub records it, so the payout is
  left ``sending``: after the outage it is looked up on the rail, never sent twice.
* PostgreSQL: the daemon reaches the server through a TCP proxy on loopback that the test stops (connections
  refused, open connections cut) and restarts ``PAYHUB_TEST_OUTAGE_SECONDS`` later.
* SIGTERM during an outage stops the daemon at once; ``run --once`` on a locked or unreachable database exits 1
  with a one-line reason and no traceback.

Afterwards ``payhub audit verify`` passes, every event is rewarded once and the rail accepted every payout once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke, migrated
from click.testing import Result
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

from payhub.db.schema import attempts, events, payouts, rewards
from payhub.testing import LedgerRail

PAYHUB = shutil.which("payhub", path=str(Path(sys.executable).parent)) or shutil.which("payhub") or "payhub"
OUTAGE_SECONDS = float(os.environ.get("PAYHUB_TEST_OUTAGE_SECONDS", "3"))
HEADER = "id,type,occurred_at,payee_id,amount,currency,object_type\n"

CONFIG = """\
[database]
url = "{db_url}"
sqlite_busy_timeout_seconds = {busy}

[daemon]
idle_seconds = 0.05
db_retry_initial_seconds = 0.05
db_retry_max_seconds = 0.5
db_outage_log_seconds = 1

[payees]
file = "payees.csv"

[sources.crm]
plugin = "file"
path = "events.csv"
poll_interval_seconds = 0.1
settle_seconds = 0

[programs.bonus]
calculator = "flat"
amount = "5"
currency = "USD"

[rails.ledger]
plugin = "{rail}"
path = "ledger.sqlite"
{rail_settings}

[routing]
default_rail = "ledger"
"""

# A ledger rail that, once, locks the payhub database right after accepting a send: payhub cannot record the
# result, so the payout stays ``sending`` until the lock is released.
LOCKING_RAIL = '''
import sqlite3
import threading
import time
from pathlib import Path

from payhub.testing import LedgerRail, LedgerRailSettings


class LockingSettings(LedgerRailSettings):
    lock_database: str
    lock_seconds: float
    marker: str


class LockingLedger(LedgerRail):
    settings_model = LockingSettings

    def send(self, instructions):
        results = super().send(instructions)
        marker = Path(self.settings.marker)
        if not marker.exists():
            db = sqlite3.connect(self.settings.lock_database, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            db.execute("BEGIN EXCLUSIVE")
            marker.write_text(str(time.time()))

            def release():
                time.sleep(self.settings.lock_seconds)
                db.execute("ROLLBACK")
                db.close()

            threading.Thread(target=release, daemon=True).start()
        return results
'''


def _plugin_dir(root: Path) -> Path:
    dist = root / "payhub_outage_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-outage-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[payhub.rails]\nlocking_ledger = payhub_outage_rail:LockingLedger\n")
    (root / "payhub_outage_rail.py").write_text(LOCKING_RAIL)
    return root


class Daemon:
    """One ``payhub run`` subprocess in ``directory``, its log on a file."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.log = directory / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def payhub(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """A payhub command run in-process on the same settings."""
        return invoke("-c", str(self.directory / "payhub.toml"), *args, env=env)

    def start(self) -> None:
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([PAYHUB, "run", "--no-progress"], env=self.env, cwd=self.directory,
                                         stdout=subprocess.DEVNULL, stderr=log)

    def text(self) -> str:
        return self.log.read_text()

    def alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"daemon exited:\n{self.text()}"

    def wait_for(self, what: str, done: Callable[[], bool], timeout: float = 30) -> float:
        """Wait (checking the daemon stays up) until ``done()``; return how long it took."""
        began = time.monotonic()
        while not done():
            self.alive()
            assert time.monotonic() - began < timeout, f"timed out waiting for {what}:\n{self.text()}"
            time.sleep(0.05)
        return time.monotonic() - began

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; return the exit code and how long the daemon took to exit."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def setup(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[Callable[..., Daemon]]:
    """``setup(db_url, busy=…, rail=…)``: a migrated database, a payee file and a daemon ready to start."""
    made: list[Daemon] = []

    def factory(db_url: str, *, busy: float = 0.2, daemon_url: str | None = None, rail: str = "ledger",
                rail_settings: str = "") -> Daemon:
        env = dict(subprocess_env)
        env["PYTHONPATH"] = os.pathsep.join([str(_plugin_dir(tmp_path / "site")), env["PYTHONPATH"]])
        env["PAYHUB_CONFIG"] = str(tmp_path / "payhub.toml")
        (tmp_path / "payees.csv").write_text("id,name,country\n" + "".join(
            f"p{i},Partner {i},US\n" for i in range(3)))
        (tmp_path / "events.csv").write_text(HEADER)
        daemon = Daemon(tmp_path, env)
        migrated(db_url)
        (tmp_path / "payhub.toml").write_text(CONFIG.format(db_url=daemon_url or db_url, busy=busy, rail=rail,
                                                            rail_settings=rail_settings))
        made.append(daemon)
        return daemon

    yield factory
    for daemon in made:
        daemon.kill()


def _append_events(path: Path, start: int, count: int) -> None:
    with path.open("a") as fh:
        fh.writelines(f"006{i:07d},deal_won,2026-10-01T12:00:00Z,p{i % 3},100.00,USD,opportunity\n"
                      for i in range(start, start + count))


def _all_paid(engine: Engine, expected: int) -> Callable[[], bool]:
    """True once ``expected`` events are calculated and every reward and payout is sent."""

    def check() -> bool:
        with engine.connect() as conn:
            calculated = conn.execute(select(func.count()).where(events.c.status == "calculated")).scalar_one()
            unsent = conn.execute(select(func.count()).where(rewards.c.status != "sent")).scalar_one()
            open_payouts = conn.execute(select(func.count()).where(payouts.c.status != "sent")).scalar_one()
        return calculated == expected and unsent == 0 and open_payouts == 0

    return check


def _check_books(engine: Engine, daemon: Daemon, expected: int) -> None:
    """Every event rewarded once, every reward in one payout, every payout accepted once by the rail."""
    with engine.connect() as conn:
        per_event = conn.execute(select(rewards.c.event_id, func.count()).group_by(rewards.c.event_id)).all()
        keys = set(conn.execute(select(payouts.c.idempotency_key)).scalars())
    assert len(per_event) == expected and {n for _e, n in per_event} == {1}, "an event rewarded twice or never"
    accepted = LedgerRail.counts(daemon.directory / "ledger.sqlite")
    assert set(accepted) == keys and set(accepted.values()) == {1}, f"payouts accepted twice or never: {accepted}"
    verified = daemon.payhub("audit", "verify", env={"PAYHUB_DATABASE__URL": str(engine.url.render_as_string(
        hide_password=False))})
    assert verified.exit_code == 0, verified.output
    assert "Traceback" not in daemon.text()


def _hold_exclusive(path: Path) -> sqlite3.Connection:
    """Another process's write lock on the SQLite database, held until rolled back."""
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN EXCLUSIVE")
    return db


def test_sqlite_lock_is_waited_out(setup: Callable[..., Daemon], tmp_path: Path) -> None:
    database = tmp_path / "payhub.db"
    daemon = setup(f"sqlite:///{database}")
    engine = create_engine(f"sqlite:///{database}")
    try:
        _append_events(tmp_path / "events.csv", 0, 6)
        daemon.start()
        daemon.wait_for("the first events to be paid", _all_paid(engine, 6))

        lock = _hold_exclusive(database)
        locked_at = time.monotonic()
        _append_events(tmp_path / "events.csv", 6, 6)  # arrive while the database is locked
        patience = OUTAGE_SECONDS + 60  # the first warning comes after one busy timeout (settable for longer runs)
        daemon.wait_for("the outage warning", lambda: "database unavailable" in daemon.text(), patience)
        daemon.wait_for("a reminder", lambda: "database still unavailable after" in daemon.text(), patience)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - locked_at)))  # well past the 0.2 s busy timeout
        daemon.alive()
        lock.execute("ROLLBACK")
        lock.close()
        held = time.monotonic() - locked_at
        resumed = daemon.wait_for("the new events to be paid", _all_paid(engine, 12))
        code, took = daemon.terminate()
    finally:
        engine.dispose()
    log = daemon.text()
    assert "WARNING" in log and "database is locked" in log
    assert "database available again after" in log
    assert log.count("database unavailable:") == 1, "the outage is announced once, then only reminded"
    assert code == 0 and took < 5
    _check_books(create_engine(f"sqlite:///{database}"), daemon, 12)
    print(f"\nSQLite locked for {held:.1f}s; the daemon finished the backlog {resumed:.1f}s after the release")


def test_payout_caught_between_rail_and_record_is_looked_up(setup: Callable[..., Daemon], tmp_path: Path) -> None:
    database = tmp_path / "payhub.db"
    daemon = setup(f"sqlite:///{database}", rail="locking_ledger", rail_settings=(
        f'lock_database = "{database}"\nlock_seconds = 1.5\nmarker = "{tmp_path / "locked"}"'))
    engine = create_engine(f"sqlite:///{database}")
    try:
        _append_events(tmp_path / "events.csv", 0, 6)
        daemon.start()
        daemon.wait_for("the rail to lock the database", (tmp_path / "locked").exists)
        with engine.connect() as conn:  # readers are not blocked: the payout is still recorded as in flight
            states = set(conn.execute(select(payouts.c.status)).scalars())
        assert states == {"sending"}, states
        daemon.wait_for("the payouts to be recorded", _all_paid(engine, 6))
        with engine.connect() as conn:
            lookups = conn.execute(select(func.count()).where(attempts.c.kind == "lookup")).scalar_one()
            sends = conn.execute(select(func.count()).where(attempts.c.kind == "send")).scalar_one()
        code, _took = daemon.terminate()
        _check_books(engine, daemon, 6)
    finally:
        engine.dispose()
    assert code == 0
    assert lookups >= 1, "the payout left in flight was not looked up"
    assert "database unavailable" in daemon.text() and "database available again" in daemon.text()
    print(f"\n{sends} send attempts and {lookups} lookups for the payouts caught by the outage")


def test_sigterm_during_an_outage_stops_promptly(setup: Callable[..., Daemon], tmp_path: Path) -> None:
    database = tmp_path / "payhub.db"
    # A busy timeout of 4 s: when the signal comes, the worker is blocked inside SQLite's busy wait (its second
    # try), which would hold up a daemon whose signal handler ran only between statements for about 3.5 s more.
    daemon = setup(f"sqlite:///{database}", busy=4)
    daemon.start()
    daemon.wait_for("start-up", lambda: "payhub started" in daemon.text())
    lock = _hold_exclusive(database)
    try:
        _append_events(tmp_path / "events.csv", 0, 3)
        daemon.wait_for("the outage warning", lambda: "database unavailable" in daemon.text(), timeout=60)
        time.sleep(0.5)  # past the short backoff: into the next try's busy wait
        code, took = daemon.terminate()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert code == 0
    assert took < 2.5, f"took {took:.1f}s to stop"
    assert "while waiting for the database" in daemon.text()
    print(f"\nstopped {took:.2f}s after SIGTERM during an outage")


def test_run_once_on_a_locked_database_exits_1(setup: Callable[..., Daemon], tmp_path: Path) -> None:
    database = tmp_path / "payhub.db"
    daemon = setup(f"sqlite:///{database}")
    _append_events(tmp_path / "events.csv", 0, 3)
    lock = _hold_exclusive(database)
    try:
        result = daemon.payhub("run", "--once", "--no-progress")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert result.exit_code == 1, result.output
    assert "database unavailable" in result.stderr and "database is locked" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_once_on_an_unreachable_database_exits_1(setup: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon = setup(f"sqlite:///{tmp_path / 'payhub.db'}")
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/payhub"
    result = daemon.payhub("run", "--once", "--no-progress", env={"PAYHUB_DATABASE__URL": unreachable})
    assert result.exit_code == 1, result.output
    assert "database unavailable" in result.stderr and "refused" in result.stderr


class TcpProxy:
    """Forwards a loopback port to the database server; :meth:`stop` refuses new connections and cuts open ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> None:
        self._run(self._start())

    def stop(self) -> None:
        self._run(self._stop())

    def close(self) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._open:
            writer.transport.abort()
        self._open.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open -= {writer, up_writer}


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgres_outage_is_waited_out(setup: Callable[..., Daemon], db_url: str, tmp_path: Path) -> None:
    url = make_url(db_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    daemon = setup(db_url, daemon_url=through_proxy)
    engine = create_engine(db_url)
    try:
        _append_events(tmp_path / "events.csv", 0, 6)
        daemon.start()
        daemon.wait_for("the first events to be paid", _all_paid(engine, 6))

        proxy.stop()  # connections refused, open ones cut
        down_at = time.monotonic()
        _append_events(tmp_path / "events.csv", 6, 6)
        daemon.wait_for("the outage warning", lambda: "database unavailable" in daemon.text())
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            daemon.alive()
            time.sleep(0.1)
        proxy.start()
        down = time.monotonic() - down_at
        resumed = daemon.wait_for("the new events to be paid", _all_paid(engine, 12), timeout=60)
        code, _took = daemon.terminate()
        _check_books(engine, daemon, 12)
    finally:
        engine.dispose()
        proxy.close()
    log = daemon.text()
    assert code == 0
    assert "database still unavailable after" in log and "database available again after" in log
    assert log.count("database unavailable:") == 1
    print(f"\nPostgreSQL unreachable for {down:.1f}s; the daemon finished the backlog {resumed:.1f}s after it came "
          "back")
