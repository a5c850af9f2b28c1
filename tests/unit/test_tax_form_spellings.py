"""The payees file's ``tax_form`` spellings that docs/compliance.md (payee columns) lists as accepted, and some that
it says skip the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from payhub.payees import read_payees


@pytest.mark.parametrize(("written", "form"), [
    ("W-9", "W-9"), ("W9", "W-9"), ("w9", "W-9"), ("W 9", "W-9"), (" w-9 ", "W-9"),
    ("W8BEN", "W-8BEN"), ("w-8ben", "W-8BEN"), ("W-8BENE", "W-8BEN-E"), ("w8ben-e", "W-8BEN-E"),
    ("none", None), ("NONE", None), ("", None),
])
def test_accepted_spellings(tmp_path: Path, written: str, form: str | None) -> None:
    (tmp_path / "p.csv").write_text(f"id,name,tax_form\np,P,{written}\n")
    rows, problems = read_payees(tmp_path / "p.csv")
    assert (problems, [row["tax_form"] for row in rows]) == ([], [form])


@pytest.mark.parametrize("written", ["W-8", "1099", "W-9BEN", "W--9x"])
def test_other_values_skip_the_line(tmp_path: Path, written: str) -> None:
    (tmp_path / "p.csv").write_text(f"id,name,tax_form\np,P,{written}\n")
    rows, problems = read_payees(tmp_path / "p.csv")
    assert rows == [] and len(problems) == 1 and "tax_form" in problems[0]
