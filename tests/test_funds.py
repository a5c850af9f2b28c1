"""Fund arithmetic: oldest credits spent first, expired credits lapse, and the state applied entry by entry (as the
calculation keeps it per batch) always agrees with a recomputation from all entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from payhub.funds import Fund, balance

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def test_oldest_credits_are_spent_first_and_expired_ones_lapse() -> None:
    entries = [(day(0), Decimal(100), day(30)), (day(10), Decimal(50), None), (day(20), Decimal(-120), None)]
    assert balance(entries, day(25)) == Decimal(30)  # 100 then 20 of the 50 spent
    assert balance(entries, day(40)) == Decimal(30)  # the first credit was used up before it expired
    lapsing = [(day(0), Decimal(100), day(30)), (day(10), Decimal(50), None), (day(20), Decimal(-20), None)]
    assert balance(lapsing, day(29)) == Decimal(130)
    assert balance(lapsing, day(30)) == Decimal(50)  # the 80 left of the first credit lapsed unspent
    assert balance([(day(0), Decimal(10), day(5)), (day(6), Decimal(-10), None)], day(7)) == Decimal(-10)


ENTRY = st.tuples(st.integers(0, 60), st.integers(-80, 100), st.one_of(st.none(), st.integers(1, 40)))


@given(st.lists(ENTRY, max_size=25), st.integers(0, 30), st.integers(0, 90))
def test_the_state_applied_in_time_order_agrees_with_a_recomputation(raw: list[tuple[int, int, int | None]],
                                                                       split: int, at: int) -> None:
    entries = [(day(d), Decimal(a), day(d + life) if life else None) for d, a, life in raw]
    ordered = sorted(entries, key=lambda e: e[0])
    stored, later = ordered[:split], ordered[split:]
    state = Fund()
    for entry in stored:
        state.apply(*entry)
    if stored and day(at) < stored[-1][0]:
        return  # the calculation recomputes from all entries when asked about the past
    before = ([(c.left, c.expires_at) for c in state.credits], state.overspent)
    fund = state.copy()
    for entry in later:
        if entry[0] <= day(at):
            fund.apply(*entry)
    assert fund.balance(day(at)) == balance(entries, day(at))
    assert ([(c.left, c.expires_at) for c in state.credits], state.overspent) == before  # the copy took the changes
