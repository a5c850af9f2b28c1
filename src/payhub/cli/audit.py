"""``payhub audit query|export|verify|trace``. Every read of the audit log is itself audited."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from datetime import datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from payhub import checkpoints, csvsafe, files, provenance
from payhub.audit import AuditHeadDamaged, Cut, VerifyResult, Workers, read_cut, read_head, share_snapshot
from payhub.audit import verify as verify_chain
from payhub.audit_query import (
    COLUMNS,
    EXPORT_COLUMNS,
    AuditFilters,
    detail_value,
    iter_entries,
    reader,
)
from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, console, err_console, plain, render, shown, to_json
from payhub.cli.params import ACTOR, LIMIT, MAX_ID
from payhub.cli.provenance_text import print_trace
from payhub.clock import parse_instant
from payhub.collector import tune_for_batches
from payhub.compliance import retention
from payhub.compliance.shown import Opener
from payhub.crosscheck import AuditedIds, Difference, differences
from payhub.db.schema import audit_log
from payhub.errors import ConfigError, InvalidRecord, PayhubError
from payhub.runtime import Runtime
from payhub.signing import SigningKey

AFTER = click.IntRange(0, MAX_ID)
TABLE_LIMIT = 1000
"""Entries ``audit query`` shows in a table when no ``--limit`` is given."""


class Instant(click.ParamType[datetime]):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        try:
            return parse_instant(value)
        except InvalidRecord as exc:
            self.fail(f"{exc} (use ISO 8601 with an offset, e.g. 2026-01-31T00:00:00Z, or a date)", param, ctx)


def _record_read(rt: Runtime, action: str, detail: dict[str, Any], outcome: str = "ok") -> None:
    with rt.transaction() as tx:
        tx.audit(action, "audit_log", "audit_log", detail, outcome=outcome)


class _Tally:
    """Counts the entries of a stream as they pass, and keeps the last one's ``seq``."""

    def __init__(self) -> None:
        self.count = 0
        self.last: int | None = None

    def over(self, entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for entry in entries:
            self.count += 1
            self.last = entry["seq"]
            yield entry


def _recorded(rt: Runtime, action: str, detail: dict[str, Any], tally: _Tally, stream: Callable[[], None]) -> None:
    """Run ``stream``, then record the read with the number of entries it wrote: after the stream, so the count is
    the real one. A stream cut short (a closed pipe, a full disk, the database gone) is recorded ``incomplete``
    with the entries written so far, when that can still be written, and its error raised."""
    try:
        stream()
    except BaseException:
        with contextlib.suppress(Exception):
            _record_read(rt, action, {**detail, "rows": tally.count}, outcome="incomplete")
        raise
    _record_read(rt, action, {**detail, "rows": tally.count})


@main.group()
def audit() -> None:
    """Query, export, verify and trace the audit log."""
    tune_for_batches()  # they read the log in chunks of thousands of rows


def _filters(fn: Any) -> Any:
    for option in reversed([
        click.option("--since", type=Instant(), help="Entries at or after this time (UTC)."),
        click.option("--until", type=Instant(), help="Entries before this time."),
        click.option("--actor", type=ACTOR),
        click.option("--action", help="Exact action, or a prefix pattern like 'payout.*'."),
        click.option("--subject", help="type:id (e.g. payout:12) or a bare id."),
    ]):
        fn = option(fn)
    return fn


@audit.command("query")
@_filters
@click.option("--limit", type=LIMIT, default=None,
              help=f"At most this many entries [default: {TABLE_LIMIT} in a table, all in JSON and CSV].")
@click.option("--after", type=AFTER, metavar="SEQ", help="Only entries after this sequence number (the next page).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_ctx
@fail_cleanly
def audit_query(ctx: Context, fmt: str, limit: int | None, after: int | None, **filters: Any) -> None:
    """Show audit entries matching the filters, oldest first, streamed from the database: a table shows one page
    and names the --after of the next; JSON and CSV write every match unless --limit is given."""
    rt = ctx.runtime()
    chosen = AuditFilters(**filters)
    if limit is None and fmt == "table":
        limit = TABLE_LIMIT
    detail: dict[str, Any] = {"filters": chosen.used(), **({"after": after} if after is not None else {})}
    tally = _Tally()

    def stream() -> None:
        with reader(rt.engine).connect() as conn, \
                closing(iter_entries(conn, chosen, after=after, limit=None if limit is None else limit + 1)) as found:
            page = found if limit is None else islice(found, limit)
            shown_detail = Opener(conn, reveal=True)  # the command line reads the database: values opened
            render(({**e, "detail": shown_detail(detail_value(e["detail"]))} for e in tally.over(page)), fmt,
                   COLUMNS, title="audit log")
            more = limit is not None and next(found, None) is not None  # the one past the limit
        if more and fmt == "table":
            console.print(f"more entries follow: --after {tally.last}", style="dim", highlight=False)

    _recorded(rt, "audit.query", detail, tally, stream)
    _cut_note(rt)


def _open_export(output: str) -> TextIO:
    """``output`` opened for writing, emptied; created with the private file mode (it holds payee names), and an
    existing regular file tightened to it. Devices and pipes (``/dev/stdout``) keep their mode."""
    if not files.create_private(output) and stat.S_ISREG(os.stat(output).st_mode):
        files.tighten(output)
    return open(output, "w", newline="", encoding="utf-8")  # noqa: SIM115


def _write_export(out: TextIO, fmt: str, chunks: Iterable[list[tuple[Any, ...]]], tally: _Tally) -> None:
    """Write the entries of ``chunks`` (raw rows of :data:`EXPORT_COLUMNS`, see
    :func:`payhub.audit_query.iter_rows`) in the format of :mod:`payhub.audit_query` shared with the API's export
    (each line :func:`~payhub.audit_query.jsonl_row`'s, each CSV row :func:`csv_row`'s), a row at a time into the
    buffered ``out``. ``tally`` counts each row once ``out`` took it, so a write that fails leaves the count of the
    rows written before it."""
    from payhub.audit_query import jsonl_row

    writer = csvsafe.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
    put = writer.writerow if writer is not None else None
    write = out.write
    for rows in chunks:
        written = 0
        try:
            if put is not None:
                for row in rows:
                    put(row)
                    written += 1
            else:
                for row in rows:
                    write(jsonl_row(row))
                    written += 1
        finally:
            if written:
                tally.count += written
                tally.last = rows[written - 1][0]
    out.flush()


@audit.command("export")
@_filters
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default: stdout).")
@pass_ctx
@fail_cleanly
def audit_export(ctx: Context, fmt: str, output: str | None, **filters: Any) -> None:
    """Export entries with their hashes, for archiving or independent verification; streamed, so any number of
    entries takes the same memory.

    JSON Lines keeps the exact stored text: verify the chain from it. In CSV, a cell that a spreadsheet would run
    as a formula gets a leading ' (so it no longer matches its hash).
    """
    rt = ctx.runtime()
    chosen = AuditFilters(**filters)
    tally = _Tally()

    def stream() -> None:
        from payhub.audit_query import iter_rows

        with reader(rt.engine).connect() as conn, closing(iter_rows(conn, chosen)) as chunks:
            # The query runs, and its first rows are read, before the output is opened: a query that fails (a lock
            # or statement timeout, a missing table) leaves an earlier export in the file untouched.
            first = next(chunks, None)
            try:
                out = _open_export(output) if output else sys.stdout
                try:
                    _write_export(out, fmt, () if first is None else chain([first], chunks), tally)
                finally:
                    if output:
                        out.close()
            except OSError as exc:
                raise PayhubError(f"cannot write {output or 'standard output'}: {exc.strerror or exc}") from None

    _recorded(rt, "audit.export", {"filters": chosen.used(), "format": fmt, "output": output or "stdout"}, tally,
              stream)
    if output:
        err_console.print(f"exported {tally.count} entries to {shown(output)}", highlight=False, soft_wrap=True)
    _cut_note(rt)


@audit.command("verify")
@click.option("--expect-head", help="Also require the chain to pass through this head hash, recorded earlier "
              "elsewhere (entries appended since then are fine; a rebuilt chain is not).")
@click.option("--checkpoints/--no-checkpoints", "use_checkpoints", default=None,
              help="Check the chain against the signed checkpoints of audit.checkpoint_dir (default: when a "
              "checkpoint key is configured; --checkpoints without one is an error).")
@click.option("--archive", "archives", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also verify this archive of `payhub retention apply` (repeatable): an audit archive's SHA-256 "
              "matches a signed cut and its entries chain to the cut's hash; an events archive's SHA-256 matches "
              "the retention.applied entry that recorded it.")
@pass_ctx
@fail_cleanly
def audit_verify(ctx: Context, expect_head: str | None, use_checkpoints: bool | None, archives: tuple[Path, ...]
                 ) -> None:
    """Recompute the hash chain, compare the payouts and rewards with what it last recorded, and check it against
    the signed checkpoints; exit 1 naming every problem. With the private checkpoint key, a verification that
    passes and checked the existing checkpoints signs a checkpoint of the head (never with --no-checkpoints).
    After a retention cut the chain starts at the signed cut; --archive checks the entries archived before it."""
    rt = ctx.runtime()
    key = checkpoints.load_key(rt.settings)
    if use_checkpoints and key is None:
        raise ConfigError([("audit.checkpoint_key", "--checkpoints needs audit.checkpoint_key, "
                            "audit.checkpoint_key_file or audit.checkpoint_public_key")])
    checking = key is not None and use_checkpoints is not False
    directory = rt.settings.resolve(rt.settings.audit.checkpoint_dir)
    saved, cp_problems = checkpoints.read(directory) if checking else ([], [])
    ids = AuditedIds()
    with rt.engine.connect() as conn:
        snapshot = share_snapshot(conn)  # PostgreSQL: the head, the log and the tables as of one instant
        head = read_head(conn)
        # A long log is checked by worker processes in ranges (started before the progress display's thread).
        with Workers.start(rt.engine, head[0] if isinstance(head, tuple) else 0, snapshot=snapshot) \
                or contextlib.nullcontext() as workers:
            with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), console=err_console,
                          disable=not err_console.is_terminal, transient=True) as progress:
                task = progress.add_task("verify", total=head[0] if isinstance(head, tuple) else None)
                result = verify_chain(conn, lambda n: progress.advance(task, n), watch={cp.seq for cp in saved},
                                      top_ids=ids.top, workers=workers)
            # The log keeps growing (this command appends to it too), so an earlier head is found inside the
            # chain: the chain up to it verified, so nothing up to that point changed.
            anchored = expect_head is None or conn.execute(
                select(audit_log.c.seq).where(audit_log.c.hash == expect_head.strip().lower())).first() is not None
            try:
                found = list(differences(conn, ids, workers=workers))
            except SQLAlchemyError as exc:  # tables dropped or reshaped outside payhub
                found = [Difference("payouts and rewards",
                                    f"cannot be read ({plain(getattr(exc, 'orig', None) or exc)})")]
    cut_issue = checkpoints.cut_problem(result.cut, key)
    if cut_issue is None and checking and key is not None and (result.ok or result.cut is not None):
        cut_issue = checkpoints.cut_lines_problem(result.cut, key, directory)  # a cut deleted or rolled back
    archive_checks = _check_archives(rt, archives, result, key, directory, {cp.seq for cp in saved},
                                     trusted_log=result.ok and cut_issue is None)
    archived = {seq: digest for check in archive_checks for seq, digest in check.hashes.items()}
    if checking and key is not None:
        cp_problems += checkpoints.check(saved, key, result, archived)
    archive_problems = [f"archive {check.name}: {problem}" for check in archive_checks for problem in check.problems]
    ok = result.ok and anchored and not found and not cp_problems and cut_issue is None and not archive_problems
    signed, sign_error = None, None
    # Only a chain checked against the existing checkpoints in this run is signed: signing an unchecked chain
    # would vouch for one cut back or rewritten since the last checkpoint.
    if ok and checking and key is not None and key.private is not None and result.head_seq is not None \
            and result.head_hash:
        try:
            signed = checkpoints.record(rt, key, result.head_seq, result.head_hash)
        except OSError as exc:
            sign_error = f"the checkpoint of entry {result.head_seq} could not be written to {directory}: " \
                         f"{exc.strerror or exc}"
    try:
        _record_read(rt, "audit.verify", {
            "ok": ok, "checked": result.checked, "first_bad": result.first_bad, "differences": len(found),
            "checkpoints": len(saved) if checking else None, "checkpoint_problems": len(cp_problems),
            "signed": signed.seq if signed is not None else None,
            **({"cut": result.cut.seq} if result.cut is not None else {}),
            **({"archives": [{"name": c.name, "kind": c.kind, "sha256": c.sha256, "ok": not c.problems}
                             for c in archive_checks]}
               if archive_checks else {})})
    except (SQLAlchemyError, AuditHeadDamaged) as exc:  # e.g. a row past the head holds the next sequence number
        reason = plain(getattr(exc, "orig", None) or exc)
        err_console.print(f"this verification could not be recorded in the audit log: {reason}", style="bold red",
                          markup=False, highlight=False, soft_wrap=True)
    failed = "[bold red]audit log FAILED verification[/bold red]"
    if not result.ok:
        where = f" at entry {result.first_bad}" if result.first_bad is not None else ""
        console.print(f"{failed}{where}: {shown(result.problem)}", highlight=False, soft_wrap=True)
    if not anchored:
        console.print(f"{failed}: the chain does not contain the expected head {shown(expect_head)} (the log was "
                      "rebuilt or cut back)", highlight=False, soft_wrap=True)
    if found:
        console.print(f"{failed}: {len(found)} difference(s) between the payouts and rewards tables and what the "
                      "audit log last recorded:", highlight=False, soft_wrap=True)
        for difference in found:
            console.print(f"  {plain(difference)}", markup=False, highlight=False, soft_wrap=True)
    for problem in [*cp_problems, *([cut_issue] if cut_issue else []), *archive_problems]:
        console.print(f"{failed}: {shown(problem)}", highlight=False, soft_wrap=True)
    if ok:
        console.print(f"[green]audit log OK[/green]: {result.checked} entries, head {result.head_hash}",
                      highlight=False, soft_wrap=True)
        for check in archive_checks:
            console.print(f"[green]archive OK[/green]: {_archive_summary(check)}", highlight=False, soft_wrap=True)
    if result.cut is not None:
        covered = checkpoints.covered(saved, result) if checking else 0
        earlier = [c for c in checkpoints.read_cuts(directory) if checkpoints.cut_problem(c, key) is None] \
            if checking else []
        with rt.engine.connect() as conn:
            note = retention.archived_note(conn, result.cut, earlier)
        err_console.print(f"{note}; {covered} signed checkpoint(s) at or before it are covered by the archives"
                          + ("" if archives else " (check them with --archive)"), markup=False, highlight=False,
                          soft_wrap=True)
    _checkpoint_notes(key, checking, saved, directory, signed, sign_error)
    if not ok or sign_error:
        sys.exit(1)


def _check_archives(rt: Runtime, paths: tuple[Path, ...], result: VerifyResult, key: SigningKey | None,
                    directory: Path, watch: set[int], *, trusted_log: bool) -> list[retention.ArchiveCheck]:
    """Verify each archive, in the order given. An audit archive against the signed cuts: the database's (when it
    verifies) and the checkpoint files'. An events archive against the ``retention.applied`` entries that record
    archives: those of the live chain when ``trusted_log`` (it verified from a sound cut), and those of the audit
    archives given that verified."""
    if not paths:
        return []
    trusted = [result.cut] if result.cut is not None and checkpoints.cut_problem(result.cut, key) is None else []
    trusted += [cut for cut in checkpoints.read_cuts(directory) if checkpoints.cut_problem(cut, key) is None]
    kinds = {path: retention.archive_kind(path) for path in paths}
    checks = {path: retention.verify_archive(path, trusted, watch) for path in paths if kinds[path] == "audit"}
    if any(kind == "events" for kind in kinds.values()):
        recorded = [r for check in checks.values() if not check.problems for r in check.applied]
        if trusted_log:
            with rt.engine.connect() as conn:
                recorded += retention.applied_archives(conn, result.cut.seq if result.cut is not None else 0)
        for path in paths:
            if kinds[path] == "events":
                checks[path] = retention.verify_events_archive(path, recorded)
                if not trusted_log and checks[path].recorded_by is None:
                    checks[path].problems.append("the audit log does not verify, so its retention.applied entries "
                                                 "cannot vouch for this events archive")
    return [checks[path] for path in paths]


def _archive_summary(check: retention.ArchiveCheck) -> str:
    """One line on an archive that verified."""
    if check.kind != "events":
        return f"{shown(check.name)}, entries {check.first} to {check.last}, sha256 {check.sha256}"
    ids = ", ".join(map(str, check.ids)) if len(check.ids) <= 10 else f"{check.first} to {check.last}"
    recorded = check.recorded_by
    source = f", recorded by the retention.applied entry {recorded.seq}" if recorded is not None else ""
    named = f" as {shown(recorded.name)}" if recorded is not None and recorded.name != check.name else ""
    return (f"{shown(check.name)} is an events archive: {check.entries} event payload(s), ids {ids}, sha256 "
            f"{check.sha256}{source}{named}")


def _cut_note(rt: Runtime) -> None:
    """Say on stderr that the entries before the retention cut are archived, not in the database."""
    with rt.engine.connect() as conn:
        cut = read_cut(conn)
        if not isinstance(cut, Cut):
            return
        earlier: list[Cut] = []
        with contextlib.suppress(ConfigError):  # an unusable key: `audit verify` names it; the note lists less
            key = checkpoints.load_key(rt.settings)
            earlier = [c for c in checkpoints.read_cuts(rt.settings.resolve(rt.settings.audit.checkpoint_dir))
                       if checkpoints.cut_problem(c, key) is None]
        note = retention.archived_note(conn, cut, earlier)
    err_console.print(f"{note}; these results come from the entries after it", markup=False, highlight=False,
                      soft_wrap=True)


def _checkpoint_notes(key: SigningKey | None, checking: bool, saved: list[checkpoints.Checkpoint], directory: Path,
                      signed: checkpoints.Checkpoint | None, sign_error: str | None) -> None:
    """Say on stderr what the checkpoints covered, or what goes undetected without them."""
    def note(text: str, style: str = "") -> None:
        err_console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    if key is None:
        note("no checkpoint key is configured (audit.checkpoint_key): the chain is checked against itself and the "
             "tables only; a chain rewritten consistently, or cut back with its head moved back, is not detected")
    elif not checking:
        note("signed checkpoints not checked (--no-checkpoints), so no new checkpoint is signed")
    elif not saved:
        note(f"no signed checkpoints in {directory} yet")
    else:
        latest = max(saved, key=lambda cp: cp.seq)
        note(f"checked against {len(saved)} signed checkpoint(s) in {directory}; the latest is of entry "
             f"{latest.seq}, signed at {latest.at}")
    if signed is not None:
        note(f"signed a checkpoint of entry {signed.seq} (key {signed.key_id})")
    if sign_error is not None:
        note(sign_error, "bold red")


@audit.command("trace")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
@fail_cleanly
def audit_trace(ctx: Context, ref: str, fmt: str) -> None:
    """Follow REF (a CRM record id, an event key, or event:N / reward:N / payout:N) to its payouts and attempts."""
    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        chain = provenance.trace(conn, ref)
    _record_read(rt, "audit.trace", {"ref": ref, "events": len(chain)})
    _cut_note(rt)
    if not chain:
        raise PayhubError(f"nothing found for {ref!r}")
    if fmt == "json":
        click.echo(to_json(chain))
    else:
        print_trace(chain)
