"""``payhub tax report`` as a table shows the main columns only, so that a row fits an 80-column terminal; CSV and
JSON keep every column."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from test_tax_report import site, world  # noqa: F401  (site is a fixture)

from payhub.cli.tax import TABLE_COLUMNS
from payhub.compliance import tax_report
from payhub.testing import invoke_cli


def test_the_table_shows_the_main_columns_and_csv_all(site: Any, tmp_path: Path, monkeypatch: Any) -> None:  # noqa: F811
    world(site)
    monkeypatch.setenv("COLUMNS", "80")
    config = str(tmp_path / "payhub.toml")
    table = invoke_cli("--config", config, "tax", "report", "--year", "2026", "--all")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 40, table.stdout  # five payees; every column printed was over a hundred lines
    for hidden in ("form_problem", "other_currencies", "form_signed_on", "Deutsch"):
        assert hidden not in table.stdout
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]] for line in lines
             if line.startswith("│") and line.split("│")[1].strip()}
    assert sorted(cells) == ["de", "fr", "noform", "ok26", "un26"]
    # payee, form, tin, reportable, nec 1, misc 3, box 4 (withheld), warning: amounts are not folded
    assert cells["noform"][:7] == ["noform", "", "missing", "1099-NEC", "1700.00", "0.00", "408.00"]
    assert cells["noform"][7].startswith("85%")
    assert cells["ok26"] == ["ok26", "W-9", "valid", "", "1500.00", "500.00", "0.00", ""]
    assert len(TABLE_COLUMNS) == 8
    full = invoke_cli("--config", config, "tax", "report", "--year", "2026", "--all", "--format", "csv")
    assert list(next(csv.reader(io.StringIO(full.stdout)))) == tax_report.COLUMNS
