"""Calculate: run every matching program over each ingested event, once, writing rewards in the same transaction.

The unique (program, event) constraint on ``calculations`` is the guard of invariant 2: a replay, a restart or a
concurrent replica cannot calculate the same pair twice. A program that changed gets a new version; events
already calculated keep the version that produced them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import func, select

from payhub import funds
from payhub.api import Calculator, Event, FundMovement, NotEligible, RewardLine
from payhub.audit import canonical_json
from payhub.clock import isoformat, utcnow
from payhub.compliance import gift_caps, tax_rules
from payhub.db.queries import insert_ignore
from payhub.db.schema import program_versions
from payhub.errors import CalculationError, InvalidRecord, PayhubError
from payhub.money import check_currency, from_minor, quantize, to_minor
from payhub.pipeline import storable, waiting
from payhub.pipeline.history import DbHistory
from payhub.pipeline.rules import (
    Decision,
    ObjectReward,
    apply_caps,
    apply_splits,
    budget_key,
    clawback,
    decide,
    kept_share,
)
from payhub.runtime import Runtime, Tx
from payhub.settings import FlagCap, ProgramSection
from payhub.states import CalculationStatus, RewardStatus
from payhub.store import events as event_store
from payhub.store import funds as fund_store
from payhub.store import rewards as reward_store
from payhub.store import volumes

log = logging.getLogger(__name__)


def register_program_versions(rt: Runtime) -> dict[str, int]:
    """Record the current parameters of each enabled program as a version; return program → version id.

    Safe with replicas starting together: the same parameters make one version row, which every replica uses, and
    only the replica whose insert won audits it. Replicas registering different parameters of one program at once
    (a rolling change of settings) each get their own version number.
    """
    versions: dict[str, int] = {}
    with rt.transaction() as tx:
        for name, section in rt.settings.programs.items():
            if section.enabled:
                versions[name] = _program_version(tx, name, section)
    return versions


VERSION_TRIES = 20  # each lost race means another replica just registered a version of the same program


def program_parameters(section: ProgramSection) -> tuple[str, str]:
    """The canonical JSON of ``section``'s parameters, as a program version stores them, and its fingerprint."""
    params = canonical_json(section.model_dump(mode="json", exclude={"enabled"}))
    return params, hashlib.sha256(params.encode()).hexdigest()


def _program_version(tx: Tx, name: str, section: ProgramSection) -> int:
    """The id of the version of program ``name`` with ``section``'s parameters, registering it if it is new."""
    params, fingerprint = program_parameters(section)
    by_fingerprint = select(program_versions.c.id).where(
        program_versions.c.program == name, program_versions.c.fingerprint == fingerprint)
    for _ in range(VERSION_TRIES):
        existing = tx.conn.execute(by_fingerprint).scalar()
        if existing is not None:
            return cast(int, existing)
        number = (tx.conn.execute(
            select(func.max(program_versions.c.version)).where(program_versions.c.program == name)
        ).scalar() or 0) + 1
        # Skipped on any unique conflict: the same parameters (use that row) or the same number (take the next).
        inserted = insert_ignore(tx.conn, program_versions, [{
            "program": name, "version": number, "calculator": section.calculator, "params": params,
            "fingerprint": fingerprint, "created_at": utcnow()}], None, program_versions.c.id)
        if inserted:
            tx.audit("program.version_created", "program", name, {"version": number, "params": json.loads(params)})
            return cast(int, inserted[0].id)
    raise PayhubError(f"program {name}: could not register a version in {VERSION_TRIES} tries "
                      "(other replicas kept registering versions of it)")


def to_event(row: Any) -> Event:
    """The :class:`Event` of a row of :func:`payhub.store.events.claim_ingested` (its columns in that order)."""
    (event_id, key, source, object_type, object_id, transition, event_type, occurred_at, payee_id, partner_id, amount,
     currency, attributes) = row[:13]
    return Event(
        id=event_id, key=key, source=source, object_type=object_type, object_id=object_id, transition=transition,
        event_type=event_type, occurred_at=occurred_at, payee_id=payee_id, partner_id=partner_id,
        amount=Decimal(amount) if amount is not None else None, currency=currency,
        attributes={} if attributes == "{}" else json.loads(attributes),
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
    waits_for: str | None = None  # a payee flag caps need in the registry: not calculated, the event waits


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
    """Calculate up to ``limit`` ingested events in one transaction; return how many it took, 0 when none is left.

    Waiting events whose time has come are taken too; an event taken that is dated after now plus
    ``ingest.future_tolerance_seconds``, or behind a waiting event of its CRM object, is set waiting instead (see
    :mod:`payhub.pipeline.waiting`).
    """
    limit = limit or rt.settings.database.batch_size
    programs: dict[str, Calculator | str] = {}
    for name in versions:
        calculator = rt.plugins.calculators.get(name)
        reason = rt.plugins.failed("calculator", name) or "calculator not loaded"
        programs[name] = calculator if calculator is not None else f"calculator plugin unavailable: {reason}"
    tolerance = timedelta(seconds=rt.settings.ingest.future_tolerance_seconds)
    with rt.transaction() as tx:
        horizon = utcnow() + tolerance
        waiting.release_due(tx, horizon, limit)
        waiting.release_registered(tx, limit)
        rows = event_store.claim_ingested(tx.conn, horizon, limit)
        due = waiting.hold(tx, rows, horizon, tolerance)
        if due:
            _calculate_rows(rt, tx, due, programs, versions)
    return len(rows)


def _calculate_rows(rt: Runtime, tx: Tx, rows: Sequence[Any], programs: dict[str, Calculator | str],
                    versions: dict[str, int]) -> None:
    now = utcnow()
    history = DbHistory(tx.conn)
    flag_caps = rt.settings.compliance.gifts.flag_caps
    flags = gift_caps.PayeeFlags(tx.conn)  # the registry's flags, read once per batch
    calc_rows: list[dict[str, Any]] = []
    results: list[_Result] = []
    cancelled: dict[tuple[int, int], int] = {}  # reward of this batch -> the clawback event that cancelled it
    done = event_store.calculated_programs(tx.conn, [row.id for row in rows])
    waits: list[tuple[Any, str | None, int | None, str]] = []  # events set waiting: row, payee, after event, reason
    waiting_objects: dict[tuple[str, str, str], int] = {}  # CRM object -> its event of this batch that waits
    batch = [to_event(row) for row in rows]
    plan = [(program, calculator, rt.settings.programs[program]) for program, calculator in programs.items()]
    matching: dict[tuple[str, str], list[tuple[str, Calculator | str, ProgramSection]]] = {}
    history.expect({event.payee_id for event in batch}, {event.partner_id for event in batch if event.partner_id},
                   _budget_keys(rt, programs, batch))
    history.expect_objects(_objects_asked(rt, programs, batch))
    for row, event in zip(rows, batch, strict=True):
        crm_object = (row.source, row.object_type, row.object_id)
        if crm_object in waiting_objects:  # calculated after the event of its object that waits
            waits.append((row, None, waiting_objects[crm_object],
                          waiting.behind_reason(row, waiting_objects[crm_object])))
            continue
        todo = matching.get((event.event_type, event.source))
        if todo is None:  # the programs an event of this type from this source matches, in the programs' order
            todo = matching[(event.event_type, event.source)] = [
                (program, calculator, section) for program, calculator, section in plan if _matches(section, event)]
        for program, calculator, section in todo:
            if (event.id, program) in done:
                continue  # calculated before (a retried event keeps its other programs' results)
            result = _run_one(calculator, program, section, event, history, (flag_caps, flags))
            if result.waits_for is not None:  # not calculated: the event waits for the payee
                if crm_object not in waiting_objects:
                    waiting_objects[crm_object] = event.id
                    waits.append((row, result.waits_for, None, waiting.payee_reason(result.waits_for, program)))
                continue
            if result.reason is not None:  # a plugin's text, bounded and made storable
                result.reason = storable.sanitise(result.reason, storable.REASON_LIMIT)
            for ref in result.cancel_batch:  # a clawback cancelled rewards of this batch before they were written
                history.forget(ref)
                cancelled[ref] = event.id
            for number, (line, minor, decision) in enumerate(result.rewards):
                history.add(program, event, line, minor, decision, (len(results), number))
            for movement, amount in result.funds:
                history.add_fund(program, event, movement, amount)
            if result.status != CalculationStatus.FAILED:
                history.add_volume(program, event)
            calc_rows.append({"event_id": event.id, "program": program, "program_version_id": versions[program],
                              "status": result.status, "reason": result.reason})
            results.append(result)
    event_store.record_calculations(tx.conn, [(c["event_id"], c["program"], c["program_version_id"], c["status"],
                                               c["reason"], now) for c in calc_rows])
    by_id = {event.id: event for event in batch}
    volume: dict[volumes.Key, Decimal] = {}
    counted: dict[int, tuple[volumes.Key | None, Decimal]] = {}  # event -> its total (of no program yet), amount
    for calc_row in calc_rows:  # the decided events' amounts, in the totals that total_volume reads
        if calc_row["status"] in volumes.DECIDED:
            found = counted.get(calc_row["event_id"])
            if found is None:
                event = by_id[calc_row["event_id"]]
                base = volumes.key_of("", event)
                found = counted[calc_row["event_id"]] = (base, event.amount if base is not None and event.amount
                                                         is not None else Decimal(0))
            if found[0] is not None:
                key = (calc_row["program"], *found[0][1:])
                volume[key] = volume.get(key, Decimal(0)) + found[1]
    _write_rewards(rt, tx, rows, calc_rows, results, cancelled, now, history.fund_read)
    waiting.hold_for_payees(tx, waits)
    waited = {row.id for row, _payee, _after, _reason in waits}
    outcomes: dict[int, dict[str, str]] = {row.id: {} for row in rows}
    for calc_row in calc_rows:
        status, reason = calc_row["status"], calc_row["reason"]
        outcomes[calc_row["event_id"]][calc_row["program"]] = status if reason is None else f"{status}: {reason}"
    event_ids = [row.id for row in rows if row.id not in waited]
    event_store.mark_calculated(tx.conn, event_ids, now)
    for event_id in event_ids:
        tx.audit("event.calculated", "event", event_id, {"programs": outcomes[event_id]})
    # Last: replicas calculating events of the same partners and month wait on these rows until this transaction
    # commits (volume totals have one row per key), so they are written when nothing else is left to do.
    volumes.add(tx.conn, volume)


def _budget_keys(rt: Runtime, programs: Mapping[str, object], batch: Sequence[Event]) -> set[str]:
    """The budget pools the batch's events draw on in the programs with a budget."""
    keys: set[str] = set()
    for program in programs:
        section = rt.settings.programs[program]
        if section.budget is None:
            continue
        for event in batch:
            if _matches(section, event):
                try:
                    key = budget_key(program, section, event)
                except CalculationError:  # the calculation says so itself
                    continue
                if key is not None:
                    keys.add(key)
    return keys


def _objects_asked(rt: Runtime, programs: Mapping[str, object], batch: Sequence[Event]) -> set[tuple[str, str, str]]:
    """The CRM objects whose earlier rewards the batch's calculations read: those of its clawback events, and of
    every event of a program rewarding an object once."""
    found: set[tuple[str, str, str]] = set()
    for program in programs:
        section = rt.settings.programs[program]
        if not section.clawback_event_types and not section.once_per_object:
            continue
        for event in batch:
            if _matches(section, event) and (section.once_per_object
                                             or event.event_type in section.clawback_event_types):
                found.add((event.source, event.object_type, event.object_id))
    return found


def _write_rewards(rt: Runtime, tx: Tx, rows: Sequence[Any], calc_rows: list[dict[str, Any]],
                   results: list[_Result], cancelled: dict[tuple[int, int], int], now: datetime,
                   fund_read: fund_store.Read) -> None:
    """Write the batch's rewards and fund entries and cancel what its clawbacks cancel, each change audited.

    A reward that a clawback of the same batch cancelled is recorded as one of an earlier batch would be: written,
    audited ``reward.calculated`` as it was calculated, then ``reward.cancelled``; its id, known once it is
    written, goes into the clawback's reason and into the ``cancelled_rewards`` of the share the payee kept.
    """
    occurred = {row.id: row.occurred_at for row in rows}
    cancels = [(reward_id, calc_row["event_id"]) for calc_row, result in zip(calc_rows, results, strict=True)
               for reward_id in result.cancels]
    if cancels:
        reward_store.cancel_unpaid(tx.conn, [r for r, _e in cancels], now)
        for reward_id, event_id in cancels:
            _audit_cancelled(tx, reward_id, event_id)
        tax_rules.cancel_lines_of(tx, [reward_id for reward_id, _e in cancels])  # withheld from a cancelled reward
    batch_ids: dict[tuple[int, int], int] = {}
    for ref, event_id in sorted(cancelled.items()):  # one insert each: its id is needed at once
        line, minor, decision = results[ref[0]].rewards[ref[1]]
        row = _reward_row(rt, calc_rows[ref[0]], line, minor, replace(decision, status=RewardStatus.CANCELLED))
        new = reward_store.insert(tx.conn, [row], now)[0]
        batch_ids[ref] = new[0]
        _audit_calculated(tx, (*new[:6], decision.status, *new[7:]))
        _audit_cancelled(tx, new[0], event_id)
    reward_rows: list[tuple[Any, ...]] = []
    fund_rows: list[tuple[Any, ...]] = []
    for index, (calc_row, result) in enumerate(zip(calc_rows, results, strict=True)):
        event_id, program = calc_row["event_id"], calc_row["program"]
        batch_cancels = {ref: batch_ids[ref] for ref in result.cancel_batch}
        if batch_cancels:
            cancel_text = _cancelled_reason([*result.cancels, *batch_cancels.values()])
            reason = storable.sanitise(cancel_text, storable.REASON_LIMIT)
            calc_row["reason"] = result.reason = reason
            event_store.set_calculation_reason(tx.conn, event_id, program, reason)
        for number, (line, minor, decision) in enumerate(result.rewards):
            if (index, number) in cancelled:
                continue
            if batch_cancels and "cancelled_rewards" in line.details:  # a share kept: name what it replaces
                line = replace(line, details={**line.details, "cancelled_rewards": sorted([
                    *line.details["cancelled_rewards"],
                    *(reward_id for (i, n), reward_id in batch_cancels.items()
                      if (results[i].rewards[n][0].payee_id, results[i].rewards[n][0].currency)
                      == (line.payee_id, line.currency))])})
            reward_rows.append(_reward_row(rt, calc_row, line, minor, decision))
        for movement, amount in result.funds:
            fund_rows.append((event_id, program, movement.holder_id, movement.unit, str(amount), occurred[event_id],
                              movement.expires_at, movement.description,
                              canonical_json(dict(movement.details)) if movement.details else "{}"))
    if reward_rows:
        # The audit entries are built from the returned rows themselves, so the rows may come back in any order
        # (asking for parameter order would make SQLite insert them one statement per row).
        for written_row in reward_store.insert(tx.conn, reward_rows, now):
            _audit_calculated(tx, written_row)
    if fund_rows:
        written: dict[tuple[str, str, str], list[tuple[int, datetime, Decimal, datetime | None]]] = {}
        for entry_id, event_id, program, holder, unit, text, expires in fund_store.insert(tx.conn, fund_rows, now):
            value = Decimal(text)
            tx.audit("fund.credited" if value >= 0 else "fund.spent", "fund_entry", entry_id, {
                "event": event_id, "program": program, "holder": holder, "unit": unit, "amount": text,
                "expires_at": isoformat(expires) if expires is not None else None})
            written.setdefault((program, holder, unit), []).append((entry_id, occurred[event_id], value, expires))
        fund_store.advance_all(tx.conn, written, fund_read)  # in key order: replicas lock alike


def _reward_row(rt: Runtime, calc_row: dict[str, Any], line: RewardLine, minor: int, decision: Decision
                ) -> tuple[Any, ...]:
    """The ``rewards`` row of one line of the calculation ``calc_row``, as
    :data:`payhub.store.rewards.NEW_REWARD_COLUMNS`."""
    section = rt.settings.programs[calc_row["program"]]
    return (calc_row["event_id"], calc_row["program"], line.payee_id, minor, line.currency, line.description,
            canonical_json(dict(line.details)) if line.details else "{}", decision.status, decision.hold_code,
            decision.hold_reason, decision.approvals_needed, decision.budget_key,
            section.fx_date if section.payout_currency == "payee" else None)


def _audit_calculated(tx: Tx, written: Sequence[Any]) -> None:
    """Audit a reward as calculated: ``written`` is its :data:`payhub.store.rewards.WRITTEN` columns, whose status is
    the one it was calculated with."""
    reward_id, event_id, program, payee_id, amount_minor, currency, status, hold_reason, approvals_needed = written
    detail: dict[str, Any] = {"event": event_id, "program": program, "payee": payee_id,
                              "amount": str(from_minor(amount_minor, currency)), "currency": currency}
    if status != RewardStatus.PENDING:
        detail.update(status=status, reason=hold_reason, approvals_needed=approvals_needed)
    tx.audit("reward.calculated", "reward", reward_id, detail, outcome="held" if status == RewardStatus.HELD else "ok")


def _audit_cancelled(tx: Tx, reward_id: int, event_id: int) -> None:
    """Audit reward ``reward_id`` as cancelled by the clawback event ``event_id``."""
    tx.audit("reward.cancelled", "reward", reward_id, {"reason": f"clawed back by event {event_id} before it was "
                                                                 "paid", "event": event_id})


def _cancelled_reason(reward_ids: list[int]) -> str:
    """The reason of a clawback calculation that cancelled ``reward_ids``."""
    return "cancelled unpaid rewards " + ", ".join(map(str, sorted(reward_ids)))


def _run_one(calculator: Calculator | str, program: str, section: ProgramSection, event: Event,
             history: DbHistory, flag_caps: tuple[Sequence[FlagCap], gift_caps.PayeeFlags]) -> _Result:
    """Calculate one (program, event): calculator or clawback, then splits, rounding, the program's caps, the flag
    caps of ``[compliance.gifts]`` (``flag_caps``: the caps and the registry's flags), budget and approval."""
    if isinstance(calculator, str):  # the plugin failed to load: recorded as a failed calculation
        return _Result(CalculationStatus.FAILED, calculator)
    try:
        if event.event_type in section.clawback_event_types:
            return _clawback(program, section, event, history)
        if section.once_per_object:
            held = _still_granted(history.object_rewards(program, event))
            if held:
                return _Result(CalculationStatus.NOT_ELIGIBLE,
                               f"{event.object_type} {event.object_id} is already rewarded by this program ({held}); "
                               "a clawback must take that back first")
        items = apply_splits(section, event, calculator.calculate(event, history))
        result = _Result(CalculationStatus.REWARDED)
        lines: list[tuple[RewardLine, int]] = []
        nothing: list[str] = []  # why each line or movement came to nothing
        for item in items:
            if isinstance(item, RewardLine):
                minor = _checked_line(item)
                if minor:
                    lines.append((item, minor))
                else:
                    nothing.append(_zero(f"the reward to {item.payee_id}", item.amount, item.currency))
            elif isinstance(item, FundMovement):
                amount = _checked_movement(item)
                if amount:
                    result.funds.append((item, amount))
                else:
                    nothing.append(_zero(f"the fund movement for {item.holder_id}", item.amount, item.unit))
            else:
                raise CalculationError(f"calculator returned {type(item).__name__}, not RewardLine or FundMovement")
        lines, notes = apply_caps(program, section, event, lines, history)
        lines, flag_notes = gift_caps.apply_flag_caps(flag_caps[0], program, event, lines, history, flag_caps[1])
        reserved = dict(history.reserved)
        for line, minor in lines:
            result.rewards.append((line, minor, decide(program, section, event, line.currency, minor, history,
                                                       reserved)))
    except NotEligible as exc:
        return _Result(CalculationStatus.NOT_ELIGIBLE, _stated(exc))
    except gift_caps.PayeeNotRegistered as exc:  # the flags are unknown: calculated once the payee is registered
        return _Result(CalculationStatus.NOT_ELIGIBLE, str(exc), waits_for=exc.payee_id)
    except (CalculationError, InvalidRecord) as exc:
        return _Result(CalculationStatus.FAILED, str(exc))
    except Exception as exc:  # noqa: BLE001 - a calculator bug fails only this (program, event)
        log.exception("program %s raised on event %s", program, event.id)
        return _Result(CalculationStatus.FAILED, f"calculator error: {type(exc).__name__}: {exc}")
    history.reserved = reserved  # kept only when the whole calculation succeeded
    if not result.rewards and not result.funds:
        result.status = CalculationStatus.NOT_ELIGIBLE
        result.reason = "; ".join(nothing + notes + flag_notes) or NO_LINE
    elif flag_notes:  # a compliance cut is on the record of the calculation too (event.calculated)
        result.reason = "; ".join(flag_notes)
    return result


NO_LINE = "the calculator returned no reward line"
"""The reason of a calculator that returned nothing without saying why (see :class:`payhub.api.NotEligible`)."""


def _stated(exc: NotEligible) -> str:
    """The reason a calculator gave, as text."""
    reason = exc.reason.strip() if isinstance(exc.reason, str) else ""
    return reason or "the calculator found the event not eligible and gave no reason"


def _zero(what: str, amount: Decimal, unit: str) -> str:
    """Why a line or movement of ``amount`` pays nothing."""
    rounded = funds.round_unit(Decimal(0), unit)
    return f"{what} is {rounded} {unit}" if amount == 0 else f"{what} of {amount} {unit} rounds to {rounded} {unit}"


def _still_granted(prior: list[ObjectReward]) -> str:
    """What the rewards of an object still grant, per currency (``""`` when nothing)."""
    net: dict[str, int] = {}
    for reward in prior:
        net[reward.currency] = net.get(reward.currency, 0) + reward.minor
    return ", ".join(f"{from_minor(minor, currency)} {currency}" for currency, minor in sorted(net.items()) if minor)


def _clawback(program: str, section: ProgramSection, event: Event, history: DbHistory) -> _Result:
    claw = clawback(program, section, event, history)
    result = _Result(CalculationStatus.REWARDED if claw.lines or claw.cancel or claw.cancel_batch
                     else CalculationStatus.NOT_ELIGIBLE,
                     claw.reason or None, cancels=claw.cancel, cancel_batch=claw.cancel_batch)
    if claw.cancel:  # the ids of the batch's own rewards are known once they are written
        result.reason = _cancelled_reason(claw.cancel)
    reserved = dict(history.reserved)
    for line in claw.lines:
        minor = _checked_line(line)
        group = (line.payee_id, line.currency)
        reserved_before = group not in claw.unreserved
        decision = Decision() if minor < 0 else kept_share(
            section, line.currency, minor, claw.budget_keys.get(group), reserved_before=reserved_before,
            history=history, reserved=reserved)
        if minor > 0 and decision.budget_key is not None and reserved_before:  # it stays in its pool, as stored
            reserved[decision.budget_key] = reserved.get(decision.budget_key, 0) + minor
        result.rewards.append((line, minor, decision))
    history.cancel(program, claw.cancel)
    history.reserved = reserved
    return result


def retry_failed(rt: Runtime, program: str | None = None, event_id: int | None = None) -> int:
    """Forget failed calculations (optionally of one program or event) so they run again; return how many.

    Each forgotten calculation is audited with its old reason; its event goes back to ``ingested``, and only the
    programs without a calculation for it run again.
    """
    with rt.transaction() as tx:
        failed = event_store.forget_failed(tx.conn, program, event_id)
        for f in failed:
            tx.audit("calculation.retried", "event", f.event_id, {"program": f.program, "previous_reason": f.reason})
    return len(failed)
