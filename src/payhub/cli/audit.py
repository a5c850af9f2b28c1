"""``payhub audit query|export|verify|trace``. Every read of the audit log is itself audited."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import select

from payhub import csvsafe, reports
from payhub.audit import verify as verify_chain
from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, console, err_console, plain, render, shown, to_json
from payhub.clock import parse_instant
from payhub.db.schema import audit_head, audit_log
from payhub.errors import InvalidRecord, PayhubError
from payhub.runtime import Runtime

COLUMNS = ["seq", "at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail"]


class Instant(click.ParamType[datetime]):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        try:
            return parse_instant(value)
        except InvalidRecord as exc:
            self.fail(f"{exc} (use ISO 8601 with an offset, e.g. 2026-01-31T00:00:00Z, or a date)", param, ctx)


def _record_read(rt: Runtime, action: str, detail: dict[str, Any]) -> None:
    with rt.transaction() as tx:
        tx.audit(action, "audit_log", "audit_log", detail)


@main.group()
def audit() -> None:
    """Query, export, verify and trace the audit log."""


def _filters(fn: Any) -> Any:
    for option in reversed([
        click.option("--since", type=Instant(), help="Entries at or after this time (UTC)."),
        click.option("--until", type=Instant(), help="Entries before this time."),
        click.option("--actor"),
        click.option("--action", help="Exact action, or a prefix pattern like 'payout.*'."),
        click.option("--subject", help="type:id (e.g. payout:12) or a bare id."),
    ]):
        fn = option(fn)
    return fn


@audit.command("query")
@_filters
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_ctx
@fail_cleanly
def audit_query(ctx: Context, fmt: str, limit: int | None, **filters: Any) -> None:
    """Show audit entries matching the filters, oldest first."""
    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        rows = reports.query_audit(conn, limit=limit, **filters)
    _record_read(rt, "audit.query", {"filters": {k: v for k, v in filters.items() if v}, "rows": len(rows)})
    render(rows, fmt, COLUMNS, title="audit log")


@audit.command("export")
@_filters
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File (default: stdout).")
@pass_ctx
@fail_cleanly
def audit_export(ctx: Context, fmt: str, output: str | None, **filters: Any) -> None:
    """Export entries with their hashes, for archiving or independent verification.

    JSON Lines keeps the exact stored text: verify the chain from it. In CSV, a cell that a spreadsheet would run
    as a formula gets a leading ' (so it no longer matches its hash).
    """
    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        rows = reports.query_audit(conn, **filters)
    out = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        columns = [*COLUMNS, "prev_hash", "hash"]
        if fmt == "csv":
            writer = csvsafe.writer(out)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([json.dumps(row[c], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                                 if c == "detail" else row[c] for c in columns])
        else:
            for row in rows:
                out.write(json.dumps({c: row[c] for c in columns}, ensure_ascii=False) + "\n")
    finally:
        if output:
            out.close()
    _record_read(rt, "audit.export", {"filters": {k: v for k, v in filters.items() if v}, "rows": len(rows),
                                      "format": fmt, "output": output or "stdout"})
    if output:
        err_console.print(f"exported {len(rows)} entries to {shown(output)}", highlight=False)


@audit.command("verify")
@click.option("--expect-head", help="Also require the chain to pass through this head hash, recorded earlier "
              "elsewhere (entries appended since then are fine; a rebuilt chain is not).")
@pass_ctx
@fail_cleanly
def audit_verify(ctx: Context, expect_head: str | None) -> None:
    """Recompute the hash chain; exit 1 naming the first entry that was edited, deleted, inserted or reordered."""
    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        total = conn.execute(audit_head.select()).one().seq
        with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), console=err_console,
                      disable=not err_console.is_terminal, transient=True) as progress:
            task = progress.add_task("verify", total=total)
            result = verify_chain(conn, lambda n: progress.advance(task, n))
        # The log keeps growing (this command appends to it too), so an earlier head is found inside the chain:
        # the chain up to it verified, so nothing up to that point changed.
        anchored = expect_head is None or conn.execute(
            select(audit_log.c.seq).where(audit_log.c.hash == expect_head.strip().lower())).first() is not None
    ok = result.ok and anchored
    _record_read(rt, "audit.verify", {"ok": ok, "checked": result.checked, "first_bad": result.first_bad})
    if not result.ok:
        console.print(f"[bold red]audit log FAILED verification[/bold red] at entry {result.first_bad}: "
                      f"{result.problem}", highlight=False, soft_wrap=True)
        sys.exit(1)
    if not anchored:
        console.print(f"[bold red]audit log FAILED verification[/bold red]: the chain does not contain the expected "
                      f"head {expect_head} (the log was rebuilt or cut back)", highlight=False, soft_wrap=True)
        sys.exit(1)
    console.print(f"[green]audit log OK[/green]: {result.checked} entries, head {result.head_hash}",
                  highlight=False, soft_wrap=True)


@audit.command("trace")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
@fail_cleanly
def audit_trace(ctx: Context, ref: str, fmt: str) -> None:
    """Follow REF (a CRM record id, an event key, or event:N / reward:N / payout:N) to its payouts and attempts."""
    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        chain = reports.trace(conn, ref)
    _record_read(rt, "audit.trace", {"ref": ref, "events": len(chain)})
    if not chain:
        raise PayhubError(f"nothing found for {ref!r}")
    if fmt == "json":
        click.echo(to_json(chain))
        return

    def say(line: str) -> None:  # no markup: every value from the database goes through plain()
        console.print(line, markup=False, highlight=False)

    for node in chain:
        e = node["event"]
        say(f"event {e['id']} {plain(e['key'])} [{e['status']}]" + (f" {plain(e['reason'])}" if e["reason"] else ""))
        for c in node["calculations"]:
            say(f"  program {plain(c['program'])}: {c['status']}" + (f" ({plain(c['reason'])})" if c["reason"] else ""))
        for r in node["rewards"]:
            say(f"  reward {r['id']} {r['amount']} {r['currency']} to {plain(r['payee'])} [{r['status']}]")
            for p in r["payouts"]:
                say(f"    payout {p['id']} {p['amount']} {p['currency']} via {plain(p['rail'])} [{p['status']}]"
                    f" key {plain(p['key'])}" + (f" ref {plain(p['provider_ref'])}" if p["provider_ref"] else ""))
                for a in p["attempts"]:
                    say(f"      {a['kind']} #{a['number']} {a['outcome'] or 'in flight'}"
                        + (f": {plain(a['detail'])}" if a["detail"] else ""))
