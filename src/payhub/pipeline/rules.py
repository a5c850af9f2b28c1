"""The rules the core applies around every calculator: splits, clawbacks, caps, budgets and approvals.

They read a program's core keys (see :class:`payhub.settings.ProgramSection`) and raise CalculationError, naming
the key or event attribute at fault, when an event cannot be handled; the calculation then fails with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from payhub import states
from payhub.api import Event, FundMovement, RewardLine
from payhub.clock import period_bounds
from payhub.errors import CalculationError
from payhub.money import from_minor, quantize, split, to_minor
from payhub.settings import ProgramSection
from payhub.states import HoldCode, RewardStatus

SPLITS_ATTRIBUTE = "splits"


@dataclass(frozen=True, slots=True)
class ObjectReward:
    """A reward of a program on an earlier event of the same CRM object (what a clawback can take back).

    ``reward_id`` is None for a reward of the batch being calculated (not written yet); ``batch_ref`` names it."""

    occurred_at: datetime
    payee_id: str
    currency: str
    minor: int
    reward_id: int | None = None
    status: str | None = None
    budget_key: str | None = None
    batch_ref: tuple[int, int] | None = None
    partner_id: str | None = None
    hold_code: str | None = None

    @property
    def unpaid(self) -> bool:
        """Not in a payout yet: of this batch, or stored in an unpaid state."""
        return self.batch_ref is not None or (self.reward_id is not None and self.status in UNPAID)


# Rewards not in a payout yet: a clawback cancels them instead of netting against the payee's other earnings, and
# an operator may hold or cancel them.
UNPAID = states.UNPAID
# The hold of a reward that would overdraw its budget; while held so, it does not use the budget.
BUDGET_HOLD = HoldCode.BUDGET


class RulesHistory(Protocol):
    """What the rules read besides the calculator's History: rewards per object, budget use."""

    def object_rewards(self, program: str, event: Event) -> list[ObjectReward]: ...

    def budget_used(self, key: str) -> int: ...

    def capped_total(self, program: str, per: str, scope_id: str | None, currency: str, since: datetime | None,
                     until: datetime | None) -> int: ...


# ------------------------------------------------------------------------------------------------------ splits


def parse_splits(value: Any) -> list[tuple[str, Decimal]]:
    """The ``splits`` attribute: a list (or JSON text of a list) of ``{"payee_id": ..., "percent": "60"}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise CalculationError(f"event attribute `{SPLITS_ATTRIBUTE}` is not valid JSON") from None
    if not isinstance(value, list) or not value:
        raise CalculationError(f"event attribute `{SPLITS_ATTRIBUTE}` must be a non-empty list of "
                               '{"payee_id": ..., "percent": ...}')
    shares: list[tuple[str, Decimal]] = []
    for number, item in enumerate(value, start=1):
        where = f"event attribute `{SPLITS_ATTRIBUTE}` item {number}"
        if not isinstance(item, Mapping) or not str(item.get("payee_id") or "").strip():
            raise CalculationError(f"{where} has no payee_id")
        try:
            percent = Decimal(str(item.get("percent")).strip())
        except InvalidOperation:
            raise CalculationError(f"{where}: percent {item.get('percent')!r} is not a number") from None
        if not percent.is_finite() or not 0 < percent <= 100:
            raise CalculationError(f"{where}: percent {percent} is not above 0 and at most 100")
        payee = str(item["payee_id"]).strip()
        if any(payee == seen for seen, _ in shares):
            raise CalculationError(f"{where}: payee {payee} is listed twice")
        shares.append((payee, percent))
    return shares


def apply_splits(section: ProgramSection, event: Event,
                 items: Sequence[RewardLine | FundMovement]) -> list[RewardLine | FundMovement]:
    """Share each line paid to the event's payee among the payees of the event's ``splits`` attribute.

    The first payee listed is the primary and takes the rounding remainder, so the parts add up to the line.
    Shares must add up to 100 % unless the program is an overlay (``split_overlay``), whose shares are each
    paid in full of their percent. Events without the attribute are paid as the calculator said.
    """
    raw = event.attributes.get(SPLITS_ATTRIBUTE)
    if not section.splits or raw in (None, "", []):
        return list(items)
    shares = parse_splits(raw)
    total = sum((percent for _, percent in shares), Decimal(0))
    if not section.split_overlay and total != 100:
        raise CalculationError(f"event attribute `{SPLITS_ATTRIBUTE}`: shares add up to {total}%, not 100% "
                               "(an overlay program sets split_overlay = true)")
    out: list[RewardLine | FundMovement] = []
    for item in items:
        if not isinstance(item, RewardLine) or item.payee_id != event.payee_id:
            out.append(item)
            continue
        amount = quantize(item.amount, item.currency)
        parts = split(amount, item.currency, [percent for _, percent in shares], conserve=not section.split_overlay)
        for (payee, percent), part in zip(shares, parts, strict=True):
            details = {**item.details, "split_of": str(amount), "split_percent": str(percent),
                       "split_primary": shares[0][0]}
            out.append(RewardLine(payee, part, item.currency, f"{item.description} ({percent}% split)", details))
    return out


# --------------------------------------------------------------------------------------------------- clawbacks


@dataclass(slots=True)
class Clawback:
    """What a clawback event does: adjustment lines, and the unpaid rewards it cancels; or why it does nothing."""

    lines: list[RewardLine]
    cancel: list[int]  # stored rewards
    cancel_batch: list[tuple[int, int]]  # rewards of the batch being calculated
    budget_keys: dict[tuple[str, str], str | None]  # (payee, currency) -> budget pool of a kept share
    unreserved: set[tuple[str, str]] = field(default_factory=set)  # kept shares whose pool holds no reservation
    reason: str = ""  # why there is nothing to take back, when there is not


def clawback(program: str, section: ProgramSection, event: Event, history: RulesHistory) -> Clawback:
    """Take back what the program still holds granted on the event's CRM object, per payee and currency.

    ``full`` takes back everything; ``prorated`` the share of the term left unused at the event's time, where the
    term of ``clawback_term_days`` starts at the object's first rewarded event. What the payee keeps is
    ``net − min(round(granted × unused / term) − already taken back, net)``. Rewards of the object not in a payout
    yet are cancelled; the line written is the difference between what the payee keeps and what stays in payouts:
    negative (an adjustment netted against later payouts) or, when a prorated clawback cancelled an unpaid reward,
    positive (the share kept).
    """
    result = Clawback([], [], [], {})
    prior = history.object_rewards(program, event)
    thing = f"{event.object_type} {event.object_id}"
    if not prior:
        result.reason = f"nothing to take back: no reward of this program on {thing} is left"
        return result
    fraction = Decimal(1)
    if section.clawback == "prorated":
        if section.clawback_term_days is None:  # the settings should have refused it; never guess a term
            raise CalculationError('clawback = "prorated" needs clawback_term_days; none is set')
        term = timedelta(days=section.clawback_term_days)
        start = min(reward.occurred_at for reward in prior)
        unused = min(max(start + term - event.occurred_at, timedelta(0)), term)
        fraction = Decimal(unused // timedelta(microseconds=1)) / Decimal(term // timedelta(microseconds=1))
        if not fraction:
            result.reason = (f"nothing to take back: the clawback term of {section.clawback_term_days} days from "
                             f"{start.date()}, when {thing} was first rewarded, is over")
            return result
    groups: dict[tuple[str, str], list[ObjectReward]] = {}
    for reward in prior:
        groups.setdefault((reward.payee_id, reward.currency), []).append(reward)
    for (payee, currency), rewards in sorted(groups.items()):
        given = from_minor(sum(max(r.minor, 0) for r in rewards), currency)
        left = from_minor(sum(r.minor for r in rewards), currency)
        taken_back = given - left
        take = max(min(quantize(given * fraction, currency) - taken_back, left), Decimal(0))
        if take == 0:
            continue
        unpaid = [r for r in rewards if r.unpaid]
        result.cancel += [r.reward_id for r in unpaid if r.reward_id is not None]
        result.cancel_batch += [r.batch_ref for r in unpaid if r.batch_ref is not None]
        in_payouts = left - from_minor(sum(r.minor for r in unpaid), currency)
        line = (left - take) - in_payouts
        if line == 0:
            continue
        details: dict[str, Any] = {"clawback": section.clawback, "granted": str(given),
                                   "already_taken_back": str(taken_back),
                                   "fraction": str(fraction.quantize(Decimal("0.000001")))}
        if unpaid:
            details.update(taken_back=str(take), cancelled_rewards=[r.reward_id for r in unpaid if r.reward_id])
        what = "clawback" if line < 0 else "share kept after the clawback"
        result.lines.append(RewardLine(payee, line, currency, f"{program}: {section.clawback} {what} on "
                                       f"{event.event_type} of {event.object_type} {event.object_id}", details))
        pooled = [r for r in unpaid if r.budget_key]
        result.budget_keys[(payee, currency)] = pooled[0].budget_key if pooled else None
        if pooled and all(r.status == RewardStatus.HELD and r.hold_code == BUDGET_HOLD for r in pooled):
            result.unreserved.add((payee, currency))  # held for its budget: it never reserved its amount
    if not (result.lines or result.cancel or result.cancel_batch):
        result.reason = f"nothing to take back: what this program granted on {thing} is already taken back"
    return result


# -------------------------------------------------------------------------------------------------------- caps


def apply_caps(program: str, section: ProgramSection, event: Event, lines: list[tuple[RewardLine, int]],
               history: RulesHistory) -> tuple[list[tuple[RewardLine, int]], list[str]]:
    """Cut each positive line by the program's caps, in the order listed; return the lines still worth paying and
    a note per cut. A cut line's details record ``capped`` entries (cap, limit, used, cut)."""
    if not section.caps:
        return lines, []
    kept: list[tuple[RewardLine, int]] = []
    notes: list[str] = []
    granted: list[tuple[str, str, int]] = []  # (payee, currency, minor) of this event's earlier lines
    for line, minor in lines:
        cuts: list[dict[str, str]] = []
        for cap in section.caps if minor > 0 else ():
            if cap.currency != line.currency:
                raise CalculationError(f"caps: a cap in {cap.currency} does not apply to a reward in "
                                       f"{line.currency}: amounts in different currencies are not compared")
            scope_id = {"payee": line.payee_id, "partner": event.partner_id, "program": None}[cap.per]
            if cap.per == "partner" and not scope_id:
                raise CalculationError("caps: a per-partner cap but the event has no partner_id")
            since, until, label = (None, None, "all") if cap.period == "program" else \
                period_bounds(event.occurred_at, cap.period)
            used = history.capped_total(program, cap.per, scope_id, cap.currency, since, until) + sum(
                m for payee, currency, m in granted
                if currency == line.currency and (cap.per != "payee" or payee == line.payee_id))
            limit = to_minor(quantize(cap.amount, cap.currency), cap.currency)
            paid = max(0, min(minor, limit - used))
            if paid < minor:
                name = f"per {cap.per}" + (f" {scope_id}" if scope_id else "") + f" {label}"
                cuts.append({"cap": name, "limit": str(from_minor(limit, cap.currency)),
                             "used": str(from_minor(used, cap.currency)),
                             "cut": str(from_minor(minor - paid, cap.currency))})
                notes.append(f"cap {name} of {from_minor(limit, cap.currency)} {cap.currency} cut "
                             f"{from_minor(minor - paid, cap.currency)} {cap.currency} of {line.payee_id}'s reward")
                minor = paid
        if cuts:
            earned = quantize(line.amount, line.currency)
            line = RewardLine(line.payee_id, from_minor(minor, line.currency), line.currency, line.description,
                              {**line.details, "earned": str(earned), "capped": cuts})
        if minor:
            kept.append((line, minor))
            granted.append((line.payee_id, line.currency, minor))
    return kept, notes


# ------------------------------------------------------------------------------------------ budgets, approvals


@dataclass(frozen=True, slots=True)
class Decision:
    """How a new reward starts: its status, why it is held, how many approvals it needs, its budget pool."""

    status: str = RewardStatus.PENDING
    hold_code: str | None = None
    hold_reason: str | None = None
    approvals_needed: int = 0
    budget_key: str | None = None


def budget_key(program: str, section: ProgramSection, event: Event) -> str | None:
    """The pool a reward of ``event`` draws on: ``program:period[:partner]``, or None without a budget."""
    budget = section.budget
    if budget is None:
        return None
    label = "all" if budget.period == "program" else period_bounds(event.occurred_at, budget.period)[2]
    if budget.per == "program":
        return f"{program}:{label}"
    if not event.partner_id:
        raise CalculationError("budget.per = \"partner\" but the event has no partner_id")
    return f"{program}:{label}:{event.partner_id}"


def decide(program: str, section: ProgramSection, event: Event, currency: str, minor: int,
           history: RulesHistory, reserved: dict[str, int]) -> Decision:
    """Reserve budget for a new reward and tell how it starts; ``reserved`` collects this batch's reservations.

    Adjustments (negative) and rewards of programs without budget or approval rules start ``pending``.
    """
    if minor <= 0:
        return Decision()
    key = budget_key(program, section, event)
    if key is None:
        approvals = _approvals_needed(section, currency, minor)
        return Decision(_unheld(approvals), approvals_needed=approvals)
    return _reserve(section, key, currency, minor, history, reserved)


def kept_share(section: ProgramSection, currency: str, minor: int, budget_key: str | None, *, reserved_before: bool,
               history: RulesHistory, reserved: dict[str, int]) -> Decision:
    """How the share a payee keeps of a cancelled unpaid reward starts. When the cancelled reward held a reservation
    in its budget pool (``reserved_before``), the share stays in that pool without a new check; when it was held for
    its budget (no reservation), the share is checked against the pool like a new reward. Approval as for any reward.
    """
    if budget_key is None or reserved_before:
        approvals = _approvals_needed(section, currency, minor)
        return Decision(_unheld(approvals), approvals_needed=approvals, budget_key=budget_key)
    return _reserve(section, budget_key, currency, minor, history, reserved)


def _reserve(section: ProgramSection, key: str, currency: str, minor: int, history: RulesHistory,
             reserved: dict[str, int]) -> Decision:
    """Reserve ``minor`` in budget pool ``key`` (added to ``reserved``), or hold the reward when it would overdraw."""
    approvals = _approvals_needed(section, currency, minor)
    budget = section.budget
    assert budget is not None
    if currency != budget.currency:
        raise CalculationError(f"budget.currency is {budget.currency} but the reward is in {currency}: amounts in "
                               "different currencies are not compared")
    limit = to_minor(quantize(budget.amount, currency), currency)
    used = history.budget_used(key) + reserved.get(key, 0)
    if used + minor > limit:
        left = from_minor(max(limit - used, 0), currency)
        reason = (f"budget {key} would be overdrawn: {left} {currency} left of {quantize(budget.amount, currency)}, "
                  f"the reward is {from_minor(minor, currency)} {currency}")
        return Decision(RewardStatus.HELD, BUDGET_HOLD, reason, approvals, key)
    reserved[key] = reserved.get(key, 0) + minor
    return Decision(_unheld(approvals), approvals_needed=approvals, budget_key=key)


def _unheld(approvals: int) -> RewardStatus:
    """The status of a reward that is not held: awaiting its approvals, if it needs any, else pending."""
    return RewardStatus.AWAITING_APPROVAL if approvals else RewardStatus.PENDING


def _approvals_needed(section: ProgramSection, currency: str, minor: int) -> int:
    """0, 1 or 2. A reward in another currency than the thresholds' is not compared: it needs every approval."""
    approval = section.approval
    if approval is None:
        return 0
    if currency != approval.currency:
        return 2 if approval.dual_threshold is not None else 1
    amount = from_minor(minor, currency)
    if approval.dual_threshold is not None and amount > approval.dual_threshold:
        return 2
    return 1 if amount > approval.threshold else 0
