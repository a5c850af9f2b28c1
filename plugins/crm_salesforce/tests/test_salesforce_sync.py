"""Reading incrementally: pages, the cursor, ties, resuming, changes during paging, reversals and field mapping."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import respx
from payhub_simulators.salesforce import SalesforceSimulator

from payhub.api import SourceRecord
from payhub_salesforce import SalesforceSource

PAST = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
PAST_KEY = "won:2026-04-01T12:00:00Z"  # a deal won at PAST: its LastStageChangeDate, UTC, to the second


def keys(records: list[SourceRecord]) -> list[tuple[str, str]]:
    return [(r.object_id, r.transition) for r in records]


def at(moment: datetime) -> Any:
    return lambda: moment


def won_deals(sim: SalesforceSimulator, n: int, when: datetime = PAST, **fields: Any) -> list[str]:
    """``n`` closed-won partner deals, all last modified at ``when`` (ties on the second)."""
    sim.clock = at(when)
    ids = [sim.add_opportunity(Name=f"Deal {i}", StageName="Closed Won", Amount=Decimal(1000 + i),
                               PartnerAccountId=f"001{i % 7:012d}AAA", **fields) for i in range(n)]
    sim.clock = lambda: datetime.now(UTC).replace(microsecond=0)
    return ids


def test_pages_are_followed_through_next_records_url(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    stamp = "2026-05-01T10:00:0{}.000+0000"
    page1 = p.query([p.record(f"00600000000000{i}AAA", stamp.format(i)) for i in range(3)],
                    next_url=f"{p.DATA}/query/01gD0000002HU6KIAW-3", total=5)
    page2 = p.query([p.record(f"00600000000000{i}AAA", stamp.format(i)) for i in range(3, 5)], total=5)
    with respx.mock() as mock:
        mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
        first = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=page1)
        more = mock.get(f"{p.INSTANCE}{p.DATA}/query/01gD0000002HU6KIAW-3").respond(200, json=page2)
        source = SalesforceSource("sf", sf_settings(), clock=at(datetime(2026, 6, 1, tzinfo=UTC).timestamp()))
        a = source.fetch(None, 2)
        b = source.fetch(a.cursor, 2)
        c = source.fetch(b.cursor, 2)
    assert [len(a.records), len(b.records), len(c.records)] == [2, 2, 1]
    assert {r.transition for r in a.records + b.records + c.records} == {p.WON_KEY}
    assert (a.more, b.more, c.more) == (True, True, False)
    assert first.call_count == 1 and more.call_count == 1  # the locator is used while fetches continue
    soql = first.calls[0].request.url.params["q"]
    assert soql.startswith("SELECT Id, IsDeleted, IsWon, IsClosed, StageName, SystemModstamp, LastStageChangeDate, "
                           "CloseDate, Amount, ")
    assert ("FROM Opportunity WHERE IsWon = true AND IsClosed = true AND IsDeleted = false "
            "ORDER BY SystemModstamp ASC, Id ASC") in soql
    for cursor in (a.cursor, b.cursor, c.cursor):
        assert "01gD0000002HU6KIAW" not in (cursor or "")  # locators expire: never stored
    done = json.loads(c.cursor or "")
    assert done == {"v": 1, "marks": {"Opportunity": "2026-05-01T10:00:04Z"}}


def test_next_sync_starts_at_the_mark_and_never_past_the_sync_start(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    recent = [p.record("006000000000001AAA", "2026-06-01T11:50:00.000+0000"),
              p.record("006000000000002AAA", "2026-06-01T11:58:00.000+0000")]  # within the 5 min lookback
    with respx.mock() as mock:
        mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
        query = mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").respond(200, json=p.query(recent))
        source = SalesforceSource("sf", sf_settings(), clock=at(start.timestamp()))
        first = source.fetch(None, 1)
        state = json.loads(first.cursor or "")
        assert state["sync"]["after"] == ["2026-06-01T11:50:00Z", "006000000000001AAA"]
        second = source.fetch(first.cursor, 10)
        assert json.loads(second.cursor or "")["marks"] == {"Opportunity": "2026-06-01T11:55:00Z"}  # start - 5 min
        fresh = SalesforceSource("sf", sf_settings(), clock=at((start + timedelta(minutes=1)).timestamp()))
        third = fresh.fetch(second.cursor, 10)
    assert "SystemModstamp >= 2026-06-01T11:55:00Z" in query.calls[-1].request.url.params["q"]
    assert keys(third.records) == [("006000000000001AAA", p.WON_KEY), ("006000000000002AAA", p.WON_KEY)]


def test_a_sync_interrupted_and_resumed_has_no_gap_and_no_duplicate(sf_sim: SalesforceSimulator, sf_source,
                                                                    sf_drain) -> None:
    sf_sim.max_page_size = 10
    ids = won_deals(sf_sim, 53, PAST)
    for n, opp in enumerate(ids):  # spread over several seconds, with ties within each
        sf_sim.tables["Opportunity"][opp]["SystemModstamp"] = PAST + timedelta(seconds=n // 5)
    records: list[SourceRecord] = []
    cursor = None
    for _ in range(4):  # read 4 batches, then the process "dies" (a new source, no locator, no buffer)
        result = sf_source(opportunity={"reversals": False}).fetch(cursor, 7)
        records.extend(result.records)
        cursor = result.cursor
    rest = sf_drain(sf_source(opportunity={"reversals": False}), cursor, 7)
    records.extend(rest.records)
    assert Counter(r.object_id for r in records) == Counter(ids)  # every deal exactly once


def test_ties_on_the_cursor_timestamp(sf_sim: SalesforceSimulator, sf_source, sf_drain) -> None:
    sf_sim.max_page_size = 4
    ids = won_deals(sf_sim, 30, PAST)  # all on the same second
    records: list[SourceRecord] = []
    cursor = None
    for _ in range(10):  # resume from the cursor each time: the Id breaks the tie
        result = sf_source(opportunity={"reversals": False}).fetch(cursor, 3)
        records.extend(result.records)
        cursor = result.cursor
        if not result.more:
            break
    assert sorted(r.object_id for r in records) == sorted(ids)
    assert len(records) == 30
    assert json.loads(cursor or "")["marks"]["Opportunity"] == "2026-04-01T12:00:00Z"
    # A deal committed later with the mark's own SystemModstamp (a long transaction) is still read: the next sync
    # starts at the mark inclusive, and what it reads again dedups by key.
    late = won_deals(sf_sim, 1, PAST)[0]
    again = sf_drain(sf_source(opportunity={"reversals": False}), cursor, 100).records
    assert late in {r.object_id for r in again}
    assert set(keys(again)) - set(keys(records)) == {(late, PAST_KEY)}


def test_a_record_changing_during_paging_is_read_again(sf_sim: SalesforceSimulator, sf_source, sf_drain) -> None:
    sf_sim.max_page_size = 5
    ids = won_deals(sf_sim, 20, PAST)

    def change(sim: SalesforceSimulator, offset: int) -> None:
        if offset == 10:  # before the third page: one deal already read, one not yet
            sim.update("Opportunity", ids[2], Amount=Decimal("5000"))
            sim.update("Opportunity", ids[17], Amount=Decimal("7000"))

    sf_sim.on_page = change
    source = sf_source(opportunity={"reversals": False})
    first = sf_drain(source, None, 6)
    sf_sim.on_page = None
    assert Counter(r.object_id for r in first.records) == Counter(ids)
    changed = next(r for r in first.records if r.object_id == ids[17])
    assert changed.amount == "7000.0"  # read with its values when its page was served
    second = sf_drain(source, first.cursor, 100)
    assert {ids[2], ids[17]} <= {r.object_id for r in second.records}  # modified after the sync start: read again
    assert {r.object_id for r in second.records} <= {ids[2], ids[17]} | set(ids)


def test_an_expired_query_locator_is_replaced_by_a_new_query(sf_sim: SalesforceSimulator, sf_source,
                                                             sf_drain) -> None:
    sf_sim.max_page_size = 5
    ids = won_deals(sf_sim, 12, PAST)
    source = sf_source(opportunity={"reversals": False})
    first = source.fetch(None, 5)
    sf_sim.expire_locators()
    rest = sf_drain(source, first.cursor, 5)
    assert Counter(r.object_id for r in first.records + rest.records) == Counter(ids)


def test_deleted_and_reopened_deals_produce_reversal_events(sf_sim: SalesforceSimulator, sf_source,
                                                            sf_drain) -> None:
    deleted, reopened, lost, rewon, untouched = won_deals(sf_sim, 5, PAST)
    never_won = sf_sim.add_opportunity(StageName="Negotiation", Amount=Decimal(10))
    source = sf_source(lookback_seconds=0)
    first = sf_drain(source)
    assert all(r.transition == PAST_KEY and r.event_type == "deal_won" for r in first.records)
    assert len(first.records) == 5

    sf_sim.clock = at(datetime(2026, 5, 2, 9, 0, tzinfo=UTC))
    sf_sim.delete("Opportunity", deleted)
    sf_sim.update("Opportunity", reopened, StageName="Negotiation")
    sf_sim.update("Opportunity", lost, StageName="Closed Lost")
    sf_sim.update("Opportunity", rewon, StageName="Negotiation")
    sf_sim.update("Opportunity", never_won, StageName="Closed Lost")
    second = sf_drain(source, first.cursor)
    reversals = {r.object_id: r for r in second.records if r.event_type == "deal_reversed"}
    assert set(reversals) == {deleted, reopened, lost, rewon}  # never_won had nothing to take back
    assert {r.transition for r in reversals.values()} == {"reversed:2026-05-02T09:00:00Z"}
    assert {o: r.attributes["reason"] for o, r in reversals.items()} == {
        deleted: "deleted", reopened: "reopened", lost: "lost", rewon: "reopened"}
    assert reversals[deleted].occurred_at == datetime(2026, 5, 2, 9, 0, tzinfo=UTC)
    assert reversals[deleted].payee_id and reversals[deleted].partner_id
    assert untouched not in reversals

    sf_sim.clock = at(datetime(2026, 5, 3, 9, 0, tzinfo=UTC))
    sf_sim.update("Opportunity", rewon, StageName="Closed Won")  # CloseDate unchanged: still 2026-05-01
    third = sf_drain(source, second.cursor)
    # Won again: the stage change gives a new LastStageChangeDate, so a new event, rewardable again (with CloseDate
    # as the transition field this re-win would have had the first win's key, and not been rewarded again).
    assert (rewon, "won:2026-05-03T09:00:00Z") in keys(third.records)
    assert ("reversed:2026-05-02T09:00:00Z" not in {r.transition for r in third.records if r.object_id == rewon})


def test_edits_of_a_deal_that_stays_won_keep_its_key(sf_sim: SalesforceSimulator, sf_source, sf_drain) -> None:
    moved, repriced, both, untouched = won_deals(sf_sim, 4, PAST)
    source = sf_source(lookback_seconds=0)
    first = sf_drain(source)
    assert set(keys(first.records)) == {(o, PAST_KEY) for o in (moved, repriced, both, untouched)}

    sf_sim.clock = at(datetime(2026, 5, 2, 9, 0, tzinfo=UTC))
    sf_sim.update("Opportunity", moved, CloseDate=date(2026, 6, 30))
    sf_sim.update("Opportunity", repriced, Amount=Decimal("2500"))
    sf_sim.update("Opportunity", both, CloseDate=date(2026, 7, 1), Amount=Decimal("3000"))
    second = sf_drain(source, first.cursor)
    read_again = {r.object_id: r for r in second.records}
    assert {moved, repriced, both} <= set(read_again)  # new SystemModstamp: read again...
    assert {r.transition for r in second.records} == {PAST_KEY}  # ...with the key of the first read: no new event
    assert all(r.event_type == "deal_won" for r in second.records)  # and no reversal either
    # The new values are read, but under the stored key: the core keeps the event as first stored.
    assert read_again[both].occurred_at == "2026-07-01" and Decimal(read_again[both].amount or "") == 3000


def test_the_won_key_is_the_same_text_however_salesforce_formats_the_date_time(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    mapper = SalesforceSource("sf", sf_settings()).mapper
    stamp = "2026-05-02T08:00:00.000+0000"
    same_moment = ["2026-05-01T10:00:00.000+0000", "2026-05-01T10:00:00Z", "2026-05-01T10:00:00+00:00",
                   "2026-05-01T10:00:00.5+0000", "2026-05-01T10:00:00.999999+0000", "2026-05-01T10:00:00.123456789Z",
                   "2026-05-01T12:00:00.000+0200", "2026-05-01T05:00:00.000-0500"]
    transitions = set()
    for value in same_moment:
        record = mapper.opportunity(p.record("006000000000001AAA", stamp, LastStageChangeDate=value))
        assert record is not None and record.problem is None
        transitions.add(record.transition)
    assert transitions == {p.WON_KEY} == {"won:2026-05-01T10:00:00Z"}
    later = mapper.opportunity(p.record("006000000000001AAA", stamp,
                                        LastStageChangeDate="2026-05-01T10:00:01.000+0000"))
    assert later is not None and later.transition == "won:2026-05-01T10:00:01Z"  # another second: another win
    by_close_date = SalesforceSource("sf", sf_settings(opportunity={"won_transition_field": "CloseDate",
                                                                     "reversals": False})).mapper
    record = by_close_date.opportunity(p.record("006000000000001AAA", stamp))
    assert record is not None and record.transition == "won:2026-05-01"  # a date stays a date


def test_malformed_records_carry_a_problem_and_the_rest_proceed(sf_settings, sf_payloads) -> None:
    p = sf_payloads
    stamp = "2026-05-01T10:00:00.000+0000"
    records = [p.record("006000000000001AAA", stamp, Amount=None),
               p.record("006000000000002AAA", stamp, CloseDate="05/01/2026"),
               p.record("006000000000003AAA", stamp, Amount=1234567.89),
               p.record("006000000000004AAA", stamp, Amount=Decimal("1E+7")),
               p.record("006000000000005AAA", stamp, LastStageChangeDate=None),
               {k: v for k, v in p.record("", stamp).items() if k != "Id"}]
    with respx.mock() as mock:
        mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
        mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").mock(
            side_effect=lambda request: httpx.Response(200, content=json.dumps(p.query(records), default=str)
                                                       .replace('"1E+7"', "1E+7")))
        result = SalesforceSource("sf", sf_settings()).fetch(None, 10)
    by_id = {r.object_id: r for r in result.records}
    assert by_id["006000000000001AAA"].problem == "Amount is missing on a closed-won opportunity"
    assert by_id["006000000000002AAA"].problem == "CloseDate '05/01/2026' is not a date or date-time"
    assert by_id["006000000000003AAA"].problem is None and by_id["006000000000003AAA"].amount == "1234567.89"
    assert by_id["006000000000004AAA"].amount == "10000000"  # no exponent: the core refuses those
    assert by_id["006000000000005AAA"].problem == "LastStageChangeDate is missing on a closed-won opportunity"
    assert by_id[""].problem == "the record has no Id"
    assert json.loads(by_id["006000000000003AAA"].raw or "")["Amount"] == "1234567.89"


def test_multi_currency_and_the_primary_opportunity_partner(sf_sim: SalesforceSimulator, sf_source,
                                                            sf_drain) -> None:
    sf_sim.clock = at(PAST)
    euro = sf_sim.add_opportunity(StageName="Closed Won", Amount=Decimal("250.5"), CurrencyIsoCode="EUR")
    sf_sim.add_partner(euro, "001000000000777AAA", primary=False)
    sf_sim.add_partner(euro, "001000000000042AAA", primary=True)
    alone = sf_sim.add_opportunity(StageName="Closed Won", Amount=Decimal(90), CurrencyIsoCode="JPY")
    source = sf_source(multi_currency=True, org_currency=None,
                       opportunity={"partner": "opportunity_partner", "reversals": False})
    records = {r.object_id: r for r in sf_drain(source).records}
    assert (records[euro].amount, records[euro].currency, records[euro].partner_id) == ("250.5", "EUR",
                                                                                         "001000000000042AAA")
    assert (records[alone].currency, records[alone].partner_id) == ("JPY", None)


def test_custom_objects_through_the_mapping_table(sf_sim: SalesforceSimulator, sf_source, sf_drain) -> None:
    sf_sim.add_object("MDF_Claim__c", ["Status__c", "Approved_On__c", "Partner__c", "Rep__c", "Amount__c",
                                       "Currency__c", "Campaign__c"])
    sf_sim.clock = at(PAST)
    approved = sf_sim.insert("MDF_Claim__c", Status__c="Approved", Approved_On__c=date(2026, 3, 30),
                             Partner__c="001000000000001AAA", Rep__c="005000000000002AAA", Amount__c=Decimal("800"),
                             Currency__c="EUR", Campaign__c="Spring")
    sf_sim.insert("MDF_Claim__c", Status__c="Draft", Rep__c="005000000000002AAA")
    paid = sf_sim.insert("MDF_Claim__c", Status__c="Paid", Approved_On__c=date(2026, 3, 1), Rep__c="005X",
                         Amount__c=Decimal("10"), Currency__c="EUR")
    mapping = {"object": "MDF_Claim__c", "where": "Status__c IN ('Approved', 'Paid')",
               "event_type_field": "Status__c", "event_type_values": {"Approved": "mdf_claim_approved"},
               "transition_field": "Approved_On__c", "occurred_at_field": "Approved_On__c", "payee_field": "Rep__c",
               "partner_field": "Partner__c", "amount_field": "Amount__c", "currency_field": "Currency__c",
               "attributes": {"campaign": "Campaign__c"}, "deleted_event_type": "mdf_claim_withdrawn"}
    source = sf_source(opportunity={"enabled": False}, objects=[mapping], lookback_seconds=0)
    first = sf_drain(source)
    assert len(first.records) == 1  # Paid is not mapped to an event type, Draft is filtered by the where clause
    claim = first.records[0]
    assert (claim.object_type, claim.object_id, claim.transition, claim.event_type) == (
        "MDF_Claim__c", approved, "mdf_claim_approved:2026-03-30", "mdf_claim_approved")
    assert (claim.payee_id, claim.partner_id, claim.amount, claim.currency) == (
        "005000000000002AAA", "001000000000001AAA", "800.0", "EUR")
    assert claim.attributes == {"campaign": "Spring"} and claim.occurred_at == "2026-03-30"
    assert paid not in {r.object_id for r in first.records}
    sf_sim.clock = at(PAST + timedelta(days=1))
    sf_sim.delete("MDF_Claim__c", approved)
    second = sf_drain(source, first.cursor)
    withdrawn = [r for r in second.records if r.event_type == "mdf_claim_withdrawn"]
    assert keys(withdrawn) == [(approved, "reversed:2026-04-02T12:00:00Z")]


def test_an_unreadable_cursor_starts_again_from_the_beginning(sf_sim: SalesforceSimulator, sf_source,
                                                              sf_drain) -> None:
    won_deals(sf_sim, 3)
    assert len(sf_drain(sf_source(opportunity={"reversals": False}), "not json").records) == 3
