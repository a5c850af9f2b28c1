"""Throughput and memory benchmark of the payhub pipeline on SQLite.

Pushes N synthetic CRM events through the real pipeline (``Worker.run_once``: payees → ingest → calculate →
schedule → disburse → settle) on a fresh, migrated SQLite file: the built-in ``file`` source reads a generated
CSV, a built-in calculator (``percentage`` or ``flat``) makes one reward per event, and the in-memory
``payhub.testing.FakeRail`` accepts every payout. Each stage function the worker calls is wrapped to measure its
wall time and peak memory. In the same run, the *ceiling* is measured: plain ``sqlite3.executemany`` of the very
rows the pipeline wrote, into tables of the same shape in a fresh file, with the same journal and synchronous
settings. ``--programs mix`` runs the built-in program calculators together instead (spiff, rebate, deal
registration, activity, co-op, and MDF, referral and loyalty points when installed) with splits, clawbacks, caps,
budgets, approvals and FX conversion, over a year of mixed events, and checks the result. See bench/README.md for
how to read the figures.

    python bench/bench.py                       # 100,000 events, human-readable table
    python bench/bench.py --programs mix -n 20000   # the program mix, with its checks and the audit chain verified
    python bench/bench.py -n 1000000 --json     # JSON on stdout
    python bench/bench.py --sizes 100000,300000,1000000   # memory flatness: one fresh process per size
    python bench/bench.py -n 100000 --profile   # cProfile per stage, top functions printed and saved
    python bench/bench.py -n 100000 --profile pyinstrument --no-ceiling   # call trees per stage (pip install)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import io
import json
import logging
import math
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
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
AUDIT_VERIFY_AUTO_MAX = 20_000  # --audit-verify auto: verify the audit chain up to this many events


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
    mix = None
    if args.programs == "mix":
        mix = write_mix_inputs(workdir, args)
        programs = mix.pop("toml")
    else:
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
        programs = f"[programs.{PROGRAM_NAME}]\n{program}"
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

{programs}
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
    return {"csv_bytes": (workdir / "deals.csv").stat().st_size, "mix": mix}


# ------------------------------------------------------------------------------------------------- the mix

MIX_YEAR = 2026
# The event types of ``--programs mix`` and their share of the events. A type whose program's calculator is not
# installed (mdf, referral, loyalty_points are optional) is left out and the others share its part.
MIX_SHARES = {
    "deal_won": 0.36, "purchase": 0.26, "activity": 0.16, "coop_claim": 0.04, "mdf_claim": 0.03,
    "referral_closed": 0.03, "points_redemption": 0.01, "order_returned": 0.02, "deal_refunded": 0.02,
}
MIX_OBJECT_TYPES = {
    "deal_won": "Opportunity", "deal_refunded": "Opportunity", "purchase": "Order", "order_returned": "Order",
    "activity": "Activity", "coop_claim": "CoopClaim", "mdf_claim": "MdfClaim", "referral_closed": "Referral",
    "points_redemption": "Redemption",
}
MIX_OPTIONAL = {"mdf_claim": "mdf", "referral_closed": "referral", "points_redemption": "loyalty_points"}
MIX_REQUIRED = ("spiff", "rebate", "deal_registration", "activity", "coop")
MIX_COLUMNS = ("id", "object_type", "type", "occurred_at", "payee_id", "partner_id", "amount", "currency",
               "product", "quantity", "registered_at", "second_partner_id", "splits", "activity", "approved_amount",
               "activity_date", "points")
MIX_ACTIVITIES = {"webinar": 0.60, "demo": 0.25, "certification": 0.15}
LOYALTY_ACTION_POINTS = {"certification": 500, "webinar": 50, "demo": 100}
SPLIT_SHARES = {2: (("60", "40"), ("50", "50"), ("70", "30")), 3: (("50", "30", "20"), ("40", "30", "30"),
                                                                   ("34", "33", "33"))}
# Core keys of a program section (the rest are the calculator's parameters).
CORE_PROGRAM_KEYS = {"calculator", "event_types", "sources", "splits", "split_overlay", "clawback_event_types",
                     "clawback", "clawback_term_days", "caps", "budget", "approval", "payout_currency", "fx_date",
                     "fx_rate_type", "enabled"}
MIX_CURRENCIES = ["USD", "EUR", "GBP"]  # --programs mix without --currencies: partners and reps paid in these
RATES_FILE = "eurofxref-hist.csv"
EUR_RATES = {"USD": 1.08, "GBP": 0.85, "JPY": 160.0, "CHF": 0.95, "CAD": 1.47, "AUD": 1.63, "SEK": 11.4}
PAID_STATUSES = ("scheduled", "sent", "paid")
REWARD_STATUSES = ("pending", "held", "awaiting_approval", "carried", "scheduled", "sent", "paid", "cancelled")


def mix_programs(args: argparse.Namespace, available: set[str]) -> dict[str, dict[str, Any]]:
    """The programs of the mix, named after their calculators, as settings sections (core keys + parameters).

    Limits that a busier payee or partner reaches sooner (the spiff cap per rep, the spiff budget per partner and
    quarter, the rebate tiers, the MDF allocation, the loyalty tiers and redemptions) scale with the events per rep
    or per partner, so every size does the same shape of work (the same share capped, held, tiered up).
    """
    cur = args.currencies[0]
    rep = args.events / args.payees / 100  # events per rep relative to the default 100,000 over 1,000
    org = args.events / args.partners / 2500  # events per partner relative to the default 100,000 over 40

    def scaled(amount: float, scale: float, floor: int) -> str:
        return str(max(floor, round(amount * scale)))

    programs: dict[str, dict[str, Any]] = {
        "spiff": {
            "calculator": "spiff", "event_types": ["deal_won"], "splits": True,
            "clawback_event_types": ["deal_refunded"],
            "budget": {"amount": scaled(12_000, org, 100), "currency": cur, "period": "quarter", "per": "partner"},
            "amount": "5", "currency": cur, "per": "unit", "products": ["licence", "hardware", "support"],
            "starts": datetime(MIX_YEAR, 1, 1).date(), "ends": datetime(MIX_YEAR, 12, 31).date(),
            "cap_per_payee": scaled(1500, rep, 50),
        },
        "rebate": {
            "calculator": "rebate", "event_types": ["purchase", "order_returned"],
            "payout_currency": "payee", "fx_date": "event",
            "period": "quarter", "mode": "marginal", "return_event_types": ["order_returned"],
            "tiers": [{"up_to": scaled(1_000_000, org, 1000), "percent": "1"},
                      {"up_to": scaled(3_000_000, org, 3000), "percent": "2"}, {"percent": "3"}],
        },
        "deal_registration": {
            "calculator": "deal_registration", "event_types": ["deal_won"],
            "clawback_event_types": ["deal_refunded"], "clawback": "prorated", "clawback_term_days": 365,
            "caps": [{"per": "partner", "period": "quarter", "amount": scaled(60_000, org, 1000), "currency": cur}],
            "approval": {"currency": cur, "threshold": "2500", "dual_threshold": "10000"},
            "percent": "3", "protection_days": 90, "second_partner_share": "30",
        },
        "activity": {
            "calculator": "activity", "event_types": ["activity"],
            "rewards": {"certification": "200", "webinar": "25", "demo": "50"}, "currency": cur,
            "cap_per_period": "250", "period": "month",
        },
        "coop": {
            "calculator": "coop", "event_types": ["purchase", "coop_claim"],
            "percent": "2", "expiry_days": 365, "claim_event_types": ["coop_claim"], "participation_percent": "50",
        },
        "mdf": {
            "calculator": "mdf", "event_types": ["mdf_claim"], "payout_currency": "payee", "fx_date": "payout",
            "allocation": scaled(50_000, org, 500), "currency": cur, "period": "quarter", "cofunding_percent": "50",
            "claim_deadline_days": 45,
        },
        "referral": {
            "calculator": "referral", "event_types": ["referral_closed"], "mode": "flat", "amount": "250",
            "currency": cur,
        },
        "loyalty_points": {
            "calculator": "loyalty_points", "event_types": ["purchase", "activity", "points_redemption"],
            "points_per_unit_amount": "0.1", "points_per_action": dict(LOYALTY_ACTION_POINTS),
            "value_per_point": "0.01", "currency": cur,
            "tiers": [{"name": "silver", "min_points": 0, "multiplier": "1"},
                      {"name": "gold", "min_points": int(scaled(250_000, org, 1000)), "multiplier": "1.25"},
                      {"name": "platinum", "min_points": int(scaled(1_000_000, org, 4000)), "multiplier": "1.5"}],
            "tier_period": "year", "expiry_days": 365, "redemption_event_types": ["points_redemption"],
            "holder": "partner",
        },
    }
    return {name: spec for name, spec in programs.items() if spec["calculator"] in available}


def write_rates(path: Path, currencies: list[str]) -> None:
    """Daily euro reference rates in the ECB's historical-file format (``Date,USD,...,`` newest first) from a month
    before the year of events to a few days after today (``fx_date = "payout"`` converts at today's rate), for the
    ``ecb_rates`` hook: deterministic, gently moving rates, so conversions are real work and never miss a rate."""
    quoted = [c for c in dict.fromkeys(currencies) if c != "EUR"]
    first = datetime(MIX_YEAR - 1, 12, 1).date()
    last = max(datetime(MIX_YEAR, 12, 31).date(), datetime.now(UTC).date()) + timedelta(days=7)
    lines = ["Date," + "".join(f"{c}," for c in quoted)]
    day = last
    while day >= first:
        n = (day - first).days
        cells = []
        for c in quoted:
            rate = EUR_RATES.get(c, 1.5) * (1 + 0.03 * math.sin(n / 29 + len(c) + ord(c[0])))
            cells.append(f"{rate:.2f}," if rate >= 50 else f"{rate:.4f},")
        lines.append(f"{day.isoformat()}," + "".join(cells))
        day -= timedelta(days=1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml(value: Any) -> str:
    """A TOML value (strings, integers, booleans, dates, lists, inline tables) for the settings file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"no TOML for {value!r}")


def _matching(programs: dict[str, dict[str, Any]], event_type: str) -> list[str]:
    """The programs that calculate an event of ``event_type`` (as payhub.pipeline.calculate._matches decides)."""
    return [name for name, spec in programs.items()
            if event_type in spec.get("event_types", ()) or event_type in spec.get("clawback_event_types", ())]


def write_mix_inputs(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Payees (reps and partners) and a year of mixed CRM events for ``--programs mix``; the programs' TOML."""
    from importlib.metadata import entry_points

    available = {ep.name for ep in entry_points(group="payhub.calculators")}
    missing = [name for name in MIX_REQUIRED if name not in available]
    if missing:
        raise SystemExit(f"bench: --programs mix needs the calculators {', '.join(missing)} (not installed)")
    programs = mix_programs(args, available)
    shares = {t: w for t, w in MIX_SHARES.items() if t not in MIX_OPTIONAL or MIX_OPTIONAL[t] in programs}
    kinds, weights = list(shares), list(shares.values())
    rng = random.Random(args.seed)
    cur, currencies = args.currencies[0], args.currencies
    reps = [f"P{k:06d}" for k in range(args.payees)]
    partners = [f"PT{j:04d}" for j in range(args.partners)]
    # Partner sizes are skewed (weight 1/rank^0.8): a few large partners have many reps, the tail a few each.
    rep_partner = [k if k < args.partners else j for k, j in enumerate(
        rng.choices(range(args.partners), [1 / (j + 1) ** 0.8 for j in range(args.partners)], k=args.payees))]
    colleagues: dict[int, list[str]] = {}
    for k, j in enumerate(rep_partner):
        colleagues.setdefault(j, []).append(reps[k])
    with (workdir / "payees.csv").open("w", encoding="utf-8") as fh:
        fh.write("id,name,country,currency,email,account\n")
        for k, pid in enumerate(reps):
            fh.write(f"{pid},Rep {k},US,{currencies[k % len(currencies)]},r{k}@example.com,ACCT{k:08d}\n")
        for j, pid in enumerate(partners):
            fh.write(f"{pid},Partner {j},US,{currencies[j % len(currencies)]},finance@partner{j}.example.com,"
                     f"ORG{j:08d}\n")

    def money(median: float, sigma: float, low: float, high: float) -> int:
        """Cents of a log-normal amount (most deals small, a few large), clipped to [low, high]."""
        return round(min(max(rng.lognormvariate(math.log(median), sigma), low), high) * 100)

    def text(cents: int) -> str:
        return f"{cents // 100}.{cents % 100:02d}"

    def recent(items: list[Any], mean_back: float) -> Any:
        """Take one of the latest items (refunds and returns follow their sale within weeks)."""
        return items.pop(max(0, len(items) - 1 - int(rng.expovariate(1 / mean_back))))

    org = args.events / args.partners / 2500
    redeem_unit = max(1, round(1000 * org))
    deals: list[tuple[str, str, str, int]] = []  # not yet refunded: id, rep, partner, cents
    orders: list[tuple[str, str, str, int]] = []  # not yet returned
    points = [0.0] * args.partners  # a lower bound of each partner's loyalty balance, so redemptions never fail
    counts: Counter[str] = Counter()
    base = datetime(MIX_YEAR, 1, 1, tzinfo=UTC)
    year_s = (datetime(MIX_YEAR + 1, 1, 1) - datetime(MIX_YEAR, 1, 1)).total_seconds()
    loyalty = "loyalty_points" in programs
    with (workdir / "deals.csv").open("w", encoding="utf-8", newline="", buffering=1 << 20) as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(MIX_COLUMNS)
        for i in range(args.events):
            at = base + timedelta(seconds=int(i * year_s / args.events))
            kind = rng.choices(kinds, weights)[0]
            k = rng.randrange(args.payees)
            j = rep_partner[k]
            rep, partner = reps[k], partners[j]
            if kind == "deal_refunded" and not deals:
                kind = "deal_won"
            if kind == "order_returned" and not orders:
                kind = "purchase"
            redeem = rng.randint(5, 50) * redeem_unit
            if kind == "points_redemption" and points[j] < 2 * redeem:
                kind = "activity"
            row = dict.fromkeys(MIX_COLUMNS, "")
            row.update(id=f"{kind[:3].upper()}{i:09d}", type=kind, object_type=MIX_OBJECT_TYPES[kind],
                       occurred_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"), payee_id=rep, partner_id=partner)
            if kind == "deal_won":
                cents = money(15_000, 1.0, 500, 2_000_000)
                row.update(amount=text(cents), currency=cur, product=rng.choice(PRODUCTS),
                           quantity=str(min(500, 1 + int(rng.expovariate(1 / 7)))))
                if rng.random() < 0.30:  # a registered deal, mostly closed within its 90 days of protection
                    days = rng.randint(1, 85) if rng.random() < 0.85 else rng.randint(91, 240)
                    row["registered_at"] = (at.date() - timedelta(days=days)).isoformat()
                    if rng.random() < 0.20 and args.partners > 1:
                        row["second_partner_id"] = partners[(j + rng.randrange(1, args.partners)) % args.partners]
                if rng.random() < 0.20:  # a team sale: 2 or 3 reps share the spiff
                    n = 2 if rng.random() < 0.7 else 3
                    team = [r for r in colleagues[j] if r != rep]
                    others = rng.sample(team, n - 1) if len(team) >= n - 1 else rng.sample(
                        [r for r in reps if r != rep], n - 1)
                    row["splits"] = json.dumps([{"payee_id": p, "percent": s} for p, s in zip(
                        [rep, *others], rng.choice(SPLIT_SHARES[n]), strict=True)], separators=(",", ":"))
                deals.append((row["id"], rep, partner, cents))
            elif kind == "deal_refunded":
                row["id"], row["payee_id"], row["partner_id"], cents = recent(deals, 400)
                row.update(amount=text(cents), currency=cur)
            elif kind == "purchase":
                cents = money(8_000, 0.9, 100, 500_000)
                row.update(amount=text(cents), currency=cur)
                orders.append((row["id"], rep, partner, cents))
                points[j] += cents // 1000  # 0.1 point per unit of currency, before any tier multiplier
            elif kind == "order_returned":
                row["id"], row["payee_id"], row["partner_id"], cents = recent(orders, 300)
                row.update(amount=text(max(1, round(cents * rng.uniform(0.1, 1.0)))), currency=cur)
            elif kind == "activity":
                row["activity"] = rng.choices(list(MIX_ACTIVITIES), list(MIX_ACTIVITIES.values()))[0]
                points[j] += LOYALTY_ACTION_POINTS[row["activity"]] if loyalty else 0
            elif kind == "coop_claim":
                row.update(amount=text(money(3_000, 0.7, 200, 50_000)), currency=cur)
            elif kind == "mdf_claim":
                cents = money(6_000, 0.8, 500, 100_000)
                row.update(amount=text(cents), currency=cur, approved_amount=text(round(cents * rng.uniform(0.5, 1))),
                           activity_date=(at.date() - timedelta(days=rng.randint(0, 75))).isoformat())
            elif kind == "points_redemption":
                row["points"] = str(redeem)
                points[j] -= redeem
            counts[kind] += 1
            out.writerow([row[c] for c in MIX_COLUMNS])
    sections = []
    for name, spec in programs.items():
        sections.append(f"[programs.{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in spec.items()))
    write_rates(workdir / RATES_FILE, currencies)
    sections.append(f'[hooks.ecb_rates]\npath = "{RATES_FILE}"\n')
    expected = sum(n * len(_matching(programs, kind)) for kind, n in counts.items())
    return {"toml": "\n".join(sections), "programs": programs, "event_counts": dict(counts),
            "expected_calculations": expected, "partners": args.partners, "reps": args.payees,
            "payees": args.payees + args.partners, "currency": cur,
            "not_installed": sorted(c for c in MIX_OPTIONAL.values() if c not in available)}


def check_mix(db_path: Path, rail: Any, events: int, plan: dict[str, Any], verify_audit: bool) -> dict[str, Any]:
    """What the mix left behind, and whether it is right: each (program, event) calculated once, the expected
    calculations, money conserved from rewards to payouts, rules respected (approvals, budgets, clawbacks, funds,
    rebate accruals). Cheap SQL over the finished database; the audit chain is verified on request."""
    from payhub.db.schema import metadata
    from payhub.money import from_minor, quantize, to_minor

    programs = plan["programs"]
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    problems: list[str] = []
    notes: list[str] = []
    try:
        def one(sql: str, *params: Any) -> Any:
            return con.execute(sql, params).fetchone()[0]

        def rows(sql: str, *params: Any) -> list[Any]:
            return con.execute(sql, params).fetchall()

        counts = {t.name: one(f"SELECT count(*) FROM {t.name}") for t in metadata.sorted_tables}
        events_by_status = dict(rows("SELECT status, count(*) FROM events GROUP BY status"))
        rewards_by_status = dict(rows("SELECT status, count(*) FROM rewards GROUP BY status"))
        payouts_by_status = dict(rows("SELECT status, count(*) FROM payouts GROUP BY status"))
        held_by_code = dict(rows("SELECT coalesce(hold_code, '?'), count(*) FROM rewards WHERE status = 'held' "
                                 "GROUP BY 1"))
        if counts["events"] != events or events_by_status.get("calculated") != events:
            problems.append(f"expected {events} calculated events, found {events_by_status}")
        twice = one("SELECT count(*) FROM (SELECT 1 FROM calculations GROUP BY program, event_id "
                    "HAVING count(*) > 1)")
        if twice:
            problems.append(f"{twice} (program, event) pairs calculated more than once")
        if counts["calculations"] != plan["expected_calculations"]:
            problems.append(f"{counts['calculations']} calculations, expected {plan['expected_calculations']} "
                            "(one per matching program and event)")
        stray = one("SELECT count(*) FROM rewards r JOIN calculations c ON c.program = r.program "
                    "AND c.event_id = r.event_id WHERE c.status != 'rewarded'")
        stray += one("SELECT count(*) FROM fund_entries f JOIN calculations c ON c.program = f.program "
                     "AND c.event_id = f.event_id WHERE c.status != 'rewarded'")
        if stray:
            problems.append(f"{stray} rewards or fund entries of calculations not marked rewarded")

        # Per program: calculations by status, rewards, fund entries, top failure reasons.
        per_program: dict[str, dict[str, Any]] = {name: {"calculations": {}, "rewards": 0, "rewards_minor": 0,
                                                         "adjustments": 0, "fund_entries": 0, "failures": []}
                                                  for name in programs}
        for program, status, n in rows("SELECT program, status, count(*) FROM calculations GROUP BY 1, 2"):
            per_program.setdefault(program, {"calculations": {}, "rewards": 0, "rewards_minor": 0,
                                             "adjustments": 0, "fund_entries": 0, "failures": []})
            per_program[program]["calculations"][status] = n
        for program, n, total, negative in rows("SELECT program, count(*), sum(amount_minor), "
                                                "sum(amount_minor < 0) FROM rewards GROUP BY 1"):
            per_program[program].update(rewards=n, rewards_minor=total, adjustments=negative)
        for program, n in rows("SELECT program, count(*) FROM fund_entries GROUP BY 1"):
            per_program[program]["fund_entries"] = n
        for program, reason, n in rows("SELECT program, reason, count(*) FROM calculations WHERE status = 'failed' "
                                       "GROUP BY 1, 2 ORDER BY 3 DESC"):
            if len(per_program[program]["failures"]) < 3:
                per_program[program]["failures"].append({"reason": reason, "count": n})
        failed = sum(p["calculations"].get("failed", 0) for p in per_program.values())
        if failed:
            notes.append(f"{failed:,} calculations failed (top reasons per program below)")
        for program, p in per_program.items():
            if programs.get(program) is not None and not p["calculations"].get("rewarded"):
                problems.append(f"program {program} rewarded nothing: {p['calculations']}")

        # Where the rewards ended. The run goes on until nothing is payable, so none may be left pending.
        left = {s: rewards_by_status[s] for s in ("pending", "scheduled") if rewards_by_status.get(s)}
        if left:
            problems.append(f"the run ended with rewards still {left}")
        other_holds = {code: n for code, n in held_by_code.items() if code != "budget"}
        if other_holds:
            problems.append(f"rewards held for other reasons than the budget: {other_holds}")
        if payouts_by_status.get("sent", 0) != counts["payouts"]:
            problems.append(f"not every payout was sent: {payouts_by_status}")
        # Money: the payouts of each currency add up to the rewards in them (converted ones at their recorded rate).
        expected: dict[str, int] = {}
        bad, converted = 0, 0
        for r_cur, r_minor, p_cur, i_minor, fx in rows(
                "SELECT r.currency, r.amount_minor, p.currency, i.amount_minor, i.fx FROM payout_items i "
                "JOIN rewards r ON r.id = i.reward_id JOIN payouts p ON p.id = i.payout_id "
                f"WHERE r.status IN {PAID_STATUSES} AND r.payout_id = i.payout_id"):
            minor = r_minor
            if fx is not None:
                converted += 1
                conversion = json.loads(fx)
                amount = from_minor(r_minor, r_cur)
                minor = to_minor(quantize(amount * Decimal(conversion["rate"]), p_cur), p_cur)
                bad += conversion["from_currency"] != r_cur or Decimal(conversion["from_amount"]) != amount
            elif r_cur != p_cur:
                bad += 1
            bad += i_minor != minor
            expected[p_cur] = expected.get(p_cur, 0) + minor
        bad += abs(counts["payout_items"] - sum(rewards_by_status.get(s, 0) for s in PAID_STATUSES))
        if bad:
            problems.append(f"{bad} payout items do not match their rewards (amount, currency, conversion or link)")
        paid_out = dict(rows("SELECT currency, sum(amount_minor) FROM payouts GROUP BY 1"))
        if expected != paid_out:
            problems.append(f"payouts total {paid_out} but the rewards in them total {expected} (minor units)")
        bad = one("SELECT count(*) FROM payouts p WHERE p.amount_minor <= 0 OR p.amount_minor != "
                  "(SELECT coalesce(sum(i.amount_minor), 0) FROM payout_items i WHERE i.payout_id = p.id)")
        if bad:
            problems.append(f"{bad} payouts are not positive or differ from the sum of their items")
        bad = one("SELECT count(*) FROM (SELECT 1 FROM rewards WHERE status = 'carried' GROUP BY payee_id, currency "
                  "HAVING sum(amount_minor) > 0)")
        if bad:
            problems.append(f"{bad} payees have a positive carried balance that was never paid")
        accepted = rail.accepted
        if len(accepted) != counts["payouts"] or (accepted and max(accepted.values()) != 1):
            problems.append(f"rail accepted {len(accepted)} keys for {counts['payouts']} payouts, "
                            f"max {max(accepted.values(), default=0)} times each")

        # The rules around the calculators.
        for name, spec in programs.items():
            approval = spec.get("approval")
            if approval:
                threshold = to_minor(quantize(Decimal(approval["threshold"]), approval["currency"]),
                                     approval["currency"])
                bad = one("SELECT count(*) FROM rewards WHERE program = ? AND amount_minor > ? AND status IN "
                          f"{PAID_STATUSES}", name, threshold)
                if bad:
                    problems.append(f"{name}: {bad} rewards above the approval threshold were paid unapproved")
            budget = spec.get("budget")
            if budget:
                limit = to_minor(quantize(Decimal(budget["amount"]), budget["currency"]), budget["currency"])
                bad = one("SELECT count(*) FROM (SELECT 1 FROM rewards WHERE program = ? AND budget_key IS NOT NULL "
                          "AND status != 'cancelled' AND NOT (status = 'held' AND hold_code = 'budget') "
                          "GROUP BY budget_key HAVING sum(amount_minor) > ?)", name, limit)
                if bad:
                    problems.append(f"{name}: {bad} budget pools overdrawn")
            if spec.get("clawback_event_types"):
                # What a refunded deal still grants each payee: nothing after a full clawback, never below zero
                # after a prorated one.
                kinds = spec["clawback_event_types"]
                full = spec.get("clawback", "full") == "full"
                bad = one("SELECT count(*) FROM (SELECT 1 FROM rewards r JOIN events e ON e.id = r.event_id "
                          "JOIN (SELECT DISTINCT source, object_type, object_id FROM events WHERE event_type IN "
                          f"({', '.join('?' * len(kinds))})) x ON x.source = e.source AND x.object_type = "
                          "e.object_type AND x.object_id = e.object_id WHERE r.program = ? AND r.status != "
                          "'cancelled' GROUP BY e.object_id, r.payee_id, r.currency HAVING sum(r.amount_minor) "
                          f"{'!= 0' if full else '< 0'})", *kinds, name)
                if bad:
                    problems.append(f"{name}: {bad} refunded deals grant a payee "
                                    + ("something after a full clawback" if full else "less than nothing"))
            for cap in spec.get("caps", ()):
                bad_caps, note = _check_cap(rows, name, cap, spec.get("clawback_event_types", []))
                problems += bad_caps
                notes += [note] if note else []
        spiff = programs.get("spiff", {})
        if spiff.get("cap_per_payee"):
            cap = to_minor(quantize(Decimal(spiff["cap_per_payee"]), spiff["currency"]), spiff["currency"])
            over = rows("SELECT payee_id, sum(amount_minor) FROM rewards WHERE program = 'spiff' AND amount_minor > 0 "
                        "GROUP BY 1 HAVING sum(amount_minor) > ?", cap)
            if over:
                notes.append(f"spiff: {len(over)} reps were granted more than cap_per_payee {spiff['cap_per_payee']} "
                             f"(up to {max(v for _p, v in over) / 100:,.2f}): the cap is applied to the event's rep "
                             "before the split, so shares of colleagues' deals are not capped")

        # Funds: what a claim or redemption pays is what it spends; no fund is spent below zero.
        fund_sum: dict[tuple[str, str, str], Decimal] = {}
        spent: dict[str, Decimal] = {}
        for program, holder, unit, amount in rows("SELECT program, holder_id, unit, amount FROM fund_entries"):
            value = Decimal(amount)
            fund_sum[(program, holder, unit)] = fund_sum.get((program, holder, unit), Decimal(0)) + value
            if value < 0:
                spent[program] = spent.get(program, Decimal(0)) - value
        overspent = [key for key, value in fund_sum.items() if value < 0]
        if overspent:
            problems.append(f"{len(overspent)} funds spent below zero, e.g. {overspent[0]}")
        for name in ("coop", "mdf", "loyalty_points"):
            if name not in programs:
                continue
            granted = one("SELECT coalesce(sum(amount_minor), 0) FROM rewards WHERE program = ?", name)
            value = spent.get(name, Decimal(0))
            if name == "loyalty_points":
                value *= Decimal(programs[name]["value_per_point"])
            if to_minor(quantize(value, plan["currency"]), plan["currency"]) != granted:
                problems.append(f"{name}: rewards total {granted} minor units but the fund spending is worth {value}")

        # Rebate: the accruals of each partner and quarter add up to the rebate of its net volume, to the cent.
        if "rebate" in programs:
            problems += _check_rebate(rows, programs["rebate"])
        fund_entries_by_program = {name: p["fund_entries"] for name, p in per_program.items()}
        adjustments = one("SELECT count(*) FROM rewards WHERE amount_minor < 0")
    finally:
        con.close()
    audit: dict[str, Any] | None = None
    if verify_audit:
        from sqlalchemy import create_engine

        from payhub.audit import verify

        engine = create_engine(f"sqlite:///{db_path}")
        start = time.perf_counter()
        try:
            with engine.connect() as conn:
                result = verify(conn)
        finally:
            engine.dispose()
        audit = {"ok": result.ok, "checked": result.checked, "seconds": time.perf_counter() - start,
                 "problem": result.problem}
        if not result.ok:
            problems.append(f"audit verify: {result.problem}")
    return {"ok": not problems, "problems": problems, "notes": notes, "rows": counts,
            "events_by_status": events_by_status, "rewards_by_status": rewards_by_status,
            "payouts_by_status": payouts_by_status, "held_by_code": held_by_code, "per_program": per_program,
            "fund_entries": counts["fund_entries"], "fund_entries_by_program": fund_entries_by_program,
            "adjustments": adjustments, "converted_items": converted, "audit_verify": audit}


def _check_cap(rows: Callable[..., list[Any]], program: str, cap: dict[str, Any], clawbacks: list[str]
               ) -> tuple[list[str], str | None]:
    """A ``caps`` entry holds: what the program granted per payee, partner or in all, per period, is within it.

    The share a payee keeps when a prorated clawback cancels an unpaid reward is a new reward of the refund event,
    written outside the caps and counted in the refund's period: it may lift a period above the cap. That is
    reported as a note; any other excess is a problem."""
    from payhub.clock import period_bounds
    from payhub.money import quantize, to_minor

    limit = to_minor(quantize(Decimal(cap["amount"]), cap["currency"]), cap["currency"])
    period = cap.get("period", "program")
    used: dict[tuple[str | None, str], list[int]] = {}  # (scope, period) -> [all, without kept shares]
    for payee_id, partner_id, at, kind, minor in rows(
            "SELECT r.payee_id, e.partner_id, e.occurred_at, e.event_type, r.amount_minor FROM rewards r JOIN events e "
            "ON e.id = r.event_id WHERE r.program = ? AND r.currency = ? AND r.status != 'cancelled'",
            program, cap["currency"]):
        scope = {"payee": payee_id, "partner": partner_id, "program": None}[cap["per"]]
        label = "all" if period == "program" else period_bounds(
            datetime.fromisoformat(str(at)).replace(tzinfo=UTC), period)[2]
        entry = used.setdefault((scope, label), [0, 0])
        entry[0] += minor
        entry[1] += 0 if kind in clawbacks and minor > 0 else minor
    over = [key for key, (_all, capped) in used.items() if capped > limit]
    lifted = {key: total - limit for key, (total, capped) in used.items() if total > limit >= capped}
    problems = [f"{program}: {len(over)} caps per {cap['per']} and {period} exceeded, e.g. {over[0]}"] if over else []
    note = None
    if lifted:
        key, excess = max(lifted.items(), key=lambda item: item[1])
        note = (f"{program}: {len(lifted)} {cap['per']}/{period} totals end above the cap of {cap['amount']} "
                f"{cap['currency']} (most: {key[0]} {key[1]} by {excess / 100:,.2f}) only because of shares kept "
                "after prorated clawbacks of unpaid rewards: written on the refund event, outside the caps, in the "
                "refund's period")
    return problems, note


def _check_rebate(rows: Callable[..., list[Any]], spec: dict[str, Any]) -> list[str]:
    from payhub.builtin.programs.rebate import RebateParams
    from payhub.money import quantize, to_minor

    params = RebateParams.model_validate({k: v for k, v in spec.items() if k not in CORE_PROGRAM_KEYS})
    returns = set(params.return_event_types)

    def quarter(at: str) -> str:
        return f"{at[:4]}-Q{(int(at[5:7]) - 1) // 3 + 1}"

    volume: dict[tuple[str, str, str], Decimal] = {}
    for partner_id, currency, at, kind, amount in rows(
            "SELECT e.partner_id, e.currency, e.occurred_at, e.event_type, e.amount FROM calculations c "
            "JOIN events e ON e.id = c.event_id WHERE c.program = 'rebate' AND c.status != 'failed'"):
        key = (partner_id, currency, quarter(str(at)))
        volume[key] = volume.get(key, Decimal(0)) + (-Decimal(amount) if kind in returns else Decimal(amount))
    accrued: dict[tuple[str, str, str], int] = {}
    for payee_id, currency, at, minor in rows(
            "SELECT r.payee_id, r.currency, e.occurred_at, r.amount_minor FROM rewards r "
            "JOIN events e ON e.id = r.event_id WHERE r.program = 'rebate'"):
        key = (payee_id, currency, quarter(str(at)))
        accrued[key] = accrued.get(key, 0) + minor
    wrong = [key for key, v in volume.items()
             if accrued.get(key, 0) != to_minor(quantize(params.rebate(v), key[1]), key[1])]
    if wrong:
        return [f"rebate: {len(wrong)} partner quarters whose accruals differ from the rebate of their volume, "
                f"e.g. {wrong[0]}"]
    return []


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
            if "per_program" in checks:  # the mix: several programs per event, fund entries besides rewards
                extra.update(calculations=rows["calculations"],
                             calculations_per_s=_rate(rows["calculations"], st.seconds),
                             fund_entries=rows["fund_entries"],
                             fund_entries_per_s=_rate(rows["fund_entries"], st.seconds))
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
                  "peak_rss_mb": run["run_peak_rss"] / MB,
                  "rewards_created": rewards, "rewards_created_rate": _rate(rewards, elapsed)}
    report: dict[str, Any] = {
        "bench": "payhub pipeline on SQLite",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {**run["host"], "loadavg_1min": run["load"]},
        "params": {"events": args.events, "payees": args.payees, "programs": args.programs,
                   "calculator": args.calculator if args.programs != "mix" else None,
                   "partners": args.partners if args.programs == "mix" else None,
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
        "mix": None,
    }
    plan = run["inputs"]["mix"]
    if plan is not None:
        report["mix"] = {
            "programs": plan["programs"], "not_installed": plan["not_installed"], "partners": plan["partners"],
            "reps": plan["reps"], "currency": plan["currency"], "event_counts": plan["event_counts"],
            "expected_calculations": plan["expected_calculations"],
            "rewards_by_status": {s: checks["rewards_by_status"].get(s, 0) for s in REWARD_STATUSES}
            | {s: n for s, n in checks["rewards_by_status"].items() if s not in REWARD_STATUSES},
            "held_by_code": checks["held_by_code"], "adjustments": checks["adjustments"],
            "converted_items": checks["converted_items"],
            "fund_entries": checks["fund_entries"], "fund_entries_by_program": checks["fund_entries_by_program"],
            "per_program": checks["per_program"], "notes": checks["notes"], "audit_verify": checks["audit_verify"],
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
    what = "programs=mix" if report.get("mix") else f"calculator={p['calculator']}"
    w(f"payhub bench: {p['events']:,} events, {p['payees']:,} payees, {what}, "
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
            if "calculations" in s:
                w(f"   ({s['events']:,} events, {s['calculations']:,} calculations {_fmt(s['calculations_per_s'])}/s, "
                  f"{s['fund_entries']:,} fund entries)")
            else:
                w(f"   ({s['events']:,} events)")
        w("\n")
    w(f"{'end to end':<12}{e2e['seconds']:>10.2f}{e2e['cpu_seconds']:>9.2f}{e2e['rewards']:>12,} {'rewards':<8}"
      f"{_fmt(e2e['rate']):>12}"
      f"{e2e['peak_rss_mb']:>13.1f}\n")
    if report.get("mix"):
        render_mix(report, w)
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
    passed = ("ok (each (program, event) calculated once and as expected, payouts add up to the rewards in them, "
              "approvals, budgets, clawbacks, funds and rebate accruals consistent)" if report.get("mix") else
              "ok (every event calculated, every reward paid once, totals match)")
    w("\nchecks: " + (passed if ch["ok"] else "FAILED: " + "; ".join(ch["problems"])) + "\n")
    return out.getvalue()


def render_mix(report: dict[str, Any], w: Callable[[str], Any]) -> None:
    """The mix's own lines: what ran, the rates that matter for several programs, where the rewards ended."""
    from payhub.money import from_minor

    mix, e2e = report["mix"], report["end_to_end"]
    stage = {s["stage"]: s for s in report["stages"]}
    calc, ingest = stage["calculate"], stage["ingest"]
    names = list(mix["programs"])
    w(f"\nmix: {len(names)} programs ({', '.join(names)}) over {mix['partners']} partners and {mix['reps']:,} reps"
      + (f"; not installed: {', '.join(mix['not_installed'])}" if mix["not_installed"] else "") + "\n")
    w("  events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(mix["event_counts"].items(), key=lambda kv: -kv[1]))
      + "\n")
    w(f"  ingest {_fmt(ingest['rate'])} events/s; calculate {_fmt(calc['calculations_per_s'])} calculations/s, "
      f"{_fmt(calc['rate'])} rewards/s, {_fmt(calc['fund_entries_per_s'])} fund entries/s; end to end "
      f"{_fmt(e2e['events_rate'])} events/s, {_fmt(e2e['rewards_created_rate'])} rewards created/s, "
      f"{_fmt(e2e['rate'])} rewards paid/s\n")
    held = ", ".join(f"{code} {n:,}" for code, n in mix["held_by_code"].items())
    w("  rewards by status: " + ", ".join(f"{s} {n:,}" + (f" ({held})" if s == "held" and held else "")
                                         for s, n in mix["rewards_by_status"].items())
      + f"; adjustments (negative rewards) {mix['adjustments']:,}; paid in the payee's currency at an ECB rate "
        f"{mix['converted_items']:,}\n")
    w(f"  fund entries written: {mix['fund_entries']:,} ("
      + ", ".join(f"{k} {v:,}" for k, v in mix["fund_entries_by_program"].items() if v) + ")\n")
    w(f"  {'program':<19}{'calcs':>9}{'rewarded':>10}{'not elig.':>10}{'failed':>8}{'rewards':>9}{'adjust.':>8}"
      f"{'amount':>20}{'funds':>8}\n")
    for name, p in mix["per_program"].items():
        c = p["calculations"]
        amount = f"{from_minor(p['rewards_minor'] or 0, mix['currency']):,} {mix['currency']}"
        w(f"  {name:<19}{sum(c.values()):>9,}{c.get('rewarded', 0):>10,}{c.get('not_eligible', 0):>10,}"
          f"{c.get('failed', 0):>8,}{p['rewards']:>9,}{p['adjustments'] or 0:>8,}{amount:>20}{p['fund_entries']:>8,}\n")
        for failure in p["failures"]:
            w(f"      failed {failure['count']:,}x: {failure['reason']}\n")
    audit = mix["audit_verify"]
    if audit is None:
        w(f"  audit verify: skipped (runs up to {AUDIT_VERIFY_AUTO_MAX:,} events, or with --audit-verify always)\n")
    else:
        w(f"  audit verify: {'ok' if audit['ok'] else 'FAILED: ' + str(audit['problem'])}, {audit['checked']:,} "
          f"entries in {audit['seconds']:.1f} s (not timed in the figures)\n")
    for note in mix["notes"]:
        w(f"  note: {note}\n")


# ------------------------------------------------------------------------------------------------- modes


def run_one(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    rss = RssMeter()
    workdir = Path(tempfile.mkdtemp(prefix="payhub-bench-", dir=args.workdir))
    try:
        run = run_pipeline(workdir, args, rss)
        db_path = workdir / "payhub.db"
        db_bytes = sum(Path(f"{db_path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db_path}{s}").exists())
        plan = run["inputs"]["mix"]
        if plan is None:
            checks = check(db_path, run["rail"], args.events)
        else:
            if not args.quiet:
                print("  checking the mix...", file=sys.stderr)
            verify_audit = args.audit_verify == "always" or (args.audit_verify == "auto"
                                                             and args.events <= AUDIT_VERIFY_AUTO_MAX)
            checks = check_mix(db_path, run["rail"], args.events, plan, verify_audit)
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
               "--programs", args.programs, "--partners", str(args.partners), "--audit-verify", "never",
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
    ap.add_argument("--programs", choices=("percentage", "mix"), default="percentage",
                    help="percentage: the one program of --calculator over deal_won events (default, the historical "
                         "figures); mix: the built-in program calculators at once over a year of mixed events")
    ap.add_argument("--calculator", choices=("percentage", "flat"), default="percentage",
                    help="the single program's calculator (not with --programs mix)")
    ap.add_argument("--partners", type=int, default=40, help="--programs mix: partner organisations (default 40), "
                    "payees too, besides the --payees reps")
    ap.add_argument("--audit-verify", choices=("auto", "always", "never"), default="auto",
                    help=f"--programs mix: verify the audit chain after the run (auto: up to "
                         f"{AUDIT_VERIFY_AUTO_MAX:,} events)")
    ap.add_argument("--currencies", type=lambda s: [c.strip().upper() for c in s.split(",") if c.strip()],
                    help="comma-separated; payee k is paid in currency k mod len (default USD; with --programs mix "
                         "USD,EUR,GBP, the events being in the first)")
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
    if args.currencies is None:
        args.currencies = list(MIX_CURRENCIES) if args.programs == "mix" else ["USD"]
    if args.events < 1 or args.payees < 1 or not args.currencies:
        ap.error("--events and --payees must be positive and --currencies non-empty")
    if args.partners < 1 or args.partners > args.payees:
        ap.error("--partners must be between 1 and --payees (each partner has at least one rep)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sizes:
        return run_sizes(args)
    return run_one(args)


if __name__ == "__main__":
    sys.exit(main())
