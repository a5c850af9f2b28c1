"""The report of one pipeline run: :func:`build_report` makes the JSON-ready dict (parameters, setup, stages, end to
end, memory, checks, SQL timing, database size, ceiling and ratios, the mix's figures) and :func:`render` its text.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.checks import REWARD_STATUSES
from bench.runner import AUDIT_VERIFY_AUTO_MAX, MB, REPO, STAGES, Meter, RssMeter, RunOptions


def _rate(n: float, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def build_report(opts: RunOptions, run: dict[str, Any], checks: dict[str, Any],
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
            **({"peak_traced_mb": st.peak_traced / MB} if opts.tracemalloc else {}),
        })
    elapsed = run["elapsed"]
    staged = sum(s["seconds"] for s in stages)
    end_to_end = {"seconds": elapsed, "cpu_seconds": run["cpu"], "rewards": sent, "rate": _rate(sent, elapsed),
                  "events_rate": _rate(rows["events"], elapsed), "outside_stages_s": elapsed - staged,
                  "peak_rss_mb": run["run_peak_rss"] / MB,
                  "rewards_created": rewards, "rewards_created_rate": _rate(rewards, elapsed)}
    report: dict[str, Any] = {
        "bench": f"payhub pipeline on {'SQLite' if opts.backend == 'sqlite' else 'PostgreSQL'}",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {**run["host"], "loadavg_1min": run["load"]},
        "params": {"events": opts.events, "payees": opts.payees, "programs": opts.programs,
                   "calculator": opts.calculator if opts.programs != "mix" else None,
                   "partners": opts.partners if opts.programs == "mix" else None,
                   "currencies": run["inputs"]["params"].currencies, "backend": opts.backend,
                   "synchronous": opts.synchronous if opts.backend == "sqlite" else None, "batch_size": opts.batch_size,
                   "source_batch": opts.source_batch, "rail_batch": opts.rail_batch, "seed": opts.seed,
                   "tracemalloc": opts.tracemalloc, "profile": opts.profile},
        "setup": run["setup"],
        "stages": stages,
        "end_to_end": end_to_end,
        "memory": {"method": rss.method
                   + ("; peak_traced_mb: tracemalloc peak of Python allocations per stage" if opts.tracemalloc
                      else ""),
                   "baseline_rss_mb": run["baseline_rss"] / MB, "run_peak_rss_mb": run["run_peak_rss"] / MB,
                   "rss_parts_mb": run["rss_parts"], "fake_rail_ledger_mb": run["rail_ledger_mb"],
                   "process_peak_rss_mb": rss.process_peak / MB},
        "checks": checks,
        "sql": _sql_summary(meter, opts.profile_top) if opts.sql_timing else None,
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

def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None

def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(report: dict[str, Any]) -> str:
    p, e2e = report["params"], report["end_to_end"]
    out = io.StringIO()
    w = out.write
    what = "programs=mix" if report.get("mix") else f"calculator={p['calculator']}"
    w(f"payhub bench: {p['events']:,} events, {p['payees']:,} payees, {what}, "
      + (f"SQLite synchronous={p['synchronous']}" if p.get("backend", "sqlite") == "sqlite" else "PostgreSQL")
      + f", batch {p['batch_size']} (source {p['source_batch']}, "
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

