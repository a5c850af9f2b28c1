"""The ``giftcard`` rail: each payout becomes one gift-card order at the provider, keyed by its idempotency key.

``send`` places one order per instruction with ``external_id`` = the payout's idempotency key, the payee's email
and name as recipient, and a product chosen from the provider's catalog for the payee's country and the payout
currency. What each answer means:

==============================================  ===========================================================
provider answer                                 outcome
==============================================  ===========================================================
2xx with the order                              from the order's status: PENDING… → ACCEPTED, EXECUTED → PAID,
                                                FAILED / CANCELED → REJECTED
duplicate ``external_id`` (the existing order   the same order: its status, as above (never an error)
or 409)
400 / 422 / other 4xx (validation)              REJECTED with the provider's message
402 (account not funded)                        RETRY
429                                             wait ``Retry-After`` (at most ``max_retry_after_seconds``, at
                                                most ``rate_limit_retries`` times), then RETRY
connection never opened                         RETRY (nothing was sent)
5xx, timeout or dropped connection after        UNKNOWN: the core looks the order up by ``external_id`` before
sending                                         anything is sent again
401 / 403                                       the batch is refused (PermanentRailError)
==============================================  ===========================================================

A failure on the first instruction of a call is raised (RetryableRailError, UnknownOutcomeError or
PermanentRailError), since nothing in the call was accepted yet; a failure later in a call answers that instruction
and stops the call, the instructions not sent yet answering RETRY. ``lookup`` searches the provider's orders by
``external_id``: no order means the provider never received the payout.

A provider on a loopback address (127.0.0.1, ::1, localhost: the gift-card simulator of ``payhub-simulators``, for
tests and demos) is called without the environment's proxy settings.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Literal, TypeVar

import httpx
from payhub.api import (
    Amount,
    InvalidRecord,
    Outcome,
    Payee,
    PayoutInstruction,
    PermanentRailError,
    PluginSettings,
    Rail,
    RailCapabilities,
    RailError,
    RailResult,
    RetryableRailError,
    UnknownOutcomeError,
    Url,
    check_currency,
)
from pydantic import Field, SecretStr, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from payhub_giftcard.client import (
    ApiError,
    ApiResponse,
    AuthError,
    GiftCardClient,
    NoAnswer,
    NotSent,
    RateLimited,
    ServerError,
    error_message,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
STATUSES = {
    "EXECUTED": Outcome.PAID,
    "FAILED": Outcome.REJECTED,
    "CANCELED": Outcome.REJECTED,
    "CANCELLED": Outcome.REJECTED,
    "REJECTED": Outcome.REJECTED,
}
"""Provider order statuses with a final meaning; any other status (PENDING, PENDING APPROVAL, CART…) is ACCEPTED."""


class GiftCardSettings(PluginSettings):
    """Settings of a ``[rails.<name>]`` section with ``plugin = "giftcard"``."""

    base_url: Url = Field(
        description="The provider's API root, e.g. https://api.provider.example/api/v2.")
    api_key: SecretStr = Field(
        description="Bearer API key (from the environment: PAYHUB_RAILS__<NAME>__API_KEY).")
    funding_source_id: str = "balance"
    campaign_id: str | None = None
    delivery_method: Literal["EMAIL", "LINK"] = "EMAIL"
    message: str | None = Field(None, description="Message shown to the recipient with the gift card.")
    product_ids: list[str] = Field(default_factory=list,
                                   description="Only these catalog products, in this order of preference.")
    default_country: str | None = Field(None, description="Catalog country for payees without a country.")
    countries: list[str] | None = None
    currencies: list[str] | None = None
    capabilities_from_catalog: bool = Field(
        False, description="Read countries and currencies from the provider's catalog at start-up.")
    max_amounts: dict[str, Amount] = Field(default_factory=dict)
    max_batch: int = Field(50, ge=1, le=500)
    http_timeout_seconds: float = Field(20.0, gt=0, le=600)
    connect_timeout_seconds: float = Field(5.0, gt=0, le=600)
    catalog_ttl_seconds: float = Field(3600.0, ge=0, le=604800)
    rate_limit_retries: int = Field(2, ge=0, le=10)
    max_retry_after_seconds: float = Field(5.0, ge=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("default_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return None if value is None else _country_codes([value])[0]

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _country_codes(value)

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_currency(c) for c in value]

    @field_validator("max_amounts")
    @classmethod
    def _max_amounts(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        checked = {}
        for currency, amount in value.items():
            if amount <= 0:
                raise ValueError(f"{currency}: the largest payout must be positive")
            checked[_currency(currency)] = amount
        return checked


def _country_codes(codes: list[str]) -> list[str]:
    bad = [c for c in codes if not re.fullmatch(r"[A-Za-z]{2}", c)]
    if bad:
        raise ValueError(f"not ISO 3166 alpha-2 country codes: {', '.join(bad)}")
    return [c.upper() for c in codes]


def _currency(code: str) -> str:
    try:
        return check_currency(code)
    except InvalidRecord as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Product:
    """A catalog entry: which countries and currencies it serves and the denominations it takes."""

    id: str
    name: str
    countries: frozenset[str]
    currencies: frozenset[str]
    ranges: tuple[tuple[Decimal | None, Decimal | None], ...]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Product | None:
        if not raw.get("id"):
            return None
        countries = frozenset(str(c.get("abbr") if isinstance(c, dict) else c).upper()
                              for c in raw.get("countries") or [])
        currencies = frozenset(str(c).upper() for c in raw.get("currency_codes") or [])
        ranges = tuple((_decimal(s.get("min")), _decimal(s.get("max")))
                       for s in raw.get("skus") or [] if isinstance(s, dict))
        return cls(str(raw["id"]), str(raw.get("name") or raw["id"]), countries, currencies, ranges)

    def takes(self, country: str, currency: str, amount: Decimal) -> bool:
        if (self.countries and country not in self.countries) or currency not in self.currencies:
            return False
        return not self.ranges or any((low is None or amount >= low) and (high is None or amount <= high)
                                      for low, high in self.ranges)


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


class GiftCardRail(Rail):
    """Pays each payout as one gift-card order, deduplicated by the provider on ``external_id``."""

    settings_model = GiftCardSettings
    settings: GiftCardSettings

    def __init__(self, name: str, settings: GiftCardSettings, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(name, settings)
        self.client = GiftCardClient(settings.base_url, settings.api_key, timeout=settings.http_timeout_seconds,
                                     connect_timeout=settings.connect_timeout_seconds, transport=transport,
                                     trust_env=not _loopback(settings.base_url))
        self._sleep = sleep
        self._lock = threading.Lock()
        self._catalog: dict[tuple[str, str], tuple[float, list[Product]]] = {}
        countries = frozenset(settings.countries) if settings.countries is not None else None
        currencies = frozenset(settings.currencies) if settings.currencies is not None else None
        if settings.capabilities_from_catalog and (countries is None or currencies is None):
            try:
                products = [p for p in map(Product.parse, self._call(self.client.products)) if p is not None]
            except ApiError as exc:
                self.close()
                raise RuntimeError(f"cannot read the provider's catalog: {exc}") from exc
            if settings.product_ids:
                products = [p for p in products if p.id in settings.product_ids]
            countries = countries if countries is not None else frozenset().union(*(p.countries for p in products))
            currencies = (currencies if currencies is not None
                          else frozenset().union(*(p.currencies for p in products)))
        self._capabilities = RailCapabilities(
            lookup=True, reports_status=True, dedup_field="external_id", countries=countries, currencies=currencies,
            max_batch=settings.max_batch, max_amounts=dict(settings.max_amounts))

    @property
    def capabilities(self) -> RailCapabilities:
        return self._capabilities

    # ------------------------------------------------------------------------------------------------ payees

    def check_payee(self, payee: Payee, currency: str) -> str | None:
        email = _email(payee)
        if not email:
            return f"payee {payee.id} has no email for gift-card delivery"
        if not EMAIL.fullmatch(email):
            return f"payee {payee.id} has no valid email for gift-card delivery ({email!r})"
        if not (payee.country or self.settings.default_country):
            return f"payee {payee.id} has no country (the gift-card catalog is per country)"
        return None

    # -------------------------------------------------------------------------------------------------- send

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        results: list[RailResult] = []
        for n, instruction in enumerate(instructions):
            try:
                results.append(self._send_one(instruction))
            except RailError as exc:
                if n == 0:
                    raise  # nothing in this call was accepted: the error is true of every instruction
                outcome = Outcome.UNKNOWN if isinstance(exc, UnknownOutcomeError) else Outcome.RETRY
                results.append(RailResult(instruction.idempotency_key, outcome, reason=exc.reason))
                results += [RailResult(i.idempotency_key, Outcome.RETRY, reason=f"not sent: {exc.reason}")
                            for i in instructions[n + 1:]]
                break
        return results

    def _send_one(self, instruction: PayoutInstruction) -> RailResult:
        key, payee = instruction.idempotency_key, instruction.payee
        problem = self.check_payee(payee, instruction.currency)
        if problem:
            return RailResult(key, Outcome.REJECTED, reason=problem)
        limit = self.settings.max_amounts.get(instruction.currency)
        if limit is not None and instruction.amount > limit:
            return RailResult(key, Outcome.REJECTED, reason=f"{instruction.amount} {instruction.currency} is over "
                              f"this rail's largest payout of {limit}")
        country = payee.country or self.settings.default_country or ""
        product = self._product_for(country, instruction.currency, instruction.amount)
        if product is None:
            return RailResult(key, Outcome.REJECTED, reason=f"the provider's catalog has no gift card for "
                              f"{country} in {instruction.currency} that takes {instruction.amount}")
        reward: dict[str, Any] = {
            "products": [product.id],
            "value": {"denomination": instruction.amount, "currency_code": instruction.currency},
            "recipient": {"name": payee.name, "email": _email(payee)},
            "delivery": {"method": self.settings.delivery_method},
        }
        if self.settings.campaign_id:
            reward["campaign_id"] = self.settings.campaign_id
        if self.settings.message:
            reward["message"] = self.settings.message
        body = {"external_id": key, "payment": {"funding_source_id": self.settings.funding_source_id},
                "reward": reward}
        try:
            response = self._call(lambda: self.client.create_order(body))
        except NotSent as exc:
            raise RetryableRailError(str(exc)) from exc
        except RateLimited as exc:
            raise RetryableRailError(_rate_limited(exc)) from exc
        except AuthError as exc:
            raise PermanentRailError(str(exc)) from exc
        except (NoAnswer, ServerError) as exc:  # the provider may have stored the order before failing
            raise UnknownOutcomeError(str(exc)) from exc
        except ApiError as exc:
            raise UnknownOutcomeError(str(exc)) from exc
        return self._answer(instruction, response)

    def _answer(self, instruction: PayoutInstruction, response: ApiResponse) -> RailResult:
        key, status = instruction.idempotency_key, response.status
        order = response.body.get("order") if isinstance(response.body, dict) else None
        if 200 <= status < 300 or (status == 409 and isinstance(order, dict)):
            if not isinstance(order, dict) or order.get("external_id") not in (None, key):
                return RailResult(key, Outcome.UNKNOWN, reason=f"HTTP {status} without this payout's order")
            return self._result(key, order, instruction)
        if status == 409:  # a duplicate external_id without the order: it is ours, find it
            try:
                orders = self._call(lambda: self.client.find_orders(key))
            except ApiError as exc:
                return RailResult(key, Outcome.UNKNOWN, reason=f"duplicate external_id, lookup failed: {exc}")
            mine = [o for o in orders if o.get("external_id") == key]
            if not mine:
                return RailResult(key, Outcome.UNKNOWN, reason="the provider reported a duplicate external_id "
                                  "but holds no order under it")
            return self._result(key, mine[0], instruction)
        message = error_message(response.body, response.text)
        if status == 402:
            return RailResult(key, Outcome.RETRY, reason=f"the provider account cannot fund the order (HTTP 402): "
                              f"{message}")
        return RailResult(key, Outcome.REJECTED, reason=f"refused by the provider (HTTP {status}): {message}")

    def _result(self, key: str, order: dict[str, Any], instruction: PayoutInstruction | None = None) -> RailResult:
        status = str(order.get("status") or "").upper().replace("_", " ")
        outcome = STATUSES.get(status, Outcome.ACCEPTED)
        ref = str(order["id"]) if order.get("id") is not None else None
        reason = None
        if outcome == Outcome.REJECTED:
            detail = order.get("failure_reason") or order.get("reason")
            reason = f"provider order {ref} is {status}" + (f": {detail}" if detail else "")
        if instruction is not None:
            mismatch = _value_mismatch(order, instruction)
            if mismatch:
                log.error("rail %s: order %s for %s differs from the payout: %s", self.name, ref, key, mismatch)
                reason = f"{reason + '; ' if reason else ''}{mismatch}"
        return RailResult(key, outcome, provider_ref=ref, reason=reason)

    # ------------------------------------------------------------------------------------------------ lookup

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        found: dict[str, RailResult | None] = {}
        for key in keys:
            try:
                orders = self._call(partial(self.client.find_orders, key))
            except ApiError as exc:
                if not found:
                    raise RetryableRailError(f"order search failed: {exc}") from exc
                log.warning("rail %s: order search for %s failed: %s; asking again later", self.name, key, exc)
                return found  # keys left out stay unknown and are asked about again
            mine = [o for o in orders if o.get("external_id") == key]
            if len(mine) > 1:
                log.error("rail %s: the provider holds %d orders under external_id %s", self.name, len(mine), key)
            found[key] = self._result(key, mine[0]) if mine else None
        return found

    def close(self) -> None:
        self.client.close()

    # --------------------------------------------------------------------------------------------- internals

    def _call(self, request: Callable[[], T]) -> T:
        """Run ``request``; on HTTP 429 wait the provider's Retry-After and try again, within the settings' limits."""
        limit = self.settings.max_retry_after_seconds

        def waits(exc: BaseException) -> bool:
            return isinstance(exc, RateLimited) and (exc.retry_after or 0.0) <= limit

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            return min(limit, retry_after if retry_after is not None else 1.0)

        retrying = Retrying(retry=retry_if_exception(waits), wait=wait, sleep=self._sleep, reraise=True,
                            stop=stop_after_attempt(self.settings.rate_limit_retries + 1))
        return retrying(request)

    def _product_for(self, country: str, currency: str, amount: Decimal) -> Product | None:
        products = self._products(country, currency)
        candidates = [p for p in products if p.takes(country, currency, amount)]
        if self.settings.product_ids:
            order = {pid: n for n, pid in enumerate(self.settings.product_ids)}
            candidates = sorted((p for p in candidates if p.id in order), key=lambda p: order[p.id])
        return candidates[0] if candidates else None

    def _products(self, country: str, currency: str) -> list[Product]:
        now = time.monotonic()
        with self._lock:
            cached = self._catalog.get((country, currency))
        if cached and cached[0] > now:
            return cached[1]
        try:
            raw = self._call(lambda: self.client.products(country, currency))
        except RateLimited as exc:
            raise RetryableRailError(f"catalog: {_rate_limited(exc)}") from exc
        except AuthError as exc:
            raise PermanentRailError(str(exc)) from exc
        except ApiError as exc:  # no order was sent yet
            raise RetryableRailError(f"cannot read the provider's catalog for {country} {currency}: {exc}") from exc
        products = [p for p in map(Product.parse, raw) if p is not None]
        with self._lock:
            self._catalog[(country, currency)] = (now + self.settings.catalog_ttl_seconds, products)
        return products


def _loopback(url: str) -> bool:
    """True when ``url``'s host is this machine (a local simulator): no proxy may stand in between."""
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _email(payee: Payee) -> str:
    return (payee.email or payee.details.get("email") or "").strip()


def _rate_limited(exc: RateLimited) -> str:
    after = f", Retry-After {exc.retry_after:g}s" if exc.retry_after is not None else ""
    return f"{exc}{after}"


def _value_mismatch(order: dict[str, Any], instruction: PayoutInstruction) -> str | None:
    """Why the provider's order is not for this payout's amount and currency, or None when it is (or unsaid)."""
    rewards = [r for r in order.get("rewards") or [] if isinstance(r, dict)]
    values: list[dict[str, Any]] = [r["value"] for r in rewards if isinstance(r.get("value"), dict)]
    if not values:
        return None
    total = sum((_decimal(v.get("denomination")) or Decimal(0) for v in values), Decimal(0))
    currencies = {str(v.get("currency_code") or "").upper() for v in values}
    if total != instruction.amount or currencies != {instruction.currency}:
        shown = ", ".join(sorted(currencies))
        return f"the provider's order is for {total} {shown}, the payout for {instruction.amount} " \
               f"{instruction.currency}"
    return None
