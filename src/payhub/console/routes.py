"""The console's routers and static files, added to the HTTP app when ``console.enabled`` (:func:`install`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from payhub.console import (
    routes_approvals,
    routes_audit,
    routes_funds,
    routes_login,
    routes_overview,
    routes_payouts,
    routes_search,
    routes_statements,
)
from payhub.console.web import PREFIX, STATIC, SecurityHeaders, SignInNeeded, error_page

ROUTERS = [routes_login.router, routes_overview.router, routes_approvals.router, routes_search.router,
           routes_payouts.router, routes_audit.router, routes_funds.router, routes_statements.router]


def is_console(request: Request) -> bool:
    """Whether the request is for the console (its errors are answered as pages)."""
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


def install(app: FastAPI) -> None:
    """Add the console's routes, static files, headers and error pages to ``app``."""
    for router in ROUTERS:
        app.include_router(router)
    app.mount(STATIC, StaticFiles(directory=Path(__file__).parent / "static"), name="console-static")
    app.add_middleware(SecurityHeaders)

    @app.get(PREFIX, include_in_schema=False)
    def _root() -> Response:
        return RedirectResponse(PREFIX + "/", status_code=308)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?next={quote(wanted, safe='')}&ended={exc.reason}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_console(request) and not request.url.path.startswith(STATIC + "/"):
            return await error_page(request, exc.status_code, str(exc.detail), exc.headers)
        return await http_exception_handler(request, exc)
