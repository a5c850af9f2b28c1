"""docs/rails/giftcard.md is the provider contract: its JSON examples (fenced ```` ```json <name> ```` blocks) and
its table of status codes are read from the markdown and played through the rail with respx, so the page cannot
drift from what the rail sends and how it reads the answers."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from payhub.api import Outcome, Payee, PayoutInstruction, PermanentRailError, RetryableRailError, UnknownOutcomeError

from payhub_giftcard import GiftCardRail
from payhub_giftcard.client import dumps, loads

DOC = (Path(__file__).resolve().parents[3] / "docs" / "rails" / "giftcard.md").read_text()
BASE = "https://api.giftprovider.example/api/v2"
EXAMPLES: dict[str, Any] = {name: loads(text) for name, text in
                            re.findall(r"^ *```json ([a-z-]+)\n(.*?)^ *```$", DOC, flags=re.MULTILINE | re.DOTALL)}
REQUEST = EXAMPLES["order-request"]
KEY = REQUEST["external_id"]
MESSAGE = "Recipient email is invalid"


def example(name: str) -> Any:
    """A fresh copy of the example ``name`` (tests may change it)."""
    return copy.deepcopy(EXAMPLES[name])


def the_instruction(amount: str | None = None, currency: str | None = None, country: str = "US",
                    key: str = KEY) -> PayoutInstruction:
    """The payout the order-request example is for (or another amount, currency, country or key)."""
    value, recipient = REQUEST["reward"]["value"], REQUEST["reward"]["recipient"]
    who = Payee("p7", recipient["name"], country=country, email=recipient["email"])
    return PayoutInstruction(7, key, who, Decimal(amount) if amount else value["denomination"],
                             currency or value["currency_code"], "payhub payout 7", datetime(2026, 10, 1, tzinfo=UTC))


@pytest.fixture
def api() -> Any:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get("/products").respond(200, text=dumps(EXAMPLES["catalog"]))
        yield mock


@pytest.fixture
def rail(rail_for: Callable[..., GiftCardRail]) -> GiftCardRail:
    return rail_for(BASE)


def posted(api: Any) -> list[Any]:
    return [loads(c.request.content) for c in api.calls if c.request.method == "POST"]


def test_every_example_is_json_and_the_ones_the_tests_use_are_there() -> None:
    assert set(EXAMPLES) == {"catalog", "order-request", "order", "conflict-with-order", "conflict-without-order",
                             "search", "search-empty", "error", "error-list", "error-message", "error-error"}


def test_the_order_request_is_what_the_rail_sends_for_the_catalog_example(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").respond(200, text=dumps(EXAMPLES["order"]))
    [result] = rail.send([the_instruction()])
    assert posted(api) == [REQUEST]
    assert b'"denomination":25.00' in api.calls.last.request.content
    catalog = api.calls[0].request
    assert (catalog.url.path, dict(catalog.url.params)) == ("/api/v2/products", {"country": "US", "currency": "USD"})
    # The order answer: EXECUTED is paid, its id is the reference, the amount matches.
    assert (result.outcome, result.provider_ref, result.reason) == (Outcome.PAID, "ZFRYX3F0LMAD", None)


@pytest.mark.parametrize(("country", "amount", "currency", "product"), [
    ("US", "25.00", "USD", "OKMHM2X2OHYV"), ("US", "2000.01", "USD", "ET0ZVETV5ILN"),
    ("US", "2.00", "USD", "ET0ZVETV5ILN"), ("CA", "10.00", "CAD", "CA-VISA-PREPAID")])
def test_the_documented_catalog_choices(api: Any, rail: GiftCardRail, country: str, amount: str, currency: str,
                                        product: str) -> None:
    assert f"{amount} {currency}" in DOC and f"`{product}`" in DOC
    api.post("/orders").respond(200, text=dumps({"order": {"id": "X", "status": "PENDING"}}))
    [result] = rail.send([the_instruction(amount, currency, country)])
    assert result.outcome == Outcome.ACCEPTED
    assert posted(api)[0]["reward"]["products"] == [product]


def test_no_product_is_rejected_without_an_order(api: Any, rail: GiftCardRail) -> None:
    [result] = rail.send([the_instruction("6000.00")])
    assert result.outcome == Outcome.REJECTED
    assert result.reason == "the provider's catalog has no gift card for US in USD that takes 6000.00"
    assert f"`{result.reason}`" in DOC
    assert posted(api) == []


def status_table(title: str) -> list[tuple[str, str]]:
    """(status cell, outcome cell) of the table under the ``title`` header row."""
    start = DOC.index(f"| {title} |")
    rows = []
    for line in DOC[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        first, outcome = (cell.strip() for cell in line.strip().strip("|").split("|", 1))
        rows.append((first, outcome))
    return rows


@pytest.mark.parametrize(("status", "outcome"), [
    (status, outcome) for first, outcome in status_table("order `status` (any case; `_` reads as a space)")
    for status in re.findall(r"`([A-Z_]+)`", first)] + [("PENDING_APPROVAL", "**ACCEPTED**"), ("", "**ACCEPTED**")])
def test_each_documented_order_status(api: Any, rail: GiftCardRail, status: str, outcome: str) -> None:
    order = example("order")
    order["order"]["status"] = status
    order["order"]["failure_reason"] = "recipient email bounced"
    api.post("/orders").respond(200, text=dumps(order))
    [result] = rail.send([the_instruction()])
    assert outcome.startswith(f"**{result.outcome.name}**")


def test_the_amount_compared_is_the_sum_of_the_rewards_values(api: Any, rail: GiftCardRail) -> None:
    order = example("order")
    order["order"]["rewards"][0]["value"]["denomination"] = Decimal("20.00")
    order["order"]["payment"]["total"] = Decimal("25.00")  # not read
    api.post("/orders").respond(200, text=dumps(order))
    [result] = rail.send([the_instruction()])
    assert result.outcome == Outcome.PAID
    assert result.reason == "the provider's order is for 20.00 USD, the payout for 25.00 USD"
    assert f"`{result.reason}`" in DOC


def test_an_order_under_another_key_is_unknown(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").respond(200, text=dumps(EXAMPLES["order"]))
    [result] = rail.send([the_instruction(key="ph-" + "0" * 32)])
    assert (result.outcome, result.reason) == (Outcome.UNKNOWN, "HTTP 200 without this payout's order")
    assert f"`{result.reason}`" in DOC


def test_a_409_carrying_the_order_is_read_like_a_2xx(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").respond(409, text=dumps(EXAMPLES["conflict-with-order"]))
    search = api.get("/orders")
    [result] = rail.send([the_instruction()])
    assert (result.outcome, result.provider_ref, result.reason) == (Outcome.ACCEPTED, "ZFRYX3F0LMAD", None)
    assert not search.called


def test_a_409_without_the_order_is_followed_by_the_search(api: Any, rail: GiftCardRail) -> None:
    api.post("/orders").respond(409, text=dumps(EXAMPLES["conflict-without-order"]))
    search = api.get("/orders", params={"external_id": KEY}).respond(200, text=dumps(EXAMPLES["search"]))
    [result] = rail.send([the_instruction()])
    assert search.call_count == 1
    assert (result.outcome, result.provider_ref) == (Outcome.REJECTED, "ZFRYX3F0LMAD")
    assert result.reason == "provider order ZFRYX3F0LMAD is FAILED: recipient email bounced"
    assert f"`{result.reason}`" in DOC
    api.get("/orders", params={"external_id": KEY}).respond(200, text=dumps(EXAMPLES["search-empty"]))
    [result] = rail.send([the_instruction()])
    assert (result.outcome, result.reason) == (
        Outcome.UNKNOWN, "the provider reported a duplicate external_id but holds no order under it")


def test_the_search_answer_decides_a_lookup(api: Any, rail: GiftCardRail) -> None:
    search = api.get("/orders", params={"external_id": KEY}).respond(200, text=dumps(EXAMPLES["search"]))
    found = rail.lookup([KEY])
    assert search.call_count == 1
    result = found[KEY]
    assert result is not None
    assert (result.outcome, result.provider_ref) == (Outcome.REJECTED, "ZFRYX3F0LMAD")
    assert result.reason == "provider order ZFRYX3F0LMAD is FAILED: recipient email bounced"
    # Orders under other keys in the answer do not count; none under the key: never received.
    other = example("search")
    other["orders"][0]["external_id"] = "ph-" + "1" * 32
    api.get("/orders", params={"external_id": KEY}).respond(200, text=dumps(other))
    assert rail.lookup([KEY]) == {KEY: None}
    api.get("/orders", params={"external_id": KEY}).respond(200, text=dumps(EXAMPLES["search-empty"]))
    assert rail.lookup([KEY]) == {KEY: None}


@pytest.mark.parametrize("name", ["error", "error-list", "error-message", "error-error"])
def test_error_messages_are_read_where_documented(api: Any, rail: GiftCardRail, name: str) -> None:
    api.post("/orders").respond(400, text=dumps(EXAMPLES[name]))
    [result] = rail.send([the_instruction()])
    assert (result.outcome, result.reason) == (Outcome.REJECTED, f"refused by the provider (HTTP 400): {MESSAGE}")
    assert f"`{result.reason}`" in DOC


RAISED = {RetryableRailError: "RETRY", UnknownOutcomeError: "UNKNOWN", PermanentRailError: "REJECTED"}
ORDER_STATUSES = [(int(code), re.match(r"\*\*([A-Z]+)\*\*", outcome).group(1))  # type: ignore[union-attr]
                  for first, outcome in status_table("answer to `POST orders`") if outcome.startswith("**")
                  for code in re.findall(r"`(\d{3})`", first)]


def test_the_status_code_table_is_read() -> None:
    assert {code for code, _ in ORDER_STATUSES} == {400, 401, 402, 403, 404, 422, 429, 500, 502, 503, 504}


@pytest.mark.parametrize(("code", "outcome"), ORDER_STATUSES)
def test_each_documented_status_code_of_an_order(api: Any, rail_for: Callable[..., GiftCardRail], code: int,
                                                 outcome: str) -> None:
    rail = rail_for(BASE)
    api.post("/orders").respond(code, text=dumps(EXAMPLES["error"]), headers={"Retry-After": "0"})
    try:
        [result] = rail.send([the_instruction()])
        got = result.outcome.name
    except (RetryableRailError, UnknownOutcomeError, PermanentRailError) as exc:
        got = RAISED[type(exc)]
    assert got == outcome
    assert len(posted(api)) == (1 + rail.settings.rate_limit_retries if code == 429 else 1)


@pytest.mark.parametrize(("failure", "outcome"), [
    (httpx.ConnectError("connection refused"), RetryableRailError),
    (httpx.ReadTimeout("timed out"), UnknownOutcomeError)])
def test_transport_failures_of_an_order(api: Any, rail: GiftCardRail, failure: Exception, outcome: type) -> None:
    api.post("/orders").mock(side_effect=failure)
    with pytest.raises(outcome) as raised:
        rail.send([the_instruction()])
    prefix = "cannot reach the provider: " if outcome is RetryableRailError else "no answer from the provider: "
    assert str(raised.value).startswith(prefix) and f"`{prefix}…`" in DOC


@pytest.mark.parametrize(("code", "body", "raised"), [
    (401, EXAMPLES["error"], PermanentRailError), (503, EXAMPLES["error"], RetryableRailError),
    (200, {"items": []}, RetryableRailError)])
def test_catalog_answers_other_than_a_product_list(rail: GiftCardRail, code: int, body: Any,
                                                   raised: type) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as api:
        api.get("/products").respond(code, text=dumps(body))
        orders = api.post("/orders")
        with pytest.raises(raised):
            rail.send([the_instruction()])
        assert not orders.called
