"""The year-end tax report (docs/compliance.md#reporting-thresholds-and-year-end-reports).

Per payee and calendar year of payment, what payhub paid, by information return and box, in USD:

* a payout counts in the year it was first recorded ``sent`` or ``paid`` (UTC; its ``first_sent_at``, written in the
  transaction that moves it there and never removed by retention; for a payout sent before that column existed, its
  first ``payout.sent`` or ``payout.paid`` audit entry), if it is ``sent`` or ``paid`` now (a returned, failed or
  cancelled payout paid nothing); the event's date does not matter;
* each item counts in the box of its program (:func:`box_of`); a withholding line counts as federal income tax
  withheld (box 4) of the form its program reports on;
* payouts in other currencies are listed apart, gross (``other_currencies``) and withheld (``other_withheld``) per
  currency, neither converted nor counted against the threshold.

A payee is reportable on a form when its USD total there reaches the year's threshold (:func:`threshold`), or when
tax was withheld from it in any currency (backup withholding is reported whatever the amount). The report streams:
one payee at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, String, and_, cast, func, select, union_all

from payhub.clock import utcnow
from payhub.compliance.tax_boxes import FORMS, MISC, NEC, NONE, TaxReportError, box_of
from payhub.compliance.tax_rules import TaxProfile, decide, us_person
from payhub.db.schema import audit_log, payees, payout_items, payouts, program_versions, rewards
from payhub.money import from_minor
from payhub.settings import Settings, TaxSettings
from payhub.states import PayoutStatus, RewardKind

FIXED_THRESHOLDS = {2026: Decimal("2000")}
THROUGH_2025 = Decimal("600")
PAID_ACTIONS = ("payout.sent", "payout.paid")
__all__ = ["COLUMNS", "TaxReportError", "box_of", "check", "report", "threshold"]

COLUMNS = ["year", "payee", "name", "country", "form", "form_signed_on", "tin_kind", "tin_status", "form_problem",
           "reportable", "nec_box1", "nec_box4", "misc_box3", "misc_box4", "not_reported", "threshold",
           "other_currencies", "other_withheld", "warning"]
"""The report's columns (CSV header, JSON keys); amounts are USD decimal text, except ``other_currencies`` (gross
paid) and ``other_withheld`` (backup withholding) per currency, as ``1001 JPY 12.50 EUR``."""


def threshold(year: int, tax: TaxSettings) -> Decimal:
    """The reporting threshold in USD for payments made in ``year``: 600 through 2025, 2,000 in 2026, then
    ``[compliance.tax] thresholds``; raises TaxReportError naming the setting for a later year without one."""
    if year <= 2025:
        return THROUGH_2025
    if year in FIXED_THRESHOLDS:
        return FIXED_THRESHOLDS[year]
    if year in tax.thresholds:
        return Decimal(tax.thresholds[year])
    raise TaxReportError(f"no reporting threshold for {year}: set compliance.tax.thresholds.{year} (the USD amount "
                         "published for payments made that year)")


@dataclass(slots=True)
class _Totals:
    boxes: dict[str, Decimal]
    withheld: dict[str, Decimal]
    other: dict[str, Decimal]
    other_withheld: dict[tuple[str, str], Decimal]  # (box, currency) -> withheld, positive


def _paid_in(year: int) -> Any:
    """The ids (``payout_id``) of the payouts first recorded sent or paid in ``year``: by their ``first_sent_at``,
    which retention never removes; for a payout sent before that column existed (NULL), by its first
    ``payout.sent`` or ``payout.paid`` audit entry."""
    since, until = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    by_column = select(payouts.c.id.label("payout_id")).where(payouts.c.first_sent_at >= since,
                                                             payouts.c.first_sent_at < until)
    start, end = f"{year:04d}-01-01", f"{year + 1:04d}-01-01"
    first = func.min(audit_log.c.at)
    by_chain = (select(audit_log.c.subject_id).where(audit_log.c.subject_type == "payout",
                                                     audit_log.c.action.in_(PAID_ACTIONS))
                .group_by(audit_log.c.subject_id).having(and_(first >= start, first < end)))
    older = select(payouts.c.id).where(payouts.c.first_sent_at.is_(None), cast(payouts.c.id, String).in_(by_chain))
    return union_all(by_column, older)


def _programs_query(year: int) -> Any:
    paid = _paid_in(year).subquery()
    return (select(rewards.c.program).distinct()
            .select_from(payouts.join(paid, paid.c.payout_id == payouts.c.id)
                         .join(payout_items, payout_items.c.payout_id == payouts.c.id)
                         .join(rewards, rewards.c.id == payout_items.c.reward_id))
            .where(payouts.c.status.in_((PayoutStatus.SENT, PayoutStatus.PAID))))


def _sums_query(year: int) -> Any:
    paid = _paid_in(year).subquery()
    profile = (payees.c.name, payees.c.country, payees.c.tax_form, payees.c.form_signed_on, payees.c.tin_kind,
               payees.c.tin_status)
    return (select(payouts.c.payee_id, *profile, payouts.c.currency, rewards.c.program, rewards.c.kind,
                   func.sum(payout_items.c.amount_minor))
            .select_from(payouts.join(paid, paid.c.payout_id == payouts.c.id)
                         .join(payout_items, payout_items.c.payout_id == payouts.c.id)
                         .join(rewards, rewards.c.id == payout_items.c.reward_id)
                         .outerjoin(payees, payees.c.id == payouts.c.payee_id))
            .where(payouts.c.status.in_((PayoutStatus.SENT, PayoutStatus.PAID)))
            .group_by(payouts.c.payee_id, *profile, payouts.c.currency, rewards.c.program, rewards.c.kind)
            .order_by(payouts.c.payee_id, payouts.c.currency, rewards.c.program, rewards.c.kind))


def check(conn: Connection, settings: Settings, year: int) -> tuple[Decimal, dict[str, str]]:
    """The year's threshold and the box of each program paid in it; raises TaxReportError naming every setting the
    report needs and does not have."""
    problems: list[str] = []
    limit = Decimal(0)
    try:
        limit = threshold(year, settings.compliance.tax)
    except TaxReportError as exc:
        problems.append(str(exc))
    boxes: dict[str, str] = {}
    for program in conn.execute(_programs_query(year)).scalars():
        try:
            boxes[program] = box_of(program, settings, None if program in settings.programs
                                    else _last_calculator(conn, program))
        except TaxReportError as exc:
            problems.append(str(exc))
    if problems:
        raise TaxReportError("; ".join(problems))
    return limit, boxes


def _last_calculator(conn: Connection, program: str) -> str | None:
    """The calculator of the last recorded version of ``program`` (one no longer in the settings)."""
    return conn.execute(select(program_versions.c.calculator).where(program_versions.c.program == program)
                        .order_by(program_versions.c.version.desc()).limit(1)).scalar()


def report(conn: Connection, settings: Settings, year: int, everyone: bool = False) -> Iterator[dict[str, Any]]:
    """The report's rows (:data:`COLUMNS`), one per payee paid in ``year``, by payee id: those reportable on a
    form, missing a valid form, or warned about (every payee paid with ``everyone``). Raises TaxReportError first
    (before any row) when a setting the report needs is missing."""
    limit, boxes = check(conn, settings, year)
    return _rows(conn, settings.compliance.tax, year, limit, boxes, everyone)


def _rows(conn: Connection, tax: TaxSettings, year: int, limit: Decimal, boxes: dict[str, str],
          everyone: bool) -> Iterator[dict[str, Any]]:
    on = min(utcnow().date(), date(year, 12, 31))
    for payee_id, rows in groupby(conn.execute(_sums_query(year)), key=lambda row: row[0]):
        totals = _Totals(defaultdict(Decimal), defaultdict(Decimal), defaultdict(Decimal), defaultdict(Decimal))
        first = None
        for row in rows:
            first = first or row
            amount = from_minor(int(row[-1]), row.currency)
            box = boxes[row.program]
            if row.currency != "USD":
                if row.kind == RewardKind.WITHHOLDING:
                    totals.other_withheld[(box, row.currency)] -= amount
                else:
                    totals.other[row.currency] += amount
                continue
            if row.kind == RewardKind.WITHHOLDING:
                totals.withheld[box] -= amount
            else:
                totals.boxes[box] += amount
        assert first is not None
        line = _line(year, payee_id, first, totals, limit, tax, on)
        if everyone or line["reportable"] or line["form_problem"] or line["warning"]:
            yield line


def _line(year: int, payee_id: str, first: Any, totals: _Totals, limit: Decimal, tax: TaxSettings,
          on: date) -> dict[str, Any]:
    profile = TaxProfile(payee_id, first.country, first.tax_form, first.form_signed_on, first.tin_status)
    verdict = decide(profile, tax, on)
    problem = "" if verdict.action == "ok" else verdict.reason
    us = us_person(profile) or profile.form == "W-9"
    reportable = [FORMS[box] for box in (NEC, MISC) if us and (totals.boxes[box] >= limit or totals.withheld[box] > 0
                                                                or _withheld_in(totals, box))]
    warning = ""
    reached = max(totals.boxes[NEC], totals.boxes[MISC])
    if problem and reached >= limit * tax.warn_ratio:
        share = (reached / limit * 100).quantize(Decimal(1))
        warning = (f"{_usd(reached)} USD paid in {year} is {share}% of the {_usd(limit)} USD threshold and the payee "
                   "has no valid form")
    return {
        "year": year, "payee": payee_id, "name": first.name, "country": first.country, "form": first.tax_form,
        "form_signed_on": first.form_signed_on.isoformat() if first.form_signed_on else None,
        "tin_kind": first.tin_kind, "tin_status": first.tin_status, "form_problem": problem,
        "reportable": " ".join(reportable), "nec_box1": _usd(totals.boxes[NEC]), "nec_box4": _usd(totals.withheld[NEC]),
        "misc_box3": _usd(totals.boxes[MISC]), "misc_box4": _usd(totals.withheld[MISC]),
        "not_reported": _usd(totals.boxes[NONE] - totals.withheld[NONE]), "threshold": _usd(limit),
        "other_currencies": _per_currency(totals.other.items()),
        "other_withheld": _per_currency((code, amount) for (_, code), amount in totals.other_withheld.items()),
        "warning": warning,
    }


def _withheld_in(totals: _Totals, box: str) -> bool:
    """True when tax was withheld in a currency other than USD from payments reported in ``box``."""
    return any(amount > 0 for (where, _), amount in totals.other_withheld.items() if where == box)


def _per_currency(amounts: Iterable[tuple[str, Decimal]]) -> str:
    """``1001 JPY 12.50 EUR``: the non-zero amounts summed per currency, by currency code."""
    summed: dict[str, Decimal] = defaultdict(Decimal)
    for code, amount in amounts:
        summed[code] += amount
    return " ".join(f"{amount} {code}" for code, amount in sorted(summed.items()) if amount)


def _usd(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))
