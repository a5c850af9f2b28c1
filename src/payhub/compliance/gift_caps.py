"""Gift and anti-bribery limits (docs/compliance.md#gift-and-anti-bribery-limits).

Two rules, from ``[compliance.gifts]`` (:class:`payhub.settings.GiftSettings`):

- **Flag caps**, applied at calculation right after the program's own caps: a reward to a payee whose registry
  entry carries a capped flag is cut so that what the flag's cap counts stays within its yearly limit. The cap
  counts, over the calendar year (UTC) of the event, the live rewards (not cancelled; adjustments net) in its
  currency of the payee (``per = "payee"``: every program the cap applies to), of the payee in this program
  (``per = "program"``), or of every payee carrying the flag (``per = "flag"``); rewards of the batch being
  calculated included. Flags are read from the payee registry when the reward is calculated and compared as
  :func:`payhub.compliance.flags.flag_key` normalises them (case, width, invisible characters). A positive line to
  a payee not in the registry raises :class:`PayeeNotRegistered`: its flags are unknown, so the event waits for
  the payee (:mod:`payhub.pipeline.waiting`) instead of being calculated without them.
- **Gift-card yearly cap**, applied when a payout is routed: a rail listed in ``giftcard_rails`` refuses a payout
  that would take the payee's gift cards of the calendar year (UTC, by the day payouts are scheduled) in its
  currency above ``giftcard_yearly_cap``. The payout is never split: routing tries the next rail, or the rewards
  are held ``no_rail`` with the refusal until a later pass finds room (a new year, a gift card that failed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from payhub.api import Event, RewardLine
from payhub.clock import period_bounds, utcnow
from payhub.compliance.flags import flag_key
from payhub.errors import CalculationError
from payhub.money import from_minor, quantize, to_minor
from payhub.runtime import Runtime
from payhub.settings import FlagCap, GiftSettings
from payhub.store import gift_totals

SETTING = "compliance.gifts"


class PayeeNotRegistered(Exception):
    """A flag cap applies to a line whose payee is not in the registry: the payee's flags are unknown."""

    def __init__(self, payee_id: str) -> None:
        super().__init__(f"payee {payee_id} is not in the payees registry")
        self.payee_id = payee_id


class FlagHistory(Protocol):
    """What flag caps read of past rewards (:class:`payhub.pipeline.history.DbHistory` is one)."""

    def rewarded_to(self, payee_ids: frozenset[str], currency: str, since: datetime, until: datetime,
                    programs: frozenset[str] | None) -> int: ...


class PayeeFlags:
    """The registry's flags, read once per calculation batch (one query, on first use): of a payee, and the payees
    carrying a flag."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._flagged: dict[str, frozenset[str]] | None = None
        self._carrying: dict[str, frozenset[str]] = {}
        self._registered: dict[str, bool] = {}

    def registered(self, payee_id: str) -> bool:
        """True when the payee is in the registry (read once per payee and batch)."""
        if payee_id not in self._registered:
            self._registered[payee_id] = bool(gift_totals.registered(self.conn, [payee_id]))
        return self._registered[payee_id]

    def _all(self) -> dict[str, frozenset[str]]:
        if self._flagged is None:
            self._flagged = gift_totals.flagged(self.conn)
        return self._flagged

    def of(self, payee_id: str) -> frozenset[str]:
        """The payee's flags, normalised (:func:`payhub.compliance.flags.flag_key`); none for a payee not in the
        registry."""
        return self._all().get(payee_id, frozenset())

    def carrying(self, flag: str) -> frozenset[str]:
        """The ids of the payees carrying ``flag`` (normalised)."""
        if flag not in self._carrying:
            self._carrying[flag] = frozenset(payee for payee, flags in self._all().items() if flag in flags)
        return self._carrying[flag]


def _fold(flag: str) -> str:
    return flag_key(flag)


def cap_name(cap: FlagCap, payee_id: str, program: str, year: str) -> str:
    """How a cut names its flag cap: ``flag government_official per payee ana 2026``."""
    if cap.per == "payee":
        return f"flag {cap.flag} per payee {payee_id} {year}"
    if cap.per == "program":
        return f"flag {cap.flag} per payee {payee_id} in program {program} {year}"
    return f"flag {cap.flag} pool {year}"


def apply_flag_caps(caps: Sequence[FlagCap], program: str, event: Event, lines: list[tuple[RewardLine, int]],
                    history: FlagHistory, flags: PayeeFlags) -> tuple[list[tuple[RewardLine, int]], list[str]]:
    """Cut each positive line to a flagged payee by the flag caps applying to ``program``, in the order listed;
    return the lines still worth paying and a note per cut. A cut line's details get ``capped`` entries (cap, flag,
    limit, used, cut) after any of the program's caps, and ``earned``.

    Only caps in the line's currency apply; a payee carrying a flag whose caps (for this program) are all in other
    currencies raises CalculationError: amounts in different currencies are not compared, and the payee is not paid
    past a cap that cannot be checked. A positive line to a payee not in the registry raises
    :class:`PayeeNotRegistered` (when any cap applies to ``program``): its flags are unknown.
    """
    applicable = [cap for cap in caps if not cap.programs or program in cap.programs]
    if not applicable:
        return lines, []
    for line, minor in lines:
        if minor > 0 and not flags.registered(line.payee_id):
            raise PayeeNotRegistered(line.payee_id)
    since, until, year = period_bounds(event.occurred_at, "year")
    kept: list[tuple[RewardLine, int]] = []
    notes: list[str] = []
    granted: list[tuple[str, str, int]] = []  # (payee, currency, minor) of this calculation's earlier lines
    for line, minor in lines:
        cuts: list[dict[str, str]] = []
        for cap in _caps_of(applicable, flags.of(line.payee_id), line) if minor > 0 else ():
            members = frozenset({line.payee_id}) if cap.per != "flag" else \
                flags.carrying(_fold(cap.flag)) | {line.payee_id}
            programs = frozenset({program}) if cap.per == "program" else \
                (frozenset(cap.programs) if cap.programs else None)
            used = history.rewarded_to(members, cap.currency, since, until, programs) + sum(
                m for payee, currency, m in granted if currency == cap.currency and payee in members)
            limit = to_minor(quantize(cap.amount, cap.currency), cap.currency)
            paid = max(0, min(minor, limit - used))
            if paid < minor:
                name = cap_name(cap, line.payee_id, program, year)
                cut = from_minor(minor - paid, cap.currency)
                cuts.append({"cap": name, "flag": cap.flag, "limit": str(from_minor(limit, cap.currency)),
                             "used": str(from_minor(used, cap.currency)), "cut": str(cut)})
                notes.append(f"flag cap {name} of {from_minor(limit, cap.currency)} {cap.currency} cut {cut} "
                             f"{cap.currency} of {line.payee_id}'s reward")
                minor = paid
        if cuts:
            line = RewardLine(line.payee_id, from_minor(minor, line.currency), line.currency, line.description,
                              _details(line, cuts))
        if minor:
            kept.append((line, minor))
            granted.append((line.payee_id, line.currency, minor))
    return kept, notes


def _caps_of(caps: list[FlagCap], carried: frozenset[str], line: RewardLine) -> list[FlagCap]:
    """The caps that apply to ``line`` of a payee carrying ``carried``, in the order listed."""
    for flag in sorted({_fold(cap.flag) for cap in caps} & carried):
        of_flag = [cap for cap in caps if _fold(cap.flag) == flag]
        if not any(cap.currency == line.currency for cap in of_flag):
            currencies = ", ".join(sorted({cap.currency for cap in of_flag}))
            raise CalculationError(
                f"{SETTING}.flag_caps: payee {line.payee_id} carries flag {of_flag[0].flag}, capped in {currencies}, "
                f"and the reward is in {line.currency}: amounts in different currencies are not compared (add a "
                f"cap of the flag in {line.currency})")
    return [cap for cap in caps if _fold(cap.flag) in carried and cap.currency == line.currency]


def _details(line: RewardLine, cuts: list[dict[str, str]]) -> dict[str, Any]:
    """The line's details with the flag caps' cuts after the program caps' (whose ``earned`` is kept)."""
    details = dict(line.details)
    earlier = details.get("capped")
    if isinstance(earlier, list):  # the program's caps cut it first: ``earned`` is already the calculated amount
        details["capped"] = [*earlier, *cuts]
    else:
        details.update(earned=str(quantize(line.amount, line.currency)), capped=cuts)
    return details


# ---------------------------------------------------------------------------------------------- gift cards


def giftcard_refusal(rt: Runtime, rail: str, payee_id: str, currency: str, amount_minor: int,
                     conn: Connection | None = None) -> str | None:
    """Why gift-card rail ``rail`` may not take a payout of ``amount_minor`` to the payee under the yearly gift-card
    cap, or None (also for a rail that pays no gift cards, without a cap, or a payout of nothing).

    The total is read with ``conn`` (the scheduling transaction; on PostgreSQL the payee's row is locked first so
    that replicas check one after the other) or, without one, a connection of its own.
    """
    gifts: GiftSettings = rt.settings.compliance.gifts
    if rail not in gifts.giftcard_rails or not gifts.giftcard_yearly_cap or amount_minor <= 0:
        return None
    cap = gifts.giftcard_yearly_cap.get(currency)
    if cap is None:
        capped = ", ".join(sorted(gifts.giftcard_yearly_cap))
        return (f"rail {rail} pays gift cards and {SETTING}.giftcard_yearly_cap has no cap in {currency} (only in "
                f"{capped}): gift cards in {currency} are not paid")
    since, until, year = period_bounds(utcnow(), "year")
    if conn is None:
        with rt.engine.connect() as own:
            paid = gift_totals.giftcard_total(own, payee_id, gifts.giftcard_rails, currency, since, until)
    else:
        gift_totals.lock_payee(conn, payee_id)
        paid = gift_totals.giftcard_total(conn, payee_id, gifts.giftcard_rails, currency, since, until)
    limit = to_minor(quantize(cap, currency), currency)
    if paid + amount_minor <= limit:
        return None
    return (f"rail {rail} pays gift cards: the gift-card cap ({SETTING}.giftcard_yearly_cap) of "
            f"{from_minor(limit, currency)} {currency} per recipient in {year} would be exceeded: payee {payee_id} "
            f"received {from_minor(paid, currency)} {currency} in gift cards in {year}, this payout is "
            f"{from_minor(amount_minor, currency)} {currency} (payouts are not split)")
