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
(one consumed per matching request) or periodic with ``every={"error_after": 3}`` (every 3rd order request):

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

Run it as a program (it listens on 127.0.0.1 only unless told otherwise)::

    python -m payhub_giftcard.simulator --port 8765 --api-key test-key --state /tmp/giftcard-sim.sqlite

The ``giftcard`` rail's SIMULATOR mode (``simulator = "<state file>"``) starts it in payhub's own process instead.
``--orders`` prints the orders kept in a state file and exits, without starting a server::

    python -m payhub_giftcard.simulator --state examples/quickstart/giftcard-sim.db --orders
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from payhub.api import prepare_sqlite_file

from payhub_giftcard.client import dumps, loads

__all__ = ["DEFAULT_PRODUCTS", "Fault", "GiftCardSimulator", "main", "stored_orders"]

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
ORDER_FAULTS = ("latency", "rate_limit", "error_before", "error_after", "timeout_after", "duplicate")
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


class GiftCardSimulator:
    """The simulator: an HTTP server on 127.0.0.1 (ephemeral port by default) in a background thread."""

    def __init__(self, *, api_key: str = "sim-key", host: str = "127.0.0.1", port: int = 0,
                 state_path: str | Path | None = None, products: Sequence[Mapping[str, Any]] | None = None,
                 funding_sources: Iterable[str] = ("balance",), initial_status: str = "EXECUTED",
                 execute_after_seconds: float | None = None, dedup: bool = True,
                 duplicate_style: str = "existing", latency: float = 0.0, every: Mapping[str, int] | None = None,
                 balance: Mapping[str, Decimal] | None = None, prefix: str = "/api/v2") -> None:
        if duplicate_style not in ("existing", "conflict"):
            raise ValueError("duplicate_style is 'existing' (201 with the order) or 'conflict' (409)")
        for kind in every or {}:
            Fault.parse(kind)
        self.api_key = api_key
        self.products = [dict(p) for p in (products if products is not None else DEFAULT_PRODUCTS)]
        self.funding_sources = set(funding_sources)
        self.initial_status = initial_status
        self.execute_after_seconds = execute_after_seconds
        self.dedup = dedup
        self.duplicate_style = duplicate_style
        self.latency = latency
        self.every = dict(every or {})
        self.balance = dict(balance) if balance is not None else None
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._faults: deque[Fault] = deque()
        self._lock = threading.RLock()
        self._order_requests = 0
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
            CREATE TABLE IF NOT EXISTS requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, method TEXT, path TEXT,
                external_id TEXT, status INTEGER, note TEXT, at REAL);
        """)
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The API root to put in the rail's ``base_url``."""
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}{self.prefix}"

    def start(self) -> GiftCardSimulator:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="giftcard-simulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
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
        with self._lock:
            self._faults.extend(parsed)

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
        """The requests received, oldest first: method, path, external_id, status answered, note."""
        with self._lock:
            rows = self._db.execute("SELECT method, path, external_id, status, note FROM requests ORDER BY seq")
            return [dict(zip(("method", "path", "external_id", "status", "note"), r, strict=True)) for r in rows
                    if method is None or r[0] == method]

    def set_status(self, order_id: str, status: str) -> None:
        """Move an order to ``status`` (EXECUTED, FAILED, CANCELED, PENDING…)."""
        with self._lock:
            found = self._db.execute("SELECT body FROM orders WHERE id = ?", (order_id,)).fetchone()
            if found is None:
                raise KeyError(order_id)
            order = loads(found[0])
            order["status"] = status
            self._db.execute("UPDATE orders SET status = ?, body = ? WHERE id = ?", (status, dumps(order), order_id))

    # ----------------------------------------------------------------------------------------- internals

    def _take(self, *kinds: str) -> Fault | None:
        with self._lock:
            for n, fault in enumerate(self._faults):
                if fault.kind in kinds:
                    del self._faults[n]
                    return fault
        return None

    def _record(self, method: str, path: str, external_id: str | None, status: int, note: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT INTO requests (method, path, external_id, status, note, at) VALUES "
                             "(?, ?, ?, ?, ?, ?)", (method, path, external_id, status, note, time.time()))

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

    def _periodic(self) -> Fault | None:
        self._order_requests += 1
        for kind, n in self.every.items():
            if n > 0 and self._order_requests % n == 0:
                return Fault.parse(kind)
        return None

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

    def _create(self, body: Any) -> tuple[int, dict[str, Any], str | None, str]:
        """Handle POST orders: (status, response body, external_id, note); raises _ApiError for errors."""
        fault = self._take(*ORDER_FAULTS) or self._periodic()
        if fault and fault.kind == "latency":
            time.sleep(fault.seconds(0.5))
            fault = None
        if self.latency:
            time.sleep(self.latency)
        if fault and fault.kind == "rate_limit":
            raise _ApiError(429, "too many requests", {"retry_after": fault.seconds(1.0)})
        if fault and fault.kind == "error_before":
            raise _ApiError(fault.status(500), "internal error (simulated, nothing stored)")
        with self._lock:
            external_id, order = self._validate(body)
            existing = self._find(external_id) if external_id and self.dedup else None
            if existing is not None:
                note = "duplicate"
                if fault and fault.kind == "error_after":
                    raise _ApiError(fault.status(500), "internal error (simulated, the order exists)")
                if self.duplicate_style == "conflict":
                    raise _ApiError(409, f"an order with external_id {external_id} already exists",
                                    {"order_id": existing["id"]})
                return 201, {"order": existing}, external_id, note
            if self.balance is not None:
                currency = order["rewards"][0]["value"]["currency_code"]
                self.balance[currency] -= order["rewards"][0]["value"]["denomination"]
            self._db.execute("INSERT INTO orders (id, external_id, status, created, body) VALUES (?, ?, ?, ?, ?)",
                             (order["id"], external_id, order["status"], time.time(), dumps(order)))
        if fault and fault.kind == "error_after":
            raise _ApiError(fault.status(500), "internal error (simulated, after the order was stored)")
        if fault and fault.kind == "timeout_after":
            time.sleep(fault.seconds(5.0))
            return 200, {"order": order}, external_id, "created, answered late"
        if fault and fault.kind == "duplicate":
            if self.duplicate_style == "conflict":
                raise _ApiError(409, f"an order with external_id {external_id} already exists",
                                {"order_id": order["id"]})
            return 201, {"order": order}, external_id, "created, answered as a duplicate"
        return 200, {"order": order}, external_id, "created"


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


def _pretty(value: Any, indent: int = 0) -> str:
    """Indented JSON with amounts written exactly as stored (``dumps`` for every scalar)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, Mapping) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_pretty(v, indent + 2)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        return "[\n" + ",\n".join(f"{inner}{_pretty(v, indent + 2)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else dumps(value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (killed, timed out) is normal here; anything else is logged."""
        log.debug("simulator: request from %s ended with an error", client_address, exc_info=True)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 simulator: GiftCardSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("simulator: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        sim = self.server.simulator
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = parts.path
        external_id: str | None = None
        try:
            if path.startswith("/_simulator/"):
                status, body = self._control(method, path[len("/_simulator/"):], raw)
                self._reply(status, body)
                return
            if not path.startswith(sim.prefix + "/"):
                raise _ApiError(404, f"no route {path}")
            route = path[len(sim.prefix) + 1:].rstrip("/")
            if self.headers.get("Authorization") != f"Bearer {sim.api_key}":
                raise _ApiError(401, "unauthorized: missing or invalid API key")
            note = ""
            if method == "GET" and route == "products":
                fault = sim._take("catalog_error")
                if fault:
                    raise _ApiError(fault.status(503), "catalog unavailable (simulated)")
                status, body = 200, {"products": sim._products(query.get("country"), query.get("currency"))}
            elif method == "GET" and route == "orders":
                fault = sim._take("lookup_error")
                if fault:
                    raise _ApiError(fault.status(503), "order search unavailable (simulated)")
                external_id = query.get("external_id")
                with sim._lock:
                    orders = sim.orders(external_id)
                status, body = 200, {"orders": orders, "total_count": len(orders)}
            elif method == "GET" and route.startswith("orders/"):
                with sim._lock:
                    found = sim._db.execute("SELECT id FROM orders WHERE id = ?", (route[7:],)).fetchone()
                    if found is None:
                        raise _ApiError(404, f"order {route[7:]} not found")
                    status, body = 200, {"order": sim._order(found[0])}
            elif method == "POST" and route == "orders":
                try:
                    parsed = loads(raw.decode("utf-8")) if raw else None
                except ValueError:
                    raise _ApiError(400, "the request body is not valid JSON") from None
                if isinstance(parsed, dict) and isinstance(parsed.get("external_id"), str):
                    external_id = parsed["external_id"]
                status, body, external_id, note = sim._create(parsed)
            else:
                raise _ApiError(404, f"no route {method} {path}")
            sim._record(method, route, external_id, status, note)
            self._reply(status, body)
        except _ApiError as exc:
            sim._record(method, path, external_id, exc.status, exc.message)
            headers = {}
            if exc.status == 429:
                headers["Retry-After"] = f"{exc.payload.pop('retry_after', 1.0):g}"
            self._reply(exc.status, {"errors": {"message": exc.message, "payload": exc.payload}}, headers)

    def _control(self, method: str, route: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        sim = self.server.simulator
        data = loads(raw.decode("utf-8")) if raw else {}
        if method == "GET" and route == "orders":
            return 200, {"orders": sim.orders()}
        if method == "GET" and route == "requests":
            return 200, {"requests": sim.requests()}
        if method == "POST" and route == "faults":
            sim.plan(*data.get("faults", []))
            return 200, {"queued": len(data.get("faults", []))}
        if method == "POST" and route.startswith("orders/"):
            sim.set_status(route[7:], str(data["status"]))
            return 200, {"order": sim.order(route[7:])}
        raise _ApiError(404, f"no control route {method} {route}")

    def _reply(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        payload = dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (timeout_after)
            self.close_connection = True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m payhub_giftcard.simulator",
        description="A local SIMULATOR of a gift-card provider's REST API (not a real provider: no money moves).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: an ephemeral port, printed)")
    parser.add_argument("--api-key", default="sim-key", help="the bearer key clients must send (default sim-key)")
    parser.add_argument("--state", help="SQLite file that keeps the orders across restarts (default: in memory)")
    parser.add_argument("--catalog", help="JSON file with a list of products (default: a built-in catalog)")
    parser.add_argument("--prefix", default="/api/v2", help="path prefix of the API (default /api/v2)")
    parser.add_argument("--initial-status", default="EXECUTED", help="status of new orders (EXECUTED, PENDING)")
    parser.add_argument("--execute-after", type=float, help="PENDING orders turn EXECUTED after this many seconds")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every order request")
    parser.add_argument("--fault", action="append", default=[], help="queue a fault, e.g. error_after or latency=2")
    parser.add_argument("--every", action="append", default=[], metavar="KIND=N",
                        help="inject fault KIND on every Nth order request, e.g. error_after=5")
    parser.add_argument("--duplicate-style", choices=("existing", "conflict"), default="existing")
    parser.add_argument("--no-dedup", action="store_true", help="do not deduplicate on external_id")
    parser.add_argument("--orders", action="store_true",
                        help="print the orders kept in the --state file as JSON and exit (starts no server)")
    args = parser.parse_args(argv)
    if args.orders:
        if not args.state:
            parser.error("--orders needs --state (the simulator's state file)")
        try:
            orders = stored_orders(args.state)
        except (OSError, sqlite3.Error) as exc:
            print(f"cannot read {args.state}: {exc}", file=sys.stderr)
            return 1
        print(_pretty(orders))
        return 0
    products = json.loads(Path(args.catalog).read_text(), parse_float=Decimal) if args.catalog else None
    every = {}
    for spec in args.every:
        kind, _, n = spec.partition("=")
        every[kind] = int(n or 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sim = GiftCardSimulator(api_key=args.api_key, host=args.host, port=args.port, state_path=args.state,
                            products=products, initial_status=args.initial_status,
                            execute_after_seconds=args.execute_after, dedup=not args.no_dedup,
                            duplicate_style=args.duplicate_style, latency=args.latency, every=every,
                            prefix=args.prefix)
    sim.plan(*args.fault)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sim.start()
    print(f"gift-card provider SIMULATOR (not a real provider) listening on {sim.url}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
