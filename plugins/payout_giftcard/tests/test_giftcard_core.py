"""Paid exactly once through payhub's own pipeline, with the provider simulator misbehaving and the daemon killed.

The simulator runs with ``dedup=False`` here: it stores every order it is sent, even under an ``external_id`` it
already has, so a payout that payhub sent again after it had been accepted would show up as two orders. Exactly
one order per idempotency key therefore proves that every unknown outcome was resolved by looking the order up
before anything was sent again.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from giftcard_helpers import API_KEY
from payhub.testing import Harness, PayoutView
from payhub.testing.pytest_plugin import HarnessFactory
from payhub_simulators.giftcard import GiftCardSimulator

PAYHUB = shutil.which("payhub", path=str(Path(sys.executable).parent)) or "payhub"
COUNTRIES = [("US", "USD", 100, 12000), ("DE", "EUR", 50, 2000), ("GB", "GBP", 50, 2000), ("JP", "JPY", 5000, 100000)]

SETTINGS = """\
[daemon]
idle_seconds = 0.05
plugin_timeout_seconds = 0.9

[payees]
file = "payees.csv"

[sources.crm]
plugin = "file"
path = "events.csv"
poll_interval_seconds = 0.1

[programs.pct]
calculator = "percentage"
percent = "10"

[rails.gift]
plugin = "giftcard"
base_url = "{url}"
api_key = "{key}"
http_timeout_seconds = 0.4
connect_timeout_seconds = 0.2
max_retry_after_seconds = 0.05
max_batch = 10
max_attempts = 1000
retry_initial_seconds = 0.01
retry_max_seconds = 0.05
timeout_seconds = 5
lookup_settle_seconds = 0  # "not found" is trusted at once: the simulator deduplicates by external_id
settle_interval_seconds = 0.05

[routing]
default_rail = "gift"
"""


def write_backlog(directory: Path, payees: int, events: int, seed: int) -> None:
    """Payees in four countries (each with an email) and won deals whose 10% lands in the catalog's ranges."""
    rng = random.Random(seed)
    lines = ["id,name,country,email\n"]
    for p in range(payees):
        country = COUNTRIES[p % len(COUNTRIES)][0]
        lines.append(f"p{p:03d},Partner {p},{country},partner{p}@example.com\n")
    (directory / "payees.csv").write_text("".join(lines))
    rows = ["id,type,occurred_at,payee_id,amount,currency,object_type\n"]
    for i in range(events):
        p = rng.randrange(payees)
        _, currency, low, high = COUNTRIES[p % len(COUNTRIES)]
        whole = rng.randrange(low, high)
        amount = str(whole) if currency == "JPY" else f"{whole}.{rng.randrange(100):02d}"
        rows.append(f"006{i:07d},deal_won,2026-10-{1 + i % 28:02d}T12:00:00Z,p{p:03d},{amount},{currency},opp\n")
    (directory / "events.csv").write_text("".join(rows))


@pytest.fixture
def setup(payhub_harness: HarnessFactory, tmp_path: Path) -> Iterator[Callable[..., tuple[Harness, GiftCardSimulator]]]:
    """``setup(payees, events, **simulator options)``: the backlog, a simulator and a harness paying through it."""
    made: list[GiftCardSimulator] = []

    def factory(payees: int = 24, events: int = 60, **options: Any) -> tuple[Harness, GiftCardSimulator]:
        sim = GiftCardSimulator(api_key=API_KEY, **options).start()
        made.append(sim)
        write_backlog(tmp_path, payees, events, seed=5)
        return payhub_harness(SETTINGS.format(url=sim.url, key=API_KEY), directory=tmp_path), sim

    yield factory
    for sim in made:
        sim.stop()


MADE_DUE = 60
"""Seconds the harness's clock moves to let every backoff, lookup wait and settle interval of SETTINGS run out."""


@dataclass(frozen=True)
class Paid:
    """What assert_paid_once reads of a payout, from the harness or from ``payhub payouts list --format json``."""

    id: int
    idempotency_key: str
    payee_id: str
    amount: Decimal
    currency: str
    status: str
    reason: str | None
    provider_ref: str | None

    @classmethod
    def of(cls, row: PayoutView | dict[str, Any]) -> Paid:
        if isinstance(row, PayoutView):
            return cls(row.id, row.idempotency_key, row.payee_id, row.amount, row.currency, row.status, row.reason,
                       row.provider_ref)
        return cls(row["id"], row["key"], row["payee"], Decimal(row["amount"]), row["currency"], row["status"],
                   row["reason"], row["provider_ref"])


def assert_paid_once(rows: Sequence[PayoutView | dict[str, Any]], sim: GiftCardSimulator, final: str = "paid") -> None:
    """Every payout has its final state and exactly one provider order, for its amount, currency and payee."""
    payouts = [Paid.of(row) for row in rows]
    assert payouts, "no payouts were scheduled"
    counts = sim.order_counts()
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"orders placed more than once: {twice}"
    unsent = [(r.id, r.status, r.reason) for r in payouts if r.idempotency_key not in counts]
    assert not unsent, f"payouts without an order: {unsent}"
    assert set(counts) == {r.idempotency_key for r in payouts}, "payhub and the provider disagree on the payouts"
    for row in payouts:
        assert row.status == final, f"payout {row.id} is {row.status}: {row.reason}"
        [order] = sim.orders(row.idempotency_key)
        reward = order["rewards"][0]
        assert reward["value"] == {"denomination": row.amount, "currency_code": row.currency}
        assert reward["recipient"]["email"] == f"partner{int(row.payee_id[1:])}@example.com"
        assert row.provider_ref == order["id"]


@pytest.mark.slow  # the pipeline through every fault
@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_paid_exactly_once_through_the_pipeline_under_faults(setup: Callable[..., Any]) -> None:
    harness, sim = setup(initial_status="PENDING", execute_after_seconds=0.0, dedup=False,
                         every={"error_after": 4, "error_before": 5, "rate_limit": 7})
    sim.plan("timeout_after=0.8", "duplicate", "latency=0.1", "rate_limit=0.01")
    for _ in range(40):
        harness.run_until_idle()
        if {p.status for p in harness.payouts()} == {"paid"}:
            break
        harness.advance(MADE_DUE)
    rows = harness.payouts()
    assert_paid_once(rows, sim)
    lookups = [a.outcome for a in harness.attempts("lookup")]
    assert harness.audit_problem() is None
    assert "accepted" in lookups or "paid" in lookups, "no unknown outcome was resolved by a lookup"
    assert "not_found" in lookups, "no lookup found an order missing (error before accepting)"
    assert len(rows) == len({e.payee_id for e in harness.events()})
    stored = {"created", "created, answered late", "created, answered as a duplicate",
              "internal error (simulated, after the order was stored)"}
    notes = [r["note"] for r in sim.requests("POST")]
    assert sum(note in stored for note in notes) == len(rows)  # no request stored a second order
    assert "internal error (simulated, after the order was stored)" in notes


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_a_failed_order_holds_the_rewards(setup: Callable[..., Any]) -> None:
    harness, sim = setup(payees=4, events=8, initial_status="PENDING")
    harness.run_until_idle()
    rows = harness.payouts()
    assert {r.status for r in rows} == {"sent"}
    sim.set_status(rows[0].provider_ref, "FAILED")
    for row in rows[1:]:
        sim.set_status(row.provider_ref, "EXECUTED")
    harness.advance(MADE_DUE)
    harness.run_until_idle()
    after = {r.id: (r.status, r.reason) for r in harness.payouts()}
    assert after[rows[0].id] == ("rejected", f"provider order {rows[0].provider_ref} is FAILED")
    assert {after[r.id][0] for r in rows[1:]} == {"paid"}
    assert sim.order_counts() == {r.idempotency_key: 1 for r in rows}


@pytest.mark.slow
def test_kill_9_between_sending_and_recording(tmp_path: Path) -> None:
    """``payhub run`` is SIGKILLed ten times while it sends (the simulator answers late and loses answers), then
    ``payhub run --once`` finishes: each payout has exactly one order at the provider."""
    kills = int(os.environ.get("PAYHUB_TEST_GIFTCARD_KILLS", "10"))
    rng = random.Random(int(os.environ.get("PAYHUB_TEST_GIFTCARD_SEED", "11")))
    sim = GiftCardSimulator(api_key=API_KEY, dedup=False, latency=0.03, every={"error_after": 4},
                            state_path=tmp_path / "provider.sqlite").start()
    try:
        write_backlog(tmp_path, payees=40, events=120, seed=9)
        config = tmp_path / "payhub.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n\n'
                          + SETTINGS.format(url=sim.url, key=API_KEY))
        env = dict(os.environ, PAYHUB_CONFIG=str(config))

        def payhub(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([PAYHUB, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

        def listed(*options: str) -> list[dict[str, Any]]:
            """``payhub payouts list`` (JSON) while no daemon runs."""
            done = payhub("payouts", "list", "--format", "json", *options)
            assert done.returncode == 0, done.stderr
            rows: list[dict[str, Any]] = json.loads(done.stdout)
            return rows

        assert payhub("db", "upgrade").returncode == 0
        in_flight = 0
        for i in range(kills):
            log = (tmp_path / f"run-{i}.log").open("w")
            proc = subprocess.Popen([PAYHUB, "run", "--no-progress"], env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=log)
            time.sleep(rng.uniform(0.8, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.close()
            in_flight += bool(listed("--status", "sending", "--limit", "1"))
            counts = sim.order_counts()
            assert all(n == 1 for n in counts.values()), f"after kill {i + 1}: an order was placed twice"
        for _ in range(15):
            final = payhub("run", "--once", "--no-progress")
            assert final.returncode == 0, final.stderr
            if {r["status"] for r in listed()} == {"paid"} and len(sim.order_counts()) >= 40:
                break
            time.sleep(1.1)  # lookups that failed wait at least a second
        tracebacks = [p.name for p in tmp_path.glob("run-*.log") if "Traceback" in p.read_text()]
        assert not tracebacks, f"daemon raised: see {tracebacks}"
        rows = listed()
        assert_paid_once(rows, sim)
        print(f"\ngift-card crash test: {kills} kills ({in_flight} with a send in flight), {len(rows)} payouts, "
              f"{len(sim.requests('POST'))} order requests")
        verified = payhub("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        sim.stop()
