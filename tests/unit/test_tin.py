"""TIN classification: kind and validity by the payee's country, from python-stdnum's rules."""

from __future__ import annotations

import pytest

from payhub.compliance.tin import classify
from payhub.states import TinStatus


@pytest.mark.parametrize(("country", "tin", "kind", "status"), [
    ("US", "536-90-4399", "ssn", TinStatus.VALID),
    ("US", "536904399", "ssn", TinStatus.VALID),
    ("US", "04-2103594", "ein", TinStatus.VALID),
    ("US", "912-90-3456", "itin", TinStatus.VALID),
    ("US", "000-00-0000", "us_tin", TinStatus.INVALID),  # SSA never issues area 000
    ("US", "666-12-3456", "us_tin", TinStatus.INVALID),
    ("US", "12345", "us_tin", TinStatus.INVALID),
    ("US", "", None, TinStatus.MISSING),
    ("US", "   ", None, TinStatus.MISSING),
    ("US", None, None, TinStatus.MISSING),
    ("DE", "DE136695976", "vat", TinStatus.VALID),
    ("DE", "136695976", "vat", TinStatus.VALID),  # the country prefix is added
    ("DE", "DE136695977", "vat", TinStatus.INVALID),  # check digit
    ("GR", "EL094259216", "vat", TinStatus.VALID),  # Greece's VAT prefix is EL
    ("FR", "not a number", "vat", TinStatus.INVALID),
    ("GB", "GB980780684", "vat", TinStatus.VALID),
    ("ZZ", "12345", "other", TinStatus.UNCHECKED),  # no rule: kept, not judged
    (None, "536-90-4399", "ssn", TinStatus.VALID),  # no country: a US-shaped number is read as one
    # separators people write between the groups: spaces, dots, hyphens, slashes
    ("US", "536 90 4399", "ssn", TinStatus.VALID),
    ("US", " 536.90.4399 ", "ssn", TinStatus.VALID),
    ("US", "536 - 90 - 4399", "ssn", TinStatus.VALID),
    ("US", "04 2103594", "ein", TinStatus.VALID),
    ("US", "04/2103594", "ein", TinStatus.VALID),
    ("US", "000 00 0000", "us_tin", TinStatus.INVALID),
    (None, "536 90 4399", "ssn", TinStatus.VALID),
    ("DE", "DE 136.695.976", "vat", TinStatus.VALID),
    ("DE", "136/695/976", "vat", TinStatus.VALID),
    ("GR", "EL 094 259 216", "vat", TinStatus.VALID),
])
def test_classify(country: str | None, tin: str | None, kind: str | None, status: TinStatus) -> None:
    assert classify(country, tin) == (kind, status)


@pytest.mark.parametrize("tin", ["\x00\x01", "٣٣٣٣٣٣٣٣٣", "9" * 500, "DE" + "1" * 200, "'; DROP TABLE payees;--"])
def test_hostile_numbers_are_judged_not_raised(tin: str) -> None:
    for country in ("US", "DE", "GR", "BR", None):
        kind, status = classify(country, tin)
        assert status in (TinStatus.INVALID, TinStatus.UNCHECKED)
