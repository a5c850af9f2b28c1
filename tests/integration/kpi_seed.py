"""Rows for the KPI tests, written as the pipeline's stages would have written them, at chosen times.

:class:`Seed` inserts events, program versions, calculations, rewards, approvals, payouts with their items and fund
entries directly (like ``test_reward_actions.World``), so each figure of :func:`payhub.kpis.kpis` can be checked
against numbers worked out by hand. :func:`seed_q4` writes the data set the tests of ``test_kpis.py`` and
``test_console_overview.py`` check, described in its docstring.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from payhub.db.schema import (
    approvals,
    calculations,
    events,
    fund_entries,
    payout_items,
    payouts,
    program_versions,
    rewards,
)
from payhub.runtime import Runtime

_NUMBERS = itertools.count(1)  # event keys and idempotency keys unique across seeds of one database


def at(text: str) -> datetime:
    """``2026-10-05 12:00`` as aware UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Seed:
    """Writes rows through one runtime's engine; ids are returned for the tests to refer to."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.versions: dict[str, int] = {}

    def _conn(self) -> Any:
        return self.rt.engine.begin()

    def version(self, program: str, params: dict[str, Any] | None = None) -> int:
        """The id of ``program``'s version (the stored one, or version 1 with ``params``, written now)."""
        if program not in self.versions:
            with self._conn() as conn:
                found = conn.execute(select(program_versions.c.id).where(program_versions.c.program == program)
                                     .order_by(program_versions.c.version.desc())).first()
                self.versions[program] = found[0] if found is not None else conn.execute(
                    program_versions.insert().returning(program_versions.c.id).values(
                        program=program, version=1, calculator="flat", params=json.dumps(params or {}),
                        fingerprint=f"{next(_NUMBERS):064d}", created_at=at("2026-01-01 00:00"))).scalar_one()
        return self.versions[program]

    def event(self, occurred: str, *, payee: str = "p1", partner: str | None = None, amount: str | None = None,
              currency: str | None = None) -> int:
        n = next(_NUMBERS)
        when = at(occurred)
        with self._conn() as conn:
            return int(conn.execute(events.insert().returning(events.c.id).values(
                key=f"crm:Opportunity:{n}:won", source="crm", object_type="Opportunity",
                object_id=str(n), transition="won", event_type="deal_won", occurred_at=when, payee_id=payee,
                partner_id=partner, amount=amount, currency=currency, status="calculated", ingested_at=when,
                calculated_at=when)).scalar_one())

    def _calculation(self, conn: Connection, program: str, event_id: int) -> None:
        found = conn.execute(select(calculations.c.id).where(calculations.c.program == program,
                                                             calculations.c.event_id == event_id)).first()
        if found is None:
            conn.execute(calculations.insert().values(event_id=event_id, program=program,
                                                      program_version_id=self.version(program), status="rewarded",
                                                      calculated_at=at("2026-01-01 00:00")))

    def reward(self, event_id: int, program: str, minor: int, currency: str, created: str, *,
               status: str = "pending", payee: str = "p1", needed: int = 0, hold_code: str | None = None,
               hold_reason: str | None = None, budget_key: str | None = None, kind: str = "reward") -> int:
        self.version(program)
        with self._conn() as conn:
            self._calculation(conn, program, event_id)
            return int(conn.execute(rewards.insert().returning(rewards.c.id).values(
                event_id=event_id, program=program, payee_id=payee, amount_minor=minor, currency=currency,
                description="", status=status, hold_code=hold_code, hold_reason=hold_reason,
                approvals_needed=needed, budget_key=budget_key, created_at=at(created), updated_at=at(created),
                kind=kind)).scalar_one())

    def approve(self, reward_id: int, approver: str, when: str) -> None:
        with self._conn() as conn:
            conn.execute(approvals.insert().values(reward_id=reward_id, approver=approver, approved_at=at(when)))

    def payout(self, rail: str, currency: str, status: str, created: str, *, updated: str | None = None,
               items: list[tuple[int, int]] = (), payee: str = "p1", reason: str | None = None,
               hold_code: str | None = None, minor: int | None = None) -> int:
        """A payout of ``items`` (reward id, minor units in the payout's currency); its rewards take its status
        when it is sent or paid, else ``scheduled``."""
        n = next(_NUMBERS)
        total = sum(m for _r, m in items) if minor is None else minor
        with self._conn() as conn:
            payout_id = int(conn.execute(payouts.insert().returning(payouts.c.id).values(
                idempotency_key=f"ph-kpi-{n}", payee_id=payee, rail=rail, route_reason="default rail",
                currency=currency, amount_minor=total, item_count=len(items), status=status, reason=reason,
                hold_code=hold_code, attempts=1, created_at=at(created), updated_at=at(updated or created))
            ).scalar_one())
            for reward_id, amount in items:
                conn.execute(payout_items.insert().values(payout_id=payout_id, reward_id=reward_id,
                                                          amount_minor=amount))
                conn.execute(rewards.update().where(rewards.c.id == reward_id).values(
                    payout_id=payout_id, status=status if status in ("sent", "paid") else "scheduled"))
        return payout_id

    def fund(self, event_id: int, program: str, holder: str, unit: str, amount: str, occurred: str) -> None:
        self.version(program)
        with self._conn() as conn:
            self._calculation(conn, program, event_id)
            conn.execute(fund_entries.insert().values(event_id=event_id, program=program, holder_id=holder, unit=unit,
                                                      amount=amount, occurred_at=at(occurred),
                                                      created_at=at(occurred)))


SPIFF_BUDGET = {"budget": {"amount": "1000", "currency": "USD", "period": "quarter", "per": "program"}}
REBATE_BUDGET = {"budget": {"amount": "300", "currency": "USD", "period": "month", "per": "partner"}}


def seed_q4(rt: Runtime, *, spiff: str = "spiff", partner: str = "acme", payee: str = "p1") -> dict[str, int]:
    """The data set of the KPI tests (2026-Q4, UTC), with the program, partner and payee names given:

    Events: E1 2026-10-01 USD 10000.000000000000000001 (``partner``), E2 2026-10-15 USD 2000.505 (``partner``),
    E3 2026-11-03 EUR 15500.00 (nordic), E4 2026-11-20 JPY 480000 (no partner, payee tokyo), E5 2026-09-30 USD 999.

    Rewards (``spiff`` has a quarterly USD 1000 budget, rebate a monthly USD 300 budget per partner):
    R1 spiff E1 500.00 USD created 10-02, paid in P1; R2 rebate E1 250.00 USD created 10-02, paid in P1 (pool
    rebate:2026-10:``partner``); R8 withholding E1 -24.00 USD in P1; R3 spiff E2 100.05 USD created 10-16, two
    approvals (11-01, 11-02), paid in P2; R7 rebate E2 50.01 USD cancelled; R4 spiff E3 250.00 USD created 11-04, held
    for the budget; R5 rebate E3 387.50 EUR created 11-04 in P3 (failed); R6 spiff E4 48000 JPY created 11-21 in P4
    (unknown); R11 spiff E2 300.00 USD created 12-04, awaiting a second approval (one on 12-05); R9 spiff E5 99.90
    USD created 09-30, held by an operator.

    Payouts: P1 bank USD created 10-03, paid 10-05 12:00; P2 bank USD created 11-05, paid 11-10 00:00; P3 bank EUR
    created 11-05, failed; P4 gift JPY created 11-22, unknown; P5 gift USD created 12-01, held (screening); P6
    credit USD created 12-02, sent; P7 gift USD created 08-01, unresolved.

    Funds: coop on E1 for ``partner``: +1000.00 USD on 10-01, -300.00 USD on 11-01.
    """
    s = Seed(rt)
    s.version(spiff, SPIFF_BUDGET)
    s.version("rebate", REBATE_BUDGET)
    e1 = s.event("2026-10-01 00:00", payee=payee, partner=partner, amount="10000.000000000000000001", currency="USD")
    e2 = s.event("2026-10-15 00:00", payee="p2", partner=partner, amount="2000.505", currency="USD")
    e3 = s.event("2026-11-03 00:00", payee="p3", partner="nordic", amount="15500.00", currency="EUR")
    e4 = s.event("2026-11-20 00:00", payee="tokyo", amount="480000", currency="JPY")
    e5 = s.event("2026-09-30 00:00", payee=payee, partner=partner, amount="999", currency="USD")
    pool = f"{spiff}:2026-Q4"
    r1 = s.reward(e1, spiff, 50000, "USD", "2026-10-02 00:00", payee=payee, budget_key=pool)
    r2 = s.reward(e1, "rebate", 25000, "USD", "2026-10-02 00:00", payee=partner,
                  budget_key=f"rebate:2026-10:{partner}")
    r8 = s.reward(e1, spiff, -2400, "USD", "2026-10-03 00:00", payee=payee, kind="withholding")
    r3 = s.reward(e2, spiff, 10005, "USD", "2026-10-16 00:00", payee="p2", needed=2, budget_key=pool)
    s.approve(r3, "ops:ann", "2026-11-01 09:00")
    s.approve(r3, "ops:bob", "2026-11-02 10:00")
    s.reward(e2, "rebate", 5001, "USD", "2026-10-16 00:00", payee=partner, status="cancelled")
    r4 = s.reward(e3, spiff, 25000, "USD", "2026-11-04 00:00", payee="p3", status="held", hold_code="budget",
                  hold_reason=f"budget {pool} would be overdrawn", budget_key=pool)
    r5 = s.reward(e3, "rebate", 38750, "EUR", "2026-11-04 00:00", payee="nordic")
    r6 = s.reward(e4, spiff, 48000, "JPY", "2026-11-21 00:00", payee="tokyo")
    r11 = s.reward(e2, spiff, 30000, "USD", "2026-12-04 00:00", payee="p2", needed=2, status="awaiting_approval",
                   budget_key=pool)
    s.approve(r11, "ops:ann", "2026-12-05 09:00")
    r9 = s.reward(e5, spiff, 9990, "USD", "2026-09-30 00:00", payee=payee, status="held", hold_code="operator",
                  hold_reason="checking the deal", budget_key=f"{spiff}:2026-Q3")
    p1 = s.payout("bank", "USD", "paid", "2026-10-03 00:00", updated="2026-10-05 12:00",
                  items=[(r1, 50000), (r2, 25000), (r8, -2400)], payee=payee)
    p2 = s.payout("bank", "USD", "paid", "2026-11-05 00:00", updated="2026-11-10 00:00", items=[(r3, 10005)],
                  payee="p2")
    p3 = s.payout("bank", "EUR", "failed", "2026-11-05 00:00", items=[(r5, 38750)], payee="nordic",
                  reason="account closed")
    p4 = s.payout("gift", "JPY", "unknown", "2026-11-22 00:00", items=[(r6, 48000)], payee="tokyo",
                  reason="timeout after sending")
    p5 = s.payout("gift", "USD", "held", "2026-12-01 00:00", payee=payee, minor=70000, hold_code="screening",
                  reason="over screening limit 1000")
    p6 = s.payout("credit", "USD", "sent", "2026-12-02 00:00", payee=partner, minor=12000)
    p7 = s.payout("gift", "USD", "unresolved", "2026-08-01 00:00", payee=payee, minor=5000,
                  reason="the rail cannot tell")
    s.fund(e1, "coop", partner, "USD", "1000.00", "2026-10-01 00:00")
    s.fund(e1, "coop", partner, "USD", "-300.00", "2026-11-01 00:00")
    return {"r1": r1, "r2": r2, "r3": r3, "r4": r4, "r5": r5, "r6": r6, "r9": r9, "r11": r11, "p1": p1, "p2": p2,
            "p3": p3, "p4": p4, "p5": p5, "p6": p6, "p7": p7}
