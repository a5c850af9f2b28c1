"""``payhub retention apply``: archive, then delete, old event payloads and audit entries
(:mod:`payhub.compliance.retention`)."""

from __future__ import annotations

from typing import Any

import click
from rich.progress import Progress, SpinnerColumn, TextColumn

from payhub import checkpoints
from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import console, err_console, shown
from payhub.compliance import retention
from payhub.errors import PayhubError


@main.group("retention")
def retention_group() -> None:
    """Retention periods of events' payloads and audit entries (docs/compliance.md#retention)."""


@retention_group.command("apply")
@click.option("--dry-run", is_flag=True, help="Show what would be archived and deleted; write nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
@fail_cleanly
def retention_apply(ctx: Context, dry_run: bool, yes: bool) -> None:
    """Archive events' payloads older than compliance.retention.events_days and audit entries older than
    audit_days (gzipped JSON lines in archive_dir, with their SHA-256), then delete them; the audit cut is signed
    with the checkpoint key. Entries that unfinished rewards and payouts still need are kept. Refused when another
    run holds the database's retention lock, or when the audit log, its cut or the signed checkpoints do not verify
    as `payhub audit verify` checks them."""
    rt = ctx.runtime()
    settings = rt.settings.compliance.retention
    if settings.events_days is None and settings.audit_days is None:
        raise PayhubError("no retention period is configured (compliance.retention.events_days, audit_days)")
    if settings.audit_days is not None:
        retention.checkpoint_key(rt)  # refuse before anything is shown or written
    # archive_dir is created (a dry run removes what it created) and written to, or the run stops here, exit 2
    retention.check_archive_dir(rt.settings.resolve(settings.archive_dir), keep=not dry_run)
    chosen = retention.plan(rt)
    _show_plan(chosen)
    if dry_run:
        key = checkpoints.load_key(rt.settings)
        problems = retention.audit_problems(rt, key)[1] if key is not None else []
        if problems:
            raise retention.RetentionError("the audit log does not verify, so a run would be refused (run `payhub "
                                           "audit verify`): " + "; ".join(problems))
        console.print("dry run: nothing was written or deleted", style="dim", highlight=False)
        return
    if (chosen.events or chosen.audit_entries) and not yes:
        click.confirm("archive and delete these rows?", abort=True, err=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                  disable=not err_console.is_terminal, transient=True) as progress:
        tasks: dict[str, Any] = {}
        done: dict[str, int] = {}

        def report(kind: str, rows: int) -> None:
            if kind not in tasks:
                tasks[kind] = progress.add_task(f"archiving {kind}")
            done[kind] = done.get(kind, 0) + rows
            progress.update(tasks[kind], description=f"archiving {kind}: {done[kind]} rows")

        outcome = retention.apply(rt, progress=report)
    _show_settled(outcome.settled)
    for line in outcome.repaired:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    directory = rt.settings.resolve(settings.archive_dir)
    for label, archive in (("events", outcome.events_archive), ("audit entries", outcome.audit_archive)):
        if archive is not None:
            console.print(f"archived {archive.rows} {label} to {shown(directory / archive.name)} "
                          f"(sha256 {archive.sha256})", highlight=False, soft_wrap=True)
    if outcome.cut is not None:
        console.print(f"audit log cut after entry {outcome.cut.seq} (hash {outcome.cut.hash}), signed with key "
                      f"{outcome.cut.key_id}", highlight=False, soft_wrap=True)
    if outcome.events_archive is None and outcome.cut is None:
        console.print("nothing to archive", highlight=False)


def _show_settled(lines: list[str]) -> None:
    for line in lines:
        err_console.print(f"interrupted run: {line}", markup=False, highlight=False, soft_wrap=True)


def _show_plan(chosen: retention.Plan) -> None:
    if chosen.events_cutoff is not None:
        span = f" (ids {chosen.events_range[0]} to {chosen.events_range[1]})" if chosen.events_range else ""
        console.print(f"events: {chosen.events} payload(s) older than {chosen.events_cutoff:%Y-%m-%d %H:%M} UTC, "
                      f"with final rewards only{span}", highlight=False, soft_wrap=True)
    if chosen.audit_cutoff is not None:
        previous = chosen.previous_cut.seq if chosen.previous_cut is not None else 0
        floor = (f"; entry {chosen.audit_floor} and later are needed by unfinished work"
                 if chosen.audit_floor is not None else "")
        if chosen.audit_to is None:
            console.print(f"audit: nothing to cut (entries up to {previous} already archived; entries older than "
                          f"{chosen.audit_cutoff:%Y-%m-%d %H:%M} UTC{floor})", highlight=False, soft_wrap=True)
        else:
            console.print(f"audit: entries {chosen.audit_from} to {chosen.audit_to} ({chosen.audit_entries}) older "
                          f"than {chosen.audit_cutoff:%Y-%m-%d %H:%M} UTC{floor}", highlight=False, soft_wrap=True)
