"""The funds store: the entries of funds (co-op accruals, loyalty points), credits and spending, and each fund's
running state.

What a fund's entries add up to is :mod:`payhub.funds`' arithmetic; this module reads and writes the entries, and keeps
``fund_states``: per fund, the :class:`payhub.funds.Fund` after all its entries in time order (their replay) and its
credits per month of their time, written by :func:`advance` in the transaction that writes the fund's entries (the
calculate stage is the only writer of entries). A fund without a state (entries written before revision 0010) is
read from its entries, and gets its state at its next entry.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, bindparam, select, update

from payhub import funds
from payhub.db.queries import in_chunks, insert_ignore, insert_returning
from payhub.db.schema import bind_time, fund_entries, fund_states, read_time
from payhub.funds import Entry

_ENTRIES = select(fund_entries.c.occurred_at, fund_entries.c.amount, fund_entries.c.expires_at).where(
    fund_entries.c.program == bindparam("program"), fund_entries.c.holder_id == bindparam("holder"),
    fund_entries.c.unit == bindparam("unit")).order_by(fund_entries.c.id)
_ENTRIES_WITH_IDS = select(fund_entries.c.id, fund_entries.c.occurred_at, fund_entries.c.amount,
                           fund_entries.c.expires_at).where(
    fund_entries.c.program == bindparam("program"), fund_entries.c.holder_id == bindparam("holder"),
    fund_entries.c.unit == bindparam("unit")).order_by(fund_entries.c.id)
_STATE = select(fund_states.c.last_entry_id, fund_states.c.state).where(
    fund_states.c.program == bindparam("program"), fund_states.c.holder_id == bindparam("holder"),
    fund_states.c.unit == bindparam("unit"))


def entries(conn: Connection, program: str, holder_id: str, unit: str) -> list[Entry]:
    """The stored entries of one fund, in the order they were written."""
    return [(at, Decimal(amount), expires) for at, amount, expires in (
        conn.execute(_ENTRIES, {"program": program, "holder": holder_id, "unit": unit}))]


NEW_ENTRY_COLUMNS = ("event_id", "program", "holder_id", "unit", "amount", "occurred_at", "expires_at",
                     "description", "details")
"""The values of a new fund entry, in the order :func:`insert` takes them (``created_at`` is the time of the insert)."""
def insert(conn: Connection, rows: Sequence[tuple[Any, ...]], now: datetime
           ) -> list[tuple[int, int, str, str, str, str, datetime | None]]:
    """Write fund entries, each a tuple of :data:`NEW_ENTRY_COLUMNS`, created at ``now``; return ``(id, event_id,
    program, holder_id, unit, amount, expires_at)`` of each, by id (:func:`payhub.db.queries.insert_returning`)."""
    bind, read = bind_time(conn.dialect), read_time(conn.dialect)
    created = bind(now)
    written = [(entry_id, event_id, program, holder, unit, amount, read(expires))
               for entry_id, event_id, program, holder, unit, amount, expires in insert_returning(
                   conn, "fund_entries", (*NEW_ENTRY_COLUMNS, "created_at"),
                   [(event_id, program, holder, unit, amount, bind(occurred), bind(expires), description, details,
                     created)
                    for event_id, program, holder, unit, amount, occurred, expires, description, details in rows],
                   "id, event_id, program, holder_id, unit, amount, expires_at")]
    written.sort()
    return written


class State:
    """A fund after all its stored entries, applied in time order (ties by id), as :func:`payhub.funds.replay`
    applies them: ``fund``, the id of the entry applied last, and the credits per ``YYYY-MM`` of their time.

    A state read from its row keeps its credits as the stored text pairs until ``fund`` is asked for (a balance, a
    spending): a fund that only gains credits, the most common change, is advanced and written again without turning
    every credit into a Decimal and a datetime and back."""

    __slots__ = ("_fund", "_raw", "_overspent", "_last", "last_entry_id", "credited")

    def __init__(self, fund: funds.Fund, last_entry_id: int, credited: dict[str, Decimal]) -> None:
        self._fund: funds.Fund | None = fund
        self._raw: list[list[str | None]] = []  # credits as stored, while _fund is None
        self._overspent, self._last = fund.overspent, fund.last
        self.last_entry_id = last_entry_id
        self.credited = credited

    @classmethod
    def stored(cls, last_entry_id: int, raw: list[list[str | None]], overspent: Decimal, last: datetime | None,
               credited: dict[str, Decimal]) -> State:
        state = cls(funds.Fund(), last_entry_id, credited)
        state._fund, state._raw, state._overspent, state._last = None, raw, overspent, last
        return state

    @property
    def fund(self) -> funds.Fund:
        if self._fund is None:
            fund = funds.Fund()
            fund.credits = [funds.Credit(Decimal(cast(str, left)), datetime.fromisoformat(expires)
                                         if expires is not None else None) for left, expires in self._raw]
            fund.overspent, fund.last = self._overspent, self._last
            self._fund, self._raw = fund, []
        return self._fund

    @property
    def last(self) -> datetime | None:
        """When the latest entry applied occurred."""
        return self._fund.last if self._fund is not None else self._last

    def apply(self, occurred: datetime, amount: Decimal, expires: datetime | None) -> None:
        """Apply one entry (not dated before the latest applied): a credit is added as stored text while the credits
        are not read; a spending reads them."""
        if self._fund is None and amount >= 0:
            self._raw.append([str(amount), expires.isoformat() if expires is not None else None])
            self._last = occurred
        else:
            self.fund.apply(occurred, amount, expires)

    def dumps(self) -> str:
        """The stored text of the state."""
        if self._fund is not None:
            credits: list[list[str | None]] = [
                [str(c.left), c.expires_at.isoformat() if c.expires_at is not None else None]
                for c in self._fund.credits]
        else:
            credits = self._raw
        last = self.last
        return json.dumps({
            "credits": credits, "overspent": str(self._fund.overspent if self._fund is not None else self._overspent),
            "last": last.isoformat() if last is not None else None,
            "credited": {month: str(amount) for month, amount in sorted(self.credited.items())},
        }, separators=(",", ":"))

    def credited_since(self, since: datetime) -> Decimal | None:
        """The stored credits of entries that occurred at or after ``since``, when ``since`` is the first instant of
        a UTC month; else None."""
        if (since.day, since.hour, since.minute, since.second, since.microsecond) != (1, 0, 0, 0, 0) or \
                since.utcoffset():
            return None
        first = month_of(since)
        return sum((amount for month, amount in self.credited.items() if month >= first), Decimal(0))


def month_of(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def state(conn: Connection, program: str, holder_id: str, unit: str) -> State | None:
    """The running state of one fund, or None when it has none (read its :func:`entries` instead)."""
    row = conn.execute(_STATE, {"program": program, "holder": holder_id, "unit": unit}).first()
    if row is None or row.state is None:
        return None
    return _loads(int(row.last_entry_id), row.state)


Key = tuple[str, str, str]  # program, holder, unit
Written = list[tuple[int, datetime, Decimal, datetime | None]]  # (id, occurred_at, amount, expires_at) of entries


class Read:
    """Running states read in one transaction, kept with the text they were read from: :func:`advance_all` reuses a
    state whose stored text it finds unchanged instead of parsing that text again."""

    def __init__(self) -> None:
        self.texts: dict[Key, tuple[str, State]] = {}

    def loads(self, key: Key, last_entry_id: int, text: str) -> State:
        kept = self.texts.get(key)
        if kept is not None and kept[0] == text:
            return kept[1]
        state = _loads(last_entry_id, text)
        self.texts[key] = (text, state)
        return state


def states(conn: Connection, program: str, unit: str, holders: Collection[str], read: Read | None = None
           ) -> dict[str, State | None]:
    """:func:`state` of the funds of ``program`` in ``unit`` of many holders at once (one statement per 500)."""
    found: dict[str, State | None] = dict.fromkeys(holders)
    for chunk in in_chunks(found):
        for holder, last_entry_id, text in conn.execute(_STATES, {"program": program, "unit": unit,
                                                                  "holders": chunk}):
            if text is not None:
                found[holder] = read.loads((program, holder, unit), int(last_entry_id), text) if read is not None \
                    else _loads(int(last_entry_id), text)
    return found


def advance_all(conn: Connection, written: dict[Key, Written], read: Read | None = None) -> None:
    """:func:`advance` of many funds at once: their rows made as needed and read (locked on PostgreSQL, in key order)
    in one statement per 500 funds of a program and unit, their new states written in one statement."""
    if not written:
        return
    keys = sorted(written, key=lambda key: (key[0], key[2], key[1]))  # by program, unit, holder: as they are locked
    insert_ignore(conn, fund_states, [{"program": p, "holder_id": h, "unit": u, "last_entry_id": None, "state": None}
                                      for p, h, u in keys], ["program", "holder_id", "unit"])
    rows: dict[Key, tuple[Any, str | None]] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for program, holder, unit in keys:
        groups.setdefault((program, unit), []).append(holder)
    locked = _STATES_LOCKED if conn.dialect.name == "postgresql" else _STATES
    for (program, unit), holders in sorted(groups.items()):
        for chunk in in_chunks(holders):
            for holder, last_entry_id, text in conn.execute(locked, {"program": program, "unit": unit,
                                                                     "holders": chunk}):
                rows[(program, holder, unit)] = (last_entry_id, text)
    updates = []
    for key in keys:
        last_entry_id, text = rows[key]
        current = None
        if text is not None:
            current = read.loads(key, int(last_entry_id), text) if read is not None else _loads(int(last_entry_id),
                                                                                                   text)
            if read is not None:
                read.texts.pop(key, None)  # advanced below: no longer what the row holds
        current = _advanced(conn, key, current, written[key])
        updates.append({"k_program": key[0], "k_holder": key[1], "k_unit": key[2],
                        "k_last": current.last_entry_id, "k_state": _dumps(current)})
    conn.execute(_SET_STATE, updates)


def _advanced(conn: Connection, key: Key, current: State | None, written: Written) -> State:
    """``current`` (the stored state, or None) brought up to date with the entries ``written``: applied to it when
    they all come after every applied entry, else the state made again from all the fund's entries."""
    ordered = sorted(written, key=lambda e: (e[1], e[0]))
    if current is not None and current.last is not None and ordered and \
            (ordered[0][1], ordered[0][0]) > (current.last, current.last_entry_id):
        for entry_id, occurred, amount, expires in ordered:
            _apply(current, entry_id, occurred, amount, expires)
        return current
    current = State(funds.Fund(), 0, {})  # made again: every entry, in time order, ties by id (as funds.replay)
    stored = [(int(i), at, Decimal(amount), expires) for i, at, amount, expires in conn.execute(
        _ENTRIES_WITH_IDS, {"program": key[0], "holder": key[1], "unit": key[2]})]
    for entry_id, occurred, amount, expires in sorted(stored, key=lambda e: (e[1], e[0])):
        _apply(current, entry_id, occurred, amount, expires)
    return current


_STATES_OF = select(fund_states.c.holder_id, fund_states.c.last_entry_id, fund_states.c.state).where(
    fund_states.c.program == bindparam("program"), fund_states.c.unit == bindparam("unit"),
    fund_states.c.holder_id.in_(bindparam("holders", expanding=True)))
_STATES = _STATES_OF.order_by(fund_states.c.holder_id)
# PostgreSQL locks them in the order of the holders' text by code point, as they are sorted here, whatever the
# database's collation: replicas then lock alike (SQLite compares text by its bytes, in the same order)
_STATES_LOCKED = _STATES_OF.order_by(fund_states.c.holder_id.collate("C")).with_for_update()
_SET_STATE = update(fund_states).where(
    fund_states.c.program == bindparam("k_program"), fund_states.c.holder_id == bindparam("k_holder"),
    fund_states.c.unit == bindparam("k_unit")).values(last_entry_id=bindparam("k_last"), state=bindparam("k_state"))


def advance(conn: Connection, program: str, holder_id: str, unit: str,
            written: list[tuple[int, datetime, Decimal, datetime | None]]) -> None:
    """Bring the fund's state up to date with the entries ``written`` in this transaction (``(id, occurred_at,
    amount, expires_at)``). Entries that come after every applied one are applied to the state; otherwise (an
    entry dated before the latest applied, or no state yet) the state is made again from all the fund's entries.
    On PostgreSQL the state's row is locked first, so replicas advance one fund one after the other and the entries
    read for a new state include every committed one."""
    advance_all(conn, {(program, holder_id, unit): written})


def _apply(current: State, entry_id: int, occurred: datetime, amount: Decimal, expires: datetime | None) -> None:
    current.apply(occurred, amount, expires)
    current.last_entry_id = entry_id
    if amount > 0:
        month = month_of(occurred)
        current.credited[month] = current.credited.get(month, Decimal(0)) + amount


def _dumps(current: State) -> str:
    return current.dumps()


def _loads(last_entry_id: int, text: str) -> State:
    data = json.loads(text)
    return State.stored(last_entry_id, data["credits"], Decimal(data["overspent"]),
                        datetime.fromisoformat(data["last"]) if data["last"] is not None else None,
                        {month: Decimal(amount) for month, amount in data["credited"].items()})
