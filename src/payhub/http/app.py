"""The ASGI app: ``/healthz``, ``/readyz``, ``/metrics``, ``/webhooks/<source>`` and ``/api/v1`` (docs/api.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool

from payhub import __version__
from payhub.console.routes import install as install_console
from payhub.console.routes import is_console
from payhub.console.web import error_page
from payhub.db.engine import sqlite_file
from payhub.db.faults import describe, is_transient
from payhub.errors import PayhubError
from payhub.http.audit import PROBES, RequestAudit
from payhub.http.auth import FailureLimiter, require
from payhub.http.limits import DatabaseFilePresent, RequestLimits
from payhub.http.schema_gate import SchemaGate
from payhub.http.state import Face
from payhub.runtime import Runtime

if TYPE_CHECKING:
    from payhub.worker import Worker

API_PREFIX = "/api/v1"


def create_app(rt: Runtime, worker: Worker | None = None) -> FastAPI:
    """The app over ``rt`` (its engine, settings and plugins). ``worker`` is the daemon's, for readiness and
    metrics, when the app runs inside ``payhub run``."""
    settings = rt.settings.http
    app = FastAPI(title="payhub", version=__version__, openapi_url=f"{API_PREFIX}/openapi.json",
                  docs_url=None, redoc_url=None, dependencies=[Depends(_strict_query), Depends(_strict_json)],
                  description="Channel-partner incentives paid exactly once: read, act and audit (docs/api.md).")
    app.state.face = Face(rt, worker, FailureLimiter(settings.auth_failures_per_minute))

    @app.exception_handler(PayhubError)
    async def _refused(request: Request, exc: PayhubError) -> Response:
        request.state.refusal = str(exc)
        if rt.settings.console.enabled and is_console(request):
            return await error_page(request, 409, str(exc))
        return JSONResponse({"error": str(exc)}, status_code=409)

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database_away(request: Request, exc: Exception) -> JSONResponse:
        if not is_transient(exc):
            raise exc
        request.state.refusal = f"database unavailable: {describe(exc)}"[:500]
        return JSONResponse({"error": "the database is unavailable; try again"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith(API_PREFIX + "/") and getattr(request.state, "principal", None) is None:
            try:  # who asks comes first: a request without a valid token learns nothing about its parameters
                await run_in_threadpool(require("auditor"), request, None)
            except HTTPException as refused:
                if refused.status_code in (401, 429):
                    return JSONResponse({"error": refused.detail}, status_code=refused.status_code,
                                        headers=refused.headers)
        problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                    for e in exc.errors()]
        request.state.refusal = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)[:500]
        if rt.settings.console.enabled and is_console(request):
            return await error_page(request, 422, f"This request is not valid: {request.state.refusal}")
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    for router in _routers():
        app.include_router(router)
    if rt.settings.console.enabled:
        install_console(app)
    # The last added runs first: the audit entry records every answer, the limits' refusals included.
    app.add_middleware(RequestLimits, max_body=settings.max_body_bytes, read_timeout=settings.read_timeout_seconds)
    app.add_middleware(RequestAudit, rt=rt)
    app.add_middleware(SchemaGate, engine=rt.engine, probes=PROBES)
    database = sqlite_file(rt.settings.database_url)
    if database is not None:
        app.add_middleware(DatabaseFilePresent, path=database, probes=PROBES)
    return app


def _strict_query(request: Request) -> None:
    """Query parameters the route does not declare, or a single-valued one given twice, are refused (422): a
    misspelt filter must not widen a read or an export to everything."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.url.path.startswith(API_PREFIX + "/"):
        return
    declared = {param.alias: param for param in _query_params(route)}
    problems = []
    for name in dict.fromkeys(request.query_params.keys()):
        param = declared.get(name)
        if param is None:
            problems.append({"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown query parameter",
                             "input": None})
        elif len(request.query_params.getlist(name)) > 1 and not _is_list(param):
            problems.append({"type": "value_error", "loc": ("query", name), "msg": "given more than once",
                             "input": None})
    if problems:
        raise RequestValidationError(problems)


def _query_params(route: APIRoute) -> list[Any]:
    """The query parameters of the route and of its dependencies."""
    found: list[Any] = []
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        found += dependant.query_params
        pending += dependant.dependencies
    return found


def _is_list(param: Any) -> bool:
    annotation = str(getattr(param.field_info, "annotation", ""))
    return "list" in annotation.lower() or "sequence" in annotation.lower()


class _DuplicateKey(Exception):
    """A JSON object repeats a key."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(f"the key {key!r} is given more than once")
        found[key] = value
    return found


async def _strict_json(request: Request) -> None:
    """A JSON body of an API request whose object repeats a key is refused (422): which value counts would be a
    guess."""
    if request.method in ("GET", "HEAD", "DELETE") or not request.url.path.startswith(API_PREFIX + "/"):
        return
    body = await request.body()
    if not body:
        return
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates)
    except ValueError:
        return  # not JSON: the route's own parsing answers it
    except _DuplicateKey as exc:
        raise RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": str(exc),
                                       "input": None}]) from None


def _routers() -> list[Any]:
    """The routers of the app, each in its own module."""
    from payhub.http import metrics, routes_actions, routes_health, routes_reads, routes_tokens, routes_webhooks
    from payhub.http.routes_export import router as export_router

    return [routes_health.router, metrics.router, routes_actions.router, routes_tokens.router, routes_reads.router,
            routes_webhooks.router, export_router]
