"""A local SIMULATOR of a gift-card provider's REST API, for tests and the quickstart. It is not a provider: it
moves no money, sends no email, and keeps its orders in memory or in a SQLite file of its own.

It speaks the API the ``giftcard`` rail talks to (under ``/api/v2`` by default), with a bearer API key:

* ``GET  /products?country=US&currency=USD`` → ``{"products": [{"id", "name", "currency_codes", "countries":
  [{"abbr"}], "skus": [{"min", "max"}]}]}``
* ``POST /orders`` with ``{"external_id", "payment": {"funding_source_id"}, "reward": {"products", "value":
  {"denomination", "currency_code"}, "recipient": {"name", "email"}, "delivery": {"method"}}}`` → 200 ``{"order":
  {...}}``; the same ``external_id`` again → 201 with the existing order (or 409, ``duplicate_style="conflict"``);
  validation errors → 400/422 ``{"errors": {"message", "payload"}}``; an unfunded order → 402.
* ``GET  /orders?external_id=…`` → ``{"orders": [...], "total_count": n}``; ``GET /orders/<id>`` → ``{"order"}``.

Orders start ``EXECUTED`` (or ``initial_status``; ``PENDING`` orders turn ``EXECUTED`` after
``execute_after_seconds`` if given). Faults are injected per request, queued with :meth:`GiftCardSimulator.plan`
(one consumed per matching request: an order request for the order faults, with a valid key and a JSON body) or
periodic with ``every={"error_after": 3}`` (every 3rd order request). They are faults of the shared
:class:`~payhub.testing.server.FaultServer` the simulator runs on:

==================  ========================================================================================
``latency=S``       the next order request waits S seconds before it is handled
``rate_limit=S``    429 with ``Retry-After: S`` (nothing stored)
``error_before=N``  HTTP N (default 500) before the order is stored
``error_after=N``   the order is stored, then HTTP N (default 500) is answered
``timeout_after=S`` the order is stored, then the answer waits S seconds (the client times out first)
``duplicate``       the order is stored and answered as a duplicate (201 with the order, or 409)
``lookup_error=N``  the next order search answers HTTP N (default 503)
``catalog_error=N`` the next catalog request answers HTTP N (default 503)
==================  ========================================================================================

A control API under ``/_simulator`` (no key) serves tests that run the simulator in another process:
``GET /_simulator/orders``, ``GET /_simulator/requests``, ``POST /_simulator/faults`` ``{"faults": [...]}``,
``POST /_simulator/orders/<id>`` ``{"status": "FAILED"}``.

Run it as a program (it listens on 127.0.0.1 only unless told otherwise; see :mod:`payhub_simulators.cli`)::

    payhub-simulator giftcard --port 8765 --api-key test-key --state /tmp/giftcard-sim.sqlite

Point the ``giftcard`` rail's ``base_url`` at the URL it prints and its ``api_key`` at the key, as at any provider.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from payhub.api import prepare_sqlite_file
from payhub.testing.server import FaultServer, Request, Response, ServerFault
from payhub_simulators.exactjson import dumps, loads

__all__ = ["DEFAULT_PRODUCTS", "Fault", "GiftCardSimulator", "pretty", "stored_orders"]

log = logging.getLogger(__name__)

DEFAULT_PRODUCTS: list[dict[str, Any]] = [
    {"id": "SIM-AMZ-US", "name": "Marketplace gift card (US)", "category": "merchant_card",
     "currency_codes": ["USD"], "countries": [{"abbr": "US"}], "skus": [{"min": 5, "max": 2000}]},
    {"id": "SIM-VISA-NA", "name": "Prepaid card (North America)", "category": "visa_card",
     "currency_codes": ["USD", "CAD"], "countries": [{"abbr": "US"}, {"abbr": "CA"}],
     "skus": [{"min": 1, "max": 5000}]},
    {"id": "SIM-SHOP-EU", "name": "Shopping voucher (euro area)", "category": "merchant_card",
     "currency_codes": ["EUR"], "countries": [{"abbr": c} for c in ("AT", "BE", "DE", "ES", "FR", "IE", "IT", "NL")],
     "skus": [{"min": 1, "max": 1000}]},
    {"id": "SIM-SHOP-GB", "name": "Shopping voucher (UK)", "category": "merchant_card",
     "currency_codes": ["GBP"], "countries": [{"abbr": "GB"}], "skus": [{"min": 1, "max": 1000}]},
    {"id": "SIM-SHOP-JP", "name": "Shopping voucher (Japan)", "category": "merchant_card",
     "currency_codes": ["JPY"], "countries": [{"abbr": "JP"}], "skus": [{"min": 500, "max": 200000}]},
    {"id": "SIM-VISA-INTL", "name": "Prepaid card in USD (international)", "category": "visa_card",
     "currency_codes": ["USD"],
     "countries": [{"abbr": c} for c in ("AT", "BE", "CH", "DE", "ES", "FR", "GB", "IE", "IT", "JP", "NL", "SE")],
     "skus": [{"min": 1, "max": 2000}]},
]

FAULT_KINDS = ("latency", "rate_limit", "error_before", "error_after", "timeout_after", "duplicate", "lookup_error",
               "catalog_error")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault; ``value`` is seconds (latency, rate_limit, timeout_after) or an HTTP status."""

    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, spec: str | Fault) -> Fault:
        if isinstance(spec, Fault):
            return spec
        kind, _, value = spec.partition("=")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
        return cls(kind, float(value) if value.strip() else None)

    def status(self, default: int) -> int:
        return int(self.value) if self.value is not None else default

    def seconds(self, default: float) -> float:
        return self.value if self.value is not None else default


class _ApiError(Exception):
    def __init__(self, status: int, message: str, payload: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.payload = status, message, dict(payload or {})


def _error(status: int, message: str, payload: Mapping[str, Any] | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    return Response.json({"errors": {"message": message, "payload": dict(payload or {})}}, status, headers,
                         dumps=dumps)


class GiftCardSimulator:
    """The simulator: a :class:`FaultServer` on 127.0.0.1 (a free port by default) serving the provider's API."""

    def __init__(self, *, api_key: str = "sim-key", host: str = "127.0.0.1", port: int = 0,
                 state_path: str | Path | None = None, products: Sequence[Mapping[str, Any]] | None = None,
                 funding_sources: Iterable[str] = ("balance",), initial_status: str = "EXECUTED",
                 execute_after_seconds: float | None = None, dedup: bool = True,
                 duplicate_style: str = "existing", latency: float = 0.0, every: Mapping[str, int] | None = None,
                 balance: Mapping[str, Decimal] | None = None, prefix: str = "/api/v2") -> None:
        if duplicate_style not in ("existing", "conflict"):
            raise ValueError("duplicate_style is 'existing' (201 with the order) or 'conflict' (409)")
        periodic = {Fault.parse(kind).kind: n for kind, n in (every or {}).items()}
        self.api_key = api_key
        self.products = [dict(p) for p in (products if products is not None else DEFAULT_PRODUCTS)]
        self.funding_sources = set(funding_sources)
        self.initial_status = initial_status
        self.execute_after_seconds = execute_after_seconds
        self.dedup = dedup
        self.duplicate_style = duplicate_style
        self.latency = latency
        self.balance = dict(balance) if balance is not None else None
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._lock = threading.RLock()
        self.state_path = Path(state_path) if state_path else None
        if self.state_path:  # orders hold recipients' e-mail addresses: 0600 (0640), whatever the umask
            prepare_sqlite_file(self.state_path)
        self._db = sqlite3.connect(str(self.state_path) if self.state_path else ":memory:", check_same_thread=False,
                                   isolation_level=None)
        if self.state_path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS orders (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                external_id TEXT, status TEXT NOT NULL, created REAL NOT NULL, body TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS orders_external_id ON orders (external_id);
        """)
        self.server = FaultServer(host, port, name="giftcard-simulator")
        """The server underneath: its request log and fault plan are the simulator's."""
        p = re.escape(self.prefix)
        self.server.route("*", r"/_simulator/(?P<route>.*)", self._control)
        self.server.route("GET", rf"{p}/products", self._api(self._get_products))
        self.server.route("GET", rf"{p}/orders", self._api(self._search))
        self.server.route("GET", rf"{p}/orders/(?P<id>[^/]+)", self._api(self._get_order))
        self.server.route("POST", rf"{p}/orders", self._api(self._create))
        self.server.route("*", r".*", self._api(self._no_route))
        for kind, n in periodic.items():
            if n > 0:
                self.server.plan(self._server_fault(Fault(kind), every=n))

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """The API root to put in the rail's ``base_url``."""
        return f"{self.server.url}{self.prefix}"

    def start(self) -> GiftCardSimulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        with self._lock:
            self._db.close()

    def __enter__(self) -> GiftCardSimulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------- test API

    def plan(self, *faults: str | Fault) -> None:
        """Queue faults; each matching request consumes the next one of its kind (see the module docstring)."""
        parsed = [Fault.parse(f) for f in faults]
        self.server.plan(*(self._server_fault(f) for f in parsed))

    def orders(self, external_id: str | None = None) -> list[dict[str, Any]]:
        """Every stored order (oldest first), or those under ``external_id``."""
        with self._lock:
            if external_id is None:
                rows = self._db.execute("SELECT id FROM orders ORDER BY seq").fetchall()
            else:
                rows = self._db.execute("SELECT id FROM orders WHERE external_id = ? ORDER BY seq",
                                        (external_id,)).fetchall()
            return [self._order(r[0]) for r in rows]

    def order(self, order_id: str) -> dict[str, Any]:
        """One stored order by its id (KeyError if there is none)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone() is None:
                raise KeyError(order_id)
            return self._order(order_id)

    def order_counts(self) -> Counter[str]:
        """Orders per external_id: paid exactly once means every count is 1."""
        with self._lock:
            return Counter(dict(self._db.execute(
                "SELECT external_id, count(*) FROM orders WHERE external_id IS NOT NULL GROUP BY external_id")))

    def requests(self, method: str | None = None) -> list[dict[str, Any]]:
        """The API requests received since the start, oldest first: method, path (under the prefix), external_id,
        status answered (None if no answer was sent), note."""
        found = []
        for r in self.server.requests:
            if r.path.startswith("/_simulator/") or (method is not None and r.method != method):
                continue
            path = r.path[len(self.prefix) + 1:] if r.path.startswith(self.prefix + "/") else r.path
            found.append({"method": r.method, "path": path, "external_id": _external_id(r), "status": r.status,
                          "note": r.note or (f"simulated {r.fault.label}" if r.fault else "")})
        return found

    def set_status(self, order_id: str, status: str) -> None:
        """Move an order to ``status`` (EXECUTED, FAILED, CANCELED, PENDING…)."""
        with self._lock:
            found = self._db.execute("SELECT body FROM orders WHERE id = ?", (order_id,)).fetchone()
            if found is None:
                raise KeyError(order_id)
            order = loads(found[0])
            order["status"] = status
            self._db.execute("UPDATE orders SET status = ?, body = ? WHERE id = ?", (status, dumps(order), order_id))

    # ----------------------------------------------------------------------------------------- faults

    def _server_fault(self, fault: Fault, every: int | None = None) -> ServerFault:
        """The toolkit's form of a fault: HTTP-level faults are the server's, the others are the order handler's."""
        route = {"lookup_error": ("GET", "orders"), "catalog_error": ("GET", "products")}.get(fault.kind,
                                                                                            ("POST", "orders"))
        path = f"{self.prefix}/{route[1]}"

        def applies(request: Request) -> bool:
            return request.path == path and self._authorized(request) and (
                route[0] == "GET" or _json_body(request) is not None)

        match: dict[str, Any] = {"method": route[0], "path": path, "when": applies, "every": every,
                                 "label": fault.kind}
        if fault.kind == "latency":
            return ServerFault("delay", seconds=fault.seconds(0.5), **match)
        if fault.kind == "rate_limit":
            return ServerFault("status", 429, retry_after=fault.seconds(1.0), body=_error(429, "too many requests"),
                               **match)
        if fault.kind in ("error_before", "lookup_error", "catalog_error"):
            status = fault.status(500 if fault.kind == "error_before" else 503)
            message = {"error_before": "internal error (simulated, nothing stored)",
                       "lookup_error": "order search unavailable (simulated)",
                       "catalog_error": "catalog unavailable (simulated)"}[fault.kind]
            return ServerFault("status", status, body=_error(status, message), **match)
        if fault.kind == "timeout_after":
            return ServerFault("stall", seconds=fault.seconds(5.0), **match)
        return ServerFault("handler", status=fault.status(500), **match)  # error_after, duplicate

    # ----------------------------------------------------------------------------------------- handlers

    def _authorized(self, request: Request) -> bool:
        return request.header("Authorization") == f"Bearer {self.api_key}"

    def _api(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """An API route: the key checked first; an _ApiError answered in the provider's error shape."""

        def serve(request: Request) -> Response:
            try:
                if not self._authorized(request):
                    raise _ApiError(401, "unauthorized: missing or invalid API key")
                return handler(request)
            except _ApiError as exc:
                request.note = exc.message
                headers = {}
                if exc.status == 429:
                    headers["Retry-After"] = f"{exc.payload.pop('retry_after', 1.0):g}"
                return _error(exc.status, exc.message, exc.payload, headers)

        return serve

    def _no_route(self, request: Request) -> Response:
        raise _ApiError(404, f"no route {request.method} {request.path}")

    def _get_products(self, request: Request) -> Response:
        return self._json({"products": self._products(request.arg("country"), request.arg("currency"))})

    def _search(self, request: Request) -> Response:
        orders = self.orders(request.arg("external_id"))
        return self._json({"orders": orders, "total_count": len(orders)})

    def _get_order(self, request: Request) -> Response:
        try:
            return self._json({"order": self.order(request.params["id"])})
        except KeyError:
            raise _ApiError(404, f"order {request.params['id']} not found") from None

    def _json(self, payload: Any, status: int = 200) -> Response:
        return Response.json(payload, status, dumps=dumps)

    def _control(self, request: Request) -> Response:
        route, method = request.params["route"], request.method
        data = loads(request.text()) if request.body else {}
        if method == "GET" and route == "orders":
            return self._json({"orders": self.orders()})
        if method == "GET" and route == "requests":
            return self._json({"requests": self.requests()})
        if method == "POST" and route == "faults":
            self.plan(*data.get("faults", []))
            return self._json({"queued": len(data.get("faults", []))})
        if method == "POST" and route.startswith("orders/"):
            self.set_status(route[7:], str(data["status"]))
            return self._json({"order": self.order(route[7:])})
        return _error(404, f"no control route {method} {route}")

    # ----------------------------------------------------------------------------------------- internals

    def _order(self, order_id: str) -> dict[str, Any]:
        row = self._db.execute("SELECT body, status, created FROM orders WHERE id = ?", (order_id,)).fetchone()
        order: dict[str, Any] = loads(row[0])
        if (row[1] == "PENDING" and self.execute_after_seconds is not None
                and time.time() >= row[2] + self.execute_after_seconds):
            order["status"] = "EXECUTED"
            self._db.execute("UPDATE orders SET status = 'EXECUTED', body = ? WHERE id = ?", (dumps(order), order_id))
        return order

    def _find(self, external_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT id FROM orders WHERE external_id = ? ORDER BY seq LIMIT 1",
                               (external_id,)).fetchone()
        return self._order(row[0]) if row else None

    def _products(self, country: str | None, currency: str | None) -> list[dict[str, Any]]:
        found = []
        for p in self.products:
            countries = {str(c.get("abbr") if isinstance(c, dict) else c).upper() for c in p.get("countries", [])}
            if country and countries and country.upper() not in countries:
                continue
            if currency and currency.upper() not in {str(c).upper() for c in p.get("currency_codes", [])}:
                continue
            found.append(p)
        return found

    def _validate(self, body: Any) -> tuple[str | None, dict[str, Any]]:
        """Check an order request; return (external_id, the new order) or raise _ApiError."""
        if not isinstance(body, dict):
            raise _ApiError(400, "the request body must be a JSON object")
        external_id = body.get("external_id")
        if external_id is not None and (not isinstance(external_id, str) or not external_id or len(external_id) > 128):
            raise _ApiError(400, "external_id must be a non-empty string of at most 128 characters")
        payment, reward = body.get("payment"), body.get("reward")
        if not isinstance(payment, dict) or not payment.get("funding_source_id"):
            raise _ApiError(422, "payment.funding_source_id is required", {"payment": ["funding_source_id"]})
        if payment["funding_source_id"] not in self.funding_sources:
            raise _ApiError(400, f"funding source {payment['funding_source_id']!r} not found")
        if not isinstance(reward, dict):
            raise _ApiError(422, "reward is required", {"reward": ["is missing"]})
        value, recipient = reward.get("value"), reward.get("recipient")
        products = reward.get("products")
        if not isinstance(products, list) or not products:
            raise _ApiError(422, "reward.products is required", {"reward": {"products": ["is missing"]}})
        catalog = {p["id"]: p for p in self.products}
        unknown = [p for p in products if p not in catalog]
        if unknown:
            raise _ApiError(400, f"unknown products: {', '.join(map(str, unknown))}")
        if not isinstance(value, dict) or not isinstance(value.get("denomination"), int | Decimal) \
                or isinstance(value.get("denomination"), bool):
            raise _ApiError(422, "reward.value.denomination must be a number", {"reward": {"value": ["invalid"]}})
        denomination = Decimal(value["denomination"])
        currency = str(value.get("currency_code") or "").upper()
        if denomination <= 0:
            raise _ApiError(400, "reward.value.denomination must be positive")
        if not isinstance(recipient, dict) or not recipient.get("name"):
            raise _ApiError(422, "reward.recipient.name is required", {"reward": {"recipient": ["name"]}})
        email = str(recipient.get("email") or "")
        if not EMAIL.fullmatch(email):
            raise _ApiError(400, f"reward.recipient.email {email!r} is not a valid email address")
        for pid in products:
            product = catalog[pid]
            if currency not in {str(c).upper() for c in product.get("currency_codes", [])}:
                raise _ApiError(400, f"product {pid} is not available in {currency or 'no currency'}")
            skus = product.get("skus") or []
            if skus and not any(Decimal(str(s.get("min", 0))) <= denomination <= Decimal(str(s.get("max", "Infinity")))
                                for s in skus):
                raise _ApiError(400, f"denomination {denomination} is outside the range of product {pid}")
        if self.balance is not None and self.balance.get(currency, Decimal(0)) < denomination:
            raise _ApiError(402, f"insufficient funds in {currency} to fund the order")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        order_id = "ORD" + uuid.uuid4().hex[:12].upper()
        order = {
            "id": order_id, "external_id": external_id, "campaign_id": reward.get("campaign_id"), "created_at": now,
            "status": self.initial_status,
            "payment": {"subtotal": denomination, "total": denomination, "fees": Decimal("0.00")},
            "rewards": [{"id": "RWD" + uuid.uuid4().hex[:12].upper(), "order_id": order_id, "created_at": now,
                         "value": {"denomination": denomination, "currency_code": currency},
                         "products": products, "recipient": {"name": recipient["name"], "email": email},
                         "delivery": {"method": (reward.get("delivery") or {}).get("method", "EMAIL"),
                                      "status": "SCHEDULED"}}],
        }
        return external_id, order

    def _create(self, request: Request) -> Response:
        """POST orders: store the order once per external_id (when deduplicating), then answer as planned."""
        body = _json_body(request)
        if body is None:
            raise _ApiError(400, "the request body is not valid JSON")
        planned = request.fault.label if request.fault else ""
        status = request.fault.status if request.fault else 500
        if self.latency:
            self.server.wait_stopped(self.latency)  # cut short when the simulator stops
        with self._lock:
            external_id, order = self._validate(body)
            existing = self._find(external_id) if external_id and self.dedup else None
            if existing is not None:
                request.note = "duplicate"
                if planned == "error_after":
                    raise _ApiError(status, "internal error (simulated, the order exists)")
                if self.duplicate_style == "conflict":
                    raise _ApiError(409, f"an order with external_id {external_id} already exists",
                                    {"order_id": existing["id"]})
                return self._json({"order": existing}, 201)
            if self.balance is not None:
                currency = order["rewards"][0]["value"]["currency_code"]
                self.balance[currency] -= order["rewards"][0]["value"]["denomination"]
            self._db.execute("INSERT INTO orders (id, external_id, status, created, body) VALUES (?, ?, ?, ?, ?)",
                             (order["id"], external_id, order["status"], time.time(), dumps(order)))
        if planned == "error_after":
            raise _ApiError(status, "internal error (simulated, after the order was stored)")
        if planned == "timeout_after":  # the server holds the answer back
            request.note = "created, answered late"
            return self._json({"order": order})
        if planned == "duplicate":
            request.note = "created, answered as a duplicate"
            if self.duplicate_style == "conflict":
                raise _ApiError(409, f"an order with external_id {external_id} already exists",
                                {"order_id": order["id"]})
            return self._json({"order": order}, 201)
        request.note = "created"
        return self._json({"order": order})


def _json_body(request: Request) -> Any:
    """The body parsed (numbers with a fraction as Decimal), or None if it is empty or not JSON."""
    try:
        return loads(request.text()) if request.body else None
    except ValueError:
        return None


def _external_id(request: Request) -> str | None:
    if request.method == "GET":
        return request.arg("external_id")
    body = _json_body(request)
    found = body.get("external_id") if isinstance(body, dict) else None
    return found if isinstance(found, str) else None


def stored_orders(state_path: str | Path) -> list[dict[str, Any]]:
    """The orders kept in a simulator state file, oldest first, read without starting a server (or changing it)."""
    path = Path(state_path)
    if not path.is_file():
        raise FileNotFoundError(f"no simulator state file at {path}")
    db = sqlite3.connect(str(path))
    try:
        return [loads(row[0]) for row in db.execute("SELECT body FROM orders ORDER BY seq")]
    finally:
        db.close()


def pretty(value: Any, indent: int = 0) -> str:
    """Indented JSON with amounts written exactly as stored (``dumps`` for every scalar)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, Mapping) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {pretty(v, indent + 2)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        return "[\n" + ",\n".join(f"{inner}{pretty(v, indent + 2)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else dumps(value)
