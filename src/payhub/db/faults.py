"""Which database errors are passing outages, to be waited out, and which are not.

A *transient fault* is the database being unavailable for a while, not a problem with the work: a SQLite file
locked by another process past the busy timeout (or its disk full or failing), a PostgreSQL server refusing
connections, restarting, closing a connection, or cancelling a transaction for a conflict (serialization failure,
deadlock). The statement's transaction rolled back, so the work can simply be done again once the database
answers. Everything else (integrity and data errors, SQL errors, a missing table) is not transient: retrying it
would fail the same way.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

# SQLite primary result codes that mean "not now": BUSY (database is locked), LOCKED (a table is locked),
# IOERR (disk I/O error), FULL (database or disk is full), PROTOCOL (WAL lock protocol race).
SQLITE_TRANSIENT = {5, 6, 10, 13, 15}
# PostgreSQL SQLSTATE classes that no retry fixes even though the driver calls them operational:
# 28 invalid authorization, 3D invalid catalog name (when the server reports them with a code).
POSTGRES_PERMANENT_CLASSES = ("28", "3D")


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` means the database is unavailable for now, so the same work may be tried again later."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection became free in time
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:  # the connection was lost: the server went away or restarted
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return isinstance(orig, sqlite3.OperationalError) and code is not None and code & 0xFF in SQLITE_TRANSIENT
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        sqlstate = getattr(orig, "sqlstate", None) or ""
        return not sqlstate.startswith(POSTGRES_PERMANENT_CLASSES)
    return False


def describe(exc: BaseException) -> str:
    """A one-line reason for logs: the driver's message without the SQL statement or its parameters."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    return f"{type(orig).__name__}: {text}"
