"""Provenance: why a payee was paid an amount, from the CRM record to the rail's document.

:func:`explain` answers for a payout, a reward, an event or a CRM record: for every reward, its CRM record and
source, its event, the program version and parameters that calculated it, what the rules did (caps, splits,
clawbacks, fund movements), the later adjustments on the same record and what an adjustment takes back, its
approvals and its audit entries; for every payout, the screening decisions, each attempt and the rail's document
reference. :func:`trace` gives the shorter chain of ``payhub audit trace`` from the same reads.

Everything is plain data (dicts, lists, text, numbers, datetimes) ready for JSON. However many items a payout has,
one answer costs a fixed number of queries (each reads a whole set: the rewards, their events, their audit entries…).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict

from sqlalchemy import ColumnElement, Connection, Select, String, and_, cast, or_, select

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
from payhub.reports import amount_text

MAX_ID = 2**63 - 1  # ids are 64-bit integers: a larger number names nothing

Kind = Literal["payout", "reward", "event", "record"]


# ------------------------------------------------------------------------------------------------- the answer


class AuditInfo(TypedDict):
    """An audit entry of a reward or payout."""

    seq: int
    at: str
    actor: str
    action: str
    outcome: str
    detail: Any


class EventInfo(TypedDict):
    """An event and the CRM record it came from (``source``, ``object_type``, ``object_id``)."""

    id: int
    key: str
    source: str
    object_type: str
    object_id: str
    transition: str
    type: str
    occurred_at: datetime | None
    payee: str | None
    partner: str | None
    amount: str | None
    currency: str | None
    attributes: Any
    status: str
    reason: str | None
    ingested_at: datetime


class ProgramInfo(TypedDict):
    """The program version a calculation ran with."""

    name: str
    version: int
    calculator: str
    parameters: Any
    version_created_at: datetime


class CalculationInfo(TypedDict):
    """One (program, event) calculation: ``rewarded``, ``not_eligible`` or ``failed``, with its reason."""

    id: int
    program: str
    version: int
    calculator: str
    status: str
    reason: str | None
    calculated_at: datetime


class RewardInfo(TypedDict):
    """A reward row. ``kind`` is ``adjustment`` for a negative amount; ``fx`` is the conversion of its current
    payout item; ``approvers`` name who approved it, in order."""

    id: int
    kind: str
    payee: str
    amount: str
    currency: str
    description: str
    details: Any
    status: str
    hold_code: str | None
    hold_reason: str | None
    approvals_needed: int
    approvers: list[str]
    budget_key: str | None
    payout: int | None
    fx: Any
    created_at: datetime


class RulesInfo(TypedDict):
    """What the core's rules recorded in the reward's details: cap cuts, its share of a split, a clawback."""

    caps: list[Any]
    split: dict[str, Any] | None
    clawback: dict[str, Any] | None


class FundInfo(TypedDict):
    """A fund movement of a calculation (a co-op accrual, an MDF allocation or claim, points)."""

    id: int
    program: str
    holder: str
    unit: str
    amount: str
    expires_at: datetime | None
    description: str
    details: Any


class ApprovalInfo(TypedDict):
    """Who approved, when, and the note the audit entry of the approval holds."""

    approver: str
    at: datetime
    note: str | None


class RelatedReward(TypedDict):
    """Another reward of the same program on the same CRM record."""

    id: int
    event: int
    event_type: str
    occurred_at: datetime | None
    payee: str
    amount: str
    currency: str
    status: str
    payout: int | None


class PayoutLink(TypedDict):
    """A payout that carried the reward, and the reward's item in it (in the payout's currency)."""

    id: int
    status: str
    amount: str
    currency: str
    fx: Any


class RewardView(TypedDict):
    """Everything that produced one reward and what became of it.

    ``adjustments``: later rewards of the program on the same CRM record, for the same payee and currency
    (clawbacks, shares kept after one). ``takes_back``: for an adjustment (or a share kept after a clawback), the
    earlier rewards of the record, for the same payee and currency, it nets against.
    """

    reward: RewardInfo
    program: ProgramInfo
    calculation: CalculationInfo
    event: EventInfo
    rules: RulesInfo
    funds: list[FundInfo]
    approvals: list[ApprovalInfo]
    adjustments: list[RelatedReward]
    takes_back: list[RelatedReward]
    in_payouts: list[PayoutLink]
    history: list[AuditInfo]


class AttemptInfo(TypedDict):
    """A send or lookup; ``provider_ref`` is the reference the rail gave for it, when the audit entry records one."""

    kind: str
    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    detail: str | None
    provider_ref: str | None


class DocumentInfo(TypedDict):
    """The rail's document for a payout, read from its reference. ``missing`` says what payhub does not hold."""

    kind: str | None
    reference: str | None
    file: str | None
    line: int | None
    order_id: str | None
    credit_note: str | None
    missing: str | None


class ScreeningInfo(TypedDict):
    """A screening decision on the payout: ``passed`` (``by`` names the screening hooks, recorded with the send they
    allowed), ``held`` (``by`` ``screening`` or ``audit trail check``) or an operator's ``released``."""

    seq: int
    at: str
    actor: str
    decision: str
    by: str
    reason: str | None
    operators: list[str]  # of a release: who released it, first first (two for a screening hold); else []


class PayoutView(TypedDict):
    """A payout, its screening, attempts, document and audit entries."""

    id: int
    key: str
    payee: str
    rail: str
    rail_plugin: str | None
    route: str
    amount: str
    currency: str
    items: int
    status: str
    reason: str | None
    provider_ref: str | None
    released_by: str | None
    created_at: datetime
    updated_at: datetime
    document: DocumentInfo
    screening: list[ScreeningInfo]
    attempts: list[AttemptInfo]
    history: list[AuditInfo]


class ItemInfo(TypedDict):
    """A payout item: the reward's amount in the payout's currency, and the conversion when there was one."""

    amount: str
    currency: str
    fx: Any


class ItemView(RewardView):
    """A payout's item with the whole explanation of its reward."""

    item: ItemInfo


class NetInfo(TypedDict):
    """How a payout's items add up: rewards, adjustments netted against them, and the payout's amount."""

    items: int
    rewards: str
    adjustments: str
    total: str
    amount: str
    currency: str
    adds_up: bool


class EventView(TypedDict):
    """An event, every program's calculation of it, its rewards and its fund movements (every program's)."""

    event: EventInfo
    calculations: list[CalculationInfo]
    rewards: list[RewardView]
    funds: list[FundInfo]


class PayoutExplanation(TypedDict):
    kind: Literal["payout"]
    ref: str
    payout: PayoutView
    items: list[ItemView]
    net: NetInfo


class RewardExplanation(RewardView):
    kind: Literal["reward"]
    ref: str
    payouts: list[PayoutView]


class EventsExplanation(TypedDict):
    kind: Literal["events"]
    ref: str
    events: list[EventView]
    payouts: list[PayoutView]


Explanation = PayoutExplanation | RewardExplanation | EventsExplanation


# ------------------------------------------------------------------------------------------------ references


@dataclass(frozen=True, slots=True)
class Ref:
    """What a reference names: ``payout:N``, ``reward:N``, ``event:N``, or a CRM record (``text``)."""

    kind: Kind
    text: str
    number: int = 0


def parse_ref(ref: str, bare_number: Literal["reward", "record"] = "record") -> Ref:
    """``payout:N``, ``reward:N``, ``event:N`` (the kind in any case: ``PAYOUT:1``); a bare number is a reward
    (``bare_number="reward"``) or a CRM id; ``record:ID`` is always a CRM object id; anything else is an event key
    or a CRM object id."""
    kind, sep, number = ref.partition(":")
    kind = kind.lower()
    if sep and kind in ("payout", "reward", "event") and number.isascii() and number.isdigit():
        return Ref(kind, ref, int(number))  # type: ignore[arg-type]  # one of the three literals
    if bare_number == "reward" and ref.isascii() and ref.isdigit():
        return Ref("reward", ref, int(ref))
    return Ref("record", ref)


# ------------------------------------------------------------------------------------------------- the reads


@dataclass
class _Graph:
    """The rows of one answer, read as whole sets."""

    events: dict[int, Any] = field(default_factory=dict)
    calculations: dict[tuple[int, str], Any] = field(default_factory=dict)
    rewards: dict[int, Any] = field(default_factory=dict)
    approvals: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    reward_entries: dict[int, list[AuditInfo]] = field(default_factory=lambda: defaultdict(list))
    funds: dict[tuple[int, str], list[FundInfo]] = field(default_factory=lambda: defaultdict(list))
    on_record: dict[tuple[str, str, str, str], list[Any]] = field(default_factory=lambda: defaultdict(list))
    items: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))  # reward -> its items
    payouts: dict[int, Any] = field(default_factory=dict)
    attempts: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    payout_entries: dict[int, list[AuditInfo]] = field(default_factory=lambda: defaultdict(list))


def _read(conn: Connection, reward_ids: Select[Any], event_ids: Select[Any], payout_id: int | None) -> _Graph:
    """Read everything about the rewards ``reward_ids`` selects and the events ``event_ids`` selects (all their
    calculations), the payouts that carried those rewards (and ``payout_id``), in a fixed number of queries."""
    g = _Graph()
    reward_sq, event_sq = reward_ids.subquery(), event_ids.subquery()
    in_rewards, in_events = select(reward_sq.c[0]), select(event_sq.c[0])
    for row in conn.execute(select(events).where(events.c.id.in_(in_events)).order_by(events.c.id)):
        g.events[row.id] = row
    for row in conn.execute(
            select(calculations.c.id, calculations.c.event_id, calculations.c.program, calculations.c.status,
                   calculations.c.reason, calculations.c.calculated_at, program_versions.c.version,
                   program_versions.c.calculator, program_versions.c.params,
                   program_versions.c.created_at.label("version_created_at"))
            .join(program_versions, program_versions.c.id == calculations.c.program_version_id)
            .where(calculations.c.event_id.in_(in_events)).order_by(calculations.c.event_id, calculations.c.program)):
        g.calculations[(row.event_id, row.program)] = row
    for row in conn.execute(select(rewards).where(rewards.c.id.in_(in_rewards)).order_by(rewards.c.id)):
        g.rewards[row.id] = row
    for row in conn.execute(select(approvals).where(approvals.c.reward_id.in_(in_rewards))
                            .order_by(approvals.c.approved_at, approvals.c.approver)):
        g.approvals[row.reward_id].append(row)
    text_ids = select(cast(reward_sq.c[0], String))
    for subject, entry in _entries(conn, "reward", text_ids):
        g.reward_entries[int(subject)].append(entry)
    for row in conn.execute(select(fund_entries).where(fund_entries.c.event_id.in_(in_events))
                            .order_by(fund_entries.c.id)):
        g.funds[(row.event_id, row.program)].append(FundInfo(
            id=row.id, program=row.program, holder=row.holder_id, unit=row.unit, amount=row.amount,
            expires_at=row.expires_at, description=row.description, details=_json(row.details)))
    mine, theirs, other = events.alias("mine"), events.alias("theirs"), rewards.alias("other")
    same_record = and_(theirs.c.source == mine.c.source, theirs.c.object_type == mine.c.object_type,
                       theirs.c.object_id == mine.c.object_id)
    for row in conn.execute(
            select(other.c.id, other.c.program, other.c.event_id, other.c.payee_id, other.c.amount_minor,
                   other.c.currency, other.c.status, other.c.payout_id, theirs.c.source, theirs.c.object_type,
                   theirs.c.object_id, theirs.c.event_type, theirs.c.occurred_at)
            .select_from(mine.join(theirs, same_record).join(other, other.c.event_id == theirs.c.id))
            .where(mine.c.id.in_(in_events)).distinct().order_by(other.c.id)):
        g.on_record[(row.source, row.object_type, row.object_id, row.program)].append(row)
    for row in conn.execute(select(payout_items).where(payout_items.c.reward_id.in_(in_rewards))
                            .order_by(payout_items.c.payout_id, payout_items.c.reward_id)):
        g.items[row.reward_id].append(row)
    carried = select(payout_items.c.payout_id).where(payout_items.c.reward_id.in_(in_rewards))
    payout_filter: ColumnElement[bool] = payouts.c.id.in_(carried)
    if payout_id is not None:
        payout_filter = or_(payouts.c.id == payout_id, payout_filter)
    for row in conn.execute(select(payouts).where(payout_filter).order_by(payouts.c.id)):
        g.payouts[row.id] = row
    payout_sq = select(payouts.c.id).where(payout_filter).subquery()
    for row in conn.execute(select(attempts).where(attempts.c.payout_id.in_(select(payout_sq.c[0])))
                            .order_by(attempts.c.id)):
        g.attempts[row.payout_id].append(row)
    for subject, entry in _entries(conn, "payout", select(cast(payout_sq.c[0], String))):
        g.payout_entries[int(subject)].append(entry)
    return g


def _entries(conn: Connection, subject_type: str, subject_ids: Select[Any]) -> Iterable[tuple[str, AuditInfo]]:
    for row in conn.execute(
            select(audit_log.c.seq, audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.outcome,
                   audit_log.c.detail, audit_log.c.subject_id)
            .where(audit_log.c.subject_type == subject_type, audit_log.c.subject_id.in_(subject_ids))
            .order_by(audit_log.c.seq)):
        yield row.subject_id, AuditInfo(seq=row.seq, at=row.at, actor=row.actor, action=row.action,
                                        outcome=row.outcome, detail=_json(row.detail))


def _json(text: str | None) -> Any:
    """Stored JSON text as data; text that is not JSON (damaged outside payhub) is returned as it is."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------------------- the views


def _event(row: Any) -> EventInfo:
    return EventInfo(
        id=row.id, key=row.key, source=row.source, object_type=row.object_type, object_id=row.object_id,
        transition=row.transition, type=row.event_type, occurred_at=row.occurred_at, payee=row.payee_id,
        partner=row.partner_id, amount=row.amount, currency=row.currency, attributes=_json(row.attributes),
        status=row.status, reason=row.reason, ingested_at=row.ingested_at)


def _calculation(row: Any) -> CalculationInfo:
    return CalculationInfo(id=row.id, program=row.program, version=row.version, calculator=row.calculator,
                           status=row.status, reason=row.reason, calculated_at=row.calculated_at)


def _related(row: Any) -> RelatedReward:
    return RelatedReward(id=row.id, event=row.event_id, event_type=row.event_type, occurred_at=row.occurred_at,
                         payee=row.payee_id, amount=amount_text(row.amount_minor, row.currency), currency=row.currency,
                         status=row.status, payout=row.payout_id)


def _rules(details: Any) -> RulesInfo:
    if not isinstance(details, dict):
        return RulesInfo(caps=[], split=None, clawback=None)
    capped = details.get("capped")
    caps = capped if isinstance(capped, list) else [
        {k: details[k] for k in ("cap", "earned", "capped") if k in details}] if capped is not None else []
    split = {"of": details.get("split_of"), "percent": details.get("split_percent"),
             "primary": details.get("split_primary")} if "split_of" in details else None
    clawback = {k: details[k] for k in ("clawback", "granted", "already_taken_back", "fraction", "taken_back",
                                        "cancelled_rewards") if k in details} if "clawback" in details else None
    return RulesInfo(caps=caps, split=split, clawback=clawback)


def _reward(g: _Graph, row: Any) -> RewardView:
    calc = g.calculations[(row.event_id, row.program)]
    event = g.events[row.event_id]
    details = _json(row.details)
    links = g.items.get(row.id, [])
    current = next((item for item in links if item.payout_id == row.payout_id), None)
    entries = g.reward_entries.get(row.id, [])
    notes = {e["detail"].get("approver"): e["detail"].get("note") for e in entries
             if e["action"] == "reward.approved" and isinstance(e["detail"], dict)}
    given = g.approvals.get(row.id, [])
    # A clawback nets per payee and currency: only those rewards of the record are this one's to net against.
    record = [r for r in g.on_record.get((event.source, event.object_type, event.object_id, row.program), [])
              if r.payee_id == row.payee_id and r.currency == row.currency and r.event_id != row.event_id]
    adjusting = row.amount_minor < 0 or (isinstance(details, dict) and "clawback" in details)
    return RewardView(
        reward=RewardInfo(
            id=row.id, kind="adjustment" if row.amount_minor < 0 else "reward", payee=row.payee_id,
            amount=amount_text(row.amount_minor, row.currency), currency=row.currency, description=row.description,
            details=details, status=row.status, hold_code=row.hold_code, hold_reason=row.hold_reason,
            approvals_needed=row.approvals_needed, approvers=[a.approver for a in given],
            budget_key=row.budget_key, payout=row.payout_id,
            fx=_json(current.fx) if current is not None else None, created_at=row.created_at),
        program=ProgramInfo(name=row.program, version=calc.version, calculator=calc.calculator,
                            parameters=_json(calc.params), version_created_at=calc.version_created_at),
        calculation=_calculation(calc),
        event=_event(event),
        rules=_rules(details),
        funds=g.funds.get((row.event_id, row.program), []),
        approvals=[ApprovalInfo(approver=a.approver, at=a.approved_at, note=notes.get(a.approver)) for a in given],
        adjustments=[_related(r) for r in record if r.id > row.id],
        takes_back=[_related(r) for r in record if r.id < row.id] if adjusting else [],
        in_payouts=[PayoutLink(id=item.payout_id, status=g.payouts[item.payout_id].status,
                               amount=amount_text(item.amount_minor, g.payouts[item.payout_id].currency),
                               currency=g.payouts[item.payout_id].currency, fx=_json(item.fx))
                    for item in links if item.payout_id in g.payouts],
        history=entries,
    )


# What each shipped rail's reference names, and what of its document payhub does not hold.
_DOCUMENTS: dict[str, tuple[str, str | None]] = {
    "bank_transfer": ("bank payment file", "the line's end-to-end id (SEPA) or trace number (ACH) is kept in the "
                      "rail's manifest (<file>.manifest.json in its outbox), not in payhub's database"),
    "credit_note": ("credit note", None),
    "giftcard": ("gift-card order", None),
    "csv_export": ("export file", "the csv_export rail records the file, not the line: the payout's row is the one "
                   "holding its idempotency key"),
}


def document(plugin: str | None, provider_ref: str | None) -> DocumentInfo:
    """The rail's document for a payout, from the reference its rail plugin returned.

    ``bank_transfer``: ``<file>:<line>`` of the payment file; ``credit_note``: the credit note's number (its file
    is ``<number>.xml`` in the rail's outbox); ``giftcard``: the provider's order id; ``csv_export``: the file.
    Another rail's reference is shown as it is, with ``missing`` saying its meaning is not known.
    """
    info = DocumentInfo(kind=None, reference=provider_ref, file=None, line=None, order_id=None, credit_note=None,
                        missing=None)
    if provider_ref is None:
        info["missing"] = "the rail has given no reference for this payout (it has not accepted it)"
        return info
    kind, missing = _DOCUMENTS.get(plugin or "", ("provider reference", f"rail plugin {plugin} does not say what "
                                                                        "its reference names"))
    info["kind"], info["missing"] = kind, missing
    if plugin == "bank_transfer":
        name, _, line = provider_ref.rpartition(":")
        if name and line.isascii() and line.isdigit():
            info["file"], info["line"] = name, int(line)
        else:
            info["missing"] = f"reference {provider_ref!r} is not <file>:<line>"
    elif plugin == "credit_note":
        info["credit_note"], info["file"] = provider_ref, f"{provider_ref}.xml"
    elif plugin == "giftcard":
        info["order_id"] = provider_ref
    elif plugin == "csv_export":
        info["file"] = provider_ref
    return info


def _screening(entries: list[AuditInfo]) -> list[ScreeningInfo]:
    found = []
    for e in entries:
        detail = e["detail"] if isinstance(e["detail"], dict) else {}
        if e["action"] == "payout.sending" and isinstance(detail.get("screened_by"), list):
            override = detail.get("screening_override")
            found.append(ScreeningInfo(
                seq=e["seq"], at=e["at"], actor=e["actor"], decision="passed",
                by=", ".join(map(str, detail["screened_by"])), operators=[],
                reason=None if override is None else f"denied as before; two operators' release (entry {override}) "
                                                     "covers it"))
            continue
        if e["action"] not in ("payout.held", "payout.released"):
            continue
        held = e["action"] == "payout.held"
        by = ("audit trail check" if detail.get("check") == "audit trail" else "screening") if held else "operator"
        named = detail.get("operators")
        operators = [] if held else [str(n) for n in named] if isinstance(named, list) and named else [e["actor"]]
        found.append(ScreeningInfo(seq=e["seq"], at=e["at"], actor=e["actor"],
                                   decision="held" if held else "released", by=by, reason=detail.get("reason"),
                                   operators=operators))
    return found


def _attempt_refs(entries: list[AuditInfo]) -> dict[tuple[str, int], str]:
    """The reference each attempt itself got: ``("send", number)`` or ``("lookup", n)`` (the payout's n-th lookup,
    from 0) to the rail's reference.

    A send's outcome entry follows its ``payout.sending`` entry; a lookup's follows its ``payout.lookup`` entry (or is
    the operator's ``payout.resolved``, recorded as a lookup). So a reference the lookup found after a send whose
    outcome was unknown belongs to the lookup, never to the send.
    """
    refs: dict[tuple[str, int], str] = {}
    current: tuple[str, int] | None = None
    lookups = 0
    for e in entries:
        detail = e["detail"] if isinstance(e["detail"], dict) else {}
        if e["action"] == "payout.sending" and isinstance(detail.get("attempt"), int):
            current = ("send", detail["attempt"])
        elif e["action"] in ("payout.lookup", "payout.resolved"):
            current, lookups = ("lookup", lookups), lookups + 1
        if current is not None and detail.get("provider_ref"):
            refs.setdefault(current, str(detail["provider_ref"]))
    return refs


def _attempts(rows: list[Any], entries: list[AuditInfo]) -> list[AttemptInfo]:
    refs = _attempt_refs(entries)
    found: list[AttemptInfo] = []
    lookups = 0
    for a in rows:
        if a.kind == "lookup":
            ref, lookups = refs.get(("lookup", lookups)), lookups + 1
        else:
            ref = refs.get((a.kind, a.number))
        found.append(AttemptInfo(kind=a.kind, number=a.number, started_at=a.started_at, finished_at=a.finished_at,
                                 outcome=a.outcome, detail=a.detail, provider_ref=ref))
    return found


def _payout(g: _Graph, row: Any, rail_plugins: Mapping[str, str]) -> PayoutView:
    entries = g.payout_entries.get(row.id, [])
    plugin = rail_plugins.get(row.rail)
    return PayoutView(
        id=row.id, key=row.idempotency_key, payee=row.payee_id, rail=row.rail, rail_plugin=plugin,
        route=row.route_reason, amount=amount_text(row.amount_minor, row.currency), currency=row.currency,
        items=row.item_count, status=row.status, reason=row.reason, provider_ref=row.provider_ref,
        released_by=row.released_by, created_at=row.created_at, updated_at=row.updated_at,
        document=document(plugin, row.provider_ref), screening=_screening(entries),
        attempts=_attempts(g.attempts.get(row.id, []), entries),
        history=entries)


# ------------------------------------------------------------------------------------------------ the answers


def _selections(conn: Connection, ref: Ref) -> tuple[Select[Any], Select[Any]] | None:
    """(reward ids, event ids) that ``ref`` names; None when it names nothing."""
    if ref.kind != "record" and not 1 <= ref.number <= MAX_ID:
        return None
    if ref.kind == "payout":
        if conn.execute(select(payouts.c.id).where(payouts.c.id == ref.number)).first() is None:
            return None
        reward_ids = select(payout_items.c.reward_id).where(payout_items.c.payout_id == ref.number)
        return reward_ids, select(rewards.c.event_id).where(rewards.c.id.in_(reward_ids))
    if ref.kind == "reward":
        if conn.execute(select(rewards.c.id).where(rewards.c.id == ref.number)).first() is None:
            return None
        return (select(rewards.c.id).where(rewards.c.id == ref.number),
                select(rewards.c.event_id).where(rewards.c.id == ref.number))
    if ref.kind == "event":
        event_ids = select(events.c.id).where(events.c.id == ref.number)
    else:
        prefix, sep, object_id = ref.text.partition(":")
        match = or_(events.c.key == ref.text, events.c.object_id == ref.text)
        if sep and prefix == "record":
            match = or_(match, events.c.object_id == object_id)
        event_ids = select(events.c.id).where(match)
    if conn.execute(event_ids.limit(1)).first() is None:
        return None
    return select(rewards.c.id).where(rewards.c.event_id.in_(event_ids)), event_ids


def explain(conn: Connection, ref: str, rail_plugins: Mapping[str, str] | None = None,
            bare_number: Literal["reward", "record"] = "reward") -> Explanation | None:
    """Why the payout, reward, event(s) or CRM record ``ref`` names was paid what it was; None when it names nothing.

    ``ref`` is read by :func:`parse_ref`. ``rail_plugins`` maps each rail's name to its plugin, to read the rails'
    document references (:func:`document`). A payout's answer lists every item, in reward order, with the whole
    explanation of its reward; a reward's adds every payout that carried it; an event's or a record's lists each
    event with every program's calculation, its rewards, and the payouts that carried them.
    """
    parsed = parse_ref(ref, bare_number)
    found = _selections(conn, parsed)
    if found is None:
        return None
    plugins = rail_plugins or {}
    g = _read(conn, *found, parsed.number if parsed.kind == "payout" else None)
    views = {reward_id: _reward(g, row) for reward_id, row in g.rewards.items()}
    if parsed.kind == "payout":
        payout = g.payouts[parsed.number]
        items: list[ItemView] = []
        for reward_id, view in views.items():
            for item in g.items.get(reward_id, []):
                if item.payout_id == payout.id:
                    items.append(ItemView(**view, item=ItemInfo(
                        amount=amount_text(item.amount_minor, payout.currency), currency=payout.currency,
                        fx=_json(item.fx))))
        minors = [item.amount_minor for reward_id in views for item in g.items.get(reward_id, [])
                  if item.payout_id == payout.id]
        total = sum(minors)
        return PayoutExplanation(
            kind="payout", ref=ref, payout=_payout(g, payout, plugins), items=items,
            net=NetInfo(items=len(minors), rewards=amount_text(sum(m for m in minors if m > 0), payout.currency),
                        adjustments=amount_text(sum(m for m in minors if m < 0), payout.currency),
                        total=amount_text(total, payout.currency),
                        amount=amount_text(payout.amount_minor, payout.currency),
                        currency=payout.currency, adds_up=total == payout.amount_minor))
    shown_payouts = [_payout(g, row, plugins) for row in g.payouts.values()]
    if parsed.kind == "reward":
        return RewardExplanation(kind="reward", ref=ref, payouts=shown_payouts, **views[parsed.number])
    by_event: dict[int, list[RewardView]] = defaultdict(list)
    for view in views.values():
        by_event[view["event"]["id"]].append(view)
    calculated = _by_event(g)
    moved: dict[int, list[FundInfo]] = defaultdict(list)
    for (event_id, _program), entries in g.funds.items():
        moved[event_id] += entries
    return EventsExplanation(kind="events", ref=ref, payouts=shown_payouts, events=[
        EventView(event=_event(row), rewards=by_event.get(event_id, []),
                  calculations=[_calculation(c) for c in calculated.get(event_id, [])],
                  funds=sorted(moved.get(event_id, []), key=lambda f: f["id"]))
        for event_id, row in g.events.items()])


def _by_event(g: _Graph) -> dict[int, list[Any]]:
    """Each event's calculations, by program."""
    found: dict[int, list[Any]] = defaultdict(list)
    for (event_id, _program), row in g.calculations.items():
        found[event_id].append(row)
    return found


def trace(conn: Connection, ref: str) -> list[dict[str, Any]]:
    """The chain CRM record → events → calculations (program, version, status, reason) → rewards (with their hold
    reason and the later adjustments on their record) → payouts (with their reason) → attempts, for ``ref``
    (read by :func:`parse_ref`; a bare number is a CRM id). Empty when ``ref`` names nothing."""
    parsed = parse_ref(ref)
    found = _selections(conn, parsed)
    if found is None:
        return []
    g = _read(conn, *found, None)
    calculated = _by_event(g)
    rewarded: dict[int, list[Any]] = defaultdict(list)
    for row in g.rewards.values():
        rewarded[row.event_id].append(row)
    chain = []
    for event_id, event in g.events.items():
        node_rewards = []
        for row in rewarded.get(event_id, []):
            view = _reward(g, row)
            node_rewards.append({
                "id": row.id, "program": row.program, "payee": row.payee_id,
                "amount": view["reward"]["amount"], "currency": row.currency, "status": row.status,
                "hold_code": row.hold_code, "hold_reason": row.hold_reason,
                "adjustments": view["adjustments"],
                "payouts": [{
                    "id": p.id, "key": p.idempotency_key, "rail": p.rail, "route": p.route_reason,
                    "amount": amount_text(p.amount_minor, p.currency), "currency": p.currency, "status": p.status,
                    "reason": p.reason, "provider_ref": p.provider_ref, "released_by": p.released_by,
                    "attempts": [{"kind": a.kind, "number": a.number, "started_at": a.started_at,
                                  "finished_at": a.finished_at, "outcome": a.outcome, "detail": a.detail}
                                 for a in g.attempts.get(p.id, [])],
                } for p in (g.payouts[link["id"]] for link in view["in_payouts"])],
            })
        chain.append({
            "event": {"id": event.id, "key": event.key, "status": event.status, "reason": event.reason,
                      "occurred_at": event.occurred_at, "amount": event.amount, "currency": event.currency},
            "calculations": [{"program": c.program, "version": c.version, "calculator": c.calculator,
                              "status": c.status, "reason": c.reason} for c in calculated.get(event_id, [])],
            "rewards": node_rewards,
        })
    return chain
