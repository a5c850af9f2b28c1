"""Delivery to a billing system over HTTP (respx): idempotent by document number; a credit note once issued is never
answered RETRY, so failures after issuing are unknown outcomes that ``lookup`` resolves by delivering again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from creditnote_helpers import instruction
from payhub.api import Outcome, RetryableRailError

from payhub_creditnote import CreditNoteRail

BILLING = "https://billing.vendor.example/api/credit-notes"
RailFactory = Callable[..., CreditNoteRail]


@pytest.fixture
def rail(rail_factory: RailFactory) -> CreditNoteRail:
    return rail_factory(delivery_url=BILLING, delivery_token="billing-secret", delivery_timeout_seconds=2)


def state(rail: CreditNoteRail, key: str) -> tuple[str, str | None]:
    entry = rail.ledger.get(key)
    assert entry is not None
    return entry.state, entry.detail


@respx.mock
def test_delivered_with_the_document_number_as_idempotency_key(rail: CreditNoteRail) -> None:
    route = respx.post(BILLING).respond(201, headers={"Location": f"{BILLING}/CN-2026-000001"})
    [result] = rail.send([instruction(1)])
    assert (result.outcome, result.provider_ref) == (Outcome.ACCEPTED, "CN-2026-000001")
    request = route.calls.last.request
    assert request.headers["Idempotency-Key"] == "CN-2026-000001"
    assert request.headers["X-Document-Number"] == "1"
    assert request.headers["Authorization"] == "Bearer billing-secret"
    assert request.headers["Content-Type"] == "application/xml"
    assert request.content == rail.path_of("CN-2026-000001").read_bytes()
    assert state(rail, instruction(1).idempotency_key) == ("delivered", f"{BILLING}/CN-2026-000001")
    assert rail.send([instruction(1)]) == [result]  # sent again: answered from the ledger, not delivered again
    assert route.call_count == 1
    assert "billing-secret" not in repr(rail.settings)


@respx.mock
@pytest.mark.parametrize("failure", [httpx.ReadTimeout("timed out"), httpx.Response(503, text="maintenance"),
                                     httpx.ConnectError("refused"), httpx.Response(429, text="slow down")])
def test_a_failed_delivery_is_unknown_and_lookup_delivers_again(rail: CreditNoteRail, failure: Any) -> None:
    route = respx.post(BILLING).mock(side_effect=[failure, httpx.Response(200)])
    [result] = rail.send([instruction(1)])
    assert (result.outcome, result.provider_ref) == (Outcome.UNKNOWN, "CN-2026-000001")
    assert str(result.reason).startswith("credit note CN-2026-000001 issued, delivery to billing failed")
    assert rail.path_of("CN-2026-000001").exists()  # issued and written; only the delivery is pending
    assert state(rail, instruction(1).idempotency_key)[0] == "issued"
    key = instruction(1).idempotency_key
    found = rail.lookup([key])[key]
    assert found is not None and (found.outcome, found.provider_ref) == (Outcome.ACCEPTED, "CN-2026-000001")
    assert route.call_count == 2
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == ["CN-2026-000001"] * 2


@respx.mock
def test_lookup_while_billing_is_down_leaves_the_payout_unknown(rail: CreditNoteRail) -> None:
    respx.post(BILLING).respond(502, text="bad gateway")
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.UNKNOWN
    with pytest.raises(RetryableRailError, match="asking again later"):
        rail.lookup([instruction(1).idempotency_key])
    assert rail.lookup([instruction(2).idempotency_key]) == {instruction(2).idempotency_key: None}


@respx.mock
def test_billing_down_stops_delivery_for_the_rest_of_the_batch(rail: CreditNoteRail) -> None:
    route = respx.post(BILLING).mock(side_effect=httpx.ConnectError("refused"))
    results = rail.send([instruction(1), instruction(2), instruction(3)])
    assert [r.outcome for r in results] == [Outcome.UNKNOWN] * 3
    assert [r.provider_ref for r in results] == ["CN-2026-000001", "CN-2026-000002", "CN-2026-000003"]
    assert "delivery to billing pending" in str(results[2].reason)
    assert route.call_count == 1
    route.mock(side_effect=None, return_value=httpx.Response(200))
    found = rail.lookup([r.idempotency_key for r in results])
    assert [found[r.idempotency_key].outcome for r in results] == [Outcome.ACCEPTED] * 3  # type: ignore[union-attr]


@respx.mock
def test_already_received_counts_as_delivered(rail: CreditNoteRail) -> None:
    respx.post(BILLING).respond(409, text="duplicate document number")
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.ACCEPTED


@respx.mock
def test_a_refused_document_is_rejected_and_its_number_stays_issued(rail: CreditNoteRail) -> None:
    route = respx.post(BILLING).respond(422, text='{"error": "unknown customer r1"}')
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.REJECTED
    assert result.reason == ('billing system refused CN-2026-000001 (HTTP 422): {"error": "unknown customer r1"}; '
                             "credit note CN-2026-000001 stays issued as refused")
    assert state(rail, instruction(1).idempotency_key)[0] == "refused"
    assert rail.send([instruction(1)])[0].outcome == Outcome.REJECTED  # the same key: not delivered again
    assert route.call_count == 1
    [next_one] = rail.send([instruction(2)])
    assert next_one.provider_ref == "CN-2026-000002"  # the refused number is not reused


def test_without_a_billing_system_no_request_is_made(rail_factory: RailFactory) -> None:
    with respx.mock(assert_all_mocked=True) as mock:
        [result] = rail_factory().send([instruction(1)])
        assert result.outcome == Outcome.ACCEPTED and not mock.calls
