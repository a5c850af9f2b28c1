"""Fund arithmetic: oldest credits spent first, expired credits lapse, and the state applied entry by entry (as the
calculation keeps it per batch) always agrees with a recomputation from all entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from payhub.funds import Fund, balance, replay, unit_text

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



def test_next_expiry_is_the_next_credit_with_something_left() -> None:
    entries = [(day(0), Decimal(100), day(30)),  # spent in full on day 5
               (day(1), Decimal(50), day(40)),  # 20 of it spent on day 5, 30 left
               (day(2), Decimal(70), day(20)),  # younger but lapses sooner: untouched while older credits last
               (day(3), Decimal(10), None),  # never lapses
               (day(5), Decimal(-120), None)]
    assert replay(entries, day(4)).next_expiry(day(4)) == day(20)
    fund = replay(entries, day(6))
    assert (fund.balance(day(6)), fund.next_expiry(day(6))) == (Decimal(110), day(20))
    # a credit spent in full is never next, even when it would lapse first
    spent_first = [(day(0), Decimal(100), day(10)), (day(1), Decimal(50), day(40)), (day(2), Decimal(-100), None)]
    assert replay(spent_first, day(3)).next_expiry(day(3)) == day(40)
    assert replay(spent_first, day(1)).next_expiry(day(1)) == day(10)  # before the spending it is still next
    # what lapsed is not next: after day 20 the partly spent credit of day 1, then nothing that lapses
    assert replay(entries, day(25)).next_expiry(day(25)) == day(40)
    assert replay(entries, day(20)).next_expiry(day(20)) == day(40)  # lapses at the instant it expires
    assert replay(entries, day(40)).next_expiry(day(40)) is None
    assert replay([(day(0), Decimal(10), day(5)), (day(1), Decimal(-10), None)], day(2)).next_expiry(day(2)) is None
    assert replay([], day(0)).next_expiry(day(0)) is None


def test_next_expiry_counts_only_the_entries_up_to_the_date() -> None:
    entries = [(day(0), Decimal(100), day(30)), (day(10), Decimal(-100), None), (day(12), Decimal(5), day(50))]
    assert replay(entries, day(9)).next_expiry(day(9)) == day(30)  # spent only later
    assert replay(entries, day(11)).next_expiry(day(11)) is None  # the later credit has not occurred yet
    assert replay(entries, day(12)).next_expiry(day(12)) == day(50)


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


@given(st.lists(ENTRY, max_size=25), st.integers(0, 90))
def test_next_expiry_is_when_the_balance_next_drops_without_spending(raw: list[tuple[int, int, int | None]],
                                                                      at: int) -> None:
    entries = [(day(d), Decimal(a), day(d + life) if life else None) for d, a, life in raw]
    fund = replay(entries, day(at))
    nxt = fund.next_expiry(day(at))
    upto = [entry for entry in entries if entry[0] <= day(at)]
    if nxt is None:
        assert balance(upto, day(1000)) == balance(upto, day(at))  # nothing left lapses
    else:
        assert nxt > day(at)
        assert balance(upto, nxt - timedelta(seconds=1)) == balance(upto, day(at))
        assert balance(upto, nxt) < balance(upto, day(at))


def test_amounts_show_the_units_minor_units() -> None:
    assert [unit_text(Decimal(text), unit) for text, unit in (
        ("0", "EUR"), ("-0", "EUR"), ("10", "EUR"), ("-5.5", "EUR"), ("0", "JPY"), ("2000", "JPY"), ("0", "BHD"),
        ("2.01", "BHD"), ("0", "points"), ("1500", "points"))] == [
        "0.00", "0.00", "10.00", "-5.50", "0", "2000", "0.000", "2.010", "0", "1500"]
