"""PostgreSQL: one and two payhub replicas (separate processes) draining the same backlog.

For each replica count a fresh database ``bench_pg_<pid>`` is created on ``opts.pg_url``'s server (dropped at the
end) and migrated with payhub's migrations; N ``deal_won`` events over 1,000 payees (percentage program, the
in-memory FakeRail as an ordinary ``payhub.rails`` plugin distribution) are ingested untimed, so the backlog is
events waiting to be calculated, as PgQueuer's backlog is jobs waiting to run (bench/pgqueuer_cmp.py). Then the
replicas are started as separate processes (``python -m bench.pg --replica DIR``: what ``payhub run --once`` does,
``Worker.start`` then ``Worker.run_once``, plus a dump of what its rail accepted). Each says ready after start-up;
the clock starts when all are told to go and stops when the last one's ``run_once`` returns, by which time every
reward must be sent.

Checks (a failure raises, never a fast figure): every event calculated, every reward and payout ``sent``, payouts
total the rewards, idempotency keys unique, and the replicas' rails together accepted every payout's key exactly once.
Settlement polls are left out (``settle_interval_seconds`` of an hour: each replica's FakeRail knows only its own
sends).

    python -m bench.pg [--events 20000] [--replicas 1,2] [--keep] [--profile] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.figures import CompareOptions, Figure, render_table

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
QUICK_EVENTS = 20_000
FULL_EVENTS = 100_000
PAYEES = 1_000
SOURCE = "crm"
RAIL = "fake"
RAIL_ENTRY_POINT = "bench_fake"
RATIO_TARGET = 1.6
VS_PGQUEUER_TARGET = 1.0


# ------------------------------------------------------------------------------------------------- server helpers


def loadavg() -> float:
    return os.getloadavg()[0]


def libpq_url(url: str, database: str) -> str:
    """``url`` (a SQLAlchemy URL) as a plain libpq URL for ``database``."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def admin_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return libpq_url(url, make_url(url).database or "postgres")


def sqlalchemy_url(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_database(url: str, name: str) -> None:
    """Create database ``name`` on ``url``'s server, dropping a leftover of the same name first."""
    import psycopg

    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------------------------------- inputs


def write_inputs(workdir: Path, url: str, events: int, payees: int = PAYEES, seed: int = 7) -> None:
    """Payees, events CSV, settings (database ``url``) and the FakeRail plugin distribution under ``workdir``."""
    rng = random.Random(seed)
    ids = [f"P{k:06d}" for k in range(payees)]
    with (workdir / "payees.csv").open("w", encoding="utf-8") as fh:
        fh.write("id,name,country,currency,email,account\n")
        for k, pid in enumerate(ids):
            fh.write(f"{pid},Partner {k},US,USD,p{k}@example.com,ACCT{k:08d}\n")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with (workdir / "deals.csv").open("w", encoding="utf-8") as fh:
        fh.write("id,type,occurred_at,payee_id,partner_id,amount,currency,product\n")
        for i in range(events):
            k = rng.randrange(payees)
            cents = rng.randrange(10_000, 5_000_000)
            moment = (base + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            fh.write(f"OPP{i:09d},deal_won,{moment},{ids[k]},PT{k:06d},{cents // 100}.{cents % 100:02d},USD,"
                     f"widget\n")
    (workdir / "payhub.toml").write_text(f"""\
[database]
url = "{url}"
batch_size = 2000

[payees]
file = "payees.csv"

[sources.{SOURCE}]
plugin = "file"
path = "deals.csv"
batch_size = 1000
settle_seconds = 0

[programs.partner_spiff]
calculator = "percentage"
percent = "2.5"

[rails.{RAIL}]
plugin = "{RAIL_ENTRY_POINT}"
max_batch = 100
settle_interval_seconds = 3600

[routing]
default_rail = "{RAIL}"
""")
    dist = workdir / "site" / "payhub_bench_pg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-bench-pg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[payhub.rails]\n{RAIL_ENTRY_POINT} = payhub.testing:FakeRail\n")


def _runtime(workdir: Path) -> Any:
    from payhub.runtime import Runtime
    from payhub.settings import load_settings

    site = str(workdir / "site")
    if site not in sys.path:
        sys.path.insert(0, site)
    os.chdir(workdir)
    rt = Runtime(load_settings(workdir / "payhub.toml"))
    rt.load_plugins()
    return rt


def prepare(workdir: Path, url: str, events: int) -> None:
    """Migrate the database and ingest the events (untimed): the backlog the replicas drain."""
    from payhub.db import migrate
    from payhub.db.engine import make_engine
    from payhub.payees import sync_payees
    from payhub.pipeline.ingest import poll_batches

    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    cwd = os.getcwd()
    rt = _runtime(workdir)
    try:
        sync_payees(rt)
        while True:
            n, more = poll_batches(rt, SOURCE)
            if not n and not more:
                break
    finally:
        rt.close()
        os.chdir(cwd)


# ------------------------------------------------------------------------------------------------- replicas


def _time_statements(engine: Any, totals: dict[str, list[float]]) -> None:
    """Sum the wall time and count of each statement (by its first 70 characters) on ``engine``."""
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        entry = totals.setdefault(" ".join(statement.split())[:70], [0.0, 0])
        entry[0] += time.perf_counter() - conn.info.pop("t0", time.perf_counter())
        entry[1] += 1


def replica(workdir: Path, profile: Path | None, sql_timing: bool = False) -> int:
    """A replica process: start a worker, say ready, wait for go, run once, print what it did as JSON."""
    import logging

    from payhub.worker import Worker

    conflicts: list[str] = []

    class _Conflicts(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "conflict" in record.getMessage():
                conflicts.append(record.getMessage()[:160])

    worker_log = logging.getLogger("payhub.worker")
    worker_log.setLevel(logging.INFO)
    worker_log.addHandler(_Conflicts())
    rt = _runtime(workdir)
    statements: dict[str, list[float]] = {}
    if sql_timing:
        _time_statements(rt.engine, statements)
    worker = Worker(rt)
    worker.start()
    print("ready", flush=True)
    sys.stdin.readline()
    t0, cpu0 = time.perf_counter(), time.process_time()
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        summary = worker.run_once()
        prof.disable()
        prof.dump_stats(profile)
    else:
        summary = worker.run_once()
    seconds, cpu, end = time.perf_counter() - t0, time.process_time() - cpu0, time.time()
    worker.stop()
    accepted = dict(rt.plugins.rails[RAIL].accepted)
    rt.close()
    top = dict(sorted(statements.items(), key=lambda kv: -kv[1][0])[:12])
    print(json.dumps({"seconds": seconds, "cpu": cpu, "end": end, "counts": summary.counts, "accepted": accepted,
                      "statements": top, "conflicts": len(conflicts), "conflict": conflicts[:1]}), flush=True)
    return 0


@dataclass
class Drain:
    """One drain: replicas, rewards sent, wall seconds (go → last exit), per-replica seconds/CPU/counts."""

    replicas: int
    rewards: int
    payouts: int
    seconds: float
    per_replica: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rewards / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        parts = ", ".join(f"{r['seconds']:.1f}s/cpu {r['cpu']:.1f}s/{r['counts'].get('calculated', 0):,} calc/"
                          f"{r.get('conflicts', 0)} conflicts" for r in self.per_replica)
        return (f"{self.replicas} replica(s): {self.rewards:,} rewards in {self.seconds:.1f}s = {self.rate:,.0f}/s "
                f"({self.payouts:,} payouts; {parts})")


def verify(url: str, events: int, accepted: Counter[str]) -> tuple[int, int]:
    """Raise unless the backlog was drained exactly once; return (rewards, payouts)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            def one(sql: str) -> Any:
                return conn.execute(text(sql)).scalar_one()

            by_status = {t: dict(conn.execute(text(f"SELECT status, count(*) FROM {t} GROUP BY status")).all())
                         for t in ("events", "rewards", "payouts")}
            rewards, payouts = one("SELECT count(*) FROM rewards"), one("SELECT count(*) FROM payouts")
            keys = set(conn.execute(text("SELECT idempotency_key FROM payouts")).scalars())
            reward_sum = one("SELECT coalesce(sum(amount_minor), 0) FROM rewards")
            payout_sum = one("SELECT coalesce(sum(amount_minor), 0) FROM payouts")
            item_sum = one("SELECT coalesce(sum(item_count), 0) FROM payouts")
    finally:
        engine.dispose()
    problems = []
    if by_status["events"] != {"calculated": events}:
        problems.append(f"events {by_status['events']}, expected {events} calculated")
    if by_status["rewards"] != {"sent": rewards} or rewards == 0:
        problems.append(f"rewards {by_status['rewards']}")
    if by_status["payouts"] != {"sent": payouts}:
        problems.append(f"payouts {by_status['payouts']}")
    if reward_sum != payout_sum or item_sum != rewards:
        problems.append(f"payouts total {payout_sum} in {item_sum} items; rewards {reward_sum} in {rewards}")
    if len(keys) != payouts:
        problems.append(f"{payouts} payouts but {len(keys)} distinct idempotency keys")
    if set(accepted) != keys or max(accepted.values(), default=0) != 1:
        twice = sum(1 for v in accepted.values() if v > 1)
        problems.append(f"rails accepted {len(accepted)} keys for {payouts} payouts, {twice} more than once")
    if problems:
        raise RuntimeError("PostgreSQL drain failed its checks: " + "; ".join(problems))
    return rewards, payouts


def drain(pg_url: str, events: int, replicas: int, *, keep: bool = False, profile: bool = False,
          watch: bool = False, sql_timing: bool = False) -> Drain:
    """Drain ``events`` with ``replicas`` replica processes on a fresh database; see the module docstring."""
    name = f"bench_pg_{os.getpid()}"
    url = sqlalchemy_url(pg_url, name)
    workdir = Path(tempfile.mkdtemp(prefix="payhub-bench-pg-"))
    create_database(pg_url, name)
    try:
        write_inputs(workdir, url, events)
        prepare(workdir, url, events)
        procs = []
        for i in range(replicas):
            cmd = [sys.executable, "-m", "bench.pg", "--replica", str(workdir)]
            if profile:
                cmd += ["--profile-out", str(workdir / f"replica{i}.prof")]
            if sql_timing:
                cmd += ["--sql-timing"]
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          cwd=Path(__file__).resolve().parent.parent))
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a replica failed to start")
        watcher = Watcher(libpq_url(pg_url, name)) if watch else None
        t0 = time.time()  # the replicas report when their run ended on the same clock
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        # Each replica's report (every key its rail accepted) outgrows a pipe's buffer: read them while they run, or
        # a replica blocks writing it and never exits.
        outs = [""] * len(procs)

        def drain(index: int, proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            outs[index] = proc.stdout.read()

        readers = [threading.Thread(target=drain, args=(i, proc), daemon=True) for i, proc in enumerate(procs)]
        for reader in readers:
            reader.start()
        if watcher is not None:
            watcher.run(procs)
        for reader, proc in zip(readers, procs, strict=True):
            reader.join()
            proc.wait()
        if any(proc.returncode for proc in procs):
            raise RuntimeError(f"a replica failed (exit {[p.returncode for p in procs]})")
        results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
        seconds = max(r["end"] for r in results) - t0
        accepted: Counter[str] = Counter()
        for result in results:
            accepted.update(result.pop("accepted"))
        rewards, payouts = verify(url, events, accepted)
        result = Drain(replicas, rewards, payouts, seconds, results,
                       watcher.summary() if watcher is not None else {})
        if profile:
            for i in range(replicas):
                target = Path(tempfile.gettempdir()) / f"bench-pg-r{replicas}-{i}.prof"
                shutil.copy(workdir / f"replica{i}.prof", target)
        return result
    finally:
        drop_database(pg_url, name)
        if keep:
            print(f"inputs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


class Watcher:
    """Samples pg_stat_activity every 50 ms while the replicas run: what their sessions wait on, and the CPU time of
    their server backends (read from /proc: the server must run on this host)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.samples: Counter[str] = Counter()
        self.n = 0
        self.commits = 0
        self.rollbacks = 0
        self.backend_cpu: dict[int, float] = {}  # server backend pid -> its CPU seconds, as last read

    def run(self, procs: list[subprocess.Popen[str]]) -> None:
        import psycopg

        stats = ("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            before = conn.execute(stats).fetchone() or (0, 0)
            while any(p.poll() is None for p in procs):
                self.n += 1
                for pid, state, kind, event, query in conn.execute(
                        "SELECT pid, state, wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND application_name <> 'watcher'"):
                    if state == "idle":
                        key = "idle (client side)"
                    elif state == "idle in transaction":
                        key = "idle in transaction (client side)"
                    elif kind is None:
                        key = "active on CPU"
                    else:
                        key = f"{kind}:{event}" + (f" | {query}" if kind == "Lock" else "")
                    self.samples[key] += 1
                    self.backend_cpu[pid] = max(self.backend_cpu.get(pid, 0.0), _cpu_seconds(pid))
                time.sleep(0.05)
            time.sleep(0.6)  # statistics reach pg_stat_database within PGSTAT_MIN_INTERVAL (1 s) of a backend's exit
            conn.execute("SELECT pg_stat_clear_snapshot()")
            after = conn.execute(stats).fetchone() or (0, 0)
        # less this watcher's own autocommit statements (one per sample, two snapshot clears)
        self.commits, self.rollbacks = after[0] - before[0] - self.n - 2, after[1] - before[1]

    def summary(self) -> dict[str, Any]:
        return {"samples": self.n, "commits": self.commits, "rollbacks": self.rollbacks,
                "server_cpu_s": round(sum(self.backend_cpu.values()), 2), "waits": dict(self.samples.most_common(12))}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 when it cannot be read: another host, gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------- figures


def measure(pg_url: str, events: int, replicas: tuple[int, ...] = (1, 2), **kw: Any) -> dict[int, Drain]:
    return {n: drain(pg_url, events, n, **kw) for n in replicas}


def cpu_per_item(run: Drain) -> str:
    """Client and server CPU milliseconds per reward of a drain run with the watcher."""
    client = sum(r["cpu"] for r in run.per_replica) / run.rewards * 1000
    server = run.server.get("server_cpu_s", 0.0) / run.rewards * 1000
    return f"{client:.2f}+{server:.2f} ms cpu/reward"


def compare(opts: CompareOptions) -> list[Figure]:
    """Two replicas against one, and two replicas' rewards/s against PgQueuer's two-consumer no-op jobs/s, from
    drains run back to back here (PgQueuer's by bench/pgqueuer_cmp.py, same server and job count). The notes hold
    the raw rates and the CPU each spent per item (client + server backends)."""
    if opts.pg_url is None:
        return []
    from bench import pgqueuer_cmp

    events = QUICK_EVENTS if opts.quick else FULL_EVENTS
    load0 = loadavg()
    runs = measure(opts.pg_url, events, watch=True)
    one, two = runs[1], runs[2]
    q_one, q_two = pgqueuer_cmp.drain(opts.pg_url, events, 1), pgqueuer_cmp.drain(opts.pg_url, events, 2)
    load = f"load {load0:.1f}→{loadavg():.1f}"
    raw = (f"payhub 1 replica {one.rate:,.0f}/s ({cpu_per_item(one)}), 2 replicas {two.rate:,.0f}/s "
           f"({cpu_per_item(two)}); {events:,} events")
    queue = (f"pgqueuer 1 consumer {q_one.rate:,.0f}/s, 2 consumers {q_two.rate:,.0f}/s "
             f"({(q_two.cpu / q_two.jobs * 1000):.2f}+{(q_two.server_cpu / q_two.jobs * 1000):.2f} ms cpu/job; "
             f"{events:,} no-op jobs)")
    return [
        Figure("pg: two replicas / one (rewards/s)", two.rate / one.rate if one.rate else None, "×",
               target=RATIO_TARGET, note=f"{raw}; {load}"),
        Figure("pg: 2-replica rewards/s / pgqueuer 2-consumer jobs/s", two.rate / q_two.rate if q_two.rate else None,
               "×", target=VS_PGQUEUER_TARGET, note=f"{raw}; {queue}; {load}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=None,
                        help=f"events per drain (default: the figures at {FULL_EVENTS:,}, --quick {QUICK_EVENTS:,})")
    parser.add_argument("--replicas", default="1,2", help="replica counts to drain with (with --events)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--profile", action="store_true", help="cProfile each replica (/tmp/bench-pg-r<N>-<i>.prof)")
    parser.add_argument("--watch", action="store_true", help="sample pg_stat_activity wait events while draining")
    parser.add_argument("--sql-timing", action="store_true", help="each replica's costliest statements (wall s, n)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--replica", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replica:
        return replica(args.replica, args.profile_out, args.sql_timing)
    if args.events:
        load0 = loadavg()
        for n in (int(x) for x in args.replicas.split(",")):
            run = drain(args.pg_url, args.events, n, keep=args.keep, profile=args.profile, watch=args.watch,
                        sql_timing=args.sql_timing)
            print(run.describe(), flush=True)
            for i, r in enumerate(run.per_replica):
                for sql, (wall, count) in r.get("statements", {}).items():
                    print(f"  r{i} {wall:6.2f}s {count:5d}  {sql}")
            if run.server:
                print(json.dumps(run.server, indent=1), flush=True)
        print(f"load {load0:.1f}→{loadavg():.1f}")
        return 0
    print(render_table(compare(CompareOptions(pg_url=args.pg_url, quick=args.quick))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
