"""Through payhub's core, against the simulator: the plugin installed and loaded by its entry point, events ingested
and quarantined, rewards calculated exactly once across a stop mid-sync and a restart, reversals clawing back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from payhub_simulators.salesforce import SalesforceSimulator

from payhub.api import to_minor
from payhub.testing import Harness
from payhub_salesforce import SalesforceSource

pytestmark = pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)

PAST = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PAST_KEY = "won:2026-03-01T08:00:00Z"  # a deal won at PAST: its LastStageChangeDate, UTC, to the second


def settings(sim: SalesforceSimulator, extra: str = "") -> str:
    return f"""
        [sources.sf]
        plugin = "salesforce"
        batch_size = 300
        auth = "client_credentials"
        login_url = "{sim.url}"
        client_id = "{sim.client_id}"
        client_secret = "{sim.client_secret}"
        org_currency = "USD"
        page_size = 500
        retry_backoff_seconds = 0
        retry_backoff_max_seconds = 0

        [sources.sf.opportunity]
        where = "PartnerAccountId != null"

        [programs.partner_rebate]
        calculator = "percentage"
        percent = "10"
        pay = "partner"
        event_types = ["deal_won"]
        clawback_event_types = ["deal_reversed"]
        {extra}
    """


def cents(amount: Decimal) -> int:
    """10 % of ``amount`` in cents, rounded half up as payhub rounds."""
    return int((amount * 10).to_integral_value(ROUND_HALF_UP))


def poll(harness: Harness, source: str) -> int:
    """Fetch from ``source`` until it has nothing more ready; return the new events."""
    return harness.ingest(source, batches=None)


def calculate(harness: Harness) -> int:
    """Calculate until no event is left to calculate; return how many were."""
    done = 0
    while n := harness.calculate():
        done += n
    return done


def active_rewards(harness: Harness) -> dict[str, list[int]]:
    """Per opportunity, the amounts (minor units) of the rewards not cancelled, in order."""
    found: dict[str, list[int]] = defaultdict(list)
    object_ids = {e.id: e.object_id for e in harness.events()}
    for reward in harness.rewards():
        if reward.status != "cancelled":
            found[object_ids[reward.event_id]].append(to_minor(reward.amount, reward.currency))
    return found


def test_the_plugin_loads_by_its_entry_point(sf_sim: SalesforceSimulator, sf_harness: Callable[[str], Harness]) -> None:
    rt = sf_harness(settings(sf_sim))
    source = rt.source("sf")
    assert isinstance(source, SalesforceSource)
    assert source.settings.opportunity.where == "PartnerAccountId != null"


def test_a_malformed_record_is_quarantined_and_the_rest_proceeds(sf_sim: SalesforceSimulator,
                                                                 sf_harness: Callable[[str], Harness]) -> None:
    sf_sim.clock = lambda: PAST
    good = [sf_sim.add_opportunity(StageName="Closed Won", Amount=Decimal(500 + n), PartnerAccountId="001P")
            for n in range(3)]
    bad = sf_sim.add_opportunity(StageName="Closed Won", Amount=None, PartnerAccountId="001P")
    sf_sim.clock = lambda: PAST + timedelta(hours=1)
    rt = sf_harness(settings(sf_sim))
    assert poll(rt, "sf") == 4
    stored = {r.object_id: r for r in rt.events()}
    assert {stored[o].status for o in good} == {"ingested"}
    assert stored[bad].status == "quarantined"
    assert stored[bad].reason == "Amount is missing on a closed-won opportunity"
    assert stored[bad].key == f"sf:Opportunity:{bad}:{PAST_KEY}"
    assert calculate(rt) == 3
    assert set(active_rewards(rt)) == set(good)

    sf_sim.update("Opportunity", bad, Amount=Decimal("42.10"))  # fixed in Salesforce: the event is corrected
    poll(rt, "sf")
    fixed = [e for e in rt.events() if e.object_id == bad]
    assert [(e.status, str(e.amount)) for e in fixed] == [("ingested", "42.1")]
    assert len(rt.audit("event.corrected")) == 1
    calculate(rt)
    assert active_rewards(rt)[bad] == [421]


@pytest.mark.slow  # thousands of deals, about 10 s
def test_thousands_of_deals_rewarded_exactly_once_across_a_restart(sf_sim: SalesforceSimulator,
                                                                   sf_harness: Callable[[str], Harness]) -> None:
    sim = sf_sim
    sim.clock = lambda: PAST
    won: dict[str, Decimal] = {}
    for n in range(3000):
        kind = n % 10
        if kind < 7:  # 2100 closed-won partner deals
            amount = Decimal(1000 + n) + Decimal("0.25")
            opp = sim.add_opportunity(Name=f"Deal {n}", StageName="Closed Won", Amount=amount,
                                      PartnerAccountId=f"001{n % 37:012d}AAA")
            won[opp] = amount
        elif kind == 7:  # won without a partner: filtered by the where clause
            sim.add_opportunity(Name=f"Direct {n}", StageName="Closed Won", Amount=Decimal(99))
        elif kind == 8:
            sim.add_opportunity(Name=f"Open {n}", StageName="Negotiation", Amount=Decimal(5),
                                PartnerAccountId="001000000000001AAA")
        else:
            sim.add_opportunity(Name=f"Lost {n}", StageName="Closed Lost", Amount=Decimal(5),
                                PartnerAccountId="001000000000001AAA")
    for n, record in enumerate(sim.tables["Opportunity"].values()):  # many ties: 25 deals per second
        record["SystemModstamp"] = PAST + timedelta(seconds=n // 25)
    sim.clock = lambda: datetime.now(UTC).replace(microsecond=0)
    sim.fail_next(503, 1)
    sim.fail_next(429, 1, retry_after="0")
    sim.on_page = lambda s, offset: s.expire_sessions() if offset == 1000 else None  # a session timeout mid-sync

    first = sf_harness(settings(sim))
    added = first.ingest("sf", batches=3)  # the daemon stops mid-sync...
    (state,) = first.sources()
    assert (added, state.more) == (900, True)
    cursor = state.cursor
    assert cursor is not None and '"sync"' in cursor and "nextRecordsUrl" not in cursor and "01g" not in cursor
    first.close()

    second = sf_harness(settings(sim))  # ...and a new process carries on from the stored cursor
    poll(second, "sf")
    stored = [(e.object_id, e.transition, e.status) for e in second.events()]
    assert len(stored) == len(won) == 2100
    assert {o for o, _, _ in stored} == set(won)
    assert {(t, s) for _, t, s in stored} == {(PAST_KEY, "ingested")}
    assert len(sim.token_requests) >= 3  # first login, the renewal after the 401, the second process's login
    assert calculate(second) == 2100
    paid = active_rewards(second)
    assert paid == {o: [cents(a)] for o, a in won.items()}  # 10 % in cents, once each

    poll(second, "sf")  # polling again changes nothing
    assert len(second.events()) == 2100

    # Deletions, reopened deals and a deal won again: reversals claw back, the new win is rewarded once more.
    ids = list(won)
    deleted, reopened, rewon = ids[:5], ids[5:12], ids[12:15]
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    sim.clock = lambda: later
    for opp in deleted:
        sim.delete("Opportunity", opp)
    for opp in reopened + rewon:
        sim.update("Opportunity", opp, StageName="Negotiation")
    poll(second, "sf")
    sim.clock = lambda: later + timedelta(seconds=5)
    for opp in rewon:
        sim.update("Opportunity", opp, StageName="Closed Won", CloseDate=date(2026, 6, 30))
    third = sf_harness(settings(sim))
    poll(third, "sf")
    calculate(third)
    paid = active_rewards(third)
    assert all(not paid.get(o) for o in deleted + reopened)  # unpaid rewards cancelled by the clawback
    assert {o: paid[o] for o in rewon} == {o: [cents(won[o])] for o in rewon}
    untouched = set(ids) - set(deleted + reopened + rewon)
    assert {o: paid[o] for o in untouched} == {o: [cents(won[o])] for o in untouched}
    reversals = {e.id for e in third.events() if e.event_type == "deal_reversed"}
    reversal_calcs = [c.status for c in third.calculations() if c.event_id in reversals]
    assert len(reversal_calcs) == 15


def keys_of(harness: Harness, opportunity: str) -> list[str]:
    """The transitions stored for ``opportunity``, in the order they were ingested."""
    return [e.transition for e in harness.events() if e.object_id == opportunity]


def last_poll(harness: Harness) -> dict[str, Any]:
    return dict(harness.audit("source.polled")[-1].detail)


def test_edits_while_won_pay_nothing_more_and_a_seen_rewin_is_paid_once(sf_sim: SalesforceSimulator,
                                                                        sf_harness: Callable[[str], Harness]) -> None:
    sim = sf_sim
    sim.clock = lambda: PAST
    deal = sim.add_opportunity(StageName="Closed Won", Amount=Decimal("1000"), PartnerAccountId="001P")
    rt = sf_harness(settings(sim))
    assert poll(rt, "sf") == 1
    assert calculate(rt) == 1
    assert active_rewards(rt) == {deal: [10000]}

    # Edits of a deal that stays won: CloseDate moved, Amount changed, both. No new key, so no second reward.
    sim.clock = lambda: PAST + timedelta(hours=1)
    sim.update("Opportunity", deal, CloseDate=date(2026, 6, 30))
    sim.clock = lambda: PAST + timedelta(hours=2)
    sim.update("Opportunity", deal, Amount=Decimal("2500"))
    sim.clock = lambda: PAST + timedelta(hours=3)
    sim.update("Opportunity", deal, CloseDate=date(2026, 7, 1), Amount=Decimal("3000"))
    assert poll(rt, "sf") == 0
    polled = last_poll(rt)
    assert polled["records"] >= 1 and polled["new"] == 0  # the deal was read again, under its stored key
    assert calculate(rt) == 0
    assert keys_of(rt, deal) == [PAST_KEY]
    assert active_rewards(rt) == {deal: [10000]}  # the reward is not recalculated on the new amount either

    # Reopened (a sync sees it: a reversal claws back the unpaid reward), then won again: a new event, paid once.
    reopened_at, rewon_at = PAST + timedelta(days=1), PAST + timedelta(days=2)
    sim.clock = lambda: reopened_at
    sim.update("Opportunity", deal, StageName="Negotiation")
    assert poll(rt, "sf") == 1
    calculate(rt)
    assert not active_rewards(rt).get(deal)
    sim.clock = lambda: rewon_at
    sim.update("Opportunity", deal, StageName="Closed Won")
    assert poll(rt, "sf") == 1
    calculate(rt)
    assert keys_of(rt, deal) == [PAST_KEY, "reversed:2026-03-02T08:00:00Z", "won:2026-03-03T08:00:00Z"]
    assert active_rewards(rt) == {deal: [30000]}  # 10 % of the amount at the re-win, once

    assert poll(rt, "sf") == 0  # reading it again changes nothing
    assert calculate(rt) == 0
    assert active_rewards(rt) == {deal: [30000]}


def test_a_reopen_and_rewin_no_sync_saw_pays_twice_until_a_later_reversal(
        sf_sim: SalesforceSimulator, sf_harness: Callable[[str], Harness]) -> None:
    """The limit documented in docs/sources/salesforce.md: a reopening no sync saw has no reversal."""
    sim = sf_sim
    sim.clock = lambda: PAST
    deal = sim.add_opportunity(StageName="Closed Won", Amount=Decimal("1000"), PartnerAccountId="001P")
    rt = sf_harness(settings(sim))
    poll(rt, "sf")
    calculate(rt)
    sim.clock = lambda: PAST + timedelta(days=1)
    sim.update("Opportunity", deal, StageName="Negotiation")
    sim.clock = lambda: PAST + timedelta(days=1, minutes=10)
    sim.update("Opportunity", deal, StageName="Closed Won")  # both between two polls
    poll(rt, "sf")
    calculate(rt)
    assert keys_of(rt, deal) == [PAST_KEY, "won:2026-03-02T08:10:00Z"]  # no reversal: the reopening was not seen
    assert active_rewards(rt) == {deal: [10000, 10000]}  # paid twice

    sim.clock = lambda: PAST + timedelta(days=3)
    sim.delete("Opportunity", deal)  # a later reversal takes back everything granted on the deal
    poll(rt, "sf")
    calculate(rt)
    assert not active_rewards(rt).get(deal)
