"""One malformed Salesforce record never costs the others: it is handed to the core as a quarantined record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from payhub_salesforce import SalesforceSource, soql
from payhub_salesforce.source import Mapper

STAMP = "2026-05-01T10:00:00.000+0000"


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59.000-0500", "0001-01-01T00:00:00.000+0500"])
def test_date_times_off_the_calendar_are_unreadable_not_errors(value: str) -> None:
    assert soql.parse_datetime(value) is None


def _fetch(sf_settings: Any, sf_payloads: Any, records: list[dict[str, Any]]) -> Any:
    p = sf_payloads
    with respx.mock() as mock:
        mock.post(f"{p.LOGIN}/services/oauth2/token").respond(200, json=p.token())
        mock.get(f"{p.INSTANCE}{p.DATA}/queryAll").mock(
            side_effect=lambda request: httpx.Response(200, content=json.dumps(p.query(records), default=str)))
        return SalesforceSource("sf", sf_settings(), clock=lambda: datetime(2026, 6, 1, tzinfo=UTC).timestamp()
                                ).fetch(None, 10)


def test_a_record_whose_dates_overflow_is_quarantined_and_the_rest_read(sf_settings: Any, sf_payloads: Any) -> None:
    p = sf_payloads
    records = [p.record("006000000000001AAA", STAMP),
               p.record("006000000000002AAA", "9999-12-31T23:59:59.000-0500",
                        LastStageChangeDate="9999-12-31T23:59:59.000-0500", CloseDate="0001-01-01T00:00:00.000+0500"),
               p.record("006000000000003AAA", STAMP)]
    result = _fetch(sf_settings, sf_payloads, records)
    by_id = {r.object_id: r for r in result.records}
    assert by_id["006000000000001AAA"].problem is None and by_id["006000000000003AAA"].problem is None
    overflowing = by_id["006000000000002AAA"]
    assert overflowing.problem == "CloseDate '0001-01-01T00:00:00.000+0500' is not a date or date-time"
    assert overflowing.transition == "won:9999-12-31T23:59:59.000-0500"


def test_a_record_the_mapping_cannot_read_is_handed_over_quarantined(sf_settings: Any, sf_payloads: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p = sf_payloads
    real = Mapper.opportunity

    def opportunity(self: Mapper, raw: dict[str, Any]) -> Any:
        if raw.get("Id") == "006000000000002AAA":
            raise AttributeError("'list' object has no attribute 'get'")
        return real(self, raw)

    monkeypatch.setattr(Mapper, "opportunity", opportunity)
    records = [p.record(f"00600000000000{i}AAA", STAMP) for i in (1, 2, 3)]
    result = _fetch(sf_settings, sf_payloads, records)
    by_id = {r.object_id: r for r in result.records}
    assert len(result.records) == 3
    broken = by_id["006000000000002AAA"]
    assert broken.problem == (
        "the Opportunity record cannot be read: AttributeError: 'list' object has no attribute 'get'")
    assert (broken.object_type, broken.transition) == ("Opportunity", "")
    assert json.loads(broken.raw or "")["Id"] == "006000000000002AAA"
    assert by_id["006000000000001AAA"].problem is None and by_id["006000000000003AAA"].problem is None
