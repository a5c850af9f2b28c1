"""``payhub tax report``: the year-end figures a filing service needs (docs/compliance.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, render
from payhub.compliance import tax_report

TABLE_COLUMNS = ["payee", "form", "tin", "reportable", "nec 1", "misc 3", "box 4", "warning"]
"""The table's columns, for people: the main ones, narrow enough for an 80-column terminal (``--format csv|json``
has every column, :data:`payhub.compliance.tax_report.COLUMNS`)."""


def table_row(row: dict[str, Any]) -> dict[str, Any]:
    """A report row as the table shows it: the TIN's status, box 1 of 1099-NEC, box 3 of 1099-MISC, the backup
    withholding of both forms (box 4) in USD, and a warning as the share of the threshold reached."""
    warning = ""
    if row["warning"]:
        reached = max(Decimal(row["nec_box1"]), Decimal(row["misc_box3"]))
        warning = f"{(reached / Decimal(row['threshold']) * 100).quantize(Decimal(1))}%, no form"
    withheld = Decimal(row["nec_box4"]) + Decimal(row["misc_box4"])
    return {"payee": row["payee"], "form": row["form"], "tin": row["tin_status"], "reportable": row["reportable"],
            "nec 1": row["nec_box1"], "misc 3": row["misc_box3"], "box 4": str(withheld), "warning": warning}


@main.group()
def tax() -> None:
    """US information-return figures: totals by form and box, withholding, missing forms."""


@tax.command("report")
@click.option("--year", type=click.IntRange(1900, 9998), required=True, help="Calendar year of payment (UTC).")
@click.option("--all", "everyone", is_flag=True,
              help="Every payee paid in the year, not only those reportable, missing a form or warned about.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_ctx
@fail_cleanly
def tax_report_command(ctx: Context, year: int, everyone: bool, fmt: str) -> None:
    """Per payee, what was paid in YEAR by form and box (USD), backup withholding, the form on file and the TIN's
    status (never the TIN); payees missing a valid form; warnings near the threshold. Streamed."""
    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        rows = tax_report.report(conn, rt.settings, year, everyone)
        if fmt == "table":
            title = f"tax report {year} in USD (other currencies: --format csv or json)"
            render((table_row(row) for row in rows), fmt, TABLE_COLUMNS, title=title)
        else:
            render(rows, fmt, tax_report.COLUMNS)
