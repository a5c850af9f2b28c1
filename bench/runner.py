"""The pipeline run of the benchmark: payhub's real ``Worker.run_once`` (payees → ingest → calculate → schedule →
disburse → settle) in this process, on a fresh SQLite file or a fresh PostgreSQL database, with a meter around each
stage function the worker calls (wall and CPU time, calls, items, peak RSS; optionally tracemalloc, a profile per
stage and the time of every SQL statement).

    opts = RunOptions(events=20_000, database_url="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    report = run_report(opts)             # generate, run, check, ceiling, report (bench.report.build_report)
    report["end_to_end"]["rate"], report["checks"]["ok"], report["ceiling"]["ratio"]

``database_url`` None runs on SQLite in the work directory; a PostgreSQL URL names a *server*: the bench creates a
fresh database ``bench_<pid>_<n>`` on it for the run (and one for the ceiling) and drops them afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import itertools
import logging
import os
import platform
import pstats
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.gen import RAIL_NAME, SOURCE_NAME, write_inputs

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
MB = 1024 * 1024
AUDIT_VERIFY_AUTO_MAX = 20_000  # audit_verify "auto": verify the audit chain of the mix up to this many events
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class RunOptions:
    """One pipeline run: what to generate (see :func:`bench.gen.write_inputs`), on which database, what to measure.

    ``database_url`` None: SQLite in the work directory (``synchronous`` applies); otherwise a PostgreSQL server URL
    on which a fresh database is created and dropped. ``currencies`` None: the generator's default.
    """

    events: int = 100_000
    payees: int = 1000
    programs: str = "percentage"
    calculator: str = "percentage"
    partners: int = 40
    currencies: list[str] | None = None
    synchronous: str = "FULL"
    batch_size: int = 2000
    source_batch: int = 1000
    rail_batch: int = 100
    seed: int = 1
    database_url: str | None = None
    extra_settings: str = ""
    tracemalloc: bool = False
    profile: str | None = None  # "cprofile" | "pyinstrument"
    sql_timing: bool = False
    profile_top: int = 25
    quiet: bool = False

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> RunOptions:
        """The options of the same names in ``ns`` (the command line's); the rest keep their defaults."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})

    @property
    def backend(self) -> str:
        return "sqlite" if self.database_url is None else "postgresql"


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
                             "update STAGES in bench/runner.py")
        for attr in found:
            saved[attr] = getattr(worker_module, attr)
            setattr(worker_module, attr, meter.wrap(name, saved[attr]))
    try:
        yield
    finally:
        for attr, fn in saved.items():
            setattr(worker_module, attr, fn)


def run_pipeline(workdir: Path, opts: RunOptions, rss: RssMeter, database_url: str | None = None) -> dict[str, Any]:
    """Generate the inputs in ``workdir``, migrate the database, and time one ``Worker.run_once`` with the stage
    meters. ``database_url`` is the very database to use (None: ``payhub.db`` in ``workdir``); it must be empty.
    Returns the raw measures (``meter``, ``elapsed``, ``cpu``, RSS figures, ``rail``, ``inputs``...) that
    :func:`bench.checks.check` and :func:`bench.report.build_report` take."""
    from payhub.db import migrate
    from payhub.db.engine import make_engine
    from payhub.runtime import Runtime
    from payhub.settings import load_settings
    from payhub.worker import Worker

    host = host_info()  # the commit and tree state of the code imported for this run
    setup: dict[str, float] = {}
    t0 = time.perf_counter()
    inputs = write_inputs(workdir, events=opts.events, payees=opts.payees, seed=opts.seed, programs=opts.programs,
                          calculator=opts.calculator, partners=opts.partners, currencies=opts.currencies,
                          synchronous=opts.synchronous, batch_size=opts.batch_size, source_batch=opts.source_batch,
                          rail_batch=opts.rail_batch, database_url=database_url or "sqlite:///payhub.db",
                          extra_settings=opts.extra_settings)
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
    if hasattr(rail, "keep_counts_only"):  # FakeRail: keys and counts only, so its memory does not grow per payout
        rail.keep_counts_only()
    meter = Meter(rss, trace=opts.tracemalloc, profiler=StageProfiler(opts.profile) if opts.profile else None)
    if opts.profile:
        source = rt.plugins.sources[SOURCE_NAME]
        source.fetch = meter.wrap_plugin_call(source.fetch)  # type: ignore[method-assign]
        rail.send = meter.wrap_plugin_call(rail.send)  # type: ignore[method-assign]
        rail.lookup = meter.wrap_plugin_call(rail.lookup)  # type: ignore[method-assign]
    if opts.sql_timing:
        time_statements(rt.engine, meter)
    worker = Worker(rt, observer=Progress(opts.quiet))
    worker.start()
    setup["start_s"] = time.perf_counter() - t0

    if opts.tracemalloc:
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
        if opts.tracemalloc:
            tracemalloc.stop()
        rt.close()
    if not opts.quiet:
        print(file=sys.stderr)
    return {"host": host, "setup": setup, "inputs": inputs, "meter": meter, "elapsed": elapsed, "cpu": cpu,
            "load": {"before": load_before, "after": load_after}, "baseline_rss": baseline,
            "rss_parts": {"before": baseline_parts, "after": end_parts}, "rail_ledger_mb": _ledger_mb(rail),
            "run_peak_rss": max([end_peak] + [s.peak_rss for s in meter.stats.values()]),
            "summary": dict(summary.counts), "rail": rail,
            "database_url": settings.database_url}


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
    """Memory FakeRail keeps about what it accepted (a packed key per payout, its ledger's bookkeeping) and the
    calls it recorded, if any: test bookkeeping, not payhub's."""
    size = rail.ledger.nbytes() if hasattr(rail.ledger, "nbytes") else 0
    size += sys.getsizeof(rail.calls) + sum(sys.getsizeof(call) for call in rail.calls)
    size += sys.getsizeof(rail.sent) + sum(sys.getsizeof(instruction) for instruction in rail.sent)
    return size / MB


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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



# ------------------------------------------------------------------------------------------------- databases

_database_numbers = itertools.count(1)


def libpq_url(url: str) -> str:
    """The libpq form (``postgresql://…``) of a SQLAlchemy PostgreSQL URL, for psycopg.connect."""
    from sqlalchemy import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_pg_database(server_url: str, label: str = "") -> Iterator[str]:
    """Create an empty database ``bench_<pid>_<n>[_label]`` on the server of ``server_url``, yield its SQLAlchemy
    URL, and drop it afterwards (``WITH (FORCE)``, whatever still holds a connection)."""
    import psycopg
    from sqlalchemy import make_url

    name = f"bench_{os.getpid()}_{next(_database_numbers)}" + (f"_{label}" if label else "")
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def database_bytes(url: str) -> int:
    """The size of the database: SQLite's file and WAL, or ``pg_database_size``."""
    if is_sqlite(url):
        from payhub.db.engine import sqlite_file

        path = sqlite_file(url)
        return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


# ------------------------------------------------------------------------------------------------- one run


def run_measured(opts: RunOptions, *, ceiling: bool = True, audit_verify: str = "auto",
                 workdir: str | Path | None = None, keep: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate, run, check, measure the ceiling (unless ``ceiling`` is False) and build the report of one run.

    ``audit_verify`` ("auto" | "always" | "never") applies to the program mix ("auto": up to
    AUDIT_VERIFY_AUTO_MAX events). The work directory is made under ``workdir`` (default: the system temp dir)
    and removed unless ``keep``; a PostgreSQL database is dropped in any case. Returns (report, raw run); the
    report is JSON-ready (see :func:`bench.report.build_report`), the raw run holds the meter and its profiler.
    """
    from bench.ceiling import measure_ceiling
    from bench.checks import check, check_mix
    from bench.report import build_report

    logging.basicConfig(level=logging.WARNING)
    rss = RssMeter()
    work = Path(tempfile.mkdtemp(prefix="payhub-bench-", dir=workdir))
    try:
        with contextlib.ExitStack() as stack:
            url = None if opts.database_url is None else stack.enter_context(fresh_pg_database(opts.database_url))
            run = run_pipeline(work, opts, rss, url)
            url = run["database_url"]
            db_bytes = database_bytes(url)
            plan = run["inputs"]["mix"]
            if plan is None:
                checks = check(url, run["rail"], opts.events)
            else:
                if not opts.quiet:
                    print("  checking the mix...", file=sys.stderr)
                verify = audit_verify == "always" or (audit_verify == "auto" and opts.events <= AUDIT_VERIFY_AUTO_MAX)
                checks = check_mix(url, run["rail"], opts.events, plan, verify)
            ceiling_report = None
            if ceiling:
                if not opts.quiet:
                    print(f"  measuring the {'sqlite3' if is_sqlite(url) else 'psycopg'} ceiling...", file=sys.stderr)
                ceiling_report = measure_ceiling(url, work, synchronous=opts.synchronous,
                                                 event_batch=opts.source_batch, batch=opts.batch_size,
                                                 server_url=opts.database_url)
            report = build_report(opts, run, checks, ceiling_report, rss, db_bytes)
    finally:
        if keep:
            print(f"  kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report, run


def run_report(opts: RunOptions, *, ceiling: bool = True, audit_verify: str = "auto",
               workdir: str | Path | None = None, keep: bool = False) -> dict[str, Any]:
    """The report of one run (see :func:`run_measured`)."""
    return run_measured(opts, ceiling=ceiling, audit_verify=audit_verify, workdir=workdir, keep=keep)[0]
