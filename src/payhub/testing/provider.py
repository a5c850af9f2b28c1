"""A rail-shaped payment provider on 127.0.0.1 that misbehaves on demand, and a reference rail that talks to it.

:class:`FaultProvider` serves a small JSON API, modelled on payment providers that deduplicate on an idempotency
key, over a :class:`~payhub.testing.server.FaultServer`, and keeps what it accepted in a
:class:`~payhub.testing.fakes.ProviderLedger` (deduplicating on the key, or not with ``dedup=False``):

* ``POST /v1/payments`` ``{"payments": [{"external_id", "idempotency_key", "amount": "10.00", "currency",
  "payee": {"id", "name"}, "reference"}]}`` → 200 ``{"results": [{"external_id", "status": "accepted" |
  "rejected", "id", "reason"}]}``. ``external_id`` names the payout (lookups find it by it); the provider
  deduplicates on ``idempotency_key``, and a payment without one is never deduplicated (as with providers whose
  idempotency key is optional). A rail sends the payout's idempotency key in both. Amounts are decimal text. More
  than ``max_batch`` payments → 413; a malformed body → 400; a missing or wrong bearer key (when ``api_key`` is
  set) → 401.
* ``GET /v1/payments/<external_id>`` → 200 ``{"payment": {"external_id", "status", "id", "reason"}}`` (the first
  payment under it), or 404 when the provider never accepted one.

``plan(*faults)`` queues words of the kit's fault vocabulary (:data:`payhub.testing.faults.Fault` and
:data:`~payhub.testing.faults.ExtraFault`); each send fault is consumed by the next ``POST /v1/payments``,
``lookup_fails`` and ``lookup_timeout`` by the next lookup:

========================  ==========================================================================================
``retryable``             503, nothing accepted
``permanent``             403 for the whole request, nothing accepted
``reject``                200, each payment ``rejected`` (invalid beneficiary), nothing accepted
``timeout_after_accept``  the payments are accepted, then the answer stalls past the client's read timeout (until
                          :meth:`FaultProvider.release`, the server stops, or ``stall_limit`` seconds)
``timeout_before_accept`` the request stalls likewise and is never handled: nothing accepted
``duplicate``             accepted; every result answered twice, plus one for a key never sent
``hang``                  blocks until released, then accepts and answers
``lookup_fails``          the next lookup answers 503
``error_after_accept``    the payments are accepted, then the request is answered 500
``lookup_timeout``        the next lookup stalls past the client's read timeout (as ``timeout_after_accept``)
``unreachable``           the provider stops listening, so every connection is refused, until
                          :meth:`FaultProvider.release` (it listens again on the same port, with the same plan)
========================  ==========================================================================================

``payments(key)`` counts the payments the provider made under the external id ``key`` (measured here, whatever a
rail says), so :class:`FaultProvider` is a fault controller for :class:`~payhub.testing.contracts.RailContract`.
Use it with ``with FaultProvider() as provider:`` or through the pytest fixture ``payhub_provider``.

:class:`ProviderRail` is a complete httpx rail for this API (settings :class:`ProviderRailSettings`): the reference
that passes the rail contract, and a model for a rail of your own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, cast

import httpx
from pydantic import Field, SecretStr

from payhub.api import (
    Outcome,
    Payee,
    PayoutInstruction,
    PermanentRailError,
    PluginSettings,
    Rail,
    RailCapabilities,
    RailResult,
    RetryableRailError,
    UnknownOutcomeError,
)
from payhub.testing.fakes import Acceptance, ProviderLedger
from payhub.testing.faults import EXTRA_FAULTS, FAULTS, ExtraFault, Fault
from payhub.testing.server import FaultServer, Request, Response, ServerFault

__all__ = ["FaultProvider", "ProviderRail", "ProviderRailSettings"]

PAYMENTS = "/v1/payments"


class FaultProvider:
    """The provider; see the module docstring. Thread-safe."""

    supported: tuple[Fault | ExtraFault, ...] = FAULTS + EXTRA_FAULTS

    def __init__(self, *, dedup: bool = True, max_batch: int = 100, api_key: str | None = None,
                 stall_limit: float = 30.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ledger = ProviderLedger(dedup=dedup)
        self._paid: dict[str, list[Acceptance]] = {}  # by external id
        self._lock = threading.Lock()
        self.max_batch = max_batch
        self.api_key = api_key
        self.stall_limit = stall_limit
        self._host = host
        self.server = self._server(host, port)
        self._earlier: list[Request] = []  # the requests of the servers an ``unreachable`` replaced
        self._unreachable = False

    def _server(self, host: str, port: int) -> FaultServer:
        server = FaultServer(host, port, name="payhub-provider", hang_limit=self.stall_limit)
        server.route("POST", PAYMENTS, lambda request: self._create(request, server))
        server.route("GET", PAYMENTS + r"/(?P<key>[^/]+)", self._find)
        return server

    # ------------------------------------------------------------------------------------------------ control

    @property
    def url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:43121/v1`` (what :class:`ProviderRail`'s ``base_url`` takes)."""
        return f"{self.server.url}/v1"

    def start(self) -> FaultProvider:
        self.server.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._unreachable = False
        self.server.stop()

    def __enter__(self) -> FaultProvider:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def plan(self, *faults: Fault | ExtraFault) -> None:
        """Queue faults; each send fault is consumed by the next payment request, ``lookup_fails`` and
        ``lookup_timeout`` by a lookup; ``unreachable`` takes effect at once and lasts until :meth:`release`."""
        for fault in faults:
            if fault not in self.supported:
                raise ValueError(f"unknown fault {fault!r} (known: {', '.join(self.supported)})")
            if fault == "unreachable":
                self._go_unreachable()
            elif fault == "lookup_timeout":
                self.server.plan(ServerFault("stall", method="GET", path=PAYMENTS, label=fault))
            elif fault == "lookup_fails":
                self.server.plan(ServerFault("status", status=503, method="GET", path=PAYMENTS, label=fault))
            elif fault == "permanent":
                self.server.plan(ServerFault("status", status=403, method="POST", path=PAYMENTS, label=fault,
                                             body=Response.json({"error": "account closed"})))
            elif fault == "timeout_after_accept":
                self.server.plan(ServerFault("stall", method="POST", path=PAYMENTS, label=fault))
            elif fault in ("reject", "duplicate", "timeout_before_accept", "error_after_accept"):
                self.server.plan(ServerFault("handler", method="POST", path=PAYMENTS, label=fault))
            else:  # retryable, hang: the server's own forms
                self.server.plan(cast(Fault, fault), method="POST", path=PAYMENTS)

    def release(self) -> None:
        """End every ``hang`` and stalled answer now, and listen again after ``unreachable``."""
        self.server.release()
        with self._lock:
            if not self._unreachable:
                return
            self._unreachable = False
            old = self.server
            self._earlier.extend(old.requests)
            self.server = self._server(self._host, old.port)
            self.server.plan(*(f for f in old.planned if f.label != "unreachable"))
        self.server.start()

    def _go_unreachable(self) -> None:
        with self._lock:
            if self._unreachable:
                return
            self._unreachable = True
        # connections kept alive are dropped at their next request; closing the listening socket refuses new ones
        self.server.plan(ServerFault("drop", every=1, label="unreachable"))
        self.server.stop()

    def payments(self, key: str) -> int:
        """How many times the provider paid ``key``: 1 is right; with ``dedup=False`` a resend makes it 2."""
        with self._lock:
            return len(self._paid.get(key, ()))

    @property
    def requests(self) -> list[Request]:
        """Every request received, oldest first."""
        with self._lock:
            return self._earlier + self.server.requests

    # ------------------------------------------------------------------------------------------------ the API

    def _refused(self, request: Request) -> Response | None:
        if self.api_key is not None and request.header("Authorization") != f"Bearer {self.api_key}":
            return Response.json({"error": "invalid API key"}, 401)
        return None

    def _create(self, request: Request, server: FaultServer) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        label = request.fault.label if request.fault is not None else ""
        if label == "timeout_before_accept":
            server.wait_stopped(self.stall_limit)  # the client's read timeout expires; nothing is accepted
            return Response.json({"error": "gateway timeout"}, 504)
        try:
            body = request.json()
            items = body["payments"]
            if not isinstance(items, list) or not items:
                raise ValueError("payments must be a non-empty list")
            instructions = [_instruction(item) for item in items]
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            return Response.json({"error": f"malformed request: {exc}"}, 400)
        if len(instructions) > self.max_batch:
            return Response.json({"error": f"at most {self.max_batch} payments per request"}, 413)
        if label == "reject":
            results = [{"external_id": e, "status": "rejected", "reason": "invalid beneficiary"}
                       for e, _ in instructions]
            return Response.json({"results": results})
        results = []
        for external_id, instruction in instructions:
            acceptance = self.ledger.accept(instruction)
            with self._lock:
                paid = self._paid.setdefault(external_id, [])
                if not any(a is acceptance for a in paid):
                    paid.append(acceptance)
            results.append({"external_id": external_id, "status": "accepted", "id": acceptance.provider_ref})
        if label == "duplicate":
            results = results + results + [{"external_id": "ph-never-sent", "status": "accepted", "id": "pay-stray"}]
        if label == "error_after_accept":
            return Response.json({"error": "internal error after the payments were stored"}, 500)
        return Response.json({"results": results})

    def _find(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        key = request.params["key"]
        with self._lock:
            paid = self._paid.get(key)
            acceptance = paid[0] if paid else None
        if acceptance is None:
            return Response.json({"error": "not found"}, 404)
        outcome, reason = self.ledger.outcome(acceptance.key)
        return Response.json({"payment": {"external_id": key, "status": outcome.value,
                                          "id": acceptance.provider_ref, "reason": reason}})


def _instruction(item: Any) -> tuple[str, PayoutInstruction]:
    """(external id, the payment as the ledger keeps it: under its idempotency key, or a fresh one without)."""
    external_id, key = item["external_id"], item.get("idempotency_key")
    if not isinstance(external_id, str) or not external_id:
        raise ValueError("external_id must be text")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError("idempotency_key must be text")
    if not isinstance(item["amount"], str):
        raise ValueError("amount must be decimal text")
    payee = item.get("payee") or {}
    return external_id, PayoutInstruction(
        0, key or f"no-key-{uuid.uuid4().hex}", Payee(str(payee.get("id", "")), str(payee.get("name", ""))),
        Decimal(item["amount"]), str(item["currency"]), str(item.get("reference", "")), datetime.now(UTC))


# ---------------------------------------------------------------------------------------------- the reference rail


class ProviderRailSettings(PluginSettings):
    """Settings of a :class:`ProviderRail` section."""

    base_url: str = Field(description="The API root, e.g. http://127.0.0.1:43121/v1 (FaultProvider.url).")
    api_key: SecretStr | None = Field(None, description="Bearer key, when the provider asks for one.")
    http_timeout_seconds: float = Field(10.0, gt=0, le=600, description="Read timeout of each request.")
    connect_timeout_seconds: float = Field(5.0, gt=0, le=600, description="Connect timeout of each request.")
    max_batch: int = Field(100, ge=1, le=10_000, description="Most payouts per request (the provider's limit).")


STATUSES = {"accepted": Outcome.ACCEPTED, "paid": Outcome.PAID, "rejected": Outcome.REJECTED,
            "returned": Outcome.RETURNED}


class ProviderRail(Rail):
    """Pays through a :class:`FaultProvider` (or any provider with its API): one request per batch, the idempotency
    key in each payment, answers mapped at this boundary. Connection failures before sending are retryable; a
    timeout or dropped connection after sending, and 5xx other than 503, are unknown; 503 and 429 are retryable
    (the provider refused before accepting); 400, 401, 403 and 413 refuse the batch for good."""

    settings_model = ProviderRailSettings
    settings: ProviderRailSettings

    def __init__(self, name: str, settings: ProviderRailSettings) -> None:
        super().__init__(name, settings)
        headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
        self.client = httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/", headers=headers, trust_env=False,
            timeout=httpx.Timeout(settings.http_timeout_seconds, connect=settings.connect_timeout_seconds))
        self._capabilities = RailCapabilities(lookup=True, reports_status=True, dedup_field="idempotency_key",
                                              max_batch=settings.max_batch)

    @property
    def capabilities(self) -> RailCapabilities:
        return self._capabilities

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        body = {"payments": [self._payment(i) for i in instructions]}
        try:
            response = self.client.post("payments", json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RetryableRailError(f"provider not reached: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise UnknownOutcomeError(f"no answer after sending: {type(exc).__name__}") from exc
        status = response.status_code
        if status in (429, 503):
            raise RetryableRailError(f"provider busy (HTTP {status})")
        if status >= 500:
            raise UnknownOutcomeError(f"provider error after sending (HTTP {status})")
        if status != 200:
            raise PermanentRailError(f"provider refused the request (HTTP {status}): {_error(response)}")
        wanted = {i.idempotency_key for i in instructions}
        results: dict[str, RailResult] = {}
        for item in _json(response).get("results") or []:
            key = item.get("external_id")
            if key in wanted and key not in results:  # the provider may repeat itself or answer other keys
                results[key] = _result(key, item)
        return list(results.values())

    def _payment(self, instruction: PayoutInstruction) -> dict[str, Any]:
        """One payment of the request body; the idempotency key is both the payout's id and the dedup key."""
        i = instruction
        return {"external_id": i.idempotency_key, "idempotency_key": i.idempotency_key, "amount": str(i.amount),
                "currency": i.currency, "payee": {"id": i.payee.id, "name": i.payee.name}, "reference": i.reference}

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        found: dict[str, RailResult | None] = {}
        for key in keys:
            try:
                response = self.client.get(f"payments/{key}")
            except httpx.HTTPError as exc:
                raise RetryableRailError(f"lookup failed: {type(exc).__name__}") from exc
            if response.status_code == 404:
                found[key] = None
            elif response.status_code == 200:
                found[key] = _result(key, _json(response).get("payment") or {})
            else:
                raise RetryableRailError(f"lookup failed (HTTP {response.status_code}): {_error(response)}")
        return found

    def close(self) -> None:
        self.client.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(response: httpx.Response) -> str:
    return str(_json(response).get("error") or response.text[:200])


def _result(key: str, item: dict[str, Any]) -> RailResult:
    outcome = STATUSES.get(str(item.get("status")), Outcome.UNKNOWN)
    reason = item.get("reason")
    return RailResult(key, outcome, str(item["id"]) if item.get("id") else None, str(reason) if reason else None)
