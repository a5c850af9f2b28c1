"""Throwaway databases for tests: a new SQLite file or PostgreSQL database, empty or already migrated.

Migrating a new database with Alembic costs a tenth of a second or more. :func:`migrate_database` and
``throwaway_database(..., migrated=True)`` pay it once per process: the first call migrates a template (a SQLite file
in a private temporary directory, or a PostgreSQL database that refuses connections), and every later migrated
database is a copy of it (a file copy, or ``CREATE DATABASE ... TEMPLATE``). A copy of the SQLite template takes under
a millisecond. The templates hold this payhub's migrations as they were when first used, and are removed when the
process exits.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Literal, NoReturn

import sqlalchemy as sa

from payhub import files
from payhub.db import migrate
from payhub.db.engine import make_engine, sqlite_file

PG_URL_VARIABLE = "PAYHUB_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DatabaseKind = Literal["sqlite", "postgres"]

CONNECT_TIMEOUT = 10
"""Seconds to wait for the PostgreSQL server before the database is declared unavailable."""


class DatabaseUnavailable(RuntimeError):
    """The PostgreSQL server of :func:`throwaway_database` cannot be reached."""


def postgres_server_url() -> str:
    """The URL of a database on the PostgreSQL server for tests: ``$PAYHUB_TEST_PG_URL``, else ``DEFAULT_PG_URL``."""
    return os.environ.get(PG_URL_VARIABLE, DEFAULT_PG_URL)


@contextmanager
def throwaway_database(kind: DatabaseKind, directory: Path,
                       unavailable: Callable[[str], NoReturn] | None = None, *,
                       migrated: bool = False) -> Iterator[str]:
    """Yield the URL of a new database of ``kind``, empty, or at this payhub's schema revision when ``migrated``;
    a PostgreSQL one is dropped when the block ends.

    ``"sqlite"``: the file ``directory / "payhub.db"`` (an empty one is created by its first use; a migrated one is a
    copy of the template), left to ``directory``'s owner.
    ``"postgres"``: a uniquely named database created on the server of :func:`postgres_server_url`, and dropped
    ``WITH (FORCE)`` on exit, whatever connections are still open. When that server cannot be reached (10 s connect
    timeout), ``unavailable`` is called with the reason before anything is yielded (``pytest.skip`` skips the test);
    without it, or if it returns, :class:`DatabaseUnavailable` is raised.

    A pytest fixture parametrised over both kinds::

        @pytest.fixture(params=["sqlite", "postgres"])
        def db_url(request, tmp_path):
            with throwaway_database(request.param, tmp_path, pytest.skip, migrated=True) as url:
                yield url
    """
    if kind == "sqlite":
        url = f"sqlite:///{directory / 'payhub.db'}"
        if migrated:
            migrate_database(url)
        yield url
        return
    if kind != "postgres":
        raise ValueError(f"unknown database kind {kind!r} (sqlite or postgres)")
    server = postgres_server_url()
    admin = _admin_engine(server)
    try:
        try:
            with admin.connect():
                pass
        except sa.exc.OperationalError as exc:
            reason = f"PostgreSQL not reachable at {server}: {exc}"
            if unavailable is not None:
                unavailable(reason)
            raise DatabaseUnavailable(reason) from exc
        name = f"payhub_t_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{_postgres_template(server)}"' if migrated else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{template}'))
        try:
            yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def migrate_database(url: str) -> None:
    """Bring the database at ``url`` to this payhub's schema revision.

    A database that does not exist yet or has no tables, and that nothing is connected to, becomes a copy of the
    migrated template: a missing SQLite file is written from it; a PostgreSQL database is dropped and created again
    from it under its name. Any other database not at that revision is upgraded by Alembic, as ``payhub db upgrade``
    does.
    """
    path = sqlite_file(url)
    if path is not None:
        if _copy_sqlite_template(path):
            return
    elif _recreate_from_template(url):
        return
    engine = make_engine(url)
    try:
        if migrate.current_revision(engine) != _head_revision():
            migrate.upgrade(engine)
    finally:
        engine.dispose()


@functools.cache
def _head_revision() -> str:
    return migrate.head_revision()


_lock = threading.Lock()
_sqlite_templates: list[str] = []  # the template file, once made
_postgres_templates: dict[str, str] = {}  # server URL -> template database name


def _admin_engine(server: str) -> sa.Engine:
    return sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool,
                            connect_args={"connect_timeout": CONNECT_TIMEOUT})


def _sqlite_template() -> str:
    """The path of this process's migrated SQLite template, made on first use."""
    with _lock:
        if not _sqlite_templates:
            directory = tempfile.mkdtemp(prefix="payhub-template-")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            path = os.path.join(directory, "payhub.db")
            engine = make_engine(f"sqlite:///{path}")
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()
            with closing(sqlite3.connect(path)) as conn:  # everything in the file itself, none in a -wal file
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _sqlite_templates.append(path)
        return _sqlite_templates[0]


def _postgres_template(server: str) -> str:
    """The name of this process's migrated template database on ``server``, made on first use (and dropped when
    the process exits). Connections to it are refused, so copying it never fails on a session left open."""
    with _lock:
        if server not in _postgres_templates:
            name = f"payhub_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            admin = _admin_engine(server)
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                atexit.register(_drop_database, server, name)
                engine = make_engine(sa.make_url(server).set(database=name).render_as_string(hide_password=False))
                try:
                    migrate.upgrade(engine)
                finally:
                    engine.dispose()
                with admin.connect() as conn:
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false'))
            finally:
                admin.dispose()
            _postgres_templates[server] = name
        return _postgres_templates[server]


def _drop_database(server: str, name: str) -> None:
    admin = _admin_engine(server)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false'))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except sa.exc.SQLAlchemyError:
        pass  # the server went away first: nothing left to clean here
    finally:
        admin.dispose()


def _copy_sqlite_template(path: str) -> bool:
    """Write the template to ``path`` if no file (nor a journal of one) is there; say whether it did."""
    if any(os.path.exists(path + suffix) for suffix in ("-wal", "-journal")) or not files.create_private(path):
        return False
    try:
        with open(_sqlite_template(), "rb") as source, open(path, "r+b") as target:
            shutil.copyfileobj(source, target)
    except BaseException:
        os.unlink(path)
        raise
    return True


def _recreate_from_template(url: str) -> bool:
    """Replace the database at ``url``, on the server of :func:`postgres_server_url`, by a copy of the template if
    it has no tables and no connections; say whether it did."""
    target, server = sa.make_url(url), sa.make_url(postgres_server_url())
    same_server = (target.get_backend_name(), target.host, target.port, target.username) == (
        server.get_backend_name(), server.host, server.port, server.username)
    if not same_server or not target.database:
        return False
    name = target.database
    engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        with engine.connect() as conn:
            tables = conn.execute(sa.text(
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()")).scalar_one()
            checker = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    finally:
        engine.dispose()
    if tables:
        return False
    server_url = postgres_server_url()
    template = _postgres_template(server_url)
    admin = _admin_engine(server_url)
    try:
        with admin.connect() as conn:
            others = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND pid <> :pid"),
                {"name": name, "pid": checker}).scalar_one()
            if others:  # DROP DATABASE would wait seconds for them before refusing
                return False
            try:
                conn.execute(sa.text(f'DROP DATABASE "{name}"'))  # refused while anything is connected to it
            except sa.exc.OperationalError:
                return False
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return True
    finally:
        admin.dispose()
