"""The tax-form rules, the withholding amount, the thresholds by year and the boxes by program, without a database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from payhub.compliance.tax_boxes import TaxReportError, box_of
from payhub.compliance.tax_report import threshold
from payhub.compliance.tax_rules import TaxProfile, decide, w8_valid_through, withholding_minor
from payhub.settings import Settings, TaxSettings

HOLD = TaxSettings(enabled=True)
WITHHOLD = TaxSettings(enabled=True, us_without_w9="withhold", non_us_without_w8="pay")


def profile(country: str | None, form: str | None = None, signed: date | None = None,
            tin: str | None = "valid") -> TaxProfile:
    return TaxProfile("p1", country, form, signed, tin)


def test_a_w8_is_valid_through_the_end_of_the_third_year_after_signing() -> None:
    signed = date(2023, 5, 1)
    assert w8_valid_through(signed) == date(2026, 12, 31)
    assert decide(profile("DE", "W-8BEN", signed), HOLD, date(2026, 12, 31)).action == "ok"
    expired = decide(profile("DE", "W-8BEN-E", signed), HOLD, date(2027, 1, 1))
    assert (expired.action, expired.rule) == ("hold", "non_us_without_w8")
    assert "W-8BEN-E signed on 2023-05-01, which expired after 2026-12-31" in expired.reason
    assert decide(profile("DE", "W-8BEN", signed), WITHHOLD, date(2027, 1, 1)).action == "pay"
    assert decide(profile("DE", "W-8BEN", None), HOLD, date(2026, 1, 1)).action == "hold"  # no form_date
    assert decide(profile("DE", "W-8BEN", date(2026, 6, 2)), HOLD, date(2026, 6, 1)).action == "hold"  # future


@pytest.mark.parametrize(("country", "form", "tin", "held", "withheld"), [
    ("US", None, None, "us_without_w9", "withhold"),
    ("US", "W-9", "invalid", "us_without_w9", "withhold"),
    ("US", "W-9", "missing", "us_without_w9", "withhold"),
    ("US", "W-8BEN", "valid", "wrong_form", "hold"),  # the wrong form is held whatever the settings
    ("CA", "W-9", "valid", "wrong_form", "hold"),
    ("FR", None, None, "non_us_without_w8", "pay"),
    (None, "W-9", "valid", "country", "hold"),
])
def test_what_is_missing_holds_or_withholds(country: str | None, form: str | None, tin: str | None, held: str,
                                            withheld: str) -> None:
    on = date(2026, 6, 1)
    verdict = decide(profile(country, form, date(2026, 1, 1), tin), HOLD, on)
    assert (verdict.action, verdict.rule) == ("hold", held)
    assert decide(profile(country, form, date(2026, 1, 1), tin), WITHHOLD, on).action == withheld


def test_a_us_payee_with_a_w9_and_a_valid_tin_passes() -> None:
    assert decide(profile("US", "W-9", date(2020, 1, 1)), HOLD, date(2026, 6, 1)).action == "ok"  # W-9s do not expire


@pytest.mark.parametrize(("gross", "currency", "withheld"), [
    (100000, "USD", 24000), (10, "USD", 2), (33333, "USD", 8000), (2, "USD", 0), (3125, "USD", 750),
    (1, "JPY", 0), (3, "JPY", 1), (1000, "BHD", 240)])
def test_withholding_is_rate_times_gross_rounded_half_up(gross: int, currency: str, withheld: int) -> None:
    assert withholding_minor(gross, currency, Decimal("0.24")) == withheld


def test_thresholds_by_year_of_payment() -> None:
    tax = TaxSettings(thresholds={2027: Decimal("2100")})
    assert [threshold(year, tax) for year in (2024, 2025, 2026, 2027)] == [600, 600, 2000, 2100]
    with pytest.raises(TaxReportError, match=r"compliance\.tax\.thresholds\.2028"):
        threshold(2028, tax)


def test_boxes_by_calculator_and_the_override() -> None:
    settings = Settings.model_validate({
        "programs": {name: {"calculator": name} for name in (
            "referral", "deal_registration", "mdf", "coop", "spiff", "loyalty_points", "activity", "rebate",
            "percentage")} | {"bonus": {"calculator": "spiff"}},
        "compliance": {"tax": {"boxes": {"bonus": "1099-NEC-1", "percentage": "none"}}}})
    assert {name: box_of(name, settings) for name in settings.programs} == {
        "referral": "1099-NEC-1", "deal_registration": "1099-NEC-1", "mdf": "1099-NEC-1", "coop": "1099-NEC-1",
        "spiff": "1099-MISC-3", "loyalty_points": "1099-MISC-3", "activity": "1099-MISC-3", "rebate": "none",
        "percentage": "none", "bonus": "1099-NEC-1"}
    bare = Settings.model_validate({"programs": {"pct": {"calculator": "percentage"}}})
    with pytest.raises(TaxReportError, match=r"compliance\.tax\.boxes\.pct"):
        box_of("pct", bare)
    with pytest.raises(TaxReportError, match=r"no longer in the settings"):
        box_of("gone", bare)
