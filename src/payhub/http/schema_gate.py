"""Requests are answered 503 while the database schema is not the one this payhub needs (pure ASGI middleware).

Every command refuses an out-of-date schema (exit 3); the HTTP face keeps answering its probes so that
``/readyz`` can say what is wrong, but reads, actions and webhooks wait: an older ``payhub serve`` must not write
into a database a newer payhub has migrated, nor a newer one into a database not yet migrated. The revision is read
at most every :data:`CHECK_SECONDS`.
"""

from __future__ import annotations

import threading
import time

import anyio
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from payhub.db import migrate
from payhub.http.limits import answer_json

CHECK_SECONDS = 5.0


class SchemaGate:
    """Answers 503 (not audited: nothing may be written) unless the schema is at this payhub's head revision."""

    def __init__(self, app: ASGIApp, engine: Engine, probes: frozenset[str]) -> None:
        self.app = app
        self.engine = engine
        self.probes = probes
        self.head = migrate.head_revision()
        self._checked = -CHECK_SECONDS
        self._problem: str | None = None
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """Why the schema is not usable, or None (also when it cannot be read now: the request then meets the
        database's own error)."""
        with self._lock:
            if time.monotonic() - self._checked < CHECK_SECONDS:
                return self._problem
            try:
                with self.engine.connect() as conn:
                    current = tuple(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
            except DBAPIError:
                return None
            if current == (self.head,):
                self._problem = None
            else:
                where = f"at revision {', '.join(current)}" if current else "empty"
                self._problem = f"the database schema is {where}, but this payhub needs revision {self.head}"
            self._checked = time.monotonic()
            return self._problem

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in self.probes:
            problem = await anyio.to_thread.run_sync(self.problem)
            if problem is not None:
                await answer_json(send, 503, problem)
                return
        await self.app(scope, receive, send)
