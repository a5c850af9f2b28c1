"""What a payout's statement says: the payee, the payout and one line per payout item, read from the payout's
provenance (:func:`payhub.provenance.explain`), checked to add up before anything is shown or sent.

Each line names the reward's CRM record (source, object type and id, event key), its program and version, its
description, its gross amount in its own currency, the caps that cut it, the earlier rewards a clawback nets
against, the reward a withholding line withholds from, and the FX conversion into the payout's currency (rate,
source, rate date, original amount). :func:`build` refuses (:class:`StatementMismatch`) a statement whose lines
do not add up exactly, in integer minor units, to the payout's amount, or whose lines do not match their rewards
(an unconverted line of another amount or currency, a conversion that does not give the line's amount, a payout
whose item count differs).

Text that came from a CRM or a plugin (names, descriptions, ids, references) is made visible
(:func:`payhub.termsafe.visible`: control and format characters such as bidi overrides are shown as escapes) and
cut to a bounded length here, once, so that every rendering (HTML, PDF, the console, the mail's text part) shows
the same thing; the HTML templates escape it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy import Connection, or_, select

from payhub.api import FxRate
from payhub.clock import parse_instant
from payhub.db.schema import payees, payout_items, payouts, rewards
from payhub.errors import PayhubError
from payhub.fx import convert
from payhub.money import to_minor
from payhub.provenance import ItemView, PayoutExplanation, explain
from payhub.reports import amount_text
from payhub.states import PayoutStatus, RewardKind
from payhub.termsafe import visible

MAX_TEXT = 300
"""The most characters of one CRM or plugin text shown (a description, a name, an id); longer text is cut."""
MAX_DESCRIPTION = 500
"""The most characters of a reward's description shown."""
STATEMENT_STATUSES = frozenset({PayoutStatus.SENT, PayoutStatus.PAID})
"""A payout has a statement once it is in one of these statuses."""

LineKind = Literal["reward", "clawback", "withholding"]


class StatementError(PayhubError):
    """A statement cannot be made for the payout."""


class StatementNotFound(StatementError):
    """No payout has that id."""


class StatementMismatch(StatementError):
    """The payout's lines do not add up to its amount, or a line does not match its reward: no statement is made."""


def shown(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as text for a statement: cut to ``limit`` characters (with ``…``), control and format
    characters shown as escapes."""
    text = "" if value is None else str(value)
    cut = len(text) > limit
    text = visible(text[:limit])
    return text + "…" if cut else text


@dataclass(frozen=True, slots=True)
class Cap:
    """A cap that cut a reward: its name, limit, what was used before, and the amount cut."""

    name: str
    limit: str
    used: str
    cut: str


@dataclass(frozen=True, slots=True)
class Fx:
    """The conversion of a line into the payout's currency."""

    from_amount: str
    from_currency: str
    rate: str
    rate_type: str
    rate_date: str
    date_used: str
    source: str


@dataclass(frozen=True, slots=True)
class Netted:
    """An earlier reward of the same CRM record that a clawback line nets against."""

    reward_id: int
    amount: str
    currency: str


@dataclass(frozen=True, slots=True)
class Line:
    """One payout item. ``gross`` is the reward's own amount in ``gross_currency``; ``amount_minor`` its amount in
    the payout's currency (after FX), which the total adds up."""

    reward_id: int
    kind: LineKind
    source: str
    object_type: str
    object_id: str
    event_key: str
    occurred_at: datetime | None
    program: str
    program_version: int
    description: str
    gross: str
    gross_currency: str
    earned: str | None  # before caps, when a cap cut it
    caps: tuple[Cap, ...]
    nets_against: tuple[Netted, ...]  # a clawback's earlier rewards on the record
    taken_back: str | None  # what a clawback takes back, of ``granted``
    granted: str | None
    withholds: int | None  # the reward a withholding line withholds from
    withholding_rate: str | None
    withheld_from: str | None  # that reward's gross
    fx: Fx | None
    amount_minor: int
    amount: str


@dataclass(frozen=True, slots=True)
class Statement:
    """A payout's statement. Amounts are exact text in ``currency``; ``*_minor`` are integer minor units."""

    payout_id: int
    idempotency_key: str
    status: str
    rail: str
    provider_ref: str | None
    currency: str
    created_at: datetime
    sent_at: datetime | None
    paid_at: datetime | None
    payee_id: str
    payee_name: str
    payee_erased_at: datetime | None
    lines: tuple[Line, ...]
    rewards_minor: int
    clawbacks_minor: int
    withholding_minor: int
    total_minor: int

    def text(self, minor: int) -> str:
        """``minor`` units of the statement's currency as exact text."""
        return amount_text(minor, self.currency)

    @property
    def total(self) -> str:
        return self.text(self.total_minor)

    @property
    def rewards(self) -> str:
        return self.text(self.rewards_minor)

    @property
    def clawbacks(self) -> str:
        return self.text(self.clawbacks_minor)

    @property
    def withholding(self) -> str:
        return self.text(self.withholding_minor)

    @property
    def deliverable(self) -> bool:
        """Whether the payout is sent or paid (the statuses a statement is delivered in)."""
        return self.status in STATEMENT_STATUSES


def _decimal(value: Any) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def _to_minor(text: str, currency: str) -> int | None:
    """Exact decimal ``text`` of ``currency`` as minor units; None when it is not a whole number of them."""
    amount = _decimal(text)
    if amount is None:
        return None
    try:
        return to_minor(amount, currency)
    except ValueError:  # more decimals than the currency has
        return None


def _fx(item: ItemView, currency: str) -> Fx | None:
    data = item["item"]["fx"]
    if not isinstance(data, dict):
        return None
    return Fx(from_amount=shown(data.get("from_amount")), from_currency=shown(data.get("from_currency")),
              rate=shown(data.get("rate")), rate_type=shown(data.get("rate_type")),
              rate_date=shown(data.get("rate_date")), date_used=shown(data.get("date_used")),
              source=shown(data.get("source")))


def _check_line(item: ItemView, line_minor: int, currency: str) -> str | None:
    """Why the item does not match its reward (None when it does): an unconverted item must be the reward's
    amount in the reward's currency; a converted one must be the conversion its FX record describes."""
    reward = item["reward"]
    fx = item["item"]["fx"]
    reward_minor = _to_minor(reward["amount"], reward["currency"])
    if fx is None:
        if reward["currency"] != currency or reward_minor != line_minor:
            return (f"reward {reward['id']} is {reward['amount']} {reward['currency']} but its line is "
                    f"{amount_text(line_minor, currency)} {currency} without a conversion")
        return None
    if not isinstance(fx, dict):
        return f"reward {reward['id']}: its conversion record is not readable"
    rate, original = _decimal(fx.get("rate")), _decimal(fx.get("from_amount"))
    try:
        rate_date = date.fromisoformat(str(fx.get("rate_date")))
    except ValueError:
        rate_date = None
    if rate is None or original is None or rate_date is None or rate <= 0:
        return f"reward {reward['id']}: its conversion record lacks a rate, an amount or a rate date"
    if fx.get("from_currency") != reward["currency"] or original != _decimal(reward["amount"]):
        return (f"reward {reward['id']} is {reward['amount']} {reward['currency']} but its conversion is of "
                f"{fx.get('from_amount')} {fx.get('from_currency')}")
    converted = convert(original, FxRate(reward["currency"], currency, rate, str(fx.get("source")), rate_date))
    if _to_minor(str(converted), currency) != line_minor:
        return (f"reward {reward['id']}: {original} {reward['currency']} at {rate} is {converted} {currency}, "
                f"not the line's {amount_text(line_minor, currency)}")
    return None


def _percent(value: Any) -> str | None:
    """A rate stored as a fraction (``0.24``) shown as a percentage (``24%``)."""
    rate = _decimal(value)
    if rate is None:
        return shown(value) if value is not None else None
    return f"{(rate * 100).normalize():f}%"


def _line(item: ItemView, kind: str, currency: str, kinds: dict[int, str]) -> Line:
    reward, event, rules, details = item["reward"], item["event"], item["rules"], item["reward"]["details"]
    details = details if isinstance(details, dict) else {}
    line_minor = _to_minor(item["item"]["amount"], currency)
    assert line_minor is not None  # written by amount_text from minor units
    withholding = kind == RewardKind.WITHHOLDING
    clawback = not withholding and line_minor < 0
    netting = not withholding and (clawback or rules["clawback"] is not None)
    caps = tuple(Cap(name=shown(c.get("cap")), limit=shown(c.get("limit")), used=shown(c.get("used")),
                     cut=shown(c.get("cut"))) for c in rules["caps"] if isinstance(c, dict))
    claw = rules["clawback"] or {}
    withholds = details.get("withholds") if withholding else None
    return Line(
        reward_id=reward["id"], kind="withholding" if withholding else "clawback" if clawback else "reward",
        source=shown(event["source"]), object_type=shown(event["object_type"]), object_id=shown(event["object_id"]),
        event_key=shown(event["key"]), occurred_at=event["occurred_at"], program=shown(item["program"]["name"]),
        program_version=item["program"]["version"], description=shown(reward["description"], MAX_DESCRIPTION),
        gross=reward["amount"], gross_currency=reward["currency"],
        earned=shown(details["earned"]) if caps and "earned" in details else None, caps=caps,
        nets_against=tuple(Netted(r["id"], r["amount"], r["currency"]) for r in item["takes_back"]
                           if kinds.get(r["id"]) != RewardKind.WITHHOLDING) if netting else (),
        taken_back=shown(claw["taken_back"]) if "taken_back" in claw else None,
        granted=shown(claw["granted"]) if "granted" in claw else None,
        withholds=withholds if isinstance(withholds, int) and not isinstance(withholds, bool) else None,
        withholding_rate=_percent(details.get("rate")) if withholding and "rate" in details else None,
        withheld_from=shown(details.get("gross")) if withholding and "gross" in details else None,
        fx=_fx(item, currency), amount_minor=line_minor, amount=item["item"]["amount"])


def _history_time(found: PayoutExplanation, actions: tuple[str, ...]) -> datetime | None:
    for entry in found["payout"]["history"]:
        if entry["action"] in actions:
            try:
                return parse_instant(entry["at"])
            except ValueError:
                return None
    return None


def build(conn: Connection, payout_id: int) -> Statement:
    """The statement of payout ``payout_id``, in any status (delivery takes only sent or paid payouts).

    Raises :class:`StatementNotFound` when there is no such payout, :class:`StatementMismatch` when its lines do
    not add up exactly to its amount or do not match their rewards (see the module docstring).
    """
    found = explain(conn, f"payout:{payout_id}") if 1 <= payout_id < 2**63 else None
    if found is None or found["kind"] != "payout":
        raise StatementNotFound(f"payout {payout_id} does not exist")
    row = conn.execute(
        select(payouts.c.amount_minor, payouts.c.item_count, payouts.c.first_sent_at, payees.c.name,
               payees.c.email, payees.c.erased_at)
        .select_from(payouts.outerjoin(payees, payees.c.id == payouts.c.payee_id))
        .where(payouts.c.id == payout_id)).one()
    # The kinds of the payout's rewards and of the earlier rewards its clawbacks net against (tax withheld on those
    # was not given back: a clawback takes back the gross).
    related = {r["id"] for item in found["items"] for r in item["takes_back"]}
    carried = select(payout_items.c.reward_id).where(payout_items.c.payout_id == payout_id)
    kinds = {r.id: r.kind for r in conn.execute(select(rewards.c.id, rewards.c.kind).where(
        or_(rewards.c.id.in_(carried), rewards.c.id.in_(sorted(related)))))}
    payout = found["payout"]
    currency = payout["currency"]
    problems: list[str] = []
    lines: list[Line] = []
    for item in found["items"]:
        line = _line(item, kinds.get(item["reward"]["id"], RewardKind.REWARD), currency, kinds)
        why = _check_line(item, line.amount_minor, currency)
        if why:
            problems.append(why)
        lines.append(line)
    total = sum(line.amount_minor for line in lines)
    if len(lines) != row.item_count:
        problems.append(f"the payout has {row.item_count} items but {len(lines)} lines were found")
    if total != row.amount_minor:
        problems.append(f"its lines add up to {amount_text(total, currency)} {currency}, not the payout's "
                        f"{amount_text(row.amount_minor, currency)} {currency}")
    if problems:
        raise StatementMismatch(f"payout {payout_id}: no statement, it does not add up: " + "; ".join(problems))
    return Statement(
        payout_id=payout_id, idempotency_key=payout["key"], status=payout["status"], rail=shown(payout["rail"]),
        provider_ref=shown(payout["provider_ref"]) if payout["provider_ref"] is not None else None,
        currency=currency, created_at=payout["created_at"],
        sent_at=row.first_sent_at or _history_time(found, ("payout.sent", "payout.paid")),
        paid_at=_history_time(found, ("payout.paid",)),
        payee_id=shown(payout["payee"]), payee_name=shown(row.name if row.name is not None else payout["payee"]),
        payee_erased_at=row.erased_at, lines=tuple(lines),
        rewards_minor=sum(x.amount_minor for x in lines if x.kind == "reward"),
        clawbacks_minor=sum(x.amount_minor for x in lines if x.kind == "clawback"),
        withholding_minor=sum(x.amount_minor for x in lines if x.kind == "withholding"),
        total_minor=total)

