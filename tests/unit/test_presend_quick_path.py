"""The quick path of the check before each send accepts exactly what the full comparison accepts.

:func:`payhub.pipeline.presend._clean` lets a payout through without building the reasons; whatever it lets through
must be a payout in which :func:`payhub.pipeline.presend.mismatches` finds nothing, and the other way round, over
every kind of audited detail the chain may hold (canonical or not, converted, scheduled twice, damaged).
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from payhub.api import Payee, PayoutInstruction
from payhub.audited import AuditRow
from payhub.pipeline.presend import _clean, _Item, mismatches

CREATED = json.dumps({"amount": "10.00", "currency": "EUR", "key": "k1", "payee": "p1", "rail": "r", "rewards": 1},
                     separators=(",", ":"), sort_keys=True)
CALCULATED = {
    "canonical": '{"amount":"10.00","currency":"EUR","payee":"p1"}',
    "short amount": '{"amount":"10.0","currency":"EUR","payee":"p1"}',
    "spaces": '{"amount": "10.00", "currency": "EUR", "payee": "p1"}',
    "other amount": '{"amount":"10.01","currency":"EUR","payee":"p1"}',
    "other payee": '{"amount":"10.00","currency":"EUR","payee":"p2"}',
    "other currency": '{"amount":"10.00","currency":"USD","payee":"p1"}',
    "not json": "{amount",
    "a list": "[1]",
    "missing": None,
}
SCHEDULED = {
    "canonical": ['{"payout":1}'],
    "as text": ['{"payout":"1"}'],
    "spaces": ['{"payout": 1}'],
    "another payout": ['{"payout":2}'],
    "converted": ['{"amount":"10.00","currency":"EUR","payout":1}'],
    "converted wrongly": ['{"amount":"9.00","currency":"EUR","payout":1}'],
    "earlier elsewhere": ['{"payout":2}', '{"payout":1}'],
    "later elsewhere": ['{"payout":1}', '{"payout":2}'],
    "twice here": ['{"payout":1}', '{"payout":1}'],
    "damaged latest": ['{"payout":1}', "[]"],
    "empty": ["{}"],
    "not json": ["{payout"],
    "none": [],
}
ROWS = {  # (item minor, reward minor, reward currency, reward payee)
    "matching": (1000, 1000, "EUR", "p1"),
    "item edited": (1001, 1000, "EUR", "p1"),
    "reward edited": (1000, 1001, "EUR", "p1"),
    "reward moved": (1000, 1000, "EUR", "p2"),
    "reward gone": (1000, None, None, None),
}


def _instruction() -> PayoutInstruction:
    return PayoutInstruction(payout_id=1, idempotency_key="k1", payee=Payee(id="p1", name="Partner One"),
                             amount=Decimal("10.00"), currency="EUR", reference="payhub payout 1",
                             created_at=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("calculated", "scheduled", "row"),
                         list(itertools.product(CALCULATED, SCHEDULED, ROWS)))
def test_the_quick_path_accepts_exactly_what_the_full_comparison_accepts(calculated: str, scheduled: str,
                                                                          row: str) -> None:
    item = _Item("1", *ROWS[row])
    if CALCULATED[calculated] is not None:
        item.calculated = (10, CALCULATED[calculated])
    item.scheduled = [(20 + n, detail) for n, detail in enumerate(SCHEDULED[scheduled])]
    entries = [AuditRow(30, "1", "payout.created", "ok", CREATED)]
    instruction = _instruction()
    full = mismatches(instruction, "r", entries, {7: item})
    assert _clean(instruction, "r", entries, {7: item}) == (full == []), full


def test_a_payout_whose_own_entries_differ_takes_the_full_comparison() -> None:
    item = _Item("1", *ROWS["matching"])
    item.calculated, item.scheduled = (10, CALCULATED["canonical"]), [(20, '{"payout":1}')]
    instruction = _instruction()
    for entries in ([], [AuditRow(30, "1", "payout.created", "ok", CREATED.replace("10.00", "11.00"))],
                    [AuditRow(30, "1", "payout.created", "ok", CREATED), AuditRow(31, "1", "payout.sent", "ok", "{}")],
                    [AuditRow(30, "1", "payout.created", "ok", "not json")]):
        assert not _clean(instruction, "r", entries, {7: item})
        assert mismatches(instruction, "r", entries, {7: item})
    assert _clean(instruction, "r", [AuditRow(30, "1", "payout.created", "ok", CREATED)], {7: item})
