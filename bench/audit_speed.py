"""``payhub audit verify`` and ``payhub audit export`` entries/s and peak RSS, on SQLite and PostgreSQL.

Builds an audit log of N entries (default 1,000,000; ``--quick`` 100,000) shaped like the pipeline's, with the
payouts, rewards and events tables it records, so that ``audit verify`` passes (chain and cross-check): per event,
``event.ingested``, ``event.calculated``, ``reward.calculated``, ``payout.created``, ``reward.scheduled``,
``payout.sending``, ``payout.sent`` (now and then a ``payout.held`` by an operator instead of a send, with hostile
text in its detail). The chain is computed with :mod:`payhub.audit` and written in bulk (SQLite ``executemany``,
PostgreSQL ``COPY``). The same log is also built with N/10 entries. Then the real commands run in subprocesses:
``payhub audit verify --no-checkpoints`` and ``payhub audit export --format jsonl -o FILE``; entries/s is the
entries of the log over the command's wall time (start-up included), peak RSS the child's ``ru_maxrss``.

Figures: verify entries/s (target 250,000), export entries/s (target 100,000), and peak RSS at N over N/10 (flat:
target 1.2), for each database. ``--pg URL`` (or ``opts.pg_url``): a fresh database is created on that server and
dropped afterwards.

    python -m bench.audit_speed [--entries 1000000] [--quick] [--pg URL | --no-pg] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.figures import CompareOptions, Figure, render_table

VERIFY_TARGET = 250_000.0
EXPORT_TARGET = 100_000.0
FLAT_TARGET = 1.2
MB = 1024 * 1024
GENESIS = "0" * 64
FIELDS = ("seq", "at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail", "prev_hash")
COLUMNS = (*FIELDS, "hash")
BATCH = 20_000
PAYHUB = [sys.executable, "-c", "from payhub.cli import main; main()"]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def log(message: str) -> None:
    print(f"[audit-speed] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------- the data


@dataclass
class Tables:
    """The rows beside the chain, in insert order."""

    events: list[dict[str, Any]]
    calculations: list[dict[str, Any]]
    rewards: list[dict[str, Any]]
    payouts: list[dict[str, Any]]
    items: list[dict[str, Any]]


def _chain(n: int, seed: int, tables: Tables) -> Iterator[list[Any]]:
    """N chained entries (FIELDS and ``hash``) in order, rounded up to whole events; the event, reward and payout
    rows they record go to ``tables`` as they are made (one event, reward and payout per seven entries)."""
    from payhub.audit import canonical_json, hash_fields

    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=365) / max(n, 1)
    origin = "payhub-worker@bench-host:4242"
    prev = GENESIS
    seq = 0
    number = 0
    while seq < n:
        number += 1
        moment = start + step * seq
        at = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        key = f"salesforce:Opportunity:006{number:012d}:won"
        payee = f"rep-{rnd.randint(1, 1000)}"
        cents = rnd.randint(100, 500000)
        amount = f"{cents / 100:.2f}"
        ikey = f"ph-{uuid.UUID(int=rnd.getrandbits(128)).hex}"
        held = rnd.random() < 0.02
        status = "held" if held else "sent"
        entries: list[tuple[str, str, str, str, dict[str, Any]]] = [
            ("worker", "event.ingested", "event", "ok", {"key": key}),
            ("worker", "event.calculated", "event", "ok",
             {"programs": {"rebate": "not_eligible", "spiff": "rewarded"}}),
            ("worker", "reward.calculated", "reward", "ok",
             {"amount": amount, "currency": "USD", "event": number, "payee": payee, "program": "spiff", "version": 3}),
            ("worker", "payout.created", "payout", "ok",
             {"amount": amount, "currency": "USD", "key": ikey, "payee": payee, "rail": "bank_transfer",
              "rewards": 1}),
            ("worker", "reward.scheduled", "reward", "ok", {"payout": number}),
            ("worker", "payout.sending", "payout", "ok", {"attempt": 1, "key": ikey}),
            ("cli:finance-ann", "payout.held", "payout", "held",
             {"reason": "=HYPERLINK(\"http://x\") needs a second look, ü \u0000 \u2028 𝄞", "limit": "1e3"})
            if held else ("worker", "payout.sent", "payout", "ok", {"provider_ref": f"sct-{number:08d}.xml"}),
        ]
        for actor, action, stype, outcome, detail in entries:
            seq += 1
            fields = [seq, at, actor, action, stype, str(number), outcome, origin, canonical_json(detail), prev]
            prev = hash_fields(fields)
            yield [*fields, prev]
        tables.events.append({"id": number, "key": key, "source": "salesforce", "object_type": "Opportunity",
                              "object_id": f"006{number:012d}", "transition": "won", "event_type": "deal_won",
                              "occurred_at": moment, "payee_id": payee, "amount": amount, "currency": "USD",
                              "attributes": "{}", "status": "calculated", "ingested_at": moment,
                              "calculated_at": moment})
        tables.calculations.append({"id": number, "event_id": number, "program": "spiff", "program_version_id": 1,
                                    "status": "rewarded", "calculated_at": moment})
        tables.payouts.append({"id": number, "idempotency_key": ikey, "payee_id": payee, "rail": "bank_transfer",
                               "route_reason": "default", "currency": "USD", "amount_minor": cents, "item_count": 1,
                               "status": status, "attempts": 1, "created_at": moment, "updated_at": moment})
        tables.rewards.append({"id": number, "event_id": number, "program": "spiff", "payee_id": payee,
                               "amount_minor": cents, "currency": "USD", "description": "", "details": "{}",
                               "status": "scheduled" if held else "sent", "approvals_needed": 0, "payout_id": number,
                               "created_at": moment, "updated_at": moment, "kind": "reward"})
        tables.items.append({"payout_id": number, "reward_id": number, "amount_minor": cents})


def build(url: str, n: int, seed: int) -> tuple[int, str]:
    """Migrate the database at ``url``, write ``n`` chained entries and the rows they record; return the head."""
    from sqlalchemy import text

    from payhub.db import migrate
    from payhub.db.engine import make_engine, sqlite_file
    from payhub.db.schema import calculations, events, payout_items, payouts, program_versions, rewards

    engine = make_engine(url)
    migrate.upgrade(engine)
    head = (0, GENESIS)
    started = time.perf_counter()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tables = Tables([], [], [], [], [])
    path = sqlite_file(url)
    insert = f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    if path is not None:
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("BEGIN")
        batch: list[list[Any]] = []
        for row in _chain(n, seed, tables):
            batch.append(row)
            if len(batch) == BATCH:
                raw.executemany(insert, batch)
                batch = []
            head = (row[0], row[-1])
        raw.executemany(insert, batch)
        raw.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", head)
        raw.execute("COMMIT")
        raw.close()
    else:
        with engine.begin() as conn:
            driver: Any = conn.connection.driver_connection
            with driver.cursor() as cur, cur.copy(f"COPY audit_log ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in _chain(n, seed, tables):
                    copy.write_row(row)
                    head = (row[0], row[-1])
            conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": head[0], "h": head[1]})
    with engine.begin() as conn:
        conn.execute(program_versions.insert(), [{"id": 1, "program": "spiff", "version": 3, "calculator": "spiff",
                                                  "params": "{}", "fingerprint": "0" * 64, "created_at": start}])
        for table, rows in ((events, tables.events), (calculations, tables.calculations), (payouts, tables.payouts),
                            (rewards, tables.rewards), (payout_items, tables.items)):
            for low in range(0, len(rows), BATCH):
                conn.execute(table.insert(), rows[low:low + BATCH])
        if path is None:
            for table in ("program_versions", "events", "calculations", "payouts", "rewards"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT coalesce(max(id), 1) FROM {table}))"))
    if path is None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    if path is not None:
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
    log(f"built {n:,} entries in {time.perf_counter() - started:.1f} s")
    return head


@contextlib.contextmanager
def database(pg_url: str | None, workdir: Path, name: str) -> Iterator[str]:
    """A fresh database: a SQLite file in ``workdir``, or a new database on ``pg_url``'s server (dropped after)."""
    if pg_url is None:
        yield f"sqlite:///{workdir / (name + '.db')}"
        return
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    db = f"payhub_audit_speed_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    try:
        yield make_url(pg_url).set(database=db).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One command: entries it covered, wall seconds, CPU seconds and peak RSS (bytes) of the child."""

    command: str
    entries: int
    seconds: float
    cpu: float
    peak_rss: int

    @property
    def rate(self) -> float:
        return self.entries / self.seconds if self.seconds else 0.0


def payhub(config: Path, args: list[str], entries: int, out: Path) -> Run:
    """Run ``payhub -c config args`` with standard output to ``out``; exit status 0 required."""
    started = time.perf_counter()
    with out.open("wb") as fh:
        proc = subprocess.Popen([*PAYHUB, "-c", str(config), "--actor", "bench", *args], stdout=fh,
                                stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: payhub {' '.join(args)} failed ({code}): "
                         f"{out.read_text(errors='replace')[-1500:]}{err.decode(errors='replace')[-1500:]}")
    return Run(args[1], entries, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def measure(url: str, n: int, seed: int, workdir: Path, label: str) -> dict[str, Run]:
    """Build ``n`` entries at ``url`` and time ``audit verify`` and ``audit export --format jsonl`` on them."""
    # Built in a process of its own: the rows it holds must not count in the measured children's peak RSS (a
    # forked child starts with its parent's).
    made = subprocess.run([sys.executable, "-c", "import sys; from bench.audit_speed import build; "
                           "print(*build(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))", url, str(n), str(seed)],
                          cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True, text=True)
    sys.stderr.write(made.stderr)
    seq, digest = made.stdout.split()
    head = (int(seq), digest)
    config = workdir / f"{label}.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    runs = {"verify": payhub(config, ["audit", "verify", "--no-checkpoints"], head[0], workdir / f"{label}.verify")}
    text = (workdir / f"{label}.verify").read_text()
    if f"audit log OK: {head[0]} entries" not in text:
        raise SystemExit(f"bench: audit verify did not check the {head[0]} entries built: {text[-1500:]}")
    export = workdir / f"{label}.jsonl"
    runs["export"] = payhub(config, ["audit", "export", "--format", "jsonl", "-o", str(export)], head[0],
                            workdir / f"{label}.export")
    with export.open("rb") as fh:
        lines = sum(1 for _ in fh)
    if lines < head[0]:
        raise SystemExit(f"bench: audit export wrote {lines} entries, {head[0]} expected")
    export.unlink()
    for name, run in runs.items():
        log(f"{label}: {name} {run.entries:,} entries in {run.seconds:.2f} s ({run.rate:,.0f}/s), cpu {run.cpu:.2f} s,"
            f" peak RSS {run.peak_rss / MB:.1f} MB")
    return runs


def figures_for(db: str, big: dict[str, Run], small: dict[str, Run], n: int, note: str) -> list[Figure]:
    def cpu(run: Run) -> str:
        return f"cpu {run.cpu:.1f} s = {run.entries / run.cpu if run.cpu else 0:,.0f} entries per cpu s"

    out = [Figure(f"audit verify, {db}, {n:,} entries", big["verify"].rate, "entries/s", VERIFY_TARGET,
                  note=f"{note}; {cpu(big['verify'])}"),
           Figure(f"audit export jsonl, {db}, {n:,} entries", big["export"].rate, "entries/s", EXPORT_TARGET,
                  note=f"{note}; {cpu(big['export'])}")]
    for name in ("verify", "export"):
        a, b = big[name].peak_rss, small[name].peak_rss
        out.append(Figure(f"audit {name} peak RSS, {db}, {n:,} / {n // 10:,} entries", a / b if b else None,
                          "x", FLAT_TARGET, better="lower", note=f"{a / MB:.0f} MB / {b / MB:.0f} MB"))
    return out


def compare(opts: CompareOptions) -> list[Figure]:
    """The audit verify/export figures on SQLite, and on PostgreSQL when ``opts.pg_url`` is set."""
    n = int(opts.extra.get("audit_entries", 100_000 if opts.quick else 1_000_000))
    workdir = Path(tempfile.mkdtemp(prefix="payhub-audit-speed-", dir=opts.workdir))
    figures: list[Figure] = []
    try:
        for db, pg in (("SQLite", None), ("PostgreSQL", opts.pg_url)):
            if db == "PostgreSQL" and pg is None:
                continue
            load = os.getloadavg()[0]
            measured = {}
            for size in (n // 10, n):
                label = f"{db.lower()}-{size}"
                with database(pg, workdir, label) as url:
                    measured[size] = measure(url, size, opts.seed, workdir, label)
            note = f"load {load:.1f}→{os.getloadavg()[0]:.1f}, wall incl. start-up"
            figures += figures_for(db, measured[n], measured[n // 10], n, note)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="payhub audit verify / export entries/s and peak RSS.")
    ap.add_argument("--entries", "-n", type=int, help="entries (default 1,000,000; 100,000 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server URL (default {DEFAULT_PG})")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    extra = {"audit_entries": args.entries} if args.entries else {}
    opts = CompareOptions(pg_url=None if args.no_pg else args.pg, quick=args.quick, seed=args.seed, extra=extra)
    figures = compare(opts)
    print(json.dumps([f.as_dict() for f in figures], indent=2) if args.json else render_table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
