"""Engines for the two supported databases.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` write transactions and a busy timeout, one daemon per file.
PostgreSQL replicas share work with ``FOR UPDATE SKIP LOCKED`` (see :mod:`payhub.pipeline`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url``; SQLite connections get WAL, foreign keys and immediate transactions."""
    if url.startswith("sqlite"):
        # A file database keeps a small pool of connections (set up once each); :memory: must not be pooled apart.
        pool = {"poolclass": NullPool} if ":memory:" in url else {"pool_size": 2, "max_overflow": 2}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
