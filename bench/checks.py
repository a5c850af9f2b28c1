"""End-of-run checks of a pipeline run: they read the finished database (SQLite or PostgreSQL) and the fake rail's
ledger, and say whether the pipeline did the whole job exactly once. A failed check makes the run fail.

- :func:`check` (one program): every event calculated, every reward sent once, payouts add up to the rewards, the
  rail accepted each payout's key exactly once.
- :func:`check_mix` (the program mix): each (program, event) calculated once and as expected, money conserved from
  rewards to payouts (converted items at their recorded rate), approvals, budgets, clawbacks, caps, funds and rebate
  accruals consistent; optionally the audit chain verified.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

PAID_STATUSES = ("scheduled", "sent", "paid")
REWARD_STATUSES = ("pending", "held", "awaiting_approval", "carried", "scheduled", "sent", "paid", "cancelled")
# Core keys of a program section (the rest are the calculator's parameters).
CORE_PROGRAM_KEYS = {"calculator", "event_types", "sources", "splits", "split_overlay", "clawback_event_types",
                     "clawback", "clawback_term_days", "caps", "budget", "approval", "payout_currency", "fx_date",
                     "fx_rate_type", "enabled"}


class Reader:
    """Read-only queries over a SQLite file or a PostgreSQL database, written with ``?`` placeholders."""

    def __init__(self, url: str) -> None:
        from payhub.db.engine import sqlite_file

        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.con: Any = sqlite3.connect(f"file:{sqlite_file(url)}?mode=ro", uri=True)
        else:
            import psycopg

            from bench.runner import libpq_url

            self.con = psycopg.connect(libpq_url(url), autocommit=True)

    def rows(self, sql: str, *params: Any) -> list[Any]:
        if self.sqlite:
            return list(self.con.execute(sql, params).fetchall())
        return list(self.con.execute(sql.replace("?", "%s") if params else sql, params or None).fetchall())

    def one(self, sql: str, *params: Any) -> Any:
        return self.rows(sql, *params)[0][0]

    def close(self) -> None:
        self.con.close()


@contextmanager
def reading(url: str) -> Iterator[Reader]:
    reader = Reader(url)
    try:
        yield reader
    finally:
        reader.close()


def check(url: str, rail: Any, events: int) -> dict[str, Any]:
    """Row counts after the run of one program on the database at ``url``, and whether the pipeline did the whole
    job exactly once: ``{"ok", "problems", "rows", "events_by_status", "rewards_by_status", "payouts_by_status"}``."""
    from payhub.db.schema import metadata

    with reading(url) as db:
        one = db.one
        counts = {t.name: one(f"SELECT count(*) FROM {t.name}") for t in metadata.sorted_tables}
        events_by_status = dict(db.rows("SELECT status, count(*) FROM events GROUP BY status"))
        rewards_by_status = dict(db.rows("SELECT status, count(*) FROM rewards GROUP BY status"))
        payouts_by_status = dict(db.rows("SELECT status, count(*) FROM payouts GROUP BY status"))
        reward_sum = int(one("SELECT coalesce(sum(amount_minor), 0) FROM rewards"))
        payout_sum = int(one("SELECT coalesce(sum(amount_minor), 0) FROM payouts"))
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


def check_mix(url: str, rail: Any, events: int, plan: dict[str, Any], verify_audit: bool) -> dict[str, Any]:
    """What the mix left behind, and whether it is right: each (program, event) calculated once, the expected
    calculations, money conserved from rewards to payouts, rules respected (approvals, budgets, clawbacks, funds,
    rebate accruals). Cheap SQL over the finished database; the audit chain is verified on request."""
    from payhub.db.schema import metadata
    from payhub.money import from_minor, quantize, to_minor

    programs = plan["programs"]
    db = Reader(url)
    problems: list[str] = []
    notes: list[str] = []
    try:
        one, rows = db.one, db.rows

        counts = {t.name: one(f"SELECT count(*) FROM {t.name}") for t in metadata.sorted_tables}
        events_by_status = dict(rows("SELECT status, count(*) FROM events GROUP BY status"))
        rewards_by_status = dict(rows("SELECT status, count(*) FROM rewards GROUP BY status"))
        payouts_by_status = dict(rows("SELECT status, count(*) FROM payouts GROUP BY status"))
        held_by_code = dict(rows("SELECT coalesce(hold_code, '?'), count(*) FROM rewards WHERE status = 'held' "
                                 "GROUP BY 1"))
        if counts["events"] != events or events_by_status.get("calculated") != events:
            problems.append(f"expected {events} calculated events, found {events_by_status}"
                            + (_waiting_why(rows) if events_by_status.get("waiting") else ""))
        twice = one("SELECT count(*) FROM (SELECT 1 FROM calculations GROUP BY program, event_id "
                    "HAVING count(*) > 1) AS x")
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
        for program, n, total, negative in rows("SELECT program, count(*), sum(amount_minor), sum(CASE WHEN "
                                                "amount_minor < 0 THEN 1 ELSE 0 END) FROM rewards GROUP BY 1"):
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
                conversion = fx if isinstance(fx, dict) else json.loads(fx)
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
                  "HAVING sum(amount_minor) > 0) AS x")
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
                          "GROUP BY budget_key HAVING sum(amount_minor) > ?) AS y", name, limit)
                if bad:
                    problems.append(f"{name}: {bad} budget pools overdrawn")
            if spec.get("clawback_event_types"):
                # What a refunded deal still grants each payee: nothing after a full clawback, never below zero
                # after a prorated one. A deal counts as refunded once its refund is calculated (a waiting refund
                # has taken nothing back yet; the events check reports it).
                kinds = spec["clawback_event_types"]
                full = spec.get("clawback", "full") == "full"
                bad = one("SELECT count(*) FROM (SELECT 1 FROM rewards r JOIN events e ON e.id = r.event_id "
                          "JOIN (SELECT DISTINCT source, object_type, object_id FROM events WHERE event_type IN "
                          f"({', '.join('?' * len(kinds))}) AND status = 'calculated') x ON x.source = e.source "
                          "AND x.object_type = e.object_type AND x.object_id = e.object_id WHERE r.program = ? "
                          "AND r.status != "
                          "'cancelled' GROUP BY e.object_id, r.payee_id, r.currency HAVING sum(r.amount_minor) "
                          f"{'!= 0' if full else '< 0'}) AS y", *kinds, name)
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
        db.close()
    audit: dict[str, Any] | None = None
    if verify_audit:
        from sqlalchemy import create_engine

        from payhub.audit import verify

        engine = create_engine(url)
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


def _waiting_why(rows: Callable[..., list[Any]]) -> str:
    """Why events are still waiting at the end of a run: how many are future-dated, wait for a payee to be
    registered, or wait behind an earlier event of their CRM object (see payhub.pipeline.waiting)."""
    kinds = rows("SELECT CASE WHEN waits_for_payee IS NOT NULL THEN 'for a payee' WHEN reason LIKE 'waits for event %' "
                 "THEN 'behind an earlier event of their CRM object' ELSE 'dated in the future' END, count(*), "
                 "min(occurred_at) FROM events WHERE status = 'waiting' GROUP BY 1 ORDER BY 2 DESC")
    return "; waiting: " + ", ".join(f"{n} {why} (earliest dated {str(at)[:19]})" for why, n, at in kinds)


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

