"""One malformed HubSpot deal never costs the others: it is handed to the core as a quarantined record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from payhub_simulators.hubspot import HubSpotSimulator, iso

from payhub.api import SourceRecord
from payhub.testing import Harness
from payhub_hubspot import HubSpotSource
from payhub_hubspot.source import parse_time

HOUR = 3_600_000


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "9" * 40])
def test_times_off_the_calendar_are_unreadable_not_errors(value: str) -> None:
    assert parse_time(value) is None


def test_a_deal_whose_close_date_overflows_is_quarantined_with_the_others_stored(
        sim: HubSpotSimulator, hs_harness: Callable[..., Harness]) -> None:
    now = sim.now_ms()
    good = [sim.add_deal(at_ms=now - HOUR + n) for n in range(3)]
    bad = sim.add_deal(closedate="9999-12-31T23:59:59-05:00", at_ms=now - HOUR)
    rt = hs_harness({"batch_size": 2})
    assert rt.ingest("hs", batches=None) == 4
    rows = {r.object_id: r for r in rt.events()}
    assert {d: rows[d].status for d in good} == dict.fromkeys(good, "ingested")
    assert (rows[bad].status, rows[bad].reason) == (
        "quarantined", "closedate '9999-12-31T23:59:59-05:00' is not a date")


def test_a_deal_the_mapping_cannot_read_is_handed_over_quarantined(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch, hs_harness: Callable[..., Harness]) -> None:
    now = sim.now_ms()
    first, broken, last = (sim.add_deal(at_ms=now - HOUR + n) for n in range(3))
    real = HubSpotSource._attributes

    def attributes(self: HubSpotSource, deal: dict[str, Any], companies: list[str]) -> dict[str, Any]:
        if str(deal.get("id")) == broken:
            raise TypeError("unexpected shape of a property")
        return real(self, deal, companies)

    monkeypatch.setattr(HubSpotSource, "_attributes", attributes)
    records: list[SourceRecord] = drain(make_source())[0]
    by_id = {r.object_id: r for r in records}
    assert by_id[first].problem is None and by_id[last].problem is None
    assert by_id[broken].problem == f"HubSpot deal {broken} cannot be read: TypeError: unexpected shape of a property"
    assert f'"id":"{broken}"' in (by_id[broken].raw or "")
    rt = hs_harness()
    assert rt.ingest("hs", batches=None) == 3
    rows = {r.object_id: r for r in rt.events()}
    assert [rows[d].status for d in (first, broken, last)] == ["ingested", "quarantined", "ingested"]
    assert rows[broken].key.startswith("hs:malformed:")


def test_a_deleted_deal_the_sweep_cannot_read_is_quarantined_with_the_others_reversed(
        sim: HubSpotSimulator, make_source: Callable[..., HubSpotSource], drain: Callable[..., Any]) -> None:
    now = sim.now_ms()
    good, broken, odd = (sim.add_deal(at_ms=now - HOUR + n) for n in range(3))
    source = make_source(archived_sweep_seconds=0.001)
    _, cursor = drain(source)
    for deal in (good, broken, odd):
        sim.archive_deal(deal, at_ms=now - 1000)
    answer = {"status": "COMPLETE", "startedAt": iso(now), "completedAt": iso(now), "results": [
        {"id": good, "properties": {"dealstage": "closedwon", "hubspot_owner_id": "101"}, "archived": True,
         "archivedAt": iso(now - 1000), "propertiesWithHistory": {"dealstage": [
             {"value": "closedwon", "timestamp": iso(now - HOUR), "sourceType": "CRM_UI"}]}},
        {"id": broken, "properties": "not an object", "archived": True, "archivedAt": "garbage"},
        {"id": odd, "properties": {"dealstage": "closedwon"}, "propertiesWithHistory": {"dealstage": 5},
         "archived": True, "archivedAt": "2020-01-01T00:00:00Z"},
    ]}
    sim.fail("/crm/v3/objects/deals/batch/read", 200, times=1, body=answer)
    records, _ = drain(source, cursor)
    by_id = {r.object_id: r for r in records}
    assert by_id[good].transition == f"deleted:{now - 1000}" and by_id[good].problem is None
    assert (by_id[broken].problem or "").startswith(f"HubSpot deal {broken} cannot be read: AttributeError")
    assert odd not in by_id  # no usable history, and deleted before the sweep's start: nothing to reverse
