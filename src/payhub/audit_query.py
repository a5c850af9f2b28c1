"""Reading the audit log by filters, in ``seq`` order, streamed: the CLI's ``audit query|export`` and the API's
audit reads and exports share it, so a million entries cost flat memory on both paths."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from payhub.clock import isoformat
from payhub.db.schema import audit_log

STREAM_ROWS = 2000
"""Rows fetched from the database at a time while streaming."""


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """The filters of ``audit query``: time range (``since`` inclusive, ``until`` exclusive), exact actor, action
    (exact, or a pattern with ``*``), subject (``type:id`` or a bare id)."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    subject: str | None = None

    def used(self) -> dict[str, Any]:
        """The filters given, for the audit entry that records the read."""
        return {k: v for k, v in (("since", self.since), ("until", self.until), ("actor", self.actor),
                                  ("action", self.action), ("subject", self.subject)) if v}


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def select_entries(filters: AuditFilters, *, after: int | None = None, limit: int | None = None) -> Select[Any]:
    """The entries matching ``filters`` with ``seq`` above ``after``, oldest first, at most ``limit``."""
    query = select(audit_log).order_by(audit_log.c.seq)
    if after is not None:
        query = query.where(audit_log.c.seq > after)
    if filters.since:
        query = query.where(audit_log.c.at >= isoformat(filters.since))
    if filters.until:
        query = query.where(audit_log.c.at < isoformat(filters.until))
    if filters.actor:
        query = query.where(audit_log.c.actor == filters.actor)
    if filters.action:
        action = filters.action
        query = query.where(audit_log.c.action.like(_like(action), escape="\\") if "*" in action
                            else audit_log.c.action == action)
    if filters.subject:
        stype, sep, sid = filters.subject.partition(":")
        query = query.where(audit_log.c.subject_type == stype, audit_log.c.subject_id == sid) if sep else \
            query.where(audit_log.c.subject_id == filters.subject)
    if limit is not None:
        query = query.limit(limit)
    return query


def iter_entries(conn: Connection, filters: AuditFilters, *, after: int | None = None,
                 limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The matching entries as dicts (``detail`` kept as its stored JSON text), streamed from the database."""
    result = conn.execution_options(yield_per=STREAM_ROWS).execute(select_entries(filters, after=after, limit=limit))
    for row in result.mappings():
        yield dict(row)
