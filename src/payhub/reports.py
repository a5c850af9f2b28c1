"""Read-only views for people and scripts: listings, ``explain`` and ``trace``. Each returns plain dicts."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, or_, select

from payhub import funds
from payhub.clock import utcnow
from payhub.db.schema import (
    approvals,
    attempts,
    audit_log,
    calculations,
    events,
    fund_entries,
    payout_items,
    payouts,
    program_versions,
    rewards,
)
from payhub.money import from_minor
from payhub.pipeline.storable import INT64


def _money(minor: int, currency: str) -> str:
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
        "amount": _money(r.amount_minor, r.currency), "currency": r.currency, "status": r.status,
        "approvals": f"{r.approvals_given}/{r.approvals_needed}" if r.approvals_needed else None,
        "payout": r.payout_id, "hold_code": r.hold_code, "reason": r.hold_reason,
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
        found.append({"program": name, "holder": holder_id, "unit": unit, "credited": str(credited),
                      "spent": str(spent), "expired": str(max(credited - spent - left, Decimal(0))),
                      "balance": str(left), "next_expiry": fund.next_expiry(at)})
    return found


def list_payouts(conn: Connection, status: str | None = None, rail: str | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    query = select(payouts).order_by(payouts.c.id.desc()).limit(limit)
    if status:
        query = query.where(payouts.c.status == status)
    if rail:
        query = query.where(payouts.c.rail == rail)
    return [{
        "id": r.id, "payee": r.payee_id, "rail": r.rail, "amount": _money(r.amount_minor, r.currency),
        "currency": r.currency, "items": r.item_count, "status": r.status, "attempts": r.attempts,
        "provider_ref": r.provider_ref, "reason": r.reason, "route": r.route_reason, "key": r.idempotency_key,
    } for r in conn.execute(query)]


def explain(conn: Connection, reward_id: int) -> dict[str, Any] | None:
    """Everything that produced one reward: the event's inputs, the program version, the calculator and result."""
    reward = conn.execute(select(rewards).where(rewards.c.id == reward_id)).first()
    if reward is None:
        return None
    calc = conn.execute(select(calculations).where(calculations.c.program == reward.program,
                                                   calculations.c.event_id == reward.event_id)).one()
    version = conn.execute(select(program_versions).where(program_versions.c.id == calc.program_version_id)).one()
    event = conn.execute(select(events).where(events.c.id == reward.event_id)).one()
    item = conn.execute(select(payout_items.c.amount_minor, payout_items.c.fx).where(
        payout_items.c.reward_id == reward_id, payout_items.c.payout_id == reward.payout_id)).first()
    return {
        "reward": {
            "id": reward.id, "payee": reward.payee_id, "amount": _money(reward.amount_minor, reward.currency),
            "currency": reward.currency, "description": reward.description, "details": json.loads(reward.details),
            "status": reward.status, "payout": reward.payout_id, "hold_code": reward.hold_code,
            "hold_reason": reward.hold_reason, "approvals_needed": reward.approvals_needed,
            "approvers": list(conn.execute(select(approvals.c.approver).where(approvals.c.reward_id == reward_id)
                                           .order_by(approvals.c.approved_at, approvals.c.approver)).scalars()),
            "created_at": reward.created_at,
            "fx": json.loads(item.fx) if item is not None and item.fx else None,
        },
        "program": {
            "name": version.program, "version": version.version, "calculator": version.calculator,
            "parameters": json.loads(version.params), "version_created_at": version.created_at,
        },
        "calculation": {"id": calc.id, "status": calc.status, "calculated_at": calc.calculated_at},
        "event": {
            "id": event.id, "key": event.key, "source": event.source, "type": event.event_type,
            "occurred_at": event.occurred_at, "payee": event.payee_id, "partner": event.partner_id,
            "amount": event.amount, "currency": event.currency, "attributes": json.loads(event.attributes),
        },
    }


def trace(conn: Connection, ref: str) -> list[dict[str, Any]]:
    """The chain CRM record → events → rewards → payouts → attempts for ``ref``.

    ``ref`` is a CRM object id, an event key, or ``event:N`` / ``reward:N`` / ``payout:N``.
    """
    kind, _, number = ref.partition(":")
    event_ids: set[int] = set()
    reward_filter = None
    if kind in ("event", "reward", "payout") and number.isascii() and number.isdigit():
        n = int(number)
        if n > INT64[1]:  # beyond any row id
            return []
        if kind == "event":
            event_ids = {n}
        elif kind == "reward":
            event_ids = set(conn.execute(select(rewards.c.event_id).where(rewards.c.id == n)).scalars())
            reward_filter = {n}
        else:
            ids = set(conn.execute(select(payout_items.c.reward_id).where(payout_items.c.payout_id == n)).scalars())
            event_ids = set(conn.execute(select(rewards.c.event_id).where(rewards.c.id.in_(ids))).scalars())
            reward_filter = ids
    else:
        event_ids = set(conn.execute(select(events.c.id).where(
            or_(events.c.key == ref, events.c.object_id == ref))).scalars())
    chain = []
    for event in conn.execute(select(events).where(events.c.id.in_(event_ids)).order_by(events.c.id)):
        node: dict[str, Any] = {
            "event": {"id": event.id, "key": event.key, "status": event.status, "reason": event.reason,
                      "occurred_at": event.occurred_at, "amount": event.amount, "currency": event.currency},
            "calculations": [
                {"program": c.program, "status": c.status, "reason": c.reason}
                for c in conn.execute(select(calculations).where(calculations.c.event_id == event.id))
            ],
            "rewards": [],
        }
        for reward in conn.execute(select(rewards).where(rewards.c.event_id == event.id).order_by(rewards.c.id)):
            if reward_filter is not None and reward.id not in reward_filter:
                continue
            item = {"id": reward.id, "program": reward.program, "payee": reward.payee_id,
                    "amount": _money(reward.amount_minor, reward.currency), "currency": reward.currency,
                    "status": reward.status, "payouts": []}
            payout_ids = conn.execute(select(payout_items.c.payout_id).where(
                payout_items.c.reward_id == reward.id).order_by(payout_items.c.payout_id)).scalars().all()
            for p in conn.execute(select(payouts).where(payouts.c.id.in_(payout_ids)).order_by(payouts.c.id)):
                item["payouts"].append({
                    "id": p.id, "key": p.idempotency_key, "rail": p.rail, "route": p.route_reason,
                    "amount": _money(p.amount_minor, p.currency), "currency": p.currency, "status": p.status,
                    "reason": p.reason, "provider_ref": p.provider_ref,
                    "attempts": [
                        {"kind": a.kind, "number": a.number, "started_at": a.started_at,
                         "finished_at": a.finished_at, "outcome": a.outcome, "detail": a.detail}
                        for a in conn.execute(select(attempts).where(attempts.c.payout_id == p.id)
                                              .order_by(attempts.c.id))
                    ],
                })
            node["rewards"].append(item)
        chain.append(node)
    return chain


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
