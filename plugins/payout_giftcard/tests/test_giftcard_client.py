"""The gift-card rail against a mocked provider (respx), with JSON bodies shaped like the providers' documented
responses: ``{"order": {...}}`` for orders, ``{"orders": [...], "total_count"}`` for searches, ``{"products": [...]}``
for the catalog and ``{"errors": {"message", "payload"}}`` for errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from giftcard_helpers import instruction, payee
from payhub.api import Outcome, PermanentRailError, RetryableRailError, UnknownOutcomeError
from pydantic import SecretStr, ValidationError

from payhub_giftcard import GiftCardRail, GiftCardSettings
from payhub_giftcard.client import dumps, parse_retry_after

BASE = "https://api.giftprovider.example/api/v2"

PRODUCTS = {"products": [
    {"id": "OKMHM2X2OHYV", "name": "Amazon.com", "category": "merchant_card", "currency_codes": ["USD"],
     "countries": [{"abbr": "US"}], "skus": [{"min": 5, "max": 2000}], "images": []},
    {"id": "ET0ZVETV5ILN", "name": "Visa Prepaid Card", "category": "visa_card", "currency_codes": ["USD", "CAD"],
     "countries": [{"abbr": "US"}, {"abbr": "CA"}], "skus": [{"min": 1, "max": 5000}], "images": []},
]}


def order(key: str, status: str = "EXECUTED", amount: str = "25.00", currency: str = "USD",
          order_id: str = "ZFRYX3F0LMAD") -> dict[str, Any]:
    """An order as the provider documents it."""
    return {
        "id": order_id, "external_id": key, "campaign_id": None, "created_at": "2026-10-01T12:00:00.000Z",
        "status": status, "payment": {"subtotal": Decimal(amount), "total": Decimal(amount), "fees": Decimal("0.00")},
        "rewards": [{"id": "GIAOHHLXZTBX", "order_id": order_id, "created_at": "2026-10-01T12:00:00.000Z",
                     "value": {"denomination": Decimal(amount), "currency_code": currency},
                     "delivery": {"method": "EMAIL", "status": "SCHEDULED"},
                     "recipient": {"name": "Partner p1", "email": "p1@example.com"}}],
    }


def body(data: dict[str, Any]) -> str:
    return dumps(data)


@pytest.fixture
def api() -> Any:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get("/products").respond(200, text=body(PRODUCTS))
        yield mock


@pytest.fixture
def rail(rail_for: Callable[..., GiftCardRail]) -> GiftCardRail:
    return rail_for(BASE)


def sent_orders(api: Any) -> list[dict[str, Any]]:
    return [json.loads(c.request.content, parse_float=Decimal) for c in api.calls
            if c.request.method == "POST" and c.request.url.path.endswith("/orders")]


def test_one_order_per_payout_keyed_by_the_idempotency_key(api: Any, rail: GiftCardRail) -> None:
    created = api.post("/orders").respond(200, text=body({"order": order(instruction(1).idempotency_key)}))
    [result] = rail.send([instruction(1)])
    assert (result.outcome, result.provider_ref, result.reason) == (Outcome.PAID, "ZFRYX3F0LMAD", None)
    request = created.calls.last.request
    assert request.headers["Authorization"] == "Bearer sim-test-key"
    assert request.headers["Content-Type"] == "application/json"
    assert b'"denomination":25.00' in request.content  # exact decimal, never a float
    sent = json.loads(request.content, parse_float=Decimal)
    assert sent == {"external_id": instruction(1).idempotency_key, "payment": {"funding_source_id": "balance"},
                    "reward": {"products": ["OKMHM2X2OHYV"],
                               "value": {"denomination": Decimal("25.00"), "currency_code": "USD"},
                               "recipient": {"name": "Partner p1", "email": "p1@example.com"},
                               "delivery": {"method": "EMAIL"}}}
    catalog = api.calls[0].request
    assert (catalog.url.path, dict(catalog.url.params)) == ("/api/v2/products", {"country": "US", "currency": "USD"})


def test_catalog_is_cached_per_country_and_currency(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").mock(side_effect=lambda request: httpx.Response(200, text=body(
        {"order": order(json.loads(request.content)["external_id"])})))
    rail.send([instruction(1), instruction(2)])
    rail.send([instruction(3)])
    assert [c.request.url.path for c in api.calls].count("/api/v2/products") == 1
    rail.send([instruction(4, "30.00", "CAD", payee(country="CA"))])
    assert [c.request.url.path for c in api.calls].count("/api/v2/products") == 2


def test_product_choice_follows_settings_and_denomination_ranges(api: Any,
                                                                 rail_for: Callable[..., GiftCardRail]) -> None:
    api.post("/orders").mock(side_effect=lambda request: httpx.Response(200, text=body(
        {"order": order(json.loads(request.content)["external_id"], amount="3000.00")})))
    preferred = rail_for(BASE, product_ids=["ET0ZVETV5ILN", "OKMHM2X2OHYV"], campaign_id="CAMP1", message="Thanks!")
    preferred.send([instruction(1)])
    assert sent_orders(api)[-1]["reward"]["products"] == ["ET0ZVETV5ILN"]
    assert sent_orders(api)[-1]["reward"]["campaign_id"] == "CAMP1"
    assert sent_orders(api)[-1]["reward"]["message"] == "Thanks!"
    plain = rail_for(BASE)
    [big] = plain.send([instruction(2, "3000.00")])  # above the first product's range, inside the second's
    assert sent_orders(api)[-1]["reward"]["products"] == ["ET0ZVETV5ILN"]
    assert big.outcome == Outcome.PAID
    [none] = plain.send([instruction(3, "9000.00")])
    assert none.outcome == Outcome.REJECTED
    assert none.reason == "the provider's catalog has no gift card for US in USD that takes 9000.00"
    assert len(sent_orders(api)) == 2


@pytest.mark.parametrize(("status", "outcome"), [
    ("EXECUTED", Outcome.PAID), ("PENDING APPROVAL", Outcome.ACCEPTED), ("PENDING", Outcome.ACCEPTED),
    ("CART", Outcome.ACCEPTED), ("FAILED", Outcome.REJECTED), ("CANCELED", Outcome.REJECTED),
])
def test_order_status_is_the_outcome(api: Any, rail: GiftCardRail, status: str, outcome: Outcome) -> None:
    api.post("/orders").respond(200, text=body({"order": order(instruction(1).idempotency_key, status)}))
    [result] = rail.send([instruction(1)])
    assert result.outcome == outcome
    if outcome == Outcome.REJECTED:
        assert result.reason == f"provider order ZFRYX3F0LMAD is {status}"


def test_a_duplicate_external_id_is_the_same_order(api: Any, rail: GiftCardRail) -> None:
    key = instruction(1).idempotency_key
    api.post("/orders").respond(201, text=body({"order": order(key, "PENDING")}))  # "the order already exists"
    [result] = rail.send([instruction(1)])
    assert (result.outcome, result.provider_ref) == (Outcome.ACCEPTED, "ZFRYX3F0LMAD")


def test_a_409_is_resolved_by_finding_the_existing_order(api: Any, rail: GiftCardRail) -> None:
    key = instruction(1).idempotency_key
    api.post("/orders").respond(409, text=body({"errors": {"message": "external_id already used", "payload": {}}}))
    search = api.get("/orders", params={"external_id": key}).respond(
        200, text=body({"orders": [order(key)], "total_count": 1}))
    [result] = rail.send([instruction(1)])
    assert (result.outcome, result.provider_ref) == (Outcome.PAID, "ZFRYX3F0LMAD")
    assert search.called
    search.respond(200, text=body({"orders": [], "total_count": 0}))
    [missing] = rail.send([instruction(1)])
    assert missing.outcome == Outcome.UNKNOWN


def test_another_orders_answer_is_not_taken_for_this_payout(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").respond(200, text=body({"order": order("ph-someone-else")}))
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.UNKNOWN


def test_an_order_for_another_amount_is_reported(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").respond(201, text=body({"order": order(instruction(1).idempotency_key, amount="20.00")}))
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.PAID
    assert result.reason == "the provider's order is for 20.00 USD, the payout for 25.00 USD"


@pytest.mark.parametrize("failure", [httpx.Response(500, text='{"errors": {"message": "boom"}}'),
                                     httpx.Response(502, text="bad gateway"),
                                     httpx.ReadTimeout("timed out"), httpx.RemoteProtocolError("dropped")])
def test_failure_after_sending_is_an_unknown_outcome(api: Any, rail: GiftCardRail, failure: Any) -> None:
    api.post("/orders").mock(side_effect=[failure])
    with pytest.raises(UnknownOutcomeError):
        rail.send([instruction(1), instruction(2)])
    assert len(sent_orders(api)) == 1  # the call stops at the first unknown outcome


def test_a_connection_that_never_opened_is_retryable(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(RetryableRailError, match="cannot reach the provider"):
        rail.send([instruction(1)])


def test_failures_later_in_a_call_answer_per_payout(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").mock(side_effect=[
        httpx.Response(200, text=body({"order": order(instruction(1).idempotency_key)})),
        httpx.Response(503, text="{}")])
    results = rail.send([instruction(1), instruction(2), instruction(3)])
    assert [(r.idempotency_key, r.outcome) for r in results] == [
        (instruction(1).idempotency_key, Outcome.PAID), (instruction(2).idempotency_key, Outcome.UNKNOWN),
        (instruction(3).idempotency_key, Outcome.RETRY)]
    assert results[2].reason is not None and results[2].reason.startswith("not sent: provider error (HTTP 503)")


def test_429_waits_retry_after_then_succeeds(api: Any, rail_for: Callable[..., GiftCardRail]) -> None:
    sleeps: list[float] = []
    rail = rail_for(BASE, sleeps=sleeps)
    api.post("/orders").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "2"}, text='{"errors": {"message": "slow down"}}'),
        httpx.Response(429, headers={"Retry-After": "0.5"}, text="{}"),
        httpx.Response(200, text=body({"order": order(instruction(1).idempotency_key)}))])
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.PAID
    assert sleeps == [2.0, 0.5]


def test_429_beyond_the_wait_limit_is_retryable_with_retry_after(api: Any,
                                                                 rail_for: Callable[..., GiftCardRail]) -> None:
    sleeps: list[float] = []
    rail = rail_for(BASE, sleeps=sleeps, max_retry_after_seconds=5)
    api.post("/orders").respond(429, headers={"Retry-After": "30"}, text='{"errors": {"message": "slow down"}}')
    with pytest.raises(RetryableRailError) as raised:
        rail.send([instruction(1)])
    assert raised.value.reason == "rate limited (HTTP 429): slow down, Retry-After 30s"
    assert sleeps == []
    assert len(sent_orders(api)) == 1


def test_429_repeated_past_the_retries_is_retryable(api: Any, rail_for: Callable[..., GiftCardRail]) -> None:
    sleeps: list[float] = []
    rail = rail_for(BASE, sleeps=sleeps, rate_limit_retries=2)
    api.post("/orders").respond(429, text="{}")  # no Retry-After: one second
    with pytest.raises(RetryableRailError):
        rail.send([instruction(1)])
    assert (sleeps, len(sent_orders(api))) == ([1.0, 1.0], 3)


@pytest.mark.parametrize(("status", "outcome"), [(400, Outcome.REJECTED), (422, Outcome.REJECTED),
                                                 (404, Outcome.REJECTED), (402, Outcome.RETRY)])
def test_validation_errors_reject_with_the_providers_message(api: Any, rail: GiftCardRail, status: int,
                                                             outcome: Outcome) -> None:
    api.post("/orders").respond(status, text=body({"errors": {
        "message": "Recipient email is invalid", "payload": {"reward": {"recipient": {"email": ["is invalid"]}}}}}))
    [result] = rail.send([instruction(1)])
    assert result.outcome == outcome
    assert result.reason is not None and result.reason.endswith(f"(HTTP {status}): Recipient email is invalid")


def test_a_refused_api_key_refuses_the_batch(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").respond(401, text='{"errors": {"message": "Invalid access token"}}')
    with pytest.raises(PermanentRailError, match="refused the API key"):
        rail.send([instruction(1), instruction(2)])


def test_catalog_failure_sends_nothing(rail: GiftCardRail) -> None:
    with respx.mock(base_url=BASE) as api:
        api.get("/products").respond(503, text="{}")
        with pytest.raises(RetryableRailError, match="catalog"):
            rail.send([instruction(1)])
        assert not [c for c in api.calls if c.request.method == "POST"]


def test_lookup_searches_orders_by_external_id(api: Any, rail: GiftCardRail) -> None:
    k1, k2 = instruction(1).idempotency_key, instruction(2).idempotency_key
    api.get("/orders", params={"external_id": k1}).respond(200, text=body(
        {"orders": [order(k1, "FAILED")], "total_count": 1}))
    api.get("/orders", params={"external_id": k2}).respond(200, text=body(
        {"orders": [order("ph-other")], "total_count": 1}))  # a provider that ignored the filter
    found = rail.lookup([k1, k2])
    assert found[k1] is not None and found[k1].outcome == Outcome.REJECTED
    assert found[k2] is None


def test_lookup_failure_raises_or_leaves_keys_out(api: Any, rail: GiftCardRail) -> None:
    k1, k2 = instruction(1).idempotency_key, instruction(2).idempotency_key
    api.get("/orders", params={"external_id": k1}).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RetryableRailError, match="order search failed"):
        rail.lookup([k1, k2])
    api.get("/orders", params={"external_id": k1}).respond(200, text=body({"orders": [], "total_count": 0}))
    api.get("/orders", params={"external_id": k2}).respond(500, text="{}")
    assert rail.lookup([k1, k2]) == {k1: None}  # k2 stays unknown, asked again later


def test_check_payee_needs_an_email_and_a_country(rail: GiftCardRail, rail_for: Callable[..., GiftCardRail]) -> None:
    assert rail.check_payee(payee(), "USD") is None
    no_email = payee(email=None, details={"phone": "x"})
    assert rail.check_payee(no_email, "USD") == "payee p1 has no email for gift-card delivery"
    assert rail.check_payee(payee(email=None, details={"email": "d@example.com"}), "USD") is None  # a detail
    assert rail.check_payee(payee(email="not-an-email"), "USD") == (
        "payee p1 has no valid email for gift-card delivery ('not-an-email')")
    assert rail.check_payee(payee(country=None), "USD") == (
        "payee p1 has no country (the gift-card catalog is per country)")
    assert rail_for(BASE, default_country="US").check_payee(payee(country=None), "USD") is None


def test_a_payee_without_email_is_rejected_without_a_request(api: Any, rail: GiftCardRail) -> None:
    [result] = rail.send([instruction(1, who=payee(email=None))])
    assert result.outcome == Outcome.REJECTED
    assert not api.calls


def test_capabilities_from_settings(rail_for: Callable[..., GiftCardRail]) -> None:
    rail = rail_for(BASE, countries=["us", "ca"], currencies=["usd"], max_amounts={"USD": "500"}, max_batch=20)
    caps = rail.capabilities
    assert (caps.lookup, caps.reports_status, caps.dedup_field) == (True, True, "external_id")
    assert (caps.countries, caps.currencies) == (frozenset({"US", "CA"}), frozenset({"USD"}))
    assert (dict(caps.max_amounts), caps.max_batch) == ({"USD": Decimal("500")}, 20)
    [over] = rail.send([instruction(1, "500.01")])
    assert (over.outcome, over.reason) == (Outcome.REJECTED, "500.01 USD is over this rail's largest payout of 500")


def test_capabilities_from_the_catalog(api: Any, rail_for: Callable[..., GiftCardRail]) -> None:
    caps = rail_for(BASE, capabilities_from_catalog=True).capabilities
    assert (caps.countries, caps.currencies) == (frozenset({"US", "CA"}), frozenset({"USD", "CAD"}))
    assert dict(api.calls[0].request.url.params) == {}


def test_settings_are_checked() -> None:
    good: dict[str, Any] = {"base_url": BASE, "api_key": "secret-value"}
    settings = GiftCardSettings(**good)
    assert "secret-value" not in repr(settings)
    for bad, message in [({"countries": ["USA"]}, "not ISO 3166"), ({"currencies": ["XYZ"]}, "unknown currency"),
                         ({"max_amounts": {"USD": 10.5}}, "float is not exact"),
                         ({"max_amounts": {"USD": "0"}}, "must be positive"),
                         ({"base_url": "ftp://x"}, "not an absolute http"),
                         ({"base_url": "https://user:pw@gift.example"}, "credentials"),
                         ({"surprise": 1}, "Extra inputs")]:
        with pytest.raises(ValidationError, match=message):
            GiftCardSettings(**{**good, **bad})
    with pytest.raises(ValidationError, match="api_key"):
        GiftCardSettings(base_url=BASE)  # type: ignore[call-arg]


def test_json_is_exact_both_ways() -> None:
    assert dumps({"a": Decimal("0.10"), "b": [1, True, None, "x"]}) == '{"a":0.10,"b":[1,true,null,"x"]}'
    with pytest.raises(TypeError, match="amounts must be Decimal"):
        dumps({"a": 0.1})


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_the_secret_is_sent_only_in_the_header(api: Any) -> None:
    rail = GiftCardRail("gift", GiftCardSettings(base_url=BASE, api_key=SecretStr("s3cr3t")))
    api.post("/orders").respond(500, text="{}")
    with pytest.raises(UnknownOutcomeError) as raised:
        rail.send([instruction(1)])
    assert "s3cr3t" not in str(raised.value) and "s3cr3t" not in repr(rail.settings)
    rail.close()
