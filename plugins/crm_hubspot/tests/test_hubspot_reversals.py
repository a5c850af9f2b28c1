"""Reversal and deletion detection covers every deal the source has emitted as won, whatever the filter says now.

Each test goes through payhub as in production: the simulator, ``[sources.hs] plugin = "hubspot"``, the core's
ingest into a real SQLite database, and the calculation stage. A partner deal is won and rewarded in one sync; then
it is reopened, lost or deleted, in the same edit that makes it leave the source's filters (partner removed with
``partner_required``, moved to a pipeline not in ``pipelines``, owner cleared or unmapped with
``require_owner_mapping``); the next sync must store the reversal and the program must take the reward back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select

from payhub.db.schema import events, rewards, webhook_objects
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll
from payhub.runtime import Runtime
from payhub_simulators.hubspot import HubSpotSimulator

HOUR = 3_600_000
MakeRuntime = Callable[..., Runtime]
PROGRAM = """
[programs.partner_rebate]
calculator = "percentage"
percent = "10"
pay = "partner"
event_types = ["deal_won"]
clawback_event_types = ["deal_reversed"]
"""
OTHER_PIPELINE = "renewals"
SOURCE = {"partner_required": True, "pipelines": ["default"], "owner_payees": {"101": "ana", "102": "ben"},
          "require_owner_mapping": True, "archived_sweep_seconds": 0.001}


@pytest.fixture
def runtime_db_url(both_databases: str) -> str:
    """The runtimes of this module run on SQLite and on PostgreSQL."""
    return both_databases


def sync(rt: Runtime) -> None:
    """One poll of the source, then every event calculated."""
    poll(rt, "hs")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass


def deal_events(rt: Runtime, deal: str) -> list[tuple[str, str, str | None]]:
    """(transition kind, status, reason) of the deal's stored events, in key order."""
    with rt.engine.connect() as conn:
        rows = conn.execute(select(events.c.transition, events.c.status, events.c.reason)
                            .where(events.c.object_id == deal).order_by(events.c.id)).all()
    return [(transition.split(":")[0], status, reason) for transition, status, reason in rows]


def deal_rewards(rt: Runtime, deal: str) -> list[tuple[str, str, int]]:
    """(won transition, reward status, amount in minor units) of the deal's rewards and adjustments."""
    with rt.engine.connect() as conn:
        rows = conn.execute(select(events.c.transition, rewards.c.status, rewards.c.amount_minor)
                            .join(rewards, rewards.c.event_id == events.c.id)
                            .where(events.c.object_id == deal).order_by(rewards.c.id)).all()
    return [(transition.split(":")[0], status, amount) for transition, status, amount in rows]


@pytest.fixture
def setup(sim: HubSpotSimulator, make_runtime: MakeRuntime) -> Callable[..., tuple[Runtime, str, str]]:
    """``setup(**source)``: a partner deal won an hour ago, synced and rewarded (100.00 of 1000.00)."""
    sim.add_pipeline(OTHER_PIPELINE, "Renewals", [("renewal-open", "Renewal open", "false", "0.5"),
                                                 ("renewal-won", "Renewal won", "true", "1.0")])

    def factory(**source: Any) -> tuple[Runtime, str, str]:
        partner = sim.add_company("Reseller")
        deal = sim.add_deal(at_ms=sim.now_ms() - HOUR, company=partner)
        rt = make_runtime({**SOURCE, **source}, PROGRAM)
        sync(rt)
        assert deal_events(rt, deal) == [("won", "ingested", None)] or deal_events(rt, deal) == [
            ("won", "calculated", None)]
        assert deal_rewards(rt, deal) == [("won", "pending", 10000)]
        return rt, deal, partner

    return factory


def edit_ms(sim: HubSpotSimulator) -> int:
    """A moment for the edit between two syncs: after the first sync's window, inside the next one's lookback."""
    return sim.now_ms() - 1000


Edit = Callable[[HubSpotSimulator, str, str, int], None]


def reopened(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.update_deal(deal, dealstage="contractsent", at_ms=at)


def lost(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.update_deal(deal, dealstage="closedlost", at_ms=at)


def deleted(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.archive_deal(deal, at_ms=at)


def reopened_partner_removed(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.dissociate(deal, partner)
    sim.update_deal(deal, dealstage="contractsent", at_ms=at)


def lost_partner_removed(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.dissociate(deal, partner)
    sim.update_deal(deal, dealstage="closedlost", at_ms=at)


def reopened_into_another_pipeline(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.update_deal(deal, pipeline=OTHER_PIPELINE, dealstage="renewal-open", at_ms=at)


def reopened_owner_cleared(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.update_deal(deal, dealstage="contractsent", hubspot_owner_id="", at_ms=at)


def lost_owner_unmapped(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.update_deal(deal, dealstage="closedlost", hubspot_owner_id="999", at_ms=at)


def reopened_then_deleted(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.update_deal(deal, dealstage="contractsent", at_ms=at)
    sim.archive_deal(deal, at_ms=at + 10)


def lost_partner_removed_then_deleted(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.dissociate(deal, partner)
    sim.update_deal(deal, dealstage="closedlost", hubspot_owner_id="", at_ms=at)
    sim.archive_deal(deal, at_ms=at + 10)


def deleted_owner_unmapped_other_pipeline(sim: HubSpotSimulator, deal: str, partner: str, at: int) -> None:
    sim.update_deal(deal, pipeline=OTHER_PIPELINE, dealstage="renewal-won", hubspot_owner_id="999", at_ms=at)
    sim.archive_deal(deal, at_ms=at + 10)


@pytest.mark.parametrize(("edit", "reversal"), [
    (reopened, "reopened"),
    (lost, "lost"),
    (deleted, "deleted"),
    (reopened_partner_removed, "reopened"),
    (lost_partner_removed, "lost"),
    (reopened_into_another_pipeline, "reopened"),
    (reopened_owner_cleared, "reopened"),
    (lost_owner_unmapped, "lost"),
    (reopened_then_deleted, "reopened"),
    (lost_partner_removed_then_deleted, "lost"),
    (deleted_owner_unmapped_other_pipeline, "deleted"),
])
def test_a_rewarded_deal_undone_loses_its_reward_whatever_the_filters_say(
        sim: HubSpotSimulator, setup: Callable[..., tuple[Runtime, str, str]], edit: Edit, reversal: str) -> None:
    rt, deal, partner = setup()
    edit(sim, deal, partner, edit_ms(sim))
    sync(rt)
    stored = deal_events(rt, deal)
    assert stored[0][0] == "won" and (reversal, "calculated", None) in stored, stored
    assert [kind for kind, _, _ in stored].count(reversal) == 1
    assert deal_rewards(rt, deal) == [("won", "cancelled", 10000)]
    sync(rt)  # read again: nothing new
    assert deal_events(rt, deal) == stored


def test_deleted_deal_reported_by_webhook_after_a_reopen(sim: HubSpotSimulator,
                                                         setup: Callable[..., tuple[Runtime, str, str]]) -> None:
    rt, deal, partner = setup(archived_sweep_seconds=0, index_lag_seconds=3600)
    reopened_then_deleted(sim, deal, partner, edit_ms(sim))
    with rt.engine.begin() as conn:  # a deal.deletion notification, queued; the windows do not see the edit
        conn.execute(insert(webhook_objects).values(source="hs", object_id=deal, received_at=datetime.now(UTC)))
    sync(rt)
    assert [kind for kind, _, _ in deal_events(rt, deal)] == ["won", "reopened"]
    assert deal_rewards(rt, deal) == [("won", "cancelled", 10000)]


def test_won_reopened_won_again_and_lost_across_syncs(sim: HubSpotSimulator,
                                                      setup: Callable[..., tuple[Runtime, str, str]]) -> None:
    rt, deal, partner = setup()
    base = edit_ms(sim) - 10_000
    sim.update_deal(deal, dealstage="contractsent", at_ms=base)
    sync(rt)
    assert deal_rewards(rt, deal) == [("won", "cancelled", 10000)]
    sim.update_deal(deal, dealstage="closedwon", at_ms=base + 1000)  # won again, partner still there
    sync(rt)
    assert deal_rewards(rt, deal) == [("won", "cancelled", 10000), ("won", "pending", 10000)]
    sim.dissociate(deal, partner)
    sim.update_deal(deal, pipeline=OTHER_PIPELINE, dealstage="renewal-open", hubspot_owner_id="", at_ms=base + 2000)
    sync(rt)
    assert [kind for kind, _, _ in deal_events(rt, deal)] == ["won", "reopened", "won", "reopened"]
    assert deal_rewards(rt, deal) == [("won", "cancelled", 10000), ("won", "cancelled", 10000)]
    # Won again in the other pipeline, without a partner: not a rewarded win here (pipelines, partner_required).
    sim.update_deal(deal, dealstage="renewal-won", at_ms=base + 3000)
    sync(rt)
    assert [kind for kind, _, _ in deal_events(rt, deal)] == ["won", "reopened", "won", "reopened"]


def test_won_and_undone_between_two_syncs_takes_nothing(sim: HubSpotSimulator,
                                                        setup: Callable[..., tuple[Runtime, str, str]]) -> None:
    rt, deal, partner = setup()
    other = sim.add_deal("contractsent", at_ms=edit_ms(sim) - 5000, company=partner)
    sim.update_deal(other, dealstage="closedwon", at_ms=edit_ms(sim) - 4000)
    sim.dissociate(other, partner)
    sim.update_deal(other, dealstage="closedlost", at_ms=edit_ms(sim) - 3000)
    sync(rt)
    # The win had no partner when read (partner_required): no won event, no reward; the reversal takes nothing.
    assert [kind for kind, _, _ in deal_events(rt, other)] == ["lost"]
    assert deal_rewards(rt, other) == []
    assert deal_rewards(rt, deal) == [("won", "pending", 10000)]


def test_deals_only_ever_won_outside_the_pipelines_add_nothing(sim: HubSpotSimulator,
                                                               setup: Callable[..., tuple[Runtime, str, str]]) -> None:
    rt, deal, partner = setup()
    at = edit_ms(sim)
    renewal = sim.add_deal("renewal-won", pipeline=OTHER_PIPELINE, at_ms=at - 5000, company=partner)
    sim.update_deal(renewal, dealstage="renewal-open", at_ms=at - 4000)
    sim.update_deal(renewal, dealstage="renewal-won", at_ms=at - 3000)
    moved_in = sim.add_deal("renewal-won", pipeline=OTHER_PIPELINE, at_ms=at - 5000, company=partner)
    sim.update_deal(moved_in, pipeline="default", dealstage="closedwon", at_ms=at - 2000)  # won all along
    sync(rt)
    assert deal_events(rt, renewal) == []  # neither its wins nor its reopening: never won in "default"
    assert [kind for kind, _, _ in deal_events(rt, moved_in)] == ["won"]  # its stay in closed-won reached "default"
    assert deal_rewards(rt, moved_in) == [("won", "pending", 10000)]
