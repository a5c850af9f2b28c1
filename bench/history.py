"""History cost: calculations/s of the calculate stage as a period's history grows, and the program mix against one
program.

Method: each run is one in-process pipeline (bench.runner.run_pipeline: generated CSV → ingest → calculate →
schedule → disburse on a fresh SQLite file, synchronous=FULL, batch 2,000), in a fresh work directory. The calculate
stage's wall and CPU seconds are summed over its calls (the stage meter); calculations are the ``calculations`` rows
written, events the events calculated. Runs: the single percentage program at 20,000 events and at the largest of
``sizes`` (1,000,000 by default; 100,000 with ``--quick``), and the program mix (bench.gen ``programs="mix"``: spiff,
rebate, deal registration, activity, co-op and the optional ones, with splits, caps, budgets, clawbacks, funds) at
that largest size. The runs go one after the other, never at once; CPU seconds are the measure that a loaded
machine disturbs least, so the ratios use them (wall ratios are in the notes).

Figures: calculations/s at 20k and at the large size (single program), their ratio large/20k (target ≥ 0.8:
within 20 %), and the mix's events/s against the single program's events/s at the large size (target ≥ 0.8).

    python -m bench.history [--sizes 20000,1000000] [--quick] [--json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.figures import CompareOptions, Figure, render_table

SMALL = 20_000


def measure(workdir: Path, events: int, programs: str, seed: int) -> dict[str, Any]:
    """One pipeline run; the calculate stage's seconds, CPU seconds, calculations and events calculated."""
    from sqlalchemy import create_engine, text

    from bench.runner import RssMeter, RunOptions, run_pipeline

    opts = RunOptions(events=events, programs=programs, seed=seed, quiet=True)
    run = run_pipeline(workdir, opts, RssMeter())
    stage = run["meter"].stats["calculate"]
    engine = create_engine(run["database_url"])
    try:
        with engine.connect() as conn:
            calculations = int(conn.execute(text("SELECT count(*) FROM calculations")).scalar_one())
            calculated = int(conn.execute(text("SELECT count(*) FROM events WHERE status = 'calculated'"))
                             .scalar_one())
    finally:
        engine.dispose()
    return {"events": events, "programs": programs, "seconds": stage.seconds, "cpu": stage.cpu_seconds,
            "calculations": calculations, "calculated_events": calculated, "load": run["load"]}


def _rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(opts: CompareOptions) -> list[Figure]:
    """The history figures (see the module docstring)."""
    large = 100_000 if opts.quick else max(opts.sizes or (1_000_000,))
    base = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="payhub-history-"))
    runs: dict[str, dict[str, Any]] = {}
    try:
        for name, events, programs in (("small", SMALL, "percentage"), ("large", large, "percentage"),
                                       ("mix", large, "mix")):
            workdir = base / f"{name}-{events}"
            shutil.rmtree(workdir, ignore_errors=True)
            runs[name] = measure(workdir, events, programs, opts.seed)
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not opts.workdir:
            shutil.rmtree(base, ignore_errors=True)
    small, big, mix = runs["small"], runs["large"], runs["mix"]
    rates = {name: {"cpu": _rate(r["calculations"], r["cpu"]), "wall": _rate(r["calculations"], r["seconds"]),
                    "events_cpu": _rate(r["calculated_events"], r["cpu"]),
                    "events_wall": _rate(r["calculated_events"], r["seconds"])} for name, r in runs.items()}
    load = ", ".join(f"{name} {r['load']['before']:.2f}→{r['load']['after']:.2f}" for name, r in runs.items()
                     if r["load"]["before"] is not None and r["load"]["after"] is not None)
    wall_history = _ratio(rates["large"]["wall"], rates["small"]["wall"])
    wall_mix = _ratio(rates["mix"]["events_wall"], rates["large"]["events_wall"])
    label = f"{large // 1000:,}k"
    return [
        Figure("history: calculations/s @20k (percentage, cpu)", rates["small"]["cpu"], "calc/s",
               note=f"wall {rates['small']['wall'] or 0:,.0f}/s; {small['calculations']:,} calculations in "
                    f"{small['cpu']:.2f} cpu s, {small['seconds']:.2f} s"),
        Figure(f"history: calculations/s @{label} (percentage, cpu)", rates["large"]["cpu"], "calc/s",
               note=f"wall {rates['large']['wall'] or 0:,.0f}/s; {big['calculations']:,} calculations in "
                    f"{big['cpu']:.2f} cpu s, {big['seconds']:.2f} s"),
        Figure(f"history: calculations/s {label} / 20k (cpu)", _ratio(rates["large"]["cpu"], rates["small"]["cpu"]),
               "ratio", target=0.8,
               note=f"wall ratio {wall_history:.2f}; load {load}" if wall_history is not None else f"load {load}"),
        Figure(f"history: mix / single program events/s @{label} (cpu)",
               _ratio(rates["mix"]["events_cpu"], rates["large"]["events_cpu"]), "ratio", target=0.8,
               note=f"mix {rates['mix']['events_cpu'] or 0:,.0f} events/s ({mix['calculations']:,} calculations of "
                    f"{mix['calculated_events']:,} events in {mix['cpu']:.2f} cpu s, {mix['seconds']:.2f} s), single "
                    f"{rates['large']['events_cpu'] or 0:,.0f}/s" + (f"; wall ratio {wall_mix:.2f}"
                                                                     if wall_mix is not None else "")),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000", help="comma-separated event counts; the largest is measured")
    ap.add_argument("--quick", action="store_true", help="100,000 events instead of the largest size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    opts = CompareOptions(sizes=tuple(int(s) for s in args.sizes.split(",") if s), quick=args.quick, seed=args.seed,
                          workdir=args.workdir, pg_url=None)
    figures = compare(opts)
    print(json.dumps([f.as_dict() for f in figures], indent=2) if args.json else render_table(figures))
    print(f"load average now: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
