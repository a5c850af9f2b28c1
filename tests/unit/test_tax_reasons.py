"""Tax decisions say in a sentence who, in which country, has what on file; rates as percentages."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from payhub.compliance.tax_rules import TaxProfile, decide, form_on_file, percent
from payhub.settings import TaxSettings

ON = date(2026, 6, 1)


@pytest.mark.parametrize(("profile", "tax", "reason"), [
    (TaxProfile("de-nodate", "DE", "W-8BEN", None, None), TaxSettings(),
     "payee de-nodate (country DE) has a W-8BEN without a form date; the reward waits for a current W-8"),
    (TaxProfile("de", "DE", "W-8BEN", date(2027, 1, 1), None), TaxSettings(),
     "payee de (country DE) has a W-8BEN dated 2027-01-01, a date in the future; the reward waits for a current W-8"),
    (TaxProfile("de", "DE", "W-8BEN-E", date(2022, 5, 1), None), TaxSettings(non_us_without_w8="pay"),
     'payee de (country DE) has a W-8BEN-E signed on 2022-05-01, which expired after 2025-12-31; paid as '
     'non_us_without_w8 = "pay" allows'),
    (TaxProfile("us", "US", "W-9", None, "invalid"), TaxSettings(us_without_w9="withhold"),
     "payee us (country US) has a W-9 whose TIN is invalid: paid with backup withholding of 24 %"),
    (TaxProfile("us", "US", None, None, None), TaxSettings(),
     "payee us (country US) has no W-9 on file; the reward waits for a W-9 with a valid TIN"),
    (TaxProfile("us", "US", "W-8BEN", None, None), TaxSettings(),
     "payee us (country US) has a W-8BEN on file, the wrong form: a US payee gives a W-9"),
    (TaxProfile("fr", "FR", "W-9", None, None), TaxSettings(),
     "payee fr (country FR) has a W-9 on file, the wrong form: a non-US payee gives a W-8BEN or W-8BEN-E"),
])
def test_reasons_are_sentences(profile: TaxProfile, tax: TaxSettings, reason: str) -> None:
    assert decide(profile, tax, ON).reason == reason


def test_rates_are_percentages_and_forms_are_named_with_their_date() -> None:
    assert [percent(Decimal(r)) for r in ("0.24", "0.245", "0.3")] == ["24 %", "24.5 %", "30 %"]
    assert form_on_file(TaxProfile("de", "DE", "W-8BEN", date(2024, 3, 1), "missing")) == {
        "form": "W-8BEN", "form_date": "2024-03-01", "tin_status": "missing"}
