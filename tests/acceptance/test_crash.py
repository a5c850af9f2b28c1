"""Invariant 7: ``kill -9`` at any instant, then restart: nothing is lost, nothing is paid twice.

A real ``payhub run`` works a backlog of CRM events from a CSV file (two programs, so most events earn two rewards)
and pays through a ledger rail whose ledger is a SQLite file of its own, so it survives the kills and shows every
acceptance. The rail loses every few responses after accepting (an unknown outcome), is busy now and then, and
answers late, so kills also land between "the rail accepted" and "payhub recorded it".

The daemon is SIGKILLed, restarted, killed again, many times; more of the CRM export arrives between some kills, so
every stage keeps having work to be interrupted in. Each kill is aimed with a seeded random generator: at start-up
(a random fraction of the usual start-up time), anywhere (a random delay), or at a stage that still has work: the
test watches the committed state until the daemon is in that stage, then kills it after a random few milliseconds.
Then ``payhub run --once`` finishes, and the books must balance exactly. The state each kill left tells which stage
it interrupted; the tally is printed (``pytest -s``).

Bigger runs: ``PAYHUB_TEST_CRASH_ITERATIONS`` (default 50), ``PAYHUB_TEST_CRASH_EVENTS`` (default 2400),
``PAYHUB_TEST_CRASH_SEED``.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, func, select

from payhub.db.schema import attempts, calculations, events, payout_items, payouts, rewards
from payhub.money import from_minor, quantize, to_minor
from payhub.testing import LedgerRail

pytestmark = pytest.mark.slow

ITERATIONS = int(os.environ.get("PAYHUB_TEST_CRASH_ITERATIONS", "50"))
EVENTS = int(os.environ.get("PAYHUB_TEST_CRASH_EVENTS", "2400"))
SEED = int(os.environ.get("PAYHUB_TEST_CRASH_SEED", "7"))
LEASE_SECONDS = 2
PAYHUB = shutil.which("payhub", path=str(Path(sys.executable).parent)) or shutil.which("payhub") or "payhub"

# A ledger rail that answers late: a kill in that gap leaves a payout the rail accepted but payhub never recorded.
CRASH_RAIL = '''
import time

from payhub.testing import LedgerRail, LedgerRailSettings


class SlowAnswerSettings(LedgerRailSettings):
    answer_latency_seconds: float = 0.0


class SlowAnswerLedger(LedgerRail):
    settings_model = SlowAnswerSettings

    def send(self, instructions):
        try:
            return super().send(instructions)
        finally:
            time.sleep(self.settings.answer_latency_seconds)
'''

CONFIG = """\
[database]
url = "{db_url}"
batch_size = 50
lease_seconds = {lease}

[daemon]
idle_seconds = 0.05
plugin_timeout_seconds = 0.9

[log]
level = "INFO"

[payees]
file = "payees.csv"

[sources.crm]
plugin = "file"
path = "events.csv"
batch_size = 25
poll_interval_seconds = 0.1

[programs.pct]
calculator = "percentage"
percent = "10"
event_types = ["deal_won"]

[programs.bonus]
calculator = "flat"
amount = "5"
currency = "USD"

[rails.ledger]
plugin = "slow_answer_ledger"
path = "ledger.sqlite"
unknown_every = 5
retryable_every = 13
latency_seconds = 0.01
answer_latency_seconds = 0.02
max_attempts = 1000
retry_initial_seconds = 0.01
retry_max_seconds = 0.05
timeout_seconds = 0.9
settle_interval_seconds = 0.5

[routing]
default_rail = "ledger"
"""


@dataclass
class Backlog:
    """The CRM export: its lines (duplicates included) and what payhub must make of them."""

    lines: list[str]
    keys: list[str]  # the event key of each line
    valid: dict[str, list[tuple[str, str, Decimal, str]]]  # key -> [(program, payee, amount, currency)]
    invalid: set[str]


def make_backlog(n: int, payees: int, rng: random.Random) -> Backlog:
    """``n`` distinct events: won deals (two rewards), registrations (one), some malformed, plus re-sent lines."""
    lines: list[str] = []
    keys: list[str] = []
    valid: dict[str, list[tuple[str, str, Decimal, str]]] = {}
    invalid: set[str] = set()
    for i in range(n):
        payee = f"p{rng.randrange(payees):03d}"
        oid = f"006{i:07d}"
        if i % 4 == 3:
            kind, amount, currency = "deal_registered", "", ""
        else:
            kind = "deal_won"
            currency = rng.choice(["USD", "USD", "EUR", "JPY"])
            cents = rng.randrange(1, 10_000_000)
            amount = str(cents) if currency == "JPY" else f"{cents // 100}.{cents % 100:02d}"
        key = f"crm:opportunity:{oid}:{kind}"
        if i % 97 == 50:
            amount, currency, kind = "-10.00", "USD", "deal_won"  # negative: quarantined
            key = f"crm:opportunity:{oid}:{kind}"
            invalid.add(key)
        elif i % 89 == 40:
            payee = ""  # no payee: quarantined
            invalid.add(key)
        else:
            found = [("bonus", payee, Decimal("5.00"), "USD")]
            if kind == "deal_won":
                found.append(("pct", payee, quantize(Decimal(amount) * 10 / 100, currency), currency))
            valid[key] = found
        lines.append(f"{oid},{kind},2026-10-{1 + i % 28:02d}T12:00:00Z,{payee},{amount},{currency},opportunity\n")
        keys.append(key)
        if i % 40 == 39:  # the CRM sends an earlier record again
            j = rng.randrange(len(lines))
            lines.append(lines[j])
            keys.append(keys[j])
    return Backlog(lines, keys, valid, invalid)


def write_plugin(root: Path) -> Path:
    """A distribution of its own holding the slow-answer ledger rail; return the directory to put on the path."""
    dist = root / "payhub_crash_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-crash-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[payhub.rails]\nslow_answer_ledger = payhub_crash_rail:SlowAnswerLedger\n")
    (root / "payhub_crash_rail.py").write_text(CRASH_RAIL)
    return root


STAGES = ("ingest", "calculate", "schedule", "disburse")


def observe(conn: Connection, expected_events: int) -> str:
    """The first stage whose work the committed state shows unfinished (``sending``: a send is in flight)."""
    if conn.execute(select(func.count()).select_from(events)).scalar_one() < expected_events:
        return "ingest"
    if conn.execute(select(events.c.id).where(events.c.status == "ingested").limit(1)).first():
        return "calculate"
    if conn.execute(select(rewards.c.id).where(rewards.c.status == "pending").limit(1)).first():
        return "schedule"
    if conn.execute(select(payouts.c.id).where(payouts.c.status == "sending").limit(1)).first():
        return "sending"
    if conn.execute(select(payouts.c.id).where(payouts.c.status.not_in(("sent", "paid"))).limit(1)).first():
        return "disburse"
    return "idle"


def interrupted(conn: Connection, expected_events: int, ledger: Path) -> str:
    """What a kill interrupted, from the state it left; an in-flight send is told apart by the rail's ledger."""
    stage = observe(conn, expected_events)
    if stage == "disburse":
        return "disburse (between sends)"
    if stage == "sending":
        sending = set(conn.execute(select(payouts.c.idempotency_key).where(payouts.c.status == "sending")).scalars())
        if sending & set(accepted(ledger)):
            return "disburse (rail accepted, not yet recorded)"
        return "disburse (send in flight)"
    return stage


def accepted(ledger: Path) -> Counter[str]:
    """Acceptances per key on the rail's ledger (none before the rail first opened it)."""
    if not ledger.exists():
        return Counter()
    try:
        return LedgerRail.counts(ledger)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return Counter()


def pick_target(rng: random.Random, stage: str) -> str:
    """Where to aim the next kill: start-up, anywhere, or a stage that still has work (a send, for disburse)."""
    if rng.random() < 0.15:
        return "start-up"
    if stage == "idle" or rng.random() < 0.15:
        return "anywhere"
    reachable = ["sending" if s == "disburse" else s for s in STAGES[STAGES.index(
        "disburse" if stage == "sending" else stage):]]
    return reachable[0] if rng.random() < 0.5 else rng.choice(reachable)


def _aim(rng: random.Random, proc: subprocess.Popen[bytes], log_path: Path, target: str, conn: Connection,
         expected: int, start_times: list[float]) -> None:
    """Return at a seeded random instant in or near ``target``; fail if the daemon dies or does not start."""
    t0 = time.monotonic()

    def alive() -> None:
        assert proc.poll() is None, f"daemon exited with {proc.returncode}:\n{log_path.read_text()}"

    if target == "start-up":
        time.sleep(rng.uniform(0.05, 0.95) * (statistics.median(start_times) if start_times else 0.5))
        return alive()
    while "payhub started" not in log_path.read_text():
        alive()
        assert time.monotonic() - t0 < 60, f"daemon did not start:\n{log_path.read_text()}"
        time.sleep(0.01)
    start_times.append(time.monotonic() - t0)
    if target == "anywhere":
        time.sleep(math.exp(rng.uniform(math.log(0.01), math.log(1.0))))
        return alive()
    deadline = time.monotonic() + 3
    while observe(conn, expected) != target and time.monotonic() < deadline:
        alive()
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.05))
    alive()


def test_kill_9_at_random_instants(db_url: str, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    postgres = db_url.startswith("postgresql")
    payee_count = max(10, EVENTS // 25)
    backlog = make_backlog(EVENTS, payee_count, rng)
    (tmp_path / "payees.csv").write_text("id,name,country\n" + "".join(
        f"p{p:03d},Partner {p},US\n" for p in range(payee_count)))
    (tmp_path / "payhub.toml").write_text(CONFIG.format(db_url=db_url, lease=LEASE_SECONDS))
    ledger = tmp_path / "ledger.sqlite"
    env = dict(subprocess_env)
    env["PYTHONPATH"] = os.pathsep.join([str(write_plugin(tmp_path / "site")), env["PYTHONPATH"]])
    env["PAYHUB_CONFIG"] = str(tmp_path / "payhub.toml")
    logs = tmp_path / "logs"
    logs.mkdir()

    def payhub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PAYHUB, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    upgraded = payhub("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr

    # A third of the export is there from the start; the rest arrives in chunks over the first 80% of the kills.
    lines = backlog.lines
    initial = len(lines) // 3
    chunks = max(1, ITERATIONS // 4)
    arrivals = {round(ITERATIONS * 0.8 * j / chunks): initial + (len(lines) - initial) * j // chunks
                for j in range(1, chunks + 1)}
    csv = tmp_path / "events.csv"
    csv.write_text("id,type,occurred_at,payee_id,amount,currency,object_type\n" + "".join(lines[:initial]))
    written = initial

    # The test only reads, outside any transaction, so it never holds up the daemon.
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    stages: Counter[str] = Counter()
    start_times: list[float] = []
    began = time.monotonic()
    try:
        for i in range(ITERATIONS):
            if i in arrivals:
                with csv.open("a") as fh:
                    fh.writelines(lines[written:arrivals[i]])
                written = arrivals[i]
            expected = len(set(backlog.keys[:written]))
            with engine.connect() as conn:
                target = "start-up" if i == 0 else pick_target(rng, observe(conn, expected))
                log_path = logs / f"run-{i:03d}.log"
                with log_path.open("w") as log:
                    proc = subprocess.Popen([PAYHUB, "run", "--no-progress"], env=env, cwd=tmp_path,
                                            stdout=subprocess.DEVNULL, stderr=log)
                try:
                    _aim(rng, proc, log_path, target, conn, expected, start_times)
                finally:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                if "payhub started" in log_path.read_text():
                    stages[interrupted(conn, expected, ledger)] += 1
                else:
                    stages["start-up"] += 1
            twice = sorted(k for k, n in accepted(ledger).items() if n > 1)
            assert not twice, f"after kill {i + 1}: payouts accepted more than once by the rail: {twice[:3]}"
        killed_for = time.monotonic() - began
        print(f"\ncrash test on {'PostgreSQL' if postgres else 'SQLite'} (seed {SEED}): {ITERATIONS} kills in "
              f"{killed_for:.1f}s, median start-up {statistics.median(start_times or [0]):.2f}s")
        for stage, n in sorted(stages.items(), key=lambda item: -item[1]):
            print(f"  {n:4d} kills during {stage}")
        if ITERATIONS >= 50:  # the window that matters most for paying once must have been hit
            assert stages["disburse (send in flight)"] + stages["disburse (rail accepted, not yet recorded)"], stages

        if written < len(lines):
            with csv.open("a") as fh:
                fh.writelines(lines[written:])
        if postgres:  # leases of the last killed process must run out before anyone may take its work
            time.sleep(LEASE_SECONDS + 0.5)
        # One pass does what is due now; payouts backing off between attempts are due a moment later.
        finishing_runs, left = 0, "?"
        while left != "idle" and finishing_runs < 10:
            final = payhub("run", "--once", "--no-progress")
            assert final.returncode == 0, final.stderr
            finishing_runs += 1
            with engine.connect() as conn:
                left = observe(conn, EVENTS)
        tracebacks = [p.name for p in sorted(logs.iterdir()) if "Traceback" in p.read_text()]
        assert not tracebacks, f"daemon raised: see {tracebacks}"

        with engine.connect() as conn:
            _check_books(conn, backlog, ledger)
            lookups = dict(conn.execute(select(attempts.c.outcome, func.count()).where(attempts.c.kind == "lookup")
                                        .group_by(attempts.c.outcome)).all())
            sends = conn.execute(select(func.count()).where(attempts.c.kind == "send")).scalar_one()
            payout_count = conn.execute(select(func.count()).select_from(payouts)).scalar_one()
    finally:
        engine.dispose()

    verified = payhub("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    print(f"  books balance: {len(backlog.keys)} lines, {len(set(backlog.keys))} events, {payout_count} payouts, "
          f"{sends} send attempts, lookups by outcome {lookups}, {finishing_runs} final `run --once`; "
          f"total {time.monotonic() - began:.1f}s")


def _check_books(conn: Connection, backlog: Backlog, ledger: Path) -> None:
    """Every event once, every reward once, every payout sent and accepted once, every amount exact."""
    stored = dict(conn.execute(select(events.c.key, events.c.status)).all())
    assert len(stored) == len(set(backlog.keys)) == EVENTS, "events lost or duplicated"
    assert {k for k, s in stored.items() if s == "quarantined"} == backlog.invalid
    assert {k for k, s in stored.items() if s == "calculated"} == set(backlog.valid)

    key_of = dict(conn.execute(select(events.c.id, events.c.key)).all())
    per_calc = Counter((key_of[e], p) for e, p in conn.execute(select(calculations.c.event_id, calculations.c.program)))
    expected_pairs = {(key, program) for key, found in backlog.valid.items() for program, *_ in found}
    assert set(per_calc) == expected_pairs and set(per_calc.values()) == {1}

    reward_rows = conn.execute(select(rewards)).all()
    per_pair = Counter((key_of[r.event_id], r.program) for r in reward_rows)
    assert set(per_pair) == expected_pairs, "a (event, program) was not rewarded"
    assert set(per_pair.values()) == {1}, "a (event, program) was rewarded twice"
    assert len(reward_rows) == sum(len(found) for found in backlog.valid.values())
    expected = {(key, program): (payee, to_minor(amount, currency), currency)
                for key, found in backlog.valid.items() for program, payee, amount, currency in found}
    for r in reward_rows:
        assert (r.payee_id, r.amount_minor, r.currency) == expected[(key_of[r.event_id], r.program)]
        assert r.status == "sent" and r.payout_id is not None, f"reward {r.id} is {r.status}"

    items = conn.execute(select(payout_items)).all()
    assert Counter(i.reward_id for i in items) == Counter({r.id: 1 for r in reward_rows}), "a reward paid twice"
    assert {i.reward_id: i.payout_id for i in items} == {r.id: r.payout_id for r in reward_rows}
    by_payout: dict[int, list[int]] = {}
    for item in items:
        by_payout.setdefault(item.payout_id, []).append(item.amount_minor)

    accepted = LedgerRail.counts(ledger)
    twice = sorted(k for k, n in accepted.items() if n > 1)
    assert not twice, f"{len(twice)} payouts accepted more than once by the rail, e.g. {twice[:3]}"
    payout_rows = conn.execute(select(payouts)).all()
    assert {p.idempotency_key for p in payout_rows} == set(accepted), "ledger and payhub disagree on payouts"
    for p in payout_rows:
        assert p.status == "sent", f"payout {p.id} is {p.status}: {p.reason}"
        assert p.amount_minor == sum(by_payout[p.id]) and p.item_count == len(by_payout[p.id])

    paid = {p.idempotency_key: (from_minor(p.amount_minor, p.currency), p.currency) for p in payout_rows}
    assert _ledger_amounts(ledger) == paid, "the rail accepted other amounts than payhub recorded"


def _ledger_amounts(path: Path) -> dict[str, tuple[Decimal, str]]:
    """Amount and currency the ledger accepted per idempotency key."""
    db = sqlite3.connect(path)
    try:
        return {key: (Decimal(amount), currency) for key, amount, currency in
                db.execute("SELECT key, amount, currency FROM sends")}
    finally:
        db.close()
