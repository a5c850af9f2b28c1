"""The command line of the benchmarks.

    python -m bench                       # one pipeline run: 100,000 events on SQLite, human-readable table
    python -m bench --programs mix -n 20000   # the program mix, with its checks and the audit chain verified
    python -m bench -n 1000000 --json     # JSON on stdout
    python -m bench --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres   # on a fresh PostgreSQL database
    python -m bench --sizes 100000,300000,1000000   # memory flatness: one fresh process per size
    python -m bench -n 100000 --profile   # cProfile per stage, top functions printed and saved
    python -m bench -n 100000 --profile pyinstrument --no-ceiling   # call trees per stage (pip install)
    python -m bench --compare [--sizes 100000,1000000] [--quick] [--pg URL | --no-pg] [--json]

``--compare`` runs, each in a fresh process, the pipeline at every size on SQLite and PostgreSQL with the ceiling of
each, then the ``compare(opts) -> list[Figure]`` of every figure module present (FIGURE_MODULES), each in a child
process of its own, and prints every figure with its target and ratio (bench.figures.render_table), the load average
before and after, the commit and the CPU count; the JSON goes to bench/results/ (and to stdout with --json). A
module that is missing or fails is reported and the others still run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import CompareOptions, Figure, render_table
from bench.gen import default_currencies
from bench.report import _fmt, render
from bench.runner import (
    AUDIT_VERIFY_AUTO_MAX,
    DEFAULT_PG_URL,
    REPO,
    RESULTS_DIR,
    STAGES,
    RunOptions,
    host_info,
    libpq_url,
    run_measured,
)

# The modules whose compare(opts) --compare calls after the pipeline figures, in this order.
FIGURE_MODULES = ("history", "audit_speed", "startup", "pg", "pgqueuer_cmp", "cadence")
PROG = "python -m bench"
FLAT_RSS = 1.10  # the peak RSS of the largest size within 10 % of the smallest's
CEILING_SHARE = 0.5  # end to end at least half the independent ceiling


# ------------------------------------------------------------------------------------------------- PostgreSQL


def pg_unreachable(url: str, timeout: float = 5) -> str | None:
    """None when the server of the SQLAlchemy URL ``url`` accepts a connection within ``timeout`` seconds; otherwise
    the one-line reason ``PostgreSQL at <host:port> is not reachable: <why>``."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        return f"--pg {url!r} is not a database URL: {str(exc).splitlines()[0]}"
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    try:
        import psycopg

        with psycopg.connect(libpq_url(url), connect_timeout=max(1, round(timeout))):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure to connect is reported in one line
        why = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return f"PostgreSQL at {where} is not reachable: {why}"


def fail(message: str) -> int:
    """Print ``message`` as argparse's parser.error does (without the usage) and return its exit status, 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------------------- one run


def run_one(args: argparse.Namespace) -> int:
    if args.pg and (why := pg_unreachable(args.pg)):
        return fail(why)
    opts = RunOptions.from_namespace(args)
    opts.database_url = args.pg
    report, run = run_measured(opts, ceiling=not args.no_ceiling, audit_verify=args.audit_verify,
                               workdir=args.workdir, keep=args.keep)
    text = render(report)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tag = f"n{args.events}" + ("-pg" if args.pg else "")
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        base = RESULTS_DIR / f"{stamp}-{tag}"
        base.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        base.with_suffix(".txt").write_text(text)
        report["saved"] = str(base.with_suffix(".json"))
    if args.profile:
        profiler = run["meter"].profiler
        prof_text = profiler.report(run["meter"], args.profile_top)
        if not args.no_save:
            base = RESULTS_DIR / f"{stamp}-{tag}-{args.profile}"
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
    if args.pg and (why := pg_unreachable(args.pg)):
        return fail(why)
    results = []
    for size in args.sizes:
        cmd = [sys.executable, "-m", "bench", "-n", str(size), "--json", "--no-save", "--quiet",
               "--payees", str(args.payees), "--calculator", args.calculator, "--synchronous", args.synchronous,
               "--programs", args.programs, "--partners", str(args.partners), "--audit-verify", "never",
               "--batch-size", str(args.batch_size), "--source-batch", str(args.source_batch),
               "--rail-batch", str(args.rail_batch), "--currencies", ",".join(args.currencies),
               "--seed", str(args.seed)]
        if args.workdir:
            cmd += ["--workdir", args.workdir]
        if args.pg:
            cmd += ["--pg", args.pg]
        if not args.sizes_ceiling:
            cmd.append("--no-ceiling")
        print(f"  N={size:,} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
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


# ------------------------------------------------------------------------------------------------- --compare


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _pipeline_run(size: int, pg_url: str | None, opts: CompareOptions) -> dict[str, Any]:
    """One pipeline run with its ceiling in a fresh interpreter (so its peak RSS is its own); the JSON report."""
    cmd = [sys.executable, "-m", "bench", "-n", str(size), "--json", "--no-save", "--quiet",
           "--seed", str(opts.seed)]
    if pg_url:
        cmd += ["--pg", pg_url]
    if opts.workdir:
        cmd += ["--workdir", str(opts.workdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"exit {proc.returncode}: {tail}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def pipeline_figures(opts: CompareOptions, log: Any = None) -> tuple[list[Figure], list[dict[str, Any]]]:
    """End to end rewards/s against the independent ceiling at each size, and peak RSS per size, on SQLite and
    (when ``opts.pg_url``) PostgreSQL. Returns the figures and a summary row per run."""
    figures: list[Figure] = []
    runs: list[dict[str, Any]] = []
    backends: list[tuple[str, str | None, tuple[int, ...]]] = [("sqlite", None, opts.sizes)]
    if opts.pg_url:
        backends.append(("postgresql", opts.pg_url, opts.pg_sizes or opts.sizes))
    for backend, url, sizes in backends:
        peaks: dict[int, float] = {}
        down = pg_unreachable(url) if url else None  # every run of an unreachable server fails for that reason
        if down and log:
            log(f"  pipeline: {down}")
        for size in sizes:
            name = f"{backend} {size:,}"
            if log and not down:
                log(f"  pipeline: {name} events with its ceiling ...")
            start = time.perf_counter()
            try:
                if down:
                    raise RuntimeError(down)
                r = _pipeline_run(size, url, opts)
            except Exception as exc:  # noqa: BLE001 - one failed run must not stop the others
                figures.append(Figure(f"end to end / ceiling, {name}", None, "× ceiling", CEILING_SHARE,
                                      note=f"run failed: {exc}"))
                runs.append({"backend": backend, "events": size, "error": str(exc)})
                continue
            e2e, c, checks = r["end_to_end"], r.get("ceiling") or {}, r["checks"]
            ceiling_rate = (c.get("all_tables") or {}).get("rewards_rate")
            ratio = (c.get("ratio") or {}).get("end_to_end_vs_all_tables")
            ok = "checks ok" if checks["ok"] else "CHECKS FAILED: " + "; ".join(checks["problems"])[:200]
            figures.append(Figure(
                f"end to end / ceiling, {name}", ratio, "× ceiling", CEILING_SHARE,
                note=f"{_fmt(e2e['rate'])} rewards/s ({e2e['cpu_seconds']:.1f} cpu s in {e2e['seconds']:.1f} s) "
                     f"vs ceiling {_fmt(ceiling_rate)} rewards/s; {ok}"))
            peaks[size] = r["memory"]["run_peak_rss_mb"]
            figures.append(Figure(f"peak RSS, {name}", peaks[size], "MB",
                                  note=f"run peak; baseline {r['memory']['baseline_rss_mb']:.0f} MB"))
            runs.append({"backend": backend, "events": size, "seconds": e2e["seconds"],
                         "cpu_seconds": e2e["cpu_seconds"], "rewards_per_s": e2e["rate"],
                         "ceiling_rewards_per_s": ceiling_rate, "ratio": ratio, "peak_rss_mb": peaks[size],
                         "checks_ok": checks["ok"], "problems": checks["problems"],
                         "rows_per_reward": r["database"]["rows_per_reward"], "load": r["host"]["loadavg_1min"],
                         "wall_s": time.perf_counter() - start})
        if len(peaks) >= 2:
            small, large = min(peaks), max(peaks)
            figures.append(Figure(f"peak RSS {large:,} / {small:,}, {backend}", peaks[large] / peaks[small], "×",
                                  FLAT_RSS, "lower", note=f"{peaks[large]:.0f} MB vs {peaks[small]:.0f} MB (flat: "
                                  f"within {FLAT_RSS - 1:.0%})"))
    return figures, runs


MODULE_RESULT = "bench-figures-json: "  # the line a module's child process prints its figures on


def _options_json(opts: CompareOptions) -> str:
    return json.dumps({"sizes": list(opts.sizes), "pg_sizes": list(opts.pg_sizes) if opts.pg_sizes else None,
                       "pg_url": opts.pg_url,
                       "workdir": str(opts.workdir) if opts.workdir else None, "quick": opts.quick,
                       "seed": opts.seed, "extra": opts.extra}, default=str)


def _options_from_json(text: str) -> CompareOptions:
    d = json.loads(text)
    return CompareOptions(sizes=tuple(d["sizes"]), pg_sizes=tuple(d["pg_sizes"]) if d.get("pg_sizes") else None,
                          pg_url=d["pg_url"],
                          workdir=Path(d["workdir"]) if d["workdir"] else None, quick=d["quick"], seed=d["seed"],
                          extra=d.get("extra") or {})


def _figure_from_dict(d: dict[str, Any]) -> Figure:
    return Figure(name=str(d["name"]), value=d.get("value"), unit=str(d.get("unit", "")), target=d.get("target"),
                  better="lower" if d.get("better") == "lower" else "higher", note=str(d.get("note", "")))


def run_module_child(name: str, options: str) -> int:
    """In a child process of --compare: import ``bench.<name>``, call its compare(), print the figures as one JSON
    line on stdout (the module's own prints go to stderr). Exit 3: the module is absent; 4: no compare()."""
    module_name = f"bench.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return 3
        raise
    compare = getattr(module, "compare", None)
    if not callable(compare):
        return 4
    with contextlib.redirect_stdout(sys.stderr):
        got = list(compare(_options_from_json(options)))
    bad = [f for f in got if not isinstance(f, Figure)]
    if bad:
        print(f"  {module_name}.compare returned {len(bad)} items that are not Figures (ignored)", file=sys.stderr)
    print(MODULE_RESULT + json.dumps([f.as_dict() for f in got if isinstance(f, Figure)], default=str), flush=True)
    return 0


def _run_child(cmd: list[str], timeout: float | None) -> tuple[int | None, str, str]:
    """Run ``cmd``: its stderr passes through to ours as it comes, its stdout is collected; stopped (SIGKILL to its
    process group) after ``timeout`` seconds. Returns (exit status or None when stopped, stdout, the last line of
    stderr that is not blank)."""
    import signal
    import tempfile
    import threading

    last = ""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        stopped = threading.Event()

        def stop() -> None:
            stopped.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, stop) if timeout else None
        if timer:
            timer.start()
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                sys.stderr.write(line)
                if line.strip():
                    last = line.strip()
            proc.wait()
        except BaseException:  # interrupted: the child (in its own session) must not outlive us
            stop()
            raise
        finally:
            if timer:
                timer.cancel()
        out.seek(0)
        return (None if stopped.is_set() else proc.returncode), out.read(), last


def module_figures(opts: CompareOptions, log: Any, timeout: float | None = None,
                   modules: list[str] | None = None) -> tuple[list[Figure], dict[str, str]]:
    """Call ``compare(opts)`` of each module of FIGURE_MODULES that exists, each in a child process of its own (its
    peak RSS is its own, and a crash, a hang past ``timeout`` seconds or a patched global stays there). A missing or
    failing module is logged and recorded in the second value (module -> "missing" or the error); the others still
    run."""
    figures: list[Figure] = []
    status: dict[str, str] = {}
    for name in FIGURE_MODULES if modules is None else modules:
        module_name = f"bench.{name}"
        if importlib.util.find_spec(module_name) is None:
            status[name] = "missing"
            log(f"  {module_name}: not present, skipped")
            continue
        log(f"  {module_name}.compare ...")
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "bench", "--module-compare", name, "--compare-options", _options_json(opts)]
        returncode, stdout, last_error = _run_child(cmd, timeout)
        lines = [line for line in stdout.splitlines() if line.startswith(MODULE_RESULT)]
        if returncode is None:
            status[name] = f"failed: no answer within {timeout:.0f} s (stopped)"
        elif returncode == 3:
            status[name] = "missing"
        elif returncode == 4:
            status[name] = "no compare(opts)"
        elif returncode != 0 or not lines:
            status[name] = f"failed (exit {returncode}): {last_error or 'no figures printed'}"
        else:
            got = [_figure_from_dict(d) for d in json.loads(lines[-1][len(MODULE_RESULT):])]
            figures += got
            status[name] = f"ok ({len(got)} figures, {time.perf_counter() - start:.0f} s)"
            continue
        log(f"  {module_name}: {status[name]}")
        if status[name].startswith("failed"):
            figures.append(Figure(f"{name}: compare() failed", None, "", note=status[name][:200]))
    return figures, status


def run_compare(args: argparse.Namespace) -> int:
    """--compare: every figure, its target and ratio; see the module docstring."""
    opts = CompareOptions(sizes=tuple(args.sizes), pg_sizes=tuple(args.pg_sizes) if args.pg_sizes else None,
                          pg_url=None if args.no_pg else (args.pg or DEFAULT_PG_URL),
                          workdir=Path(args.workdir) if args.workdir else None, quick=args.quick, seed=args.seed)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    host = host_info()
    load_before = _loadavg()
    started = datetime.now(UTC)
    log(f"bench --compare: sizes {', '.join(f'{n:,}' for n in opts.sizes)}"
        + (" (quick)" if opts.quick else "") + f"; PostgreSQL {opts.pg_url or 'skipped'}")
    figures, runs = pipeline_figures(opts, log)
    more, status = module_figures(opts, log, args.module_timeout, args.modules)
    figures += more
    load_after = _loadavg()
    seconds = (datetime.now(UTC) - started).total_seconds()
    out = io.StringIO()
    w = out.write
    w(f"payhub bench --compare: sizes {', '.join(f'{n:,}' for n in opts.sizes)}"
      + (" (--quick: indicative only, the targets are for the full sizes)" if opts.quick else "")
      + f"; PostgreSQL {'skipped' if not opts.pg_url else 'on ' + opts.pg_url.split('@')[-1]}\n")
    w(f"commit {host.get('commit', '?')}{' (src modified)' if host.get('src_modified') else ''}, "
      f"{host['cpus']} CPUs, Python {host['python']}, SQLite {host['sqlite']}; load average (1, 5, 15 min) "
      f"{load_before} before, {load_after} after; {seconds:.0f} s\n\n")
    w(render_table(figures) + "\n")
    skipped = {k: ("ran, no figures (e.g. PostgreSQL skipped)" if v.startswith("ok (0 ") else v)
               for k, v in status.items() if not v.startswith("ok") or v.startswith("ok (0 ")}
    if skipped:
        w("\nnot measured: " + "; ".join(f"bench.{k} {v}" for k, v in skipped.items()) + "\n")
    met = [f.met for f in figures if f.met is not None]
    w(f"\n{sum(met)} of {len(met)} targets met\n")
    text = out.getvalue()
    report = {"bench": "payhub --compare", "at": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "seconds": seconds,
              "host": host, "loadavg": {"before": load_before, "after": load_after},
              "options": {"sizes": list(opts.sizes), "pg_url": opts.pg_url, "quick": opts.quick, "seed": opts.seed},
              "figures": [f.as_dict() for f in figures], "modules": status, "pipeline_runs": runs}
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}-compare.json"
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        path.with_suffix(".txt").write_text(text)
        report["saved"] = str(path)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(text, end="")
        if "saved" in report:
            print(f"saved: {report['saved']}")
    return 0 if all(r.get("checks_ok") for r in runs) else 1


# ------------------------------------------------------------------------------------------------- arguments
# Each type function turns one option's text into its value or raises ArgumentTypeError, which argparse prints as
# "python -m bench: error: argument --x: <message>" with exit status 2.


def _whole(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (event and payee counts, FakeRail's max_batch)."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive (at least 1)")
    return value


def batch_size(text: str) -> int:
    """A batch size within the bounds of database.batch_size and sources.<name>.batch_size (1 to MAX_BATCH)."""
    from payhub.settings import MAX_BATCH

    value = _whole(text)
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"{value} is out of range (1 to {MAX_BATCH}, as in the settings)")
    return value


def size_list(text: str) -> list[int]:
    """Comma-separated event counts, each ≥ 1; an empty list is refused."""
    sizes = [positive_int(x) for x in text.split(",") if x.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("an empty list; give comma-separated event counts, e.g. 100000,1000000")
    return sizes


def module_list(text: str) -> list[str]:
    """Comma-separated names of FIGURE_MODULES; '' is none; an unknown name is refused, listing the known ones."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in FIGURE_MODULES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown module {', '.join(map(repr, unknown))} "
                                         f"(known: {', '.join(FIGURE_MODULES)}; '' for none)")
    return names


def currency_list(text: str) -> list[str]:
    """Comma-separated ISO 4217 codes payhub can pay in (payhub.money.check_currency), upper-cased; none is
    refused."""
    from payhub.errors import InvalidRecord
    from payhub.money import check_currency

    codes = []
    for code in (c.strip() for c in text.split(",") if c.strip()):
        try:
            codes.append(check_currency(code))
        except InvalidRecord as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not codes:
        raise argparse.ArgumentTypeError("an empty list; give comma-separated ISO 4217 codes, e.g. USD,EUR")
    return codes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG,
                                 description="Benchmark the payhub pipeline (see bench/README.md). With --compare: "
                                             "every figure of the performance targets, with its ratio.")
    ap.add_argument("-n", "--events", type=positive_int, default=100_000, help="synthetic events (default 100000)")
    ap.add_argument("--payees", type=positive_int, default=1000, help="distinct payees the events are spread over")
    ap.add_argument("--programs", choices=("percentage", "mix"), default="percentage",
                    help="percentage: the one program of --calculator over deal_won events (default, the historical "
                         "figures); mix: the built-in program calculators at once over a year of mixed events")
    ap.add_argument("--calculator", choices=("percentage", "flat"), default="percentage",
                    help="the single program's calculator (not with --programs mix)")
    ap.add_argument("--partners", type=positive_int, default=40,
                    help="--programs mix: partner organisations (default 40), payees too, besides the --payees reps")
    ap.add_argument("--audit-verify", choices=("auto", "always", "never"), default="auto",
                    help=f"--programs mix: verify the audit chain after the run (auto: up to "
                         f"{AUDIT_VERIFY_AUTO_MAX:,} events)")
    ap.add_argument("--currencies", type=currency_list,
                    help="comma-separated; payee k is paid in currency k mod len (default USD; with --programs mix "
                         "USD,EUR,GBP, the events being in the first)")
    ap.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL",
                    help="database.sqlite_synchronous, also used for the ceiling (default FULL, payhub's default)")
    ap.add_argument("--batch-size", type=batch_size, default=2000, help="database.batch_size (default 2000)")
    ap.add_argument("--source-batch", type=batch_size, default=1000, help="sources.<name>.batch_size (default 1000)")
    ap.add_argument("--rail-batch", type=positive_int, default=100, help="FakeRail max_batch (default 100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", type=size_list,
                    help="comma-separated event counts: run each in a fresh process and compare peak RSS")
    ap.add_argument("--sizes-ceiling", action="store_true", help="with --sizes: measure the ceiling in each run")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the sqlite3 ceiling measurement")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also record the tracemalloc peak per stage (slows Python allocations down)")
    ap.add_argument("--profile", nargs="?", const="cprofile", choices=("cprofile", "pyinstrument"),
                    help="profile each stage (default cprofile); write the report next to the results")
    ap.add_argument("--sql-timing", action="store_true",
                    help="time every SQL statement; report the costliest per stage (adds a little overhead)")
    ap.add_argument("--profile-top", type=positive_int, default=25,
                    help="rows listed per stage in the cProfile and --sql-timing reports (default 25)")
    ap.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    ap.add_argument("--workdir", help="where the temporary database and CSV go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ap.add_argument("--pg", metavar="URL", help="run on PostgreSQL: a fresh database is created on the server of URL "
                    "and dropped afterwards (one run; with --compare the server of the PostgreSQL figures, default "
                    f"{DEFAULT_PG_URL})")
    cmp = ap.add_argument_group("comparison (every figure against its target)")
    cmp.add_argument("--compare", action="store_true",
                     help="run the pipeline at each of --sizes (default 100000,1000000) on SQLite and PostgreSQL "
                          "with its ceiling, then every bench module's compare(), and print each figure's ratio")
    cmp.add_argument("--quick", action="store_true", help="with --compare: sizes 20000 only (figures are indicative)")
    cmp.add_argument("--no-pg", action="store_true", help="with --compare: skip every PostgreSQL figure")
    cmp.add_argument("--pg-sizes", type=size_list, default=None,
                     help="with --compare: the PostgreSQL pipeline's sizes (default: --sizes)")
    cmp.add_argument("--modules", type=module_list, default=None,
                     help=f"with --compare: the figure modules to run (default: all of {','.join(FIGURE_MODULES)}; "
                          "'' for none)")
    cmp.add_argument("--module-timeout", type=float, default=3600,
                     help="with --compare: seconds a figure module may take (default 3600)")
    ap.add_argument("--module-compare", help=argparse.SUPPRESS)  # a figure module's child process
    ap.add_argument("--compare-options", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.compare:
        args.sizes = [20_000] if args.quick else (args.sizes or list(CompareOptions().sizes))
        return args
    if args.currencies is None:
        args.currencies = default_currencies(args.programs)
    if args.partners < 1 or args.partners > args.payees:
        ap.error("--partners must be between 1 and --payees (each partner has at least one rep)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.module_compare:
        return run_module_child(args.module_compare, args.compare_options)
    if args.compare:
        return run_compare(args)
    if args.sizes:
        return run_sizes(args)
    return run_one(args)


if __name__ == "__main__":
    sys.exit(main())
