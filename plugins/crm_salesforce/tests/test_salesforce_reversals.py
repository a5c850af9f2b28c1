"""Reversals whatever the ``where`` filter says now, through payhub's core on SQLite and PostgreSQL.

A won deal the filter selected is rewarded; later edits take it out of the filter (partner cleared, type changed)
in the same edit that reopens or loses it, or in an earlier one, possibly seen by a poll of its own. Whatever the
order, the deal's reopening, loss or deletion is a ``deal_reversed`` event and the reward is taken back; a deal that
only stops matching the filter while it stays won keeps its reward (the win was not undone). Every step is a new
harness on the same database, so each poll resumes from the stored cursor as after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from payhub_simulators.salesforce import USER_ID, SalesforceSimulator
from test_salesforce_pipeline import active_rewards, calculate, keys_of, poll

from payhub.api import PermanentSourceError
from payhub.testing import Harness
from payhub_salesforce import SalesforceSource

pytestmark = pytest.mark.slow  # each case syncs and runs the pipeline over several polls

WON_AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
WON_KEY = "won:2026-03-01T08:00:00Z"
PARTNER = "001000000000007AAA"
WHERE = "PartnerAccountId != null AND Type = 'Partner'"

Edit = dict[str, Any]  # field values for SalesforceSimulator.update; {"delete": True} deletes the deal


def settings(sim: SalesforceSimulator, where: str = WHERE, mapping: str = "") -> str:
    return f"""
        [sources.sf]
        plugin = "salesforce"
        auth = "client_credentials"
        login_url = "{sim.url}"
        client_id = "{sim.client_id}"
        client_secret = "{sim.client_secret}"
        org_currency = "USD"
        retry_backoff_seconds = 0
        retry_backoff_max_seconds = 0

        [sources.sf.opportunity]
        where = "{where}"
        {mapping}

        [programs.partner_rebate]
        calculator = "percentage"
        percent = "10"
        pay = "partner"
        event_types = ["deal_won"]
        clawback_event_types = ["deal_reversed"]
        once_per_object = true
    """


def apply(sim: SalesforceSimulator, deal: str, edit: Edit) -> None:
    if edit.get("delete"):
        sim.delete("Opportunity", deal)
    else:
        sim.update("Opportunity", deal, **edit)


def reversal_reasons(rt: Harness, deal: str) -> list[str]:
    return [e.attributes["reason"] for e in rt.events() if e.object_id == deal and e.event_type == "deal_reversed"]


def assert_reversed(rt: Harness, deal: str, *reversals: tuple[str, str]) -> None:
    """The deal's events are its win, then a ``reversed:<at>`` with its reason for each ``(at, reason)`` of
    ``reversals``; its reward is taken back."""
    assert keys_of(rt, deal) == [WON_KEY, *(f"reversed:{at}" for at, _ in reversals)]
    assert reversal_reasons(rt, deal) == [reason for _, reason in reversals]
    assert not active_rewards(rt).get(deal)


def won_and_rewarded(sim: SalesforceSimulator, make: Callable[[str], Harness], where: str = WHERE) -> str:
    """A partner deal won at WON_AT, polled and rewarded 10 % of 1000.00 (10000 cents) to the partner."""
    sim.clock = lambda: WON_AT
    deal = sim.add_opportunity(StageName="Closed Won", Amount=Decimal("1000"), PartnerAccountId=PARTNER,
                               Type="Partner")
    rt = make(settings(sim, where))
    assert poll(rt, "sf") == 1
    assert calculate(rt) == 1
    assert active_rewards(rt) == {deal: [10000]}
    return deal


def step(sim: SalesforceSimulator, make: Callable[[str], Harness], deal: str, day: int, edits: list[Edit],
         where: str = WHERE, mapping: str = "") -> Harness:
    """Apply ``edits`` on ``day`` days after the win (one second apart), then restart, poll and calculate."""
    for n, edit in enumerate(edits):
        moment = WON_AT + timedelta(days=day, seconds=n)
        sim.clock = lambda moment=moment: moment  # type: ignore[misc]
        apply(sim, deal, edit)
    rt = make(settings(sim, where, mapping))
    poll(rt, "sf")
    calculate(rt)
    return rt


CLEAR_PARTNER: Edit = {"PartnerAccountId": None}
UNDONE: list[tuple[str, Edit, str]] = [  # (name, the edit that undoes the win, the reversal's reason)
    ("reopened", {"StageName": "Negotiation"}, "reopened"),
    ("lost", {"StageName": "Closed Lost"}, "lost"),
    ("deleted", {"delete": True}, "deleted"),
]
OUT_OF_FILTER: list[tuple[str, Edit]] = [("partner cleared", CLEAR_PARTNER), ("type changed", {"Type": "Renewal"})]


@pytest.mark.parametrize(("undo", "reason"), [pytest.param(e, r, id=n) for n, e, r in UNDONE if n != "deleted"])
@pytest.mark.parametrize("out", [pytest.param(e, id=n) for n, e in OUT_OF_FILTER])
def test_undone_in_the_edit_that_leaves_the_filter(sf_sim: SalesforceSimulator, sf_harness: Callable[[str], Harness],
                                                   undo: Edit, reason: str, out: Edit) -> None:
    """Reopened or lost, and out of the filter, in one edit a later poll than the win reads: the reward goes."""
    deal = won_and_rewarded(sf_sim, sf_harness)
    rt = step(sf_sim, sf_harness, deal, 1, [{**undo, **out}])
    assert_reversed(rt, deal, ("2026-03-02T08:00:00Z", reason))


@pytest.mark.parametrize(("undo", "reason"), [pytest.param(e, r, id=n) for n, e, r in UNDONE])
@pytest.mark.parametrize("out", [pytest.param(e, id=n) for n, e in OUT_OF_FILTER])
def test_undone_after_leaving_the_filter_between_the_same_two_polls(
        sf_sim: SalesforceSimulator, sf_harness: Callable[[str], Harness], undo: Edit, reason: str,
        out: Edit) -> None:
    """Out of the filter, then reopened, lost or deleted a second later; one poll reads both edits."""
    deal = won_and_rewarded(sf_sim, sf_harness)
    rt = step(sf_sim, sf_harness, deal, 1, [out, undo])
    assert_reversed(rt, deal, ("2026-03-02T08:00:01Z", reason))


@pytest.mark.parametrize(("undo", "reason"), [pytest.param(e, r, id=n) for n, e, r in UNDONE])
@pytest.mark.parametrize("out", [pytest.param(e, id=n) for n, e in OUT_OF_FILTER])
def test_left_the_filter_while_won_keeps_the_reward_until_undone_at_a_later_poll(
        sf_sim: SalesforceSimulator, sf_harness: Callable[[str], Harness], undo: Edit, reason: str,
        out: Edit) -> None:
    """Partner removed (or the type changed) while won: no event, the reward stands; undone a poll later: reversed."""
    deal = won_and_rewarded(sf_sim, sf_harness)
    rt = step(sf_sim, sf_harness, deal, 1, [out])
    assert keys_of(rt, deal) == [WON_KEY]  # still won: not a reversal
    assert active_rewards(rt) == {deal: [10000]}

    rt = step(sf_sim, sf_harness, deal, 2, [undo])
    assert_reversed(rt, deal, ("2026-03-03T08:00:00Z", reason))


def test_partner_cleared_reopened_won_again_and_deleted(sf_sim: SalesforceSimulator,
                                                        sf_harness: Callable[[str], Harness]) -> None:
    """Each poll sees one change; the re-win without a partner is not rewarded, and each undoing is a reversal."""
    deal = won_and_rewarded(sf_sim, sf_harness)
    rt = step(sf_sim, sf_harness, deal, 1, [{"StageName": "Negotiation", **CLEAR_PARTNER}])
    assert not active_rewards(rt).get(deal)
    rt = step(sf_sim, sf_harness, deal, 2, [{"StageName": "Closed Won"}])  # won again, outside the filter
    assert keys_of(rt, deal) == [WON_KEY, "reversed:2026-03-02T08:00:00Z"]
    rt = step(sf_sim, sf_harness, deal, 3, [{"delete": True}])
    assert_reversed(rt, deal, ("2026-03-02T08:00:00Z", "reopened"), ("2026-03-04T08:00:00Z", "deleted"))
    assert poll(rt, "sf") == 0  # read again: nothing new
    assert calculate(rt) == 0


def test_reopened_then_deleted_between_the_same_two_polls(sf_sim: SalesforceSimulator,
                                                        sf_harness: Callable[[str], Harness]) -> None:
    """Reopened with its partner cleared, then deleted, before a poll: found as deleted, whatever its stage."""
    deal = won_and_rewarded(sf_sim, sf_harness)
    never_won = sf_sim.add_opportunity(StageName="Negotiation", Amount=Decimal("5"), PartnerAccountId=PARTNER,
                                       Type="Partner")
    sf_sim.clock = lambda: WON_AT + timedelta(days=1)
    sf_sim.delete("Opportunity", never_won)
    rt = step(sf_sim, sf_harness, deal, 1, [{"StageName": "Negotiation", **CLEAR_PARTNER}, {"delete": True}])
    assert_reversed(rt, deal, ("2026-03-02T08:00:01Z", "deleted"))
    assert reversal_reasons(rt, never_won) == ["deleted"]  # every deleted deal is read; it had nothing to take back
    never_won_events = {e.id for e in rt.events() if e.object_id == never_won}
    assert [c.status for c in rt.calculations() if c.event_id in never_won_events] == ["not_eligible"]
    assert active_rewards(rt) == {}


def test_a_reversal_whose_payee_field_was_cleared_takes_the_owner(sf_sim: SalesforceSimulator,
                                                                  sf_harness: Callable[[str], Harness]) -> None:
    """The payee field emptied in the edit that reopens the deal: the reversal is stored (owner as payee), not
    quarantined for a missing payee, and the reward is taken back from the partner it went to."""
    sf_sim.add_fields("Opportunity", ["Partner_Rep__c"])
    mapping = 'payee_field = "Partner_Rep__c"'
    sf_sim.clock = lambda: WON_AT
    deal = sf_sim.add_opportunity(StageName="Closed Won", Amount=Decimal("1000"), PartnerAccountId=PARTNER,
                                  Type="Partner", Partner_Rep__c="005000000000042AAA")
    rt = sf_harness(settings(sf_sim, mapping=mapping))
    poll(rt, "sf")
    calculate(rt)
    assert active_rewards(rt) == {deal: [10000]}
    rt = step(sf_sim, sf_harness, deal, 1, [{"StageName": "Negotiation", "Partner_Rep__c": None, **CLEAR_PARTNER}],
              mapping=mapping)
    stored = [(e.transition, e.status, e.payee_id) for e in rt.events() if e.object_id == deal]
    assert stored == [(WON_KEY, "calculated", "005000000000042AAA"),
                                          ("reversed:2026-03-02T08:00:00Z", "calculated", USER_ID)]  # the owner
    assert not active_rewards(rt).get(deal)


def test_the_filter_may_hold_a_semi_join(sf_sim: SalesforceSimulator,
                                         sf_harness: Callable[[str], Harness]) -> None:
    """Salesforce allows semi-joins only at the top level of WHERE (never under OR): the queries keep them there."""
    where = "Id IN (SELECT OpportunityId FROM OpportunityPartner WHERE Role = 'Reseller')"
    sf_sim.clock = lambda: WON_AT
    deal = sf_sim.add_opportunity(StageName="Closed Won", Amount=Decimal("1000"), PartnerAccountId=PARTNER)
    reseller = sf_sim.add_partner(deal, PARTNER)
    rt = sf_harness(settings(sf_sim, where))
    assert poll(rt, "sf") == 1
    calculate(rt)
    assert active_rewards(rt) == {deal: [10000]}
    sf_sim.clock = lambda: WON_AT + timedelta(days=1)
    sf_sim.delete("OpportunityPartner", reseller)
    sf_sim.update("Opportunity", deal, StageName="Closed Lost")
    rt = step(sf_sim, sf_harness, deal, 2, [], where)
    assert reversal_reasons(rt, deal) == ["lost"]
    assert not active_rewards(rt).get(deal)


def test_each_reversal_stream_reads_without_the_filter(sf_sim: SalesforceSimulator, sf_source) -> None:
    """The won query carries the filter; the reopened and deleted queries do not (one query each per idle sync)."""
    source: SalesforceSource = sf_source(opportunity={"where": WHERE})
    before = len(sf_sim.api_requests)
    queries = {stream.name: " AND ".join(stream.conditions) for stream in source.streams()}
    assert list(queries) == ["Opportunity", "Opportunity.reopened", "Opportunity.deleted"]
    assert "Type = 'Partner'" in queries["Opportunity"] and "IsDeleted = false" in queries["Opportunity"]
    assert "Type" not in queries["Opportunity.reopened"] and "Type" not in queries["Opportunity.deleted"]
    assert "IsDeleted = true" in queries["Opportunity.deleted"]
    result = source.fetch(None, 100)
    assert (list(result.records), result.more) == ([], False)
    assert len(sf_sim.api_requests) - before == 4  # the won stages, then one query per stream
    with pytest.raises(PermanentSourceError, match="MALFORMED_QUERY"):  # the simulator refuses what Salesforce does
        source.client.query_all("SELECT Id FROM Opportunity WHERE IsWon = true OR Id IN "
                                "(SELECT OpportunityId FROM OpportunityHistory WHERE StageName = 'Closed Won')")


def test_a_custom_record_deleted_after_it_left_its_where_is_a_reversal(sf_sim: SalesforceSimulator, sf_source,
                                                                      sf_drain) -> None:
    """``deleted_event_type`` follows the same rule: a claim approved, then rejected, then deleted is withdrawn."""
    sf_sim.add_object("MDF_Claim__c", ["Status__c", "Rep__c", "Amount__c"])
    sf_sim.clock = lambda: WON_AT
    claim = sf_sim.insert("MDF_Claim__c", Status__c="Approved", Rep__c="005X", Amount__c=Decimal("800"))
    draft = sf_sim.insert("MDF_Claim__c", Status__c="Draft", Rep__c="005X")
    mapping = {"object": "MDF_Claim__c", "where": "Status__c = 'Approved'", "event_type": "mdf_claim_approved",
               "payee_field": "Rep__c", "amount_field": "Amount__c", "deleted_event_type": "mdf_claim_withdrawn"}
    source = sf_source(opportunity={"enabled": False}, objects=[mapping], lookback_seconds=0)
    assert [s.name for s in source.streams()] == ["MDF_Claim__c", "MDF_Claim__c.deleted"]
    first = sf_drain(source)
    assert [(r.object_id, r.event_type) for r in first.records] == [(claim, "mdf_claim_approved")]

    sf_sim.clock = lambda: WON_AT + timedelta(days=1)
    sf_sim.update("MDF_Claim__c", claim, Status__c="Rejected")
    second = sf_drain(source, first.cursor)
    assert second.records == []  # out of the where, not deleted: no event
    sf_sim.clock = lambda: WON_AT + timedelta(days=2)
    sf_sim.delete("MDF_Claim__c", claim)
    sf_sim.delete("MDF_Claim__c", draft)
    third = sf_drain(source, second.cursor)
    assert sorted((r.object_id, r.event_type, r.transition) for r in third.records) == sorted([
        (claim, "mdf_claim_withdrawn", "reversed:2026-03-03T08:00:00Z"),
        (draft, "mdf_claim_withdrawn", "reversed:2026-03-03T08:00:00Z")])  # never an event: takes nothing back
