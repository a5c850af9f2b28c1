"""The hubspot source inside payhub: loaded by entry point, polled by the core, calculated once per deal.

Runs against the HubSpot simulator on 127.0.0.1 with real SQLite databases and ``[sources.hs] plugin = "hubspot"``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from payhub_simulators.hubspot import HubSpotSimulator

from payhub.api import to_minor
from payhub.testing import Harness, invoke_cli
from payhub_hubspot import HubSpotSource

HOUR = 3_600_000
MakeHarness = Callable[..., Harness]
PROGRAM = """
[programs.partner_rebate]
calculator = "percentage"
percent = "5"
pay = "partner"
event_types = ["deal_won"]
clawback_event_types = ["deal_reversed"]
"""


def poll(h: Harness) -> int:
    """Fetch from the source until it has nothing more ready; return the new events."""
    return h.ingest("hs", batches=None)


def calculate_all(h: Harness) -> None:
    """Calculate until no ingested event is left."""
    while h.calculate():
        pass


def reward_rows(h: Harness) -> list[dict[str, Any]]:
    """Each reward with the deal and transition of its event, in order of calculation."""
    by_id = {e.id: e for e in h.events()}
    return [{"object_id": by_id[r.event_id].object_id, "transition": by_id[r.event_id].transition,
             "payee_id": r.payee_id, "amount_minor": to_minor(r.amount, r.currency), "currency": r.currency,
             "status": r.status} for r in h.rewards()]


def test_loaded_by_entry_point(hs_harness: MakeHarness) -> None:
    h = hs_harness()
    assert isinstance(h.source("hs"), HubSpotSource)
    listed = invoke_cli("-c", str(h.settings_file), "plugins", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    status = next(s for s in json.loads(listed.stdout) if s["section"] == "hs")
    assert (status["plugin"], status["distribution"], status["state"]) == ("hubspot", "payhub-hubspot", "loaded")


def test_malformed_deal_is_quarantined_while_the_rest_proceeds(sim: HubSpotSimulator,
                                                               hs_harness: MakeHarness) -> None:
    now = sim.now_ms()
    good = [sim.add_deal(amount=f"{100 + n}.00", at_ms=now - HOUR + n) for n in range(5)]
    bad_amount = sim.add_deal(amount="abc", at_ms=now - HOUR)
    no_close = sim.add_deal(closedate=None, at_ms=now - HOUR)
    h = hs_harness({"batch_size": 3})
    assert poll(h) == 7
    rows = {r.object_id: r for r in h.events()}
    assert {d: rows[d].status for d in good} == dict.fromkeys(good, "ingested")
    assert (rows[bad_amount].status, rows[bad_amount].reason) == (
        "quarantined", "amount 'abc' is not a decimal number")
    assert (rows[no_close].status, rows[no_close].reason) == ("quarantined", "closedate is missing")
    assert poll(h) == 0  # polled again: nothing new, the quarantined records are not added twice
    # Someone fixes the amount in HubSpot: the same key comes back corrected and replaces the quarantined event.
    sim.update_deal(bad_amount, amount="300.00")
    assert poll(h) == 1
    fixed = {r.object_id: r for r in h.events()}[bad_amount]
    assert (fixed.status, fixed.amount, len(h.events())) == ("ingested", Decimal("300.00"), 7)


def test_interrupted_sync_resumes_without_gap_or_duplicate(sim: HubSpotSimulator, hs_harness: MakeHarness) -> None:
    now = sim.now_ms()
    won = {sim.add_deal(at_ms=now - HOUR + n) if n % 2 == 0 else sim.add_deal("appointmentscheduled",
                                                                                at_ms=now - HOUR + n)
           for n in range(600)}
    won = {d for d in won if sim.deals[int(d)].properties["dealstage"] == "closedwon"}
    h = hs_harness({"batch_size": 40, "page_size": 30})
    assert h.ingest("hs", batches=3) == 120
    assert next(s for s in h.sources() if s.name == "hs").more
    # Stopped mid-sync; a new process (the next harness, the first one closed) starts from the stored cursor.
    h2 = hs_harness({"batch_size": 40, "page_size": 30})
    poll(h2)
    keys = [r.key for r in h2.events()]
    assert len(keys) == len(set(keys)) == 300
    assert {r.object_id for r in h2.events()} == won


def test_end_to_end_each_partner_deal_rewarded_once(sim: HubSpotSimulator, hs_harness: MakeHarness) -> None:
    now = sim.now_ms()
    partners = [sim.add_company(f"Partner {n}") for n in range(40)]
    partner_won: dict[str, tuple[str, Decimal]] = {}
    for n in range(3000):
        at = now - 2 * HOUR + n
        if n % 5 in (0, 1):  # won through a partner
            amount = Decimal(1000 + n) + Decimal("0.25")
            deal = sim.add_deal(amount=str(amount), currency="EUR" if n % 3 == 0 else None, at_ms=at,
                                company=partners[n % 40], owner=f"{200 + n % 7}")
            partner_won[deal] = (partners[n % 40], amount)
        elif n % 5 == 2:  # won directly: no partner company
            sim.add_deal(at_ms=at)
        else:
            sim.add_deal("presentationscheduled", at_ms=at, company=partners[n % 40])
    source = {"batch_size": 250, "page_size": 200, "read_chunk_size": 100, "partner_required": True}
    h = hs_harness(source, PROGRAM)
    h.ingest("hs", batches=2)
    calculate_all(h)
    h = hs_harness(source, PROGRAM)  # stop mid-sync, after part of it was calculated, and start again
    poll(h)
    poll(h)  # an overlapping poll adds nothing
    calculate_all(h)
    paid = reward_rows(h)
    assert Counter(r["object_id"] for r in paid) == Counter(dict.fromkeys(partner_won, 1))
    for row in paid:
        partner, amount = partner_won[row["object_id"]]
        assert row["payee_id"] == partner
        assert row["amount_minor"] == int((amount * Decimal("0.05")).quantize(Decimal("0.01")) * 100)
    assert {r["currency"] for r in paid} == {"EUR", "USD"}

    # Ten deals leave closed-won before anything was paid: their rewards are cancelled (a clawback of unpaid
    # rewards). Three of them are won again: a new won transition, rewarded again.
    moved = sorted(partner_won, key=int)[:10]
    for deal in moved:
        sim.update_deal(deal, dealstage="contractsent", at_ms=sim.now_ms() - 2000)
    for deal in moved[:3]:
        sim.update_deal(deal, dealstage="closedwon", at_ms=sim.now_ms() - 1000)
    h = hs_harness(source, PROGRAM)
    poll(h)
    calculate_all(h)
    rows = reward_rows(h)
    assert sorted(r["object_id"] for r in rows if r["status"] == "cancelled") == sorted(moved)
    live = Counter(r["object_id"] for r in rows if r["status"] != "cancelled")
    assert live == Counter({d: 1 for d in partner_won if d not in moved[3:]})
    rewon = [r for r in rows if r["object_id"] in moved[:3] and r["status"] != "cancelled"]
    assert all(r["transition"] != f"won:{sim.deals[int(r['object_id'])].created_ms}" for r in rewon)
    reversals = [e.object_id for e in h.events() if e.event_type == "deal_reversed"]
    assert sorted(reversals) == sorted(moved)
    assert h.events("quarantined") == []
