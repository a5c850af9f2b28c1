"""The ASGI app: ``/healthz``, ``/readyz``, ``/metrics``, ``/webhooks/<source>`` and ``/api/v1`` (docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from payhub import __version__
from payhub.errors import PayhubError
from payhub.http.audit import RequestAudit
from payhub.http.auth import FailureLimiter
from payhub.http.limits import RequestLimits
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
                  docs_url=None, redoc_url=None,
                  description="Channel-partner incentives paid exactly once: read, act and audit (docs/api.md).")
    app.state.face = Face(rt, worker, FailureLimiter(settings.auth_failures_per_minute))

    @app.exception_handler(PayhubError)
    async def _refused(request: Request, exc: PayhubError) -> JSONResponse:
        request.state.refusal = str(exc)
        return JSONResponse({"error": str(exc)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                    for e in exc.errors()]
        request.state.refusal = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)[:500]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    for router in _routers():
        app.include_router(router)
    # The last added runs first: the audit entry records every answer, the limits' refusals included.
    app.add_middleware(RequestLimits, max_body=settings.max_body_bytes, read_timeout=settings.read_timeout_seconds)
    app.add_middleware(RequestAudit, rt=rt)
    return app


def _routers() -> list[Any]:
    """The routers of the app, each in its own module."""
    from payhub.http import metrics, routes_actions, routes_health, routes_reads, routes_tokens, routes_webhooks
    from payhub.http.routes_export import router as export_router

    return [routes_health.router, metrics.router, routes_actions.router, routes_tokens.router, routes_reads.router,
            routes_webhooks.router, export_router]
