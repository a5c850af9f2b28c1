"""Invariant 3: exact money. ISO 4217 minor units, one rounding rule (half-up), no floats, no unit created or lost."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payhub.api import Amount, PluginSettings
from payhub.errors import InvalidRecord
from payhub.money import (
    check_currency,
    format_money,
    from_minor,
    minor_units,
    parse_amount,
    quantize,
    split,
    to_minor,
)

CURRENCIES = ["JPY", "KRW", "EUR", "USD", "GBP", "BHD", "KWD", "TND", "CLF"]


@pytest.mark.parametrize(("currency", "units"), [
    ("JPY", 0), ("KRW", 0), ("EUR", 2), ("USD", 2), ("CHF", 2), ("BHD", 3), ("KWD", 3), ("TND", 3), ("CLF", 4)])
def test_minor_units(currency: str, units: int) -> None:
    assert minor_units(currency) == units


@pytest.mark.parametrize("code", ["ZZZ", "EURO", "", "eu", "123"])
def test_unknown_currency_is_refused(code: str) -> None:
    with pytest.raises(InvalidRecord, match="unknown currency"):
        minor_units(code)


@pytest.mark.parametrize("code", ["XXX", "XAU", "XDR"])
def test_currency_without_minor_unit_cannot_be_paid(code: str) -> None:
    with pytest.raises(InvalidRecord, match="has no minor unit and cannot be paid"):
        minor_units(code)


def test_check_currency() -> None:
    assert check_currency(" eur ") == "EUR"
    assert check_currency("jpy") == "JPY"
    for missing in (None, "", "   ", 978):
        with pytest.raises(InvalidRecord, match="currency is missing"):
            check_currency(missing)
    with pytest.raises(InvalidRecord, match="unknown currency 'ABC'"):
        check_currency("abc")


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    ("2.5", "JPY", "3"),
    ("3.5", "JPY", "4"),
    ("2.4999", "JPY", "2"),
    ("-2.5", "JPY", "-3"),  # half a unit rounds away from zero
    ("0.125", "EUR", "0.13"),
    ("0.135", "EUR", "0.14"),
    ("0.005", "EUR", "0.01"),
    ("0.0049999", "EUR", "0.00"),
    ("-0.125", "EUR", "-0.13"),
    ("1.0005", "BHD", "1.001"),
    ("1.0015", "BHD", "1.002"),
    ("1.00049", "BHD", "1.000"),
    ("7", "BHD", "7.000"),
    ("12.34", "EUR", "12.34"),
])
def test_quantize_rounds_half_up(amount: str, currency: str, expected: str) -> None:
    result = quantize(Decimal(amount), currency)
    assert str(result) == expected  # value and exponent: exactly the currency's minor units
    assert result.as_tuple().exponent == -minor_units(currency)


def test_to_minor_and_back() -> None:
    assert to_minor(Decimal("12.34"), "EUR") == 1234
    assert to_minor(Decimal("12.340"), "EUR") == 1234  # trailing zeros are not extra decimals
    assert to_minor(Decimal("12"), "EUR") == 1200
    assert to_minor(Decimal("1500"), "JPY") == 1500
    assert to_minor(Decimal("1.5"), "BHD") == 1500
    assert to_minor(Decimal("-0.01"), "EUR") == -1
    assert from_minor(1234, "EUR") == Decimal("12.34")
    assert from_minor(1500, "JPY") == Decimal("1500")
    assert from_minor(5001, "BHD") == Decimal("5.001")
    assert str(from_minor(5, "EUR")) == "0.05"


@pytest.mark.parametrize(("amount", "currency"), [("12.345", "EUR"), ("100.5", "JPY"), ("1.0001", "BHD"),
                                                  ("0.001", "USD")])
def test_to_minor_refuses_extra_decimals(amount: str, currency: str) -> None:
    with pytest.raises(ValueError, match="more decimals than"):
        to_minor(Decimal(amount), currency)


@pytest.mark.parametrize(("text", "expected"), [
    ("12.30", Decimal("12.30")),
    (" 1000 ", Decimal("1000")),
    ("-3.5", Decimal("-3.5")),
    ("+3.5", Decimal("3.5")),
    (".5", Decimal("0.5")),
    ("5.", Decimal("5")),
    (Decimal("0.10"), Decimal("0.10")),
    (7, Decimal("7")),
])
def test_parse_amount(text: object, expected: Decimal) -> None:
    result = parse_amount(text)
    assert isinstance(result, Decimal)
    assert result == expected


def test_parse_amount_keeps_exact_text() -> None:
    assert str(parse_amount("0.10")) == "0.10"
    assert parse_amount("0.1") + parse_amount("0.2") == Decimal("0.3")


@pytest.mark.parametrize(("value", "message"), [
    (0.1, "must be a decimal string, not float"),
    (1.0, "must be a decimal string, not float"),
    (float("nan"), "not float"),
    (float("inf"), "not float"),
    (True, "not bool"),
    (None, "not NoneType"),
    (Decimal("NaN"), "not a finite number"),
    (Decimal("sNaN"), "not a finite number"),
    (Decimal("-Infinity"), "not a finite number"),
    ("NaN", "not a plain decimal number"),
    ("nan", "not a plain decimal number"),
    ("sNaN", "not a plain decimal number"),
    ("Infinity", "not a plain decimal number"),
    ("-Infinity", "not a plain decimal number"),
    ("inf", "not a plain decimal number"),
    ("1E+3", "not a plain decimal number"),  # exponents hide the scale of the amount
    ("1_000.25", "not a plain decimal number"),
    ("1,000.25", "not a plain decimal number"),
    ("ten", "not a plain decimal number"),
    ("12,50", "not a plain decimal number"),
    ("\u0661\u0662\u0663", "not a plain decimal number"),  # Arabic-Indic digits
    ("\uff11\uff12\uff13", "not a plain decimal number"),  # full-width digits
    ("\u0967\u0968", "not a plain decimal number"),  # Devanagari digits
    ("", "not a plain decimal number"),
    (".", "not a plain decimal number"),
    ("1.2.3", "not a plain decimal number"),
    ("$12", "not a plain decimal number"),
    ("12 EUR", "not a plain decimal number"),
    ("--1", "not a plain decimal number"),
])
def test_parse_amount_refuses(value: object, message: str) -> None:
    with pytest.raises(InvalidRecord, match=message):
        parse_amount(value)


def test_amount_setting_refuses_floats() -> None:
    class Params(PluginSettings):
        amount: Amount

    assert Params(amount="2.50").amount == Decimal("2.50")
    assert Params(amount=3).amount == Decimal(3)
    with pytest.raises(ValueError, match="a float is not exact"):
        Params(amount=2.5)


def test_format_money() -> None:
    assert format_money(Decimal("1234.5"), "EUR") == "1234.50 EUR"
    assert format_money(Decimal("1234.5"), "JPY") == "1235 JPY"
    assert format_money(Decimal("1"), "BHD") == "1.000 BHD"


amounts = st.decimals(min_value=Decimal("-1000000000"), max_value=Decimal("1000000000"), places=6,
                      allow_nan=False, allow_infinity=False)


@given(currency=st.sampled_from(CURRENCIES), values=st.lists(amounts, max_size=50))
def test_payout_total_in_minor_units_is_exact(currency: str, values: list[Decimal]) -> None:
    """Rewards rounded once, summed in minor units, equal the sum of the rounded amounts: nothing created or lost."""
    rounded = [quantize(v, currency) for v in values]
    minors = [to_minor(r, currency) for r in rounded]
    total = sum(rounded, Decimal(0))
    assert sum(minors) == to_minor(quantize(total, currency), currency)
    assert from_minor(sum(minors), currency) == total
    assert quantize(total, currency) == total  # a sum of rounded amounts needs no further rounding


@given(currency=st.sampled_from(CURRENCIES), value=amounts)
def test_quantize_is_nearest_with_half_up(currency: str, value: Decimal) -> None:
    rounded = quantize(value, currency)
    unit = Decimal(1).scaleb(-minor_units(currency))
    error = value - rounded
    assert abs(error) <= unit / 2
    if abs(error) == unit / 2:  # a tie goes away from zero
        assert abs(rounded) > abs(value)
    assert quantize(rounded, currency) == rounded
    assert from_minor(to_minor(rounded, currency), currency) == rounded


@given(currency=st.sampled_from(CURRENCIES), minor=st.integers(min_value=-10**15, max_value=10**15))
def test_minor_units_round_trip(currency: str, minor: int) -> None:
    assert to_minor(from_minor(minor, currency), currency) == minor


def test_split_shares_the_rounded_amount_and_the_first_share_takes_the_remainder() -> None:
    assert split(Decimal("100"), "EUR", [60, 40]) == [Decimal("60.00"), Decimal("40.00")]
    assert split(Decimal("10.00"), "EUR", [Decimal("33.34"), Decimal("33.33"), Decimal("33.33")]) \
        == [Decimal("3.34"), Decimal("3.33"), Decimal("3.33")]
    assert split(Decimal("100"), "EUR", [0, 100]) == [Decimal("0.00"), Decimal("100.00")]
    assert split(Decimal("100"), "EUR", [60, 60], conserve=False) == [Decimal("60.00"), Decimal("60.00")]  # overlay


@pytest.mark.parametrize(("percents", "conserve", "message"), [
    ([60, 60], True, "add up to 120, not 100"),
    ([-10, 110], True, "percent -10 is not between 0 and 100"),
    ([50, 49], True, "add up to 99, not 100"),
    ([], True, "add up to 0, not 100"),
    ([Decimal("NaN"), 100], True, "percent NaN is not between 0 and 100"),
    ([-10, 50], False, "percent -10 is not between 0 and 100"),
    ([120], False, "percent 120 is not between 0 and 100"),
])
def test_split_refuses_percents_out_of_range_or_not_adding_up_to_100(percents: list[Decimal | int], conserve: bool,
                                                                      message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        split(Decimal("100"), "EUR", percents, conserve=conserve)
