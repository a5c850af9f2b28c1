"""Input generation of the pipeline benchmark: the events CSV, the payees file, the settings file (one program or
the program mix, with its FX rates) and a plugin distribution exposing ``payhub.testing:FakeRail`` as a rail.

Other benchmarks call :func:`write_inputs`; its keyword arguments are stable::

    from bench.gen import write_inputs
    made = write_inputs(workdir, events=20_000, database_url="postgresql+psycopg://.../bench_123")
    made["settings"]   # the payhub.toml to run with (database URL, payees, source, programs, rail, routing)
    made["site"]       # put on sys.path (done here for this process) or PYTHONPATH for a `payhub` subprocess

Generation is deterministic for a given seed and depends on nothing but the arguments.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RAIL_ENTRY_POINT = "bench_memory"
SOURCE_NAME = "deals"
PROGRAM_NAME = "bench"
RAIL_NAME = "memory"
PRODUCTS = ("licence", "support", "services", "hardware", "training")
PLUGIN_SITE = "site"  # the directory, under the work directory, of the fake-rail plugin distribution


@dataclass(frozen=True)
class GenParams:
    """What to generate; :func:`write_inputs` builds it from its keyword arguments."""

    events: int
    payees: int = 1000
    seed: int = 7
    programs: str = "percentage"  # "percentage": one program over deal_won events; "mix": the program mix
    calculator: str = "percentage"  # the single program's calculator: "percentage" or "flat"
    partners: int = 40  # the mix: partner organisations (payees too, besides the reps)
    currencies: list[str] = field(default_factory=list)  # payee k is paid in currencies[k % len]
    synchronous: str = "FULL"
    batch_size: int = 2000
    source_batch: int = 1000
    rail_batch: int = 100
    database_url: str = "sqlite:///payhub.db"
    extra_settings: str = ""


def default_currencies(programs: str) -> list[str]:
    """USD for one program; USD, EUR, GBP for the mix (its events being in the first)."""
    return list(MIX_CURRENCIES) if programs == "mix" else ["USD"]


def write_inputs(workdir: Path, *, events: int, payees: int = 1000, seed: int = 7, programs: str = "percentage",
                 calculator: str = "percentage", partners: int = 40, currencies: list[str] | None = None,
                 synchronous: str = "FULL", batch_size: int = 2000, source_batch: int = 1000, rail_batch: int = 100,
                 database_url: str = "sqlite:///payhub.db", extra_settings: str = "",
                 add_to_path: bool = True) -> dict[str, Any]:
    """Write the events CSV, the payees CSV, the settings file and the fake-rail plugin distribution in ``workdir``.

    ``programs`` is ``"percentage"`` (one program of ``calculator`` over ``deal_won`` events, one reward each) or
    ``"mix"`` (the built-in program calculators over a year of mixed events; needs them installed). ``database_url``
    goes to ``[database] url`` (``sqlite:///`` paths are relative to the settings file). ``extra_settings`` is TOML
    appended to the settings file (e.g. a ``[schedule]`` section). ``add_to_path`` puts the plugin distribution on
    ``sys.path`` of this process, so an in-process ``Runtime`` finds the rail; a subprocess needs ``site`` on its
    ``PYTHONPATH`` (see :func:`plugin_env`).

    Returns ``settings`` (path), ``events`` (count), ``payees`` (count of payee rows), ``events_file``,
    ``payees_file``, ``site``, ``csv_bytes``, ``params`` (:class:`GenParams`) and ``mix`` (the plan of the mix,
    None for one program: programs, event counts, expected calculations...).
    """
    if events < 1 or payees < 1:
        raise ValueError("events and payees must be positive")
    if programs not in ("percentage", "mix"):
        raise ValueError(f"programs must be 'percentage' or 'mix', not {programs!r}")
    if programs == "mix" and not 1 <= partners <= payees:
        raise ValueError("partners must be between 1 and payees (each partner has at least one rep)")
    params = GenParams(events=events, payees=payees, seed=seed, programs=programs, calculator=calculator,
                       partners=partners, currencies=list(currencies or default_currencies(programs)),
                       synchronous=synchronous, batch_size=batch_size, source_batch=source_batch,
                       rail_batch=rail_batch, database_url=database_url, extra_settings=extra_settings)
    workdir.mkdir(parents=True, exist_ok=True)
    mix = None
    if params.programs == "mix":
        mix = write_mix_inputs(workdir, params)
        program_toml = mix.pop("toml")
    else:
        program_toml = _write_single_inputs(workdir, params)
    settings = workdir / "payhub.toml"
    settings.write_text(settings_toml(params, program_toml), encoding="utf-8")
    site = write_plugin_dist(workdir / PLUGIN_SITE)
    if add_to_path and str(site) not in sys.path:
        sys.path.insert(0, str(site))
    return {"settings": settings, "events": events, "payees": mix["payees"] if mix else payees,
            "events_file": workdir / "deals.csv", "payees_file": workdir / "payees.csv", "site": site,
            "csv_bytes": (workdir / "deals.csv").stat().st_size, "params": params, "mix": mix}


def settings_toml(params: GenParams, program_toml: str) -> str:
    """The settings file: database, payees file, the file source, the programs, the fake rail, routing."""
    return f"""\
[database]
url = {json.dumps(params.database_url)}
sqlite_synchronous = "{params.synchronous}"
batch_size = {params.batch_size}

[payees]
file = "payees.csv"

[sources.{SOURCE_NAME}]
plugin = "file"
path = "deals.csv"
batch_size = {params.source_batch}
settle_seconds = 0

{program_toml}
[rails.{RAIL_NAME}]
plugin = "{RAIL_ENTRY_POINT}"
max_batch = {params.rail_batch}

[routing]
default_rail = "{RAIL_NAME}"
""" + (f"\n{params.extra_settings.strip()}\n" if params.extra_settings.strip() else "")


def write_plugin_dist(site: Path) -> Path:
    """A minimal installed distribution (``*.dist-info`` with entry points) registering FakeRail as the
    ``bench_memory`` rail; put ``site`` on sys.path or PYTHONPATH to use it."""
    dist = site / "payhub_bench_plugins-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-bench-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[payhub.rails]\n{RAIL_ENTRY_POINT} = payhub.testing:FakeRail\n")
    return site


def plugin_env(site: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's) with ``site`` first on PYTHONPATH, for a ``payhub`` subprocess."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [out.get("PYTHONPATH")])])
    return out


def _write_single_inputs(workdir: Path, args: GenParams) -> str:
    """One program: ``deal_won`` events spread uniformly over the payees; returns the program's TOML."""
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
    return f"[programs.{PROGRAM_NAME}]\n{program}"


# ------------------------------------------------------------------------------------------------- the mix

# The calendar year of the mix's events: a past one, so that every event is due when the run calculates it (an event
# dated after now plus ingest.future_tolerance_seconds waits, uncalculated, until its date).
MIX_YEAR = 2025
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
MIX_CURRENCIES = ["USD", "EUR", "GBP"]  # --programs mix without --currencies: partners and reps paid in these
RATES_FILE = "eurofxref-hist.csv"
EUR_RATES = {"USD": 1.08, "GBP": 0.85, "JPY": 160.0, "CHF": 0.95, "CAD": 1.47, "AUD": 1.63, "SEK": 11.4}


def mix_programs(args: GenParams, available: set[str]) -> dict[str, dict[str, Any]]:
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
        return str(value.isoformat())
    raise TypeError(f"no TOML for {value!r}")


def _matching(programs: dict[str, dict[str, Any]], event_type: str) -> list[str]:
    """The programs that calculate an event of ``event_type`` (as payhub.pipeline.calculate._matches decides)."""
    return [name for name, spec in programs.items()
            if event_type in spec.get("event_types", ()) or event_type in spec.get("clawback_event_types", ())]


def write_mix_inputs(workdir: Path, args: GenParams) -> dict[str, Any]:
    """Payees (reps and partners) and a year of mixed CRM events for ``--programs mix``; the programs' TOML."""
    from importlib.metadata import entry_points

    available = {ep.name for ep in entry_points(group="payhub.calculators")}
    missing = [name for name in MIX_REQUIRED if name not in available]
    if missing:
        raise RuntimeError(f"the program mix needs the calculators {', '.join(missing)} (not installed)")
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
