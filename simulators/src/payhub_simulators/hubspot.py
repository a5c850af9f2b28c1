"""A SIMULATOR of the HubSpot CRM API for tests: a local HTTP server on 127.0.0.1. It is not HubSpot.

It serves the endpoints the ``hubspot`` source uses, with bodies shaped like HubSpot's documented responses, and the
behaviour that matters to a sync:

* ``POST /oauth/2026-03/token`` and the legacy ``POST /oauth/v1/token`` (refresh-token grant, form-encoded;
  access tokens expire after ``token_ttl`` seconds; refusals are RFC 6749 errors such as ``invalid_grant`` and
  ``invalid_client``, with HubSpot's own ``status`` and ``message`` kept next to them), a private app token, 401 for
  expired or unknown tokens, 403 ``MISSING_SCOPES`` for scopes not granted;
* ``GET /crm/v3/pipelines/deals``;
* ``POST /crm/v3/objects/deals/search`` with filterGroups (EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN,
  HAS_PROPERTY, NOT_HAS_PROPERTY), one sort, ``limit`` up to 200, offset ``after`` paging that answers 400 once
  ``after`` reaches 10,000 (HubSpot's cap per query), a search index that lags writes by ``index_delay`` seconds,
  and a limit of ``search_per_second`` requests per second (429 beyond it);
* ``POST /crm/v3/objects/deals/batch/read`` (``?archived=true`` for deleted deals), with ``propertiesWithHistory``;
* ``GET /crm/v3/objects/deals?archived=true`` (list, paged with ``after``);
* ``POST /crm/v4/associations/deals/companies/batch/read``;
* injectable faults (:meth:`HubSpotSimulator.fail`): any status, headers and body for the next matching requests,
  and any fault of the shared :class:`~payhub.testing.server.FaultServer` it runs on (:attr:`HubSpotSimulator.server`:
  delays, hangs, dropped connections, lost answers).

Tests drive it in Python: :meth:`add_deal`, :meth:`update_deal`, :meth:`archive_deal`, :meth:`add_company`,
:meth:`associate`, :meth:`expire_tokens`, and read :attr:`requests` afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

from payhub.testing.server import FaultServer, Response, ServerFault
from payhub.testing.server import Request as ServerRequest

__all__ = ["DEFAULT_SCOPES", "LEGACY_TOKEN_PATH", "TOKEN_PATH", "HubSpotSimulator", "Request", "add_sample_deals",
           "iso"]

DEFAULT_SCOPES = frozenset({"crm.objects.deals.read", "crm.objects.companies.read"})
TOKEN_PATH = "/oauth/2026-03/token"
LEGACY_TOKEN_PATH = "/oauth/v1/token"
SEARCH_CAP = 10_000
DATE_PROPERTIES = frozenset({"hs_lastmodifieddate", "createdate", "closedate"})
NUMERIC_PROPERTIES = frozenset({"hs_object_id", "amount"})
DEFAULT_SEARCH_PROPERTIES = ("amount", "closedate", "createdate", "dealname", "dealstage", "hs_lastmodifieddate",
                             "hs_object_id", "pipeline")
ALWAYS = ("hs_object_id", "createdate", "hs_lastmodifieddate")
CONTENT_TYPE = "application/json;charset=utf-8"
DEFAULT_STAGES = (
    ("appointmentscheduled", "Appointment Scheduled", "false", "0.2"),
    ("qualifiedtobuy", "Qualified To Buy", "false", "0.4"),
    ("presentationscheduled", "Presentation Scheduled", "false", "0.6"),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "false", "0.8"),
    ("contractsent", "Contract Sent", "false", "0.9"),
    ("closedwon", "Closed Won", "true", "1.0"),
    ("closedlost", "Closed Lost", "true", "0.0"),
)


def iso(ms: int) -> str:
    """HubSpot's date-time text for epoch milliseconds: ``2026-01-31T09:00:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _ms(value: Any) -> int | None:
    if value is None or value == "":
        return None
    text = str(value)
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


@dataclass
class Request:
    """One request the simulator answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int


@dataclass
class _Snapshot:
    """What the search index holds for a deal from ``visible_from`` on: its properties and their sort keys."""

    visible_from: int
    props: dict[str, str | None]
    keys: dict[str, tuple[int, Any]]

    @classmethod
    def of(cls, visible_from: int, props: dict[str, str | None]) -> _Snapshot:
        return cls(visible_from, dict(props), {name: _sortable(name, value) for name, value in props.items()})


@dataclass
class _Deal:
    id: int
    properties: dict[str, str | None]
    history: dict[str, list[tuple[str | None, int]]]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None
    snapshots: list[_Snapshot] = field(default_factory=list)


class HubSpotSimulator:
    """A HubSpot-like server; ``with HubSpotSimulator() as sim:`` starts it on an ephemeral 127.0.0.1 port."""

    def __init__(self, *, private_token: str = "pat-sim-token", client_id: str = "sim-client-id",
                 client_secret: str = "sim-client-secret", refresh_token: str = "sim-refresh-token",
                 token_ttl: float = 1800.0, scopes: Iterable[str] = DEFAULT_SCOPES, search_per_second: int = 5,
                 index_delay: float = 0.0, rate_limit_retry_after: float | None = None, short_pages: int = 0,
                 clock: Callable[[], float] = time.time, host: str = "127.0.0.1", port: int = 0) -> None:
        self.private_token = private_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.token_ttl = token_ttl
        self.scopes = set(scopes)
        self.search_per_second = search_per_second
        self.index_delay = index_delay
        self.rate_limit_retry_after = rate_limit_retry_after
        self.short_pages = short_pages
        self.clock = clock
        self.lock = threading.RLock()
        self.deals: dict[int, _Deal] = {}
        self.companies: dict[int, str] = {}
        self.associations: dict[int, dict[int, list[dict[str, Any]]]] = {}
        self.pipelines: list[dict[str, Any]] = []
        self.tokens: dict[str, float] = {}
        self.token_grants = 0
        self.search_times: list[float] = []
        self.rate_limited = 0
        self._next_id = 1000
        self.server = FaultServer(host, port, name="hubspot-simulator")
        """The server underneath: its request log and fault plan are the simulator's."""
        self.server.route("*", r".*", self._serve)
        self.add_pipeline("default", "Sales Pipeline", DEFAULT_STAGES)

    # ------------------------------------------------------------------------------------------- server

    def __enter__(self) -> HubSpotSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> HubSpotSimulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def requests(self) -> list[Request]:
        """Every request received, oldest first, with the status it was answered."""
        return [_request(r) for r in self.server.requests if _done(r)]

    # ------------------------------------------------------------------------------------------- data

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def add_pipeline(self, pipeline_id: str, label: str, stages: Iterable[tuple[str, str, str, str]]) -> None:
        """A pipeline with stages given as (id, label, isClosed, probability)."""
        now = iso(self.now_ms())
        with self.lock:
            self.pipelines.append({
                "id": pipeline_id, "label": label, "displayOrder": len(self.pipelines), "archived": False,
                "createdAt": now, "updatedAt": now,
                "stages": [{"id": sid, "label": slabel, "displayOrder": n, "archived": False, "createdAt": now,
                            "updatedAt": now, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
                            "metadata": {"isClosed": closed, "probability": probability}}
                           for n, (sid, slabel, closed, probability) in enumerate(stages)],
            })

    def add_company(self, name: str = "Partner") -> str:
        with self.lock:
            self._next_id += 1
            self.companies[self._next_id] = name
            return str(self._next_id)

    def associate(self, deal_id: str, company_id: str, *, primary: bool = True, label: str | None = None,
                  type_id: int | None = None) -> None:
        types: list[dict[str, Any]] = [{"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]
        if primary:
            types.insert(0, {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"})
        if label is not None:
            types.append({"category": "USER_DEFINED", "typeId": type_id or 100, "label": label})
        with self.lock:
            self.associations.setdefault(int(deal_id), {})[int(company_id)] = types

    def dissociate(self, deal_id: str, company_id: str) -> None:
        """Remove the association between a deal and a company (as unlinking them in HubSpot)."""
        with self.lock:
            self.associations.get(int(deal_id), {}).pop(int(company_id), None)

    def add_deal(self, stage: str = "closedwon", amount: str | None = "1000.00", *, closedate: str | None = "",
                 owner: str | None = "101", pipeline: str = "default", currency: str | None = None,
                 company: str | None = None, at_ms: int | None = None, deal_id: int | None = None,
                 **properties: str | None) -> str:
        """Create a deal (modified at ``at_ms``, default now); ``closedate`` "" means the creation time."""
        with self.lock:
            at = self.now_ms() if at_ms is None else at_ms
            if deal_id is None:
                self._next_id += 1
                deal_id = self._next_id
            else:
                self._next_id = max(self._next_id, deal_id)
            props: dict[str, str | None] = {
                "dealname": f"Deal {deal_id}", "amount": amount, "deal_currency_code": currency,
                "closedate": iso(at) if closedate == "" else closedate, "dealstage": stage, "pipeline": pipeline,
                "hubspot_owner_id": owner, "createdate": iso(at), "hs_lastmodifieddate": iso(at),
                "hs_object_id": str(deal_id), **properties}
            deal = _Deal(deal_id, props, {k: [(v, at)] for k, v in props.items() if v is not None}, at, at)
            deal.snapshots.append(_Snapshot.of(at + int(self.index_delay * 1000), props))
            self.deals[deal_id] = deal
            if company is not None:
                self.associate(str(deal_id), company)
            return str(deal_id)

    def update_deal(self, deal_id: str, *, at_ms: int | None = None, **properties: str | None) -> None:
        """Change properties (a stage move is ``dealstage=...``); bumps ``hs_lastmodifieddate``."""
        with self.lock:
            deal = self.deals[int(deal_id)]
            at = self.now_ms() if at_ms is None else at_ms
            for name, value in properties.items():
                deal.properties[name] = value
                deal.history.setdefault(name, []).append((value, at))
            deal.properties["hs_lastmodifieddate"] = iso(at)
            deal.updated_ms = at
            deal.snapshots.append(_Snapshot.of(at + int(self.index_delay * 1000), deal.properties))

    def archive_deal(self, deal_id: str, *, at_ms: int | None = None) -> None:
        with self.lock:
            deal = self.deals[int(deal_id)]
            deal.archived_ms = self.now_ms() if at_ms is None else at_ms

    def fail(self, prefix: str, status: int, times: int = 1, headers: dict[str, str] | None = None,
             body: Any = None, skip: int = 0) -> None:
        """Answer ``times`` requests whose path starts with ``prefix`` with ``status``, after letting ``skip`` of
        them through."""
        answer = body if body is not None else _error("Simulated failure", "INTERNAL_ERROR")
        if status == 429 and body is None:
            answer = _rate_limited("SECONDLY")
        self.server.plan(ServerFault("status", status, path=prefix, times=times, skip=skip, headers=headers or {},
                                     body=Response.json(answer, content_type=CONTENT_TYPE)))

    def clear_faults(self) -> None:
        self.server.clear_plan()

    def expire_tokens(self) -> None:
        """Expire every OAuth access token issued so far (as if their time ran out)."""
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = self.clock() - 1

    def calls(self, path: str) -> list[Request]:
        return [_request(r) for r in self.server.calls(path=path) if _done(r)]

    # ------------------------------------------------------------------------------------------- dispatch

    def dispatch(self, method: str, target: str, headers: dict[str, str], raw: bytes
                 ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request in process, as the server would but without its fault plan or request log:
        (status, headers, body)."""
        parts = urlsplit(target)
        request = ServerRequest(method, parts.path, parse_qs(parts.query, keep_blank_values=True), dict(headers), raw,
                                datetime.now(UTC))
        response = self._serve(request)
        return response.status, dict(response.headers), response.body

    def _serve(self, request: ServerRequest) -> Response:
        lower = {k.lower(): v for k, v in request.headers.items()}
        with self.lock:
            status, extra, answer = self._route(request.method, request.path, request.query, lower, _body(request))
        return Response.json(answer, status, extra, content_type=CONTENT_TYPE)

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
               ) -> tuple[int, dict[str, str], Any]:
        if method == "POST" and path in (TOKEN_PATH, LEGACY_TOKEN_PATH):
            return self._token(body, query)
        problem = self._authenticate(headers)
        if problem is not None:
            return problem
        if path == "/crm/v3/pipelines/deals" and method == "GET":
            return self._scoped({"crm.objects.deals.read"}, lambda: (200, {}, {"results": self.pipelines}))
        if path == "/crm/v3/objects/deals/search" and method == "POST":
            return self._scoped({"crm.objects.deals.read"}, lambda: self._search(body))
        if path == "/crm/v3/objects/deals/batch/read" and method == "POST":
            archived = query.get("archived", ["false"])[0] == "true"
            return self._scoped({"crm.objects.deals.read"}, lambda: self._batch_read(body, archived))
        if path == "/crm/v3/objects/deals" and method == "GET":
            return self._scoped({"crm.objects.deals.read"}, lambda: self._list(query))
        if path == "/crm/v4/associations/deals/companies/batch/read" and method == "POST":
            return self._scoped({"crm.objects.deals.read", "crm.objects.companies.read"},
                                lambda: self._associations(body))
        return 404, {}, _error(f"Unable to route {method} {path}", "OBJECT_NOT_FOUND")

    def _token(self, body: Any, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        form = {k: v[0] for k, v in parse_qs(body if isinstance(body, str) else "").items()}
        if {"client_id", "client_secret", "refresh_token"} & set(query):
            return _oauth_error(400, "invalid_request", "Credentials must be sent in the request body, not the query",
                                "BAD_REQUEST")
        if form.get("grant_type") != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", "unknown grant type", "BAD_GRANT_TYPE")
        if form.get("client_id") != self.client_id:
            return _oauth_error(400, "invalid_client", "missing or invalid client_id", "BAD_CLIENT_ID")
        if form.get("client_secret") != self.client_secret:
            return _oauth_error(400, "invalid_client", "invalid client_secret", "BAD_CLIENT_SECRET")
        if form.get("refresh_token") != self.refresh_token:
            return _oauth_error(400, "invalid_grant", "missing or unknown refresh token", "BAD_REFRESH_TOKEN")
        token = f"sim-access-{uuid.uuid4().hex}"
        self.tokens[token] = self.clock() + self.token_ttl
        self.token_grants += 1
        return 200, {}, {"token_type": "bearer", "refresh_token": self.refresh_token, "access_token": token,
                         "expires_in": int(self.token_ttl)}

    def _authenticate(self, headers: dict[str, str]) -> tuple[int, dict[str, str], Any] | None:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if token and token == self.private_token:
            return None
        expiry = self.tokens.get(token)
        if expiry is None:
            return 401, {}, _error("Authentication credentials not found. This API supports OAuth 2.0 "
                                   "authentication.", "INVALID_AUTHENTICATION")
        if expiry <= self.clock():
            return 401, {}, _error(f"The OAuth token used to make this call expired "
                                   f"{int(self.clock() - expiry)} second(s) ago.", "EXPIRED_AUTHENTICATION")
        return None

    def _scoped(self, needed: set[str], then: Callable[[], tuple[int, dict[str, str], Any]]
                ) -> tuple[int, dict[str, str], Any]:
        missing = sorted(needed - self.scopes)
        if missing:
            return 403, {}, {
                "status": "error", "category": "MISSING_SCOPES",
                "message": "This app hasn't been granted all required scopes to make this call. Read more about "
                           "required scopes here: https://developers.hubspot.com/scopes.",
                "errors": [{"message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": missing}}],
                "links": {"scopes": "https://developers.hubspot.com/scopes"}, **_correlation()}
        return then()

    # ------------------------------------------------------------------------------------------- search

    def _search(self, body: Any) -> tuple[int, dict[str, str], Any]:
        now = self.clock()
        self.search_times = [t for t in self.search_times if t > now - 1.0]
        if len(self.search_times) >= self.search_per_second:
            self.rate_limited += 1
            headers = {} if self.rate_limit_retry_after is None else {"Retry-After": f"{self.rate_limit_retry_after:g}"}
            return 429, headers, _rate_limited("SECONDLY")
        self.search_times.append(now)
        if not isinstance(body, dict):
            return 400, {}, _error("Invalid input JSON", "VALIDATION_ERROR")
        limit = int(body.get("limit", 10))
        after = int(body.get("after") or 0)
        groups = body.get("filterGroups") or []
        sorts = body.get("sorts") or []
        if limit > 200 or limit < 1:
            return 400, {}, _error(f"limit must be between 1 and 200, got {limit}", "VALIDATION_ERROR")
        if len(groups) > 5 or sum(len(g.get("filters") or []) for g in groups) > 25 or any(
                len(g.get("filters") or []) > 10 for g in groups):
            return 400, {}, _error("Too many filter groups or filters", "VALIDATION_ERROR")
        if len(sorts) > 1:
            return 400, {}, _error("Only one sort is supported", "VALIDATION_ERROR")
        if after >= SEARCH_CAP:
            return 400, {}, _error(f"The search API cannot page past {SEARCH_CAP} results (after={after}). Narrow "
                                   "the query.", "VALIDATION_ERROR")
        visible_at = self.now_ms()
        tests = [[_compile(f) for f in g.get("filters") or []] for g in groups]
        matched: list[tuple[int, _Snapshot]] = []
        for deal in self.deals.values():
            if deal.archived_ms is not None:
                continue
            seen = [snap for snap in deal.snapshots if snap.visible_from <= visible_at]
            if seen and (not tests or any(all(test(seen[-1].keys) for test in group) for group in tests)):
                matched.append((deal.id, seen[-1]))
        sort = sorts[0] if sorts else {"propertyName": "hs_object_id", "direction": "ASCENDING"}
        if isinstance(sort, str):
            sort = {"propertyName": sort.lstrip("-"), "direction": "DESCENDING" if sort.startswith("-") else "ASC"}
        name = str(sort.get("propertyName"))
        descending = str(sort.get("direction", "")).upper().startswith("DESC")

        def order(item: tuple[int, _Snapshot]) -> tuple[tuple[int, Any], int]:
            key = item[1].keys.get(name, (-1, 0))
            # missing values sort last; ties come in no particular order (as on HubSpot)
            return ((1, 0) if key[0] == -1 else key), zlib.crc32(str(item[0]).encode()) * (-1 if descending else 1)

        matched.sort(key=order, reverse=descending)
        total = len(matched)
        page = matched[after:min(after + limit, SEARCH_CAP)]
        has_next = after + limit < total
        if self.short_pages and has_next and len(page) > self.short_pages:
            page = page[:-self.short_pages]  # a short page that still has a next page
        wanted = list(body.get("properties") or DEFAULT_SEARCH_PROPERTIES)
        answer: dict[str, Any] = {"total": total, "results": [self._object(self.deals[i], snap.props, wanted)
                                                               for i, snap in page]}
        if has_next:
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return 200, {}, answer

    def _object(self, deal: _Deal, props: dict[str, str | None], wanted: Iterable[str],
                history: Iterable[str] = ()) -> dict[str, Any]:
        names = list(dict.fromkeys([*wanted, *ALWAYS]))
        result: dict[str, Any] = {
            "id": str(deal.id), "properties": {n: props.get(n) for n in names},
            "createdAt": iso(deal.created_ms), "updatedAt": iso(deal.updated_ms),
            "archived": deal.archived_ms is not None}
        if deal.archived_ms is not None:
            result["archivedAt"] = iso(deal.archived_ms)
        with_history = {n: [{"value": v, "timestamp": iso(at), "sourceType": "CRM_UI", "sourceId": "userId:1"}
                            for v, at in reversed(deal.history.get(n, []))] for n in history}
        if with_history:
            result["propertiesWithHistory"] = with_history
        return result

    # ------------------------------------------------------------------------------------------- reads

    def _batch_read(self, body: Any, archived: bool) -> tuple[int, dict[str, str], Any]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or len(inputs) > 100:
            return 400, {}, _error("inputs must be a list of at most 100 ids", "VALIDATION_ERROR")
        started = iso(self.now_ms())
        results, missing = [], []
        for item in inputs:
            deal = self.deals.get(int(item["id"])) if str(item.get("id", "")).isdigit() else None
            if deal is None or (deal.archived_ms is not None) != archived:
                missing.append(str(item.get("id")))
                continue
            results.append(self._object(deal, deal.properties, body.get("properties") or DEFAULT_SEARCH_PROPERTIES,
                                        body.get("propertiesWithHistory") or ()))
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": iso(self.now_ms())}
        if not missing:
            return 200, {}, answer
        answer["numErrors"] = 1
        answer["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                             "message": "Could not get some DEAL objects, they may be deleted or not exist. Check "
                                        "that ids are valid.", "context": {"ids": missing}}]
        return 207, {}, answer

    def _list(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        archived = query.get("archived", ["false"])[0] == "true"
        limit = min(int(query.get("limit", ["10"])[0]), 100)
        after = int(query.get("after", ["0"])[0] or 0)
        wanted = [p for value in query.get("properties", []) for p in value.split(",") if p]
        chosen = sorted((d for d in self.deals.values() if (d.archived_ms is not None) == archived and d.id > after),
                        key=lambda d: d.id)
        page = chosen[:limit]
        answer: dict[str, Any] = {"results": [self._object(d, d.properties, wanted or DEFAULT_SEARCH_PROPERTIES)
                                              for d in page]}
        if len(chosen) > limit:
            answer["paging"] = {"next": {"after": str(page[-1].id),
                                         "link": f"/crm/v3/objects/deals?after={page[-1].id}"}}
        return 200, {}, answer

    def _associations(self, body: Any) -> tuple[int, dict[str, str], Any]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or len(inputs) > 1000:
            return 400, {}, _error("inputs must be a list of at most 1000 ids", "VALIDATION_ERROR")
        results, empty = [], []
        for item in inputs:
            deal_id = int(item["id"])
            linked = self.associations.get(deal_id)
            if not linked:
                empty.append(str(deal_id))
                continue
            results.append({"from": {"id": str(deal_id)},
                            "to": [{"toObjectId": company, "associationTypes": types}
                                   for company, types in sorted(linked.items())]})
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": iso(self.now_ms()),
                                  "completedAt": iso(self.now_ms())}
        if not empty:
            return 200, {}, answer
        answer["numErrors"] = len(empty)
        answer["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                             "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                             "message": f"No company is associated with deal {deal_id}.",
                             "context": {"fromObjectId": [deal_id]}} for deal_id in empty]
        return 207, {}, answer


def _body(request: ServerRequest) -> Any:
    """A JSON body parsed (None if it does not parse), any other body as text, None when empty."""
    if not request.body:
        return None
    if "json" in request.header("content-type"):
        try:
            return json.loads(request.body)
        except ValueError:
            return None
    return request.text()


def _request(request: ServerRequest) -> Request:
    return Request(request.method, request.path, request.query, _body(request), request.status or 0)


def _done(request: ServerRequest) -> bool:
    """Answered (or, under a fault, dropped or left unanswered): not still being handled."""
    return request.status is not None or request.outcome is not None


def _correlation() -> dict[str, str]:
    return {"correlationId": str(uuid.uuid4())}


def _oauth_error(status: int, error: str, description: str, legacy: str) -> tuple[int, dict[str, str], Any]:
    """An OAuth refusal as HubSpot sends it: RFC 6749 ``error`` and ``error_description``, plus its own fields."""
    return status, {}, {"error": error, "error_description": description, "status": legacy, "message": description,
                        **_correlation()}


def _error(message: str, category: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "category": category, **_correlation()}


def _rate_limited(policy: str) -> dict[str, Any]:
    return {"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT",
            "policyName": policy, **_correlation()}


def _sortable(name: str, value: Any) -> tuple[int, Any]:
    """A sort key for a property value: dates and numbers compare as numbers, the rest as text; empty is (-1, 0)."""
    if value is None or value == "":
        return (-1, 0)
    if name in DATE_PROPERTIES:
        return (0, _ms(value) or 0)
    if name in NUMERIC_PROPERTIES:
        try:
            return (0, Decimal(str(value)))
        except InvalidOperation:
            return (0, Decimal(0))
    return (0, str(value))


def _compile(flt: dict[str, Any]) -> Callable[[dict[str, tuple[int, Any]]], bool]:
    """A test of one search filter against a snapshot's sort keys."""
    name, op = str(flt.get("propertyName")), str(flt.get("operator", "EQ")).upper()
    empty = (-1, 0)
    if op == "HAS_PROPERTY":
        return lambda keys: keys.get(name, empty) != empty
    if op == "NOT_HAS_PROPERTY":
        return lambda keys: keys.get(name, empty) == empty
    if op in ("IN", "NOT_IN"):
        values = {_sortable(name, v) for v in flt.get("values") or []}
        inside = op == "IN"
        return lambda keys: keys.get(name, empty) != empty and (keys[name] in values) == inside
    target = _sortable(name, flt.get("value"))
    high = _sortable(name, flt.get("highValue"))
    compare: dict[str, Callable[[tuple[int, Any]], bool]] = {
        "EQ": lambda k: k == target, "NEQ": lambda k: k != target, "LT": lambda k: k < target,
        "LTE": lambda k: k <= target, "GT": lambda k: k > target, "GTE": lambda k: k >= target,
        "BETWEEN": lambda k: target <= k <= high}
    check = compare.get(op)
    if check is None:
        return lambda keys: False

    def test(keys: dict[str, tuple[int, Any]]) -> bool:
        key = keys.get(name, empty)
        if key == empty:
            return False
        try:
            return bool(check(key))
        except TypeError:  # text compared with a number
            return False

    return test


def add_sample_deals(simulator: HubSpotSimulator, deals: int) -> None:
    """``deals`` deals modified an hour ago, every other one closed won, all with one partner company."""
    partner = simulator.add_company("Simulated Partner")
    hour_ago = simulator.now_ms() - 3_600_000
    for n in range(deals):
        simulator.add_deal("closedwon" if n % 2 == 0 else "qualifiedtobuy", f"{1000 + 10 * n}.00",
                           company=partner, at_ms=hour_ago + n)
