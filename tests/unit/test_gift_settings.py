"""``[compliance.gifts]`` settings: each problem named by its key, at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from payhub.errors import ConfigError
from payhub.settings import load_settings

RAILS = '[rails.gift]\nplugin = "fake"\n[programs.deals]\ncalculator = "flat"\namount = "1"\ncurrency = "USD"\n'


def problems(tmp_path: Path, body: str) -> list[tuple[str, str]]:
    path = tmp_path / "payhub.toml"
    path.write_text(RAILS + "[compliance.gifts]\n" + body)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def test_valid_gift_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text(RAILS + '[compliance.gifts]\ngiftcard_rails = ["gift"]\ngiftcard_yearly_cap = {USD = "600"}\n'
                    '[[compliance.gifts.flag_caps]]\nflag = "government_official"\namount = "250"\n'
                    'currency = "USD"\nper = "flag"\nprograms = ["deals"]\n')
    gifts = load_settings(path).compliance.gifts
    assert gifts.giftcard_rails == ["gift"]
    assert [(cap.flag, str(cap.amount), cap.per, cap.programs) for cap in gifts.flag_caps] == [
        ("government_official", "250", "flag", ["deals"])]


def test_an_unknown_gift_card_rail_is_named(tmp_path: Path) -> None:
    assert problems(tmp_path, 'giftcard_rails = ["gift", "voucher"]\n') == [
        ("compliance.gifts.giftcard_rails", "names rail 'voucher', which is not configured (configured: gift)")]


def test_a_gift_card_cap_without_gift_card_rails_is_named(tmp_path: Path) -> None:
    assert problems(tmp_path, 'giftcard_yearly_cap = {USD = "600"}\n') == [
        ("compliance.gifts.giftcard_yearly_cap", "is set but giftcard_rails names no rail: it would cap nothing")]


def test_a_flag_cap_naming_an_unknown_program_is_named(tmp_path: Path) -> None:
    body = '[[compliance.gifts.flag_caps]]\nflag = "hcp"\namount = "100"\ncurrency = "USD"\nprograms = ["dels"]\n'
    assert problems(tmp_path, body) == [
        ("compliance.gifts.flag_caps.0.programs", "names program 'dels', which is not configured")]


@pytest.mark.parametrize(("line", "key"), [
    ('flag = "a;b"', "compliance.gifts.flag_caps.0.flag"),
    ('flag = "  "', "compliance.gifts.flag_caps.0.flag"),
    ('flag = "hcp"\nper = "partner"', "compliance.gifts.flag_caps.0.per"),
    ('flag = "hcp"\namount = "-1"', "compliance.gifts.flag_caps.0.amount"),
])
def test_a_bad_flag_cap_is_named(tmp_path: Path, line: str, key: str) -> None:
    body = "[[compliance.gifts.flag_caps]]\n" + line + "\n"
    body += "" if "amount" in line else 'amount = "100"\n'
    assert key in [found for found, _ in problems(tmp_path, body + 'currency = "USD"\n')]


def test_a_negative_gift_card_cap_is_named(tmp_path: Path) -> None:
    found = problems(tmp_path, 'giftcard_rails = ["gift"]\ngiftcard_yearly_cap = {USD = "-5"}\n')
    assert [key for key, _ in found] == ["compliance.gifts.giftcard_yearly_cap.USD"]
