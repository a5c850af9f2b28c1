"""Starting the credit-note rail does not parse the UBL schema: the first credit note's validation does, once per
process, and validates exactly as before; a schema missing from the installation still stops the rail at start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import respx
from creditnote_helpers import instruction, make_rail
from payhub.api import Outcome

from payhub_creditnote import CreditNoteRail, ubl

BILLING = "https://billing.vendor.example/api/credit-notes"


def test_the_schema_is_parsed_by_the_first_validation_not_at_start(
        rail_factory: Callable[..., CreditNoteRail]) -> None:
    ubl._schema.cache_clear()
    rail = rail_factory()
    assert ubl._schema.cache_info().currsize == 0
    [accepted] = rail.send([instruction(1)])
    assert accepted.outcome == Outcome.ACCEPTED
    assert ubl._schema.cache_info().currsize == 1
    assert ubl.validate(b"<CreditNote/>")  # still checked against the schema
    assert ubl._schema.cache_info().hits >= 1  # parsed once, then kept


def test_a_missing_schema_stops_the_rail_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ubl, "schema_path", lambda: tmp_path / "missing" / ubl.MAIN_SCHEMA)
    with pytest.raises(FileNotFoundError, match="UBL 2.1 CreditNote schema is missing"):
        make_rail(tmp_path)


@respx.mock
def test_the_billing_client_is_made_by_the_first_delivery_with_its_timeouts_and_headers(
        rail_factory: Callable[..., CreditNoteRail]) -> None:
    route = respx.post(BILLING).respond(201)
    rail = rail_factory(delivery_url=BILLING, delivery_token="billing-secret", delivery_timeout_seconds=2,
                        connect_timeout_seconds=1)
    assert rail.billing is not None and rail.billing._http is None
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.ACCEPTED
    http = rail.billing._http
    assert http is not None and http.timeout == httpx.Timeout(2, connect=1)
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer billing-secret"
    assert request.headers["Content-Type"] == "application/xml"
    assert request.headers["User-Agent"] == "payhub-creditnote/0.1"
