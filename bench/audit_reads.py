"""Audit reads at scale: the CLI's ``audit query`` and ``audit export`` against the HTTP API's paged read and export.

Builds a database holding N audit entries (default 1,000,000) shaped like the pipeline's (ingest, calculate,
schedule, send, settle entries with their details), with a valid hash chain computed by :mod:`payhub.audit` and
written in bulk (SQLite ``executemany``, PostgreSQL ``COPY``), so ``payhub audit verify`` passes on it. Then, in one
run on that database:

- ``payhub audit query --format json`` and ``payhub audit export`` (JSON Lines and CSV), each a subprocess writing to
  a file: wall time, entries/s and the child's peak RSS (``ru_maxrss`` of the waited child, from ``wait4``);
- a paged API read of the audit log, 1,000 entries a page, following ``next`` of ``GET /api/v1/audit`` (or paging
  with ``after``/``limit`` when the response has no ``next``), and ``GET /api/v1/audit/export`` in both formats,
  through a real :class:`payhub.http.server.HttpServer` on a free loopback port with an auditor token. The server
  runs in a subprocess so its peak RSS is its own; the client counts the entries it received.

Targets: query and export of 1,000,000 entries with peak RSS under 200 MB and at least 50,000 entries/s. The table
gives each figure, whether it meets the target, and the API's rate and memory as a ratio of the CLI's.

    python -m bench.audit_reads                         # 1,000,000 entries on SQLite
    python -m bench.audit_reads --entries 100000        # a quicker run
    python -m bench.audit_reads --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python -m bench.audit_reads --json                  # the report as JSON

``--pg URL`` names a PostgreSQL server: a fresh database is created there for the run and dropped afterwards
(``--keep`` keeps it, and the work directory). The exit status is 1 when a read returned another number of entries
than stored, or when the exported JSON Lines do not recompute to the stored chain head.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MB = 1024 * 1024
TARGET_RSS_MB = 200.0
TARGET_RATE = 50_000.0
PAGE = 1000
BUILD_BATCH = 20_000
GENESIS = "0" * 64
FIELDS = ("seq", "at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail", "prev_hash")


def log(message: str) -> None:
    print(f"[audit-bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------- the data


def _entries(n: int, seed: int) -> Iterator[list[Any]]:
    """N entries in chain order (all fields and ``hash``), shaped like the pipeline's: an event is ingested and
    calculated, its reward calculated and scheduled, its payout sent and settled; now and then an operator acts."""
    from payhub.audit import canonical_json, entry_hash

    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=365) / max(n, 1)
    origin = "payhub-worker@bench-host:4242"
    prev = GENESIS
    event = reward = payout = 0
    for seq in range(1, n + 1):
        at = (start + step * seq).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        kind = seq % 6
        actor, outcome = "worker", "ok"
        if kind == 0:
            event += 1
            action, stype, sid = "event.ingested", "event", event
            detail: dict[str, Any] = {"key": f"salesforce:Opportunity:006{event:012d}:won"}
        elif kind == 1:
            action, stype, sid = "event.calculated", "event", event
            detail = {"programs": {"spiff": "rewarded", "rebate": "not_eligible"}}
        elif kind == 2:
            reward += 1
            action, stype, sid = "reward.calculated", "reward", reward
            detail = {"amount": f"{rnd.randint(100, 500000) / 100:.2f}", "currency": "USD", "event": event,
                      "payee": f"rep-{rnd.randint(1, 1000)}", "program": "spiff", "version": 3}
        elif kind == 3:
            action, stype, sid = "reward.scheduled", "reward", reward
            detail = {"payout": payout + 1}
        elif kind == 4:
            payout += 1
            action, stype, sid = "payout.sending", "payout", payout
            detail = {"attempt": 1, "idempotency_key": f"ph-{uuid.UUID(int=rnd.getrandbits(128)).hex}",
                      "rail": "bank_transfer"}
        else:
            action, stype, sid = "payout.sent", "payout", payout
            detail = {"provider_ref": f"sct-{payout:08d}.xml#{rnd.randint(1, 500)}"}
            if rnd.random() < 0.02:
                actor, action, outcome = "cli:finance-ann", "payout.held", "held"
                detail = {"reason": "=HYPERLINK(\"http://x\") needs a second look, ü"}
        row = {"seq": seq, "at": at, "actor": actor, "action": action, "subject_type": stype, "subject_id": str(sid),
               "outcome": outcome, "origin": origin, "detail": canonical_json(detail), "prev_hash": prev}
        prev = entry_hash(row)
        yield [*(row[f] for f in FIELDS), prev]


def build(url: str, n: int, seed: int) -> tuple[int, str]:
    """Migrate the database at ``url`` and bulk-insert ``n`` chained entries; return the head (seq, hash)."""
    from sqlalchemy import text

    from payhub.db import migrate
    from payhub.db.engine import make_engine, sqlite_file

    engine = make_engine(url)
    migrate.upgrade(engine)
    head = (0, GENESIS)
    started = time.perf_counter()
    path = sqlite_file(url)
    if path is not None:
        engine.dispose()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        batch: list[list[Any]] = []
        insert = f"INSERT INTO audit_log ({', '.join((*FIELDS, 'hash'))}) VALUES ({', '.join('?' * 11)})"
        for row in _entries(n, seed):
            batch.append(row)
            if len(batch) == BUILD_BATCH:
                conn.executemany(insert, batch)
                batch = []
            head = (row[0], row[-1])
        conn.executemany(insert, batch)
        conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", head)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    else:
        with engine.begin() as sa_conn:
            raw: Any = sa_conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(
                    f"COPY audit_log ({', '.join((*FIELDS, 'hash'))}) FROM STDIN") as copy:
                for row in _entries(n, seed):
                    copy.write_row(row)
                    head = (row[0], row[-1])
            sa_conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
                            {"s": head[0], "h": head[1]})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as sa_conn:
            sa_conn.execute(text("VACUUM ANALYZE audit_log"))
        engine.dispose()
    log(f"built {n:,} entries in {time.perf_counter() - started:.1f} s")
    return head


# ------------------------------------------------------------------------------------------------- measuring


@dataclass
class Read:
    """One measured read: what, how many entries, wall seconds, peak RSS (bytes) of the process that served it."""

    name: str
    face: str  # "cli" or "api"
    entries: int
    seconds: float
    peak_rss: int
    cpu_seconds: float = 0.0  # of the serving process, start-up included
    note: str = ""

    @property
    def rate(self) -> float:
        return self.entries / self.seconds if self.seconds else 0.0

    @property
    def peak_mb(self) -> float:
        return self.peak_rss / MB


def _wait_rss(proc: subprocess.Popen[Any]) -> tuple[int, float]:
    """Wait for ``proc``; return its peak RSS in bytes (``ru_maxrss`` of the waited child, KiB on Linux) and the CPU
    seconds it used (user and system)."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024), usage.ru_utime + usage.ru_stime


def head_seq(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT seq FROM audit_head WHERE id = 1")).scalar_one())
    finally:
        engine.dispose()


PAYHUB = [sys.executable, "-c", "from payhub.cli import main; main()"]


def cli_read(config: Path, name: str, args: list[str], out: Path) -> Read:
    """Run ``payhub -c config *args`` with standard output to ``out``; time it and take its peak RSS."""
    started = time.perf_counter()
    with out.open("wb") as fh:
        proc = subprocess.Popen([*PAYHUB, "-c", str(config), "--actor", "bench", *args], stdout=fh,
                                stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        rss, cpu = _wait_rss(proc)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: payhub {' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return Read(name, "cli", 0, seconds, rss, cpu)


SERVER = """
import sys
from payhub.http.server import HttpServer
from payhub.runtime import Runtime
from payhub.settings import load_settings

rt = Runtime(load_settings(sys.argv[1]), role="serve")
rt.load_plugins()
server = HttpServer(rt, listen=("127.0.0.1", 0))
server.start()
print(server.url, flush=True)
sys.stdin.read()  # until the bench closes it
server.stop()
rt.close()
"""


@contextlib.contextmanager
def http_server(config: Path) -> Iterator[tuple[str, list[tuple[int, float]]]]:
    """A payhub HttpServer on a free loopback port in a process of its own; yields (its URL, [its peak RSS and CPU
    seconds, once it has stopped])."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(config)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    peak: list[tuple[int, float]] = []
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit("bench: the HTTP server did not start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url, peak
    finally:
        proc.stdin.close()
        peak.append(_wait_rss(proc))


def _get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def api_pages(config: Path, token: str) -> Read:
    """Read the whole audit log 1,000 entries a page, following ``next`` (or ``after``/``limit`` without it)."""
    note = ""
    with http_server(config) as (url, peak):
        entries, path = 0, f"/api/v1/audit?limit={PAGE}"
        started = time.perf_counter()
        while path:
            page = _get(url + path, token)
            items = page["items"]
            entries += len(items)
            if "next" in page:
                path = page["next"]
            else:
                note = "paged with after/limit (the answer has no next)"
                path = f"/api/v1/audit?limit={PAGE}&after={items[-1]['seq']}" if len(items) == PAGE else ""
        seconds = time.perf_counter() - started
    return Read(f"API GET /api/v1/audit, {PAGE:,} a page", "api", entries, seconds, *peak[0], note=note)


def api_export(config: Path, token: str, fmt: str, out: Path) -> Read:
    """``GET /api/v1/audit/export?format=fmt`` read to its end into ``out``; entries counted as rows received."""
    with http_server(config) as (url, peak):
        request = urllib.request.Request(f"{url}/api/v1/audit/export?format={fmt}",
                                         headers={"Authorization": f"Bearer {token}"})
        newlines = 0
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as answer, out.open("wb") as fh:
            while chunk := answer.read(1024 * 1024):
                newlines += chunk.count(b"\n")
                fh.write(chunk)
        seconds = time.perf_counter() - started
    entries = newlines - 1 if fmt == "csv" else newlines  # the header; detail never holds a raw newline
    return Read(f"API GET /api/v1/audit/export ({fmt})", "api", entries, seconds, *peak[0])


# ------------------------------------------------------------------------------------------------- checks


def jsonl_head(path: Path) -> tuple[int, str]:
    """Recompute the chain from a JSON Lines export (as docs/operations.md's script does): (entries, head hash)."""
    prev, count = GENESIS, 0
    with path.open(encoding="utf-8") as fh:
        for count, line in enumerate(fh, start=1):
            entry = json.loads(line)
            entry["detail"] = json.dumps(entry["detail"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            payload = "".join(f"{len(t)}:{t};" for t in (str(entry[f]) for f in FIELDS))
            if entry["seq"] != count or entry["prev_hash"] != prev:
                raise SystemExit(f"bench: {path.name}: entry {count} is missing, inserted or reordered")
            if hashlib.sha256(payload.encode()).hexdigest() != entry["hash"]:
                raise SystemExit(f"bench: {path.name}: entry {entry['seq']} does not match its hash")
            prev = entry["hash"]
    return count, prev


def _has_entry(path: Path, seq: int, digest: str) -> bool:
    """Whether line ``seq`` of a JSON Lines export is the entry hashed ``digest``."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if n == seq:
                return bool(json.loads(line)["hash"] == digest)
    return False


def json_array_count(path: Path) -> int:
    """Entries of ``audit query --format json`` (an indented array: each entry opens with ``  {``)."""
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.startswith(b"  {"))


def csv_count(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _row in csv.reader(fh)) - 1


# ------------------------------------------------------------------------------------------------- the run


def host_info() -> dict[str, Any]:
    import payhub

    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, check=True).stdout.strip()
        info["src_modified"] = bool(subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO,
                                                   capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    info["payhub_path"] = str(Path(payhub.__file__).resolve().parent)
    return info


@contextlib.contextmanager
def database(args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    """The URL of a fresh database: a SQLite file in ``workdir``, or a new database on ``--pg``'s server."""
    if not args.pg:
        yield f"sqlite:///{workdir / 'payhub.db'}"
        return
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    name = f"payhub_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    finally:
        if args.keep:
            log(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from payhub.runtime import Runtime
    from payhub.settings import load_settings
    from payhub.tokens import create

    with database(args, workdir) as url:
        head = build(url, args.entries, args.seed)
        config = workdir / "payhub.toml"
        config.write_text(f'[database]\nurl = "{url}"\n')
        rt = Runtime(load_settings(config), actor="bench", role="bench")
        rt.load_plugins()
        token = create(rt, "bench-auditor", "auditor")
        rt.close()
        reads: list[Read] = []
        checks: dict[str, Any] = {}

        def expect(read: Read, found: int, expected: int) -> None:
            read.entries = found
            checks[read.name] = {"entries": found, "expected": expected, "ok": found == expected}

        log("CLI audit query --format json")
        expected = head_seq(url)
        out = workdir / "query.json"
        read = cli_read(config, "CLI audit query --format json", ["audit", "query", "--format", "json"], out)
        expect(read, json_array_count(out), expected)
        reads.append(read)
        for fmt in ("jsonl", "csv"):
            log(f"CLI audit export ({fmt})")
            expected = head_seq(url)
            out = workdir / f"cli-export.{fmt}"
            read = cli_read(config, f"CLI audit export ({fmt})", ["audit", "export", "--format", fmt, "-o", str(out)],
                            workdir / "cli-export.stdout")
            expect(read, jsonl_head(out)[0] if fmt == "jsonl" else csv_count(out), expected)
            reads.append(read)
        log("API paged read")
        before = head_seq(url)
        read = api_pages(config, token)
        # Each page's request is audited as it is answered, so the log grows by about one entry a page meanwhile.
        checks[read.name] = {"entries": read.entries, "at_least": before, "ok": read.entries >= before}
        reads.append(read)
        for fmt in ("jsonl", "csv"):
            log(f"API export ({fmt})")
            expected = head_seq(url)
            out = workdir / f"api-export.{fmt}"
            read = api_export(config, token, fmt, out)
            expect(read, jsonl_head(out)[0] if fmt == "jsonl" else read.entries, expected)
            reads.append(read)
        # Both JSON Lines exports recomputed to a chain (jsonl_head stops the run otherwise) through the built head.
        checks["built head in both exports"] = {"seq": head[0], "ok": all(
            _has_entry(workdir / f"{face}-export.jsonl", *head) for face in ("cli", "api"))}
        backend = "PostgreSQL" if args.pg else f"SQLite {sqlite3.sqlite_version}"
    return {"entries": args.entries, "database": backend, "reads": reads, "checks": checks}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def render(report: dict[str, Any], host: dict[str, Any]) -> str:
    out = io.StringIO()
    w = out.write
    modified = " (src modified)" if host.get("src_modified") else ""
    w(f"payhub audit reads: {report['entries']:,} entries built, {report['database']}; host {host['cpus']} CPUs, "
      f"Python {host['python']}, commit {host.get('commit', '?')}{modified}\n")
    w(f"targets: peak RSS under {TARGET_RSS_MB:.0f} MB and at least {TARGET_RATE:,.0f} entries/s "
      "(query and export)\n")
    w("peak RSS and cpu s are the serving process's (start-up included): the payhub command for the CLI, the HTTP "
      "server's process for the API; seconds and entries/s are wall time as the caller saw it\n")
    w(f"load average {report['load'][0]} before, {report['load'][1]} after (other work on the machine inflates wall "
      "times, not cpu s)\n\n")
    w(f"{'read':<40}{'entries':>11}{'seconds':>9}{'entries/s':>11}{'cpu s':>8}{'peak RSS MB':>13}  target\n")
    for r in report["reads"]:
        meets = r.peak_mb < TARGET_RSS_MB and r.rate >= TARGET_RATE
        w(f"{r.name:<40}{r.entries:>11,}{r.seconds:>9.2f}{r.rate:>11,.0f}{r.cpu_seconds:>8.2f}{r.peak_mb:>13.1f}  "
          f"{'met' if meets else 'MISSED'}{'  (' + r.note + ')' if r.note else ''}\n")
    by = {r.name: r for r in report["reads"]}
    pairs = [("API export (jsonl) / CLI export (jsonl)", "API GET /api/v1/audit/export (jsonl)",
              "CLI audit export (jsonl)"),
             ("API export (csv) / CLI export (csv)", "API GET /api/v1/audit/export (csv)", "CLI audit export (csv)"),
             ("API paged read / CLI query --format json", f"API GET /api/v1/audit, {PAGE:,} a page",
              "CLI audit query --format json")]
    w(f"\n{'ratio':<44}{'entries/s':>11}{'cpu s':>8}{'peak RSS':>10}\n")
    for label, api_name, cli_name in pairs:
        a, c = by[api_name], by[cli_name]
        w(f"{label:<44}{ratio(a.rate, c.rate):>11}{ratio(a.cpu_seconds, c.cpu_seconds):>8}"
          f"{ratio(a.peak_rss, c.peak_rss):>10}\n")
    failed = [name for name, check in report["checks"].items() if not check["ok"]]
    w(f"\nchecks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)} "
      "(entry counts; both JSON Lines exports recompute to the chain)\n")
    return out.getvalue()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Audit reads at scale: CLI query/export against the HTTP API.")
    ap.add_argument("--entries", "-n", type=int, default=1_000_000, help="audit entries to build (default 1000000)")
    ap.add_argument("--pg", metavar="URL", help="a PostgreSQL server URL: build and read a fresh database there")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", help="where the SQLite file and the exports go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (and the PostgreSQL database)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="payhub-audit-bench-", dir=args.workdir))
    try:
        load = os.getloadavg()[0]
        report = run(args, workdir)
        report["load"] = (round(load, 2), round(os.getloadavg()[0], 2))
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    host = host_info()
    if args.json:
        print(json.dumps({**report, "host": host, "reads": [{**r.__dict__, "rate": r.rate, "peak_mb": r.peak_mb}
                                                             for r in report["reads"]]}, indent=2))
    else:
        print(render(report, host))
    return 0 if all(check["ok"] for check in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
