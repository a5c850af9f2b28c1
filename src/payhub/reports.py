"""Read-only listings for people and scripts (see :mod:`payhub.provenance` for ``explain`` and ``trace``).
Each returns plain dicts."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from payhub import funds
from payhub.clock import utcnow
from payhub.db.schema import (
    approvals,
    audit_log,
    calculations,
    events,
    fund_entries,
    payouts,
    program_versions,
    rewards,
)
from payhub.money import from_minor


def amount_text(minor: int, currency: str) -> str:
    """Minor units as the exact decimal text of ``currency`` (``1234.50``), as every view shows amounts."""
    return str(from_minor(minor, currency))


def list_events(conn: Connection, status: str | None = None, source: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    query = select(events).order_by(events.c.id.desc()).limit(limit)
    if status:
        query = query.where(events.c.status == status)
    if source:
        query = query.where(events.c.source == source)
    return [{
        "id": r.id, "key": r.key, "source": r.source, "object": f"{r.object_type}:{r.object_id}",
        "type": r.event_type, "occurred_at": r.occurred_at, "payee": r.payee_id,
        "amount": r.amount, "currency": r.currency, "status": r.status, "reason": r.reason,
    } for r in conn.execute(query)]


def list_rewards(conn: Connection, status: str | None = None, payee: str | None = None,
                 program: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Rewards newest first. ``approvals`` is ``given/needed`` for rewards that need approval (e.g. ``1/2``)."""
    given = (select(func.count()).select_from(approvals).where(approvals.c.reward_id == rewards.c.id)
             .correlate(rewards).scalar_subquery().label("approvals_given"))
    query = select(rewards, given).order_by(rewards.c.id.desc()).limit(limit)
    if status:
        query = query.where(rewards.c.status == status)
    if payee:
        query = query.where(rewards.c.payee_id == payee)
    if program:
        query = query.where(rewards.c.program == program)
    return [{
        "id": r.id, "event": r.event_id, "program": r.program, "payee": r.payee_id,
        "amount": amount_text(r.amount_minor, r.currency), "currency": r.currency, "status": r.status,
        "approvals": f"{r.approvals_given}/{r.approvals_needed}" if r.approvals_needed else None,
        "payout": r.payout_id, "hold_code": r.hold_code, "reason": r.hold_reason,
    } for r in conn.execute(query)]


UNREWARDED_COLUMNS = ["calculation", "event", "object", "program", "version", "payee", "status", "reason",
                      "calculated_at"]


def list_unrewarded(conn: Connection, payee: str | None = None, program: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
    """Calculations that paid nothing (``not_eligible`` or ``failed``), newest first, with their reason; ``payee``
    is the event's. Columns :data:`UNREWARDED_COLUMNS`."""
    query = (select(calculations.c.id, calculations.c.event_id, calculations.c.program, calculations.c.status,
                    calculations.c.reason, calculations.c.calculated_at, program_versions.c.version,
                    events.c.object_type, events.c.object_id, events.c.payee_id)
             .join(events, events.c.id == calculations.c.event_id)
             .join(program_versions, program_versions.c.id == calculations.c.program_version_id)
             .where(calculations.c.status.in_(("not_eligible", "failed")))
             .order_by(calculations.c.id.desc()).limit(limit))
    if payee:
        query = query.where(events.c.payee_id == payee)
    if program:
        query = query.where(calculations.c.program == program)
    return [{
        "calculation": r.id, "event": r.event_id, "object": f"{r.object_type}:{r.object_id}", "program": r.program,
        "version": r.version, "payee": r.payee_id, "status": r.status, "reason": r.reason,
        "calculated_at": r.calculated_at,
    } for r in conn.execute(query)]


def list_funds(conn: Connection, program: str | None = None, holder: str | None = None,
               at: datetime | None = None) -> list[dict[str, Any]]:
    """Each fund (program, holder, unit) at ``at`` (default now): credited, spent, expired unspent, the balance
    (oldest credits spent first, see :mod:`payhub.funds`) and when the next credit with something left lapses."""
    at = at or utcnow()
    query = select(fund_entries.c.program, fund_entries.c.holder_id, fund_entries.c.unit, fund_entries.c.occurred_at,
                   fund_entries.c.amount, fund_entries.c.expires_at).where(fund_entries.c.occurred_at <= at)
    if program:
        query = query.where(fund_entries.c.program == program)
    if holder:
        query = query.where(fund_entries.c.holder_id == holder)
    grouped: dict[tuple[str, str, str], list[funds.Entry]] = {}
    for row in conn.execute(query.order_by(fund_entries.c.id)):
        grouped.setdefault((row.program, row.holder_id, row.unit), []).append(
            (row.occurred_at, Decimal(row.amount), row.expires_at))
    found = []
    for (name, holder_id, unit), entries in sorted(grouped.items()):
        credited = sum((a for _t, a, _e in entries if a > 0), Decimal(0))
        spent = -sum((a for _t, a, _e in entries if a < 0), Decimal(0))
        fund = funds.replay(entries, at)
        left = fund.balance(at)
        found.append({"program": name, "holder": holder_id, "unit": unit, "credited": funds.unit_text(credited, unit),
                      "spent": funds.unit_text(spent, unit),
                      "expired": funds.unit_text(max(credited - spent - left, Decimal(0)), unit),
                      "balance": funds.unit_text(left, unit), "next_expiry": fund.next_expiry(at)})
    return found


def list_payouts(conn: Connection, status: str | None = None, rail: str | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    query = select(payouts).order_by(payouts.c.id.desc()).limit(limit)
    if status:
        query = query.where(payouts.c.status == status)
    if rail:
        query = query.where(payouts.c.rail == rail)
    return [{
        "id": r.id, "payee": r.payee_id, "rail": r.rail, "amount": amount_text(r.amount_minor, r.currency),
        "currency": r.currency, "items": r.item_count, "status": r.status, "attempts": r.attempts,
        "provider_ref": r.provider_ref, "reason": r.reason, "route": r.route_reason, "key": r.idempotency_key,
    } for r in conn.execute(query)]


def query_audit(conn: Connection, *, since: datetime | None = None, until: datetime | None = None,
                actor: str | None = None, action: str | None = None, subject: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """Audit entries in order. ``subject`` is ``type:id`` or a bare id; ``action`` may end in ``*``."""
    from payhub.clock import isoformat

    query = select(audit_log).order_by(audit_log.c.seq)
    if since:
        query = query.where(audit_log.c.at >= isoformat(since))
    if until:
        query = query.where(audit_log.c.at < isoformat(until))
    if actor:
        query = query.where(audit_log.c.actor == actor)
    if action:
        query = query.where(audit_log.c.action.like(action.replace("*", "%")) if "*" in action
                            else audit_log.c.action == action)
    if subject:
        stype, sep, sid = subject.partition(":")
        query = query.where(audit_log.c.subject_type == stype, audit_log.c.subject_id == sid) if sep else \
            query.where(audit_log.c.subject_id == subject)
    if limit:
        query = query.limit(limit)
    return [{**dict(r._mapping), "detail": json.loads(r.detail)} for r in conn.execute(query)]
