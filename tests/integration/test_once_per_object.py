"""``once_per_object``: a CRM object seen won twice (a new key for the same deal) is not rewarded twice, until a
clawback takes the first reward back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from test_programs import SOURCE, run

from payhub.api import SourceRecord
from payhub.db.schema import calculations, events, rewards
from payhub.runtime import Runtime


def won(object_id: str, transition: str, when: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, transition, "deal_won", when, "rep1", "1000.00", "USD", "acme")


def of_o1(rt: Runtime) -> tuple[list[Any], list[Any]]:
    """(transition, calculation status, reason) and (transition, reward status, amount) of object o1."""
    with rt.engine.connect() as conn:
        calcs = conn.execute(select(events.c.transition, calculations.c.status, calculations.c.reason).join(
            events, events.c.id == calculations.c.event_id).where(events.c.object_id == "o1")
            .order_by(events.c.id)).all()
        paid = conn.execute(select(events.c.transition, rewards.c.status, rewards.c.amount_minor).join(
            events, events.c.id == rewards.c.event_id).where(events.c.object_id == "o1")
            .order_by(rewards.c.id)).all()
    return [tuple(r) for r in calcs], [tuple(r) for r in paid]


def test_an_object_is_rewarded_once_until_clawed_back(make_runtime) -> None:
    rt = make_runtime(SOURCE + """
        [programs.p]
        calculator = "percentage"
        percent = "10"
        once_per_object = true
        event_types = ["deal_won"]
        clawback_event_types = ["deal_reversed"]
    """)
    run(rt, won("o1", "won:2026-05-01", "2026-05-01T00:00:00Z"), won("o2", "won:2026-05-01", "2026-05-01T00:00:00Z"))
    run(rt, won("o1", "won:2026-05-09", "2026-05-09T00:00:00Z"))  # the close date moved: a new key, same deal
    calcs, paid = of_o1(rt)
    assert calcs == [
        ("won:2026-05-01", "rewarded", None),
        ("won:2026-05-09", "not_eligible",
         "Opportunity o1 is already rewarded by this program (100.00 USD); a clawback must take that back first")]
    assert paid == [("won:2026-05-01", "pending", 10000)]
    reversal = SourceRecord("Opportunity", "o1", "reversed:1", "deal_reversed", "2026-05-10T00:00:00Z", "rep1",
                            None, None, "acme")
    run(rt, reversal, won("o1", "won:2026-05-20", "2026-05-20T00:00:00Z"), limit=1)
    calcs, paid = of_o1(rt)
    assert calcs[-1] == ("won:2026-05-20", "rewarded", None)  # the re-win after the reversal is paid, once
    assert paid == [("won:2026-05-01", "cancelled", 10000), ("won:2026-05-20", "pending", 10000)]
