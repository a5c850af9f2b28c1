"""Latency of the probes, ``GET /metrics`` and ``GET /readyz``, on a database holding N rewards (default 1,000,000).

Builds the database first: created by payhub's migrations, then filled in bulk (SQLite ``executemany`` with
``synchronous=OFF``, PostgreSQL ``COPY`` then ``VACUUM ANALYZE``) with what the probes read, shaped like a live
system's: N events from two sources (raw CRM text of about 400 bytes each; 99 % calculated, the rest quarantined or
waiting), one calculation and one reward per event (paid 80 %, sent 10 %, scheduled 3 %, pending 3 %, held 2 %,
awaiting approval 1 %, cancelled 1 %), a payout per ten paid, sent or scheduled rewards (with a few unknown and
retrying ones), and the two sources' rows. Tables the probes do not read (payout items, attempts, the audit log,
whose head alone ``/metrics`` reads) are left empty.

Then it runs ``payhub serve`` on a free loopback port in a child process (a real
:class:`payhub.http.server.HttpServer`: uvicorn, as an API process next to the workers runs it) and calls it over
HTTP from this process with one keep-alive httpx connection, timing each call from request to full body:

- ``/healthz`` (no database), for comparison, and ``/readyz`` (database, schema, hooks, sources and outage checks):
  ``--calls`` calls each;
- ``/metrics`` with ``http.metrics_refresh_seconds = 15`` (the default): the first scrape, which waits for the first
  read of the counts, then ``--calls`` scrapes answered from the values at hand;
- ``/metrics`` while a read of the counts runs in the server (``metrics_refresh_seconds = 1``; the next read is due
  ten times the last one's duration later): scrapes from the moment it starts until it ends, at most ``--calls``;
- ``/metrics`` with ``metrics_refresh_seconds = 0``: the counts read on the request path, for comparison (5 calls).

Each line gives p50, p95 and max in milliseconds and whether p95 meets the target (50 ms); the read of the counts
(``payhub_db_metrics_read_seconds``) is given too: it is the time the background refresh spends, every
``metrics_refresh_seconds``.

    python -m bench.http_probes                          # 1,000,000 rewards on SQLite (4 to 5 minutes, mostly
                                                         # building the database)
    python -m bench.http_probes --rewards 100000         # a quicker run
    python -m bench.http_probes --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python -m bench.http_probes --json                   # the report as JSON on stdout

``--pg URL`` names a PostgreSQL server: a fresh database is created there for the run and dropped afterwards
(``--keep`` keeps it, and the work directory with the SQLite file and settings). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TARGET_MS = 50.0
BATCH = 20_000
REWARD_STATUSES = (("paid", 80), ("sent", 10), ("scheduled", 3), ("pending", 3), ("held", 2),
                   ("awaiting_approval", 1), ("cancelled", 1))
SOURCES = ("salesforce", "hubspot")
PROGRAM = "spiff"


def log(message: str) -> None:
    print(f"[probes-bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------- the data


def _rows(n: int, seed: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(table, row) in an order foreign keys accept: each payout before its rewards."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=365) / max(n, 1)
    statuses = [status for status, weight in REWARD_STATUSES for _ in range(weight)]
    pad = "x" * 300
    payout_id = 0
    open_payouts: dict[str, list[int]] = {}  # status -> [payout id, rewards in it]: ten rewards a payout
    for i in range(1, n + 1):
        at = start + step * i
        source = SOURCES[0] if rnd.random() < 0.7 else SOURCES[1]
        draw = rnd.random()
        event_status = "calculated" if draw < 0.99 else ("quarantined" if draw < 0.995 else "waiting")
        payee = f"rep-{rnd.randrange(1000):04d}"
        amount = f"{rnd.randrange(100, 100_000)}.00"
        raw = json.dumps({"Id": f"006{i:012d}", "Amount": amount, "StageName": "Closed Won", "Pad": pad})
        yield "events", (i, f"{source}:Opportunity:006{i:012d}:won", source, "Opportunity", f"006{i:012d}", "won",
                         "deal_won", at, payee, f"partner-{rnd.randrange(40)}", amount, "USD", "{}", event_status,
                         "bad amount" if event_status == "quarantined" else None, raw, at, at)
        yield "calculations", (i, i, PROGRAM, 1, "rewarded", None, at)
        status = rnd.choice(statuses)
        payout = None
        if status in ("paid", "sent", "scheduled"):
            current = open_payouts.get(status)
            if current is None or current[1] == 10:
                payout_id += 1
                payout_status = status
                if status == "sent" and payout_id % 97 == 0:
                    payout_status = "unknown"
                elif status == "scheduled" and payout_id % 11 == 0:
                    payout_status = "retrying"
                current = open_payouts[status] = [payout_id, 0]
                yield "payouts", (payout_id, f"ph-{uuid.UUID(int=rnd.getrandbits(128)).hex}", payee, "bank",
                                  "default rail", "USD", 0, 10, payout_status, 1 if status != "scheduled" else 0,
                                  at, at)
            current[1] += 1
            payout = current[0]
        yield "rewards", (i, i, PROGRAM, payee, rnd.randrange(100, 10_000_00), "USD", "", "{}", status, payout, at,
                          at)


COLUMNS = {
    "events": ("id", "key", "source", "object_type", "object_id", "transition", "event_type", "occurred_at",
               "payee_id", "partner_id", "amount", "currency", "attributes", "status", "reason", "raw",
               "ingested_at", "calculated_at"),
    "calculations": ("id", "event_id", "program", "program_version_id", "status", "reason", "calculated_at"),
    "payouts": ("id", "idempotency_key", "payee_id", "rail", "route_reason", "currency", "amount_minor",
                "item_count", "status", "attempts", "created_at", "updated_at"),
    "rewards": ("id", "event_id", "program", "payee_id", "amount_minor", "currency", "description", "details",
                "status", "payout_id", "created_at", "updated_at"),
}


def _sqlite_value(value: Any) -> Any:
    return value.replace(tzinfo=None).isoformat(sep=" ") if isinstance(value, datetime) else value


def build(url: str, n: int, seed: int) -> dict[str, int]:
    """Migrate the database at ``url`` and fill it (see the module docstring); return the rows written per table."""
    from sqlalchemy import text

    from payhub.db import migrate
    from payhub.db.engine import make_engine, sqlite_file

    engine = make_engine(url)
    migrate.upgrade(engine)
    started = time.perf_counter()
    counts = dict.fromkeys(COLUMNS, 0)
    now = datetime.now(UTC)
    version = (1, PROGRAM, 1, "spiff", "{}", "0" * 64, now)
    polled = [(SOURCES[0], "ok", None, now - timedelta(seconds=30)),
              (SOURCES[1], "ok", None, now - timedelta(seconds=45))]
    path = sqlite_file(url)
    if path is not None:
        engine.dispose()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO program_versions (id, program, version, calculator, params, fingerprint, "
                     "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", [_sqlite_value(v) for v in version])
        conn.executemany("INSERT INTO sources (name, status, reason, last_polled_at) VALUES (?, ?, ?, ?)",
                         [[_sqlite_value(v) for v in row] for row in polled])
        batches: dict[str, list[list[Any]]] = {table: [] for table in COLUMNS}

        def flush(table: str) -> None:
            columns = COLUMNS[table]
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             batches[table])
            counts[table] += len(batches[table])
            batches[table] = []

        for table, row in _rows(n, seed):
            batches[table].append([_sqlite_value(v) for v in row])
            if table == "rewards" and len(batches["rewards"]) == BATCH:
                for name in COLUMNS:
                    flush(name)
        for name in COLUMNS:
            flush(name)
        conn.execute("UPDATE audit_head SET seq = ? WHERE id = 1", (4 * n,))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    else:
        with engine.begin() as sa_conn:
            raw: Any = sa_conn.connection.driver_connection
            with raw.cursor() as cur:
                cur.execute("INSERT INTO program_versions (id, program, version, calculator, params, fingerprint, "
                            "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)", version)
                cur.executemany("INSERT INTO sources (name, status, reason, last_polled_at) VALUES (%s, %s, %s, %s)",
                                polled)
                rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
                for table, row in _rows(n, seed):
                    rows[table].append(row)
                    if table == "rewards" and len(rows["rewards"]) == BATCH:
                        _copy(cur, rows, counts)
                _copy(cur, rows, counts)
            sa_conn.execute(text("UPDATE audit_head SET seq = :s WHERE id = 1"), {"s": 4 * n})
            for table in COLUMNS:  # ids were given explicitly: move the sequences past them
                sa_conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT coalesce(max(id), 1) FROM {table}))"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as sa_conn:
            sa_conn.execute(text("VACUUM ANALYZE"))
        engine.dispose()
    log(f"built {counts['rewards']:,} rewards, {counts['events']:,} events, {counts['payouts']:,} payouts in "
        f"{time.perf_counter() - started:.1f} s")
    return counts


def _copy(cur: Any, rows: dict[str, list[tuple[Any, ...]]], counts: dict[str, int]) -> None:
    for table in COLUMNS:  # in COLUMNS order: payouts before the rewards that name them
        with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
            for row in rows[table]:
                copy.write_row(row)
        counts[table] += len(rows[table])
        rows[table] = []


# ------------------------------------------------------------------------------------------------- the calls


def _settings(workdir: Path, url: str, refresh: float) -> Path:
    (workdir / "deals.csv").write_text("")
    config = workdir / f"payhub-{refresh:g}.toml"
    sources = "".join(f'[sources.{name}]\nplugin = "file"\npath = "deals.csv"\n' for name in SOURCES)
    config.write_text(f'[database]\nurl = "{url}"\n\n[http]\nlisten = "127.0.0.1:0"\n'
                      f"metrics_refresh_seconds = {refresh}\n\n{sources}")
    return config


def _timed(client: Any, path: str, calls: int, expect: int = 200) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != expect:
            raise SystemExit(f"GET {path} answered {answer.status_code}: {answer.text[:500]}")
    return times


def _summary(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"calls": len(times), "p50_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1]}


def _gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def _read_seconds(text: str) -> float | None:
    return _gauge(text, "payhub_db_metrics_read_seconds")


def _during_a_read(client: Any, calls: int) -> list[float]:
    """Scrapes while the server reads the counts: wait for the next read (due READ_SHARE times the last read's
    duration after it, refresh_seconds being 1), then scrape until it has had time to end."""
    from payhub.http.metrics import READ_SHARE

    text = client.get("/metrics").text
    read, age = _read_seconds(text) or 0.0, _gauge(text, "payhub_db_metrics_age_seconds") or 0.0
    time.sleep(max(0.0, max(1.0, READ_SHARE * read) - age + 0.05))
    client.get("/metrics")  # a scrape finding the values due starts the next read, if the thread has not
    times: list[float] = []
    ends = time.perf_counter() + read
    while len(times) < calls and time.perf_counter() < ends:
        times += _timed(client, "/metrics", 1)
    return times


class Served:
    """``payhub serve`` on a free loopback port in a child process, as an API process runs next to the workers."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "from payhub.cli import main; main()", "-c",
                                         str(config), "serve"], stderr=subprocess.PIPE, text=True)
        self.url = ""
        self.log: list[str] = []
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r"serving HTTP on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            raise SystemExit("payhub serve did not start:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def measure(workdir: Path, url: str, calls: int) -> dict[str, Any]:
    """Serve the app per refresh setting and time the probes (see the module docstring)."""
    import httpx

    results: dict[str, Any] = {}
    for refresh in (15.0, 1.0, 0.0):
        served = Served(_settings(workdir, url, refresh))
        try:
            with httpx.Client(base_url=served.url, timeout=120) as client:
                _timed(client, "/healthz", 3)  # the connection is open before anything is timed
                if refresh == 15.0:
                    results["healthz"] = _summary(_timed(client, "/healthz", calls))
                    results["readyz"] = _summary(_timed(client, "/readyz", calls))
                    log(f"/readyz: p50 {results['readyz']['p50_ms']:.1f} ms")
                    first = _timed(client, "/metrics", 1)
                    results["metrics_first"] = _summary(first)
                    results["metrics"] = _summary(_timed(client, "/metrics", calls))
                    results["read_seconds"] = _read_seconds(client.get("/metrics").text)
                    log(f"/metrics: first {first[0]:.0f} ms, then p50 {results['metrics']['p50_ms']:.1f} ms")
                elif refresh == 1.0:
                    results["metrics_refreshing"] = _summary(_during_a_read(client, calls))
                    log(f"/metrics while refreshing: p50 {results['metrics_refreshing']['p50_ms']:.1f} ms")
                else:
                    results["metrics_on_request_path"] = _summary(_timed(client, "/metrics", 5))
                    log(f"/metrics read on the request path: p50 "
                        f"{results['metrics_on_request_path']['p50_ms']:.0f} ms")
        finally:
            served.stop()
    return results


# ------------------------------------------------------------------------------------------------- the report


def host_info() -> dict[str, Any]:
    import payhub

    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "sqlite": sqlite3.sqlite_version, "payhub": getattr(payhub, "__version__", None)}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, check=True).stdout.strip()
        info["src_modified"] = bool(subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO,
                                                   capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    return info


def render(report: dict[str, Any]) -> str:
    h, r = report["host"], report["results"]
    lines = [
        f"payhub probes bench: {report['rewards']:,} rewards ({report['events']:,} events, {report['payouts']:,} "
        f"payouts) on {report['database']}",
        "served by `payhub serve` (HttpServer, uvicorn) in a child process on loopback; one keep-alive httpx client",
        f"host: {h['cpus']} CPUs, Python {h['python']}, SQLite {h['sqlite']}, commit {h.get('commit', '?')}"
        f"{' (src modified)' if h.get('src_modified') else ''}, load average {h['loadavg_1min']}",
        "",
        f"{'probe':<56}{'calls':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}  target p95 < {TARGET_MS:.0f} ms",
    ]
    rows = [("GET /healthz (for comparison)", "healthz", False),
            ("GET /readyz", "readyz", True),
            ("GET /metrics, first scrape (waits for the first read)", "metrics_first", False),
            ("GET /metrics (refresh 15 s, the default)", "metrics", True),
            ("GET /metrics while the counts are being read", "metrics_refreshing", True),
            ("GET /metrics (refresh 0: read on the request path)", "metrics_on_request_path", False)]
    for label, key, target in rows:
        s = r[key]
        verdict = ("met" if s["p95_ms"] < TARGET_MS else "MISSED") if target else "-"
        lines.append(f"{label:<56}{s['calls']:>6}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['max_ms']:>9.1f}  {verdict}")
    if r.get("read_seconds") is not None:
        lines += ["", f"reading the counts (payhub_db_metrics_read_seconds, done off the request path every "
                      f"metrics_refresh_seconds): {r['read_seconds'] * 1000:.0f} ms"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rewards", type=int, default=1_000_000, help="rewards stored (default 1,000,000)")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per probe (default 50)")
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL server to run on instead of a SQLite file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="where the SQLite file and settings go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (and the PostgreSQL database)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="payhub-probes-", dir=args.workdir))
    admin, name = None, None
    if args.pg:
        from sqlalchemy import create_engine, make_url, text

        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        name = f"payhub_probes_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
        where = f"PostgreSQL ({make_url(args.pg).host})"
    else:
        url = f"sqlite:///{workdir / 'payhub.db'}"
        where = "SQLite"
    try:
        counts = build(url, args.rewards, args.seed)
        results = measure(workdir, url, args.calls)
    finally:
        if admin is not None:
            if not args.keep:
                from sqlalchemy import text

                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}" + (f" and database {name}" if name else ""))
    report = {"rewards": counts["rewards"], "events": counts["events"], "payouts": counts["payouts"],
              "database": where, "host": host_info(), "results": results}
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
