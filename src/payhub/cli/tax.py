"""``payhub tax report``: the year-end figures a filing service needs (docs/compliance.md)."""

from __future__ import annotations

import click

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, render
from payhub.compliance import tax_report

TABLE_COLUMNS = ["payee", "name", "country", "form", "form_signed_on", "tin_status", "reportable", "nec_box1",
                 "nec_box4", "misc_box3", "misc_box4", "other_currencies", "form_problem", "warning"]


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
        columns = tax_report.COLUMNS if fmt != "table" else TABLE_COLUMNS
        render(rows, fmt, columns, title=f"tax report {year}")
