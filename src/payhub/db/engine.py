"""Engines for the two supported databases.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` write transactions and a busy timeout, one daemon per file. The
database file is created owner-only before SQLite first opens it (see :mod:`payhub.files`), so its ``-wal`` and
``-shm`` files get the same mode. PostgreSQL replicas share work with ``FOR UPDATE SKIP LOCKED`` (see
:mod:`payhub.pipeline`).
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import quote

from filelock import FileLock, Timeout
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from payhub import files
from payhub.errors import PayhubError

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 10  # seconds a PostgreSQL connection attempt may take (libpq ``connect_timeout``)
WAL_CHECKPOINT_PAGES = 16_000
"""SQLite copies its write-ahead log back into the database file once it holds this many pages (about 64 MB), not
every 1,000 (SQLite's default): index pages that many commits change in a row are written back once instead of at
every checkpoint."""


MASK = "***"
_SECRET_QUERY_WORDS = ("pass", "pwd", "secret", "token", "key", "cred", "auth")
"""A query parameter whose lower-cased name contains one of these is shown masked (``password``, ``passwd``,
``sslpassword``, ``sslkey``, ``api_token``, ``client_secret`` ...): masking a harmless one costs nothing."""


def shown_url(url: str) -> str:
    """``url`` as payhub shows it (``config show``, logs, errors): the password and every secret-looking query
    parameter replaced by ``***``. A URL that does not parse, or parses ambiguously (more than one ``@`` before the
    query, as when a password holds an unescaped ``@``), is shown fully masked."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return MASK
    if url.split("?", 1)[0].count("@") > 1:
        return MASK
    pairs = []
    for name, values in parsed.query.items():
        secret = any(word in name.lower() for word in _SECRET_QUERY_WORDS)
        for value in (values,) if isinstance(values, str) else values:
            pairs.append(f"{quote(name, safe='')}={MASK if secret else quote(value, safe='/:,')}")
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    return f"{shown}?{'&'.join(pairs)}" if pairs else shown


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL, or None (another database, ``:memory:``, a ``file:`` URI)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return database


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", sqlite_busy_timeout: float = 30.0) -> Engine:
    """Create an engine for ``url``; SQLite connections get WAL, foreign keys, immediate transactions and a busy
    timeout of ``sqlite_busy_timeout`` seconds. A PostgreSQL connection attempt gives up after CONNECT_TIMEOUT
    seconds unless the URL sets ``connect_timeout``."""
    if url.startswith("sqlite"):
        # A file database keeps a small pool of connections (set up once each); :memory: must not be pooled apart.
        pool = {"poolclass": NullPool} if ":memory:" in url else {"pool_size": 2, "max_overflow": 2}
        engine = create_engine(
            url, connect_args={"timeout": sqlite_busy_timeout, "check_same_thread": False}, **pool)
        path = sqlite_file(url)

        if path is not None:
            @event.listens_for(engine, "do_connect")
            def _private_file(_dialect: Any, _record: Any, _args: Any, _kwargs: Any) -> None:
                try:
                    files.prepare_sqlite_file(path)
                except OSError as exc:  # a missing directory, no permission: SQLite's own error says it better
                    log.debug("cannot prepare %s: %s", path, exc)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={round(sqlite_busy_timeout * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    from payhub.db.schema import use_postgresql_options

    use_postgresql_options()  # the schema's PostgreSQL operator classes, declared once this dialect is in use
    timeout = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": CONNECT_TIMEOUT}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=timeout)


def lock_sqlite_file(database: str) -> FileLock:
    """Take the one-daemon-per-file lock of a SQLite database, or raise PayhubError.

    The lock is ``<real path>.lock``: symlinks (to the file or to a directory above it) are resolved first, so every
    name reaching the file through symlinks takes the same lock. A hard link is a second name that cannot be traced
    back, so a database file with more than one hard link is refused.
    """
    real = os.path.realpath(database)
    try:
        links = os.stat(real).st_nlink
    except FileNotFoundError:
        links = 1
    if links > 1:
        raise PayhubError(f"the database file {real} has {links} hard links; payhub locks a database by its path and "
                          "cannot see the other names, so it needs exactly one (use a symlink instead)")
    lock = FileLock(real + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise PayhubError(f"another payhub daemon is running on {real} (one per SQLite file; "
                          f"lock {real}.lock)") from None
    return lock


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
