"""The gift-card rail against the shipped provider simulator, one injected fault at a time; the simulator's own
books show whether a payout ever became two orders."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from giftcard_helpers import API_KEY, instruction, payee
from payhub.api import Outcome, PermanentRailError, RetryableRailError, UnknownOutcomeError
from payhub_simulators.giftcard import Fault, GiftCardSimulator

from payhub_giftcard import GiftCardRail

SimFactory = Callable[..., GiftCardSimulator]
RailFactory = Callable[..., GiftCardRail]


def test_orders_are_created_once_and_found_by_external_id(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    rail = rail_for(sim.url)
    first = rail.send([instruction(1), instruction(2, "40.00", "EUR", payee("p2", country="DE"))])
    assert [r.outcome for r in first] == [Outcome.PAID, Outcome.PAID]
    again = rail.send([instruction(1)])  # the same key again: the provider answers with the existing order
    assert again[0].provider_ref == first[0].provider_ref
    assert sim.order_counts() == {instruction(1).idempotency_key: 1, instruction(2).idempotency_key: 1}
    [eur] = sim.orders(instruction(2).idempotency_key)
    assert eur["rewards"][0]["value"] == {"denomination": Decimal("40.00"), "currency_code": "EUR"}
    assert eur["rewards"][0]["products"] == ["SIM-SHOP-EU"]
    found = rail.lookup([instruction(1).idempotency_key, "ph-never"])
    assert found["ph-never"] is None
    assert found[instruction(1).idempotency_key] == first[0]


def test_latency(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    sim.plan("latency=0.3")
    began = time.monotonic()
    [result] = rail_for(sim.url).send([instruction(1)])
    assert result.outcome == Outcome.PAID and time.monotonic() - began >= 0.3


def test_rate_limit_is_waited_out(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    sim.plan("rate_limit=0.2", "rate_limit=0.1")
    sleeps: list[float] = []
    [result] = rail_for(sim.url, sleeps=sleeps).send([instruction(1)])
    assert result.outcome == Outcome.PAID
    assert sleeps == [0.2, 0.1]
    assert [r["status"] for r in sim.requests("POST")] == [429, 429, 200]


def test_rate_limit_longer_than_allowed_is_retryable(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    sim.plan("rate_limit=60")
    with pytest.raises(RetryableRailError, match="Retry-After 60s"):
        rail_for(sim.url).send([instruction(1)])
    assert sim.orders() == []


def test_error_before_accepting(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    rail = rail_for(sim.url)
    sim.plan("error_before=503")
    with pytest.raises(UnknownOutcomeError, match="HTTP 503"):
        rail.send([instruction(1)])
    key = instruction(1).idempotency_key
    assert rail.lookup([key]) == {key: None}  # never received: the core sends again with the same key
    assert rail.send([instruction(1)])[0].outcome == Outcome.PAID
    assert sim.order_counts() == {key: 1}


def test_error_after_accepting(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    rail = rail_for(sim.url)
    sim.plan("error_after")
    with pytest.raises(UnknownOutcomeError, match="HTTP 500"):
        rail.send([instruction(1)])
    key = instruction(1).idempotency_key
    found = rail.lookup([key])[key]
    assert found is not None and found.outcome == Outcome.PAID  # the core records it; nothing is sent again
    assert sim.order_counts() == {key: 1}


def test_timeout_after_accepting(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    rail = rail_for(sim.url, http_timeout_seconds=0.3)
    sim.plan("timeout_after=1.0")
    with pytest.raises(UnknownOutcomeError, match="ReadTimeout"):
        rail.send([instruction(1)])
    key = instruction(1).idempotency_key
    found = rail.lookup([key])[key]
    assert found is not None and found.outcome == Outcome.PAID
    assert sim.order_counts() == {key: 1}


@pytest.mark.parametrize("style", ["existing", "conflict"])
def test_duplicate_answers_are_the_same_order(sim_factory: SimFactory, rail_for: RailFactory, style: str) -> None:
    sim = sim_factory(duplicate_style=style)
    rail = rail_for(sim.url)
    sim.plan("duplicate")
    [result] = rail.send([instruction(1)])
    [stored] = sim.orders(instruction(1).idempotency_key)
    assert (result.outcome, result.provider_ref) == (Outcome.PAID, stored["id"])
    [again] = rail.send([instruction(1)])
    assert (again.outcome, again.provider_ref) == (Outcome.PAID, stored["id"])
    assert [r["status"] for r in sim.requests("POST")] == [201, 201] if style == "existing" else [409, 409]
    assert len(sim.orders()) == 1


def test_provider_validation_is_a_rejection(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    [result] = rail_for(sim.url, funding_source_id="card-9").send([instruction(1)])
    assert (result.outcome, result.reason) == (Outcome.REJECTED,
                                               "refused by the provider (HTTP 400): funding source 'card-9' not found")


def test_unfunded_orders_are_retried(sim_factory: SimFactory, rail_for: RailFactory) -> None:
    sim = sim_factory(balance={"USD": Decimal("30.00")})
    results = rail_for(sim.url).send([instruction(1), instruction(2)])
    assert [r.outcome for r in results] == [Outcome.PAID, Outcome.RETRY]
    assert results[1].reason is not None and "HTTP 402" in results[1].reason


def test_a_wrong_key_refuses_the_batch(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    with pytest.raises(PermanentRailError, match="HTTP 401"):
        rail_for(sim.url, api_key="wrong").send([instruction(1)])


def test_lookup_and_catalog_faults(sim: GiftCardSimulator, rail_for: RailFactory) -> None:
    rail = rail_for(sim.url)
    sim.plan("catalog_error")
    with pytest.raises(RetryableRailError, match="catalog"):
        rail.send([instruction(1)])
    rail.send([instruction(1)])
    sim.plan("lookup_error")
    with pytest.raises(RetryableRailError, match="order search failed"):
        rail.lookup([instruction(1).idempotency_key])


def test_order_status_changes_are_reported(sim_factory: SimFactory, rail_for: RailFactory) -> None:
    sim = sim_factory(initial_status="PENDING")
    rail = rail_for(sim.url)
    results = rail.send([instruction(1), instruction(2)])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    sim.set_status(str(results[0].provider_ref), "EXECUTED")
    sim.set_status(str(results[1].provider_ref), "FAILED")
    found = rail.lookup([r.idempotency_key for r in results])
    assert [found[r.idempotency_key].outcome for r in results] == [Outcome.PAID, Outcome.REJECTED]  # type: ignore


def test_pending_orders_execute_after_a_while(sim_factory: SimFactory, rail_for: RailFactory) -> None:
    sim = sim_factory(initial_status="PENDING", execute_after_seconds=0.2)
    rail = rail_for(sim.url)
    [sent] = rail.send([instruction(1)])
    assert sent.outcome == Outcome.ACCEPTED
    time.sleep(0.25)
    found = rail.lookup([sent.idempotency_key])[sent.idempotency_key]
    assert found is not None and found.outcome == Outcome.PAID


def test_periodic_faults(sim_factory: SimFactory, rail_for: RailFactory) -> None:
    sim = sim_factory(every={"error_after": 2})
    rail = rail_for(sim.url)
    rail.send([instruction(1)])
    with pytest.raises(UnknownOutcomeError):
        rail.send([instruction(2)])
    assert len(sim.orders()) == 2


def test_a_provider_without_dedup_shows_a_second_send(sim_factory: SimFactory, rail_for: RailFactory) -> None:
    sim = sim_factory(dedup=False)
    rail = rail_for(sim.url)
    rail.send([instruction(1)])
    rail.send([instruction(1)])
    assert sim.order_counts() == {instruction(1).idempotency_key: 2}


def test_state_survives_a_restart(tmp_path: Path, rail_for: RailFactory) -> None:
    state = tmp_path / "sim.sqlite"
    with GiftCardSimulator(api_key=API_KEY, state_path=state) as sim:
        [first] = rail_for(sim.url).send([instruction(1)])
    with GiftCardSimulator(api_key=API_KEY, state_path=state) as sim:
        key = instruction(1).idempotency_key
        assert rail_for(sim.url).lookup([key])[key] == first
        rail_for(sim.url).send([instruction(1)])
        assert sim.order_counts() == {key: 1}


def test_faults_are_checked() -> None:
    assert Fault.parse("latency=0.5") == Fault("latency", 0.5)
    with pytest.raises(ValueError, match="unknown fault"):
        Fault.parse("explode")
    with pytest.raises(ValueError, match="duplicate_style"):
        GiftCardSimulator(duplicate_style="maybe")


def test_control_api_and_routes(sim: GiftCardSimulator) -> None:
    root = sim.url.rsplit("/api/v2", 1)[0]
    with httpx.Client(timeout=5) as http:
        assert http.get(f"{sim.url}/products").status_code == 401
        auth = {"Authorization": f"Bearer {API_KEY}"}
        products = http.get(f"{sim.url}/products", params={"country": "GB", "currency": "GBP"}, headers=auth).json()
        assert [p["id"] for p in products["products"]] == ["SIM-SHOP-GB"]
        assert http.post(f"{root}/_simulator/faults", json={"faults": ["error_before"]}).json() == {"queued": 1}
        bad = http.post(f"{sim.url}/orders", content=b"{", headers=auth)
        assert (bad.status_code, bad.json()["errors"]["message"]) == (400, "the request body is not valid JSON")
        failed = http.post(f"{sim.url}/orders", headers=auth, json={
            "external_id": "x1", "payment": {"funding_source_id": "balance"},
            "reward": {"products": ["SIM-AMZ-US"], "value": {"denomination": 10, "currency_code": "USD"},
                       "recipient": {"name": "A", "email": "a@example.com"}}})
        assert failed.status_code == 500  # the queued fault
        assert http.get(f"{root}/_simulator/orders").json() == {"orders": []}
        assert http.get(f"{sim.url}/orders/ORDNONE", headers=auth).status_code == 404
        assert http.get(f"{sim.url}/nowhere", headers=auth).status_code == 404


def test_runs_as_a_program(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "payhub_simulators", "giftcard", "--port", "0", "--api-key", "k",
                             "--state", str(tmp_path / "s.sqlite")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "SIMULATOR" in line and "not a real provider" in line
        url = line.rsplit(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v2")
        answer = httpx.get(f"{url}/products", headers={"Authorization": "Bearer k"}, timeout=5)
        assert answer.status_code == 200 and json.loads(answer.text)["products"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
