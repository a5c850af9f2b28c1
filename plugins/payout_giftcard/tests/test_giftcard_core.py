"""Paid exactly once through payhub's own pipeline, with the provider simulator misbehaving and the daemon killed.

The simulator runs with ``dedup=False`` here: it stores every order it is sent, even under an ``external_id`` it
already has, so a payout that payhub sent again after it had been accepted would show up as two orders. Exactly
one order per idempotency key therefore proves that every unknown outcome was resolved by looking the order up
before anything was sent again.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from giftcard_helpers import API_KEY, write_settings
from payhub.audit import verify
from payhub.clock import utcnow
from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import attempts, events, payouts
from payhub.money import from_minor
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.worker import Worker
from sqlalchemy import create_engine, select, update

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
def setup(tmp_path: Path) -> Iterator[Callable[..., tuple[Runtime, GiftCardSimulator]]]:
    """``setup(payees, events, **simulator options)``: a migrated database, the backlog and a simulator."""
    made: list[tuple[Runtime, GiftCardSimulator]] = []

    def factory(payees: int = 24, events: int = 60, **options: Any) -> tuple[Runtime, GiftCardSimulator]:
        sim = GiftCardSimulator(api_key=API_KEY, **options).start()
        write_backlog(tmp_path, payees, events, seed=5)
        config = write_settings(tmp_path, SETTINGS.format(url=sim.url, key=API_KEY))
        engine = make_engine(load_settings(config).database_url)
        migrate.upgrade(engine)
        engine.dispose()
        rt = Runtime(load_settings(config))
        rt.load_plugins()
        made.append((rt, sim))
        return rt, sim

    yield factory
    for rt, sim in made:
        rt.close()
        sim.stop()


def payees_with_events(rt: Runtime) -> set[str]:
    with rt.engine.connect() as conn:
        return set(conn.execute(select(events.c.payee_id)).scalars())


def make_due(engine: Any) -> None:
    """Let every backoff and lookup wait run out."""
    with engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.status.in_(("retrying", "unknown")))
                     .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        conn.execute(update(payouts).where(payouts.c.status == "sent")
                     .values(checked_at=utcnow() - timedelta(seconds=60)))


def assert_paid_once(engine: Any, sim: GiftCardSimulator, final: str = "paid") -> list[Any]:
    """Every payout has its final state and exactly one provider order, for its amount, currency and payee."""
    with engine.connect() as conn:
        rows = conn.execute(select(payouts).order_by(payouts.c.id)).all()
    assert rows, "no payouts were scheduled"
    counts = sim.order_counts()
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"orders placed more than once: {twice}"
    unsent = [(r.id, r.status, r.reason) for r in rows if r.idempotency_key not in counts]
    assert not unsent, f"payouts without an order: {unsent}"
    assert set(counts) == {r.idempotency_key for r in rows}, "payhub and the provider disagree on the payouts"
    for row in rows:
        assert row.status == final, f"payout {row.id} is {row.status}: {row.reason}"
        [order] = sim.orders(row.idempotency_key)
        reward = order["rewards"][0]
        assert reward["value"] == {"denomination": from_minor(row.amount_minor, row.currency),
                                   "currency_code": row.currency}
        assert reward["recipient"]["email"] == f"partner{int(row.payee_id[1:])}@example.com"
        assert row.provider_ref == order["id"]
    return rows


def test_paid_exactly_once_through_the_pipeline_under_faults(setup: Callable[..., Any]) -> None:
    rt, sim = setup(initial_status="PENDING", execute_after_seconds=0.0, dedup=False,
                    every={"error_after": 4, "error_before": 5, "rate_limit": 7})
    sim.plan("timeout_after=0.8", "duplicate", "latency=0.1", "rate_limit=0.01")
    worker = Worker(rt)
    worker.start()
    try:
        for _ in range(40):
            worker.run_once()
            with rt.engine.connect() as conn:
                states = {r.status for r in conn.execute(select(payouts.c.status))}
            if states == {"paid"}:
                break
            make_due(rt.engine)
        rows = assert_paid_once(rt.engine, sim)
    finally:
        worker.stop()
    with rt.engine.connect() as conn:
        lookups = conn.execute(select(attempts.c.outcome).where(attempts.c.kind == "lookup")).scalars().all()
        assert verify(conn).ok
    assert "accepted" in lookups or "paid" in lookups, "no unknown outcome was resolved by a lookup"
    assert "not_found" in lookups, "no lookup found an order missing (error before accepting)"
    assert len(rows) == len(payees_with_events(rt))
    stored = {"created", "created, answered late", "created, answered as a duplicate",
              "internal error (simulated, after the order was stored)"}
    notes = [r["note"] for r in sim.requests("POST")]
    assert sum(note in stored for note in notes) == len(rows)  # no request stored a second order
    assert "internal error (simulated, after the order was stored)" in notes


def test_a_failed_order_holds_the_rewards(setup: Callable[..., Any]) -> None:
    rt, sim = setup(payees=4, events=8, initial_status="PENDING")
    worker = Worker(rt)
    worker.start()
    try:
        worker.run_once()
        with rt.engine.connect() as conn:
            rows = conn.execute(select(payouts).order_by(payouts.c.id)).all()
        assert {r.status for r in rows} == {"sent"}
        sim.set_status(rows[0].provider_ref, "FAILED")
        for row in rows[1:]:
            sim.set_status(row.provider_ref, "EXECUTED")
        make_due(rt.engine)
        worker.run_once()
        with rt.engine.connect() as conn:
            after = {r.id: (r.status, r.reason) for r in conn.execute(select(payouts))}
    finally:
        worker.stop()
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
        config = write_settings(tmp_path, SETTINGS.format(url=sim.url, key=API_KEY))
        env = dict(os.environ, PAYHUB_CONFIG=str(config))

        def payhub(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([PAYHUB, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

        assert payhub("db", "upgrade").returncode == 0
        engine = create_engine(f"sqlite:///{tmp_path / 'payhub.db'}")
        in_flight = 0
        for i in range(kills):
            log = (tmp_path / f"run-{i}.log").open("w")
            proc = subprocess.Popen([PAYHUB, "run", "--no-progress"], env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=log)
            time.sleep(rng.uniform(0.8, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.close()
            with engine.connect() as conn:
                in_flight += conn.execute(select(payouts.c.id).where(payouts.c.status == "sending")).first() is not None
            counts = sim.order_counts()
            assert all(n == 1 for n in counts.values()), f"after kill {i + 1}: an order was placed twice"
        for _ in range(15):
            final = payhub("run", "--once", "--no-progress")
            assert final.returncode == 0, final.stderr
            with engine.connect() as conn:
                states = {r.status for r in conn.execute(select(payouts.c.status))}
            if states == {"paid"} and len(sim.order_counts()) >= 40:
                break
            time.sleep(1.1)  # lookups that failed wait at least a second
        tracebacks = [p.name for p in tmp_path.glob("run-*.log") if "Traceback" in p.read_text()]
        assert not tracebacks, f"daemon raised: see {tracebacks}"
        rows = assert_paid_once(engine, sim)
        print(f"\ngift-card crash test: {kills} kills ({in_flight} with a send in flight), {len(rows)} payouts, "
              f"{len(sim.requests('POST'))} order requests")
        with engine.connect() as conn:
            assert verify(conn).ok
        engine.dispose()
    finally:
        sim.stop()
