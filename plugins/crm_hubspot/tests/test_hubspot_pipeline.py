"""The hubspot source inside payhub: loaded by entry point, polled by the core, calculated once per deal.

Runs against the HubSpot simulator on 127.0.0.1 with real SQLite databases and ``[sources.hs] plugin = "hubspot"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from payhub_simulators.hubspot import HubSpotSimulator
from sqlalchemy import func, select

from payhub.db.schema import events, rewards
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll, poll_batches
from payhub.runtime import Runtime
from payhub_hubspot import HubSpotSource

HOUR = 3_600_000
MakeRuntime = Callable[..., Runtime]
PROGRAM = """
[programs.partner_rebate]
calculator = "percentage"
percent = "5"
pay = "partner"
event_types = ["deal_won"]
clawback_event_types = ["deal_reversed"]
"""


def stored(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(events).order_by(events.c.id))]


def calculate_all(rt: Runtime, limit: int | None = None) -> None:
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions, limit):
        pass


def reward_rows(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        query = select(events.c.object_id, events.c.transition, rewards.c.payee_id, rewards.c.amount_minor,
                       rewards.c.currency, rewards.c.status
                       ).join(rewards, rewards.c.event_id == events.c.id).order_by(rewards.c.id)
        return [dict(r._mapping) for r in conn.execute(query)]


def test_loaded_by_entry_point(make_runtime: MakeRuntime) -> None:
    rt = make_runtime()
    assert isinstance(rt.plugins.sources["hs"], HubSpotSource)
    status = next(s for s in rt.plugins.statuses if s.section == "hs")
    assert (status.plugin, status.distribution) == ("hubspot", "payhub-hubspot")


def test_malformed_deal_is_quarantined_while_the_rest_proceeds(sim: HubSpotSimulator,
                                                               make_runtime: MakeRuntime) -> None:
    now = sim.now_ms()
    good = [sim.add_deal(amount=f"{100 + n}.00", at_ms=now - HOUR + n) for n in range(5)]
    bad_amount = sim.add_deal(amount="abc", at_ms=now - HOUR)
    no_close = sim.add_deal(closedate=None, at_ms=now - HOUR)
    rt = make_runtime({"batch_size": 3})
    assert poll(rt, "hs") == 7
    rows = {r["object_id"]: r for r in stored(rt)}
    assert {d: rows[d]["status"] for d in good} == dict.fromkeys(good, "ingested")
    assert (rows[bad_amount]["status"], rows[bad_amount]["reason"]) == (
        "quarantined", "amount 'abc' is not a decimal number")
    assert (rows[no_close]["status"], rows[no_close]["reason"]) == ("quarantined", "closedate is missing")
    assert poll(rt, "hs") == 0  # polled again: nothing new, the quarantined records are not added twice
    # Someone fixes the amount in HubSpot: the same key comes back corrected and replaces the quarantined event.
    sim.update_deal(bad_amount, amount="300.00")
    assert poll(rt, "hs") == 1
    fixed = {r["object_id"]: r for r in stored(rt)}[bad_amount]
    assert (fixed["status"], fixed["amount"], len(stored(rt))) == ("ingested", "300.00", 7)


def test_interrupted_sync_resumes_without_gap_or_duplicate(sim: HubSpotSimulator, make_runtime: MakeRuntime) -> None:
    now = sim.now_ms()
    won = {sim.add_deal(at_ms=now - HOUR + n) if n % 2 == 0 else sim.add_deal("appointmentscheduled",
                                                                                at_ms=now - HOUR + n)
           for n in range(600)}
    won = {d for d in won if sim.deals[int(d)].properties["dealstage"] == "closedwon"}
    rt = make_runtime({"batch_size": 40, "page_size": 30})
    added, more = poll_batches(rt, "hs", max_batches=3)
    assert added == 120 and more
    rt.close()  # stopped mid-sync; a new process starts from the stored cursor
    rt2 = make_runtime({"batch_size": 40, "page_size": 30})
    poll(rt2, "hs")
    keys = [r["key"] for r in stored(rt2)]
    assert len(keys) == len(set(keys)) == 300
    assert {r["object_id"] for r in stored(rt2)} == won


@pytest.mark.slow  # a whole pipeline over many deals
def test_end_to_end_each_partner_deal_rewarded_once(sim: HubSpotSimulator, make_runtime: MakeRuntime) -> None:
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
    rt = make_runtime(source, PROGRAM)
    poll_batches(rt, "hs", max_batches=2)
    calculate_all(rt, limit=100)
    rt.close()  # stop mid-sync, after part of it was calculated
    rt = make_runtime(source, PROGRAM)
    poll(rt, "hs")
    poll(rt, "hs")  # an overlapping poll adds nothing
    calculate_all(rt)
    paid = reward_rows(rt)
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
    rt.close()
    rt = make_runtime(source, PROGRAM)
    poll(rt, "hs")
    calculate_all(rt)
    rows = reward_rows(rt)
    assert sorted(r["object_id"] for r in rows if r["status"] == "cancelled") == sorted(moved)
    live = Counter(r["object_id"] for r in rows if r["status"] != "cancelled")
    assert live == Counter({d: 1 for d in partner_won if d not in moved[3:]})
    rewon = [r for r in rows if r["object_id"] in moved[:3] and r["status"] != "cancelled"]
    assert all(r["transition"] != f"won:{sim.deals[int(r['object_id'])].created_ms}" for r in rewon)
    with rt.engine.connect() as conn:
        reversals = conn.execute(select(events.c.object_id).where(events.c.event_type == "deal_reversed")).scalars()
        assert sorted(reversals) == sorted(moved)
        assert conn.execute(select(func.count()).select_from(events)
                            .where(events.c.status == "quarantined")).scalar_one() == 0
