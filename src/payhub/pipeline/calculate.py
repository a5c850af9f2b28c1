"""Calculate: run every matching program over each ingested event, once, writing rewards in the same transaction.

The unique (program, event) constraint on ``calculations`` is the guard of invariant 2: a replay, a restart or a
concurrent replica cannot calculate the same pair twice. A program that changed gets a new version; events
already calculated keep the version that produced them.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, and_, bindparam, func, not_, select, update

from payhub import funds
from payhub.api import Calculator, Event, FundMovement, RewardLine
from payhub.audit import canonical_json
from payhub.clock import isoformat, utcnow
from payhub.db.queries import for_update
from payhub.db.schema import calculations, events, fund_entries, program_versions, rewards
from payhub.errors import CalculationError, InvalidRecord
from payhub.funds import Entry
from payhub.money import check_currency, from_minor, quantize, to_minor
from payhub.pipeline.rules import (
    UNPAID,
    Decision,
    ObjectReward,
    apply_caps,
    apply_splits,
    clawback,
    decide,
    kept_share,
)
from payhub.runtime import Runtime, Tx
from payhub.settings import ProgramSection

log = logging.getLogger(__name__)


# Statements built once: each History call only binds its values.
_REWARDS_OF_EVENTS = rewards.join(events, events.c.id == rewards.c.event_id)
_LIVE = and_(rewards.c.program == bindparam("program"), rewards.c.currency == bindparam("currency"),
             rewards.c.status != "cancelled")
_IN_PERIOD = and_(events.c.occurred_at >= bindparam("since"), events.c.occurred_at < bindparam("until"))
_SCOPES = {"payee": rewards.c.payee_id == bindparam("scope"), "partner": events.c.partner_id == bindparam("scope")}
_SUM = func.coalesce(func.sum(rewards.c.amount_minor), 0)
# (scope, within a period) -> the sum of the live rewards of a program in a currency, summed by the database
_SUMS = {(per, timed): select(_SUM).select_from(_REWARDS_OF_EVENTS).where(
    _LIVE, *([_SCOPES[per]] if per in _SCOPES else []), *([_IN_PERIOD] if timed else []))
    for per in ("payee", "partner", "program") for timed in (False, True)}
_BUDGET_USED = select(_SUM).where(
    rewards.c.budget_key == bindparam("key"), rewards.c.status != "cancelled",
    not_(and_(rewards.c.status == "held", rewards.c.hold_code == "budget")))
_FUND_ENTRIES = select(fund_entries.c.occurred_at, fund_entries.c.amount, fund_entries.c.expires_at).where(
    fund_entries.c.program == bindparam("program"), fund_entries.c.holder_id == bindparam("holder"),
    fund_entries.c.unit == bindparam("unit")).order_by(fund_entries.c.id)


class DbHistory:
    """:class:`payhub.api.History` (and the rules' history) over the database, plus the batch being calculated.

    The batch's own calculations are not in the database yet (they are written at the end of the batch), so each
    result is also kept here, in memory, and added to what the database holds.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.in_batch: dict[tuple[str, str, str], int] = {}  # (program, payee, currency) -> minor units
        # (program, payee, currency) -> [(event occurred_at, minor units)]
        self.in_batch_by_time: dict[tuple[str, str, str], list[tuple[datetime, int]]] = {}
        # (program, partner, currency) -> [(event occurred_at, event amount, event type)]
        self.in_batch_volume: dict[tuple[str, str, str], list[tuple[datetime, Decimal, str]]] = {}
        self._stored_volume: dict[tuple[str, str, str, datetime, datetime], Sequence[Any]] = {}
        # (program, source, object type, object id) -> rewards of the batch on that CRM object
        self.in_batch_objects: dict[tuple[str, str, str, str], list[ObjectReward]] = {}
        self.in_batch_funds: dict[tuple[str, str, str], list[Entry]] = {}  # (program, holder, unit) -> entries
        self.reserved: dict[str, int] = {}  # budget key -> minor units reserved by the batch
        self.cancelled: set[int] = set()  # stored rewards the batch's clawbacks cancel (still live in the database)
        # (program, currency, "payee" | "partner" | "program", payee / partner / None) -> [(occurred_at, minor)]
        self.in_batch_scopes: dict[tuple[str, str, str, str | None], list[tuple[datetime, int]]] = {}
        self._stored_funds: dict[tuple[str, str, str], list[Entry]] = {}  # read once per batch
        self._credit_index: dict[tuple[str, str, str], tuple[list[datetime], list[Decimal]]] = {}
        self._fund_states: dict[tuple[str, str, str], funds.Fund] = {}
        self._sums: dict[tuple[Any, ...], int] = {}  # stored sums asked before in this batch
        self._seen: dict[int, ObjectReward] = {}  # stored rewards of CRM objects read by clawbacks, by id
        self._cancelled_rows: list[tuple[str, ObjectReward]] = []  # (program, reward) cancelled by this batch
        self._batch_rewards: dict[tuple[int, int], tuple[str, Event, str, str, int, Decision]] = {}

    def add(self, program: str, event: Event, line: RewardLine, minor: int, decision: Decision,
            ref: tuple[int, int]) -> None:
        """Count a reward of the batch; ``ref`` names it should a clawback of the same batch cancel it."""
        self._count(program, event, line.payee_id, line.currency, minor)
        self.in_batch_objects.setdefault(_object_key(program, event), []).append(ObjectReward(
            event.occurred_at, line.payee_id, line.currency, minor, status=decision.status,
            budget_key=decision.budget_key, batch_ref=ref))
        self._batch_rewards[ref] = (program, event, line.payee_id, line.currency, minor, decision)

    def forget(self, ref: tuple[int, int]) -> None:
        """Stop counting a reward of the batch that a clawback of the same batch cancelled."""
        program, event, payee_id, currency, minor, decision = self._batch_rewards.pop(ref)
        self._count(program, event, payee_id, currency, -minor)
        key = _object_key(program, event)
        self.in_batch_objects[key] = [r for r in self.in_batch_objects[key] if r.batch_ref != ref]
        if decision.budget_key is not None and decision.hold_code != "budget":  # its reservation is released
            self.reserved[decision.budget_key] -= minor

    def _count(self, program: str, event: Event, payee_id: str, currency: str, minor: int) -> None:
        key = (program, payee_id, currency)
        self.in_batch[key] = self.in_batch.get(key, 0) + minor
        self.in_batch_by_time.setdefault(key, []).append((event.occurred_at, minor))
        for scope in (("payee", payee_id), ("partner", event.partner_id), ("program", None)):
            self.in_batch_scopes.setdefault((program, currency, *scope), []).append((event.occurred_at, minor))

    def add_fund(self, program: str, event: Event, movement: FundMovement, amount: Decimal) -> None:
        """Count a fund movement of the batch."""
        key = (program, movement.holder_id, movement.unit)
        self.in_batch_funds.setdefault(key, []).append((event.occurred_at, amount, movement.expires_at))

    def add_volume(self, program: str, event: Event) -> None:
        """Count ``event`` in the volume of ``program`` (call when the program calculated it without failure)."""
        if event.partner_id and event.amount is not None and event.currency:
            key = (program, event.partner_id, event.currency)
            self.in_batch_volume.setdefault(key, []).append((event.occurred_at, event.amount, event.event_type))

    def total_rewarded(self, program: str, payee_id: str, currency: str, since: datetime | None = None) -> Decimal:
        query = select(func.coalesce(func.sum(rewards.c.amount_minor), 0)).where(
            rewards.c.program == program, rewards.c.payee_id == payee_id, rewards.c.currency == currency,
            rewards.c.status != "cancelled",
        )
        if since is not None:
            query = query.where(rewards.c.created_at >= since)
        stored = int(self.conn.execute(query).scalar_one())
        return from_minor(stored + self.in_batch.get((program, payee_id, currency), 0), currency)

    def rewarded_between(self, program: str, payee_id: str, currency: str, since: datetime,
                         until: datetime) -> Decimal:
        return from_minor(self.capped_total(program, "payee", payee_id, currency, since, until), currency)

    def total_volume(self, program: str, partner_id: str, currency: str, since: datetime, until: datetime,
                     returns: Collection[str] = ()) -> Decimal:
        key = (program, partner_id, currency, since, until)
        stored = self._stored_volume.get(key)
        if stored is None:  # event amounts are exact decimal text: summed here, not in SQL
            stored = self.conn.execute(select(events.c.amount, events.c.event_type).select_from(
                calculations.join(events, events.c.id == calculations.c.event_id)
            ).where(
                calculations.c.program == program, calculations.c.status.in_(("rewarded", "not_eligible")),
                events.c.partner_id == partner_id, events.c.currency == currency, events.c.amount.is_not(None),
                events.c.occurred_at >= since, events.c.occurred_at < until,
            )).all()
            self._stored_volume[key] = stored  # the batch's own calculations are written only at its end
        batch = [(amount, kind) for at, amount, kind in self.in_batch_volume.get((program, partner_id, currency), ())
                 if since <= at < until]
        return sum((-Decimal(amount) if kind in returns else Decimal(amount) for amount, kind in [*stored, *batch]),
                   Decimal(0))

    def _stored_fund(self, key: tuple[str, str, str]) -> list[Entry]:
        stored = self._stored_funds.get(key)
        if stored is None:  # the batch's own entries are written only at its end
            program, holder_id, unit = key
            stored = self._stored_funds[key] = [(at, Decimal(amount), expires) for at, amount, expires in (
                self.conn.execute(_FUND_ENTRIES, {"program": program, "holder": holder_id, "unit": unit}))]
        return stored

    def fund_balance(self, program: str, holder_id: str, unit: str, at: datetime) -> Decimal:
        key = (program, holder_id, unit)
        state = self._fund_states.get(key)
        if state is None:  # the fund after every stored entry, computed once per batch
            state = self._fund_states[key] = funds.Fund()
            for entry in sorted(self._stored_fund(key), key=lambda e: e[0]):
                state.apply(*entry)
        batch = sorted((e for e in self.in_batch_funds.get(key, ()) if e[0] <= at), key=lambda e: e[0])
        if state.last is not None and (at < state.last or (batch and batch[0][0] < state.last)):
            # asked about the past of the stored entries: the whole fund again, in time order
            return funds.balance([*self._stored_fund(key), *self.in_batch_funds.get(key, ())], at)
        fund = state.copy() if batch else state
        for entry in batch:
            fund.apply(*entry)
        return fund.balance(at)

    def fund_credited(self, program: str, holder_id: str, unit: str, since: datetime, until: datetime) -> Decimal:
        key = (program, holder_id, unit)
        index = self._credit_index.get(key)
        if index is None:  # stored credits by time, with running sums: each call is two binary searches
            credits = sorted((at, amount) for at, amount, _ in self._stored_fund(key) if amount > 0)
            index = self._credit_index[key] = ([at for at, _ in credits],
                                               list(itertools.accumulate((a for _, a in credits), initial=Decimal(0))))
        times, sums = index
        stored = sums[bisect.bisect_left(times, until)] - sums[bisect.bisect_left(times, since)]
        return stored + sum((amount for at, amount, _ in self.in_batch_funds.get(key, ())
                             if amount > 0 and since <= at < until), Decimal(0))

    def object_rewards(self, program: str, event: Event) -> list[ObjectReward]:
        # Two steps, so each uses its index (events by object, rewards by event) whatever the planner knows.
        found = {row.id: row for row in self.conn.execute(select(
            events.c.id, events.c.occurred_at, events.c.partner_id).where(
            events.c.source == event.source, events.c.object_type == event.object_type,
            events.c.object_id == event.object_id, events.c.id != event.id))}
        stored: list[ObjectReward] = []
        if found:
            query = select(rewards.c.event_id, rewards.c.payee_id, rewards.c.currency, rewards.c.amount_minor,
                           rewards.c.id, rewards.c.status, rewards.c.hold_code, rewards.c.budget_key).where(
                rewards.c.event_id.in_(found), rewards.c.program == program, rewards.c.status != "cancelled")
            if self.conn.dialect.name == "postgresql":  # a replica scheduling them waits, or is waited for
                query = query.with_for_update()
            for row in self.conn.execute(query):
                if row.id not in self.cancelled:
                    origin = found[row.event_id]
                    reward = ObjectReward(origin.occurred_at, row.payee_id, row.currency, row.amount_minor, row.id,
                                          row.status, row.budget_key, partner_id=origin.partner_id,
                                          hold_code=row.hold_code)
                    self._seen[row.id] = reward
                    stored.append(reward)
        return stored + self.in_batch_objects.get(_object_key(program, event), [])

    def capped_total(self, program: str, per: str, scope_id: str | None, currency: str, since: datetime | None,
                     until: datetime | None) -> int:
        timed = since is not None and until is not None
        args = (program, currency, per, scope_id, since, until)
        stored = self._sums.get(args)
        if stored is None:  # the database's part does not change during the batch
            params: dict[str, Any] = {"program": program, "currency": currency}
            params |= {"scope": scope_id} if per != "program" else {}
            params |= {"since": since, "until": until} if timed else {}
            stored = self._sums[args] = int(self.conn.execute(_SUMS[(per, timed)], params).scalar_one())

        def counted(at: datetime) -> bool:
            return not timed or since <= at < until  # type: ignore[operator]

        cancelled = sum(r.minor for p, r in self._cancelled_rows if p == program and r.currency == currency
                        and counted(r.occurred_at) and _in_scope(per, scope_id, r.payee_id, r.partner_id))
        batch = sum(minor for at, minor in self.in_batch_scopes.get((program, currency, per, scope_id), ())
                    if counted(at))
        return stored - cancelled + batch

    def budget_used(self, key: str) -> int:
        stored = self._sums.get(("budget", key))
        if stored is None:
            stored = self._sums[("budget", key)] = int(self.conn.execute(_BUDGET_USED, {"key": key}).scalar_one())
        return stored - sum(r.minor for _p, r in self._cancelled_rows
                            if r.budget_key == key and not (r.status == "held" and r.hold_code == "budget"))

    def cancel(self, program: str, reward_ids: list[int]) -> None:
        """Stop counting stored rewards that a clawback of this batch cancels (written at the end of the batch)."""
        for reward_id in reward_ids:
            if reward_id not in self.cancelled:
                self.cancelled.add(reward_id)
                self._cancelled_rows.append((program, self._seen[reward_id]))


def _in_scope(per: str, scope_id: str | None, payee_id: str, partner_id: str | None) -> bool:
    """Whether a reward to ``payee_id`` on an event of ``partner_id`` is in the cap scope ``per`` ``scope_id``."""
    return {"program": True, "payee": payee_id == scope_id, "partner": partner_id == scope_id}[per]


def _object_key(program: str, event: Event) -> tuple[str, str, str, str]:
    return program, event.source, event.object_type, event.object_id


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


def _matches(section: ProgramSection, event: Event) -> bool:
    return (not section.event_types or event.event_type in section.event_types
            or event.event_type in section.clawback_event_types) and (
        not section.sources or event.source in section.sources
    )


@dataclass(slots=True)
class _Result:
    """What one (program, event) calculation produced, checked and rounded."""

    status: str
    reason: str | None = None
    rewards: list[tuple[RewardLine, int, Decision]] = field(default_factory=list)  # line, minor units, decision
    funds: list[tuple[FundMovement, Decimal]] = field(default_factory=list)  # movement, rounded amount
    cancels: list[int] = field(default_factory=list)  # stored unpaid rewards a clawback cancels
    cancel_batch: list[tuple[int, int]] = field(default_factory=list)  # rewards of this batch it cancels


def _checked_line(line: RewardLine) -> int:
    """Validate one reward line; its amount in minor units, rounded once (negative for an adjustment)."""
    if not line.payee_id:
        raise CalculationError("reward line has no payee")
    currency = check_currency(line.currency)
    if currency != line.currency:
        raise CalculationError(f"reward currency {line.currency!r} is not an upper-case ISO 4217 code")
    if not isinstance(line.amount, Decimal) or not line.amount.is_finite():
        raise CalculationError(f"reward amount {line.amount!r} is not a finite Decimal")
    return to_minor(quantize(line.amount, currency), currency)


def _checked_movement(movement: FundMovement) -> Decimal:
    """Validate one fund movement; its amount rounded to the unit."""
    if not movement.holder_id:
        raise CalculationError("fund movement has no holder")
    if funds.check_unit(movement.unit) != movement.unit:
        raise CalculationError(f"fund unit {movement.unit!r} is not \"points\" or an upper-case currency code")
    if not isinstance(movement.amount, Decimal) or not movement.amount.is_finite():
        raise CalculationError(f"fund amount {movement.amount!r} is not a finite Decimal")
    if movement.expires_at is not None and movement.expires_at.tzinfo is None:
        raise CalculationError("fund expiry is a naive datetime; use aware UTC")
    return funds.round_unit(movement.amount, movement.unit)


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
    results: list[_Result] = []
    outcomes: dict[int, dict[str, str]] = {}
    done = {(event_id, program) for event_id, program in tx.conn.execute(
        select(calculations.c.event_id, calculations.c.program).where(
            calculations.c.event_id.in_([row.id for row in rows])))}
    for row in rows:
        event = to_event(row)
        outcomes[event.id] = {}
        for program, calculator in programs.items():
            section = rt.settings.programs[program]
            if (event.id, program) in done or not _matches(section, event):
                continue  # calculated before (a retried event keeps its other programs' results)
            result = _run_one(calculator, program, section, event, history)
            for ref in result.cancel_batch:  # a clawback cancelled rewards of this batch before they were written
                history.forget(ref)
                earlier = results[ref[0]].rewards
                line, minor, decision = earlier[ref[1]]
                earlier[ref[1]] = (line, minor, replace(decision, status="cancelled", hold_code=None,
                                                        hold_reason=f"clawed back by event {event.id}"))
            for number, (line, minor, decision) in enumerate(result.rewards):
                history.add(program, event, line, minor, decision, (len(results), number))
            for movement, amount in result.funds:
                history.add_fund(program, event, movement, amount)
            if result.status != "failed":
                history.add_volume(program, event)
            outcomes[event.id][program] = result.status if result.reason is None else f"{result.status}: " \
                                                                                    f"{result.reason}"
            calc_rows.append({"event_id": event.id, "program": program, "program_version_id": versions[program],
                              "status": result.status, "reason": result.reason, "calculated_at": now})
            results.append(result)
    if calc_rows:
        tx.conn.execute(calculations.insert(), calc_rows)
    _write_rewards(rt, tx, rows, calc_rows, results, now)
    event_ids = [row.id for row in rows]
    tx.conn.execute(update(events).where(events.c.id.in_(event_ids)).values(status="calculated", calculated_at=now))
    for event_id in event_ids:
        tx.audit("event.calculated", "event", event_id, {"programs": outcomes[event_id]})


def _write_rewards(rt: Runtime, tx: Tx, rows: Sequence[Any], calc_rows: list[dict[str, Any]],
                   results: list[_Result], now: datetime) -> None:
    occurred = {row.id: row.occurred_at for row in rows}
    reward_rows: list[dict[str, Any]] = []
    fund_rows: list[dict[str, Any]] = []
    for calc_row, result in zip(calc_rows, results, strict=True):
        event_id, program = calc_row["event_id"], calc_row["program"]
        section = rt.settings.programs[program]
        fx_mode = section.fx_date if section.payout_currency == "payee" else None
        for line, minor, decision in result.rewards:
            reward_rows.append({
                "event_id": event_id, "program": program, "payee_id": line.payee_id, "amount_minor": minor,
                "currency": line.currency, "description": line.description,
                "details": canonical_json(dict(line.details)) if line.details else "{}", "status": decision.status,
                "hold_code": decision.hold_code, "hold_reason": decision.hold_reason,
                "approvals_needed": decision.approvals_needed, "budget_key": decision.budget_key,
                "fx_mode": fx_mode, "created_at": now, "updated_at": now,
            })
        for movement, amount in result.funds:
            fund_rows.append({
                "event_id": event_id, "program": program, "holder_id": movement.holder_id, "unit": movement.unit,
                "amount": str(amount), "occurred_at": occurred[event_id], "expires_at": movement.expires_at,
                "description": movement.description,
                "details": canonical_json(dict(movement.details)) if movement.details else "{}", "created_at": now,
            })
    cancels = [(reward_id, calc_row["event_id"]) for calc_row, result in zip(calc_rows, results, strict=True)
               for reward_id in result.cancels]
    if cancels:
        tx.conn.execute(update(rewards).where(rewards.c.id.in_([r for r, _e in cancels]), rewards.c.status.in_(UNPAID))
                        .values(status="cancelled", updated_at=now))
        for reward_id, event_id in cancels:
            tx.audit("reward.cancelled", "reward", reward_id, {"reason": f"clawed back by event {event_id} before "
                                                                         "it was paid", "event": event_id})
    if reward_rows:
        # The audit entries are built from the returned rows themselves, so the rows may come back in any order
        # (asking for parameter order would make SQLite insert them one statement per row).
        written = tx.conn.execute(rewards.insert().returning(
            rewards.c.id, rewards.c.event_id, rewards.c.program, rewards.c.payee_id, rewards.c.amount_minor,
            rewards.c.currency, rewards.c.status, rewards.c.hold_reason, rewards.c.approvals_needed), reward_rows)
        for reward_id, event_id, program, payee, minor, currency, status, hold, needed in sorted(written):
            detail: dict[str, Any] = {"event": event_id, "program": program, "payee": payee,
                                      "amount": str(from_minor(minor, currency)), "currency": currency}
            if status != "pending":
                detail.update(status=status, reason=hold, approvals_needed=needed)
            tx.audit("reward.calculated", "reward", reward_id, detail, outcome="held" if status == "held" else "ok")
    if fund_rows:
        written = tx.conn.execute(fund_entries.insert().returning(
            fund_entries.c.id, fund_entries.c.event_id, fund_entries.c.program, fund_entries.c.holder_id,
            fund_entries.c.unit, fund_entries.c.amount, fund_entries.c.expires_at), fund_rows)
        for entry_id, event_id, program, holder, unit, amount, expires in sorted(written):
            action = "fund.credited" if Decimal(amount) >= 0 else "fund.spent"
            tx.audit(action, "fund_entry", entry_id, {
                "event": event_id, "program": program, "holder": holder, "unit": unit, "amount": amount,
                "expires_at": isoformat(expires) if expires is not None else None})


def _run_one(calculator: Calculator | str, program: str, section: ProgramSection, event: Event,
             history: DbHistory) -> _Result:
    if isinstance(calculator, str):  # the plugin failed to load: recorded as a failed calculation
        return _Result("failed", calculator)
    try:
        if event.event_type in section.clawback_event_types:
            return _clawback(program, section, event, history)
        if section.once_per_object:
            held = _still_granted(history.object_rewards(program, event))
            if held:
                return _Result("not_eligible", f"{event.object_type} {event.object_id} is already rewarded by this "
                                               f"program ({held}); a clawback must take that back first")
        items = apply_splits(section, event, calculator.calculate(event, history))
        result = _Result("rewarded")
        lines: list[tuple[RewardLine, int]] = []
        for item in items:
            if isinstance(item, RewardLine):
                minor = _checked_line(item)
                if minor:  # nothing to pay once rounded
                    lines.append((item, minor))
            elif isinstance(item, FundMovement):
                amount = _checked_movement(item)
                if amount:
                    result.funds.append((item, amount))
            else:
                raise CalculationError(f"calculator returned {type(item).__name__}, not RewardLine or FundMovement")
        lines, notes = apply_caps(program, section, event, lines, history)
        reserved = dict(history.reserved)
        for line, minor in lines:
            result.rewards.append((line, minor, decide(program, section, event, line.currency, minor, history,
                                                       reserved)))
    except (CalculationError, InvalidRecord) as exc:
        return _Result("failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - a calculator bug fails only this (program, event)
        log.exception("program %s raised on event %s", program, event.id)
        return _Result("failed", f"calculator error: {type(exc).__name__}: {exc}")
    history.reserved = reserved  # kept only when the whole calculation succeeded
    if not result.rewards and not result.funds:
        result.status = "not_eligible"
        result.reason = "; ".join(notes) or None  # everything earned was cut by caps: say so
    return result


def _still_granted(prior: list[ObjectReward]) -> str:
    """What the rewards of an object still grant, per currency (``""`` when nothing)."""
    net: dict[str, int] = {}
    for reward in prior:
        net[reward.currency] = net.get(reward.currency, 0) + reward.minor
    return ", ".join(f"{from_minor(minor, currency)} {currency}" for currency, minor in sorted(net.items()) if minor)


def _clawback(program: str, section: ProgramSection, event: Event, history: DbHistory) -> _Result:
    claw = clawback(program, section, event, history)
    result = _Result("rewarded" if claw.lines or claw.cancel or claw.cancel_batch else "not_eligible",
                     cancels=claw.cancel, cancel_batch=claw.cancel_batch)
    if claw.cancel or claw.cancel_batch:
        result.reason = "cancelled unpaid rewards " + ", ".join(
            [*map(str, claw.cancel), *(["of this batch"] if claw.cancel_batch else [])])
    for line in claw.lines:
        minor = _checked_line(line)
        decision = Decision() if minor < 0 else kept_share(section, line.currency, minor,
                                                            claw.budget_keys.get((line.payee_id, line.currency)))
        result.rewards.append((line, minor, decision))
    history.cancel(program, claw.cancel)
    return result


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
