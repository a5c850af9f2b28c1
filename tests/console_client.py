"""A browser-like client of the console for tests: signs in with a token, keeps the session cookie, reads the CSRF
token from each page and sends it back with form posts, through httpx's ASGI transport (no server, no browser).

Test modules import from here (``from console_client import Console``).
"""

from __future__ import annotations

import html
import re
from typing import Any

import anyio
import httpx

from payhub.http.app import create_app
from payhub.runtime import Runtime
from payhub.tokens import Role, create

CLIENT = "198.51.100.20"
BASE = "http://payhub.test"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_CHECK = re.compile(r'name="sign_in_check" value="([^"]+)"')


class Console:
    """One browser: ``sign_in`` as a new token of a role, then ``get`` pages and ``post`` forms."""

    def __init__(self, rt: Runtime, app: Any = None) -> None:
        self.rt = rt
        self.app = app if app is not None else create_app(rt)
        self.cookies = httpx.Cookies()
        self.csrf = ""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(CLIENT, 52000))
            async with httpx.AsyncClient(transport=transport, base_url=BASE, cookies=self.cookies) as client:
                answer = await client.request(method, path, **kwargs)
                self.cookies = client.cookies
                return answer

        answer = anyio.run(call)
        found = _CSRF.search(answer.text) if answer.headers.get("content-type", "").startswith("text/html") else None
        if found:
            self.csrf = html.unescape(found.group(1))
        return answer

    def sign_in(self, name: str, role: Role = "operator") -> str:
        """Make a token ``name`` of ``role`` and sign in with it; the token is returned."""
        token = create(self.rt, name, role)
        answer = self.login(token)
        assert answer.status_code == 303, answer.text
        self.get("/console/")
        return token

    def login(self, token: str, next_path: str = "/console/", **kwargs: Any) -> httpx.Response:
        """Open the sign-in page (for its form's check value) and post ``token`` with it."""
        page = self.get("/console/login")
        check = _CHECK.search(page.text)
        assert check, page.text
        return self.request("POST", "/console/login", data={"token": token, "next": next_path,
                                                             "sign_in_check": html.unescape(check.group(1))}, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True,
             **kwargs: Any) -> httpx.Response:
        """Post a form with the session's CSRF token (unless ``csrf`` is False)."""
        fields = dict(data or {})
        if csrf:
            fields.setdefault("csrf", self.csrf)
        return self.request("POST", path, data=fields, **kwargs)
