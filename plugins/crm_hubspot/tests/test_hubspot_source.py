"""The source against the HubSpot simulator: windows, keyset paging, the 10,000 cap, reversals, mapping."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhub_simulators.hubspot import HubSpotSimulator, iso

from payhub.api import PermanentSourceError, SourceRecord, TransientSourceError
from payhub_hubspot import HubSpotSettings, HubSpotSource
from payhub_hubspot.source import BATCH_READ_PATH, SEARCH_PATH, Cursor

HOUR = 3_600_000
Drain = Callable[..., tuple[list[SourceRecord], str | None]]
Keys = Callable[[list[SourceRecord]], list[tuple[str, str]]]


def won_ids(records: list[SourceRecord]) -> list[str]:
    return sorted((r.object_id for r in records if r.transition.startswith("won:")), key=int)


def search_bodies(sim: HubSpotSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.calls(SEARCH_PATH) if r.status == 200]


# ------------------------------------------------------------------------------------------------ search


def test_search_request_shape(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    now = sim.now_ms()
    for n in range(7):
        sim.add_deal(at_ms=now - HOUR + n)
    source = make_source(page_size=3, index_lag_seconds=5, pipelines=["default"])
    before = sim.now_ms()
    records, _ = drain(source)
    assert len(records) == 7
    bodies = search_bodies(sim)
    first, second = bodies[0], bodies[1]
    filters = first["filterGroups"][0]["filters"]
    assert filters[0] == {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(source.start_ms)}
    assert filters[1]["propertyName"] == "hs_lastmodifieddate" and filters[1]["operator"] == "LT"
    assert int(filters[1]["value"]) <= before - 5000 + 1000  # never past the sync start minus the lag
    # No pipeline filter: a deal won in "default" and moved to another pipeline is still read, to be reversed.
    assert [f for f in filters if f["propertyName"] == "pipeline"] == []
    assert first["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
    assert first["properties"] == ["hs_object_id", "hs_lastmodifieddate"] and first["limit"] == 3
    keyset = [f for f in second["filterGroups"][0]["filters"] if f["propertyName"] == "hs_object_id"]
    assert keyset == [{"propertyName": "hs_object_id", "operator": "GT", "value": records[2].object_id}]
    assert all("after" not in body for body in bodies)  # offset paging is never used
    read = sim.calls(BATCH_READ_PATH)[0].body
    assert read["propertiesWithHistory"] == ["dealstage", "hubspot_owner_id"]
    assert {"amount", "deal_currency_code", "closedate", "dealstage", "pipeline", "hubspot_owner_id"} <= set(
        read["properties"])


def test_multi_page(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    now = sim.now_ms()
    won = [sim.add_deal(at_ms=now - HOUR + n) for n in range(55)]
    for n in range(20):
        sim.add_deal("qualifiedtobuy", at_ms=now - HOUR + n)
    records, _ = drain(make_source(page_size=10), limit=7)
    assert won_ids(records) == won and len(records) == 55
    assert len(search_bodies(sim)) >= 8


def test_short_pages_with_next_are_not_the_end(make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    with HubSpotSimulator(search_per_second=10_000, short_pages=4) as sim:
        now = sim.now_ms()
        won = [sim.add_deal(at_ms=now - HOUR + n) for n in range(50)]
        source = HubSpotSource("hs", HubSpotSettings.model_validate({
            "base_url": sim.url, "access_token": sim.private_token, "start_date": "2020-01-01",
            "company_currency": "USD", "page_size": 10, "index_lag_seconds": 0,
            "search_requests_per_second": 1000, "requests_per_second": 1000}))
        try:
            records, _ = drain(source)
        finally:
            source.close()
        assert won_ids(records) == won
        assert len(sim.calls(SEARCH_PATH)) >= 50 // 6  # pages of 6 deals (10 asked), each with a next page


@pytest.mark.slow  # over 10,000 deals, about 7 s
def test_more_than_10000_deals_in_one_window(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                             drain: Drain) -> None:
    now = sim.now_ms()
    won = [sim.add_deal(at_ms=now - HOUR, owner=None if n % 2 else "101") if n % 50 == 0
           else sim.add_deal("qualifiedtobuy", at_ms=now - HOUR) for n in range(10_300)]
    wanted = [deal for n, deal in enumerate(won) if n % 50 == 0]
    records, _ = drain(make_source(page_size=200, read_chunk_size=100), limit=5000)
    assert won_ids(records) == wanted
    assert not [r for r in sim.requests if r.status == 400]
    # The simulator enforces HubSpot's cap: offset paging past 10,000 is refused.
    answer = httpx.post(f"{sim.url}{SEARCH_PATH}", headers={"Authorization": f"Bearer {sim.private_token}"},
                        json={"limit": 200, "after": "10000", "filterGroups": []})
    assert answer.status_code == 400 and answer.json()["category"] == "VALIDATION_ERROR"


def test_ties_on_the_modification_date(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                       drain: Drain) -> None:
    at = sim.now_ms() - HOUR
    won = [sim.add_deal(at_ms=at) for _ in range(230)]
    records, _ = drain(make_source(page_size=25), limit=40)
    assert won_ids(records) == won and len(records) == 230


def test_record_changing_during_paging(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                       drain: Drain, record_keys: Keys) -> None:
    now = sim.now_ms()
    deals = [sim.add_deal(at_ms=now - HOUR + n) for n in range(40)]
    open_deal = sim.add_deal("contractsent", at_ms=now - HOUR)
    source = make_source(page_size=10)
    first = source.fetch(None, 15)
    assert len(first.records) == 15 and first.more
    position = Cursor.decode(first.cursor, 0).after
    assert position == deals[14]
    # While the window is being read: a deal behind the keyset position is reopened, one ahead of it is
    # reopened too (it leaves the window), and an open deal is won.
    sim.update_deal(deals[3], dealstage="qualifiedtobuy")
    sim.update_deal(deals[30], dealstage="qualifiedtobuy")
    sim.update_deal(open_deal, dealstage="closedwon")
    rest, _ = drain(source, first.cursor, limit=15)
    found = set(record_keys(list(first.records) + rest))
    assert {d for d, t in found if t.startswith("won:")} == set(deals) | {open_deal}
    assert {d for d, t in found if t.startswith("reopened:")} == {deals[3], deals[30]}
    everything = record_keys(list(first.records) + rest)
    repeated = {key for key in everything if everything.count(key) > 1}
    assert repeated == {(deals[3], first.records[3].transition)}  # re-read by the next window: dedup by key


def test_late_indexed_update_is_caught_by_the_lookback(make_source: Callable[..., HubSpotSource],
                                                       drain: Drain) -> None:
    clock = {"now": 1_800_000_000.0}
    with HubSpotSimulator(search_per_second=10_000, index_delay=20, clock=lambda: clock["now"]) as sim:
        early = sim.add_deal(at_ms=sim.now_ms() - HOUR)
        late = sim.add_deal(at_ms=sim.now_ms() - 1000)  # modified 1 s ago, searchable only in 19 s
        settings = HubSpotSettings.model_validate({
            "base_url": sim.url, "access_token": sim.private_token, "start_date": "2020-01-01",
            "company_currency": "USD", "index_lag_seconds": 5, "lookback_seconds": 60,
            "search_requests_per_second": 1000, "requests_per_second": 1000})
        source = HubSpotSource("hs", settings, wall_clock=lambda: clock["now"])
        try:
            records, cursor = drain(source)
            assert won_ids(records) == [early]  # the update is not in the index yet
            clock["now"] += 30
            again, _ = drain(source, cursor)
        finally:
            source.close()
    assert late in won_ids(again)


def test_window_end_is_the_sync_start_minus_the_lag(make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    clock = {"now": 1_800_000_000.0}
    with HubSpotSimulator(search_per_second=10_000, clock=lambda: clock["now"]) as sim:
        inside = sim.add_deal(at_ms=sim.now_ms() - 40_000)
        too_new = sim.add_deal(at_ms=sim.now_ms() - 10_000)
        settings = HubSpotSettings.model_validate({
            "base_url": sim.url, "access_token": sim.private_token, "start_date": "2020-01-01",
            "company_currency": "USD", "index_lag_seconds": 30, "lookback_seconds": 0,
            "search_requests_per_second": 1000, "requests_per_second": 1000})
        source = HubSpotSource("hs", settings, wall_clock=lambda: clock["now"])
        try:
            records, cursor = drain(source)
            assert won_ids(records) == [inside]
            assert Cursor.decode(cursor, 0).start == int(clock["now"] * 1000) - 30_000
            clock["now"] += 60
            records, _ = drain(source, cursor)
        finally:
            source.close()
    assert won_ids(records) == [too_new]


# ------------------------------------------------------------------------------------------------ transitions


def test_reversals_and_rewinning(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain,
                                 record_keys: Keys) -> None:
    now = sim.now_ms()
    a = sim.add_deal(at_ms=now - 10 * HOUR)
    b = sim.add_deal(at_ms=now - 10 * HOUR)
    c = sim.add_deal(at_ms=now - 10 * HOUR)
    source = make_source(reversal_event_type="deal_clawback")
    first, cursor = drain(source)
    assert sorted(record_keys(first)) == sorted([(a, f"won:{now - 10 * HOUR}"), (b, f"won:{now - 10 * HOUR}"),
                                                 (c, f"won:{now - 10 * HOUR}")])
    sim.update_deal(a, dealstage="contractsent", at_ms=now - 5 * HOUR)   # reopened
    sim.update_deal(b, dealstage="closedlost", at_ms=now - 5 * HOUR)     # lost after won
    sim.update_deal(c, dealstage="contractsent", at_ms=now - 5 * HOUR)   # reopened ...
    sim.update_deal(c, dealstage="closedwon", at_ms=now - 4 * HOUR)      # ... and won again
    source2 = make_source(reversal_event_type="deal_clawback")  # a restart reading the same history again
    second, _ = drain(source2)
    by_key = {(r.object_id, r.transition): r for r in second}
    assert (a, f"reopened:{now - 5 * HOUR}") in by_key and (b, f"lost:{now - 5 * HOUR}") in by_key
    assert (c, f"reopened:{now - 5 * HOUR}") in by_key and (c, f"won:{now - 4 * HOUR}") in by_key
    reversal = by_key[(a, f"reopened:{now - 5 * HOUR}")]
    assert reversal.event_type == "deal_clawback" and reversal.amount is None and reversal.problem is None
    assert reversal.attributes["change"] == "reopened" and reversal.attributes["from_stage"] == "closedwon"
    assert isinstance(reversal.occurred_at, datetime) and reversal.occurred_at.timestamp() * 1000 == now - 5 * HOUR
    # Order inside a deal is chronological: won, reopened, won again.
    assert [t for d, t in record_keys(second) if d == c] == [
        f"won:{now - 10 * HOUR}", f"reopened:{now - 5 * HOUR}", f"won:{now - 4 * HOUR}"]


def test_closed_won_is_per_pipeline(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                    drain: Drain) -> None:
    sim.add_pipeline("75e28846-ad0d-4be2-a027-5e1da6590b98", "Partner deals", [
        ("1234567", "Registered", "false", "0.1"),
        ("1234568", "Signed", "true", "1.0"),     # this pipeline's closed-won stage
        ("1234569", "Cancelled", "true", "0.0"),
        ("closedwon", "Looks won, is not", "false", "0.9"),  # ids are per account; see the docs' note
    ])
    now = sim.now_ms()
    pipe = "75e28846-ad0d-4be2-a027-5e1da6590b98"
    signed = sim.add_deal("1234568", pipeline=pipe, at_ms=now - HOUR)
    sim.add_deal("1234567", pipeline=pipe, at_ms=now - HOUR)
    sim.add_deal("1234569", pipeline=pipe, at_ms=now - HOUR)
    records, _ = drain(make_source())
    assert won_ids(records) == [signed]
    forced, _ = drain(make_source(won_stages=["1234567"]))
    assert len([r for r in forced if r.transition.startswith("won:")]) == 1


def test_deleted_deals(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    now = sim.now_ms()
    won = sim.add_deal(at_ms=now - 3 * HOUR)
    lost = sim.add_deal("closedlost", at_ms=now - 3 * HOUR)
    source = make_source(archived_sweep_seconds=0.001)
    first, cursor = drain(source)
    assert won_ids(first) == [won]
    sim.archive_deal(won)
    sim.archive_deal(lost)
    deleted_at = sim.deals[int(won)].archived_ms
    second, _ = drain(source, cursor)
    deleted = [r for r in second if r.transition.startswith("deleted:")]
    assert [(r.object_id, r.transition, r.event_type) for r in deleted] == [
        (won, f"deleted:{deleted_at}", "deal_reversed")]
    assert deleted[0].attributes["change"] == "deleted"


def test_start_date_bounds_transitions(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                       drain: Drain) -> None:
    old = sim.add_deal(at_ms=sim.now_ms() - 48 * HOUR)
    sim.update_deal(old, dealname="renamed after the start date")  # modified now, but won long ago
    new = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    records, _ = drain(make_source(start_date=iso(sim.now_ms() - 24 * HOUR)))
    assert won_ids(records) == [new]


# ------------------------------------------------------------------------------------------------ mapping


def test_mapping(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    now = sim.now_ms()
    acme, other = sim.add_company("Acme"), sim.add_company("Other")
    deal = sim.add_deal(amount="12500.50", currency="EUR", owner="77", at_ms=now - HOUR,
                        closedate="2026-03-31T00:00:00Z", partner_tier="gold")
    sim.associate(deal, acme, primary=True)
    sim.associate(deal, other, primary=False)
    local = sim.add_deal(amount="99", currency=None, owner="78", at_ms=now - HOUR)
    records, _ = drain(make_source(owner_payees={"77": "payee-ana"}, extra_properties=["partner_tier"],
                                   company_currency="usd"))
    first, second = records
    assert (first.object_id, first.event_type, first.payee_id, first.partner_id) == (
        deal, "deal_won", "payee-ana", acme)
    assert (first.amount, first.currency, first.problem) == ("12500.50", "EUR", None)
    assert isinstance(first.occurred_at, datetime) and first.occurred_at.isoformat() == "2026-03-31T00:00:00+00:00"
    assert first.attributes["company_ids"] == sorted([acme, other], key=int)
    assert first.attributes["partner_tier"] == "gold" and first.attributes["dealstage"] == "closedwon"
    assert (second.object_id, second.payee_id, second.currency, second.partner_id) == (local, "78", "USD", None)


@pytest.mark.parametrize(("links", "preference", "expected"), [
    ([("a", True, None)], "primary", "a"),
    ([("a", False, None)], "primary", "a"),                         # the only company
    ([("a", False, None), ("b", False, None)], "primary", None),    # ambiguous: no partner
    ([("a", True, None), ("b", False, "Reseller")], "reseller", "b"),
    ([("a", True, None), ("b", False, "Reseller")], "42", "b"),      # by association type id
])
def test_partner_choice(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain,
                        links: list[tuple[str, bool, str | None]], preference: str, expected: str | None) -> None:
    deal = sim.add_deal(at_ms=sim.now_ms() - HOUR)
    companies = {}
    for name, primary, label in links:
        companies[name] = sim.add_company(name)
        sim.associate(deal, companies[name], primary=primary, label=label, type_id=42)
    records, _ = drain(make_source(partner_association=preference))
    assert records[0].partner_id == (companies[expected] if expected else None)


def test_partner_required_skips_direct_deals_but_not_reversals(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    now = sim.now_ms()
    partner = sim.add_deal(at_ms=now - 3 * HOUR, company=sim.add_company())
    direct = sim.add_deal(at_ms=now - 3 * HOUR)
    sim.update_deal(direct, dealstage="contractsent", at_ms=now - HOUR)
    records, _ = drain(make_source(partner_required=True))
    assert [(r.object_id, r.transition.split(":")[0]) for r in records] == [(partner, "won"), (direct, "reopened")]


def test_malformed_deals_carry_a_problem(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                        drain: Drain) -> None:
    now = sim.now_ms()
    bad_amount = sim.add_deal(amount="abc", at_ms=now - HOUR)
    no_close = sim.add_deal(closedate=None, at_ms=now - HOUR)
    bad_close = sim.add_deal(closedate="next tuesday", at_ms=now - HOUR)
    unmapped = sim.add_deal(owner="999", at_ms=now - HOUR)
    fine = sim.add_deal(at_ms=now - HOUR)
    records, _ = drain(make_source(require_owner_mapping=True, owner_payees={"101": "p-101"}))
    problems = {r.object_id: r.problem for r in records}
    assert problems[bad_amount] == "amount 'abc' is not a decimal number"
    assert problems[no_close] == "closedate is missing"
    assert problems[bad_close] == "closedate 'next tuesday' is not a date"
    assert problems[unmapped] == "owner 999 has no entry in owner_payees"
    assert problems[fine] is None
    no_currency, _ = drain(make_source(company_currency=None, start_date="2020-01-02"))
    assert {r.problem for r in no_currency if r.object_id == fine} == {
        "the deal has no deal_currency_code and company_currency is not set"}


# ------------------------------------------------------------------------------------------------ failures


def test_token_expiry_in_the_middle_of_a_sync(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                                              drain: Drain) -> None:
    now = sim.now_ms()
    won = [sim.add_deal(at_ms=now - HOUR + n) for n in range(60)]
    source = make_source(refresh_token=sim.refresh_token, client_id=sim.client_id, client_secret=sim.client_secret,
                         page_size=10)
    first = source.fetch(None, 20)
    assert sim.token_grants == 1
    sim.expire_tokens()  # every token HubSpot issued runs out mid-sync
    rest, _ = drain(source, first.cursor, limit=20)
    assert sim.token_grants == 2
    assert any(r.status == 401 for r in sim.requests)
    assert won_ids(list(first.records) + rest) == won


def test_token_ttl_shorter_than_the_sync(make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    clock = {"now": 1_800_000_000.0}
    with HubSpotSimulator(search_per_second=10_000, token_ttl=300, clock=lambda: clock["now"]) as sim:
        won = [sim.add_deal(at_ms=sim.now_ms() - HOUR + n) for n in range(30)]
        settings = HubSpotSettings.model_validate({
            "base_url": sim.url, "client_id": sim.client_id, "client_secret": sim.client_secret,
            "refresh_token": sim.refresh_token, "start_date": "2020-01-01", "company_currency": "USD",
            "index_lag_seconds": 0, "page_size": 5, "token_refresh_margin_seconds": 60,
            "search_requests_per_second": 1000, "requests_per_second": 1000})

        def monotonic() -> float:
            clock["now"] += 20  # every look at the clock is 20 s later: tokens (300 s) run out during the sync
            return clock["now"]

        source = HubSpotSource("hs", settings, clock=monotonic, wall_clock=lambda: clock["now"])
        try:
            records, _ = drain(source, limit=5)
        finally:
            source.close()
        assert won_ids(records) == won
        assert sim.token_grants > 2 and not [r for r in sim.requests if r.status == 401]


def test_429_and_5xx_storms(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    now = sim.now_ms()
    won = [sim.add_deal(at_ms=now - HOUR + n, company=sim.add_company()) for n in range(40)]
    sim.fail(SEARCH_PATH, 503, times=3)
    sim.fail(BATCH_READ_PATH, 429, times=2, headers={"Retry-After": "0"})
    sim.fail("/crm/v4/associations", 502, times=2)
    sim.fail("/crm/v3/pipelines", 429, times=1)
    sleeps: list[float] = []
    records, cursor = drain(make_source(page_size=10, sleep=sleeps.append), limit=10)
    assert won_ids(records) == won and len(sleeps) >= 8
    # A storm longer than the retries ends the fetch with a transient error; the same cursor resumes it.
    for n in range(10):
        sim.update_deal(won[n], dealstage="contractsent")
    sim.fail(SEARCH_PATH, 503, times=50)
    source = make_source(page_size=10, sleep=sleeps.append, max_retries=2, lookback_seconds=0)
    with pytest.raises(TransientSourceError, match="503"):
        source.fetch(cursor, 10)
    sim.clear_faults()
    again, _ = drain(source, cursor)
    assert sorted((r.object_id for r in again if r.transition.startswith("reopened:")), key=int) == won[:10]


def test_storm_in_the_middle_of_a_fetch_keeps_what_was_read(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Drain, record_keys: Keys) -> None:
    now = sim.now_ms()
    won = [sim.add_deal(at_ms=now - HOUR + n) for n in range(60)]
    sim.fail(SEARCH_PATH, 503, times=10, skip=3)  # the fourth page fails, and keeps failing
    source = make_source(page_size=10, max_retries=1)
    first = source.fetch(None, 1000)
    assert len(first.records) == 30 and not first.more  # three pages kept, the poll ends
    assert Cursor.decode(first.cursor, 0).after == won[29]
    sim.clear_faults()
    rest, _ = drain(source, first.cursor)
    assert record_keys(list(first.records) + rest) == [(d, f"won:{now - HOUR + n}") for n, d in enumerate(won)]


@pytest.mark.slow  # waits out the search rate limit
def test_client_side_search_limit(make_source: Callable[..., HubSpotSource], drain: Drain) -> None:
    with HubSpotSimulator(search_per_second=5) as sim:  # HubSpot's limit, enforced with 429s
        won = [sim.add_deal(at_ms=sim.now_ms() - HOUR + n) for n in range(24)]
        source = HubSpotSource("hs", HubSpotSettings.model_validate({
            "base_url": sim.url, "access_token": sim.private_token, "start_date": "2020-01-01",
            "company_currency": "USD", "index_lag_seconds": 0, "page_size": 2, "requests_per_second": 1000,
            "search_requests_per_second": 4}))
        try:
            records, _ = drain(source)
        finally:
            source.close()
        assert won_ids(records) == won
        assert len(sim.calls(SEARCH_PATH)) >= 12 and sim.rate_limited == 0


@pytest.mark.slow  # waits out Retry-After
def test_simulator_429_with_retry_after_is_waited_out(make_source: Callable[..., HubSpotSource],
                                                      drain: Drain) -> None:
    with HubSpotSimulator(search_per_second=2, rate_limit_retry_after=0.2) as sim:
        won = [sim.add_deal(at_ms=sim.now_ms() - HOUR + n) for n in range(10)]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            time.sleep(seconds)

        source = HubSpotSource("hs", HubSpotSettings.model_validate({
            "base_url": sim.url, "access_token": sim.private_token, "start_date": "2020-01-01",
            "company_currency": "USD", "index_lag_seconds": 0, "page_size": 2, "requests_per_second": 1000,
            "search_requests_per_second": 1000}), sleep=sleep)  # no client-side limit: HubSpot's 429s pace it
        try:
            records, _ = drain(source)
        finally:
            source.close()
        assert won_ids(records) == won
        assert sim.rate_limited > 0 and slept.count(0.2) == sim.rate_limited


def test_archive_sweep_pages(sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource],
                             drain: Drain, record_keys: Keys) -> None:
    won = [sim.add_deal(at_ms=sim.now_ms() - HOUR) for _ in range(230)]
    source = make_source(archived_sweep_seconds=0.001, lookback_seconds=0, read_chunk_size=30)
    _, cursor = drain(source)
    for deal in won:
        sim.archive_deal(deal)
    deleted, _ = drain(source, cursor, limit=40)
    found = record_keys([r for r in deleted if r.transition.startswith("deleted:")])
    assert sorted(found) == sorted((d, f"deleted:{sim.deals[int(d)].archived_ms}") for d in won)
    # The deleted deals are read again with their history, at most read_chunk_size per request.
    archived_reads = [r.body for r in sim.calls(BATCH_READ_PATH) if r.query.get("archived") == ["true"]]
    assert archived_reads and max(len(body["inputs"]) for body in archived_reads) == 30
    assert all(body["propertiesWithHistory"] == ["dealstage", "hubspot_owner_id"] for body in archived_reads)


def test_missing_scope_is_permanent(make_source: Callable[..., HubSpotSource], sim: HubSpotSimulator) -> None:
    sim.add_deal(at_ms=sim.now_ms() - HOUR, company=sim.add_company())
    sim.scopes = {"crm.objects.deals.read"}
    with pytest.raises(PermanentSourceError, match=r"crm\.objects\.companies\.read"):
        make_source().fetch(None, 10)


def test_foreign_cursor_is_refused(make_source: Callable[..., HubSpotSource]) -> None:
    with pytest.raises(PermanentSourceError, match="not a hubspot cursor"):
        make_source().fetch('{"inode": 1, "offset": 10}', 10)


# ------------------------------------------------------------------------------------------------ settings


def test_settings_validation(make_settings: Callable[..., HubSpotSettings]) -> None:
    with pytest.raises(ValueError, match="missing: client_secret, refresh_token"):
        make_settings(access_token=None, client_id="x")
    with pytest.raises(ValueError, match="not both"):
        make_settings(refresh_token="r", client_id="c", client_secret="s", access_token="t")
    with pytest.raises(ValueError, match="webhook_port is no longer a setting"):
        make_settings(webhook_port=0)
    with pytest.raises(ValueError, match="ISO 4217"):
        make_settings(company_currency="dollars")
    with pytest.raises(ValueError, match="start_date"):
        HubSpotSettings.model_validate({"access_token": "t"})
    assert make_settings(start_date="2026-02-01").start_date.isoformat() == "2026-02-01T00:00:00+00:00"
    secret = make_settings(access_token="pat-very-secret")
    assert "pat-very-secret" not in repr(secret) and "pat-very-secret" not in secret.model_dump_json()
    undocumented = [name for name, f in HubSpotSettings.model_fields.items() if not f.description]
    assert undocumented == []
    docs = (Path(__file__).parents[3] / "docs" / "sources" / "hubspot.md").read_text()
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", docs, re.MULTILINE))
    assert set(HubSpotSettings.model_fields) - listed == set()  # every setting has a row in the settings table
