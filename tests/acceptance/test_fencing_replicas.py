"""Two ``payhub run`` replicas on one PostgreSQL database; one freezes (SIGSTOP) in the middle of a send.

Both replicas start together. The rail is a ledger in a SQLite file shared by both processes, whose provider drops
a repeated idempotency key (it answers it as a replay). Its first send freezes its own process with SIGSTOP, like a
GC pause far longer than the lease, before the request reaches the provider; call that replica A, the other B.
Meanwhile B waits out the lease, takes the payouts over, looks their keys up (not received), sends them again with
the same keys and records them paid. Then A is continued: its send has timed out, so it would record the payouts'
outcome as unknown over ``paid``; that stale write is dropped and logged. Last, A's abandoned request reaches the
provider, which sees the keys again. The books: every payout paid once, recorded paid once, never regressed, and
``payhub audit verify`` passes.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import audit_log, payouts, rewards

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # three CLI processes start: about 20 s

PAYHUB = shutil.which("payhub", path=str(Path(sys.executable).parent)) or shutil.which("payhub") or "payhub"
LEASE_SECONDS = 2.5
PAYEES = 3

RAIL = '''
import os
import signal
import sqlite3
import time
from pathlib import Path

from payhub.api import ConfigPath, Outcome, PluginSettings, Rail, RailCapabilities, RailResult


class FreezingLedgerSettings(PluginSettings):
    path: ConfigPath  # the provider's ledger
    marker: ConfigPath  # written with the process id by the send that freezes
    gate: ConfigPath  # the frozen request reaches the provider once this file exists


class FreezingLedger(Rail):
    """Pays at once and drops a repeated key (a replay); the first send ever freezes its process (SIGSTOP)."""

    settings_model = FreezingLedgerSettings

    def __init__(self, name, settings):
        super().__init__(name, settings)
        db = self._db()
        db.execute("CREATE TABLE IF NOT EXISTS calls (n INTEGER PRIMARY KEY, pid INTEGER, keys TEXT, at REAL)")
        db.execute("CREATE TABLE IF NOT EXISTS paid (key TEXT PRIMARY KEY, pid INTEGER, at REAL)")
        db.execute("CREATE TABLE IF NOT EXISTS replays (key TEXT, pid INTEGER, at REAL)")
        db.close()

    def _db(self):
        return sqlite3.connect(self.settings.path, timeout=30, isolation_level=None)

    @property
    def capabilities(self):
        return RailCapabilities(lookup=True, dedup_field="key", max_batch=50)

    def send(self, instructions):
        keys = [i.idempotency_key for i in instructions]
        db = self._db()
        try:
            call = db.execute("INSERT INTO calls (pid, keys, at) VALUES (?, ?, ?)",
                              (os.getpid(), " ".join(keys), time.time())).lastrowid
        finally:
            db.close()
        if call == 1:
            Path(self.settings.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)  # frozen mid-call until the test sends SIGCONT
            deadline = time.monotonic() + 60
            while not Path(self.settings.gate).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            for key in keys:
                if db.execute("SELECT 1 FROM paid WHERE key = ?", (key,)).fetchone():
                    db.execute("INSERT INTO replays VALUES (?, ?, ?)", (key, os.getpid(), time.time()))
                else:
                    db.execute("INSERT INTO paid VALUES (?, ?, ?)", (key, os.getpid(), time.time()))
            db.execute("COMMIT")
        finally:
            db.close()
        return [RailResult(key, Outcome.PAID, "ledger-" + key[-8:]) for key in keys]

    def lookup(self, keys):
        db = self._db()
        try:
            found = {row[0] for row in db.execute(
                f"SELECT key FROM paid WHERE key IN ({','.join('?' * len(keys))})", list(keys))}
        finally:
            db.close()
        return {k: RailResult(k, Outcome.PAID, "ledger-" + k[-8:]) if k in found else None for k in keys}
'''

CONFIG = """\
[database]
url = "{db_url}"
lease_seconds = {lease}

[daemon]
idle_seconds = 0.05
plugin_timeout_seconds = 1

[log]
level = "INFO"

[payees]
file = "payees.csv"

[sources.crm]
plugin = "file"
path = "events.csv"
poll_interval_seconds = 0.2

[programs.bonus]
calculator = "flat"
amount = "5"
currency = "USD"

[rails.ledger]
plugin = "freezing_ledger"
path = "ledger.sqlite"
marker = "frozen"
gate = "gate"
timeout_seconds = 1
lookup_settle_seconds = 0  # "not found" is trusted at once: the ledger drops a replayed key
max_attempts = 5
retry_initial_seconds = 0.01
retry_max_seconds = 0.05

[routing]
default_rail = "ledger"
"""


def write_plugin(root: Path) -> Path:
    """A distribution of its own holding the freezing ledger rail; return the directory to put on the path."""
    dist = root / "payhub_fencing_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-fencing-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[payhub.rails]\nfreezing_ledger = payhub_fencing_rail:FreezingLedger\n")
    (root / "payhub_fencing_rail.py").write_text(RAIL)
    return root


def wait_for(what: str, condition: Callable[[], bool], timeout: float, *logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in logs if p.exists())
            pytest.fail(f"timed out waiting for {what}\n{shown}")
        time.sleep(0.02)


def stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_replica_frozen_past_its_lease_mid_send_writes_nothing(db_url: str, subprocess_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    began = time.monotonic()
    (tmp_path / "payees.csv").write_text("id,name,country\n" + "".join(
        f"p{i},Partner {i},US\n" for i in range(PAYEES)))
    (tmp_path / "events.csv").write_text("id,type,occurred_at,payee_id,amount,currency,object_type\n" + "".join(
        f"006{i:07d},deal_won,2026-10-01T12:00:00Z,p{i},100.00,USD,opportunity\n" for i in range(PAYEES)))
    (tmp_path / "payhub.toml").write_text(CONFIG.format(db_url=db_url, lease=LEASE_SECONDS))
    env = dict(subprocess_env)
    env["PYTHONPATH"] = os.pathsep.join([str(write_plugin(tmp_path / "site")), env["PYTHONPATH"]])
    env["PAYHUB_CONFIG"] = str(tmp_path / "payhub.toml")

    def payhub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PAYHUB, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    engine.dispose()
    procs: list[subprocess.Popen[bytes]] = []

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("w") as fh:
            proc = subprocess.Popen([PAYHUB, "run", "--no-progress"], env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=fh)
        procs.append(proc)
        return proc

    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")  # the test only reads

    def statuses() -> Counter[str]:
        with engine.connect() as conn:
            return Counter(conn.execute(select(payouts.c.status)).scalars())

    try:
        started = [start(tmp_path / f"replica-{n}.log") for n in (1, 2)]
        logs = [tmp_path / f"replica-{n}.log" for n in (1, 2)]
        marker = tmp_path / "frozen"
        wait_for("a replica to freeze in its send", lambda: marker.exists() and stopped(int(marker.read_text())),
                 60, *logs)
        frozen_at = time.monotonic()
        a, b = sorted(started, key=lambda proc: proc.pid != int(marker.read_text()))
        log_a, log_b = logs[started.index(a)], logs[started.index(b)]
        assert a.pid == int(marker.read_text())
        with engine.connect() as conn:
            rows = conn.execute(select(payouts.c.status, payouts.c.lease_owner)).all()
        assert len(rows) == PAYEES and {r.status for r in rows} == {"sending"}
        assert all(f":{a.pid}:" in r.lease_owner for r in rows)  # A holds them, mid-send

        wait_for("replica B to take the payouts over and pay them", lambda: statuses() == {"paid": PAYEES}, 60,
                 log_a, log_b)
        assert a.poll() is None and stopped(a.pid)
        frozen_for = time.monotonic() - frozen_at
        assert frozen_for > LEASE_SECONDS

        os.kill(a.pid, signal.SIGCONT)
        wait_for("replica A to drop its stale writes",
                 lambda: log_a.read_text().count("stale write dropped") >= PAYEES, 30, log_a)
        (tmp_path / "gate").touch()  # A's abandoned request reaches the provider at last
        ledger = sqlite3.connect(tmp_path / "ledger.sqlite")
        try:
            wait_for("A's request to reach the provider",
                     lambda: ledger.execute("SELECT count(*) FROM replays").fetchone()[0] == PAYEES, 30, log_a)
            paid = dict(ledger.execute("SELECT key, pid FROM paid").fetchall())
            replays = Counter(k for k, in ledger.execute("SELECT key FROM replays"))
            calls = ledger.execute("SELECT pid, keys FROM calls ORDER BY n").fetchall()
        finally:
            ledger.close()
        time.sleep(0.5)  # A works a few more passes after waking
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
        for proc in (a, b):
            assert proc.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with engine.connect() as conn:
            rows = conn.execute(select(payouts).order_by(payouts.c.id)).all()
            reward_rows = conn.execute(select(rewards.c.status, rewards.c.payout_id)).all()
            entries = conn.execute(select(audit_log.c.action, audit_log.c.subject_id, audit_log.c.origin)
                                   .where(audit_log.c.subject_type == "payout").order_by(audit_log.c.seq)).all()
        engine.dispose()

    keys = {r.idempotency_key for r in rows}
    # the provider: each key paid once, by B; A's frozen request arrived afterwards and was a replay
    assert paid == dict.fromkeys(keys, b.pid)
    assert replays == Counter(dict.fromkeys(keys, 1))
    assert calls[0][0] == a.pid and set(calls[0][1].split()) == keys  # the frozen call came first
    # payhub: every payout paid, once, never regressed; the stale "unknown" was never written
    assert [(r.status, r.attempts, r.lease_owner) for r in rows] == [("paid", 2, None)] * PAYEES
    assert {tuple(r) for r in reward_rows} == {("paid", r.id) for r in rows}
    for row in rows:
        trail = [(action, origin) for action, subject, origin in entries if subject == str(row.id)]
        actions = [action for action, _ in trail]
        assert actions == ["payout.created", "payout.sending", "payout.lookup", "payout.sending", "payout.paid"], trail
        assert f":{a.pid}" in trail[1][1] and all(f":{b.pid}" in origin for _, origin in trail[2:])
    dropped = [line for line in log_a.read_text().splitlines() if "stale write dropped" in line]
    assert len(dropped) == PAYEES and all("WARNING" in line and "(unknown)" in line for line in dropped), dropped
    for log in (log_a, log_b):
        assert "Traceback" not in log.read_text(), log.read_text()
    verified = payhub("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    print(f"\ntwo replicas, A frozen {frozen_for:.1f}s (lease {LEASE_SECONDS}s) mid-send: {PAYEES} payouts paid "
          f"once, {len(dropped)} stale writes dropped; {time.monotonic() - began:.1f}s in all")
