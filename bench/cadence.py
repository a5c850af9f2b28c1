"""Payout cadence: the same backlog disbursed with ``routing.payout_cadence`` per pass, daily and monthly.

Method: for each cadence, a fresh work directory gets the same generated backlog (bench.gen: N ``deal_won`` events
over the payees, one 2.5 % reward each, the in-memory FakeRail as the only rail; 100,000 events and 1,000 payees,
20,000 with ``--quick``) on SQLite (synchronous=FULL). A ManualClock is installed at START. ``Worker.run_once()``
drains it (ingest, calculate, and under ``pass`` schedule and disburse as the daemon does, pass after pass); under a
period cadence the clock is then moved past the end of the period the rewards became payable in and
``run_once()`` drains again, which schedules and disburses them. Timed: wall and CPU seconds of the ``run_once``
calls (end to end), and of the schedule and disburse stage calls. Counted: payouts, rail send calls, rewards sent.
Checked (not timed): every reward sent, the payouts add up to the rewards, each idempotency key sent once.

Figures: payouts per payee and period for each period cadence (target 1, lower is better: every reward of a payee
became payable in one period, so one payout each), the daily cadence's disbursement rewards/s against per pass
(target ≥ 1: disbursement cost follows payouts), its rail calls against per pass, and end to end rewards/s of each.

    python -m bench.cadence [--events 100000] [--payees 1000] [--quick] [--json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import CompareOptions, Figure, render_table
from bench.gen import RAIL_NAME, write_inputs

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday; the generated events are dated from 2026-01-01
CLOSED = {"daily": datetime(2026, 3, 3, 0, 1, tzinfo=UTC), "weekly": datetime(2026, 3, 9, 0, 1, tzinfo=UTC),
          "monthly": datetime(2026, 4, 1, 0, 1, tzinfo=UTC)}
"""A moment just after the period holding START has closed, per cadence."""
CADENCES = ("pass", "daily", "monthly")


class _Stage:
    """Wall and CPU seconds spent in the calls of one stage function, and what they returned."""

    def __init__(self) -> None:
        self.seconds = self.cpu = 0.0
        self.items = 0

    def wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.cpu += time.process_time() - c0
            self.items += int(result or 0)
            return result

        return timed


def run_cadence(workdir: Path, cadence: str, events: int, payees: int, seed: int) -> dict[str, Any]:
    """Drain the backlog under ``cadence``; return the measures (see the module docstring)."""
    import payhub.worker as worker_module
    from payhub.db import migrate
    from payhub.db.engine import make_engine
    from payhub.runtime import Runtime
    from payhub.settings import load_settings
    from payhub.testing import ManualClock
    from payhub.worker import Worker

    write_inputs(workdir, events=events, payees=payees, seed=seed)
    settings = load_settings(workdir / "payhub.toml")
    settings.routing.payout_cadence = cadence  # type: ignore[assignment]
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.database.sqlite_synchronous)
    migrate.upgrade(engine)
    engine.dispose()
    stages = {"schedule": _Stage(), "disburse": _Stage()}
    saved = {"schedule_batch": worker_module.schedule_batch, "disburse_rail": worker_module.disburse_rail}
    worker_module.schedule_batch = stages["schedule"].wrap(saved["schedule_batch"])  # type: ignore[assignment]
    worker_module.disburse_rail = stages["disburse"].wrap(saved["disburse_rail"])  # type: ignore[assignment]
    try:
        with ManualClock(START) as clock:
            rt = Runtime(settings)
            rt.load_plugins()
            rail = rt.plugins.rails[RAIL_NAME]
            worker = Worker(rt)
            worker.start()
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                worker.run_once()
                if cadence != "pass":
                    clock.set(CLOSED[cadence])
                    worker.run_once()
                elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
                counts = _counts(rt)
            finally:
                worker.stop()
                rt.close()
    finally:
        worker_module.schedule_batch = saved["schedule_batch"]  # type: ignore[assignment]
        worker_module.disburse_rail = saved["disburse_rail"]  # type: ignore[assignment]
    keys = [key for call in rail.calls for key in call]
    problems = []
    if counts["rewards"] != counts["rewards_sent"]:
        problems.append(f"{counts['rewards'] - counts['rewards_sent']} rewards not sent")
    if counts["payout_minor"] != counts["reward_minor"]:
        problems.append("payouts do not add up to the rewards")
    if len(keys) != len(set(keys)) or len(keys) != counts["payouts"]:
        problems.append(f"{len(keys)} keys sent ({len(set(keys))} distinct) for {counts['payouts']} payouts")
    return {"cadence": cadence, "elapsed": elapsed, "cpu": cpu, "rail_calls": len(rail.calls),
            "schedule_s": stages["schedule"].seconds, "schedule_cpu": stages["schedule"].cpu,
            "disburse_s": stages["disburse"].seconds, "disburse_cpu": stages["disburse"].cpu,
            "problems": problems, **counts}


def _counts(rt: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from payhub.db.schema import payouts, rewards

    per_payee = select(func.count().label("n")).select_from(payouts).group_by(payouts.c.payee_id).subquery()
    with rt.engine.connect() as conn:
        return {
            "rewards": conn.execute(select(func.count()).select_from(rewards)).scalar_one(),
            "rewards_sent": conn.execute(select(func.count()).select_from(rewards).where(
                rewards.c.status.in_(("sent", "paid")))).scalar_one(),
            "reward_minor": conn.execute(select(func.coalesce(func.sum(rewards.c.amount_minor), 0))).scalar_one(),
            "payouts": conn.execute(select(func.count()).select_from(payouts)).scalar_one(),
            "payout_minor": conn.execute(select(func.coalesce(func.sum(payouts.c.amount_minor), 0))).scalar_one(),
            "payees_paid": conn.execute(select(func.count(func.distinct(payouts.c.payee_id)))).scalar_one(),
            "max_per_payee": conn.execute(select(func.coalesce(func.max(per_payee.c.n), 0))).scalar_one(),
        }


def measure(opts: CompareOptions) -> list[dict[str, Any]]:
    """One run per cadence of CADENCES (``opts.extra``: ``cadence_events``, ``cadence_payees``)."""
    events = int(opts.extra.get("cadence_events", 20_000 if opts.quick else 100_000))
    payees = int(opts.extra.get("cadence_payees", 1000))
    base = Path(tempfile.mkdtemp(prefix="payhub-cadence-", dir=opts.workdir))
    runs = []
    try:
        for cadence in CADENCES:
            runs.append(run_cadence(base / cadence, cadence, events, payees, opts.seed))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return runs


def figures(runs: list[dict[str, Any]], quick: bool = False) -> list[Figure]:
    """The figures of :func:`measure`'s runs."""
    by = {run["cadence"]: run for run in runs}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    size = f"{by['pass']['rewards']:,} rewards, {by['pass']['payees_paid']:,} payees, SQLite FULL" + (
        ", quick" if quick else "") + (f", load {load:.1f}" if load is not None else "")
    out: list[Figure] = []
    for cadence, run in by.items():
        if run["problems"]:
            out.append(Figure(f"cadence {cadence}: checks", None, "", note="; ".join(run["problems"])))
        detail = (f"{run['payouts']:,} payouts, {run['rail_calls']:,} rail calls, disburse "
                  f"{run['disburse_s']:.1f} s ({run['disburse_cpu']:.1f} CPU s), schedule {run['schedule_s']:.1f} s "
                  f"({run['schedule_cpu']:.1f} CPU s)")
        per_payee = run["payouts"] / max(run["payees_paid"], 1)
        if cadence == "pass":
            out.append(Figure("cadence pass: payouts per payee", per_payee, "payouts", note=f"{detail}; {size}"))
        else:
            out.append(Figure(f"cadence {cadence}: payouts per payee and period", per_payee, "payouts", 1.0, "lower",
                              note=f"{detail}; most for one payee {run['max_per_payee']}"))
        out.append(Figure(f"cadence {cadence}: end to end", run["rewards_sent"] / run["elapsed"], "rewards/s",
                          note=f"{run['elapsed']:.1f} s wall, {run['cpu']:.1f} CPU s"))
    base = by["pass"]
    for cadence in (c for c in by if c != "pass"):
        run = by[cadence]
        mine = run["rewards_sent"] / run["disburse_cpu"] if run["disburse_cpu"] else None
        theirs = base["rewards_sent"] / base["disburse_cpu"] if base["disburse_cpu"] else None
        out.append(Figure(f"cadence {cadence}/pass: disbursement rewards/s", mine / theirs if mine and theirs else
                          None, "×", 1.0, note=f"by disburse CPU s: {mine or 0:,.0f} vs {theirs or 0:,.0f} rewards/s"))
        out.append(Figure(f"cadence {cadence}/pass: rail calls", run["rail_calls"] / max(base["rail_calls"], 1), "×",
                          1.0, "lower", note=f"{run['rail_calls']:,} vs {base['rail_calls']:,}"))
    return out


def compare(opts: CompareOptions) -> list[Figure]:
    """The cadence figures (see the module docstring)."""
    return figures(measure(opts), opts.quick)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cadence", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="events (default 100000, 20000 with --quick)")
    parser.add_argument("--payees", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {"cadence_payees": args.payees}
    if args.events:
        extra["cadence_events"] = args.events
    opts = CompareOptions(quick=args.quick, seed=args.seed, workdir=args.workdir, extra=extra)
    runs = measure(opts)
    found = figures(runs, opts.quick)
    if args.json:
        print(json.dumps({"runs": runs, "figures": [fig.as_dict() for fig in found]}, indent=2, default=str))
    else:
        print(render_table(found))


if __name__ == "__main__":
    main()
