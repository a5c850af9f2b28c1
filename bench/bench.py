"""Throughput and memory benchmark of the payhub pipeline on SQLite.

Pushes N synthetic CRM events through the real pipeline (``Worker.run_once``: payees → ingest → calculate →
schedule → disburse → settle) on a fresh, migrated SQLite file: the built-in ``file`` source reads a generated
CSV, a built-in calculator (``percentage`` or ``flat``) makes one reward per event, and the in-memory
``payhub.testing.FakeRail`` accepts every payout. Each stage function the worker calls is wrapped to measure its
wall time and peak memory. In the same run, the *ceiling* is measured: plain ``sqlite3.executemany`` of the very
rows the pipeline wrote, into tables of the same shape in a fresh file, with the same journal and synchronous
settings. See bench/README.md for how to read the figures.

    python bench/bench.py                       # 100,000 events, human-readable table
    python bench/bench.py -n 1000000 --json     # JSON on stdout
    python bench/bench.py --sizes 100000,300000,1000000   # memory flatness: one fresh process per size
    python bench/bench.py -n 100000 --profile   # cProfile per stage, top functions printed and saved
    python bench/bench.py -n 100000 --profile pyinstrument --no-ceiling   # call trees per stage (pip install)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO = BENCH_DIR.parent

# The stage functions payhub.worker calls, in pipeline order: (stage, names it may have in payhub.worker, unit of
# the count it returns). A function may return the count alone or a tuple starting with it.
STAGES = (
    ("payees", ("sync_payees",), "payees"),
    ("ingest", ("poll_batches", "poll"), "events"),
    ("calculate", ("calculate_batch",), "events"),
    ("schedule", ("schedule_batch",), "rewards"),
    ("disburse", ("disburse_rail",), "payouts"),
    ("settle", ("settle_rail",), "payouts"),
)
RAIL_ENTRY_POINT = "bench_memory"
SOURCE_NAME = "deals"
PROGRAM_NAME = "bench"
RAIL_NAME = "memory"
PRODUCTS = ("licence", "support", "services", "hardware", "training")
MB = 1024 * 1024


# ------------------------------------------------------------------------------------------------- memory


class RssMeter:
    """Peak resident memory of an interval.

    On Linux the kernel's high-water mark (``VmHWM`` in /proc/self/status) is reset to the current RSS by writing
    ``5`` to /proc/self/clear_refs, so each interval gets its own peak. Elsewhere only the process-lifetime
    high-water mark (``ru_maxrss``) exists, and a stage's figure is then the peak of the process *so far*.
    Resetting also lowers ``ru_maxrss``, so the process peak is kept here as the maximum of every reading.
    """

    def __init__(self) -> None:
        self.process_peak = 0
        self.resettable = self._reset()
        self.method = (
            "peak RSS per stage: kernel high-water mark VmHWM, reset at the start of every stage call "
            "(/proc/self/clear_refs)" if self.resettable else
            "peak RSS: ru_maxrss, the process high-water mark so far (cannot be reset on this system)"
        )

    @staticmethod
    def _status(field_name: str) -> int | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(field_name + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            return False
        return self._status("VmHWM") is not None

    def peak(self) -> int:
        """Peak RSS in bytes since the last reset (or since the process started)."""
        value = self._status("VmHWM") if self.resettable else None
        if value is None:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
            value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        self.process_peak = max(self.process_peak, value)
        return value

    def current(self) -> int:
        return self._status("VmRSS") or 0

    def parts(self) -> dict[str, float]:
        """Current RSS split into anonymous memory (the heap), mapped files and shared memory (SQLite's -shm), MB."""
        out = {}
        for name in ("RssAnon", "RssFile", "RssShmem"):
            value = self._status(name)
            if value is not None:
                out[name] = value / MB
        return out

    def reset(self) -> None:
        self.peak()  # fold the interval that ends into the process peak before it is forgotten
        if self.resettable:
            self._reset()


# ------------------------------------------------------------------------------------------------- stages


@dataclass
class StageStats:
    name: str
    unit: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    calls: int = 0
    returned: int = 0
    peak_rss: int = 0
    peak_traced: int = 0


@dataclass
class Meter:
    """Times every call of each stage function and records its peak memory (and, on request, a profile)."""

    rss: RssMeter
    trace: bool = False
    profiler: StageProfiler | None = None
    stats: dict[str, StageStats] = field(default_factory=dict)
    sql: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (stage, statement) -> [count, seconds]
    current: str | None = None

    def __post_init__(self) -> None:
        for name, _attr, unit in STAGES:
            self.stats[name] = StageStats(name, unit)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageStats]:
        st = self.stats[name]
        self.rss.reset()
        if self.trace:
            tracemalloc.reset_peak()
        self.current = name
        start, cpu_start = time.perf_counter(), time.process_time()
        if self.profiler is not None:
            self.profiler.start(self.profiler.main, name)
        try:
            yield st
        finally:
            if self.profiler is not None:
                self.profiler.stop(self.profiler.main, name)
            st.seconds += time.perf_counter() - start
            st.cpu_seconds += time.process_time() - cpu_start
            st.calls += 1
            self.current = None
            st.peak_rss = max(st.peak_rss, self.rss.peak())
            if self.trace:
                st.peak_traced = max(st.peak_traced, tracemalloc.get_traced_memory()[1])

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name) as st:
                result = fn(*args, **kwargs)
                n = result[0] if isinstance(result, tuple) else result
                st.returned += n or 0
                return result

        measured.__wrapped__ = fn  # type: ignore[attr-defined]
        return measured

    def wrap_plugin_call(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Profile a plugin method too: payhub runs plugin calls in a guard thread, which a profiler started in
        the main thread does not see."""
        profiler = self.profiler
        assert profiler is not None

        def profiled(*args: Any, **kwargs: Any) -> Any:
            stage = self.current or "other"
            profiler.start(profiler.plugin, stage)
            try:
                return fn(*args, **kwargs)
            finally:
                profiler.stop(profiler.plugin, stage)

        return profiled


class StageProfiler:
    """One profiler per stage for the main thread, and one per stage for plugin calls (run in a guard thread).

    ``cprofile`` (standard library) counts every call: exact call counts, but Python-heavy code looks slower
    than it is. ``pyinstrument`` (``pip install pyinstrument``) samples: call trees with truer proportions.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.main: dict[str, Any] = {}
        self.plugin: dict[str, Any] = {}
        if kind == "pyinstrument":
            try:
                import pyinstrument  # noqa: F401
            except ImportError:
                raise SystemExit("bench: --profile pyinstrument needs `pip install pyinstrument`") from None

    def _new(self) -> Any:
        if self.kind == "cprofile":
            return cProfile.Profile()
        from pyinstrument import Profiler

        return Profiler(interval=0.0005)

    def start(self, table: dict[str, Any], stage: str) -> None:
        prof = table.get(stage)
        if prof is None:
            prof = table[stage] = self._new()
        if self.kind == "cprofile":
            prof.enable()
        else:
            prof.start()

    def stop(self, table: dict[str, Any], stage: str) -> None:
        if self.kind == "cprofile":
            table[stage].disable()
        else:
            table[stage].stop()

    def report(self, meter: Meter, top: int) -> str:
        out = io.StringIO()
        for name, _attr, _unit in STAGES:
            if name not in self.main or meter.stats[name].seconds < 0.05:
                continue
            plugin = name in self.plugin
            out.write(f"\n======== {name}: {meter.stats[name].seconds:.2f} s wall, {self.kind}"
                      + (" (plugin calls run in a guard thread, shown separately for pyinstrument and merged for "
                         "cProfile; the main thread waits in lock.acquire meanwhile)" if plugin else "") + "\n")
            if self.kind == "cprofile":
                stats = pstats.Stats(self.main[name], stream=out)
                if plugin:
                    stats.add(self.plugin[name])
                stats.sort_stats("tottime").print_stats(top)
                stats.sort_stats("cumulative").print_stats(top)
            else:
                out.write(self.main[name].output_text(unicode=False, color=False))
                if plugin:
                    out.write(f"\n-------- {name}: plugin calls (guard thread)\n")
                    out.write(self.plugin[name].output_text(unicode=False, color=False))
        return out.getvalue()

    def save(self, base: Path) -> list[Path]:
        """cProfile: one .prof per stage (plugin thread merged), for pstats or snakeviz. pyinstrument: nothing."""
        paths = []
        if self.kind == "cprofile":
            for name, prof in self.main.items():
                stats = pstats.Stats(prof)
                if name in self.plugin:
                    stats.add(self.plugin[name])
                path = Path(f"{base}-{name}.prof")
                stats.dump_stats(path)
                paths.append(path)
        return paths


def time_statements(engine: Any, meter: Meter) -> None:
    """Add the time of every statement SQLAlchemy sends to the driver to ``meter.sql``, by stage and statement."""
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seconds = time.perf_counter() - conn.info["bench_started"].pop()
        text = " ".join(statement.split())
        if len(text) > 100:
            text = text[:97] + "..."
        entry = meter.sql.setdefault((meter.current or "other", ("many: " if executemany else "") + text), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds


@contextlib.contextmanager
def patched_worker(meter: Meter) -> Iterator[None]:
    """Route the stage functions payhub.worker calls through the meter; restore them afterwards."""
    import payhub.worker as worker_module

    saved = {}
    for name, attrs, _unit in STAGES:
        found = [attr for attr in attrs if callable(getattr(worker_module, attr, None))]
        if not found:
            raise SystemExit(f"bench: payhub.worker calls none of {', '.join(attrs)} for the {name} stage; "
                             "update STAGES in bench/bench.py")
        for attr in found:
            saved[attr] = getattr(worker_module, attr)
            setattr(worker_module, attr, meter.wrap(name, saved[attr]))
    try:
        yield
    finally:
        for attr, fn in saved.items():
            setattr(worker_module, attr, fn)


# ------------------------------------------------------------------------------------------------- inputs


def write_inputs(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The events CSV, the payees CSV, the settings file and a plugin distribution exposing FakeRail."""
    rng = random.Random(args.seed)
    currencies = args.currencies
    payee_ids = [f"P{k:06d}" for k in range(args.payees)]
    with (workdir / "payees.csv").open("w", encoding="utf-8") as fh:
        fh.write("id,name,country,currency,email,account\n")
        for k, pid in enumerate(payee_ids):
            fh.write(f"{pid},Partner {k},US,{currencies[k % len(currencies)]},p{k}@example.com,ACCT{k:08d}\n")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with (workdir / "deals.csv").open("w", encoding="utf-8", buffering=1 << 20) as fh:
        fh.write("id,type,occurred_at,payee_id,partner_id,amount,currency,product\n")
        for i in range(args.events):
            k = rng.randrange(args.payees)
            cents = rng.randrange(10_000, 5_000_000)
            moment = (base + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            fh.write(f"OPP{i:09d},deal_won,{moment},{payee_ids[k]},PT{k:06d},{cents // 100}.{cents % 100:02d},"
                     f"{currencies[k % len(currencies)]},{PRODUCTS[i % len(PRODUCTS)]}\n")
    if args.calculator == "flat":
        program = f'calculator = "flat"\namount = "25.00"\ncurrency = "{currencies[0]}"\n'
    else:
        program = 'calculator = "percentage"\npercent = "2.5"\n'
    (workdir / "payhub.toml").write_text(f"""\
[database]
url = "sqlite:///payhub.db"
sqlite_synchronous = "{args.synchronous}"
batch_size = {args.batch_size}

[payees]
file = "payees.csv"

[sources.{SOURCE_NAME}]
plugin = "file"
path = "deals.csv"
batch_size = {args.source_batch}
settle_seconds = 0

[programs.{PROGRAM_NAME}]
{program}
[rails.{RAIL_NAME}]
plugin = "{RAIL_ENTRY_POINT}"
max_batch = {args.rail_batch}

[routing]
default_rail = "{RAIL_NAME}"
""")
    site = workdir / "site"
    dist = site / "payhub_bench_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-bench-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[payhub.rails]\n{RAIL_ENTRY_POINT} = payhub.testing:FakeRail\n")
    sys.path.insert(0, str(site))
    return {"csv_bytes": (workdir / "deals.csv").stat().st_size}


# ------------------------------------------------------------------------------------------------- the run


def run_pipeline(workdir: Path, args: argparse.Namespace, rss: RssMeter) -> dict[str, Any]:
    from payhub.db import migrate
    from payhub.db.engine import make_engine
    from payhub.runtime import Runtime
    from payhub.settings import load_settings
    from payhub.worker import Worker

    host = host_info()  # the commit and tree state of the code imported for this run
    setup: dict[str, float] = {}
    t0 = time.perf_counter()
    inputs = write_inputs(workdir, args)
    setup["generate_inputs_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    settings = load_settings(workdir / "payhub.toml")
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.database.sqlite_synchronous)
    migrate.upgrade(engine)
    engine.dispose()
    setup["migrate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rt = Runtime(settings)
    rt.load_plugins()
    rail = rt.plugins.rails[RAIL_NAME]
    meter = Meter(rss, trace=args.tracemalloc, profiler=StageProfiler(args.profile) if args.profile else None)
    if args.profile:
        source = rt.plugins.sources[SOURCE_NAME]
        source.fetch = meter.wrap_plugin_call(source.fetch)  # type: ignore[method-assign]
        rail.send = meter.wrap_plugin_call(rail.send)  # type: ignore[method-assign]
        rail.lookup = meter.wrap_plugin_call(rail.lookup)  # type: ignore[method-assign]
    if args.sql_timing:
        time_statements(rt.engine, meter)
    worker = Worker(rt, observer=Progress(args.quiet))
    worker.start()
    setup["start_s"] = time.perf_counter() - t0

    if args.tracemalloc:
        tracemalloc.start()
    rss.reset()
    baseline, baseline_parts = rss.current(), rss.parts()
    try:
        with patched_worker(meter):
            load_before = _loadavg()
            t0, cpu0 = time.perf_counter(), time.process_time()
            summary = worker.run_once()
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            load_after = _loadavg()
    finally:
        worker.stop()
        end_peak, end_parts = rss.peak(), rss.parts()
        if args.tracemalloc:
            tracemalloc.stop()
        rt.close()
    if not args.quiet:
        print(file=sys.stderr)
    return {"host": host, "setup": setup, "inputs": inputs, "meter": meter, "elapsed": elapsed, "cpu": cpu,
            "load": {"before": load_before, "after": load_after}, "baseline_rss": baseline,
            "rss_parts": {"before": baseline_parts, "after": end_parts}, "rail_ledger_mb": _ledger_mb(rail),
            "run_peak_rss": max([end_peak] + [s.peak_rss for s in meter.stats.values()]),
            "summary": dict(summary.counts), "rail": rail}


class Progress:
    """Worker observer: a progress line on stderr every few seconds."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.counts: dict[str, int] = {}
        self.last = 0.0
        self.start = time.monotonic()

    def __call__(self, stage: str, n: int) -> None:
        self.counts[stage] = self.counts.get(stage, 0) + n
        now = time.monotonic()
        if self.quiet or now - self.last < 5:
            return
        self.last = now
        done = " ".join(f"{k} {v:,}" for k, v in self.counts.items())
        print(f"\r  [{now - self.start:7.1f}s] {done}   ", end="", file=sys.stderr, flush=True)


def _ledger_mb(rail: Any) -> float:
    """Memory FakeRail keeps about what it accepted (a key count per payout): test bookkeeping, not payhub's."""
    accepted = rail.accepted
    size = sys.getsizeof(accepted) + sum(sys.getsizeof(key) for key in accepted)
    size += sys.getsizeof(rail.calls) + sum(sys.getsizeof(call) for call in rail.calls)
    return size / MB


def check(db_path: Path, rail: Any, events: int) -> dict[str, Any]:
    """Row counts after the run, and whether the pipeline did the whole job exactly once."""
    from payhub.db.schema import metadata

    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        def one(sql: str) -> Any:
            return con.execute(sql).fetchone()[0]

        counts = {t.name: one(f"SELECT count(*) FROM {t.name}") for t in metadata.sorted_tables}
        events_by_status = dict(con.execute("SELECT status, count(*) FROM events GROUP BY status").fetchall())
        rewards_by_status = dict(con.execute("SELECT status, count(*) FROM rewards GROUP BY status").fetchall())
        payouts_by_status = dict(con.execute("SELECT status, count(*) FROM payouts GROUP BY status").fetchall())
        reward_sum = one("SELECT coalesce(sum(amount_minor), 0) FROM rewards")
        payout_sum = one("SELECT coalesce(sum(amount_minor), 0) FROM payouts")
    finally:
        con.close()
    accepted = rail.accepted
    problems = []
    if counts["events"] != events or events_by_status.get("calculated") != events:
        problems.append(f"expected {events} calculated events, found {events_by_status}")
    if rewards_by_status.get("sent", 0) != counts["rewards"] or counts["rewards"] == 0:
        problems.append(f"not every reward was sent: {rewards_by_status}")
    if payouts_by_status.get("sent", 0) != counts["payouts"]:
        problems.append(f"not every payout was sent: {payouts_by_status}")
    if reward_sum != payout_sum:
        problems.append(f"payouts total {payout_sum} but rewards total {reward_sum} (minor units)")
    if len(accepted) != counts["payouts"] or (accepted and max(accepted.values()) != 1):
        problems.append(f"rail accepted {len(accepted)} keys for {counts['payouts']} payouts, "
                        f"max {max(accepted.values(), default=0)} times each")
    return {"ok": not problems, "problems": problems, "rows": counts, "events_by_status": events_by_status,
            "rewards_by_status": rewards_by_status, "payouts_by_status": payouts_by_status}


# ------------------------------------------------------------------------------------------------- ceiling


def measure_ceiling(db_path: Path, workdir: Path, synchronous: str, event_batch: int, batch: int) -> dict[str, Any]:
    """Insert the rows payhub wrote, table by table, with plain sqlite3 into a fresh file of the same schema.

    Only ``BEGIN; executemany; COMMIT`` is timed (reading the rows back is not). Each transaction holds as many
    rows as payhub's do: the source batch size for events, the database batch size for the other tables.
    """
    from payhub.db.schema import metadata

    target = workdir / "ceiling.db"
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    dst = sqlite3.connect(target, isolation_level=None)
    tables: dict[str, dict[str, Any]] = {}
    try:
        dst.execute("PRAGMA journal_mode=WAL")
        dst.execute(f"PRAGMA synchronous={synchronous}")
        dst.execute("PRAGMA foreign_keys=ON")
        for table in metadata.sorted_tables:  # parents before children, so foreign keys hold
            name = table.name
            ddl = src.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
                              "ORDER BY type = 'index'", (name,)).fetchall()
            for (sql,) in ddl:
                dst.execute(sql)
            dst.execute(f"DELETE FROM {name}")  # audit_head's migration row is copied like the others
            columns = [row[1] for row in src.execute(f"PRAGMA table_info({name})")]
            insert = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            cursor = src.execute(f"SELECT {', '.join(columns)} FROM {name} ORDER BY rowid")
            size = event_batch if name == "events" else batch
            rows, seconds = 0, 0.0
            while chunk := cursor.fetchmany(size):
                start = time.perf_counter()
                dst.execute("BEGIN")
                dst.executemany(insert, chunk)
                dst.execute("COMMIT")
                seconds += time.perf_counter() - start
                rows += len(chunk)
            tables[name] = {"rows": rows, "seconds": seconds}
    finally:
        src.close()
        dst.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    total_rows = sum(t["rows"] for t in tables.values())
    total_s = sum(t["seconds"] for t in tables.values())
    events = tables.get("events", {"rows": 0, "seconds": 0.0})
    return {
        "method": f"sqlite3 {sqlite3.sqlite_version} executemany, WAL, synchronous={synchronous}, foreign_keys=ON, "
                  "same DDL as the migrated database, rows copied from it",
        "events": {**events, "rate": _rate(events["rows"], events["seconds"])},
        "all_tables": {"rows": total_rows, "seconds": total_s, "rate": _rate(total_rows, total_s)},
        "tables": tables,
    }


# ------------------------------------------------------------------------------------------------- report


def _rate(n: float, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def build_report(args: argparse.Namespace, run: dict[str, Any], checks: dict[str, Any],
                 ceiling: dict[str, Any] | None, rss: RssMeter, db_bytes: int) -> dict[str, Any]:
    meter: Meter = run["meter"]
    rows = checks["rows"]
    rewards = rows["rewards"]
    sent = checks["rewards_by_status"].get("sent", 0)
    stages = []
    for name, _attr, unit in STAGES:
        st = meter.stats[name]
        items, item_unit = st.returned, unit
        extra: dict[str, Any] = {}
        if name == "calculate":
            extra = {"events": st.returned}
            items, item_unit = rewards, "rewards"
        elif name == "disburse":
            extra = {"payouts": st.returned, "payouts_per_s": _rate(st.returned, st.seconds)}
            items, item_unit = sent, "rewards"
        stages.append({
            "stage": name, "seconds": st.seconds, "cpu_seconds": st.cpu_seconds, "calls": st.calls, "items": items,
            "unit": item_unit,
            "rate": _rate(items, st.seconds), **extra, "peak_rss_mb": st.peak_rss / MB,
            **({"peak_traced_mb": st.peak_traced / MB} if args.tracemalloc else {}),
        })
    elapsed = run["elapsed"]
    staged = sum(s["seconds"] for s in stages)
    end_to_end = {"seconds": elapsed, "cpu_seconds": run["cpu"], "rewards": sent, "rate": _rate(sent, elapsed),
                  "events_rate": _rate(rows["events"], elapsed), "outside_stages_s": elapsed - staged,
                  "peak_rss_mb": run["run_peak_rss"] / MB}
    report: dict[str, Any] = {
        "bench": "payhub pipeline on SQLite",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {**run["host"], "loadavg_1min": run["load"]},
        "params": {"events": args.events, "payees": args.payees, "calculator": args.calculator,
                   "currencies": args.currencies, "synchronous": args.synchronous, "batch_size": args.batch_size,
                   "source_batch": args.source_batch, "rail_batch": args.rail_batch, "seed": args.seed,
                   "tracemalloc": args.tracemalloc, "profile": args.profile},
        "setup": run["setup"],
        "stages": stages,
        "end_to_end": end_to_end,
        "memory": {"method": rss.method
                   + ("; peak_traced_mb: tracemalloc peak of Python allocations per stage" if args.tracemalloc
                      else ""),
                   "baseline_rss_mb": run["baseline_rss"] / MB, "run_peak_rss_mb": run["run_peak_rss"] / MB,
                   "rss_parts_mb": run["rss_parts"], "fake_rail_ledger_mb": run["rail_ledger_mb"],
                   "process_peak_rss_mb": rss.process_peak / MB},
        "checks": checks,
        "sql": _sql_summary(meter, args.profile_top) if args.sql_timing else None,
        "database": {"bytes": db_bytes, "rows_written": sum(rows.values()),
                     "rows_per_reward": sum(rows.values()) / rewards if rewards else None,
                     "csv_bytes": run["inputs"]["csv_bytes"]},
        "ceiling": None,
    }
    if ceiling is not None:
        ev, every = ceiling["events"], ceiling["all_tables"]
        all_tables_rewards_rate = _rate(rewards, every["seconds"])
        ingest = next(s for s in stages if s["stage"] == "ingest")
        ceiling["all_tables"]["rewards_rate"] = all_tables_rewards_rate
        ceiling["ratio"] = {
            "end_to_end_vs_events": _ratio(end_to_end["rate"], ev["rate"]),
            "ingest_vs_events": _ratio(ingest["rate"], ev["rate"]),
            "end_to_end_vs_all_tables": _ratio(end_to_end["rate"], all_tables_rewards_rate),
        }
        report["ceiling"] = ceiling
    return report


def _sql_summary(meter: Meter, top: int) -> dict[str, Any]:
    """Per stage: total statement time and the costliest statements (count, seconds)."""
    out: dict[str, Any] = {}
    for name, _attr, _unit in STAGES:
        mine = [(text, n, sec) for (stage, text), (n, sec) in meter.sql.items() if stage == name]
        if not mine:
            continue
        mine.sort(key=lambda item: -item[2])
        out[name] = {"statements": sum(n for _t, n, _s in mine), "seconds": sum(sec for _t, _n, sec in mine),
                     "top": [{"sql": text, "count": int(n), "seconds": sec} for text, n, sec in mine[:top]]}
    return out


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def host_info() -> dict[str, Any]:
    import payhub

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version,
                            "payhub": getattr(payhub, "__version__", None)}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, check=True).stdout.strip()
        info["src_modified"] = bool(subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO,
                                                   capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    info["payhub_path"] = str(Path(payhub.__file__).resolve().parent)
    return info


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(report: dict[str, Any]) -> str:
    p, e2e = report["params"], report["end_to_end"]
    out = io.StringIO()
    w = out.write
    w(f"payhub bench: {p['events']:,} events, {p['payees']:,} payees, calculator={p['calculator']}, "
      f"SQLite synchronous={p['synchronous']}, batch {p['batch_size']} (source {p['source_batch']}, "
      f"rail {p['rail_batch']})\n")
    h = report["host"]
    w(f"host: {h['cpus']} CPUs, Python {h['python']}, SQLite {h['sqlite']}, commit {h.get('commit', '?')}"
      f"{' (src modified)' if h.get('src_modified') else ''}; load average {h['loadavg_1min']['before']} before, "
      f"{h['loadavg_1min']['after']} after (other work on the machine inflates wall times, not cpu s)\n")
    if not Path(h["payhub_path"]).is_relative_to(REPO):
        w(f"payhub imported from {h['payhub_path']} (not this checkout: the commit above does not describe it)\n")
    w("\n")
    traced = p["tracemalloc"]
    w(f"{'stage':<12}{'seconds':>10}{'cpu s':>9}{'items':>12} {'unit':<8}{'rate /s':>12}{'peak RSS MB':>13}"
      + (f"{'traced MB':>11}" if traced else "") + "\n")
    for s in report["stages"]:
        w(f"{s['stage']:<12}{s['seconds']:>10.2f}{s['cpu_seconds']:>9.2f}{s['items']:>12,} {s['unit']:<8}"
          f"{_fmt(s['rate']):>12}"
          f"{s['peak_rss_mb']:>13.1f}" + (f"{s['peak_traced_mb']:>11.1f}" if traced else ""))
        if s["stage"] == "disburse":
            w(f"   ({s['payouts']:,} payouts, {_fmt(s['payouts_per_s'])}/s)")
        if s["stage"] == "calculate":
            w(f"   ({s['events']:,} events)")
        w("\n")
    w(f"{'end to end':<12}{e2e['seconds']:>10.2f}{e2e['cpu_seconds']:>9.2f}{e2e['rewards']:>12,} {'rewards':<8}"
      f"{_fmt(e2e['rate']):>12}"
      f"{e2e['peak_rss_mb']:>13.1f}\n")
    m = report["memory"]
    w(f"\nmemory: {m['method']}. RSS before the run {m['baseline_rss_mb']:.1f} MB; peak during the run "
      f"{m['run_peak_rss_mb']:.1f} MB; process peak incl. setup {m['process_peak_rss_mb']:.1f} MB.\n")
    parts = m["rss_parts_mb"]
    if parts.get("after"):
        w("  RSS after the run by kind: " + ", ".join(f"{k} {v:.1f} MB" for k, v in parts["after"].items())
          + f" (before: {', '.join(f'{k} {v:.1f}' for k, v in parts['before'].items())}); of which the fake "
          f"rail's own ledger of accepted keys ~{m['fake_rail_ledger_mb']:.1f} MB\n")
    d = report["database"]
    w(f"database: {d['bytes'] / MB:,.1f} MB, {d['rows_written']:,} rows ({_fmt(d['rows_per_reward'], 1)} per "
      f"reward); time outside the stage functions {e2e['outside_stages_s']:.2f} s\n")
    c = report["ceiling"]
    if c:
        ev, al, r = c["events"], c["all_tables"], c["ratio"]
        w(f"\nceiling ({c['method']}):\n")
        w(f"  events rows:  {ev['rows']:,} in {ev['seconds']:.2f} s = {_fmt(ev['rate'])} rows/s\n")
        w(f"  all tables:   {al['rows']:,} rows in {al['seconds']:.2f} s = {_fmt(al['rate'])} rows/s "
          f"= {_fmt(al['rewards_rate'])} rewards/s\n")
        w(f"  ratio payhub/ceiling: end to end vs events {_fmt(r['end_to_end_vs_events'], 3)}, ingest vs events "
          f"{_fmt(r['ingest_vs_events'], 3)}, end to end vs all tables {_fmt(r['end_to_end_vs_all_tables'], 3)}\n")
    if report.get("sql"):
        w("\nSQL statements (time inside the driver's execute/executemany; commits are not included):\n")
        for stage, info in report["sql"].items():
            seconds = next(s["seconds"] for s in report["stages"] if s["stage"] == stage)
            w(f"  {stage}: {info['statements']:,} statements, {info['seconds']:.2f} s of the stage's "
              f"{seconds:.2f} s\n")
            for item in info["top"][:8]:
                w(f"    {item['seconds']:8.2f} s {item['count']:>9,}x  {item['sql']}\n")
    ch = report["checks"]
    w("\nchecks: " + ("ok (every event calculated, every reward paid once, totals match)" if ch["ok"]
                      else "FAILED: " + "; ".join(ch["problems"])) + "\n")
    return out.getvalue()


# ------------------------------------------------------------------------------------------------- modes


def run_one(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    rss = RssMeter()
    workdir = Path(tempfile.mkdtemp(prefix="payhub-bench-", dir=args.workdir))
    try:
        run = run_pipeline(workdir, args, rss)
        db_path = workdir / "payhub.db"
        db_bytes = sum(Path(f"{db_path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db_path}{s}").exists())
        checks = check(db_path, run["rail"], args.events)
        ceiling = None
        if not args.no_ceiling:
            if not args.quiet:
                print("  measuring the sqlite3 ceiling...", file=sys.stderr)
            ceiling = measure_ceiling(db_path, workdir, args.synchronous, args.source_batch, args.batch_size)
        report = build_report(args, run, checks, ceiling, rss, db_bytes)
    finally:
        if args.keep:
            print(f"  kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(report)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        base = RESULTS_DIR / f"{stamp}-n{args.events}"
        base.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        base.with_suffix(".txt").write_text(text)
        report["saved"] = str(base.with_suffix(".json"))
    if args.profile:
        profiler = run["meter"].profiler
        prof_text = profiler.report(run["meter"], args.profile_top)
        if not args.no_save:
            base = RESULTS_DIR / f"{stamp}-n{args.events}-{args.profile}"
            Path(f"{base}.txt").write_text(prof_text)
            profiler.save(base)
            print(f"  profile: {base}.txt", file=sys.stderr)
        else:
            print(prof_text, file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(text, end="")
        if "saved" in report:
            print(f"saved: {report['saved']}")
    return 0 if report["checks"]["ok"] else 1


def run_sizes(args: argparse.Namespace) -> int:
    """Each size in a fresh interpreter, so every peak RSS is that size's alone."""
    results = []
    for size in args.sizes:
        cmd = [sys.executable, str(Path(__file__).resolve()), "-n", str(size), "--json", "--no-save", "--quiet",
               "--payees", str(args.payees), "--calculator", args.calculator, "--synchronous", args.synchronous,
               "--batch-size", str(args.batch_size), "--source-batch", str(args.source_batch),
               "--rail-batch", str(args.rail_batch), "--currencies", ",".join(args.currencies),
               "--seed", str(args.seed)]
        if args.workdir:
            cmd += ["--workdir", args.workdir]
        if not args.sizes_ceiling:
            cmd.append("--no-ceiling")
        print(f"  N={size:,} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode not in (0, 1) or not proc.stdout.strip():
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"bench: the run with N={size} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout))
    rows = []
    for r in results:
        e2e, m = r["end_to_end"], r["memory"]
        rows.append({"events": r["params"]["events"], "seconds": e2e["seconds"], "rewards_per_s": e2e["rate"],
                     "baseline_rss_mb": m["baseline_rss_mb"], "run_peak_rss_mb": m["run_peak_rss_mb"],
                     "process_peak_rss_mb": m["process_peak_rss_mb"],
                     "stage_peak_rss_mb": {s["stage"]: s["peak_rss_mb"] for s in r["stages"]},
                     "anon_after_mb": m["rss_parts_mb"].get("after", {}).get("RssAnon"),
                     "fake_rail_ledger_mb": m["fake_rail_ledger_mb"], "payouts": r["checks"]["rows"]["payouts"],
                     "checks_ok": r["checks"]["ok"]})
    out = io.StringIO()
    names = [name for name, _a, _u in STAGES]
    out.write(f"memory flatness ({results[0]['memory']['method']}; each size in a fresh process)\n\n")
    out.write(f"{'events':>10}{'seconds':>10}{'rewards/s':>11}{'payouts':>9}{'base MB':>9}{'peak MB':>9}"
              + "".join(f"{n[:9]:>10}" for n in names) + f"{'heap MB':>9}{'rail MB':>9}  checks\n")
    for row in rows:
        out.write(f"{row['events']:>10,}{row['seconds']:>10.1f}{_fmt(row['rewards_per_s']):>11}"
                  f"{row['payouts']:>9,}{row['baseline_rss_mb']:>9.1f}{row['run_peak_rss_mb']:>9.1f}"
                  + "".join(f"{row['stage_peak_rss_mb'][n]:>10.1f}" for n in names)
                  + f"{_fmt(row['anon_after_mb'], 1):>9}{row['fake_rail_ledger_mb']:>9.1f}"
                  + f"  {'ok' if row['checks_ok'] else 'FAILED'}\n")
    first, last = rows[0], rows[-1]
    growth = last["run_peak_rss_mb"] - first["run_peak_rss_mb"]
    out.write(f"\npeak RSS grew {growth:+.1f} MB from N={first['events']:,} to N={last['events']:,} "
              f"({growth * 1e6 / max(1, last['events'] - first['events']):+.1f} MB per million events)\n")
    out.write("heap MB: anonymous RSS (RssAnon) after the run; rail MB: what the in-memory FakeRail keeps about "
              "the payouts it accepted, which grows with their number and is the test double's, not payhub's\n")
    text = out.getvalue()
    report = {"bench": "payhub memory flatness", "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "host": host_info(), "sizes": rows, "runs": results}
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{stamp}-sizes.json"
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        path.with_suffix(".txt").write_text(text)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(text, end="")
    return 0 if all(row["checks_ok"] for row in rows) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Benchmark the payhub pipeline on SQLite (see bench/README.md).")
    ap.add_argument("-n", "--events", type=int, default=100_000, help="synthetic events (default 100000)")
    ap.add_argument("--payees", type=int, default=1000, help="distinct payees the events are spread over")
    ap.add_argument("--calculator", choices=("percentage", "flat"), default="percentage")
    ap.add_argument("--currencies", type=lambda s: [c.strip().upper() for c in s.split(",") if c.strip()],
                    default=["USD"], help="comma-separated; payee k is paid in currency k mod len (default USD)")
    ap.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL",
                    help="database.sqlite_synchronous, also used for the ceiling (default FULL, payhub's default)")
    ap.add_argument("--batch-size", type=int, default=2000, help="database.batch_size (default 2000)")
    ap.add_argument("--source-batch", type=int, default=1000, help="sources.<name>.batch_size (default 1000)")
    ap.add_argument("--rail-batch", type=int, default=100, help="FakeRail max_batch (default 100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                    help="comma-separated event counts: run each in a fresh process and compare peak RSS")
    ap.add_argument("--sizes-ceiling", action="store_true", help="with --sizes: measure the ceiling in each run")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the sqlite3 ceiling measurement")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also record the tracemalloc peak per stage (slows Python allocations down)")
    ap.add_argument("--profile", nargs="?", const="cprofile", choices=("cprofile", "pyinstrument"),
                    help="profile each stage (default cprofile); write the report next to the results")
    ap.add_argument("--sql-timing", action="store_true",
                    help="time every SQL statement; report the costliest per stage (adds a little overhead)")
    ap.add_argument("--profile-top", type=int, default=25,
                    help="rows listed per stage in the cProfile and --sql-timing reports (default 25)")
    ap.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    ap.add_argument("--workdir", help="where the temporary database and CSV go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    if args.events < 1 or args.payees < 1 or not args.currencies:
        ap.error("--events and --payees must be positive and --currencies non-empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sizes:
        return run_sizes(args)
    return run_one(args)


if __name__ == "__main__":
    sys.exit(main())
