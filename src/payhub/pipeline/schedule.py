"""Schedule: net pending rewards per payee and currency into payouts with a fixed idempotency key.

A payout is never rewritten: adjustments (negative rewards) reduce the payee's next payout, and a balance that is
negative or below the minimum payout is carried forward to it.

``routing.payout_cadence`` says when a pending reward is due: ``pass`` (at once), or once the UTC calendar day, ISO
week (Monday to Sunday) or calendar month in which it became payable (calculated as ``pending``, approved, or
released; its ``updated_at``) has closed. Each pass takes only due rewards, so all of a payee's rewards that became
payable in one period go into one payout per payout currency (and rail).
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, String, bindparam, select

from payhub.api import FxRate, Payee
from payhub.audit import canonical_json
from payhub.clock import isoformat, utcnow
from payhub.compliance import gift_caps, tax_rules
from payhub.db.queries import IN_LIST
from payhub.db.schema import UTCDateTime, bind_time, events, rewards
from payhub.fx import convert, find_rate
from payhub.money import from_minor, to_minor
from payhub.payees import erased_since, load_payees
from payhub.runtime import Runtime, Tx
from payhub.states import HoldCode, RewardStatus
from payhub.store import payouts as payout_store
from payhub.store import rewards as store

_Item = tuple[Any, str, int, "dict[str, str] | None"]
"""A reward on its way into a payout: its row, the payout's currency, its amount in it, the conversion if any."""
Planned = tuple[str, str, str, str, list[_Item]]  # payee, currency, rail, why, rewards
RECHECK_SHARE = 10
"""Each schedule pass re-examines at least ``batch_size // RECHECK_SHARE`` held rewards, however much is pending."""
CADENCES = ("pass", "daily", "weekly", "monthly")
"""The values of ``routing.payout_cadence``."""
NOTHING_DUE_RECHECK_SECONDS = 60.0
"""After a pass found no due pending reward, later passes of the same period skip the search for this long (seconds
of the monotonic clock): a reward made payable from now on is not due before the period closes, and one whose
transaction was still being committed (or that another replica had locked) is found at the latest this much later."""

# The pending rewards the schedule stage claims, all of them (``pass``) or those payable before ``due_before``, as it
# reads them: each payee's together, by currency. The event's date is read only for the few that need it (an FX
# conversion at the event's date). Compiled once per dialect and executed at the driver level: a pass binds three
# values, and no type processing runs per row.
_PENDING = select(
    rewards.c.id, rewards.c.payee_id, rewards.c.currency, rewards.c.amount_minor, rewards.c.status,
    rewards.c.hold_code, rewards.c.hold_reason, rewards.c.program, rewards.c.fx_mode, rewards.c.kind,
    rewards.c.event_id,
).where(rewards.c.status == bindparam("status", type_=String)).order_by(
    rewards.c.payee_id, rewards.c.currency, rewards.c.id).limit(bindparam("limit", type_=Integer))
_CLAIMS = {"pass": _PENDING,
           "due": _PENDING.where(rewards.c.updated_at < bindparam("due_before", type_=UTCDateTime))}
_compiled: dict[tuple[str, str], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}
_nothing_due: weakref.WeakKeyDictionary[Runtime, tuple[str, datetime, float]] = weakref.WeakKeyDictionary()
"""Per runtime: (cadence, period start, monotonic time) of the last pass that found no due pending reward."""


def period_start(cadence: str, moment: datetime) -> datetime | None:
    """The start (UTC, inclusive) of the ``cadence`` period holding ``moment``: midnight UTC of its day (``daily``),
    of the Monday of its ISO week (``weekly``) or of the first of its month (``monthly``); None for ``pass``.

    A pending reward is due once the period in which it became payable has closed, that is when it became payable
    before ``period_start(cadence, now)``."""
    if cadence == "pass":
        return None
    moment = moment.astimezone(UTC)
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if cadence == "daily":
        return day
    if cadence == "weekly":
        return day - timedelta(days=day.weekday())
    if cadence == "monthly":
        return day.replace(day=1)
    raise ValueError(f"payout cadence must be one of {', '.join(CADENCES)}, not {cadence!r}")


def claim_due(rt: Runtime, conn: Connection, limit: int, now: datetime) -> list[Any]:
    """Lock up to ``limit`` pending rewards that are due under ``routing.payout_cadence`` at ``now`` (all of them
    under ``pass``), by payee, currency and id (PostgreSQL skips rows another replica holds)."""
    cadence = rt.settings.routing.payout_cadence
    due_before = period_start(cadence, now)
    if due_before is None:
        return _claim(conn, "pass", {"status": RewardStatus.PENDING.value, "limit": limit})
    seen = _nothing_due.get(rt)
    if seen is not None and seen[:2] == (cadence, due_before) and (
            time.monotonic() - seen[2] < NOTHING_DUE_RECHECK_SECONDS):
        return []
    bound: Any = bind_time(conn.dialect)(due_before)
    rows = _claim(conn, "due", {"status": RewardStatus.PENDING.value, "due_before": bound, "limit": limit})
    if rows:
        _nothing_due.pop(rt, None)
    else:
        _nothing_due[rt] = (cadence, due_before, time.monotonic())
    return rows


def _claim(conn: Connection, which: str, params: dict[str, Any]) -> list[Any]:
    """Run claim statement ``which`` of :data:`_CLAIMS` at the driver level (locking with ``SKIP LOCKED`` on
    PostgreSQL); rows with the columns of :data:`_PENDING`, values as the driver gives them."""
    key = (conn.dialect.name, which)
    if key not in _compiled:
        statement = _CLAIMS[which]
        if conn.dialect.name == "postgresql":
            statement = statement.with_for_update(skip_locked=True)
        compiled = statement.compile(dialect=conn.dialect)
        order = compiled.positiontup
        _compiled[key] = (str(compiled), None if order is None else tuple(order), dict(compiled.params))
    sql, positions, defaults = _compiled[key]
    values = defaults | params  # with what the dialect adds (SQLite: OFFSET 0 after a bound LIMIT)
    return list(conn.exec_driver_sql(sql, values if positions is None else tuple(values[n] for n in positions)))


def _event_days(conn: Connection, rows: list[Any]) -> dict[int, date]:
    """The UTC date of the event of each row converted at its event's date (``fx_mode`` ``event``), by event id."""
    wanted = sorted({row.event_id for row in rows if row.fx_mode == "event"})
    days: dict[int, date] = {}
    for start in range(0, len(wanted), IN_LIST):
        for event_id, occurred_at in conn.execute(select(events.c.id, events.c.occurred_at).where(
                events.c.id.in_(wanted[start:start + IN_LIST]))):
            days[event_id] = occurred_at.date()
    return days


def route(rt: Runtime, payee: Payee, currency: str, amount_minor: int,
          conn: Connection | None = None) -> tuple[str | None, str]:
    """The rail for a payout and why; (None, every refusal) when no configured rail can take it.

    Candidates in order: the payee's preferred rail, the rails of the first routing rule matching the payee's
    country and the currency, then ``routing.default_rail``. The first that is loaded, serves the currency and
    country, takes the amount, stays within the yearly gift-card cap (a gift-card rail; read with ``conn``, the
    scheduling transaction, or a connection of its own) and accepts the payee's details wins.
    """
    candidates: list[tuple[str, str]] = []
    if payee.rail:
        candidates.append((payee.rail, f"payee {payee.id} prefers rail {payee.rail}"))
    for number, rule in enumerate(rt.settings.routing.rules):
        if (not rule.countries or payee.country in rule.countries) and (
                not rule.currencies or currency in rule.currencies):
            where = " ".join(part for part in (",".join(rule.countries), ",".join(rule.currencies)) if part)
            candidates += [(name, f"routing rule {number} ({where or 'any'}) rail {name}") for name in rule.rails]
            break
    default = rt.settings.routing.default_rail
    if default:
        candidates.append((default, f"default rail {default}"))
    refusals: list[str] = []
    tried: set[str] = set()
    for name, why in candidates:
        if name in tried:
            continue
        tried.add(name)
        refusal = _refusal(rt, name, payee, currency, amount_minor, conn)
        if refusal is not None:
            refusals.append(refusal)
            continue
        return name, why + (f" ({'; '.join(refusals)})" if refusals else "")
    return None, "; ".join(refusals) or "no rail configured (set routing.default_rail or routing.rules)"


def _refusal(rt: Runtime, name: str, payee: Payee, currency: str, amount_minor: int,
             conn: Connection | None = None) -> str | None:
    """Why rail ``name`` cannot take this payout, or None."""
    rail = rt.plugins.rails.get(name)
    if rail is None:
        return f"rail {name} is not available ({rt.plugins.failed('rail', name) or 'not configured'})"
    caps = rail.capabilities
    if caps.currencies is not None and currency not in caps.currencies:
        return f"rail {name} does not pay {currency}"
    if caps.countries is not None and payee.country not in caps.countries:
        return f"rail {name} does not serve country {payee.country}"
    limit = caps.max_amounts.get(currency)
    amount = from_minor(amount_minor, currency)
    if limit is not None and amount > limit:
        return f"rail {name} pays at most {limit} {currency} per payout, this one is {amount} {currency}"
    gift_cap = gift_caps.giftcard_refusal(rt, name, payee.id, currency, amount_minor, conn)
    if gift_cap is not None:
        return gift_cap
    try:
        problem = rail.check_payee(payee, currency)
    except Exception as exc:  # noqa: BLE001 - a rail bug refuses only this payee, with the reason
        problem = f"checking the payee raised {type(exc).__name__}: {exc}"
    return None if problem is None else f"rail {name}: {problem}"


def schedule_batch(rt: Runtime, limit: int | None = None, recheck_holds: bool = True) -> int:
    """Turn up to ``limit`` payable rewards into payouts in one transaction; return how many rewards changed.

    Pending rewards that are due (:func:`claim_due`: all of them under the ``pass`` cadence, else those that became
    payable before the current period began) come first, each payee's together with its carried-forward balance;
    then, in every pass (in the
    room the pending rewards left, and at least ``limit // RECHECK_SHARE`` of them, so a long queue of pending work
    never stops them), rewards held for a missing payee, rail, FX rate or tax form are re-examined (only those whose
    hold could now clear, so a pass that changes nothing returns 0), and so are the carried rewards of payees who
    had a reward cancelled since they were last netted (their balance changed). Per payee and payout currency the
    rewards and adjustments are netted: a net at or above the minimum payout becomes one payout; a smaller or
    negative net is carried forward, and every carried reward of the group gets the group's current reason.
    """
    limit = limit or rt.settings.database.batch_size
    now = utcnow()
    with rt.transaction() as tx:
        rows = claim_due(rt, tx.conn, limit, now)
        if len(rows) == limit and rows[0].payee_id != rows[-1].payee_id:
            # A payee cut off by the limit waits for the next batch, to be netted whole.
            rows = [row for row in rows if row.payee_id != rows[-1].payee_id]
        if rows:
            rows += store.claim_carried(tx.conn, {row.payee_id for row in rows})
        if recheck_holds:
            # Every pass, pending work or not: the room the pending rewards left, and at least a share of the batch.
            room = max(limit - len(rows), limit // RECHECK_SHARE, 1)
            claimed = {row.id for row in rows}
            # Holds that may have cleared: the payee has since appeared in the registry (a rail may now fit).
            rows += [r for r in store.claim_rechecked_holds(tx.conn, room, tax_rules.recheck_since(rt))
                     if _may_clear(rt, r)]
            # Carried balances that a cancellation changed since they were last netted.
            rows += [r for r in store.claim_changed_carried(tx.conn, room) if r.id not in claimed]
        if not rows:
            return 0
        rows, moved = _hold_erased(tx, rows)
        if rt.settings.compliance.tax.enabled:  # tax-form holds and backup withholding lines, audited
            rows, taxed = tax_rules.apply(rt, tx, rows)
            moved += taxed
        known = load_payees(tx.conn, sorted({row.payee_id for row in rows}))
        groups: dict[tuple[str, str], list[_Item]] = defaultdict(list)
        rates: dict[tuple[str, str, date, str], FxRate | str] = {}
        days = _event_days(tx.conn, rows)
        held: dict[tuple[str, str], list[Any]] = defaultdict(list)  # (hold code, reason) -> rows
        for row in rows:
            payee = known.get(row.payee_id)
            if payee is None:
                why = f"payee {row.payee_id} has no payout details in the registry"
                if row.payee_id in rt.payees_skipped:  # the latest read of the payees file says why
                    why += f": {rt.payees_skipped[row.payee_id]}"
                held[(HoldCode.NO_PAYEE, why)].append(row)
                continue
            if row.fx_mode is None or payee.currency is None or payee.currency == row.currency:
                groups[(row.payee_id, row.currency)].append((row, row.currency, row.amount_minor, None))
                continue
            item = _in_payout_currency(rt, row, payee, rates, days)
            if isinstance(item, str):
                held[(HoldCode.FX_RATE, item)].append(row)
                continue
            groups[(row.payee_id, item[1])].append(item)
        for (code, why), rows_held in held.items():
            moved += _hold(tx, rows_held, code, why)
        planned: list[Planned] = []
        for (payee_id, currency), items in groups.items():
            net = sum(item[2] for item in items)
            rail, why = route(rt, known[payee_id], currency, net, tx.conn)
            if rail is None:
                moved += _hold(tx, [item[0] for item in items], HoldCode.NO_RAIL, why)
                continue
            short = _below_minimum(rt, rail, known[payee_id], currency, net)
            if short is not None:
                moved += _carry(tx, [item[0] for item in items], short)
                continue
            planned.append((payee_id, currency, rail, why, items))
            moved += len(items)
        _create_payouts(tx, planned, rt.settings.routing.payout_cadence, period_start(
            rt.settings.routing.payout_cadence, now))
    return moved


def _in_payout_currency(rt: Runtime, row: Any, payee: Payee, rates: dict[tuple[str, str, date, str], FxRate | str],
                        days: dict[int, date]) -> _Item | str:
    """The reward in its payout's currency (converted when its program pays in the payee's currency), or why it
    cannot be converted yet. ``days``: the date of the row's event, by event id, for a conversion at that date."""
    if row.fx_mode is None or payee.currency is None or payee.currency == row.currency:
        return (row, row.currency, row.amount_minor, None)
    on = days[row.event_id] if row.fx_mode == "event" else utcnow().date()
    section = rt.settings.programs.get(row.program)
    rate_type = section.fx_rate_type if section is not None else "reference"
    key = (row.currency, payee.currency, on, rate_type)
    if key not in rates:
        rates[key] = find_rate(rt.plugins.hooks, *key)
    rate = rates[key]
    if isinstance(rate, str):  # why there is none, e.g. the provider's error naming its rates file
        return (f"no {rate_type} rate {row.currency}->{payee.currency} for {on} ({row.fx_mode} date) {rate}; "
                "the reward waits for one")
    amount = from_minor(row.amount_minor, row.currency)
    converted = convert(amount, rate)
    fx = {"from_currency": row.currency, "from_amount": str(amount), "rate": str(rate.rate), "rate_type": rate_type,
          "rate_date": rate.rate_date.isoformat(), "date_used": row.fx_mode, "source": rate.source}
    return (row, payee.currency, to_minor(converted, payee.currency), fx)


def _below_minimum(rt: Runtime, rail: str, payee: Payee, currency: str, net_minor: int) -> str | None:
    """Why a net balance is not paid now (negative, zero, or below the rail's or payee's minimum), else None."""
    net = from_minor(net_minor, currency)
    if net_minor < 0:
        return f"net balance {net} {currency}: adjustments exceed rewards; carried forward"
    if net_minor == 0:
        return f"net balance {net} {currency}: adjustments cancel the rewards out; nothing to pay"
    minimums = []
    section = rt.settings.rails.get(rail)
    if section is not None and currency in section.min_payout:
        minimums.append((section.min_payout[currency], f"rail {rail}"))
    if payee.min_payout is not None and payee.currency == currency:
        minimums.append((payee.min_payout, f"payee {payee.id}"))
    if not minimums:
        return None
    minimum, whose = max(minimums)  # the higher minimum applies
    if net < minimum:
        return f"net balance {net} {currency} is below the minimum payout {minimum} {currency} of {whose}"
    return None


def _carry(tx: Tx, items: list[Any], reason: str) -> int:
    """Carry rewards forward to the payee's next payout with ``reason`` (the group's balance now); return how many
    changed: newly carried, or carried before with another reason (each audited as ``reward.carried``)."""
    # Every row of the group is written, so its updated_at says when its balance was last netted.
    store.carry(tx.conn, [row.id for row in items], reason, utcnow())
    changed = 0
    for row in sorted(items, key=lambda row: row.id):
        if row.status != RewardStatus.CARRIED:
            tx.audit("reward.carried", "reward", row.id, {"reason": reason})
        elif row.hold_reason != reason:
            tx.audit("reward.carried", "reward", row.id, {"reason": reason, "previous_reason": row.hold_reason})
        else:
            continue
        changed += 1
    return changed


def _may_clear(rt: Runtime, row: Any) -> bool:
    """A rail hold may clear once any rail is available; an FX hold once a provider is configured; a payee hold
    once the payee exists (checked by SQL)."""
    if row.hold_code == HoldCode.NO_RAIL:
        return bool(rt.plugins.rails)
    if row.hold_code == HoldCode.FX_RATE:
        return bool(rt.plugins.hooks.hook.payhub_fx_rate.get_hookimpls())
    return True


def _hold_erased(tx: Tx, rows: list[Any]) -> tuple[list[Any], int]:
    """Hold (``no_payee``) the rewards of payees that ``payhub payees erase`` erased: no payout details or identity
    is left to pay or screen them with. Return the other rows and how many rewards changed."""
    erased = erased_since(tx.conn, sorted({row.payee_id for row in rows}))
    moved = 0
    for payee_id, when in sorted(erased.items()):
        moved += _hold(tx, [row for row in rows if row.payee_id == payee_id], HoldCode.NO_PAYEE, (
            f"payee {payee_id} was erased on {when.date().isoformat()}: its payout details and identity are gone, "
            "so it is never paid again; cancel the reward (payhub rewards cancel ID --reason TEXT)"))
    return [row for row in rows if row.payee_id not in erased], moved


def _hold(tx: Tx, items: list[Any], code: str, reason: str) -> int:
    """Hold rewards that are not already held for the same code; return how many changed."""
    fresh = [row.id for row in items if not (row.status == RewardStatus.HELD and row.hold_code == code)]
    if fresh:
        store.hold(tx.conn, fresh, code, reason, utcnow())
        for reward_id in fresh:
            tx.audit("reward.held", "reward", reward_id, {"code": code, "reason": reason}, outcome="held")
    return len(fresh)


def _create_payouts(tx: Tx, planned: list[Planned], cadence: str = "pass", due_before: datetime | None = None
                    ) -> None:
    """Insert the payouts, their items and the rewards' new state as a few bulk statements. Under a cadence other
    than ``pass``, each ``payout.created`` entry also records it and the start of the period not yet paid."""
    if not planned:
        return
    now = utcnow()
    rows = [(f"ph-{uuid.uuid4().hex}", payee_id, rail, why, currency, sum(item[2] for item in items), len(items))
            for payee_id, currency, rail, why, items in planned]
    ids = payout_store.create(tx, rows, [
        (index, row.id, minor, canonical_json(fx) if fx else None)
        for index, plan in enumerate(planned) for row, _currency, minor, fx in plan[4]], now)
    timing = {} if due_before is None else {"cadence": cadence, "due_before": isoformat(due_before)}
    audit = tx.audit
    for payout_id, (key, payee_id, rail, why, currency, amount_minor, count) in zip(ids, rows, strict=True):
        audit("payout.created", "payout", payout_id, {
            "key": key, "payee": payee_id, "rail": rail, "route": why,
            "currency": currency, "amount": str(from_minor(amount_minor, currency)),
            "rewards": count, **timing,
        })
    for payout_id, plan in zip(ids, planned, strict=True):
        for reward, currency, minor, fx in plan[4]:
            if fx:
                audit("reward.scheduled", "reward", reward.id, {
                    "payout": payout_id, "amount": str(from_minor(minor, currency)), "currency": currency, "fx": fx})
            else:
                audit("reward.scheduled", "reward", reward.id, {"payout": payout_id})
