"""``payhub statements show|send``: partner statements (docs/cli.md, docs/console.md#partner-statements)."""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import console, err_console, plain, render
from payhub.cli.params import ROW_ID
from payhub.clock import isoformat, utcnow
from payhub.errors import PayhubError
from payhub.files import write_atomic

if TYPE_CHECKING:
    from payhub.statements.stage import Result

# payhub.statements (Jinja2, WeasyPrint, smtplib) is imported by the commands that use it, not by `payhub --help`.


@main.group()
def statements() -> None:
    """Partner statements (remittance advice), one per sent or paid payout."""


@statements.command("show")
@click.argument("payout_id", type=ROW_ID)
@click.option("--format", "fmt", type=click.Choice(["html", "pdf"]), default="html", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-", show_default=True,
              help="File to write (created with the private file mode); - for standard output (not for a PDF on a "
                   "terminal).")
@pass_ctx
@fail_cleanly
def statements_show(ctx: Context, payout_id: int, fmt: str, output: str) -> None:
    """Write the statement of PAYOUT_ID as HTML or PDF, in any status of the payout. Refused (exit 1) when the
    payout does not exist or its lines do not add up to its amount."""
    if output == "-" and fmt == "pdf" and sys.stdout.isatty():
        raise click.UsageError("a PDF is not written to a terminal: give --output FILE (or redirect)")
    from payhub.statements import content
    from payhub.statements import render as documents

    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        statement = content.build(conn, payout_id)
    data = documents.html(statement).encode("utf-8") if fmt == "html" else documents.pdf(statement)
    digest = hashlib.sha256(data).hexdigest()
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(output)
    try:
        written = write_atomic(path, data)
    except OSError as exc:
        raise PayhubError(f"cannot write {output}: {exc}") from exc
    console.print(f"statement of payout {payout_id} ({len(statement.lines)} lines, {statement.total} "
                  f"{statement.currency}) written to {plain(written)} ({fmt}, sha256 {digest})", markup=False,
                  highlight=False, soft_wrap=True)


def _line(result: Result) -> str:
    where = f" to {result.destination}" if result.destination else ""
    why = f": {result.reason}" if result.reason else ""
    return f"payout {result.payout_id}: {result.status} (attempt {result.attempt}){where}{why}"


@statements.command("send")
@click.option("--payout", "payout_id", type=ROW_ID, metavar="N", help="Deliver this payout's statement now, "
              "whatever its earlier attempts (not one already delivered).")
@click.option("--retry-failed", is_flag=True, help="Also try again every failed statement now, past max_attempts and "
              "backoff (each once).")
@click.option("--progress/--no-progress", default=None, help="Progress display (default: when on a terminal).")
@pass_ctx
@fail_cleanly
def statements_send(ctx: Context, payout_id: int | None, retry_failed: bool, progress: bool | None) -> None:
    """Deliver the statements that are due, as the daemon does after settle ([notify] statements): each sent or
    paid payout without a delivery, and failed deliveries whose retry is due. The payees file is read first, as a
    daemon pass reads it. Prints one line per statement
    failed or skipped and a count per status; exits 1 when a delivery failed."""
    if payout_id is not None and retry_failed:
        raise click.UsageError("--payout and --retry-failed do not go together")
    from payhub.payees import sync_payees
    from payhub.statements.stage import deliver_batch, deliver_one, paused_until, refuse_when_off

    rt = ctx.runtime()
    sync_payees(rt)  # an address just added to the payees file counts, as on the daemon's next pass
    if payout_id is not None:
        result = deliver_one(rt, payout_id)
        console.print(plain(_line(result)), markup=False, highlight=False, soft_wrap=True)
        if result.status == "failed":
            sys.exit(1)
        return
    refuse_when_off(rt.settings)
    since = utcnow() if retry_failed else None
    counts: Counter[str] = Counter()
    problems: list[Result] = []
    show = err_console.is_terminal if progress is None else progress
    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:>8,.0f}"),
                       TimeElapsedColumn(), console=err_console, disable=not show)
    with display:
        task = display.add_task("statements", total=None)
        while batch := deliver_batch(rt, retry_failed_before=since):
            for result in batch:
                counts[result.status] += 1
                if result.status != "delivered":
                    problems.append(result)
            display.update(task, advance=len(batch), description=", ".join(
                f"{status} {counts[status]}" for status in ("delivered", "failed", "skipped") if counts[status]))
    for result in problems:
        console.print(plain(_line(result)), markup=False, highlight=False, soft_wrap=True)
    render([{"status": status, "count": counts[status]} for status in ("delivered", "failed", "skipped")], "table",
           title="payhub statements send")
    paused = paused_until(rt)
    if paused is not None:
        err_console.print(f"the mail server or the outbox failed: deliveries wait until {isoformat(paused)} "
                          "(run again then, or let the daemon do it)", markup=False, highlight=False, soft_wrap=True)
    if counts["failed"]:
        sys.exit(1)
