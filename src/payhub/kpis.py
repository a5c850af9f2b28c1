"""Key figures of a period for the console's overview and ``payhub report kpi`` (docs/console.md, "Overview").

:func:`kpis` reads one :class:`Period` (``2026-Q4``, ``2026-11``, ``2026``, ``2026-10-01..2026-12-31``; UTC, end
exclusive) with grouped SQL queries, so that its cost follows the rows of the period and the indexes, never a Python
loop over every row; :func:`figures` turns the result into the charts and tables both faces show and export.

Money is exact: reward and payout amounts are summed as integer minor units and event amounts as decimals by the
database, always grouped by currency; amounts in different currencies are never added, and a ratio of two amounts is
given only when both are in the same currency. What each figure counts:

- **accrued**: rewards created in the period (their ``created_at``), by program, month and currency;
- **approved**: rewards whose approval completed in the period: at creation for rewards that need none, else at the
  approval that gave them all they need;
- **paid**: rewards in payouts that became ``paid`` in the period, in the payout's currency, by the month it did.
  A paid payout's ``updated_at`` is that moment: it is written with the ``payout.paid`` (or ``payout.resolved``)
  audit entry, and a paid payout changes again only to ``returned`` (the return window of settle reads it so too).

These three count rewards (kind ``reward``, adjustments included) that are not cancelled; backup withholding lines
(tax kept back) are not incentives and are left out.

- **budgets**: each budget pool (``[programs.X.budget]``) whose calendar period overlaps the period: used (live
  rewards not held for the budget, as the pipeline counts it) against the limit, and what waits held for it;
- **funds**: each fund program and unit at the period's end (or now, if sooner): credited, spent, expired, balance;
- **payouts**: payouts created in the period by rail, status and currency, and each rail's **success rate**:
  delivered / (delivered + failed), where delivered is ``paid`` or ``sent`` (accepted by the rail and not returned:
  file, credit-note and CSV rails never report ``paid``) and failed is ``rejected``, ``returned`` or ``failed``;
  payouts still on their way (scheduled, sending, retrying, unknown, unresolved, held) and cancelled ones are not in
  the rate;
- **time to paid**: for each reward paid in the period, from its CRM event (``occurred_at``) to the moment its
  payout became paid; p50 and p95 by the nearest-rank method (the value at rank ceil(p·n) of the n sorted);
- **open payouts and held rewards**: payouts ``held``, ``unknown`` or ``unresolved`` now, counted by status, hold
  code and reason, with the latest listed; rewards held now, by hold code and currency;
- **revenue against cost**: the deals (events with an amount) that occurred in the period and produced live rewards:
  their amounts (partner-sourced revenue) against those rewards (incentive cost), per program and per partner (the
  event's ``partner_id``, else its payee), by revenue currency and cost currency; cost per unit of revenue where the
  two currencies are the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Numeric,
    String,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    union_all,
)

from payhub import reports
from payhub.clock import isoformat, period_bounds, utcnow
from payhub.db import schema as tables
from payhub.db.queries import in_chunks
from payhub.errors import InvalidRecord
from payhub.money import from_minor, minor_units, quantize, to_minor
from payhub.settings import BudgetSettings, ProgramSection
from payhub.states import EventStatus, HoldCode, PayoutStatus, RewardKind, RewardStatus
from payhub.termsafe import visible

# ------------------------------------------------------------------------------------------------------ periods

MIN_YEAR = 1970
MAX_YEAR = 9998
MAX_DAYS = 3660
"""The longest period a range may name (about ten years): a chart by month stays readable and bounded."""
MAX_TEXT = 40
"""The longest period text read; anything longer is refused unread."""

_YEAR = re.compile(r"([0-9]{4})", re.ASCII)
_QUARTER = re.compile(r"([0-9]{4})-[Qq]([0-9])", re.ASCII)
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
_RANGE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.\.([0-9]{4}-[0-9]{2}-[0-9]{2})", re.ASCII)

PERIOD_FORMS = "2026-Q4, 2026-11, 2026 or 2026-10-01..2026-12-31"


class PeriodError(InvalidRecord, ValueError):
    """A period text that does not name a period; the message says what is wrong and what is accepted."""


def _shown(text: str) -> str:
    return ascii(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "...")


def _year(text: str, whole: str) -> int:
    year = int(text)
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise PeriodError(f"period {_shown(whole)}: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    return year


def _day(text: str, whole: str) -> date:
    _year(text[:4], whole)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"period {_shown(whole)}: {text} is not a date of the calendar") from None


@dataclass(frozen=True, slots=True)
class Period:
    """A span of UTC time: ``start`` included, ``end`` excluded; ``label`` is its canonical text."""

    start: datetime
    end: datetime
    label: str

    @classmethod
    def parse(cls, text: object) -> Period:
        """The period ``text`` names: ``2026-Q4`` (a quarter), ``2026-11`` (a month), ``2026`` (a year) or
        ``2026-10-01..2026-12-31`` (days, both included). Years from :data:`MIN_YEAR` to :data:`MAX_YEAR`, a range
        of at most :data:`MAX_DAYS` days. Raises :class:`PeriodError` (an InvalidRecord and a ValueError)."""
        if not isinstance(text, str):
            raise PeriodError(f"a period is text like {PERIOD_FORMS}, not {type(text).__name__}")
        if len(text) > MAX_TEXT:
            raise PeriodError(f"period {_shown(text)} is too long: write it like {PERIOD_FORMS}")
        given = text.strip()
        if not given:
            raise PeriodError(f"the period is missing: write it like {PERIOD_FORMS}")
        if found := _QUARTER.fullmatch(given):
            year, quarter = _year(found.group(1), given), int(found.group(2))
            if not 1 <= quarter <= 4:
                raise PeriodError(f"period {_shown(given)}: the quarter must be Q1 to Q4")
            return cls._calendar(datetime(year, quarter * 3 - 2, 1, tzinfo=UTC), "quarter")
        if found := _MONTH.fullmatch(given):
            year, month = _year(found.group(1), given), int(found.group(2))
            if not 1 <= month <= 12:
                raise PeriodError(f"period {_shown(given)}: the month must be 01 to 12")
            return cls._calendar(datetime(year, month, 1, tzinfo=UTC), "month")
        if found := _YEAR.fullmatch(given):
            return cls._calendar(datetime(_year(found.group(1), given), 1, 1, tzinfo=UTC), "year")
        if found := _RANGE.fullmatch(given):
            first, last = _day(found.group(1), given), _day(found.group(2), given)
            if last < first:
                raise PeriodError(f"period {_shown(given)}: the range ends before it starts")
            if (last - first).days + 1 > MAX_DAYS:
                raise PeriodError(f"period {_shown(given)}: a range is at most {MAX_DAYS} days")
            start = datetime(first.year, first.month, first.day, tzinfo=UTC)
            end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
            return cls(start, end, f"{first.isoformat()}..{last.isoformat()}")
        raise PeriodError(f"period {_shown(given)} is not one of the forms {PERIOD_FORMS}")

    @classmethod
    def _calendar(cls, first: datetime, kind: Literal["month", "quarter", "year"]) -> Period:
        start, end, label = period_bounds(first, kind)
        return cls(start, end, label)

    @classmethod
    def quarter_of(cls, moment: datetime) -> Period:
        """The calendar quarter (UTC) holding ``moment``: the console's default period."""
        return cls._calendar(moment, "quarter")

    def months(self) -> list[str]:
        """``YYYY-MM`` of each calendar month the period overlaps, in order."""
        found = []
        year, month = self.start.year, self.start.month
        while datetime(year, month, 1, tzinfo=UTC) < self.end:
            found.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return found

    def labels(self, kind: Literal["month", "quarter", "year"]) -> list[str]:
        """The labels (as budget pools name them: ``2026-11``, ``2026-Q4``, ``2026``) of each calendar month,
        quarter or year the period overlaps, in order."""
        found: list[str] = []
        moment = self.start
        while moment < self.end:
            _start, following, label = period_bounds(moment, kind)
            found.append(label)
            moment = following
        return found


# ------------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class Flow:
    """Rewards accrued, approved or paid (``measure``) of one program in one month and currency."""

    measure: Literal["accrued", "approved", "paid"]
    program: str
    month: str
    currency: str
    rewards: int
    minor: int

    @property
    def amount(self) -> Decimal:
        return _amount(self.minor, self.currency)


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget pool: its limit, what it has given out (``used``) and what waits held for it."""

    program: str
    pool: str  # the rewards' budget_key: program:period[:partner]
    period: str  # the pool's calendar period (2026-Q4, 2026-11, 2026) or "all"
    partner: str | None
    currency: str
    limit_minor: int | None  # None: rewards in another currency than the budget's (settings changed)
    used_minor: int
    held_minor: int
    held_rewards: int

    @property
    def used(self) -> Decimal:
        return _amount(self.used_minor, self.currency)

    @property
    def limit(self) -> Decimal | None:
        return None if self.limit_minor is None else _amount(self.limit_minor, self.currency)

    @property
    def left(self) -> Decimal | None:
        return None if self.limit_minor is None else _amount(self.limit_minor - self.used_minor, self.currency)

    @property
    def share(self) -> Decimal | None:
        """Used, in percent of the limit (one decimal)."""
        if not self.limit_minor:
            return None
        return _percent(Decimal(self.used_minor) / Decimal(self.limit_minor))


@dataclass(frozen=True, slots=True)
class Fund:
    """The funds of one program in one unit (currency or points), summed over their holders."""

    program: str
    unit: str
    holders: int
    credited: Decimal
    spent: Decimal
    expired: Decimal
    balance: Decimal


@dataclass(frozen=True, slots=True)
class PayoutGroup:
    """Payouts created in the period on one rail, in one status and currency."""

    rail: str
    status: str
    currency: str
    payouts: int
    minor: int

    @property
    def amount(self) -> Decimal:
        return _amount(self.minor, self.currency)


DELIVERED = (PayoutStatus.PAID, PayoutStatus.SENT)
"""Statuses the success rate counts as delivered."""
FAILED = (PayoutStatus.REJECTED, PayoutStatus.RETURNED, PayoutStatus.FAILED)
"""Statuses the success rate counts as failed."""


@dataclass(frozen=True, slots=True)
class RailRate:
    """How the payouts of one rail (``None``: every rail) created in the period ended, and the success rate."""

    rail: str | None
    delivered: int
    paid: int
    failed: int
    pending: int
    cancelled: int

    @property
    def rate(self) -> Decimal | None:
        """delivered / (delivered + failed) in percent (one decimal); None before any payout ended."""
        ended = self.delivered + self.failed
        return _percent(Decimal(self.delivered) / ended) if ended else None


@dataclass(frozen=True, slots=True)
class Timing:
    """Time from the CRM event to paid, over the rewards of one program (``None``: all) paid in the period."""

    program: str | None
    rewards: int
    p50: timedelta | None
    p95: timedelta | None


@dataclass(frozen=True, slots=True)
class OpenGroup:
    """Payouts held, unknown or unresolved now, counted by status, hold code and reason."""

    status: str
    hold_code: str | None
    reason: str | None
    payouts: int


@dataclass(frozen=True, slots=True)
class OpenPayout:
    """One payout held, unknown or unresolved now."""

    id: int
    payee: str
    rail: str
    status: str
    hold_code: str | None
    reason: str | None
    minor: int
    currency: str
    since: datetime

    @property
    def amount(self) -> Decimal:
        return _amount(self.minor, self.currency)


@dataclass(frozen=True, slots=True)
class HeldRewards:
    """Rewards held now with one hold code, in one currency."""

    hold_code: str | None
    currency: str
    rewards: int
    minor: int

    @property
    def amount(self) -> Decimal:
        return _amount(self.minor, self.currency)


@dataclass(frozen=True, slots=True)
class Revenue:
    """Deals of one program or partner (``group``) that occurred in the period and produced live rewards: their
    revenue in one currency against the rewards' cost in one currency."""

    group: str
    revenue_currency: str
    revenue: Decimal
    cost_currency: str
    cost_minor: int
    deals: int

    @property
    def cost(self) -> Decimal:
        return _amount(self.cost_minor, self.cost_currency)

    @property
    def per_revenue(self) -> Decimal | None:
        """Cost per one unit of revenue (four decimals), when both are in the same currency and revenue is not 0."""
        if self.cost_currency != self.revenue_currency or not self.revenue:
            return None
        return (self.cost / self.revenue).quantize(Decimal("0.0001"))


OPEN_STATUSES = (PayoutStatus.HELD, PayoutStatus.UNKNOWN, PayoutStatus.UNRESOLVED)
OPEN_LISTED = 200
"""The most open payouts :func:`kpis` lists (newest first); the counts cover them all."""
OPEN_REASONS = 50
"""The most (status, hold code, reason) groups of open payouts kept, the largest first."""


@dataclass(frozen=True, slots=True)
class Kpis:
    """Every figure of one period (see the module's docstring); ``as_of`` is when they were read. Lists are sorted
    by their groups (program, month, currency ...) unless said otherwise."""

    period: Period
    as_of: datetime
    accrued: list[Flow] = field(default_factory=list)
    approved: list[Flow] = field(default_factory=list)
    paid: list[Flow] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    funds: list[Fund] = field(default_factory=list)
    funds_at: datetime | None = None
    payouts: list[PayoutGroup] = field(default_factory=list)
    rates: list[RailRate] = field(default_factory=list)  # every rail first (rail None), then by rail
    timing: list[Timing] = field(default_factory=list)  # all programs first (program None), then by program
    open_by_code: list[OpenGroup] = field(default_factory=list)  # by status and hold code (reason None)
    open_by_reason: list[OpenGroup] = field(default_factory=list)  # the largest first, at most OPEN_REASONS
    open_payouts: list[OpenPayout] = field(default_factory=list)  # the newest first, at most OPEN_LISTED
    held_rewards: list[HeldRewards] = field(default_factory=list)
    revenue_by_program: list[Revenue] = field(default_factory=list)
    revenue_by_partner: list[Revenue] = field(default_factory=list)

    @property
    def open_total(self) -> int:
        """How many payouts are held, unknown or unresolved now."""
        return sum(g.payouts for g in self.open_by_code)

    def flows(self) -> list[Flow]:
        """Accrued, approved and paid together."""
        return [*self.accrued, *self.approved, *self.paid]

    def currencies(self) -> list[str]:
        """The currencies of accrued, approved and paid rewards, sorted."""
        return sorted({f.currency for f in self.flows()})

    def totals(self, measure: str) -> dict[str, tuple[int, Decimal]]:
        """currency -> (rewards, amount) of one measure (``accrued``, ``approved``, ``paid``) over the period."""
        found: dict[str, list[int]] = {}
        for f in self.flows():
            if f.measure == measure:
                count = found.setdefault(f.currency, [0, 0])
                count[0] += f.rewards
                count[1] += f.minor
        return {c: (n, _amount(minor, c)) for c, (n, minor) in sorted(found.items())}


def _amount(minor: int, currency: str) -> Decimal:
    try:
        return from_minor(minor, currency)
    except InvalidRecord:  # not a payable currency (cannot be stored, but never fail a view on it)
        return Decimal(minor)


def _percent(share: Decimal) -> Decimal:
    return (share * 100).quantize(Decimal("0.1"))


# ------------------------------------------------------------------------------------------------------ queries


def _month(conn: Connection, moment: Any) -> ColumnElement[str]:
    """``YYYY-MM`` (UTC) of a stored time, computed by the database."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", moment), "YYYY-MM")
    return func.strftime("%Y-%m", moment)  # SQLite stores UTC text


def _seconds(conn: Connection, later: Any, earlier: Any) -> ColumnElement[int]:
    """Whole seconds from ``earlier`` to ``later``, computed by the database."""
    if conn.dialect.name == "postgresql":
        return cast(func.round(extract("epoch", later - earlier)), BigInteger)
    return cast(func.round((func.julianday(later) - func.julianday(earlier)) * 86400.0), Integer)


_FRACTION = 18  # event amounts have at most 18 decimals (payhub.pipeline.ingest.MAX_DECIMALS)


def _decimal_sum(conn: Connection, text: Any) -> list[ColumnElement[Any]]:
    """Columns whose values :func:`_decimal_of` turns into the exact sum of the decimal texts ``text`` (plain,
    non-negative, as ingest stores event amounts): PostgreSQL sums NUMERIC; SQLite, which has no exact decimal type,
    sums the integer part and the fraction as two integers of nine digits each."""
    if conn.dialect.name == "postgresql":
        return [func.sum(cast(text, Numeric))]
    dot = func.instr(text + ".", ".")
    digits = func.substr(func.substr(text, dot + 1) + "0" * _FRACTION, 1, _FRACTION)
    return [func.sum(cast(func.substr(text, 1, dot - 1), Integer)),
            func.sum(cast(func.substr(digits, 1, 9), Integer)),
            func.sum(cast(func.substr(digits, 10, 9), Integer))]


def _decimal_of(values: Sequence[Any], currency: str) -> Decimal:
    """The exact sum from the columns of :func:`_decimal_sum`, with the currency's minor units and any further
    decimals that are not zero (the same text on both databases)."""
    if len(values) == 1:
        total = Decimal(values[0] or 0)
    else:
        whole, high, low = (int(v or 0) for v in values)
        total = Decimal(whole) + Decimal(high).scaleb(-9) + Decimal(low).scaleb(-_FRACTION)
    try:
        places = minor_units(currency)
    except InvalidRecord:
        places = 0
    exponent = total.normalize().as_tuple().exponent
    needed = max(places, -exponent if isinstance(exponent, int) else 0)
    return total.quantize(Decimal(1).scaleb(-needed))


def _within(column: Any, period: Period) -> ColumnElement[bool]:
    return and_(column >= period.start, column < period.end)


_r, _e, _p, _i = tables.rewards, tables.events, tables.payouts, tables.payout_items
_LIVE = and_(_r.c.kind != RewardKind.WITHHOLDING, _r.c.status != RewardStatus.CANCELLED)


def _flows(conn: Connection, measure: Literal["accrued", "approved", "paid"], rows: Any) -> list[Flow]:
    """Group ``rows`` (a subquery of program, at, currency, minor) by program, month and currency."""
    inner = select(rows.c.program, _month(conn, rows.c.at).label("month"), rows.c.currency, rows.c.minor).subquery()
    query = (select(inner.c.program, inner.c.month, inner.c.currency, func.count(), func.sum(inner.c.minor))
             .group_by(inner.c.program, inner.c.month, inner.c.currency)
             .order_by(inner.c.program, inner.c.month, inner.c.currency))
    return [Flow(measure, program, month, currency, int(n), int(minor or 0))
            for program, month, currency, n, minor in conn.execute(query)]


def accrued_and_approved(conn: Connection, period: Period) -> tuple[list[Flow], list[Flow]]:
    """Rewards created in the period (accrued), and rewards whose approval completed in the period (approved: at
    creation when they need none), by program, month and currency. One pass over the rewards created in the period
    gives the accrued and those approved at creation; the approvals give the others."""
    inner = (select(_month(conn, _r.c.created_at).label("month"), _r.c.program, _r.c.currency,
                    _r.c.amount_minor.label("minor"), _r.c.approvals_needed.label("needed"))
             .where(_within(_r.c.created_at, period), _LIVE).subquery())
    at_once = inner.c.needed == 0
    query = (select(inner.c.month, inner.c.program, inner.c.currency, func.count(), func.sum(inner.c.minor),
                    func.sum(case((at_once, 1), else_=0)), func.sum(case((at_once, inner.c.minor), else_=0)))
             .group_by(inner.c.month, inner.c.program, inner.c.currency))  # month first: a plain scan, no index
    accrued: list[Flow] = []
    approved: dict[tuple[str, str, str], tuple[int, int]] = {}
    for month, program, currency, n, minor, n_at_once, minor_at_once in conn.execute(query):
        accrued.append(Flow("accrued", program, month, currency, int(n), int(minor or 0)))
        if n_at_once:
            approved[(program, month, currency)] = (int(n_at_once), int(minor_at_once or 0))
    a = tables.approvals
    given = (select(a.c.reward_id, func.max(a.c.approved_at).label("at"), func.count().label("n"))
             .group_by(a.c.reward_id).subquery())
    by_people = (select(_r.c.program, given.c.at, _r.c.currency, _r.c.amount_minor.label("minor"))
                 .select_from(_r.join(given, given.c.reward_id == _r.c.id))
                 .where(_r.c.approvals_needed > 0, given.c.n >= _r.c.approvals_needed, _within(given.c.at, period),
                        _LIVE).subquery())
    for f in _flows(conn, "approved", by_people):
        n, minor = approved.get((f.program, f.month, f.currency), (0, 0))
        approved[(f.program, f.month, f.currency)] = (n + f.rewards, minor + f.minor)
    accrued.sort(key=lambda f: (f.program, f.month, f.currency))
    return accrued, [Flow("approved", program, month, currency, n, minor)
                     for (program, month, currency), (n, minor) in sorted(approved.items())]


def _budget_sections(conn: Connection, programs: Mapping[str, ProgramSection] | None) -> dict[str, BudgetSettings]:
    """program -> its budget: each program's latest stored version says, unless ``programs`` (the settings) names
    the program, whose section then says (a program the settings no longer name keeps the budget it last had)."""
    v = tables.program_versions
    latest = select(v.c.program, func.max(v.c.version).label("version")).group_by(v.c.program).subquery()
    found: dict[str, BudgetSettings] = {}
    for name, params in conn.execute(select(v.c.program, v.c.params).join(
            latest, and_(latest.c.program == v.c.program, latest.c.version == v.c.version))):
        try:
            budget = json.loads(params).get("budget")
            if budget:
                found[name] = BudgetSettings.model_validate(budget)
        except (ValueError, AttributeError):  # a version stored by an older payhub: no budget read from it
            continue
    for name, section in (programs or {}).items():
        if section.budget is not None:
            found[name] = section.budget
        else:
            found.pop(name, None)
    return dict(sorted(found.items()))


def budgets(conn: Connection, period: Period,
            programs: Mapping[str, ProgramSection] | None = None) -> list[Budget]:
    """Each budget pool of the calendar periods the period overlaps (every pool of a ``period = "program"``
    budget), with its use; a per-partner budget has one pool per partner that drew on it."""
    found: list[Budget] = []
    used_now = not_(and_(_r.c.status == RewardStatus.HELD, _r.c.hold_code == HoldCode.BUDGET))
    partners: list[str] | None = None
    for program, budget in _budget_sections(conn, programs).items():
        labels = ["all"] if budget.period == "program" else period.labels(budget.period)
        keys = [f"{program}:{label}" for label in labels]
        if budget.per == "program":
            pools = keys
        else:  # one pool per partner (program:label:partner), of the partners events name
            if partners is None:
                partners = list(conn.execute(select(_e.c.partner_id).distinct()
                                             .where(_e.c.partner_id.is_not(None))).scalars())
            pools = [f"{key}:{partner}" for key in keys for partner in partners]
        limit = to_minor(quantize(budget.amount, budget.currency), budget.currency)  # as the pipeline compares
        seen = set()
        for chunk in in_chunks(pools):
            query = (select(_r.c.budget_key, _r.c.currency,
                            func.sum(case((used_now, _r.c.amount_minor), else_=0)),
                            func.sum(case((used_now, 0), else_=_r.c.amount_minor)),
                            func.sum(case((used_now, 0), else_=1)))
                     .where(_r.c.budget_key.in_(chunk), _r.c.status != RewardStatus.CANCELLED)
                     .group_by(_r.c.budget_key, _r.c.currency))
            for key, currency, used, held, held_n in conn.execute(query):
                label, partner = _pool_parts(key, program, budget.per)
                seen.add(key)
                found.append(Budget(program, key, label, partner, currency,
                                    limit if currency == budget.currency else None, int(used or 0), int(held or 0),
                                    int(held_n or 0)))
        if budget.per == "program":  # pools nothing drew on yet: their whole limit is left
            found += [Budget(program, key, label, None, budget.currency, limit, 0, 0, 0)
                      for key, label in zip(keys, labels, strict=True) if key not in seen]
    found.sort(key=lambda b: (b.program, b.period, b.partner or "", b.currency))
    return found


def _pool_parts(key: str, program: str, per: str) -> tuple[str, str | None]:
    rest = key[len(program) + 1:]
    if per == "program":
        return rest, None
    label, _sep, partner = rest.partition(":")
    return label, partner


def funds(conn: Connection, period: Period) -> tuple[datetime, list[Fund]]:
    """Each fund program and unit at the period's end (now, if sooner), summed over holders
    (:func:`payhub.reports.funds` computes each fund, oldest credits spent first)."""
    at = min(period.end - timedelta(microseconds=1), utcnow())
    summed: dict[tuple[str, str], list[Any]] = {}
    for fund in reports.funds(conn, at=at):
        row = summed.setdefault((fund["program"], fund["unit"]), [0, Decimal(0), Decimal(0), Decimal(0), Decimal(0)])
        row[0] += 1
        for index, name in enumerate(("credited", "spent", "expired", "balance"), start=1):
            row[index] += Decimal(fund[name])
    return at, [Fund(program, unit, n, credited, spent, expired, balance)
                for (program, unit), (n, credited, spent, expired, balance) in sorted(summed.items())]


def payouts(conn: Connection, period: Period) -> list[PayoutGroup]:
    """Payouts created in the period by rail, status and currency."""
    query = (select(_p.c.rail, _p.c.status, _p.c.currency, func.count(), func.sum(_p.c.amount_minor))
             .where(_within(_p.c.created_at, period))
             .group_by(_p.c.rail, _p.c.status, _p.c.currency).order_by(_p.c.rail, _p.c.status, _p.c.currency))
    return [PayoutGroup(rail, status, currency, int(n), int(minor or 0))
            for rail, status, currency, n, minor in conn.execute(query)]


def rates(groups: Iterable[PayoutGroup]) -> list[RailRate]:
    """The success rate of every rail together (first, rail None) and of each rail, from :func:`payouts`."""
    counts: dict[str | None, list[int]] = {None: [0, 0, 0, 0, 0]}
    for g in groups:
        for rail in (None, g.rail):
            row = counts.setdefault(rail, [0, 0, 0, 0, 0])
            if g.status in DELIVERED:
                row[0] += g.payouts
                row[1] += g.payouts if g.status == PayoutStatus.PAID else 0
            elif g.status in FAILED:
                row[2] += g.payouts
            elif g.status == PayoutStatus.CANCELLED:
                row[4] += g.payouts
            else:
                row[3] += g.payouts
    ordered = [None, *sorted(r for r in counts if r is not None)]
    return [RailRate(rail, *counts[rail]) for rail in ordered]


PERCENTILES = (50, 95)


def _ceil_rank(p: int, n: Any) -> Any:
    """The nearest rank of percentile ``p`` among ``n`` sorted values, ceil(p/100 * n), in integers."""
    return (n * p + 99) // 100


def paid_and_timing(conn: Connection, period: Period) -> tuple[list[Flow], list[Timing]]:
    """Rewards in payouts that became paid in the period (in the payout's currency, by program and month), and the
    p50 and p95 of the time from each one's event to that moment, overall and by program.

    One statement: the paid rewards are read once (a common table expression) and grouped for the sums, counted
    and ranked for the percentiles (window functions), so that only the rows at the percentiles' ranks come back.
    """
    no_text = cast(null(), String)
    # every part's rows: (part, program, month or rank, currency, count, amount or seconds)
    paid_rows = (select(_r.c.program, _month(conn, _p.c.updated_at).label("month"), _p.c.currency,
                        _i.c.amount_minor.label("minor"),
                        _seconds(conn, _p.c.updated_at, _e.c.occurred_at).label("s"))
                 .select_from(_p.join(_i, _i.c.payout_id == _p.c.id).join(_r, _r.c.id == _i.c.reward_id)
                              .join(_e, _e.c.id == _r.c.event_id))
                 .where(_p.c.status == PayoutStatus.PAID, _within(_p.c.updated_at, period),
                        _r.c.kind != RewardKind.WITHHOLDING).cte("paid_rows"))
    timed = paid_rows.c.s.is_not(None)
    sums = (select(literal(0).label("part"), paid_rows.c.program, paid_rows.c.month, paid_rows.c.currency,
                   func.count().label("n"), func.sum(paid_rows.c.minor).label("v"))
            .group_by(paid_rows.c.program, paid_rows.c.month, paid_rows.c.currency))
    counted = (select(paid_rows.c.program, func.count().label("n")).where(timed)
               .group_by(paid_rows.c.program).subquery())
    by_program = (select(paid_rows.c.program, paid_rows.c.s, func.row_number().over(
        partition_by=paid_rows.c.program, order_by=paid_rows.c.s).label("r")).where(timed).subquery())
    program_ranks = (select(literal(1), by_program.c.program, by_program.c.r.cast(String), no_text, counted.c.n,
                            by_program.c.s)
                     .select_from(by_program.join(counted, counted.c.program == by_program.c.program))
                     .where(or_(*(by_program.c.r == _ceil_rank(p, counted.c.n) for p in PERCENTILES))))
    total = select(func.count()).where(timed).scalar_subquery()
    overall = select(paid_rows.c.s, func.row_number().over(order_by=paid_rows.c.s).label("r")).where(
        timed).subquery()
    overall_ranks = (select(literal(2), no_text, overall.c.r.cast(String), no_text, total, overall.c.s)
                     .where(or_(*(overall.c.r == _ceil_rank(p, total) for p in PERCENTILES))))
    flows: list[Flow] = []
    counts: dict[str | None, int] = {}
    at_rank: dict[tuple[str | None, int], timedelta] = {}
    for part, program, month, currency, n, value in conn.execute(union_all(sums, program_ranks, overall_ranks)):
        if part == 0:
            flows.append(Flow("paid", program, month, currency, int(n), int(value or 0)))
            continue
        key = program if part == 1 else None
        counts[key] = int(n)
        for p in PERCENTILES:
            if int(month) == _ceil_rank(p, int(n)):
                at_rank[(key, p)] = timedelta(seconds=int(value))
    flows.sort(key=lambda f: (f.program, f.month, f.currency))
    ordered: list[str | None] = [None, *sorted(k for k in counts if k is not None)]
    return flows, [Timing(key, counts.get(key, 0), at_rank.get((key, 50)), at_rank.get((key, 95)))
                   for key in ordered]


def open_payouts(conn: Connection) -> tuple[list[OpenGroup], list[OpenGroup], list[OpenPayout]]:
    """Payouts held, unknown or unresolved now: counted by status and hold code (every group), counted by status,
    hold code and reason (the :data:`OPEN_REASONS` largest groups), and the :data:`OPEN_LISTED` newest."""
    where = _p.c.status.in_(OPEN_STATUSES)
    n = func.count()
    by_code = [OpenGroup(status, code, None, int(count)) for status, code, count in conn.execute(
        select(_p.c.status, _p.c.hold_code, n).where(where).group_by(_p.c.status, _p.c.hold_code)
        .order_by(_p.c.status, _p.c.hold_code))]
    by_reason = [OpenGroup(status, code, reason, int(count)) for status, code, reason, count in conn.execute(
        select(_p.c.status, _p.c.hold_code, _p.c.reason, n).where(where)
        .group_by(_p.c.status, _p.c.hold_code, _p.c.reason)
        .order_by(n.desc(), _p.c.status, _p.c.hold_code, _p.c.reason).limit(OPEN_REASONS))]
    listed = [OpenPayout(r.id, r.payee_id, r.rail, r.status, r.hold_code, r.reason, int(r.amount_minor), r.currency,
                         r.updated_at)
              for r in conn.execute(select(_p.c.id, _p.c.payee_id, _p.c.rail, _p.c.status, _p.c.hold_code,
                                           _p.c.reason, _p.c.amount_minor, _p.c.currency, _p.c.updated_at)
                                    .where(where).order_by(_p.c.id.desc()).limit(OPEN_LISTED))]
    return by_code, by_reason, listed


def held_rewards(conn: Connection) -> list[HeldRewards]:
    """Rewards held now, by hold code and currency."""
    query = (select(_r.c.hold_code, _r.c.currency, func.count(), func.sum(_r.c.amount_minor))
             .where(_r.c.status == RewardStatus.HELD)
             .group_by(_r.c.hold_code, _r.c.currency).order_by(_r.c.hold_code, _r.c.currency))
    return [HeldRewards(code, currency, int(n), int(minor or 0)) for code, currency, n, minor in conn.execute(query)]


def revenue(conn: Connection, period: Period) -> tuple[list[Revenue], list[Revenue]]:
    """Partner-sourced revenue against incentive cost, by program and by partner (the event's ``partner_id``, else
    its payee): the deals that occurred in the period are joined to their live rewards once (a common table
    expression), then grouped both ways; a deal counts in a group when its rewards there add up to more than 0."""
    partner = func.coalesce(_e.c.partner_id, _e.c.payee_id)
    # one row per deal, program and cost currency: the deal's amount once, the program's rewards on it summed.
    # Grouped by the event's primary key only (with the program and currency): its other columns depend on it.
    deals = (select(_e.c.id, _r.c.program, _r.c.currency.label("cost_currency"), partner.label("partner"),
                    _e.c.amount, _e.c.currency.label("revenue_currency"),
                    func.sum(_r.c.amount_minor).label("cost"))
             .select_from(_e.join(_r, _r.c.event_id == _e.c.id))
             .where(_e.c.status == EventStatus.CALCULATED, _within(_e.c.occurred_at, period),
                    _e.c.amount.is_not(None), _e.c.currency.is_not(None), _LIVE)
             .group_by(_e.c.id, _r.c.program, _r.c.currency).cte("deals"))
    per_deal = (select(deals.c.id, deals.c.cost_currency, func.max(deals.c.partner).label("partner"),
                       func.max(deals.c.amount).label("amount"),
                       func.max(deals.c.revenue_currency).label("revenue_currency"),
                       func.sum(deals.c.cost).label("cost"))
                .group_by(deals.c.id, deals.c.cost_currency).subquery())
    views = []
    for view, rows, group in ((0, deals, deals.c.program), (1, per_deal, per_deal.c.partner)):
        views.append(select(literal(view).label("view"), group.label("grp"), rows.c.revenue_currency,
                            rows.c.cost_currency, func.count(), func.sum(rows.c.cost),
                            *_decimal_sum(conn, rows.c.amount))
                     .where(rows.c.cost > 0).group_by(group, rows.c.revenue_currency, rows.c.cost_currency))
    found: tuple[list[Revenue], list[Revenue]] = ([], [])
    for row in conn.execute(union_all(*views)):
        found[int(row[0])].append(Revenue(row[1] if row[1] is not None else "", row[2], _decimal_of(row[6:], row[2]),
                                          row[3], int(row[5] or 0), int(row[4])))
    for rows_found in found:
        rows_found.sort(key=lambda r: (r.group, r.revenue_currency, r.cost_currency))
    return found


def kpis(conn: Connection, period: Period, *, programs: Mapping[str, ProgramSection] | None = None) -> Kpis:
    """Every figure of ``period`` (see the module's docstring). ``programs`` gives the budgets (the settings'
    ``programs``); without it, each program's latest stored version does."""
    as_of = utcnow()
    by_program, by_partner = revenue(conn, period)
    groups = payouts(conn, period)
    funds_at, fund_rows = funds(conn, period)
    by_code, by_reason, listed = open_payouts(conn)
    accrued, approved = accrued_and_approved(conn, period)
    paid, timed = paid_and_timing(conn, period)
    return Kpis(period=period, as_of=as_of, accrued=accrued, approved=approved,
                paid=paid, budgets=budgets(conn, period, programs), funds=fund_rows, funds_at=funds_at,
                payouts=groups, rates=rates(groups), timing=timed, open_by_code=by_code,
                open_by_reason=by_reason, open_payouts=listed, held_rewards=held_rewards(conn),
                revenue_by_program=by_program, revenue_by_partner=by_partner)


# ------------------------------------------------------------------------------------------------------ figures

Cell = str | int | Decimal | datetime | None
"""A figure's cell: text, a count, an exact amount or ratio, a time, or nothing."""

ChartKind = Literal["bar", "line", "doughnut"]
CHART_ROWS = 30
"""The most rows a chart draws (the largest or first ones); its table and CSV have every row."""
LABEL_CHARS = 60
"""Longer labels are cut in charts (tables and CSV keep them whole)."""


@dataclass(frozen=True, slots=True)
class Figure:
    """One chart or table of the KPIs, shown by the console and written by ``payhub report kpi``.

    ``columns`` name the cells of each row; a chart (``kind`` set) draws the columns at ``charted`` as series over
    the rows, each row labelled by its first ``labels_from`` cells, at most :data:`CHART_ROWS` rows. ``rows``
    whole are its table and its CSV.
    """

    id: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    kind: ChartKind | None = None
    charted: tuple[int, ...] = ()
    labels_from: int = 1
    y_label: str = ""
    note: str = ""

    def label(self, row: Sequence[Cell]) -> str:
        """A row's label in a chart: its first cells that are not empty, joined, with control and format characters
        (bidi overrides, zero-width) made visible as escapes (:func:`payhub.termsafe.visible`: a chart cannot
        isolate them), cut to :data:`LABEL_CHARS`."""
        text = visible(" · ".join(_text(cell) for cell in row[:self.labels_from] if _text(cell)) or "(none)")
        return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"

    def drawn(self) -> list[tuple[Cell, ...]]:
        """The rows a chart draws."""
        return self.rows[:CHART_ROWS]

    def drawable(self) -> bool:
        """Whether there is a chart to draw: a kind, and a charted value that is not missing or zero."""
        return bool(self.kind) and any(isinstance(row[c], int | Decimal) and row[c] != 0
                                       for row in self.drawn() for c in self.charted)

    def chart(self) -> dict[str, Any]:
        """Chart.js data: ``labels`` and ``datasets`` (``label``, ``data``); amounts as exact decimal text, which
        Chart.js reads as numbers."""
        rows = self.drawn()
        return {"labels": [self.label(row) for row in rows],
                "datasets": [{"label": self.columns[c], "data": [_datum(row[c]) for row in rows]}
                             for c in self.charted]}

    def series(self) -> list[tuple[str, list[float | None]]]:
        """The charted columns as numbers for drawing only (matplotlib): never used for sums."""
        return [(self.columns[c], [None if _datum(row[c]) is None else float(row[c])  # type: ignore[arg-type]
                                   for row in self.drawn()]) for c in self.charted]

    def text_rows(self) -> list[list[str]]:
        """The rows as CSV writes them: amounts exact without separators, times ISO 8601 UTC."""
        return [[_text(cell) for cell in row] for row in self.rows]

    def shown_rows(self) -> list[list[tuple[str, bool]]]:
        """The rows as tables show them: each cell's text (amounts exact, grouped by thousands; times to the
        second, UTC) and whether it is a number (aligned right)."""
        return [[_shown_cell(cell) for cell in row] for row in self.rows]


def _datum(cell: Cell) -> str | int | None:
    if cell is None or isinstance(cell, int):
        return cell
    if isinstance(cell, Decimal):
        return str(cell)
    return None


def _text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, datetime):
        return isoformat(cell)
    return str(cell)


def _shown_cell(cell: Cell) -> tuple[str, bool]:
    if isinstance(cell, bool) or cell is None:
        return ("" if cell is None else str(cell)), False
    if isinstance(cell, int | Decimal):
        return f"{cell:,}", True
    if isinstance(cell, datetime):
        return isoformat(cell)[:19].replace("T", " ") + " UTC", False
    return cell, False


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _days(value: timedelta | None) -> Decimal | None:
    if value is None:
        return None
    return (Decimal(int(value.total_seconds())) / 86400).quantize(Decimal("0.01"))


def figures(k: Kpis) -> list[Figure]:
    """The charts and tables of ``k``, in the order the overview shows them; ids are unique and URL-safe."""
    found: list[Figure] = []
    flows = k.flows()
    measures = ("accrued", "approved", "paid")
    for currency in k.currencies():
        by_month: dict[tuple[str, str], int] = {}
        by_program: dict[tuple[str, str], int] = {}
        for f in flows:
            if f.currency == currency:
                by_month[(f.month, f.measure)] = by_month.get((f.month, f.measure), 0) + f.minor
                by_program[(f.program, f.measure)] = by_program.get((f.program, f.measure), 0) + f.minor
        months = sorted(set(k.period.months()) | {m for m, _ in by_month})
        programs = sorted({p for p, _ in by_program})
        found.append(Figure(
            f"flow-{_slug(currency)}", f"Accrued, approved and paid by month ({currency})", ("month", *measures),
            [(m, *(_amount(by_month.get((m, x), 0), currency) for x in measures)) for m in months],
            "bar", (1, 2, 3), y_label=currency))
        found.append(Figure(
            f"program-{_slug(currency)}", f"Accrued, approved and paid by program ({currency})",
            ("program", *measures),
            [(p, *(_amount(by_program.get((p, x), 0), currency) for x in measures)) for p in programs],
            "bar", (1, 2, 3), y_label=currency))
    found.append(Figure("flows", "Accrued, approved and paid by program and month",
                        ("measure", "program", "month", "currency", "rewards", "amount"),
                        [(f.measure, f.program, f.month, f.currency, f.rewards, f.amount) for f in flows]))
    pools = sorted(k.budgets, key=lambda b: (-(b.share if b.share is not None else Decimal(-1)), b.pool))
    found.append(Figure(
        "budgets", "Budgets: used against limit",
        ("program", "period", "partner", "currency", "limit", "used", "left", "used %", "held for it",
         "rewards held for it"),
        [(b.program, b.period, b.partner, b.currency, b.limit, b.used, b.left, b.share,
          _amount(b.held_minor, b.currency), b.held_rewards) for b in pools],
        "bar", (7,), labels_from=3, y_label="% of the limit used"))
    found.append(Figure(
        "funds", "Fund balances (co-op, MDF, points)",
        ("program", "unit", "holders", "credited", "spent", "expired", "balance"),
        [(f.program, f.unit, f.holders, f.credited, f.spent, f.expired, f.balance) for f in k.funds],
        note="" if k.funds_at is None else f"at {isoformat(k.funds_at)}"))
    statuses = sorted({g.status for g in k.payouts})
    rails = sorted({g.rail for g in k.payouts})
    counted = {(g.rail, g.status): 0 for g in k.payouts}
    for g in k.payouts:
        counted[(g.rail, g.status)] += g.payouts
    found.append(Figure("rail-status", "Payouts by rail and status", ("rail", *statuses),
                        [(rail, *(counted.get((rail, s), 0) for s in statuses)) for rail in rails],
                        "bar", tuple(range(1, len(statuses) + 1)), y_label="payouts"))
    found.append(Figure("rail-amounts", "Payouts by rail, status and currency",
                        ("rail", "status", "currency", "payouts", "amount"),
                        [(g.rail, g.status, g.currency, g.payouts, g.amount) for g in k.payouts]))
    found.append(Figure(
        "success", "Success rate by rail",
        ("rail", "delivered", "of which paid", "failed", "on the way", "cancelled", "success %"),
        [(r.rail or "all rails", r.delivered, r.paid, r.failed, r.pending, r.cancelled, r.rate) for r in k.rates],
        "bar", (6,), y_label="% delivered of ended"))
    found.append(Figure(
        "time-to-paid", "Time from CRM event to paid (days)", ("program", "rewards", "p50 days", "p95 days"),
        [(t.program or "all programs", t.rewards, _days(t.p50), _days(t.p95)) for t in k.timing if t.rewards],
        "bar", (2, 3), y_label="days"))
    found.append(Figure(
        "open-payouts", "Payouts held, unknown or unresolved now", ("status", "hold code", "payouts"),
        [(g.status, g.hold_code, g.payouts) for g in k.open_by_code], "doughnut", (2,), labels_from=2))
    found.append(Figure("open-reasons", "Open payouts by reason", ("status", "hold code", "reason", "payouts"),
                        [(g.status, g.hold_code, g.reason, g.payouts) for g in k.open_by_reason]))
    found.append(Figure(
        "open-list", "Open payouts, newest first",
        ("payout", "payee", "rail", "status", "hold code", "amount", "currency", "reason", "since"),
        [(o.id, o.payee, o.rail, o.status, o.hold_code, o.amount, o.currency, o.reason, o.since)
         for o in k.open_payouts],
        note=f"the newest {OPEN_LISTED}" if k.open_total > OPEN_LISTED else ""))
    found.append(Figure("held-rewards", "Rewards held now", ("hold code", "currency", "rewards", "amount"),
                        [(h.hold_code, h.currency, h.rewards, h.amount) for h in k.held_rewards]))
    columns = ("revenue currency", "revenue", "cost currency", "cost", "deals", "cost per 1 of revenue")
    for ident, title, rows, who in (
            ("revenue-program", "Partner-sourced revenue and incentive cost by program", k.revenue_by_program,
             "program"),
            ("revenue-partner", "Partner-sourced revenue and incentive cost by partner", k.revenue_by_partner,
             "partner")):
        ordered = rows if who == "program" else sorted(rows, key=lambda r: (-r.deals, r.group))
        found.append(Figure(
            ident, title, (who, *columns),
            [(r.group, r.revenue_currency, r.revenue, r.cost_currency, r.cost, r.deals, r.per_revenue)
             for r in ordered], "bar", (6,), labels_from=2, y_label="cost per 1 of revenue"))
    return found


@dataclass(frozen=True, slots=True)
class Tile:
    """One headline figure: a label, its values (one line each, e.g. one per currency) and a note."""

    label: str
    values: list[str]
    note: str = ""


def money_text(amount: Decimal, currency: str) -> str:
    """``12,345.60 USD``: exact, grouped by thousands."""
    return f"{amount:,} {currency}"


def duration_text(value: timedelta | None) -> str:
    """A duration for people: ``3 d 4 h``, ``5 h 20 min``, ``45 s``; ``-`` for none."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes} min"
    return f"{sign}{minutes} min {seconds} s" if minutes else f"{sign}{seconds} s"


def tiles(k: Kpis) -> list[Tile]:
    """The headline figures of ``k``."""
    found = []
    for measure in ("accrued", "approved", "paid"):
        totals = k.totals(measure)
        count = sum(n for n, _ in totals.values())
        found.append(Tile(measure.capitalize(), [money_text(a, c) for c, (_n, a) in totals.items()] or ["-"],
                          f"{count:,} rewards"))
    overall = k.rates[0] if k.rates else RailRate(None, 0, 0, 0, 0, 0)
    found.append(Tile("Success rate", [f"{overall.rate} %" if overall.rate is not None else "-"],
                      f"{overall.delivered:,} delivered, {overall.failed:,} failed"))
    first = k.timing[0] if k.timing else Timing(None, 0, None, None)
    found.append(Tile("Time to paid", [f"p50 {duration_text(first.p50)}", f"p95 {duration_text(first.p95)}"],
                      f"{first.rewards:,} rewards paid"))
    found.append(Tile("Open payouts", [f"{k.open_total:,}"], "held, unknown or unresolved now"))
    held = sum(h.rewards for h in k.held_rewards)
    found.append(Tile("Held rewards", [f"{held:,}"], "held now"))
    ratios = []
    summed: dict[str, list[Any]] = {}
    for r in k.revenue_by_partner:  # each deal has one partner: no deal counted twice
        if r.revenue_currency == r.cost_currency:
            row = summed.setdefault(r.revenue_currency, [Decimal(0), 0])
            row[0] += r.revenue
            row[1] += r.cost_minor
    for currency, (revenue_sum, cost_minor) in sorted(summed.items()):
        if revenue_sum:
            ratios.append(f"{(_amount(cost_minor, currency) / revenue_sum).quantize(Decimal('0.0001'))} per {currency}")
    found.append(Tile("Cost per revenue", ratios or ["-"], "incentive cost per unit of partner-sourced revenue"))
    return found
