"""Tax-form rules applied when rewards are scheduled (docs/compliance.md#tax-profiles).

A payee's tax profile is its country, the form on file (W-9, W-8BEN, W-8BEN-E) and its signing date, and what payhub
could tell of its TIN (never the TIN itself). :func:`decide` says what a payment to that payee may do today:

* a US payee (country ``US``) needs a W-9 with a valid TIN; without one its rewards are held (``tax_form``), or, with
  ``us_without_w9 = "withhold"``, paid with backup withholding at ``backup_withholding_rate``;
* a non-US payee needs a W-8BEN or W-8BEN-E that is current: it is valid through 31 December of the third calendar
  year after the year it was signed; without one its rewards are held, or paid with ``non_us_without_w8 = "pay"``;
* a W-9 for a non-US payee, a W-8 for a US payee, or a payee without a country is held whatever the settings say.

Backup withholding applies to the positive rewards of programs whose payments are reported (not box ``none``,
:mod:`payhub.compliance.tax_boxes`); adjustments (negative rewards) are never withheld on.

:func:`apply` runs these rules over the rewards one schedule pass claimed, inside its transaction: it holds, writes
withholding lines (negative rewards of kind ``withholding``, one per withheld reward, scheduled with it), and cancels
withholding lines that no longer apply. Every change is audited in the same transaction.
"""

from __future__ import annotations

import json
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Connection, select

from payhub.clock import utcnow
from payhub.compliance.tax_boxes import NONE, TaxReportError, box_of
from payhub.db.queries import in_chunks
from payhub.db.schema import payees
from payhub.money import from_minor, quantize, to_minor
from payhub.runtime import Runtime, Tx
from payhub.settings import TaxSettings
from payhub.states import HoldCode, RewardKind, RewardStatus, TaxForm, TinStatus
from payhub.store import rewards as store

Action = Literal["ok", "hold", "withhold", "pay"]
W8_FORMS = (TaxForm.W8BEN, TaxForm.W8BEN_E)
W8_YEARS = 3
"""A W-8BEN or W-8BEN-E stays valid through the end of the third calendar year after the year it was signed."""
_FIRST_PASS: weakref.WeakKeyDictionary[Runtime, datetime] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class TaxProfile:
    """What the payees table holds about a payee's taxes (never the TIN itself)."""

    payee_id: str
    country: str | None
    form: str | None
    signed_on: date | None
    tin_status: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a payment to a payee may do: ``ok``, ``hold``, ``withhold`` (backup withholding) or ``pay`` (paid
    although a rule is not met, as the settings allow); ``rule`` names the rule, ``reason`` says what is missing."""

    action: Action
    rule: str
    reason: str


def w8_valid_through(signed_on: date) -> date:
    """The last day a W-8BEN or W-8BEN-E signed on ``signed_on`` is valid: 31 December, three years later."""
    return date(signed_on.year + W8_YEARS, 12, 31)


def us_person(profile: TaxProfile) -> bool:
    """True when the payee is treated as a US person: its country is ``US``."""
    return profile.country == "US"


def decide(profile: TaxProfile, tax: TaxSettings, on: date) -> Verdict:
    """What a payment made on ``on`` to the payee of ``profile`` may do under the settings ``tax``; the reason is a
    sentence naming the payee, its country and what is on file."""
    if profile.country is None:
        return Verdict("hold", "country", f"payee {profile.payee_id} has no country: payhub cannot tell whether a "
                                          "W-9 or a W-8 applies; add the country to the payees file")
    who = f"payee {profile.payee_id} (country {profile.country})"
    if us_person(profile):
        if profile.form in W8_FORMS:
            return Verdict("hold", "wrong_form", f"{who} has a {profile.form} on file, the wrong form: a US payee "
                                                 "gives a W-9")
        if profile.form != TaxForm.W9:
            missing = f"{who} has no W-9 on file"
        elif profile.tin_status != TinStatus.VALID:
            missing = f"{who} has a W-9 whose TIN is {profile.tin_status or TinStatus.MISSING}"
        else:
            return Verdict("ok", "w9", f"{who} has a W-9 with a valid TIN")
        if tax.us_without_w9 == "withhold":
            return Verdict("withhold", "us_without_w9",
                           f"{missing}: paid with backup withholding of {percent(tax.backup_withholding_rate)}")
        return Verdict("hold", "us_without_w9", f"{missing}; the reward waits for a W-9 with a valid TIN")
    if profile.form == TaxForm.W9:
        return Verdict("hold", "wrong_form", f"{who} has a W-9 on file, the wrong form: a non-US payee gives a "
                                             "W-8BEN or W-8BEN-E")
    if profile.form not in W8_FORMS:
        missing = f"{who} has no W-8BEN or W-8BEN-E on file"
    elif profile.signed_on is None:
        missing = f"{who} has a {profile.form} without a form date"
    elif profile.signed_on > on:
        missing = f"{who} has a {profile.form} dated {profile.signed_on}, a date in the future"
    elif w8_valid_through(profile.signed_on) < on:
        missing = (f"{who} has a {profile.form} signed on {profile.signed_on}, which expired after "
                   f"{w8_valid_through(profile.signed_on)}")
    else:
        return Verdict("ok", "w8", f"{who} has a {profile.form} valid through {w8_valid_through(profile.signed_on)}")
    if tax.non_us_without_w8 == "pay":
        return Verdict("pay", "non_us_without_w8", f"{missing}; paid as non_us_without_w8 = \"pay\" allows")
    return Verdict("hold", "non_us_without_w8", f"{missing}; the reward waits for a current W-8")


def percent(rate: Decimal) -> str:
    """``0.24`` as ``24 %``, ``0.245`` as ``24.5 %``."""
    return f"{(rate * 100).normalize():f} %"


def form_on_file(profile: TaxProfile) -> dict[str, str | None]:
    """The form and its date as each tax decision's audit entry names them (never the TIN, only its status)."""
    return {"form": profile.form, "form_date": profile.signed_on.isoformat() if profile.signed_on else None,
            "tin_status": profile.tin_status}


def withholding_minor(gross_minor: int, currency: str, rate: Decimal) -> int:
    """Minor units withheld (positive) from a gross reward of ``gross_minor``: ``rate`` x gross, rounded to the
    currency's minor units by payhub's one rounding rule (half up, :mod:`payhub.money`)."""
    return to_minor(quantize(from_minor(gross_minor, currency) * rate, currency), currency)


def profiles(conn: Connection, payee_ids: Iterable[str]) -> dict[str, TaxProfile]:
    """The tax profiles of the payees among ``payee_ids`` that are in the registry."""
    found: dict[str, TaxProfile] = {}
    for chunk in in_chunks(payee_ids):
        for row in conn.execute(select(payees.c.id, payees.c.country, payees.c.tax_form, payees.c.form_signed_on,
                                       payees.c.tin_status).where(payees.c.id.in_(chunk))):
            found[row.id] = TaxProfile(row.id, row.country, row.tax_form, row.form_signed_on, row.tin_status)
    return found


def recheck_since(rt: Runtime) -> datetime:
    """``tax_form`` holds last written before this time are examined again: the later of this runtime's first
    schedule pass (the settings may have changed since) and the start of the current UTC day (a form's validity
    depends on the date: a W-8 dated in the future becomes current, one expires after 31 December). A hold is
    written again each time it is examined, so each is examined once per UTC day, and whenever its payee's row
    changes."""
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return max(_FIRST_PASS.setdefault(rt, now), midnight)


def apply(rt: Runtime, tx: Tx, rows: Sequence[Any]) -> tuple[list[Any], int]:
    """Apply the tax rules to the rewards a schedule pass claimed; return the rows that go on to be scheduled (with
    the withholding lines they need) and how many rewards this changed.

    Withholding lines move only with the reward they withhold from. The lines of the rewards among ``rows`` are
    locked first (waiting for a transaction that holds one) and read after the lock. A line that is pending,
    carried or held for any cause but an operator's hold is claimed with its reward; a line an operator held holds
    its reward back (held ``operator``: the reward is not paid without its withholding). A line among ``rows``
    whose reward is not: cancelled with a cancelled reward, left for its reward's pass while that reward is pending
    or carried, else held ``with_reward`` (out of the work list until its reward is claimed again). A line whose
    payee no longer needs backup withholding is cancelled. A reward gets a new line only when it has no line that
    is not cancelled, so a reward is never withheld from twice."""
    tax = rt.settings.compliance.tax
    on = utcnow().date()
    by_id = {row.id: row for row in rows}
    lines = _lines_of(tx.conn, rows)
    changed = 0
    blocked = {line.withholds: line for line in lines.values()
               if line.withholds in by_id and line.status == RewardStatus.HELD and line.hold_code == HoldCode.OPERATOR}
    if blocked:
        changed += _held_by_line(tx, [by_id[reward_id] for reward_id in sorted(blocked)], blocked)
        rows = [row for row in rows if row.id not in blocked]
        by_id = {row.id: row for row in rows}
    # Unpaid lines of rewards in this pass that the pass did not claim (carried, held apart): claimed now.
    extra = [line.id for line in lines.values() if line.id not in by_id and line.withholds in by_id
             and line.status in _PULLED]
    rows = [*rows, *store.claim_ids(tx.conn, extra)] if extra else list(rows)
    by_id = {row.id: row for row in rows}
    found = profiles(tx.conn, {row.payee_id for row in rows})
    by_payee: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_payee[row.payee_id].append(row)
    keep: list[Any] = []
    for payee_id in sorted(by_payee):
        group = by_payee[payee_id]
        orphans = [(row, lines[row.id]) for row in group if row.kind == RewardKind.WITHHOLDING
                   and row.id in lines and lines[row.id].withholds not in by_id]
        changed += _cancel(tx, [row for row, line in orphans if line.withholds_status == RewardStatus.CANCELLED],
                           "the reward it withholds from was cancelled")
        changed += _hold_with_reward(tx, [(row, line) for row, line in orphans
                                          if line.withholds_status not in (RewardStatus.CANCELLED, *_CLAIMABLE)])
        apart = {row.id for row, _line in orphans}
        group = [row for row in group if row.id not in apart]  # a pending or carried one waits for its reward
        if not group:
            continue
        profile = found.get(payee_id)
        if profile is None:  # not in the registry: the schedule stage holds it for that
            keep += group
            continue
        verdict = decide(profile, tax, on)
        if verdict.action == "hold":
            changed += _hold(tx, group, verdict, profile)
            continue
        lines_here = [row for row in group if row.kind == RewardKind.WITHHOLDING]
        if verdict.action != "withhold":
            changed += _cancel(tx, lines_here, f"backup withholding no longer applies: {verdict.reason}")
            group = [row for row in group if row.kind != RewardKind.WITHHOLDING]
            if verdict.action == "pay":
                tx.audit("payee.tax_rule", "payee", payee_id, {
                    "rule": verdict.rule, "decision": "pay", "reason": verdict.reason, **form_on_file(profile),
                    "rewards": sorted(row.id for row in group)})
            keep += group
            continue
        covered = {line.withholds for line in lines.values() if line.status != RewardStatus.CANCELLED}
        due = [row for row in group if row.kind == RewardKind.REWARD and row.amount_minor > 0
               and row.id not in covered and not _unreported(rt, row.program)]
        written = _withhold(tx, due, verdict, tax.backup_withholding_rate, profile)
        changed += len(written)
        keep += group + written
    return keep, changed


_CLAIMABLE = (RewardStatus.PENDING, RewardStatus.CARRIED)
"""A line whose reward is in one of these statuses is left as it is: it is claimed with its reward."""
_PULLED = (RewardStatus.PENDING, RewardStatus.CARRIED, RewardStatus.HELD)
"""A line in one of these statuses (held: for any cause but an operator's hold) is claimed with its reward."""


@dataclass(frozen=True, slots=True)
class _Line:
    id: int
    payee_id: str
    status: str
    hold_code: str | None
    hold_reason: str | None
    withholds: int
    withholds_status: str | None


def _lines_of(conn: Connection, rows: Sequence[Any]) -> dict[int, _Line]:
    """The withholding lines of the rewards among ``rows`` and the lines among ``rows``, by id, each locked and read
    after the lock (:func:`payhub.store.rewards.lock_lines`), with the reward it withholds from and that reward's
    status. Only these lines are locked: the lines of other payees on the same events are another pass's."""
    event_ids = {row.event_id for row in rows}
    if not event_ids:
        return {}
    ids = {row.id for row in rows}
    found = [(row.id, row.payee_id, _withholds(row.details)) for row in store.withholding_lines(conn, event_ids)]
    found = [(line_id, payee_id, withholds) for line_id, payee_id, withholds in found
             if line_id in ids or withholds in ids]
    locked = store.lock_lines(conn, [line_id for line_id, _payee, _withholds_id in found])
    statuses = store.statuses(conn, {withholds for _id, _payee, withholds in found})
    return {line_id: _Line(line_id, payee_id, locked[line_id].status, locked[line_id].hold_code,
                           locked[line_id].hold_reason, withholds, statuses.get(withholds))
            for line_id, payee_id, withholds in found if line_id in locked}


def _held_by_line(tx: Tx, rewards: list[Any], blocked: dict[int, _Line]) -> int:
    """Hold back (``operator``) rewards whose withholding line an operator held; return how many."""
    now = utcnow()
    for row in rewards:
        line = blocked[row.id]
        reason = (f"its backup withholding line {line.id} is held by an operator ({line.hold_reason}): the reward "
                  f"is not paid without its withholding; release both to pay them")
        store.hold(tx.conn, [row.id], HoldCode.OPERATOR, reason, now)
        tx.audit("reward.held", "reward", row.id, {"code": HoldCode.OPERATOR, "reason": reason, "line": line.id,
                                                   "from": row.status}, outcome="held")
    return len(rewards)


def _hold_with_reward(tx: Tx, orphans: list[tuple[Any, _Line]]) -> int:
    """Hold (``with_reward``) withholding lines whose reward is not payable now (held, awaiting approval, in a
    payout); return how many changed. Such a line leaves the work list and is claimed again with its reward."""
    now = utcnow()
    changed = 0
    for row, line in sorted(orphans, key=lambda pair: pair[0].id):
        reason = (f"withholds from reward {line.withholds}, which is {line.withholds_status or 'gone'}: the line "
                  "is paid with that reward")
        if row.status == RewardStatus.HELD and row.hold_code == HoldCode.WITH_REWARD and row.hold_reason == reason:
            continue
        store.hold(tx.conn, [row.id], HoldCode.WITH_REWARD, reason, now)
        tx.audit("reward.held", "reward", row.id, {"code": HoldCode.WITH_REWARD, "reason": reason,
                                                   "withholds": line.withholds, "from": row.status}, outcome="held")
        changed += 1
    return changed


def _unreported(rt: Runtime, program: str) -> bool:
    """True when ``program``'s payments are not reported (box ``none``): backup withholding does not apply. A
    program without a known box is withheld from (it may be reportable)."""
    try:
        return box_of(program, rt.settings) == NONE
    except TaxReportError:
        return False


def _withholds(details: str) -> int:
    return int(json.loads(details)["withholds"])


def _hold(tx: Tx, group: list[Any], verdict: Verdict, profile: TaxProfile) -> int:
    """Hold the rewards for their tax form; return how many changed. A reward already held for the same reason is
    written again (its time), so the next pass examines it only after its payee's row changes."""
    now = utcnow()
    fresh = [row for row in group if not (row.status == RewardStatus.HELD and row.hold_code == HoldCode.TAX_FORM
                                          and row.hold_reason == verdict.reason)]
    store.hold(tx.conn, [row.id for row in group], HoldCode.TAX_FORM, verdict.reason, now)
    for row in sorted(fresh, key=lambda row: row.id):
        tx.audit("reward.held", "reward", row.id, {"code": HoldCode.TAX_FORM, "rule": verdict.rule,
                                                   "reason": verdict.reason, **form_on_file(profile)},
                 outcome="held")
    return len(fresh)


def cancel_lines_of(tx: Tx, reward_ids: Iterable[int]) -> int:
    """Cancel the unpaid withholding lines of ``reward_ids`` (rewards just cancelled, by a clawback say), each
    audited ``reward.cancelled``; return how many."""
    return _cancel(tx, store.unpaid_withholding_lines_of(tx.conn, reward_ids),
                   "the reward it withholds from was cancelled")


def _cancel(tx: Tx, lines: Sequence[Any], why: str) -> int:
    """Cancel withholding lines that no longer apply; return how many."""
    if not lines:
        return 0
    store.set_status(tx.conn, [row.id for row in lines], RewardStatus.CANCELLED, utcnow(), hold_code=None,
                     hold_reason=None)
    for row in sorted(lines, key=lambda row: row.id):
        tx.audit("reward.cancelled", "reward", row.id, {"reason": why, "kind": RewardKind.WITHHOLDING})
    return len(lines)


def _withhold(tx: Tx, due: list[Any], verdict: Verdict, rate: Decimal, profile: TaxProfile) -> list[Any]:
    """Write one withholding line per reward of ``due``, audited ``reward.calculated``; return them as schedulable
    rows."""
    now = utcnow()
    written: list[int] = []
    for row in sorted(due, key=lambda row: row.id):
        withheld = withholding_minor(row.amount_minor, row.currency, rate)
        if withheld == 0:
            continue
        gross = from_minor(row.amount_minor, row.currency)
        amount = from_minor(-withheld, row.currency)
        reward_id = store.insert_one(tx.conn, {
            "event_id": row.event_id, "program": row.program, "payee_id": row.payee_id, "amount_minor": -withheld,
            "currency": row.currency, "description": f"backup withholding {rate} on reward {row.id}",
            "details": json.dumps({"withholds": row.id, "rate": str(rate), "gross": str(gross)}, sort_keys=True),
            "status": RewardStatus.PENDING, "approvals_needed": 0, "fx_mode": row.fx_mode,
            "kind": RewardKind.WITHHOLDING, "created_at": now, "updated_at": now})
        tx.audit("reward.calculated", "reward", reward_id, {
            "event": row.event_id, "program": row.program, "payee": row.payee_id, "amount": str(amount),
            "currency": row.currency, "kind": RewardKind.WITHHOLDING, "withholds": row.id, "gross": str(gross),
            "rate": str(rate), "rule": verdict.rule, "reason": verdict.reason, **form_on_file(profile)})
        written.append(reward_id)
    return store.claim_ids(tx.conn, written) if written else []
