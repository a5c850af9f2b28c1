"""PgQueuer on the same PostgreSQL server: no-op jobs/s with one and with two consumer processes.

The reference for payhub's replicas (bench/pg.py): how fast a PostgreSQL job queue built on ``FOR UPDATE SKIP
LOCKED`` drains a backlog on this machine, the queue doing nothing but its own bookkeeping. For each consumer count
a fresh database ``bench_pgq_<pid>`` is created on ``opts.pg_url``'s server, PgQueuer's schema installed, N no-op
jobs enqueued (untimed), and the consumer processes started. Each is shaped as in PgQueuer's own drain benchmark
(tools/benchmark.py: uvloop, 5 queue managers with a connection each, dequeue batch 10); it connects, registers the
no-op entrypoint, waits for a go line on stdin, then runs ``QueueManager.run(mode=drain)``. Time: from
the go line to the last consumer's exit; every job must have been run exactly once (counts from each consumer and the
queue left empty). PgQueuer and its asyncpg driver (its own benchmark's) are bench-only dependencies
(requirements-bench.txt).

    python -m bench.pgqueuer_cmp [--jobs 20000] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.figures import CompareOptions, Figure, render_table
from bench.pg import DEFAULT_PG_URL, Watcher, create_database, drop_database, libpq_url, loadavg

QUICK_JOBS = 20_000
FULL_JOBS = 100_000
ENQUEUE_CHUNK = 5_000
BATCH_SIZE = 10  # PgQueuer's default dequeue batch
DEQUEUE_TASKS = 5  # queue managers per consumer process, as PgQueuer's own benchmark (tools/benchmark.py) runs


@dataclass(frozen=True)
class Drain:
    """One drain: consumers, jobs run, wall seconds, the consumers' CPU seconds and their server backends'."""

    consumers: int
    jobs: int
    seconds: float
    cpu: float
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0


async def _install_and_enqueue(dsn: str, jobs: int) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        left = jobs
        while left:
            n = min(ENQUEUE_CHUNK, left)
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
            left -= n
    finally:
        await conn.close()


async def _queued(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pgqueuer"))
    finally:
        await conn.close()


async def _consume(dsn: str) -> dict[str, Any]:
    """A consumer process: DEQUEUE_TASKS queue managers (one connection each) with the no-op entrypoint; say ready,
    wait for go, drain."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    done = 0
    managers = []
    for _ in range(DEQUEUE_TASKS):
        qm = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(dsn))))

        @qm.entrypoint("noop")
        async def noop(_job: Job) -> None:
            nonlocal done
            done += 1

        managers.append(qm)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    await asyncio.gather(*(qm.run(batch_size=BATCH_SIZE, mode=QueueExecutionMode.drain) for qm in managers))
    return {"jobs": done, "cpu": time.process_time() - cpu0, "end": time.time()}


def drain(pg_url: str, jobs: int, consumers: int) -> Drain:
    """Enqueue ``jobs`` no-op jobs in a fresh database and drain them with ``consumers`` processes."""
    name = f"bench_pgq_{os.getpid()}"
    create_database(pg_url, name)
    try:
        dsn = libpq_url(pg_url, name)
        asyncio.run(_install_and_enqueue(dsn, jobs))
        procs = [subprocess.Popen([sys.executable, "-m", "bench.pgqueuer_cmp", "--consumer", dsn],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(consumers)]
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a PgQueuer consumer failed to start")
        watcher = Watcher(dsn)
        t0 = time.time()  # the consumers report when they ended on the same clock
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        watcher.run(procs)
        outs = [proc.communicate()[0] for proc in procs]
        if any(proc.returncode for proc in procs):
            raise RuntimeError("a PgQueuer consumer failed")
        results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
        seconds = max(r["end"] for r in results) - t0
        ran = sum(r["jobs"] for r in results)
        left = asyncio.run(_queued(dsn))
        if ran != jobs or left != 0:
            raise RuntimeError(f"PgQueuer ran {ran} of {jobs} jobs, {left} left queued")
        return Drain(consumers, ran, seconds, sum(r["cpu"] for r in results), watcher.summary()["server_cpu_s"])
    finally:
        drop_database(pg_url, name)


def measure(pg_url: str, jobs: int) -> tuple[Drain, Drain]:
    """One consumer, then two, each on a fresh database."""
    return drain(pg_url, jobs, 1), drain(pg_url, jobs, 2)


def describe(d: Drain) -> str:
    return (f"{d.consumers} consumer(s): {d.jobs:,} jobs in {d.seconds:.1f}s = {d.rate:,.0f}/s, cpu {d.cpu:.1f}s "
            f"+ server {d.server_cpu:.1f}s")


def compare(opts: CompareOptions) -> list[Figure]:
    """PgQueuer's no-op jobs/s with one and two consumers and their ratio (reference figures, no targets)."""
    if opts.pg_url is None:
        return []
    jobs = QUICK_JOBS if opts.quick else FULL_JOBS
    load0 = loadavg()
    one, two = measure(opts.pg_url, jobs)
    note = f"{jobs:,} jobs; load {load0:.1f}→{loadavg():.1f}"
    return [
        Figure("pgqueuer 1-consumer no-op jobs/s", one.rate, "jobs/s", note=f"{describe(one)}; {note}"),
        Figure("pgqueuer 2-consumer no-op jobs/s", two.rate, "jobs/s", note=f"{describe(two)}; {note}"),
        Figure("pgqueuer 2/1 consumer ratio", two.rate / one.rate if one.rate else None, "×", note=note),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=None, help=f"jobs per drain (default {FULL_JOBS:,}; "
                        f"--quick {QUICK_JOBS:,})")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--consumer", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.consumer:
        import uvloop

        print(json.dumps(uvloop.run(_consume(args.consumer))), flush=True)
        return 0
    if args.jobs:
        load0 = loadavg()
        one, two = measure(args.pg_url, args.jobs)
        print(describe(one))
        print(describe(two))
        print(f"ratio {two.rate / one.rate:.2f}; load {load0:.1f}→{loadavg():.1f}")
        return 0
    print(render_table(compare(CompareOptions(pg_url=args.pg_url, quick=args.quick))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
