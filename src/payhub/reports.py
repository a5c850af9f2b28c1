"""Read-only listings for people, scripts and the HTTP API (see :mod:`payhub.provenance` for ``explain`` and
``trace``, :mod:`payhub.audit_query` for the audit log's filters).

Every listing is one query paged by keyset, never by offset: ``after`` gives the rows whose id is above it, in
ascending id order, and ``limit`` caps how many (None: all of them). ``newest_first`` gives descending id order
instead, from the newest row (the CLI's default view; it cannot be combined with ``after``). Each function runs its
query at once and returns an iterator of plain dicts (keys in the order of its ``*_COLUMNS``) streamed from the
database, ``STREAM_ROWS`` at a time, so a million rows cost flat memory; iterate it while ``conn`` is open. Amounts
are exact decimal text beside their currency (or fund unit), times aware UTC datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from itertools import groupby, islice
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Connection, Row, Select, func, or_, select, tuple_, union_all

from payhub import funds as fund_math
from payhub.audit_query import AuditFilters, detail_value, iter_entries
from payhub.clock import utcnow
from payhub.db import schema as tables
from payhub.db.queries import unindexed
from payhub.money import from_minor

STREAM_ROWS = 2000
"""Rows fetched from the database at a time."""

Unrewarded = Literal["not_eligible", "failed"]  # the CalculationStatus members but rewarded
"""The statuses of a calculation that paid nothing."""
UNREWARDED: tuple[Unrewarded, ...] = get_args(Unrewarded)

FundKey = tuple[str, str, str]
"""A fund's identity and its place in the funds listing: (program, holder, unit)."""

EVENT_COLUMNS = ["id", "key", "source", "object", "type", "occurred_at", "payee", "amount", "currency", "status",
                 "reason"]
REWARD_COLUMNS = ["id", "event", "program", "payee", "amount", "currency", "status", "approvals", "payout",
                  "hold_code", "reason"]
UNREWARDED_COLUMNS = ["calculation", "event", "object", "program", "version", "payee", "status", "reason",
                      "calculated_at"]
PAYOUT_COLUMNS = ["id", "payee", "rail", "amount", "currency", "items", "status", "attempts", "provider_ref",
                  "reason", "route", "key", "hold_code"]
FUND_COLUMNS = ["program", "holder", "unit", "credited", "spent", "expired", "balance", "next_expiry"]
PROGRAM_VERSION_COLUMNS = ["id", "program", "version", "calculator", "params", "fingerprint", "created_at"]


def amount_text(minor: int, currency: str) -> str:
    """Minor units as the exact decimal text of ``currency`` (``1234.50``), as every view shows amounts."""
    return str(from_minor(minor, currency))


def _keyset(query: Select[Any], key: ColumnElement[Any], after: int | None, limit: int | None,
            newest_first: bool, before: int | None = None) -> Select[Any]:
    if newest_first and after is not None:
        raise ValueError("newest_first lists from the newest row; it takes no 'after'")
    if after is not None:
        query = query.where(key > after)
    if before is not None:
        query = query.where(key < before)
    query = query.order_by(key.desc() if newest_first else key)
    return query.limit(limit) if limit is not None else query


def _stream(conn: Connection, query: Select[Any]) -> Iterator[Row[Any]]:
    return iter(conn.execution_options(yield_per=STREAM_ROWS).execute(query))


def _rows(conn: Connection, query: Select[Any],
          shape: Callable[[Row[Any]], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return map(shape, _stream(conn, query))


def events(conn: Connection, *, status: str | None = None, source: str | None = None, after: int | None = None,
           limit: int | None = None, newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """Events (:data:`EVENT_COLUMNS`), by ``status`` and ``source``. ``object`` is ``type:id`` of the CRM record,
    ``amount`` the exact text the source sent; waiting and quarantined events have their ``reason``."""
    e = tables.events
    query = select(e)
    if status:
        query = query.where(e.c.status == status)
    if source:
        query = query.where(e.c.source == source)
    return _rows(conn, _keyset(query, e.c.id, after, limit, newest_first), lambda r: {
        "id": r.id, "key": r.key, "source": r.source, "object": f"{r.object_type}:{r.object_id}",
        "type": r.event_type, "occurred_at": r.occurred_at, "payee": r.payee_id, "amount": r.amount,
        "currency": r.currency, "status": r.status, "reason": r.reason})


def rewards(conn: Connection, *, status: str | None = None, payee: str | None = None, program: str | None = None,
            after: int | None = None, limit: int | None = None, newest_first: bool = False,
            hold_code: str | None = None, before: int | None = None,
            needed: bool = False) -> Iterator[dict[str, Any]]:
    """Rewards (:data:`REWARD_COLUMNS`), by ``status``, ``payee``, ``program`` and ``hold_code``. ``approvals`` is
    ``given/needed`` for rewards that need approval (e.g. ``1/2``), else None: text for people; ``needed`` adds
    ``approvals_needed`` after the columns, the number of approvals the reward needs (0 when none), for code that
    decides on it. ``reason`` is why a reward is held or carried. ``before`` keeps the rows whose id is below it (the
    next page of a ``newest_first`` listing)."""
    r_ = tables.rewards
    given = (select(func.count()).select_from(tables.approvals).where(tables.approvals.c.reward_id == r_.c.id)
             .correlate(r_).scalar_subquery().label("approvals_given"))
    query = select(r_, given)
    if status:
        query = query.where(r_.c.status == status)
    if payee:
        query = query.where(r_.c.payee_id == payee)
    if program:  # beside a payee: the payee's rewards, read through its index, filtered (queries.unindexed)
        query = query.where((unindexed(r_.c.program) if payee else r_.c.program) == program)
    if hold_code:
        query = query.where(r_.c.hold_code == hold_code)

    def shape(r: Row[Any]) -> dict[str, Any]:
        row = {"id": r.id, "event": r.event_id, "program": r.program, "payee": r.payee_id,
               "amount": amount_text(r.amount_minor, r.currency), "currency": r.currency, "status": r.status,
               "approvals": f"{r.approvals_given}/{r.approvals_needed}" if r.approvals_needed else None,
               "payout": r.payout_id, "hold_code": r.hold_code, "reason": r.hold_reason}
        if needed:
            row["approvals_needed"] = r.approvals_needed
        return row

    return _rows(conn, _keyset(query, r_.c.id, after, limit, newest_first, before), shape)


def unrewarded(conn: Connection, *, status: Unrewarded | None = None, payee: str | None = None,
               program: str | None = None, after: int | None = None, limit: int | None = None,
               newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """Calculations that paid nothing (:data:`UNREWARDED_COLUMNS`): ``not_eligible`` or ``failed`` (``status``
    picks one), with their reason; ``payee`` is the event's. Keyed by the calculation's id."""
    c, e, v = tables.calculations, tables.events, tables.program_versions

    def of(one: Unrewarded) -> Select[Any]:
        query = (select(c.c.id, c.c.event_id, c.c.program, c.c.status, c.c.reason, c.c.calculated_at, v.c.version,
                        e.c.object_type, e.c.object_id, e.c.payee_id)
                 .join(e, e.c.id == c.c.event_id).join(v, v.c.id == c.c.program_version_id)
                 .where(c.c.status == one))
        if payee:
            query = query.where(e.c.payee_id == payee)
        if program:
            query = query.where(c.c.program == program)
        return _keyset(query, c.c.id, after, limit, newest_first)

    if status is not None:
        query = of(status)
    else:  # one ordered index range per status, merged: each part reads at most `limit` rows
        both = union_all(*(select(of(one).subquery()) for one in UNREWARDED)).subquery()
        query = _keyset(select(both), both.c.id, None, limit, newest_first)
    return _rows(conn, query, lambda r: {
        "calculation": r.id, "event": r.event_id, "object": f"{r.object_type}:{r.object_id}", "program": r.program,
        "version": r.version, "payee": r.payee_id, "status": r.status, "reason": r.reason,
        "calculated_at": r.calculated_at})


def payouts(conn: Connection, *, status: str | tuple[str, ...] | None = None, rail: str | None = None,
            payee: str | None = None, after: int | None = None, limit: int | None = None,
            newest_first: bool = False, hold_code: str | None = None,
            ids: Collection[int] | None = None) -> Iterator[dict[str, Any]]:
    """Payouts (:data:`PAYOUT_COLUMNS`), by ``status`` (one, or any of a tuple), ``rail``, ``payee``,
    ``hold_code`` and ``ids`` (those payouts only): ``items`` is how many rewards it carries, ``reason`` its last
    reason, ``route`` why it went to its rail, ``key`` its idempotency key, ``hold_code`` why a held payout is held
    (``screening``, ``audit_trail``; None otherwise)."""
    p = tables.payouts
    query = select(p)
    if ids is not None:
        query = query.where(p.c.id.in_(sorted(set(ids))))
    if isinstance(status, tuple):
        query = query.where(p.c.status.in_(status))
    elif status:
        query = query.where(p.c.status == status)
    if hold_code:
        query = query.where(p.c.hold_code == hold_code)
    if rail:
        query = query.where(p.c.rail == rail)
    if payee:
        query = query.where(p.c.payee_id == payee)
    return _rows(conn, _keyset(query, p.c.id, after, limit, newest_first), lambda r: {
        "id": r.id, "payee": r.payee_id, "rail": r.rail, "amount": amount_text(r.amount_minor, r.currency),
        "currency": r.currency, "items": r.item_count, "status": r.status, "attempts": r.attempts,
        "provider_ref": r.provider_ref, "reason": r.reason, "route": r.route_reason, "key": r.idempotency_key,
        "hold_code": r.hold_code})


def funds(conn: Connection, *, program: str | None = None, holder: str | None = None, at: datetime | None = None,
          after: FundKey | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Each fund (program, holder, unit) at ``at`` (default now) (:data:`FUND_COLUMNS`): credited, spent, expired
    unspent, the balance (oldest credits spent first, see :mod:`payhub.funds`) and when the next credit with
    something left lapses. Ordered by :data:`FundKey` (the database's text order); ``after`` is the key of the
    last fund seen. Only one fund's entries are held at a time."""
    f = tables.fund_entries
    at = at or utcnow()
    query = (select(f.c.program, f.c.holder_id, f.c.unit, f.c.occurred_at, f.c.amount, f.c.expires_at)
             .where(f.c.occurred_at <= at).order_by(f.c.program, f.c.holder_id, f.c.unit, f.c.id))
    if program:
        query = query.where(f.c.program == program)
    if holder:
        query = query.where(f.c.holder_id == holder)
    if after is not None:
        query = query.where(tuple_(f.c.program, f.c.holder_id, f.c.unit) > tuple_(*after))
    grouped = groupby(_stream(conn, query), key=lambda r: (r.program, r.holder_id, r.unit))
    found = (_fund(key, ((r.occurred_at, Decimal(r.amount), r.expires_at) for r in rows), at) for key, rows in grouped)
    return islice(found, limit) if limit is not None else found


def _fund(key: FundKey, entries: Iterable[fund_math.Entry], at: datetime) -> dict[str, Any]:
    program, holder, unit = key
    held = list(entries)
    credited = sum((a for _t, a, _e in held if a > 0), Decimal(0))
    spent = -sum((a for _t, a, _e in held if a < 0), Decimal(0))
    fund = fund_math.replay(held, at)
    left = fund.balance(at)
    return {"program": program, "holder": holder, "unit": unit, "credited": fund_math.unit_text(credited, unit),
            "spent": fund_math.unit_text(spent, unit),
            "expired": fund_math.unit_text(max(credited - spent - left, Decimal(0)), unit),
            "balance": fund_math.unit_text(left, unit), "next_expiry": fund.next_expiry(at)}


def program_versions(conn: Connection, *, program: str | None = None, after: int | None = None,
                     limit: int | None = None, fingerprint: str | None = None) -> Iterator[dict[str, Any]]:
    """Program versions (:data:`PROGRAM_VERSION_COLUMNS`), by ``program`` and ``fingerprint`` (the version of
    those parameters): each change of a program's settings is a new version; ``params`` is the program's section as
    it was (a JSON object)."""
    v = tables.program_versions
    query = select(v).where(v.c.program == program) if program else select(v)
    if fingerprint is not None:
        query = query.where(v.c.fingerprint == fingerprint)
    return _rows(conn, _keyset(query, v.c.id, after, limit, False), lambda r: {
        "id": r.id, "program": r.program, "version": r.version, "calculator": r.calculator,
        "params": json.loads(r.params), "fingerprint": r.fingerprint, "created_at": r.created_at})


def program_summaries(conn: Connection, fingerprints: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each program with recorded versions, by name: how many versions it has (``count``), its ``latest`` version
    and its ``current`` one, the version whose fingerprint is ``fingerprints[program]`` (None when no version has
    it, or the program is not in ``fingerprints``). Versions are :data:`PROGRAM_VERSION_COLUMNS` but ``params``:
    no version's parameters are read. Two queries, whatever the number of versions."""
    v = tables.program_versions
    columns = (v.c.id, v.c.program, v.c.version, v.c.calculator, v.c.fingerprint, v.c.created_at)
    counted = (select(v.c.program, func.count().label("count"), func.max(v.c.version).label("version"))
               .group_by(v.c.program).subquery())
    found: dict[str, dict[str, Any]] = {}
    for row in conn.execute(select(*columns, counted.c.count).join(counted, (v.c.program == counted.c.program)
                                                                   & (v.c.version == counted.c.version))):
        version = {name: getattr(row, name) for name in PROGRAM_VERSION_COLUMNS if name != "params"}
        found[row.program] = {"count": row.count, "latest": version, "current": None}
    wanted = [(name, fingerprint) for name, fingerprint in fingerprints.items() if name in found]
    if wanted:
        for current in conn.execute(select(*columns).where(or_(*(
                (v.c.program == name) & (v.c.fingerprint == print_) for name, print_ in wanted)))):
            found[current.program]["current"] = {name: getattr(current, name) for name in PROGRAM_VERSION_COLUMNS
                                                 if name != "params"}
    return found


def audit_entries(conn: Connection, filters: AuditFilters, *, after: int | None = None,
                  limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Audit entries matching ``filters`` above sequence number ``after``, oldest first (the keys of
    :data:`~payhub.audit_query.EXPORT_COLUMNS`), with ``detail`` parsed (a JSON object; its text when it is not
    JSON, see :func:`~payhub.audit_query.detail_value`) and ``at`` the canonical UTC text the chain hashes."""
    return ({**row, "detail": detail_value(row["detail"])}
            for row in iter_entries(conn, filters, after=after, limit=limit))
