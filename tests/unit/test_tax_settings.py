"""``[compliance.tax]`` settings refused by ``config check``, each named by its key: thresholds fixed by law or not
positive, boxes of programs that are not configured, rates written as floats."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from payhub.errors import ConfigError
from payhub.settings import load_settings

PROGRAM = '[programs.deals]\ncalculator = "flat"\namount = "1"\ncurrency = "USD"\n'


def problems(tmp_path: Path, body: str) -> list[tuple[str, str]]:
    path = tmp_path / "payhub.toml"
    path.write_text(PROGRAM + body)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def test_valid_tax_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text(PROGRAM + '[compliance.tax]\nbackup_withholding_rate = "0.24"\nwarn_ratio = "0.9"\n'
                    '[compliance.tax.thresholds]\n2027 = "2100"\n[compliance.tax.boxes]\ndeals = "none"\n')
    tax = load_settings(path).compliance.tax
    assert (tax.backup_withholding_rate, tax.warn_ratio, tax.thresholds, tax.boxes) == (
        Decimal("0.24"), Decimal("0.9"), {2027: Decimal("2100")}, {"deals": "none"})


@pytest.mark.parametrize("year", ["2025", "2026", "1999"])
def test_a_threshold_fixed_by_law_is_refused_naming_the_key(tmp_path: Path, year: str) -> None:
    found = problems(tmp_path, f'[compliance.tax.thresholds]\n{year} = "700"\n2027 = "2100"\n')
    assert found == [(f"compliance.tax.thresholds.{year}", "the threshold of payments made through 2026 is fixed by "
                      "law (600 USD through 2025, 2000 USD in 2026) and cannot be set: give only later years")]


@pytest.mark.parametrize("value", ['"0"', '"-5"', "0"])
def test_a_threshold_that_is_not_positive_is_refused(tmp_path: Path, value: str) -> None:
    found = problems(tmp_path, f"[compliance.tax.thresholds]\n2027 = {value}\n")
    assert [key for key, _ in found] == ["compliance.tax.thresholds.2027"]
    assert "greater than 0" in found[0][1]


def test_a_box_of_a_program_that_is_not_configured_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, '[compliance.tax.boxes]\ndeals = "none"\ndeal = "1099-NEC-1"\n')
    assert found == [("compliance.tax.boxes.deal", "names program 'deal', which is not configured")]


@pytest.mark.parametrize(("key", "value"), [("backup_withholding_rate", "0.24"), ("warn_ratio", "0.8")])
def test_a_rate_written_as_a_float_is_refused(tmp_path: Path, key: str, value: str) -> None:
    found = problems(tmp_path, f"[compliance.tax]\n{key} = {value}\n")
    assert [name for name, _ in found] == [f"compliance.tax.{key}"]
    assert f'write decimal amounts as strings ("{value}"), a float is not exact' in found[0][1]


def test_a_program_no_longer_configured_keeps_its_last_calculators_box() -> None:
    from payhub.compliance.tax_boxes import TaxReportError, box_of
    from payhub.settings import Settings
    bare = Settings.model_validate({"programs": {"pct": {"calculator": "percentage"}}})
    assert box_of("gone", bare, "spiff") == "1099-MISC-3"
    with pytest.raises(TaxReportError, match=r"last calculator 'flat' has no default box: configure it again .* "
                                             r"compliance\.tax\.boxes\.gone"):
        box_of("gone", bare, "flat")
