"""Who may do what over HTTP, on SQLite and PostgreSQL: bearer tokens and roles (401 with a challenge, 403), token
management for admins (/api/v1/tokens), the audit entry of every request, throttled failed sign-ins, tokens kept
out of logs and the audit log, and X-Forwarded-For trusted only from the configured proxies.

Requests go through httpx's ASGI transport, from a chosen client address; the forwarded-address tests use a real
uvicorn server on a free loopback port.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from cli_helpers import migrated, write_config
from fastapi import APIRouter, Depends, Query

from payhub import tokens
from payhub.audit import verify
from payhub.clock import utcnow
from payhub.db.schema import api_tokens, audit_log
from payhub.http.app import create_app
from payhub.http.auth import require
from payhub.http.server import HttpServer
from payhub.runtime import Runtime
from payhub.settings import load_settings

CLIENT = "198.51.100.23"
HTTP = """\
[http]
auth_failures_per_minute = 3
max_body_bytes = 1024
read_timeout_seconds = 0.5
"""


class Api:
    """The app over ``rt``, called through httpx's ASGI transport; tokens are made by the CLI's function."""

    def __init__(self, rt: Runtime, *routers: APIRouter) -> None:
        self.rt = rt
        self.app = create_app(rt)
        for router in routers:
            self.app.include_router(router)
        self.made: dict[str, str] = {}

    def token(self, name: str, role: tokens.Role = "admin") -> str:
        if name not in self.made:
            self.made[name] = tokens.create(self.rt.as_actor("user:root", "cli@test"), name, role)
        return self.made[name]

    def call(self, method: str, path: str, *, token: str | None = None, client: str = CLIENT,
             headers: dict[str, str] | list[tuple[str, str]] | None = None, raise_errors: bool = True,
             **kwargs: Any) -> httpx.Response:
        sent = httpx.Headers(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(client, 50123), raise_app_exceptions=raise_errors)
            async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as http:
                return await http.request(method, path, headers=sent, **kwargs)

        return anyio.run(go)

    def entries(self, action: str | None = "api.request") -> list[dict[str, Any]]:
        query = sa.select(audit_log).order_by(audit_log.c.seq)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        with self.rt.engine.connect() as conn:
            return [dict(r, detail=json.loads(r["detail"])) for r in conn.execute(query).mappings()]

    def last(self) -> dict[str, Any]:
        return self.entries()[-1]


@pytest.fixture
def runtime(tmp_path: Path, db_url: str) -> Iterator[Callable[[str], Runtime]]:
    made: list[Runtime] = []

    def factory(body: str = HTTP) -> Runtime:
        migrated(db_url)
        rt = Runtime(load_settings(write_config(tmp_path, db_url, body)))
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        rt.close()


def probe_router() -> APIRouter:
    """One route per role, answering who called."""
    router = APIRouter(prefix="/api/v1/test")
    for role in tokens.ROLES:
        def answer(principal: tokens.Principal = Depends(require(role)),  # noqa: B008
                   limit: int | None = None, actor: list[str] | None = Query(None)) -> dict[str, str]:  # noqa: B008
            return {"actor": principal.actor}

        router.add_api_route(f"/{role}", answer, methods=["GET"])
    return router


@pytest.fixture
def api(runtime: Callable[[str], Runtime]) -> Api:
    return Api(runtime(HTTP), probe_router())


def test_each_role_may_what_it_includes_and_no_more(api: Api) -> None:
    for holder in tokens.ROLES:
        token = api.token(f"{holder}-1", holder)
        for needed in tokens.ROLES:
            answer = api.call("GET", f"/api/v1/test/{needed}", token=token)
            if tokens.ROLES.index(holder) >= tokens.ROLES.index(needed):
                assert answer.status_code == 200 and answer.json() == {"actor": f"token:{holder}-1"}
                assert (api.last()["actor"], api.last()["outcome"]) == (f"token:{holder}-1", "ok")
            else:
                assert answer.status_code == 403, answer.text
                assert "WWW-Authenticate" not in answer.headers
                assert answer.json()["detail"] == f"the {holder} role may not do this; it needs the {needed} role"
                entry = api.last()
                assert (entry["actor"], entry["outcome"], entry["detail"]["status"]) == (
                    f"token:{holder}-1", "denied", 403)
                assert entry["detail"]["reason"] == f"role {holder} may not do this (needs {needed})"


@pytest.mark.slow  # every route with every role
def test_every_api_route_needs_a_token_of_the_documented_role(runtime: Callable[[str], Runtime]) -> None:
    """Over every operation of the OpenAPI document: reads need auditor, actions operator, tokens admin (asked on
    an empty database, with no body: a route past its role check answers anything but 401 and 403)."""
    api = Api(runtime(HTTP.replace("= 3", "= 10000")))
    spec = api.call("GET", "/api/v1/openapi.json").json()
    holders = {role: api.token(f"{role}-r", role) for role in tokens.ROLES}
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/") or path.startswith("/api/v1/test/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in operations:
            needed = "admin" if path.startswith("/api/v1/tokens") else "auditor" if method == "get" else "operator"
            assert api.call(method.upper(), concrete).status_code == 401, f"{method} {path}"
            for holder, token in holders.items():
                status = api.call(method.upper(), concrete, token=token).status_code
                allowed = tokens.ROLES.index(holder) >= tokens.ROLES.index(needed)
                assert (status not in (401, 403)) == allowed, f"{method} {path} as {holder}: {status}"
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize(("header", "reason"), [
    (None, "token missing"),
    ("Basic dXNlcjpwYXNz", "token malformed"),
    ("Bearer", "token malformed"),
    ("Bearer ", "token malformed"),
    ("Token {token}", "token malformed"),
    ("{token}", "token malformed"),
    ("Bearer {token} extra", "token malformed"),
    ("Bearer {token}x", "token malformed"),
    ("Bearer phk_" + "Z" * 43, "token unknown"),
])
def test_no_valid_token_is_401_with_a_challenge(api: Api, header: str | None, reason: str) -> None:
    token = api.token("root")
    headers = {"Authorization": header.format(token=token)} if header is not None else {}
    answer = api.call("GET", "/api/v1/tokens", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="payhub"'
    assert token not in answer.text
    entry = api.last()
    assert (entry["actor"], entry["outcome"], entry["origin"]) == ("anonymous", "denied", f"http@{CLIENT}")
    assert entry["detail"] == {"method": "GET", "status": 401, "reason": reason}


def test_two_authorization_headers_are_refused(api: Api) -> None:
    token = api.token("root")
    answer = api.call("GET", "/api/v1/tokens", headers=[("Authorization", f"Bearer {token}"),
                                                        ("Authorization", f"Bearer {token}")])
    assert answer.status_code == 401 and api.last()["detail"]["reason"] == "token malformed"


def test_revoked_and_expired_tokens_are_refused_at_once(api: Api) -> None:
    admin, gone, old = api.token("root"), api.token("gone", "auditor"), api.token("old", "auditor")
    assert api.call("GET", "/api/v1/test/auditor", token=gone).status_code == 200
    assert api.call("DELETE", "/api/v1/tokens/gone", token=admin).status_code == 200
    refused = api.call("GET", "/api/v1/test/auditor", token=gone)
    assert refused.status_code == 401 and refused.json()["detail"] == "the token is revoked"
    assert api.last()["detail"] == {"method": "GET", "status": 401, "reason": "token revoked", "token_name": "gone"}
    assert api.last()["actor"] == "anonymous"
    with api.rt.engine.begin() as conn:
        conn.execute(sa.update(api_tokens).where(api_tokens.c.name == "old")
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    refused = api.call("GET", "/api/v1/test/auditor", token=old)
    assert refused.status_code == 401 and refused.json()["detail"] == "the token is expired"
    assert api.last()["detail"]["token_name"] == "old"


def test_admins_manage_tokens_over_http(api: Api) -> None:
    admin = api.token("root")
    made = api.call("POST", "/api/v1/tokens", token=admin,
                    json={"name": "ci", "role": "operator", "expires_at": "2999-01-31"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert made.headers["Cache-Control"] == "no-store"
    assert list(body) == ["token", "name", "role", "expires_at"]
    assert (body["name"], body["role"], body["expires_at"]) == ("ci", "operator", "2999-02-01T00:00:00Z")
    new = body["token"]
    assert api.call("GET", "/api/v1/test/operator", token=new).json() == {"actor": "token:ci"}

    exact = api.call("POST", "/api/v1/tokens", token=admin,
                     json={"name": "cron", "role": "auditor", "expires_at": "2999-01-31T18:00:00+02:00"})
    assert exact.json()["expires_at"] == "2999-01-31T16:00:00Z"
    forever = api.call("POST", "/api/v1/tokens", token=admin, json={"name": "ops@eu", "role": "admin"})
    assert forever.status_code == 201 and forever.json()["expires_at"] is None

    listed = api.call("GET", "/api/v1/tokens", token=admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [(t["name"], t["role"], t["state"], t["created_by"]) for t in items] == [
        ("root", "admin", "active", "user:root"), ("ci", "operator", "active", "token:root"),
        ("cron", "auditor", "active", "token:root"), ("ops@eu", "admin", "active", "token:root")]
    assert set(items[0]) == {"name", "role", "state", "created_at", "created_by", "expires_at", "revoked_at",
                             "last_used_at"}
    assert items[0]["last_used_at"] is not None and items[1]["last_used_at"] is not None
    assert items[2]["last_used_at"] is None

    revoked = api.call("DELETE", "/api/v1/tokens/ci", token=admin)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked" and revoked.json()["revoked_at"]
    assert api.call("GET", "/api/v1/test/auditor", token=new).status_code == 401
    again = api.call("DELETE", "/api/v1/tokens/ci", token=admin)
    assert again.status_code == 409 and "already revoked" in again.json()["error"]
    missing = api.call("DELETE", "/api/v1/tokens/nope", token=admin)
    assert missing.status_code == 404 and missing.json() == {"detail": "no token named 'nope'"}
    taken = api.call("POST", "/api/v1/tokens", token=admin, json={"name": "ci", "role": "auditor"})
    assert taken.status_code == 409 and "exists already" in taken.json()["error"]

    decided = [(e["actor"], e["action"], e["subject_id"], e["origin"]) for e in api.entries(None)
               if e["action"].startswith("token.")]
    assert decided == [
        ("user:root", "token.created", "root", "cli@test"),
        ("token:root", "token.created", "ci", f"http@{CLIENT}"),
        ("token:root", "token.created", "cron", f"http@{CLIENT}"),
        ("token:root", "token.created", "ops@eu", f"http@{CLIENT}"),
        ("token:root", "token.revoked", "ci", f"http@{CLIENT}")]
    requests = [(e["actor"], e["subject_id"], e["detail"]["method"], e["detail"]["status"], e["outcome"])
                for e in api.entries() if e["subject_id"].startswith("/api/v1/tokens")]
    assert requests == [
        ("token:root", "/api/v1/tokens", "POST", 201, "ok"), ("token:root", "/api/v1/tokens", "POST", 201, "ok"),
        ("token:root", "/api/v1/tokens", "POST", 201, "ok"), ("token:root", "/api/v1/tokens", "GET", 200, "ok"),
        ("token:root", "/api/v1/tokens/ci", "DELETE", 200, "ok"),
        ("token:root", "/api/v1/tokens/ci", "DELETE", 409, "refused"),
        ("token:root", "/api/v1/tokens/nope", "DELETE", 404, "refused"),
        ("token:root", "/api/v1/tokens", "POST", 409, "refused")]
    with api.rt.engine.connect() as conn:
        assert verify(conn).ok


@pytest.mark.parametrize(("body", "where", "problem"), [
    ({"name": "a b", "role": "auditor"}, "body.name", "String should match pattern"),
    ({"name": "phk_lookalike", "role": "auditor"}, "body.name", "must not look like a token"),
    ({"name": "x", "role": "root"}, "body.role", "Input should be"),
    ({"name": "x", "role": "auditor", "expires_at": "2001-01-01"}, "body.expires_at", "not in the future"),
    ({"name": "x", "role": "auditor", "expires_at": "2999-01-01T10:00"}, "body.expires_at", "no timezone offset"),
    ({"name": "x", "role": "auditor", "expires_at": "soon"}, "body.expires_at", "not ISO 8601"),
    ({"role": "auditor"}, "body.name", "Field required"),
])
def test_a_bad_token_request_is_422_and_creates_nothing(api: Api, body: dict[str, Any], where: str,
                                                        problem: str) -> None:
    answer = api.call("POST", "/api/v1/tokens", token=api.token("root"), json=body)
    assert answer.status_code == 422, answer.text
    (found,) = answer.json()["problems"]
    assert found["where"] == where and problem in found["problem"]
    with api.rt.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_tokens)).scalar_one() == 1
    assert api.last()["outcome"] == "refused" and problem in api.last()["detail"]["reason"]


def test_openapi_describes_the_bearer_scheme_and_the_token_models(api: Api) -> None:
    spec = api.call("GET", "/api/v1/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "phk_<43 characters>",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"]}
    tokens_path = spec["paths"]["/api/v1/tokens"]
    for operation in (tokens_path["get"], tokens_path["post"], spec["paths"]["/api/v1/tokens/{name}"]["delete"]):
        assert operation["security"] == [{"bearer": []}]
    post = tokens_path["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TokenRequest"}
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TokenCreated"}
    assert {"401", "403", "409", "422"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["TokenRequest"]["required"]) == {"name", "role"}
    assert schemas["TokenRequest"]["properties"]["role"]["enum"] == ["auditor", "operator", "admin"]
    assert "token_hash" not in json.dumps(schemas["TokenOut"])
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            protected = path.startswith("/api/v1/")
            assert ("security" in operation) == protected, f"{method} {path}"


def test_every_request_is_audited_reads_included(api: Api) -> None:
    token = api.token("reader", "auditor")
    api.call("GET", "/api/v1/test/auditor", token=token, params={"limit": "5", "actor": ["a", "b"]})
    entry = api.last()
    assert (entry["action"], entry["actor"], entry["origin"], entry["subject_type"], entry["subject_id"]) == (
        "api.request", "token:reader", f"http@{CLIENT}", "api", "/api/v1/test/auditor")
    assert entry["outcome"] == "ok"
    assert entry["detail"] == {"method": "GET", "status": 200, "query": {"limit": "5", "actor": ["a", "b"]}}
    api.call("GET", "/api/v1/nothing-here", client="192.0.2.9")
    entry = api.last()
    assert (entry["actor"], entry["origin"], entry["outcome"], entry["detail"]) == (
        "anonymous", "http@192.0.2.9", "refused", {"method": "GET", "status": 404})
    before = len(api.entries())
    assert api.call("GET", "/healthz").status_code == 200
    assert len(api.entries()) == before  # the probes are not audited


def test_last_used_at_is_written_at_most_once_a_minute(api: Api) -> None:
    token = api.token("busy", "auditor")
    writes: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_TOKENS"):
            writes.append(statement)

    sa.event.listen(api.rt.engine, "before_cursor_execute", count)
    for _ in range(5):
        assert api.call("GET", "/api/v1/test/auditor", token=token).status_code == 200
    assert len(writes) == 1
    with api.rt.engine.connect() as conn:
        first = conn.execute(sa.select(api_tokens.c.last_used_at).where(api_tokens.c.name == "busy")).scalar_one()
    assert first is not None and utcnow() - first < timedelta(minutes=1)
    with api.rt.engine.begin() as conn:
        conn.execute(sa.update(api_tokens).where(api_tokens.c.name == "busy")
                     .values(last_used_at=first - timedelta(seconds=61)))
    writes.clear()
    api.call("GET", "/api/v1/test/auditor", token=token)
    api.call("GET", "/api/v1/test/auditor", token=token)
    assert len(writes) == 1
    with api.rt.engine.connect() as conn:
        assert conn.execute(sa.select(api_tokens.c.last_used_at)
                            .where(api_tokens.c.name == "busy")).scalar_one() >= first


def test_failed_sign_ins_are_throttled_per_origin(api: Api) -> None:
    clock = [1000.0]
    api.app.state.face.limiter.clock = lambda: clock[0]
    good = api.token("root")
    bad = "phk_" + "x" * 43
    assert [api.call("GET", "/api/v1/tokens", token=bad).status_code for _ in range(3)] == [401] * 3
    throttled = api.call("GET", "/api/v1/tokens", token=bad)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "60"
    clock[0] += 20
    throttled = api.call("GET", "/api/v1/tokens", token=good)  # the token is not even looked at
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "40"
    assert api.call("GET", "/api/v1/tokens", token=good, client="192.0.2.50").status_code == 200  # another origin
    assert api.call("GET", "/api/v1/tokens").status_code == 429
    outcomes = [(e["origin"], e["detail"]["status"], e["outcome"], e["detail"].get("reason"))
                for e in api.entries()]
    assert outcomes == [(f"http@{CLIENT}", 401, "denied", "token unknown")] * 3 + [
        (f"http@{CLIENT}", 429, "denied", "too many failed sign-ins"),  # only the first throttled one
        ("http@192.0.2.50", 200, "ok", None)]
    clock[0] += 40
    assert api.call("GET", "/api/v1/tokens", token=good).status_code == 200
    for _ in range(3):
        api.call("GET", "/api/v1/tokens")
    assert api.call("GET", "/api/v1/tokens").status_code == 429
    assert api.call("GET", "/api/v1/tokens").status_code == 429
    statuses = [e["detail"]["status"] for e in api.entries()[5:]]
    assert statuses == [200, 401, 401, 401, 429]  # a new minute: its first throttled request is audited again


@pytest.mark.slow  # every route, logs and audit read back
def test_tokens_never_reach_the_logs_or_the_audit_log(runtime: Callable[[str], Runtime],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = Api(runtime(HTTP.replace("= 3", "= 10000")), probe_router())
    admin = api.token("root")
    made = api.call("POST", "/api/v1/tokens", token=admin, json={"name": "ci", "role": "auditor"}).json()["token"]
    revoked = api.token("gone", "auditor")
    api.call("DELETE", "/api/v1/tokens/gone", token=admin)
    secrets = [admin, made, revoked]
    for token in secrets:
        api.call("GET", "/api/v1/test/auditor", token=token)
        api.call("GET", "/api/v1/test/auditor", params={"token": token})
        api.call("GET", "/api/v1/test/auditor", params={"access_token": token, "x": token, token: "1"})
        api.call("GET", f"/api/v1/test/auditor?{token}")
        api.call("GET", f"/api/v1/test/auditor?q={token}&pad={'p' * 2100}")
        api.call("GET", f"/api/v1/test/auditor?q={token.replace('_', '%5F')}&pad={'p' * 2100}")
        api.call("DELETE", f"/api/v1/tokens/{token}", token=admin)
        api.call("GET", f"/api/v1/{token}/x")
        for header in (f"Token {token}", token, f"Bearer {token} {token}", f"Bearer {token}x", f"bearer  {token}",
                       f"Basic {token}"):
            api.call("GET", "/api/v1/test/auditor", headers={"Authorization": header})
    api.call("POST", "/api/v1/tokens", token=admin, json={"name": made, "role": "auditor"})
    with api.rt.engine.connect() as conn:
        hashes = list(conn.execute(sa.select(api_tokens.c.token_hash)).scalars())
        rows = [json.dumps(dict(r), default=str) for r in conn.execute(sa.select(audit_log)).mappings()]
    assert len(rows) >= 45 and len(hashes) == 3
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # not the client's
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args}" for r in server_side)
    for secret in [*secrets, *hashes]:
        assert all(secret not in row for row in rows)
        assert secret not in logged
    masked = [r for r in rows if "phk_**********" in r]
    assert masked and any('"token": "**********"' in r or '\\"token\\":\\"**********\\"' in r for r in rows)


@contextmanager
def serving(rt: Runtime) -> Iterator[HttpServer]:
    server = HttpServer(rt, None, ("127.0.0.1", 0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def raw_get(server: HttpServer, path: str, headers: dict[str, str]) -> bytes:
    """Send one GET over a plain socket and return the whole answer (the connection is closed after it)."""
    lines = [f"GET {path} HTTP/1.1", "Host: payhub", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(("trusted", "forwarded", "origin"), [
    (["192.0.2.1"], "203.0.113.99", "127.0.0.1"), ([], "203.0.113.99", "127.0.0.1"),
    (["127.0.0.1"], "203.0.113.99", "203.0.113.99"),
    (["127.0.0.1"], "6.6.6.6, 203.0.113.99", "203.0.113.99"),  # the client's own header, appended to by the proxy
    (["127.0.0.1", "10.0.0.2"], "6.6.6.6, 203.0.113.99, 10.0.0.2", "203.0.113.99"),  # a chain of trusted proxies
])
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(runtime: Callable[[str], Runtime], trusted: list[str],
                                                          forwarded: str, origin: str) -> None:
    rt = runtime(HTTP + f"forwarded_allow_ips = {json.dumps(trusted)}\n")
    token = Api(rt).token("root")
    with serving(rt) as server:
        answer = raw_get(server, "/api/v1/tokens", {"Authorization": f"Bearer {token}", "X-Forwarded-For": forwarded})
        assert answer.startswith(b"HTTP/1.1 200 ")
        for _ in range(3):
            raw_get(server, "/api/v1/tokens", {"X-Forwarded-For": "203.0.113.99"})
        throttled = raw_get(server, "/api/v1/tokens", {"X-Forwarded-For": "203.0.113.98"})
    with rt.engine.connect() as conn:
        origins = list(conn.execute(sa.select(audit_log.c.origin).where(audit_log.c.action == "api.request")
                                    .order_by(audit_log.c.seq)).scalars())
    assert origins[0] == f"http@{origin}"
    assert len(origins) == 5
    # Failed sign-ins count against the audited address: a spoofed header does not escape the limit.
    assert throttled.startswith(b"HTTP/1.1 429 ") == (origin == "127.0.0.1")


def test_created_at_and_expiry_are_utc(api: Api) -> None:
    admin = api.token("root")
    api.call("POST", "/api/v1/tokens", token=admin,
             json={"name": "t", "role": "auditor", "expires_at": "2999-06-30T23:30:00-01:00"})
    item = api.call("GET", "/api/v1/tokens", token=admin).json()["items"][1]
    assert item["expires_at"] == "2999-07-01T00:30:00Z"
    assert datetime.fromisoformat(item["created_at"]).tzinfo is not None
    assert datetime.fromisoformat(item["created_at"]) <= datetime.now(UTC)
