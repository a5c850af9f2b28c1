"""Reversal and deletion detection covers every deal the source has emitted as won, whatever the filter says now.

Each test goes through payhub as in production: the simulator, ``[sources.hs] plugin = "hubspot"``, payhub's
harness ingesting into a real database (SQLite and PostgreSQL), and the calculation stage. A partner deal is won
and rewarded in one sync; then it is reopened, lost or deleted, in the same edit that makes it leave the source's
filters (partner removed with ``partner_required``, moved to a pipeline not in ``pipelines``, owner cleared or
unmapped with ``require_owner_mapping``); the next sync must store the reversal and the program must take the
reward back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from payhub_simulators.hubspot import HubSpotSimulator

from payhub.api import to_minor
from payhub.testing import Harness
from payhub_hubspot import sign_v3

pytestmark = pytest.mark.slow  # each case syncs and runs the pipeline over several polls

HOUR = 3_600_000
MakeHarness = Callable[..., Harness]
Setup = Callable[..., tuple[Harness, str, str]]
PROGRAM = """
[programs.partner_rebate]
calculator = "percentage"
percent = "10"
pay = "partner"
event_types = ["deal_won"]
clawback_event_types = ["deal_reversed"]
"""
OTHER_PIPELINE = "renewals"
WEBHOOK_SECRET = "app-webhook-secret"
SOURCE = {"partner_required": True, "pipelines": ["default"], "owner_payees": {"101": "ana", "102": "ben"},
          "require_owner_mapping": True, "archived_sweep_seconds": 0.001}


@pytest.fixture
def runtime_db_url(both_databases: str) -> str:
    """The runtimes of this module run on SQLite and on PostgreSQL."""
    return both_databases


def sync(rt: Harness) -> None:
    """One poll of the source (until it has nothing more ready), then every event calculated."""
    rt.ingest("hs", batches=None)
    while rt.calculate():
        pass


def deal_events(rt: Harness, deal: str) -> list[tuple[str, str, str | None]]:
    """(transition kind, status, reason) of the deal's stored events, in order of arrival."""
    return [(e.transition.split(":")[0], e.status, e.reason) for e in rt.events() if e.object_id == deal]


def deal_rewards(rt: Harness, deal: str) -> list[tuple[str, str, int]]:
    """(won transition, reward status, amount in minor units) of the deal's rewards and adjustments."""
    transitions = {e.id: e.transition for e in rt.events() if e.object_id == deal}
    return [(transitions[r.event_id].split(":")[0], r.status, to_minor(r.amount, r.currency))
            for r in rt.rewards() if r.event_id in transitions]


@pytest.fixture
def setup(sim: HubSpotSimulator, hs_harness: MakeHarness) -> Setup:
    """``setup(**source)``: a partner deal won an hour ago, synced and rewarded (100.00 of 1000.00)."""
    sim.add_pipeline(OTHER_PIPELINE, "Renewals", [("renewal-open", "Renewal open", "false", "0.5"),
                                                 ("renewal-won", "Renewal won", "true", "1.0")])

    def factory(**source: Any) -> tuple[Harness, str, str]:
        partner = sim.add_company("Reseller")
        deal = sim.add_deal(at_ms=sim.now_ms() - HOUR, company=partner)
        rt = hs_harness({**SOURCE, **source}, PROGRAM)
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
        sim: HubSpotSimulator, setup: Setup, edit: Edit, reversal: str) -> None:
    rt, deal, partner = setup()
    edit(sim, deal, partner, edit_ms(sim))
    sync(rt)
    stored = deal_events(rt, deal)
    assert stored[0][0] == "won" and (reversal, "calculated", None) in stored, stored
    assert [kind for kind, _, _ in stored].count(reversal) == 1
    assert deal_rewards(rt, deal) == [("won", "cancelled", 10000)]
    sync(rt)  # read again: nothing new
    assert deal_events(rt, deal) == stored


def deletion_delivery(deal: str) -> tuple[bytes, dict[str, str]]:
    """A ``deal.deletion`` notification for ``deal`` as HubSpot posts it (webhooks API v3): body and signed headers
    for ``POST /webhooks/hs``."""
    now_ms = int(time.time() * 1000)
    body = json.dumps([{"eventId": 4020571633, "subscriptionId": 26, "portalId": 62515, "appId": 1160452,
                        "occurredAt": now_ms, "subscriptionType": "deal.deletion", "attemptNumber": 0,
                        "objectId": int(deal), "changeSource": "CRM"}]).encode()
    timestamp = str(now_ms)
    return body, {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": timestamp,
                  "X-HubSpot-Signature-v3": sign_v3(WEBHOOK_SECRET, "POST", "http://testserver/webhooks/hs", body,
                                                    timestamp)}


def test_deleted_deal_reported_by_webhook_after_a_reopen(sim: HubSpotSimulator, setup: Setup) -> None:
    rt, deal, partner = setup(archived_sweep_seconds=0, index_lag_seconds=3600, webhook_secret=WEBHOOK_SECRET)
    reopened_then_deleted(sim, deal, partner, edit_ms(sim))
    body, headers = deletion_delivery(deal)  # a deal.deletion notification; the windows do not see the edit
    with rt.http_client() as http:
        answer = http.post("/webhooks/hs", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["queued"] == 1, answer.text
    assert [(o.source, o.object_id) for o in rt.webhook_objects()] == [("hs", deal)]
    sync(rt)
    assert [kind for kind, _, _ in deal_events(rt, deal)] == ["won", "reopened"]
    assert deal_rewards(rt, deal) == [("won", "cancelled", 10000)]


def test_won_reopened_won_again_and_lost_across_syncs(sim: HubSpotSimulator,
                                                      setup: Setup) -> None:
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
                                                        setup: Setup) -> None:
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
                                                               setup: Setup) -> None:
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
