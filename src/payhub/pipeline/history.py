"""What calculators and the program rules read: :class:`DbHistory`, the History over the database plus the batch
being calculated (whose results are written only at the end of the batch)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, select

from payhub import funds
from payhub.api import Event, FundMovement, RewardLine
from payhub.db.queries import in_chunks
from payhub.db.schema import events
from payhub.funds import Entry
from payhub.money import from_minor
from payhub.pipeline.rules import BUDGET_HOLD, Decision, ObjectReward
from payhub.states import RewardStatus
from payhub.store import events as event_store
from payhub.store import funds as fund_store
from payhub.store import gift_totals, volumes
from payhub.store import rewards as reward_store


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
        self._volume_totals: dict[tuple[str, str, str, datetime, datetime], dict[str, Decimal]] = {}
        # (program, source, object type, object id) -> rewards of the batch on that CRM object
        self.in_batch_objects: dict[tuple[str, str, str, str], list[ObjectReward]] = {}
        self.in_batch_funds: dict[tuple[str, str, str], list[Entry]] = {}  # (program, holder, unit) -> entries
        self.reserved: dict[str, int] = {}  # budget key -> minor units reserved by the batch
        self.cancelled: set[int] = set()  # stored rewards the batch's clawbacks cancel (still live in the database)
        # (program, currency, "payee" | "partner" | "program", payee / partner / None) -> [(occurred_at, minor)]
        self.in_batch_scopes: dict[tuple[str, str, str, str | None], list[tuple[datetime, int]]] = {}
        # (payee, currency) -> [(program, occurred_at, minor)]: what flag caps count across programs
        self.in_batch_by_payee: dict[tuple[str, str], list[tuple[str, datetime, int]]] = {}
        self._stored_funds: dict[tuple[str, str, str], list[Entry]] = {}  # read once per batch
        self._credit_index: dict[tuple[str, str, str], tuple[list[datetime], list[Decimal]]] = {}
        # fund -> the batch's credits: their times and running sums (None once one came out of time order)
        self._batch_credits: dict[tuple[str, str, str], tuple[list[datetime] | None, list[Decimal]]] = {}
        self._fund_states: dict[tuple[str, str, str], funds.Fund] = {}
        # fund -> (a copy of its stored state with the batch's first entries applied, those entries)
        self._funds_of_batch: dict[tuple[str, str, str], tuple[funds.Fund, list[Entry]]] = {}
        self._snapshots: dict[tuple[str, str, str], fund_store.State | None] = {}  # running states, read once
        self.fund_read = fund_store.Read()  # their texts: the batch's advance reuses the states it finds unchanged
        self._sums: dict[tuple[Any, ...], int] = {}  # stored sums asked before in this batch
        self._seen: dict[int, ObjectReward] = {}  # stored rewards of CRM objects read by clawbacks, by id
        self._cancelled_rows: list[tuple[str, ObjectReward]] = []  # (program, reward) cancelled by this batch
        self._batch_rewards: dict[tuple[int, int], tuple[str, Event, str, str, int, Decision]] = {}
        # The payees and partners of the batch's events, and the budget pools they may draw on: the stored sums a
        # calculation asks of one of them are read for all of them at once (one statement per kind of sum).
        self._expected: dict[str, frozenset[str]] = {"payee": frozenset(), "partner": frozenset()}
        self._expected_budgets: frozenset[str] = frozenset()
        self._read_groups: set[tuple[Any, ...]] = set()
        self._expected_objects: frozenset[tuple[str, str, str]] = frozenset()
        self._object_events: dict[tuple[str, str, str], dict[int, Any]] | None = None
        self._object_live: dict[str, dict[int, list[Any]]] = {}

    def expect(self, payees: Collection[str], partners: Collection[str], budget_keys: Collection[str] = ()) -> None:
        """Name the payees, partners and budget pools the batch's calculations are likely to ask about: a stored sum
        asked of one of them is then read for all of them in one statement (others are read one by one)."""
        self._expected = {"payee": frozenset(payees), "partner": frozenset(partners)}
        self._expected_budgets = frozenset(budget_keys)

    def add(self, program: str, event: Event, line: RewardLine, minor: int, decision: Decision,
            ref: tuple[int, int]) -> None:
        """Count a reward of the batch; ``ref`` names it should a clawback of the same batch cancel it."""
        self._count(program, event, line.payee_id, line.currency, minor)
        self.in_batch_objects.setdefault(object_key(program, event), []).append(ObjectReward(
            event.occurred_at, line.payee_id, line.currency, minor, status=decision.status,
            budget_key=decision.budget_key, batch_ref=ref, hold_code=decision.hold_code))
        self._batch_rewards[ref] = (program, event, line.payee_id, line.currency, minor, decision)

    def forget(self, ref: tuple[int, int]) -> None:
        """Stop counting a reward of the batch that a clawback of the same batch cancelled."""
        program, event, payee_id, currency, minor, decision = self._batch_rewards.pop(ref)
        self._count(program, event, payee_id, currency, -minor)
        key = object_key(program, event)
        self.in_batch_objects[key] = [r for r in self.in_batch_objects[key] if r.batch_ref != ref]
        if decision.budget_key is not None and decision.hold_code != BUDGET_HOLD:  # its reservation is released
            self.reserved[decision.budget_key] -= minor

    def _count(self, program: str, event: Event, payee_id: str, currency: str, minor: int) -> None:
        key = (program, payee_id, currency)
        self.in_batch[key] = self.in_batch.get(key, 0) + minor
        self.in_batch_by_time.setdefault(key, []).append((event.occurred_at, minor))
        for scope in (("payee", payee_id), ("partner", event.partner_id), ("program", None)):
            self.in_batch_scopes.setdefault((program, currency, *scope), []).append((event.occurred_at, minor))
        self.in_batch_by_payee.setdefault((payee_id, currency), []).append((program, event.occurred_at, minor))

    def add_fund(self, program: str, event: Event, movement: FundMovement, amount: Decimal) -> None:
        """Count a fund movement of the batch."""
        key = (program, movement.holder_id, movement.unit)
        self.in_batch_funds.setdefault(key, []).append((event.occurred_at, amount, movement.expires_at))
        if amount > 0:  # the batch's credits by time with running sums, while they come in time order
            times, sums = self._batch_credits.setdefault(key, ([], [Decimal(0)]))
            if times is not None and (not times or times[-1] <= event.occurred_at):
                times.append(event.occurred_at)
                sums.append(sums[-1] + amount)
            else:
                self._batch_credits[key] = (None, [])  # out of order: summed entry by entry

    def add_volume(self, program: str, event: Event) -> None:
        """Count ``event`` in the volume of ``program`` (call when the program calculated it without failure)."""
        if event.partner_id and event.amount is not None and event.currency:
            key = (program, event.partner_id, event.currency)
            self.in_batch_volume.setdefault(key, []).append((event.occurred_at, event.amount, event.event_type))

    def total_rewarded(self, program: str, payee_id: str, currency: str, since: datetime | None = None) -> Decimal:
        stored = reward_store.total(self.conn, program, payee_id, currency, since)
        return from_minor(stored + self.in_batch.get((program, payee_id, currency), 0), currency)

    def rewarded_between(self, program: str, payee_id: str, currency: str, since: datetime,
                         until: datetime) -> Decimal:
        return from_minor(self.capped_total(program, "payee", payee_id, currency, since, until), currency)

    def total_volume(self, program: str, partner_id: str, currency: str, since: datetime, until: datetime,
                     returns: Collection[str] = ()) -> Decimal:
        key = (program, partner_id, currency, since, until)
        batch = [(amount, kind) for at, amount, kind in self.in_batch_volume.get((program, partner_id, currency), ())
                 if since <= at < until]
        months = reward_store.month_span(since, until)
        if months is not None:  # whole months: the running totals, per event type
            totals = self._volume_totals.get(key)
            if totals is None:  # the batch's own calculations are written only at its end
                group = ("volumes", program, currency, since, until)
                expected = self._expected["partner"]
                if partner_id in expected and group not in self._read_groups:  # every partner of the batch at once
                    self._read_groups.add(group)
                    for other, found in volumes.by_type_of(self.conn, program, expected, currency, months).items():
                        self._volume_totals.setdefault((program, other, currency, since, until), found)
                    totals = self._volume_totals[key]
                else:
                    totals = self._volume_totals[key] = volumes.by_type(self.conn, program, partner_id, currency,
                                                                        months)
            stored_sum = sum((-amount if kind in returns else amount for kind, amount in totals.items()), Decimal(0))
            return stored_sum + sum((-Decimal(amount) if kind in returns else Decimal(amount)
                                     for amount, kind in batch), Decimal(0))
        stored = self._stored_volume.get(key)
        if stored is None:  # event amounts are exact decimal text: summed here, not in SQL
            stored = event_store.decided_volume(self.conn, program, partner_id, currency, since, until)
            self._stored_volume[key] = stored
        return sum((-Decimal(amount) if kind in returns else Decimal(amount) for amount, kind in [*stored, *batch]),
                   Decimal(0))

    def _stored_fund(self, key: tuple[str, str, str]) -> list[Entry]:
        stored = self._stored_funds.get(key)
        if stored is None:  # the batch's own entries are written only at its end
            stored = self._stored_funds[key] = fund_store.entries(self.conn, *key)
        return stored

    def _fund_snapshot(self, key: tuple[str, str, str]) -> fund_store.State | None:
        """The fund's running state as stored (None: it has none, its entries are read instead), read once."""
        if key not in self._snapshots:
            program, holder, unit = key
            group = ("funds", program, unit)
            holders = self._expected["payee"] | self._expected["partner"]
            if holder in holders and group not in self._read_groups:
                self._read_groups.add(group)
                for other, found in fund_store.states(self.conn, program, unit, holders, self.fund_read).items():
                    self._snapshots.setdefault((program, other, unit), found)
            else:
                row = fund_store.states(self.conn, program, unit, [holder], self.fund_read)
                self._snapshots[key] = row[holder]
        return self._snapshots[key]

    def fund_balance(self, program: str, holder_id: str, unit: str, at: datetime) -> Decimal:
        key = (program, holder_id, unit)
        state = self._fund_states.get(key)
        if state is None:  # the fund after every stored entry: its running state, or replayed once per batch
            snapshot = self._fund_snapshot(key)
            if snapshot is not None:
                state = self._fund_states[key] = snapshot.fund
            else:
                state = self._fund_states[key] = funds.Fund()
                for entry in sorted(self._stored_fund(key), key=lambda e: e[0]):
                    state.apply(*entry)
        batch = sorted((e for e in self.in_batch_funds.get(key, ()) if e[0] <= at), key=lambda e: e[0])
        if state.last is not None and (at < state.last or (batch and batch[0][0] < state.last)):
            # asked about the past of the stored entries: the whole fund again, in time order
            return funds.balance([*self._stored_fund(key), *self.in_batch_funds.get(key, ())], at)
        if not batch:
            return state.balance(at)
        # The stored fund with the batch's entries up to ``at``: a copy made once and carried forward from call to
        # call while the entries applied so far are the first of those asked for (the usual case: events in time
        # order), so a busy fund's credits are not copied again for each claim of the batch.
        fund, applied = self._funds_of_batch.get(key, (None, []))
        if fund is None or batch[:len(applied)] != applied:
            fund, applied = state.copy(), []
        for entry in batch[len(applied):]:
            fund.apply(*entry)
        self._funds_of_batch[key] = (fund, batch)
        return fund.balance(at)

    def fund_credited(self, program: str, holder_id: str, unit: str, since: datetime, until: datetime) -> Decimal:
        key = (program, holder_id, unit)
        times, sums = self._batch_credits.get(key, (None, []))
        if times is not None:
            batch = _between(times, sums, since, until)
        else:
            batch = sum((amount for at, amount, _ in self.in_batch_funds.get(key, ())
                         if amount > 0 and since <= at < until), Decimal(0))
        snapshot = self._fund_snapshot(key)
        if snapshot is not None and (snapshot.last is None or snapshot.last < until):
            stored_since = snapshot.credited_since(since)  # every stored entry is before until
            if stored_since is not None:
                return stored_since + batch
        index = self._credit_index.get(key)
        if index is None:  # stored credits by time, with running sums: each call is two binary searches
            credits = sorted((at, amount) for at, amount, _ in self._stored_fund(key) if amount > 0)
            index = self._credit_index[key] = ([at for at, _ in credits],
                                               list(itertools.accumulate((a for _, a in credits), initial=Decimal(0))))
        times, sums = index
        stored = _between(times, sums, since, until)
        return stored + batch

    def expect_objects(self, objects: Collection[tuple[str, str, str]]) -> None:
        """Name the CRM objects ``(source, object type, object id)`` whose rewards the batch's calculations are likely
        to ask for (clawbacks, once-per-object programs): they are read for all of them at once, per program."""
        self._expected_objects = frozenset(objects)

    def _objects_of_batch(self) -> dict[tuple[str, str, str], dict[int, Any]]:
        """The events of every expected CRM object, read once: object -> event id -> ``(id, occurred_at,
        partner_id)``."""
        if self._object_events is None:
            self._object_events = {}
            wanted = self._expected_objects
            for chunk in in_chunks(object_id for _source, _type, object_id in wanted):
                for row in self.conn.execute(_EVENTS_OF_OBJECTS, {"ids": chunk}):
                    crm_object = (row.source, row.object_type, row.object_id)
                    if crm_object in wanted:
                        self._object_events.setdefault(crm_object, {})[row.id] = row
        return self._object_events

    def _live_of_batch(self, program: str) -> dict[int, list[Any]]:
        """The live rewards of ``program`` on the events of the expected CRM objects (locked on PostgreSQL, by id),
        read once per program: event id -> rewards."""
        live = self._object_live.get(program)
        if live is None:
            live = self._object_live[program] = {}
            ids = sorted(i for found in self._objects_of_batch().values() for i in found)
            for start in range(0, len(ids), 500):
                for row in sorted(reward_store.live_of_events(self.conn, program, ids[start:start + 500]),
                                  key=lambda r: r.id):
                    live.setdefault(row.event_id, []).append(row)
        return live

    def object_rewards(self, program: str, event: Event) -> list[ObjectReward]:
        crm_object = (event.source, event.object_type, event.object_id)
        if crm_object in self._expected_objects:
            found = {i: row for i, row in self._objects_of_batch().get(crm_object, {}).items() if i != event.id}
            live = self._live_of_batch(program)
            rows = sorted((row for i in found for row in live.get(i, ())), key=lambda r: r.id)
        else:  # two steps, so each uses its index (events by object, rewards by event) whatever the planner knows
            found = event_store.of_object(self.conn, event.source, event.object_type, event.object_id, event.id)
            rows = reward_store.live_of_events(self.conn, program, found) if found else []
        stored: list[ObjectReward] = []
        if found:
            for row in rows:
                if row.id not in self.cancelled:
                    origin = found[row.event_id]
                    reward = ObjectReward(origin.occurred_at, row.payee_id, row.currency, row.amount_minor, row.id,
                                          row.status, row.budget_key, partner_id=origin.partner_id,
                                          hold_code=row.hold_code)
                    self._seen[row.id] = reward
                    stored.append(reward)
        return stored + self.in_batch_objects.get(object_key(program, event), [])

    def capped_total(self, program: str, per: str, scope_id: str | None, currency: str, since: datetime | None,
                     until: datetime | None) -> int:
        timed = since is not None and until is not None
        args = (program, currency, per, scope_id, since, until)
        stored = self._sums.get(args)
        if stored is None:  # the database's part does not change during the batch
            stored = self._sums[args] = self._stored_scope_total(program, currency, per, scope_id, since, until)

        def counted(at: datetime) -> bool:
            return not timed or since <= at < until  # type: ignore[operator]

        cancelled = sum(r.minor for p, r in self._cancelled_rows if p == program and r.currency == currency
                        and counted(r.occurred_at) and _in_scope(per, scope_id, r.payee_id, r.partner_id))
        batch = sum(minor for at, minor in self.in_batch_scopes.get((program, currency, per, scope_id), ())
                    if counted(at))
        return stored - cancelled + batch

    def _stored_scope_total(self, program: str, currency: str, per: str, scope_id: str | None,
                            since: datetime | None, until: datetime | None) -> int:
        """The stored part of :meth:`capped_total`: for an expected payee or partner over whole months (or all time),
        read with those of every expected one of its kind, once per batch."""
        expected = self._expected.get(per, frozenset())
        months = reward_store.month_span(since, until) if since is not None and until is not None else None
        whole = since is None or months is not None
        group = ("scopes", program, currency, per, since, until)
        if whole and scope_id in expected and group not in self._read_groups:
            self._read_groups.add(group)
            found = reward_store.scope_totals(self.conn, program, currency, per, expected, months)
            for other, minor in found.items():
                self._sums.setdefault((program, currency, per, other, since, until), minor)
            return found[scope_id]
        return reward_store.scope_total(self.conn, program, currency, per, scope_id, since, until)

    def rewarded_to(self, payee_ids: frozenset[str], currency: str, since: datetime, until: datetime,
                    programs: frozenset[str] | None) -> int:
        """Minor units of the live rewards in ``currency`` to any of ``payee_ids`` of events in ``[since, until)``,
        across every program or only ``programs``, counted as :meth:`capped_total` counts (flag caps)."""
        args = ("payees", payee_ids, currency, since, until, programs)
        stored = self._sums.get(args)
        if stored is None:  # the database's part does not change during the batch
            found = reward_store.payees_total(self.conn, payee_ids, currency, since, until, programs)
            if found is None:  # not whole months: summed from the rewards
                found = gift_totals.rewarded_to(self.conn, payee_ids, currency, since, until, programs)
            stored = self._sums[args] = found

        def counted(program: str, at: datetime) -> bool:
            return (programs is None or program in programs) and since <= at < until

        cancelled = sum(r.minor for p, r in self._cancelled_rows if r.currency == currency
                        and r.payee_id in payee_ids and counted(p, r.occurred_at))
        batch = sum(minor for payee in payee_ids for program, at, minor in
                    self.in_batch_by_payee.get((payee, currency), ()) if counted(program, at))
        return stored - cancelled + batch

    def budget_used(self, key: str) -> int:
        stored = self._sums.get(("budget", key))
        if stored is None:
            if key in self._expected_budgets and ("budgets",) not in self._read_groups:
                self._read_groups.add(("budgets",))
                for other, minor in reward_store.budgets_used(self.conn, self._expected_budgets).items():
                    self._sums.setdefault(("budget", other), minor)
                stored = self._sums[("budget", key)]
            else:
                stored = self._sums[("budget", key)] = reward_store.budget_used(self.conn, key)
        return stored - sum(r.minor for _p, r in self._cancelled_rows
                            if r.budget_key == key
                            and not (r.status == RewardStatus.HELD and r.hold_code == BUDGET_HOLD))

    def cancel(self, program: str, reward_ids: list[int]) -> None:
        """Stop counting stored rewards that a clawback of this batch cancels (written at the end of the batch)."""
        for reward_id in reward_ids:
            if reward_id not in self.cancelled:
                self.cancelled.add(reward_id)
                self._cancelled_rows.append((program, self._seen[reward_id]))


_EVENTS_OF_OBJECTS = select(events.c.id, events.c.occurred_at, events.c.partner_id, events.c.source,
                            events.c.object_type, events.c.object_id).where(
    events.c.object_id.in_(bindparam("ids", expanding=True)))


def _between(times: list[datetime], sums: list[Decimal], since: datetime, until: datetime) -> Decimal:
    """The sum of the amounts at ``times`` (ascending; ``sums`` their running sums from 0) in ``[since, until)``."""
    first, end = bisect.bisect_left(times, since), bisect.bisect_left(times, until)
    return sums[end] - sums[first] if end > first else Decimal(0)


def _in_scope(per: str, scope_id: str | None, payee_id: str, partner_id: str | None) -> bool:
    """Whether a reward to ``payee_id`` on an event of ``partner_id`` is in the cap scope ``per`` ``scope_id``."""
    return {"program": True, "payee": payee_id == scope_id, "partner": partner_id == scope_id}[per]


def object_key(program: str, event: Event) -> tuple[str, str, str, str]:
    return program, event.source, event.object_type, event.object_id
