"""Time ``payhub.kpis.kpis`` (the console's overview and ``payhub report kpi``) on a database holding N rewards
(default 1,000,000).

Builds the database first: created by payhub's migrations, then filled in bulk (SQLite ``executemany`` with
``synchronous=OFF``, PostgreSQL ``COPY`` then ``VACUUM ANALYZE``) with what the KPIs read, shaped like a year of a
live system: N deals over 2026 from 40 partners and 1,000 payees (USD 80 %, EUR 15 %, JPY 5 %), one reward per deal
in one of three programs (``spiff`` with a quarterly budget, ``rebate`` with a monthly budget per partner, ``mdf``),
statuses as a running system has them (paid 80 %, sent 10 %, scheduled 3 %, pending 3 %, held 2 %, awaiting approval
1 %, cancelled 1 %), one approval each for rewards that needed one (5 %), a payout per ten paid, sent or scheduled
rewards of a payee's currency with its items (paid one to twenty days after the deal; a few failed, unknown, held
and unresolved), and co-op fund entries for a thousand deals.

Then it calls :func:`payhub.kpis.kpis` (and :func:`payhub.kpis.figures`) for a quarter (``2026-Q4``: a quarter of
the rows), for the whole year (``2026``: all of them) and for a month, ``--calls`` times each, and prints the median
and the slowest call, with the time of each query of one call.

    python -m bench.kpis                         # 1,000,000 rewards on SQLite (building takes a few minutes)
    python -m bench.kpis --rewards 100000        # a quicker run
    python -m bench.kpis --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python -m bench.kpis --json

``--pg URL`` names a PostgreSQL server: a fresh database is created there for the run and dropped afterwards
(``--keep`` keeps it, and the work directory). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BATCH = 20_000
STATUSES = (("paid", 80), ("sent", 10), ("scheduled", 3), ("pending", 3), ("held", 2), ("awaiting_approval", 1),
            ("cancelled", 1))
PROGRAMS = ("spiff", "rebate", "mdf")
BUDGETS = {"spiff": {"amount": "100000000", "currency": "USD", "period": "quarter", "per": "program"},
           "rebate": {"amount": "500000", "currency": "USD", "period": "month", "per": "partner"}}
CURRENCIES = (("USD", 80), ("EUR", 15), ("JPY", 5))
PERIODS = ("2026-Q4", "2026", "2026-11")

COLUMNS = {
    "events": ("id", "key", "source", "object_type", "object_id", "transition", "event_type", "occurred_at",
               "payee_id", "partner_id", "amount", "currency", "attributes", "status", "ingested_at",
               "calculated_at"),
    "calculations": ("id", "event_id", "program", "program_version_id", "status", "calculated_at"),
    "payouts": ("id", "idempotency_key", "payee_id", "rail", "route_reason", "currency", "amount_minor",
                "item_count", "status", "reason", "hold_code", "attempts", "created_at", "updated_at"),
    "rewards": ("id", "event_id", "program", "payee_id", "amount_minor", "currency", "description", "details",
                "status", "hold_code", "approvals_needed", "budget_key", "payout_id", "created_at", "updated_at"),
    "payout_items": ("payout_id", "reward_id", "amount_minor"),
    "approvals": ("reward_id", "approver", "approved_at"),
    "fund_entries": ("event_id", "program", "holder_id", "unit", "amount", "occurred_at", "description", "details",
                     "created_at"),
}
ORDER = ("events", "calculations", "payouts", "rewards", "payout_items", "approvals", "fund_entries")


def log(message: str) -> None:
    print(f"[kpis-bench] {message}", file=sys.stderr, flush=True)


def _weighted(choices: tuple[tuple[str, int], ...]) -> list[str]:
    return [value for value, weight in choices for _ in range(weight)]


def _rows(n: int, seed: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(table, row) in an order foreign keys accept: each payout before its rewards, items after both."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=365) / max(n, 1)
    statuses, currencies = _weighted(STATUSES), _weighted(CURRENCIES)
    payout_id = 0
    open_payouts: dict[tuple[str, str, str], list[Any]] = {}  # (status, payee, currency) -> [id, rewards, at]
    pending_items: list[tuple[int, int, int]] = []
    for i in range(1, n + 1):
        at = start + step * i
        payee = f"rep-{rnd.randrange(1000):04d}"
        partner = f"partner-{rnd.randrange(40):02d}"
        currency = rnd.choice(currencies)
        amount = f"{rnd.randrange(100, 100_000)}.{rnd.randrange(100):02d}" if currency != "JPY" else \
            str(rnd.randrange(10_000, 10_000_000))
        program = PROGRAMS[i % 3]
        yield "events", (i, f"crm:Opportunity:006{i:012d}:won", "crm", "Opportunity", f"006{i:012d}", "won",
                         "deal_won", at, payee, partner, amount, currency, "{}", "calculated", at, at)
        yield "calculations", (i, i, program, PROGRAMS.index(program) + 1, "rewarded", at)
        status = rnd.choice(statuses)
        created = at + timedelta(minutes=rnd.randrange(1, 600))
        minor = rnd.randrange(100, 1_000_000)
        needed = 1 if rnd.random() < 0.05 else 0
        if status == "awaiting_approval":
            needed = 1
        budget_key = None
        if program == "spiff" and currency == "USD":
            budget_key = f"spiff:{at.year}-Q{(at.month - 1) // 3 + 1}"
        elif program == "rebate" and currency == "USD":
            budget_key = f"rebate:{at.year}-{at.month:02d}:{partner}"
        hold_code = None
        if status == "held":
            hold_code = rnd.choice(["budget", "no_payee", "operator", "payout_failed"])
        payout = None
        if status in ("paid", "sent", "scheduled"):
            group = (status, payee, currency)
            current = open_payouts.get(group)
            if current is None or current[1] == 10:
                payout_id += 1
                paid_at = created + timedelta(days=rnd.randrange(1, 21), hours=rnd.randrange(24))
                p_status, reason, p_hold = status, None, None
                if status == "sent" and payout_id % 97 == 0:
                    p_status, reason = "unknown", "timeout after sending"
                elif status == "sent" and payout_id % 89 == 0:
                    p_status, reason = "failed", "account closed"
                elif status == "scheduled" and payout_id % 11 == 0:
                    p_status, reason, p_hold = "held", "over screening limit", "screening"
                elif status == "scheduled" and payout_id % 13 == 0:
                    p_status, reason = "unresolved", "the rail cannot tell"
                current = open_payouts[group] = [payout_id, 0]
                yield "payouts", (payout_id, f"ph-{uuid.UUID(int=rnd.getrandbits(128)).hex}", payee,
                                  rnd.choice(["bank", "bank", "gift", "credit"]), "default rail", currency, 0, 10,
                                  p_status, reason, p_hold, 1, created,
                                  paid_at if p_status == "paid" else created)
            current[1] += 1
            payout = current[0]
            pending_items.append((payout, i, minor))
        yield "rewards", (i, i, program, payee, minor, currency, "", "{}", status, hold_code, needed, budget_key,
                          payout, created, created)
        if needed and status not in ("awaiting_approval", "held", "cancelled"):
            yield "approvals", (i, "ops:ann", created + timedelta(hours=rnd.randrange(1, 72)))
        if i % (max(n // 1000, 1)) == 0:
            yield "fund_entries", (i, program, partner, "USD", f"{rnd.randrange(1, 5000)}.00", at, "", "{}", at)
        if len(pending_items) >= BATCH // 2:
            for item in pending_items:
                yield "payout_items", item
            pending_items = []
    for item in pending_items:
        yield "payout_items", item


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
    now = datetime(2026, 1, 1, tzinfo=UTC)
    versions = [(index, program, 1, "flat", json.dumps({"budget": BUDGETS[program]} if program in BUDGETS else {}),
                 f"{index:064d}", now) for index, program in enumerate(PROGRAMS, start=1)]
    path = sqlite_file(url)
    if path is not None:
        engine.dispose()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO program_versions (id, program, version, calculator, params, fingerprint, "
                         "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [[_sqlite_value(v) for v in row] for row in versions])
        batches: dict[str, list[list[Any]]] = {table: [] for table in COLUMNS}

        def flush() -> None:
            for table in ORDER:
                columns = COLUMNS[table]
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                                 f"VALUES ({', '.join('?' * len(columns))})", batches[table])
                counts[table] += len(batches[table])
                batches[table] = []

        for table, row in _rows(n, seed):
            batches[table].append([_sqlite_value(v) for v in row])
            if table == "payout_items" and len(batches["payout_items"]) >= BATCH // 2:
                flush()
        flush()
        conn.execute("UPDATE payouts SET amount_minor = (SELECT coalesce(sum(amount_minor), 0) FROM payout_items "
                     "WHERE payout_items.payout_id = payouts.id)")
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    else:
        with engine.begin() as sa_conn:
            raw: Any = sa_conn.connection.driver_connection
            with raw.cursor() as cur:
                cur.executemany("INSERT INTO program_versions (id, program, version, calculator, params, fingerprint, "
                                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)", versions)
                rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
                for table, row in _rows(n, seed):
                    rows[table].append(row)
                    if table == "payout_items" and len(rows["payout_items"]) >= BATCH // 2:
                        _copy(cur, rows, counts)
                _copy(cur, rows, counts)
            sa_conn.execute(text("UPDATE payouts SET amount_minor = s.total FROM (SELECT payout_id, sum(amount_minor) "
                                 "AS total FROM payout_items GROUP BY payout_id) s WHERE s.payout_id = payouts.id"))
            for table in ("events", "calculations", "payouts", "rewards", "program_versions"):
                sa_conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT coalesce(max(id), 1) FROM {table}))"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as sa_conn:
            sa_conn.execute(text("VACUUM ANALYZE"))
        engine.dispose()
    log(f"built {counts['rewards']:,} rewards, {counts['events']:,} events, {counts['payouts']:,} payouts, "
        f"{counts['payout_items']:,} items in {time.perf_counter() - started:.1f} s")
    return counts


def _copy(cur: Any, rows: dict[str, list[tuple[Any, ...]]], counts: dict[str, int]) -> None:
    for table in ORDER:
        with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
            for row in rows[table]:
                copy.write_row(row)
        counts[table] += len(rows[table])
        rows[table] = []


def measure(url: str, calls: int) -> dict[str, Any]:
    """Time kpis() + figures() per period, and each query of one call."""
    from payhub import kpis as k
    from payhub.db.engine import make_engine

    engine = make_engine(url)
    results: dict[str, Any] = {}
    parts = {"accrued and approved": k.accrued_and_approved, "paid and timing": k.paid_and_timing,
             "budgets": k.budgets,
             "funds": k.funds, "payouts": k.payouts, "revenue": k.revenue,
             "open payouts": lambda conn, _period: k.open_payouts(conn),
             "held rewards": lambda conn, _period: k.held_rewards(conn)}
    try:
        for label in PERIODS:
            period = k.Period.parse(label)
            times = []
            with engine.connect() as conn:
                for _ in range(calls):
                    started = time.perf_counter()
                    found = k.kpis(conn, period)
                    k.figures(found)
                    times.append(time.perf_counter() - started)
                each = {}
                for name, fn in parts.items():
                    started = time.perf_counter()
                    fn(conn, period)
                    each[name] = round(time.perf_counter() - started, 3)
            rewards_in = sum(f.rewards for f in found.accrued)
            results[label] = {"calls": calls, "median_s": round(statistics.median(times), 3),
                              "max_s": round(max(times), 3), "rewards_accrued": rewards_in, "queries_s": each}
            log(f"{label}: median {results[label]['median_s']} s, max {results[label]['max_s']} s "
                f"({rewards_in:,} rewards accrued in it)")
    finally:
        engine.dispose()
    return results


def host_info() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version,
            "loadavg_1min": round(os.getloadavg()[0], 2)}


def render(report: dict[str, Any]) -> str:
    h = report["host"]
    lines = [f"payhub kpis bench: {report['rewards']:,} rewards ({report['payouts']:,} payouts, "
             f"{report['payout_items']:,} items) on {report['database']}",
             f"host: {h['cpus']} CPUs, Python {h['python']}, SQLite {h['sqlite']}, load average {h['loadavg_1min']}",
             "", f"{'period':<10}{'rewards in it':>15}{'median s':>10}{'max s':>8}   slowest queries"]
    for label, r in report["results"].items():
        slowest = sorted(r["queries_s"].items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"{label:<10}{r['rewards_accrued']:>15,}{r['median_s']:>10.3f}{r['max_s']:>8.3f}   "
                     + ", ".join(f"{name} {s:.3f}" for name, s in slowest))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rewards", type=int, default=1_000_000, help="rewards stored (default 1,000,000)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per period (default 3)")
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL server to run on instead of a SQLite file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (and the PostgreSQL database)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--existing", metavar="URL", help="measure a database an earlier --keep run built")
    args = parser.parse_args(argv)
    if args.existing:
        from sqlalchemy import create_engine, func, select

        from payhub.db.schema import payout_items, payouts, rewards

        engine = create_engine(args.existing)
        with engine.connect() as conn:
            counts = {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                      for name, table in (("rewards", rewards), ("payouts", payouts), ("payout_items", payout_items))}
        engine.dispose()
        report = {**counts, "database": args.existing.split(":", 1)[0], "host": host_info(),
                  "results": measure(args.existing, args.calls)}
        print(json.dumps(report, indent=2) if args.json else render(report))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="payhub-kpis-", dir=args.workdir))
    admin, name = None, None
    if args.pg:
        from sqlalchemy import create_engine, make_url, text

        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        name = f"payhub_kpis_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
        where = f"PostgreSQL ({make_url(args.pg).host})"
    else:
        url = f"sqlite:///{workdir / 'payhub.db'}"
        where = "SQLite"
    try:
        counts = build(url, args.rewards, args.seed)
        results = measure(url, args.calls)
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
    report = {"rewards": counts["rewards"], "payouts": counts["payouts"], "payout_items": counts["payout_items"],
              "database": where, "host": host_info(), "results": results}
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
