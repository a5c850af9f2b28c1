"""Calculate: run every matching program over each ingested event, once, writing rewards in the same transaction.

The unique (program, event) constraint on ``calculations`` is the guard of invariant 2: a replay, a restart or a
concurrent replica cannot calculate the same pair twice. A program that changed gets a new version; events
already calculated keep the version that produced them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, func, select, update

from payhub.api import Calculator, Event, RewardLine
from payhub.audit import canonical_json
from payhub.clock import utcnow
from payhub.db.queries import for_update
from payhub.db.schema import calculations, events, program_versions, rewards
from payhub.errors import CalculationError, InvalidRecord
from payhub.money import check_currency, from_minor, quantize, to_minor
from payhub.runtime import Runtime, Tx

log = logging.getLogger(__name__)


class DbHistory:
    """:class:`payhub.api.History` over the rewards table, plus the rewards of the batch being calculated.

    The batch's own calculations are not in the database yet (they are written at the end of the batch), so each
    result is also kept here, in memory, and added to what the database holds.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.in_batch: dict[tuple[str, str, str], int] = {}  # (program, payee, currency) -> minor units
        # (program, payee, currency) -> [(event occurred_at, minor units)]
        self.in_batch_by_time: dict[tuple[str, str, str], list[tuple[datetime, int]]] = {}
        # (program, partner, currency) -> [(event occurred_at, event amount)]
        self.in_batch_volume: dict[tuple[str, str, str], list[tuple[datetime, Decimal]]] = {}
        self._stored_volume: dict[tuple[str, str, str, datetime, datetime], Decimal] = {}

    def add(self, program: str, payee_id: str, currency: str, minor: int, occurred_at: datetime | None = None) -> None:
        key = (program, payee_id, currency)
        self.in_batch[key] = self.in_batch.get(key, 0) + minor
        if occurred_at is not None:
            self.in_batch_by_time.setdefault(key, []).append((occurred_at, minor))

    def add_volume(self, program: str, event: Event) -> None:
        """Count ``event`` in the volume of ``program`` (call when the program calculated it without failure)."""
        if event.partner_id and event.amount is not None and event.currency:
            key = (program, event.partner_id, event.currency)
            self.in_batch_volume.setdefault(key, []).append((event.occurred_at, event.amount))

    def total_rewarded(self, program: str, payee_id: str, currency: str, since: datetime | None = None) -> Decimal:
        query = select(func.coalesce(func.sum(rewards.c.amount_minor), 0)).where(
            rewards.c.program == program, rewards.c.payee_id == payee_id, rewards.c.currency == currency
        )
        if since is not None:
            query = query.where(rewards.c.created_at >= since)
        stored = int(self.conn.execute(query).scalar_one())
        return from_minor(stored + self.in_batch.get((program, payee_id, currency), 0), currency)

    def rewarded_between(self, program: str, payee_id: str, currency: str, since: datetime,
                         until: datetime) -> Decimal:
        query = select(func.coalesce(func.sum(rewards.c.amount_minor), 0)).select_from(
            rewards.join(events, events.c.id == rewards.c.event_id)
        ).where(
            rewards.c.program == program, rewards.c.payee_id == payee_id, rewards.c.currency == currency,
            events.c.occurred_at >= since, events.c.occurred_at < until,
        )
        stored = int(self.conn.execute(query).scalar_one())
        batch = sum(minor for at, minor in self.in_batch_by_time.get((program, payee_id, currency), ())
                    if since <= at < until)
        return from_minor(stored + batch, currency)

    def total_volume(self, program: str, partner_id: str, currency: str, since: datetime,
                     until: datetime) -> Decimal:
        key = (program, partner_id, currency, since, until)
        stored = self._stored_volume.get(key)
        if stored is None:  # event amounts are exact decimal text: summed here, not in SQL
            amounts = self.conn.execute(select(events.c.amount).select_from(
                calculations.join(events, events.c.id == calculations.c.event_id)
            ).where(
                calculations.c.program == program, calculations.c.status.in_(("rewarded", "not_eligible")),
                events.c.partner_id == partner_id, events.c.currency == currency, events.c.amount.is_not(None),
                events.c.occurred_at >= since, events.c.occurred_at < until,
            )).scalars()
            stored = sum((Decimal(a) for a in amounts), Decimal(0))
            self._stored_volume[key] = stored  # the batch's own calculations are written only at its end
        batch = sum((amount for at, amount in self.in_batch_volume.get((program, partner_id, currency), ())
                     if since <= at < until), Decimal(0))
        return stored + batch


def register_program_versions(rt: Runtime) -> dict[str, int]:
    """Record the current parameters of each enabled program as a version; return program → version id."""
    versions: dict[str, int] = {}
    with rt.transaction() as tx:
        for name, section in rt.settings.programs.items():
            if not section.enabled:
                continue
            params = canonical_json(section.model_dump(mode="json", exclude={"enabled"}))
            fingerprint = hashlib.sha256(params.encode()).hexdigest()
            existing = tx.conn.execute(
                select(program_versions.c.id).where(
                    program_versions.c.program == name, program_versions.c.fingerprint == fingerprint
                )
            ).scalar()
            if existing is None:
                number = (tx.conn.execute(
                    select(func.max(program_versions.c.version)).where(program_versions.c.program == name)
                ).scalar() or 0) + 1
                existing = cast("Sequence[int]", tx.conn.execute(program_versions.insert().values(
                    program=name, version=number, calculator=section.calculator, params=params,
                    fingerprint=fingerprint, created_at=utcnow(),
                )).inserted_primary_key)[0]  # a Row; never None for a single-row insert without RETURNING
                tx.audit("program.version_created", "program", name, {"version": number, "params": json.loads(params)})
            versions[name] = existing
    return versions


def to_event(row: Any) -> Event:
    return Event(
        id=row.id, key=row.key, source=row.source, object_type=row.object_type, object_id=row.object_id,
        transition=row.transition, event_type=row.event_type, occurred_at=row.occurred_at, payee_id=row.payee_id,
        partner_id=row.partner_id, amount=Decimal(row.amount) if row.amount is not None else None,
        currency=row.currency, attributes=json.loads(row.attributes),
    )


def _matches(rt: Runtime, program: str, event: Event) -> bool:
    section = rt.settings.programs[program]
    return (not section.event_types or event.event_type in section.event_types) and (
        not section.sources or event.source in section.sources
    )


def _checked(line: RewardLine) -> tuple[str, int, str]:
    """Validate and round one reward line: (payee, amount in minor units, currency)."""
    if not isinstance(line, RewardLine):
        raise CalculationError(f"calculator returned {type(line).__name__}, not RewardLine")
    if not line.payee_id:
        raise CalculationError("reward line has no payee")
    currency = check_currency(line.currency)
    if not isinstance(line.amount, Decimal) or not line.amount.is_finite():
        raise CalculationError(f"reward amount {line.amount!r} is not a finite Decimal")
    amount = quantize(line.amount, currency)
    if amount < 0:
        raise CalculationError(f"reward amount {amount} is negative")
    return line.payee_id, to_minor(amount, currency), currency


def calculate_batch(rt: Runtime, versions: dict[str, int], limit: int | None = None) -> int:
    """Calculate up to ``limit`` ingested events in one transaction; return how many were processed."""
    limit = limit or rt.settings.database.batch_size
    programs: dict[str, Calculator | str] = {}
    for name in versions:
        calculator = rt.plugins.calculators.get(name)
        reason = rt.plugins.failed("calculator", name) or "calculator not loaded"
        programs[name] = calculator if calculator is not None else f"calculator plugin unavailable: {reason}"
    with rt.transaction() as tx:
        rows = tx.conn.execute(for_update(tx.conn, (
            select(events).where(events.c.status == "ingested").order_by(events.c.id).limit(limit)
        ))).all()
        if not rows:
            return 0
        _calculate_rows(rt, tx, rows, programs, versions)
    return len(rows)


def _calculate_rows(rt: Runtime, tx: Tx, rows: Sequence[Any], programs: dict[str, Calculator | str],
                    versions: dict[str, int]) -> None:
    now = utcnow()
    history = DbHistory(tx.conn)
    calc_rows: list[dict[str, Any]] = []
    lines_per_calc: list[list[tuple[str, int, str, RewardLine]]] = []
    outcomes: dict[int, dict[str, str]] = {}
    done = {(event_id, program) for event_id, program in tx.conn.execute(
        select(calculations.c.event_id, calculations.c.program).where(
            calculations.c.event_id.in_([row.id for row in rows])))}
    for row in rows:
        event = to_event(row)
        outcomes[event.id] = {}
        for program, calculator in programs.items():
            if (event.id, program) in done or not _matches(rt, program, event):
                continue  # calculated before (a retried event keeps its other programs' results)
            status, reason, lines = _run_one(calculator, program, event, history)
            for payee, minor, currency, _line in lines:
                history.add(program, payee, currency, minor, event.occurred_at)
            if status != "failed":
                history.add_volume(program, event)
            outcomes[event.id][program] = status if reason is None else f"{status}: {reason}"
            calc_rows.append({"event_id": event.id, "program": program, "program_version_id": versions[program],
                              "status": status, "reason": reason, "calculated_at": now})
            lines_per_calc.append(lines)
    if calc_rows:
        tx.conn.execute(calculations.insert(), calc_rows)
    reward_rows = []
    for calc_row, lines in zip(calc_rows, lines_per_calc, strict=True):
        for payee, minor, currency, line in lines:
            reward_rows.append({
                "event_id": calc_row["event_id"], "program": calc_row["program"],
                "payee_id": payee, "amount_minor": minor, "currency": currency, "description": line.description,
                "details": canonical_json(dict(line.details)) if line.details else "{}", "status": "pending",
                "created_at": now, "updated_at": now,
            })
    if reward_rows:
        # The audit entries are built from the returned rows themselves, so the rows may come back in any order
        # (asking for parameter order would make SQLite insert them one statement per row).
        written = tx.conn.execute(rewards.insert().returning(
            rewards.c.id, rewards.c.event_id, rewards.c.program, rewards.c.payee_id, rewards.c.amount_minor,
            rewards.c.currency), reward_rows)
        for reward_id, event_id, program, payee, minor, currency in sorted(written):
            tx.audit("reward.calculated", "reward", reward_id, {
                "event": event_id, "program": program, "payee": payee,
                "amount": str(from_minor(minor, currency)), "currency": currency,
            })
    event_ids = [row.id for row in rows]
    tx.conn.execute(update(events).where(events.c.id.in_(event_ids)).values(status="calculated", calculated_at=now))
    for event_id in event_ids:
        tx.audit("event.calculated", "event", event_id, {"programs": outcomes[event_id]})


def _run_one(calculator: Calculator | str, program: str, event: Event, history: DbHistory
             ) -> tuple[str, str | None, list[tuple[str, int, str, RewardLine]]]:
    if isinstance(calculator, str):  # the plugin failed to load: recorded as a failed calculation
        return "failed", calculator, []
    try:
        lines = calculator.calculate(event, history)
        checked = [(*_checked(line), line) for line in lines]
        checked = [item for item in checked if item[1] != 0]  # nothing to pay once rounded
    except (CalculationError, InvalidRecord) as exc:
        return "failed", str(exc), []
    except Exception as exc:  # noqa: BLE001 - a calculator bug fails only this (program, event)
        log.exception("program %s raised on event %s", program, event.id)
        return "failed", f"calculator error: {type(exc).__name__}: {exc}", []
    return ("rewarded" if checked else "not_eligible"), None, checked


def retry_failed(rt: Runtime, program: str | None = None, event_id: int | None = None) -> int:
    """Forget failed calculations (optionally of one program or event) so they run again; return how many.

    Each forgotten calculation is audited with its old reason; its event goes back to ``ingested``, and only the
    programs without a calculation for it run again.
    """
    with rt.transaction() as tx:
        query = select(calculations.c.id, calculations.c.event_id, calculations.c.program,
                       calculations.c.reason).where(calculations.c.status == "failed")
        if program:
            query = query.where(calculations.c.program == program)
        if event_id is not None:
            query = query.where(calculations.c.event_id == event_id)
        failed = tx.conn.execute(for_update(tx.conn, query)).all()
        if not failed:
            return 0
        tx.conn.execute(calculations.delete().where(calculations.c.id.in_([f.id for f in failed])))
        tx.conn.execute(update(events).where(events.c.id.in_({f.event_id for f in failed}))
                        .values(status="ingested", calculated_at=None))
        for f in failed:
            tx.audit("calculation.retried", "event", f.event_id, {"program": f.program, "previous_reason": f.reason})
    return len(failed)
