"""How the probes (``/readyz``, ``/metrics``) read the database: an engine of their own, with bounded waits.

On PostgreSQL the probes' engine keeps one connection (a new one costs the server a process, tens of milliseconds on
a busy host), checked with a round trip before each use. Connecting gives up after :data:`PROBE_TIMEOUT_SECONDS`,
data the server does not acknowledge within that time drops the connection, and every read runs under a statement
timeout; so a probe answers within seconds whether the server is down, unreachable or stuck. On SQLite each read
connects afresh (it costs a tenth of a millisecond) and reads plainly: it never takes the write lock from the worker
(the runtime's engine begins each transaction with ``BEGIN IMMEDIATE``), and a database file that does not exist is
reported, never created.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from payhub.db.engine import sqlite_file
from payhub.db.migrate import head_revision
from payhub.http.state import face

if TYPE_CHECKING:
    from payhub.http.metrics import DbMetrics

PROBE_TIMEOUT_SECONDS = 2.0  # connecting, a statement of /readyz, a SQLite lock
_made = threading.Lock()


def reader_engine(url: str) -> Engine:
    """An engine for the probes' reads of the database at ``url`` (see the module docstring)."""
    if url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool,
                             connect_args={"timeout": PROBE_TIMEOUT_SECONDS, "check_same_thread": False})
    timeout = math.ceil(PROBE_TIMEOUT_SECONDS)
    return create_engine(url, pool_size=1, max_overflow=2, pool_timeout=PROBE_TIMEOUT_SECONDS, pool_pre_ping=True,
                         connect_args={"connect_timeout": timeout, "tcp_user_timeout": timeout * 1000,
                                       "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                                       "keepalives_count": 3})


@contextmanager
def reading(engine: Engine, timeout: float) -> Iterator[Connection]:
    """A connection whose statements may each run ``timeout`` seconds (PostgreSQL); rolled back and given back
    after."""
    path = sqlite_file(engine.url.render_as_string(hide_password=False))
    if path is not None and not os.path.exists(path):
        raise FileNotFoundError(f"the database file {path} does not exist")
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # committed, so that a rollback after a failed read keeps it
            conn.exec_driver_sql(f"SET statement_timeout = {round(timeout * 1000)}")
            conn.commit()
        yield conn


@dataclass
class Probes:
    """What the probes of one app share, made on their first request."""

    engine: Engine
    head: str  # the schema revision this payhub needs
    metrics: DbMetrics


def probes(request: Request) -> Probes:
    """The :class:`Probes` of the app serving ``request``."""
    state = request.app.state
    found: Probes | None = getattr(state, "probes", None)
    if found is None:
        with _made:
            found = getattr(state, "probes", None)
            if found is None:
                from payhub.http.metrics import DbMetrics

                rt = face(request).rt
                engine = reader_engine(rt.settings.database_url)
                found = Probes(engine, head_revision(),
                               DbMetrics(engine, rt.settings.http.metrics_refresh_seconds, rt.stop_event))
                state.probes = found
    return found
