"""Leases on claimed rows (payouts, sources), used as fencing tokens.

A worker claims rows by writing its worker id, a fresh random token and an expiry into them. Every later write to
those rows is conditioned on the lease the writer still holds: the token it wrote, and an expiry not yet passed.
A worker that stalled past its lease (a long GC pause, a stopped process) finds its token gone or its lease
expired, and its write is dropped, not applied. The other replicas skip leased rows until the lease is released
or expires.

Lease times are the database's own clock on PostgreSQL (``clock_timestamp()``), so replicas on hosts whose clocks
disagree still agree on who holds a lease. SQLite has one daemon per file: the process clock is that clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Table, and_, func, literal, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from payhub.clock import utcnow
from payhub.db.schema import UTCDateTime, payouts, sources


class LeaseLost(Exception):  # noqa: N818 - a condition, not a failure of the caller
    """The writer's lease no longer holds (it expired, or another worker claimed the rows): nothing was written."""


def new_token() -> str:
    """A fresh lease token: unique per claim."""
    return uuid.uuid4().hex


def db_now(bind: Connection | Engine) -> ColumnElement[Any]:
    """The current time as the database sees it, for lease comparisons."""
    if bind.dialect.name == "postgresql":
        return func.clock_timestamp(type_=UTCDateTime)
    return literal(utcnow(), UTCDateTime)


def expiry(bind: Connection | Engine, seconds: float) -> ColumnElement[Any]:
    """The expiry of a lease taken now for ``seconds``."""
    if bind.dialect.name == "postgresql":
        return func.clock_timestamp(type_=DateTime(timezone=True)) + timedelta(seconds=seconds)
    return literal(utcnow() + timedelta(seconds=seconds), UTCDateTime)


def free(table: Table, bind: Connection | Engine) -> ColumnElement[bool]:
    """Rows nobody holds a lease on: never leased, released, or expired."""
    return or_(table.c.lease_until.is_(None), table.c.lease_until < db_now(bind))


def held(table: Table, token: str, bind: Connection | Engine) -> ColumnElement[bool]:
    """Rows whose lease is ``token`` and has not expired."""
    return and_(table.c.lease_token == token, table.c.lease_until > db_now(bind))


def holding(conn: Connection, table: Table, key: str, ids: Iterable[Any], token: str,
            *columns: Any) -> dict[Any, Any]:
    """Of ``ids`` (values of column ``key``), those whose lease ``token`` still holds, locked until commit.

    Returns each one's row of ``columns``. Call it first in a transaction that writes to claimed rows, and write
    only to the rows it returns: on PostgreSQL their lock keeps any other worker from claiming them before the
    commit (a claim skips locked rows, and waits for nothing), and SQLite has one writer at a time.
    """
    wanted = list(ids)
    if not wanted:
        return {}
    column = table.c[key]
    query = select(column, *columns).where(column.in_(wanted), held(table, token, conn))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {row[0]: row for row in conn.execute(query)}


def renew(conn: Connection, table: Table, key: str, ids: Iterable[Any], token: str, seconds: float) -> set[Any]:
    """Extend the lease ``token`` on those of ``ids`` it still holds, to ``seconds`` from now; return them."""
    wanted = list(ids)
    if not wanted:
        return set()
    column = table.c[key]
    return set(conn.execute(
        update(table).where(column.in_(wanted), held(table, token, conn))
        .values(lease_until=expiry(conn, seconds)).returning(column)).scalars())


def release(conn: Connection, table: Table, key: str, ids: Iterable[Any], token: str,
            **values: Any) -> None:
    """Give up the lease ``token`` on ``ids`` (setting ``values`` too); rows another worker took are left alone."""
    wanted = list(ids)
    if wanted:
        conn.execute(update(table).where(table.c[key].in_(wanted), table.c.lease_token == token)
                     .values(lease_owner=None, lease_until=None, lease_token=None, **values))


def void(conn: Connection, owner: str | None = None) -> None:
    """Free the leases on payouts and sources held by ``owner`` (a worker id), or every lease when ``owner`` is None
    (one daemon per SQLite file: the leases of dead processes are void)."""
    for table in (payouts, sources):
        query = update(table)
        if owner is not None:
            query = query.where(table.c.lease_owner == owner)
        else:  # only rows that hold one: a start with no lease left writes nothing (no commit to sync to disk)
            query = query.where(or_(table.c.lease_owner.is_not(None), table.c.lease_until.is_not(None)))
        conn.execute(query.values(lease_owner=None, lease_until=None))
