"""A SIMULATOR of a Salesforce org's REST API, for tests and demos. It is not Salesforce and proves nothing about it.

It serves, on 127.0.0.1 and a free port (the kit's :class:`~payhub.testing.server.FaultServer`, whose fault plan is
:attr:`SalesforceSimulator.server`'s), the few resources the
``salesforce`` source uses, with bodies shaped like Salesforce's documented responses:

* ``POST /services/oauth2/token``: client credentials, refresh token (optionally rotated, reuse revokes the grant) and
  JWT bearer (RS256 assertion checked against a public key: iss, sub, aud, exp).
* ``GET /services/data/vXX.X/query|queryAll?q=SOQL`` and ``…/query/<locator>-<offset>`` pages (nextRecordsUrl), with
  ``Sforce-Query-Options: batchSize`` honoured and the ``Sforce-Limit-Info: api-usage=N/LIMIT`` header.
* Error bodies as a list of ``{"message", "errorCode"}``: 401 INVALID_SESSION_ID, 403 REQUEST_LIMIT_EXCEEDED, 400
  MALFORMED_QUERY / INVALID_FIELD / INVALID_TYPE / INVALID_QUERY_LOCATOR, and injected 429/5xx.

SOQL: only the subset the source generates is parsed: a field list (with a child subquery), FROM, WHERE with AND /
OR / NOT, parentheses, = != < <= > >=, IN / NOT IN (a list or a semi-join subquery), LIKE; ORDER BY; LIMIT. As on
Salesforce, semi-joins are refused under OR or NOT and beyond two per WHERE (MALFORMED_QUERY). Literals:
strings, numbers, true/false/null, dates and date-times. A query locator snapshots the matching Ids at query time; each
page returns the records' values at the time the page is fetched (so changes during paging show, as they may on a real
org). Opportunities derive IsWon/IsClosed from their stage and write OpportunityHistory rows on stage, amount and close
date changes.

Run one by hand for a demo: ``payhub-simulator salesforce --opportunities 50``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt

from payhub.testing.server import FaultServer, Request, Response, ServerFault

API_VERSION = "62.0"
ORG_ID = "00D000000000001AAA"
USER_ID = "005000000000001AAA"

STAGES = [  # ApiName, IsClosed, IsWon
    ("Prospecting", False, False), ("Qualification", False, False), ("Negotiation", False, False),
    ("Closed Won", True, True), ("Closed Lost", True, False),
]
OPPORTUNITY_FIELDS = ["Id", "IsDeleted", "Name", "AccountId", "StageName", "Amount", "CurrencyIsoCode", "CloseDate",
                      "IsClosed", "IsWon", "OwnerId", "PartnerAccountId", "Type", "CreatedDate", "LastModifiedDate",
                      "LastStageChangeDate", "SystemModstamp"]
SYSTEM_FIELDS = ["Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp"]
PREFIXES = {"Opportunity": "006", "OpportunityHistory": "008", "OpportunityStage": "01J", "OpportunityPartner": "00k"}
CHILD_RELATIONSHIPS = {("Opportunity", "OpportunityPartnersFrom"): ("OpportunityPartner", "OpportunityId")}


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------------- SOQL subset

_TOKEN = re.compile(r"""\s*(?:
    (?P<string>'(?:\\.|[^'\\])*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
)""", re.VERBOSE)
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC", "LIMIT",
             "NULLS", "FIRST", "LAST", "TRUE", "FALSE", "NULL"}


@dataclass
class Query:
    sobject: str
    fields: list[str]
    children: list[Query] = field(default_factory=list)  # child subqueries (sobject = relationship name)
    where: Any = None
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    limit: int | None = None


def parse_soql(text: str) -> Query:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise SoqlError("MALFORMED_QUERY", f"unexpected character at {pos}: {text[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        value: Any = match.group(kind)
        if kind == "string":
            value = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), value[1:-1])
        elif kind == "datetime":
            value = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        elif kind == "date":
            value = date.fromisoformat(value)
        elif kind == "number":
            value = Decimal(value)
        elif kind == "word" and value.upper() in _KEYWORDS:
            kind, value = "kw", value.upper()
        tokens.append((kind, value))
    parser = _Parser(tokens)
    query = parser.select()
    if parser.i != len(tokens):
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: {tokens[parser.i][1]!r}")
    return query


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self, kind: str, value: Any = None) -> bool:
        if self.i >= len(self.tokens):
            return False
        k, v = self.tokens[self.i]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, value: Any = None) -> Any:
        if not self.peek(kind, value):
            found = self.tokens[self.i][1] if self.i < len(self.tokens) else "end of query"
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {found!r}, expected {value or kind}")
        self.i += 1
        return self.tokens[self.i - 1][1]

    def select(self) -> Query:
        self.take("kw", "SELECT")
        fields: list[str] = []
        children: list[Query] = []
        while True:
            if self.peek("punct", "("):
                self.take("punct", "(")
                children.append(self.select())
                self.take("punct", ")")
            else:
                fields.append(self.take("word"))
            if not self.peek("punct", ","):
                break
            self.take("punct", ",")
        self.take("kw", "FROM")
        query = Query(self.take("word"), fields, children)
        if self.peek("kw", "WHERE"):
            self.take("kw", "WHERE")
            query.where = self.disjunction()
        if self.peek("kw", "ORDER"):
            self.take("kw", "ORDER")
            self.take("kw", "BY")
            while True:
                name = self.take("word")
                descending = False
                if self.peek("kw", "ASC") or self.peek("kw", "DESC"):
                    descending = self.take("kw") == "DESC"
                query.order.append((name, descending))
                if not self.peek("punct", ","):
                    break
                self.take("punct", ",")
        if self.peek("kw", "LIMIT"):
            self.take("kw", "LIMIT")
            query.limit = int(self.take("number"))
        return query

    def disjunction(self) -> Any:
        terms = [self.conjunction()]
        while self.peek("kw", "OR"):
            self.take("kw", "OR")
            terms.append(self.conjunction())
        return ("or", terms) if len(terms) > 1 else terms[0]

    def conjunction(self) -> Any:
        terms = [self.negation()]
        while self.peek("kw", "AND"):
            self.take("kw", "AND")
            terms.append(self.negation())
        return ("and", terms) if len(terms) > 1 else terms[0]

    def negation(self) -> Any:
        if self.peek("kw", "NOT"):
            self.take("kw", "NOT")
            return ("not", self.negation())
        if self.peek("punct", "("):
            self.take("punct", "(")
            inner = self.disjunction()
            self.take("punct", ")")
            return inner
        name = self.take("word")
        if self.peek("kw", "NOT") or self.peek("kw", "IN"):
            negated = self.peek("kw", "NOT")
            if negated:
                self.take("kw", "NOT")
            self.take("kw", "IN")
            self.take("punct", "(")
            if self.peek("kw", "SELECT"):
                values: Any = self.select()
            else:
                values = [self.literal()]
                while self.peek("punct", ","):
                    self.take("punct", ",")
                    values.append(self.literal())
            self.take("punct", ")")
            return ("in", name, values, negated)
        if self.peek("kw", "LIKE"):
            self.take("kw", "LIKE")
            return ("like", name, self.literal())
        return ("cmp", name, self.take("op"), self.literal())

    def literal(self) -> Any:
        if self.i >= len(self.tokens):
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        kind, value = self.tokens[self.i]
        self.i += 1
        if kind in ("string", "datetime", "date", "number"):
            return value
        if kind == "kw" and value in ("TRUE", "FALSE", "NULL"):
            return {"TRUE": True, "FALSE": False, "NULL": None}[value]
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: {value!r}, expected a value")


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])
    except TypeError:
        raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"cannot compare {left!r} {op} {right!r}") from None


# ---------------------------------------------------------------------------------------------------- the org


@dataclass
class _Locator:
    sobject: str
    query: Query
    ids: list[str]
    page_size: int
    expired: bool = False


class SalesforceSimulator:
    """An in-memory org behind a local HTTP server. Use as a context manager, or call start() and stop()."""

    def __init__(self, *, client_id: str = "3MVG9SIMULATED", client_secret: str = "sim-secret",
                 username: str = "integration@example.com", refresh_token: str = "5Aep-sim-refresh-0",
                 rotate_refresh_tokens: bool = False, jwt_public_key: bytes | None = None,
                 jwt_audience: str = "https://login.salesforce.com", api_limit: int = 15000, api_usage: int = 0,
                 api_version: str = API_VERSION, max_page_size: int = 2000, currency: str = "USD",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.client_id, self.client_secret, self.username = client_id, client_secret, username
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.jwt_public_key, self.jwt_audience = jwt_public_key, jwt_audience
        self.api_limit, self.api_usage, self.api_version = api_limit, api_usage, api_version
        self.max_page_size = max_page_size
        self.currency = currency
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC).replace(microsecond=0)
        self.token_delay = 0.0  # seconds the token endpoint takes (to make concurrent refreshes overlap)
        self.on_page: Callable[[SalesforceSimulator, int], None] | None = None  # before serving page n >= 2
        self.token_requests: list[dict[str, str]] = []
        self.api_requests: list[str] = []
        self.lock = threading.RLock()
        self.schema: dict[str, list[str]] = {
            "Opportunity": list(OPPORTUNITY_FIELDS),
            "OpportunityHistory": SYSTEM_FIELDS + ["OpportunityId", "StageName", "Amount", "CloseDate"],
            "OpportunityStage": SYSTEM_FIELDS + ["ApiName", "MasterLabel", "IsActive", "IsClosed", "IsWon"],
            "OpportunityPartner": SYSTEM_FIELDS + ["OpportunityId", "AccountToId", "IsPrimary", "Role"],
        }
        self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self._refresh_tokens = {refresh_token}
        self._retired_refresh_tokens: set[str] = set()
        self._access_tokens: set[str] = set()
        self._locators: dict[str, _Locator] = {}
        self._ids = itertools.count(1)
        self.server = FaultServer(host, port, name="salesforce-simulator")
        """The server underneath: its request log and fault plan are the simulator's."""
        self.server.route("POST", r"/services/oauth2/token", self._serve_token)
        self.server.route("GET", r".*", self._serve_api)
        self.server.route("*", r".*", lambda request: _answer(404, NOT_FOUND))
        for api_name, closed, won in STAGES:
            self.insert("OpportunityStage", ApiName=api_name, MasterLabel=api_name, IsActive=True, IsClosed=closed,
                        IsWon=won)

    # --- server

    def start(self) -> str:
        """Start serving; returns :attr:`url`."""
        self.server.start()
        return self.url

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> SalesforceSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    # --- data

    def add_object(self, name: str, fields: Iterable[str], prefix: str = "a0X") -> None:
        """Declare a custom object and its fields (system fields are added)."""
        with self.lock:
            self.schema[name] = SYSTEM_FIELDS + [f for f in fields if f not in SYSTEM_FIELDS]
            self.tables.setdefault(name, {})
            PREFIXES[name] = prefix

    def add_fields(self, sobject: str, fields: Iterable[str]) -> None:
        """Declare custom fields on an object (``Partner_Rep__c`` on Opportunity); existing records hold null."""
        with self.lock:
            added = [f for f in fields if f not in self.schema[sobject]]
            self.schema[sobject] += added
            for record in self.tables[sobject].values():
                record.update(dict.fromkeys(added))

    def new_id(self, sobject: str) -> str:
        return f"{PREFIXES.get(sobject, 'a0X')}{next(self._ids):012d}AAA"

    def insert(self, sobject: str, **values: Any) -> str:
        with self.lock:
            now = self.clock()
            record: dict[str, Any] = {name: None for name in self.schema[sobject]}
            record.update(Id=self.new_id(sobject), IsDeleted=False, CreatedDate=now, LastModifiedDate=now,
                          SystemModstamp=now)
            self._set(sobject, record, values)
            self.tables[sobject][record["Id"]] = record
            if sobject == "Opportunity":
                self._history(record)
            return str(record["Id"])

    def update(self, sobject: str, record_id: str, **values: Any) -> None:
        with self.lock:
            record = self.tables[sobject][record_id]
            tracked = {k: record.get(k) for k in ("StageName", "Amount", "CloseDate")}
            record["LastModifiedDate"] = record["SystemModstamp"] = self.clock()
            self._set(sobject, record, values)
            if sobject == "Opportunity" and tracked != {k: record.get(k) for k in tracked}:
                self._history(record)

    def delete(self, sobject: str, record_id: str) -> None:
        """Move the record to the recycle bin: queryAll still returns it, with IsDeleted = true."""
        self.update(sobject, record_id, IsDeleted=True)

    def undelete(self, sobject: str, record_id: str) -> None:
        self.update(sobject, record_id, IsDeleted=False)

    def add_opportunity(self, **values: Any) -> str:
        defaults: dict[str, Any] = {"Name": "Deal", "StageName": "Prospecting", "CloseDate": date(2026, 5, 1),
                                    "OwnerId": USER_ID, "CurrencyIsoCode": self.currency, "Type": "New Business"}
        return self.insert("Opportunity", **{**defaults, **values})

    def add_partner(self, opportunity_id: str, account_id: str, primary: bool = True, role: str = "Reseller") -> str:
        return self.insert("OpportunityPartner", OpportunityId=opportunity_id, AccountToId=account_id,
                           IsPrimary=primary, Role=role)

    def _set(self, sobject: str, record: dict[str, Any], values: dict[str, Any]) -> None:
        old_stage = record.get("StageName")
        unknown = set(values) - set(self.schema[sobject])
        if unknown:
            raise KeyError(f"{sobject} has no field {sorted(unknown)}")
        for name, value in values.items():
            if isinstance(value, float):
                value = Decimal(str(value))
            if isinstance(value, str) and name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            record[name] = value
        if sobject == "Opportunity" and "StageName" in values:
            if "LastStageChangeDate" not in values and old_stage != record["StageName"]:
                record["LastStageChangeDate"] = self.clock()
            stage = next((s for s in STAGES if s[0] == record["StageName"]), None)
            record["IsClosed"], record["IsWon"] = (stage[1], stage[2]) if stage else (False, False)

    def _history(self, opportunity: dict[str, Any]) -> None:
        now = self.clock()
        row: dict[str, Any] = {name: None for name in self.schema["OpportunityHistory"]}
        row.update(Id=self.new_id("OpportunityHistory"), IsDeleted=False, CreatedDate=now, LastModifiedDate=now,
                   SystemModstamp=now, OpportunityId=opportunity["Id"], StageName=opportunity["StageName"],
                   Amount=opportunity["Amount"], CloseDate=opportunity["CloseDate"])
        self.tables["OpportunityHistory"][row["Id"]] = row

    # --- faults and sessions

    def fail_next(self, status: int, count: int = 1, *, error_code: str | None = None, message: str | None = None,
                  path: str = "/services/data/", retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests whose path starts with ``path`` with this error."""
        codes = {401: "INVALID_SESSION_ID", 403: "REQUEST_LIMIT_EXCEEDED", 429: "REQUEST_LIMIT_EXCEEDED",
                 500: "UNKNOWN_EXCEPTION", 502: "BAD_GATEWAY", 503: "SERVER_UNAVAILABLE"}
        code = error_code or codes.get(status, "ERROR")
        text = message or {"INVALID_SESSION_ID": "Session expired or invalid",
                           "REQUEST_LIMIT_EXCEEDED": "TotalRequests Limit exceeded."}.get(code, "simulated failure")
        self.server.plan(ServerFault("handler", status, path=path, times=count, label=code,
                                     method="POST" if path.startswith("/services/oauth2") else "GET",
                                     headers={"Retry-After": retry_after} if retry_after else {},
                                     body=_answer(status, [{"message": text, "errorCode": code}])))

    @property
    def faults(self) -> list[ServerFault]:
        """The planned faults not yet spent."""
        return self.server.planned

    def expire_sessions(self) -> None:
        """Invalidate every access token issued so far (as a session timeout would)."""
        with self.lock:
            self._access_tokens.clear()

    def expire_locators(self) -> None:
        with self.lock:
            for locator in self._locators.values():
                locator.expired = True

    @property
    def refresh_tokens(self) -> set[str]:
        return set(self._refresh_tokens)

    # --- request handling (called by the handler)

    def _serve_token(self, request: Request) -> Response:
        return _answer(*self.token(request.form(), request.fault))

    def token(self, form: dict[str, str], fault: ServerFault | None = None) -> tuple[int, Any]:
        """One token request (``fault``: an error planned by :meth:`fail_next`)."""
        with self.lock:
            self.token_requests.append(dict(form))
        if self.token_delay:
            self.server.wait_stopped(self.token_delay)  # cut short when the simulator stops
        if fault is not None and fault.body is not None:
            message = _loads(fault.body.body)[0]["message"]
            return fault.status, {"error": "server_error" if fault.status >= 500 else "invalid_request",
                                  "error_description": message}
        with self.lock:
            grant = form.get("grant_type")
            rotated: str | None = None
            if grant == "client_credentials":
                if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                    return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            elif grant == "refresh_token":
                token = form.get("refresh_token", "")
                if form.get("client_id") != self.client_id:
                    return 400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}
                if token in self._retired_refresh_tokens:  # reuse of a rotated token: revoke the whole grant
                    self._refresh_tokens.clear()
                    self._access_tokens.clear()
                    return 400, {"error": "invalid_grant", "error_description": "expired access/refresh token"}
                if token not in self._refresh_tokens:
                    return 400, {"error": "invalid_grant", "error_description": "expired access/refresh token"}
                if self.rotate_refresh_tokens:
                    rotated = f"5Aep-sim-refresh-{secrets.token_hex(6)}"
                    self._refresh_tokens.discard(token)
                    self._retired_refresh_tokens.add(token)
                    self._refresh_tokens.add(rotated)
            elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                problem = self._check_assertion(form.get("assertion", ""))
                if problem:
                    return 400, {"error": "invalid_grant", "error_description": problem}
            else:
                return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
            access = f"{ORG_ID}!{secrets.token_urlsafe(24)}"
            self._access_tokens.add(access)
            issued = str(int(time.time() * 1000))
            identity = f"{self.url}/id/{ORG_ID}/{USER_ID}"
            signature = base64.b64encode(hmac.new(self.client_secret.encode(), (identity + issued).encode(),
                                                  hashlib.sha256).digest()).decode()
            body = {"access_token": access, "signature": signature, "scope": "api refresh_token",
                    "instance_url": self.url, "id": identity, "token_type": "Bearer", "issued_at": issued}
            if rotated:
                body["refresh_token"] = rotated
            return 200, body

    def _check_assertion(self, assertion: str) -> str | None:
        if self.jwt_public_key is None:
            return "no certificate uploaded to the connected app"
        try:
            claims = jwt.decode(assertion, self.jwt_public_key, algorithms=["RS256"], audience=self.jwt_audience,
                                options={"require": ["iss", "sub", "aud", "exp"]})
        except jwt.ExpiredSignatureError:
            return "expired authorization code"
        except jwt.PyJWTError as exc:
            return f"invalid assertion: {exc}"
        if claims["iss"] != self.client_id:
            return "invalid client identifier"
        if claims["sub"] != self.username:
            return "user hasn't approved this consumer"
        if claims["exp"] > time.time() + 300:
            return "assertion expiry too far in the future"
        return None

    def _serve_api(self, request: Request) -> Response:
        query = {k: v[0] for k, v in request.query.items()}
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, payload, extra = self.api(request.path, query, headers, request.fault)
        limit = f"api-usage={min(self.api_usage, self.api_limit)}/{self.api_limit}"
        return _answer(status, payload, {"Sforce-Limit-Info": limit, **extra})

    def api(self, path: str, query: dict[str, str], headers: dict[str, str], fault: ServerFault | None = None
            ) -> tuple[int, Any, dict[str, str]]:
        """One REST request: (status, JSON body, extra headers); ``fault``: an error planned by :meth:`fail_next`."""
        with self.lock:
            self.api_requests.append(path)
        if fault is not None and fault.body is not None:
            return fault.status, _loads(fault.body.body), dict(fault.headers)
        return (*self._api(path, query, headers), {})

    def _api(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        with self.lock:
            token = headers.get("authorization", "").removeprefix("Bearer ")
            if token not in self._access_tokens:
                return 401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            self.api_usage += 1
            if self.api_usage > self.api_limit:
                return 403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            match = re.fullmatch(r"/services/data/v(\d+\.\d)/(query|queryAll)(?:/([0-9A-Za-z]+)-(\d+))?/?", path)
            if not match or match[1] != self.api_version:
                return 404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
        if match[3]:
            if self.on_page is not None:
                self.on_page(self, int(match[4]))
            with self.lock:
                return self._more(match[3], int(match[4]))
        with self.lock:
            return self._query(query.get("q", ""), include_deleted=match[2] == "queryAll",
                               batch=_batch_size(headers.get("sforce-query-options", "")))

    def _query(self, text: str, include_deleted: bool, batch: int) -> tuple[int, Any]:
        try:
            query = parse_soql(text)
            self._check(query)
            ids = self._select(query, include_deleted)
        except SoqlError as exc:
            return 400, [{"message": str(exc), "errorCode": exc.code}]
        locator = f"01g{secrets.token_hex(6).upper()}"
        self._locators[locator] = _Locator(query.sobject, query, ids, max(1, min(batch, self.max_page_size)))
        return self._page(locator, 0)

    def _more(self, locator: str, offset: int) -> tuple[int, Any]:
        found = self._locators.get(locator)
        if found is None or found.expired:
            return 400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
        return self._page(locator, offset)

    def _page(self, locator_id: str, offset: int) -> tuple[int, Any]:
        locator = self._locators[locator_id]
        table = self.tables[locator.sobject]
        chunk = locator.ids[offset:offset + locator.page_size]
        records = [self._render(locator.sobject, locator.query, table[i]) for i in chunk if i in table]
        body: dict[str, Any] = {"totalSize": len(locator.ids), "done": offset + len(chunk) >= len(locator.ids),
                                "records": records}
        if not body["done"]:
            body["nextRecordsUrl"] = f"/services/data/v{self.api_version}/query/{locator_id}-{offset + len(chunk)}"
        return 200, body

    def _check(self, query: Query, sobject: str | None = None) -> None:
        name = sobject or query.sobject
        if name not in self.schema:
            raise SoqlError("INVALID_TYPE", f"\n{query.sobject}\n^\nERROR at Row:1:Column:1\nsObject type "
                                            f"'{query.sobject}' is not supported.")
        _check_semi_joins(query.where)
        names = [*query.fields, *(n for n, _ in query.order), *_where_fields(query.where)]
        for field_name in names:
            if field_name not in self.schema[name]:
                raise SoqlError("INVALID_FIELD", f"\nSELECT {field_name} FROM {query.sobject}\n^\nERROR at Row:1:"
                                f"Column:8\nNo such column '{field_name}' on entity '{name}'. If you are attempting "
                                "to use a custom field, be sure to append the '__c' after the custom field name.")
        for child in query.children:
            relation = CHILD_RELATIONSHIPS.get((name, child.sobject))
            if relation is None:
                raise SoqlError("INVALID_TYPE", f"Didn't understand relationship '{child.sobject}' in FROM part of "
                                "query call.")
            self._check(child, relation[0])

    def _select(self, query: Query, include_deleted: bool, sobject: str | None = None) -> list[str]:
        rows = [r for r in self.tables[sobject or query.sobject].values()
                if (include_deleted or not r["IsDeleted"]) and self._eval(query.where, r, include_deleted)]
        for name, descending in reversed(query.order or [("Id", False)]):
            rows.sort(key=lambda r, n=name: (r[n] is not None, r[n] if r[n] is not None else 0),  # type: ignore[misc]
                      reverse=descending)
        ids = [str(r["Id"]) for r in rows]
        return ids[:query.limit] if query.limit is not None else ids

    def _eval(self, node: Any, row: dict[str, Any], include_deleted: bool) -> bool:
        if node is None:
            return True
        kind = node[0]
        if kind == "and":
            return all(self._eval(n, row, include_deleted) for n in node[1])
        if kind == "or":
            return any(self._eval(n, row, include_deleted) for n in node[1])
        if kind == "not":
            return not self._eval(node[1], row, include_deleted)
        if kind == "cmp":
            return _compare(row[node[1]], node[2], node[3])
        if kind == "like":
            pattern = re.escape(str(node[2])).replace("%", ".*").replace("_", ".")
            return row[node[1]] is not None and re.fullmatch(pattern, str(row[node[1]]), re.IGNORECASE) is not None
        if kind == "in":
            values = node[2]
            if isinstance(values, Query):
                self._check(values)
                table = self.tables[values.sobject]
                values = {table[i][values.fields[0]] for i in self._select(values, include_deleted=False)}
            return bool((row[node[1]] in values) != node[3])
        raise SoqlError("MALFORMED_QUERY", f"cannot evaluate {node!r}")

    def _render(self, sobject: str, query: Query, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": {"type": sobject, "url": f"/services/data/v{self.api_version}/sobjects/"
                                                                     f"{sobject}/{row['Id']}"}}
        for name in query.fields:
            out[name] = _json_value(row[name])
        for child in query.children:
            child_object, key = CHILD_RELATIONSHIPS[(sobject, child.sobject)]
            table = self.tables[child_object]
            ids = [i for i in self._select(child, include_deleted=False, sobject=child_object)
                   if table[i][key] == row["Id"]]
            out[child.sobject] = None if not ids else {
                "totalSize": len(ids), "done": True,
                "records": [self._render(child_object, child, table[i]) for i in ids]}
        return out


def _check_semi_joins(node: Any) -> None:
    """Semi-joins only at the top level of WHERE (joined by AND), at most two, as Salesforce's SOQL requires."""
    top: list[Any] = []
    nested: list[Any] = []

    def walk(n: Any, at_top: bool) -> None:
        if n is None:
            return
        if n[0] == "and":
            for child in n[1]:
                walk(child, at_top)
        elif n[0] in ("or", "not"):
            for child in (n[1] if n[0] == "or" else [n[1]]):
                walk(child, False)
        elif n[0] == "in" and isinstance(n[2], Query):
            (top if at_top else nested).append(n)

    walk(node, True)
    if nested:
        raise SoqlError("MALFORMED_QUERY", "Semi join sub-selects are only allowed at the top level WHERE "
                                           "expressions and not in nested WHERE expressions.")
    if len(top) > 2:
        raise SoqlError("MALFORMED_QUERY", "Maximum of 2 semi join sub-selects are allowed")


def _where_fields(node: Any) -> list[str]:
    if node is None:
        return []
    if node[0] in ("and", "or"):
        return [f for n in node[1] for f in _where_fields(n)]
    if node[0] == "not":
        return _where_fields(node[1])
    return [node[1]]


def _batch_size(header: str) -> int:
    match = re.search(r"batchSize=(\d+)", header)
    return max(200, min(2000, int(match[1]))) if match else 2000


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)  # JSON numbers, as Salesforce sends them
    return value


NOT_FOUND = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]


def _answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response.json(payload, status, headers, content_type="application/json;charset=UTF-8")


def _loads(body: bytes) -> Any:
    return json.loads(body)


def add_sample_opportunities(sim: SalesforceSimulator, count: int) -> None:
    """``count`` closed-won partner deals, created a day ago."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    clock = sim.clock
    sim.clock = lambda: start
    try:
        for n in range(count):
            sim.add_opportunity(Name=f"Deal {n}", StageName="Closed Won", Amount=Decimal(1000 + 10 * n),
                                PartnerAccountId=f"001{n % 5:012d}AAA", OwnerId=f"005{n % 3:012d}AAA")
    finally:
        sim.clock = clock
