"""Retention: ``payhub retention apply`` archives, then deletes, old event payloads and audit entries, and the audit
chain still verifies across the signed cut.

The pipeline runs for real (FakeSource, FakeRail) under a ManualClock: a payout paid at day 0, a payout scheduled at
day 0 but not sent yet, then 40 days later a new deal; the periods are 30 days. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from click.testing import Result
from sqlalchemy import delete, func, insert, select, update

from payhub import checkpoints, signing
from payhub.api import Outcome, SourceRecord
from payhub.clock import utcnow
from payhub.compliance import retention
from payhub.db.schema import audit_cut, audit_log, events, payouts, rewards
from payhub.errors import ConfigError
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.testing import ManualClock

pytestmark = pytest.mark.slow  # each case runs the pipeline, then the CLI several times

BASE = """
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [routing]
    default_rail = "r"
    [rails.r]
    plugin = "fake"
    settle_interval_seconds = 1
    [compliance.retention]
    events_days = 30
    audit_days = 30
    archive_dir = "archive"
"""
KEYED = """
    [audit]
    checkpoint_key_file = "checkpoint.pem"
    checkpoint_dir = "checkpoints"
"""


@dataclass
class Site:
    rt: Runtime
    root: Path
    clock: ManualClock

    @property
    def config(self) -> Path:
        return self.root / "payhub.toml"

    def cli(self, *args: str) -> Result:
        return invoke("-c", str(self.config), *args)

    def verify(self, *args: str) -> Result:
        return self.cli("audit", "verify", *args)

    def sql(self, statement: Any) -> None:
        with self.rt.engine.begin() as conn:
            conn.execute(statement)

    def rows(self, table: Any) -> list[Any]:
        with self.rt.engine.connect() as conn:
            return conn.execute(select(table).order_by(*table.primary_key.columns)).all()

    def push(self, *deals: tuple[str, str, str]) -> None:
        """Ingest one deal per (object id, payee, amount) and calculate it."""
        self.rt.plugins.sources["s"].push(*(  # type: ignore[attr-defined]
            SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-01-01T00:00:00Z", payee, amount, "EUR",
                         attributes={"contact_email": f"{payee}@example.com"}) for object_id, payee, amount in deals))
        poll(self.rt, "s")
        versions = register_program_versions(self.rt)
        while calculate_batch(self.rt, versions):
            pass

    def schedule(self) -> None:
        sync_payees(self.rt)
        while schedule_batch(self.rt):
            pass

    def drain(self) -> None:
        for _ in range(20):
            if not disburse_rail(self.rt, "r"):
                rail = self.rt.plugins.rails["r"]
                for payout in self.rows(payouts):
                    if payout.status == "sent":
                        rail.ledger.set_outcome(payout.idempotency_key, Outcome.PAID)  # type: ignore[attr-defined]
                self.clock.advance(2)
                settle_rail(self.rt, "r")
                return
        pytest.fail("payouts still due after 20 rounds")

    def entries_of(self, subject_type: str, subject_id: int) -> list[int]:
        with self.rt.engine.connect() as conn:
            return list(conn.execute(select(audit_log.c.seq).where(
                audit_log.c.subject_type == subject_type, audit_log.c.subject_id == str(subject_id))).scalars())

    def archives(self) -> list[Path]:
        return sorted((self.root / "archive").glob("*")) if (self.root / "archive").exists() else []


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    with ManualClock("2026-01-01T09:00:00Z") as manual:
        yield manual


def _site(make_runtime: Callable[[str], Runtime], tmp_path: Path, clock: ManualClock, keyed: bool) -> Site:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\np3,Three,IT\n")
    pem, _key = signing.new_private_key()
    (tmp_path / "checkpoint.pem").write_text(pem)
    site = Site(make_runtime(BASE + (KEYED if keyed else "")), tmp_path, clock)
    # Day 0: p1's deal is paid; p2's is scheduled into a payout that is not sent yet.
    site.push(("o1", "p1", "100"))
    site.schedule()
    site.drain()
    site.push(("o2", "p2", "50"))
    site.schedule()
    clock.advance(timedelta(days=40))
    site.push(("o3", "p3", "70"))  # young: within both periods
    return site


@pytest.fixture
def site(make_runtime: Callable[[str], Runtime], tmp_path: Path, clock: ManualClock) -> Site:
    return _site(make_runtime, tmp_path, clock, keyed=True)


def applied(site: Site, *args: str) -> Result:
    result = site.cli("retention", "apply", "--yes", *args)
    assert result.exit_code == 0, result.output
    return result


def read_gz(path: Path) -> bytes:
    with gzip.open(path) as fh:
        return fh.read()


def cut_row(site: Site) -> Any:
    with site.rt.engine.connect() as conn:
        return conn.execute(select(audit_cut)).one()


def assert_verify_fails(site: Site, *words: str, args: tuple[str, ...] = ()) -> None:
    result = site.verify(*args)
    assert result.exit_code == 1, result.output
    for word in words:
        assert word in result.stdout, result.stdout


# ------------------------------------------------------------------------------------------- the core path


@pytest.mark.postgres
def test_apply_archives_old_rows_keeps_live_work_and_verify_passes_across_the_cut(site: Site) -> None:
    paid, live = site.rows(payouts)
    assert (paid.status, live.status) == ("paid", "scheduled")
    needed = min(site.entries_of("payout", live.id) + site.entries_of("reward", 2) + site.entries_of("event", 2))
    before = site.rows(audit_log)

    out = applied(site).stdout
    cut = cut_row(site)
    # The cut stops right below the first entry the live payout, its reward and its event need.
    assert cut.seq == needed - 1
    assert f"audit log cut after entry {cut.seq}" in out
    remaining = site.rows(audit_log)
    assert remaining[0].seq == cut.seq + 1 and remaining[0].prev_hash == cut.hash
    assert cut.hash == next(r.hash for r in before if r.seq == cut.seq)
    applied_entry = json.loads(remaining[-1].detail)
    assert remaining[-1].action == "retention.applied"
    assert applied_entry["cut_seq"] == cut.seq and applied_entry["events"] == 1
    assert {a["kind"] for a in applied_entry["archives"]} == {"events", "audit"}

    # Events: the old paid one lost its payload but keeps key, amount and dates; the live and young ones keep all.
    old, kept, young = site.rows(events)
    assert (old.raw, old.attributes) == (None, "{}")
    assert (old.key, old.amount, old.currency, old.occurred_at) == (kept.key.replace("o2", "o1"), "100", "EUR",
                                                                     kept.occurred_at)
    assert kept.raw is not None and "p2@example.com" in kept.attributes
    assert young.raw is not None

    # Archives: private, named with date and range, their SHA-256 recorded; the audit one holds every entry cut.
    names = [p.name for p in site.archives()]
    assert names == sorted([f"audit-20260210-1-{cut.seq}.jsonl.gz", "events-20260210-1-1.jsonl.gz"])
    for path in site.archives():
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    audit_file = site.root / "archive" / cut.archive
    lines = [json.loads(line) for line in read_gz(audit_file).splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, cut.seq + 1))
    assert lines[-1]["hash"] == cut.hash
    event_lines = [json.loads(line) for line in read_gz(site.root / "archive" / names[1]).splitlines()]
    assert event_lines[0]["key"] == old.key and "p1@example.com" in event_lines[0]["attributes"]

    result = site.verify()
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("audit log OK")
    assert f"entries 1 to {cut.seq} are archived in {cut.archive}" in result.stderr
    archive = site.verify("--archive", str(audit_file))
    assert archive.exit_code == 0, archive.output
    assert f"archive OK: {cut.archive}, entries 1 to {cut.seq}" in archive.stdout

    # The live payout is still sent after the cut: the pre-send check finds what it needs.
    site.drain()
    assert site.rows(payouts)[1].status == "paid"
    # The old record sent again by the CRM is deduplicated by its kept key: not paid twice.
    site.push(("o1", "p1", "100"))
    site.schedule()
    site.drain()
    assert len(site.rows(events)) == 4 - 1  # o1 (again) added nothing
    assert [r.payee_id for r in site.rows(rewards)] == ["p1", "p2", "p3"]
    assert [p.payee_id for p in site.rows(payouts)] == ["p1", "p2", "p3"]
    result = site.verify()
    assert result.exit_code == 0, result.output


def test_a_second_run_cuts_after_the_first_and_both_archives_verify(site: Site) -> None:
    applied(site)
    first = cut_row(site)
    site.schedule()
    site.drain()
    site.clock.advance(timedelta(days=40))
    applied(site)
    second = cut_row(site)
    assert second.seq > first.seq
    assert second.archive.startswith(f"audit-20260322-{first.seq + 1}-{second.seq}")
    files = [site.root / "archive" / first.archive, site.root / "archive" / second.archive]
    result = site.verify(*[arg for path in files for arg in ("--archive", str(path))])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("archive OK") == 2
    # The note names the range of the latest archive, and the earlier archive with the entries before it.
    latest = f"entries {first.seq + 1} to {second.seq} are archived in {second.archive}"
    earlier = f"entries 1 to {first.seq} in earlier archives: {first.archive} (up to entry {first.seq})"
    assert latest in result.stderr and earlier in result.stderr, result.stderr
    assert "entries 1 to" not in result.stderr.replace(earlier, ""), result.stderr
    query = site.cli("audit", "query", "--format", "json")
    assert latest in query.stderr and earlier in query.stderr, query.stderr
    # The first run's retention.applied entry is now archived: its events archive verifies with the audit archive
    # that holds that entry, and says so when that archive is not given.
    events_files = [p for p in site.archives() if p.name.startswith("events-")]
    assert [p.name for p in events_files] == ["events-20260210-1-1.jsonl.gz", "events-20260322-2-3.jsonl.gz"]
    assert_verify_fails(site, "no retention.applied entry", "give that cut's audit archive with --archive too",
                        args=("--archive", str(events_files[0])))
    every = [*files, *events_files]
    result = site.verify(*[arg for path in every for arg in ("--archive", str(path))])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("archive OK") == 4
    assert f"archive OK: {events_files[1].name} is an events archive: 2 event payload(s), ids 2, 3" in result.stdout
    # Every payload and every entry up to the second cut is archived once.
    assert [r.raw for r in site.rows(events)] == [None, None, None]
    seqs = [json.loads(line)["seq"] for path in files for line in read_gz(path).splitlines()]
    assert seqs == list(range(1, second.seq + 1))


def test_dry_run_changes_nothing(site: Site) -> None:
    before = (site.rows(audit_log), site.rows(events), site.rows(rewards), site.rows(payouts))
    result = site.cli("retention", "apply", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "events: 1 payload(s)" in result.stdout and "audit: entries 1 to" in result.stdout
    assert "dry run: nothing was written or deleted" in result.stdout
    assert (site.rows(audit_log), site.rows(events), site.rows(rewards), site.rows(payouts)) == before
    assert site.archives() == [] and site.rows(audit_cut) == []
    assert not (site.root / "archive").exists()  # created to check it can be written, then removed


@pytest.mark.parametrize(("where", "reason"), [("/proc/archive", "No such file or directory"),
                                               ("file", "exists and is not a directory"),
                                               ("file/archive", "Not a directory")])
def test_an_archive_dir_that_cannot_be_created_is_a_configuration_error(site: Site, where: str, reason: str) -> None:
    (site.root / "file").write_text("not a directory")
    target = site.root / where
    site.config.write_text(site.config.read_text().replace('archive_dir = "archive"', f'archive_dir = "{target}"'))
    before = (site.rows(audit_log), site.rows(audit_cut), site.rows(events))
    for args in (("--dry-run",), ("--yes",)):
        result = site.cli("retention", "apply", *args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "compliance.retention.archive_dir" in result.stderr, result.stderr
        assert f"{target}" in result.stderr and reason in result.stderr, result.stderr
    with pytest.raises(ConfigError, match=reason):
        retention.apply(Runtime(load_settings(str(site.config))))
    assert (site.rows(audit_log), site.rows(audit_cut), site.rows(events)) == before
    assert (site.root / "file").read_text() == "not a directory"


def test_an_events_archive_is_checked_against_the_retention_applied_entry_that_records_it(site: Site) -> None:
    applied(site)
    path = next(p for p in site.archives() if p.name.startswith("events-"))
    with site.rt.engine.connect() as conn:
        recorded = conn.execute(select(audit_log.c.seq).where(audit_log.c.action == "retention.applied")).scalar()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    result = site.verify("--archive", str(path))
    assert result.exit_code == 0, result.output
    assert (f"archive OK: {path.name} is an events archive: 1 event payload(s), ids 1, sha256 {digest}, recorded by "
            f"the retention.applied entry {recorded}") in result.stdout, result.stdout

    rows = [json.loads(line) for line in read_gz(path).splitlines()]
    rows[0]["raw"] = "something else"
    edited = site.root / "edited" / path.name
    edited.parent.mkdir()
    edited.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows)))
    assert_verify_fails(site, f"archive {path.name}", f"the retention.applied entry {recorded} recorded {digest}",
                        "the file was changed", args=("--archive", str(edited)))
    stray = site.root / "edited" / "events-other.jsonl.gz"
    stray.write_bytes(edited.read_bytes())
    assert_verify_fails(site, "no retention.applied entry of the verified audit log records this events archive",
                        args=("--archive", str(stray)))
    # An audit log that no longer verifies vouches for no events archive.
    with site.rt.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == recorded).values(actor="someone else"))
    assert_verify_fails(site, "cannot vouch for this events archive", args=("--archive", str(path)))


def test_without_a_private_key_the_audit_log_is_not_cut(make_runtime: Callable[[str], Runtime], tmp_path: Path,
                                                        clock: ManualClock) -> None:
    site = _site(make_runtime, tmp_path, clock, keyed=False)
    before = site.rows(audit_log)
    result = site.cli("retention", "apply", "--yes")
    assert result.exit_code == 2, result.output
    assert "audit.checkpoint_key" in result.stderr and "sign" in result.stderr
    with pytest.raises(ConfigError):
        retention.apply(site.rt)
    assert site.rows(audit_log)[: len(before)] == before and site.archives() == []


# ---------------------------------------------------------------------------------------------- tampering


def test_an_entry_edited_or_deleted_after_the_cut_is_detected(site: Site) -> None:
    applied(site)
    cut = cut_row(site)
    site.sql(update(audit_log).where(audit_log.c.seq == cut.seq + 2).values(actor="someone else"))
    assert_verify_fails(site, f"entry {cut.seq + 2} was altered")
    site.sql(delete(audit_log).where(audit_log.c.seq == cut.seq + 2))
    assert_verify_fails(site, f"entry {cut.seq + 2} is missing")


def test_the_first_entry_after_the_cut_deleted_is_detected(site: Site) -> None:
    applied(site)
    cut = cut_row(site)
    site.sql(delete(audit_log).where(audit_log.c.seq == cut.seq + 1))
    assert_verify_fails(site, f"entry {cut.seq + 1} is missing")


@pytest.mark.parametrize("change", ["seq", "hash", "signature", "archive_sha256"])
def test_a_tampered_cut_row_is_detected(site: Site, change: str) -> None:
    applied(site)
    cut = cut_row(site)
    if change == "seq":  # move the cut one entry on, relinked to the entry it now claims, and delete that entry
        moved = site.rows(audit_log)[0]
        site.sql(delete(audit_log).where(audit_log.c.seq == moved.seq))
        site.sql(update(audit_cut).values(seq=moved.seq, hash=moved.hash))
        assert_verify_fails(site, "retention cut", "bad signature")
    elif change == "hash":
        site.sql(update(audit_cut).values(hash="0" * 64))
        assert_verify_fails(site, f"entry {cut.seq + 1} does not link")
    elif change == "signature":
        site.sql(update(audit_cut).values(signature=""))
        assert_verify_fails(site, "retention cut", "is not signed")
    else:
        site.sql(update(audit_cut).values(archive_sha256="f" * 64))
        assert_verify_fails(site, "retention cut", "bad signature")


def test_the_cut_row_deleted_is_detected(site: Site) -> None:
    applied(site)
    site.sql(delete(audit_cut))
    assert_verify_fails(site, "entry 1 is missing", "no retention cut records")


def test_a_cut_without_a_key_to_check_it_fails(site: Site) -> None:
    applied(site)
    text = site.config.read_text().replace('checkpoint_key_file = "checkpoint.pem"', "")
    site.config.write_text(text)
    assert_verify_fails(site, "cannot be checked", "audit.checkpoint_public_key")
    public = signing.parse_private((site.root / "checkpoint.pem").read_text()).public_text
    site.config.write_text(text.replace("[audit]", f'[audit]\ncheckpoint_public_key = "{public}"'))
    result = site.verify()
    assert result.exit_code == 0, result.output


def test_an_edited_archive_line_is_detected(site: Site) -> None:
    applied(site)
    cut = cut_row(site)
    path = site.root / "archive" / cut.archive
    lines = read_gz(path).splitlines()
    entry = json.loads(lines[2])
    entry["actor"] = "someone else"
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    edited = site.root / "edited" / cut.archive
    edited.parent.mkdir()
    edited.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    assert_verify_fails(site, f"archive {cut.archive}", "entry 3", "was altered", "the file was changed",
                        args=("--archive", str(edited)))
    result = site.verify("--archive", str(path))  # the original still verifies
    assert result.exit_code == 0, result.output


def test_an_archive_no_cut_records_fails(site: Site, tmp_path: Path) -> None:
    applied(site)
    stray = tmp_path / "stray.jsonl.gz"
    stray.write_bytes(gzip.compress(b""))
    assert_verify_fails(site, "no signed retention cut records stray.jsonl.gz", args=("--archive", str(stray)))


def test_checkpoints_before_the_cut_are_covered_and_compared_with_the_archive(site: Site) -> None:
    key = signing.parse_private((site.root / "checkpoint.pem").read_text())
    first = site.rows(audit_log)[0]
    directory = site.root / "checkpoints"
    checkpoints.append(directory, checkpoints.sign(key, 1, first.hash))
    applied(site)
    cut = cut_row(site)
    assert any(c.seq == cut.seq and c.signature == cut.signature for c in checkpoints.read_cuts(directory))
    result = site.verify()
    assert result.exit_code == 0, result.output
    assert "1 signed checkpoint(s) at or before it are covered by the archive" in result.stderr
    archive = str(site.root / "archive" / cut.archive)
    assert site.verify("--archive", archive).exit_code == 0
    checkpoints.append(directory, checkpoints.sign(key, 1, "a" * 64))  # signed, but not what entry 1 was
    assert site.verify().exit_code == 0  # without the archive it cannot be compared
    assert_verify_fails(site, "entry 1 has hash", "in the archive", args=("--archive", archive))


def test_query_and_export_say_entries_before_the_cut_are_archived(site: Site) -> None:
    applied(site)
    cut = cut_row(site)
    for args in (("audit", "query", "--format", "json"), ("audit", "export")):
        result = site.cli(*args)
        assert result.exit_code == 0, result.output
        assert f"entries 1 to {cut.seq} are archived" in result.stderr
    rows = [json.loads(line) for line in site.cli("audit", "export").stdout.splitlines()]
    assert rows[0]["seq"] == cut.seq + 1


# --------------------------------------------------------------------------------------------- crash safety


def _crash_in_child(config: Path, when: str) -> int:
    """Run ``retention apply`` in a forked process killed before (or right after) its delete transaction, or
    (``renamed``) after naming its archives, before the cut's line is written to the checkpoint directory."""
    def child() -> None:
        rt = Runtime(load_settings(str(config)))
        rt.load_plugins()
        original = retention._delete

        def dying(runtime: Runtime, outcome: Any) -> None:
            if when == "after":
                original(runtime, outcome)
            os._exit(9)

        def dying_line(*_args: Any) -> None:  # the archive is named, the cut's line not yet written
            os._exit(9)

        if when == "renamed":
            checkpoints.append_cut = dying_line  # type: ignore[assignment]
        else:
            retention._delete = dying  # type: ignore[assignment]
        retention.apply(rt)
        os._exit(0)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    return process.exitcode or 0


def test_a_crash_between_archive_and_delete_deletes_nothing_and_the_next_run_archives_once(site: Site) -> None:
    before = site.rows(audit_log)
    assert _crash_in_child(site.config, "before") == 9
    pending = site.archives()
    assert pending and all(p.name.endswith(".pending") for p in pending)  # complete, fsynced, not named
    assert site.rows(audit_log) == before and site.rows(audit_cut) == []
    assert all(e.raw is not None for e in site.rows(events))
    assert site.verify().exit_code == 0

    out = applied(site)
    assert "removed (the interrupted run deleted nothing" in out.stderr
    cut = cut_row(site)
    assert not any(p.name.endswith(".pending") for p in site.archives())
    seqs = [json.loads(line)["seq"] for line in read_gz(site.root / "archive" / cut.archive).splitlines()]
    assert seqs == list(range(1, cut.seq + 1))
    result = site.verify("--archive", str(site.root / "archive" / cut.archive))
    assert result.exit_code == 0, result.output


def test_a_crash_after_the_delete_commits_completes_the_archive_on_the_next_run(site: Site) -> None:
    assert _crash_in_child(site.config, "after") == 9
    cut = cut_row(site)
    assert [p.name for p in site.archives() if p.name.startswith(cut.archive)][0].endswith(".pending")
    with site.rt.engine.connect() as conn:
        assert conn.execute(select(func.min(audit_log.c.seq))).scalar() == cut.seq + 1
    out = applied(site)
    assert f"{cut.archive}: completed" in out.stderr
    assert (site.root / "archive" / cut.archive).exists()
    result = site.verify("--archive", str(site.root / "archive" / cut.archive))
    assert result.exit_code == 0, result.output


def test_the_daemon_checkpoints_across_the_cut_and_refuses_a_tampered_one(site: Site) -> None:
    key = signing.parse_private((site.root / "checkpoint.pem").read_text())
    directory = site.root / "checkpoints"
    checkpoints.append(directory, checkpoints.sign(key, 1, site.rows(audit_log)[0].hash))
    applied(site)
    cut = cut_row(site)
    checkpointer = checkpoints.Checkpointer(site.rt, key)
    assert checkpointer.last is not None and checkpointer.last.seq == 1  # before the cut
    checkpointer.last_time = 0  # due now
    signed = checkpointer.tick()
    assert signed is not None and signed.seq == site.rows(audit_log)[-1].seq > cut.seq

    site.sql(update(audit_cut).values(signature=cut.signature[::-1]))
    site.push(("o9", "p3", "5"))  # the head moves
    checkpointer.last_time = 0
    assert checkpointer.tick() is None
    assert checkpointer.refused is not None and "bad signature" in checkpointer.refused


def test_a_kill_before_the_cut_line_is_written_is_repaired_by_the_next_run(site: Site) -> None:
    directory = site.root / "checkpoints"
    assert _crash_in_child(site.config, "renamed") == 9
    cut = cut_row(site)
    assert (site.root / "archive" / cut.archive).exists() and checkpoints.read_cuts(directory) == []
    assert site.verify().exit_code == 0  # a signed cut later than every line is not a problem
    out = applied(site)
    assert f"the signed cut at entry {cut.seq} was missing" in out.stderr
    assert [(c.seq, c.signature) for c in checkpoints.read_cuts(directory)] == [(cut.seq, cut.signature)]
    applied(site)  # idempotent: the line is there, not appended again
    assert len(checkpoints.read_cuts(directory)) == 1


# ------------------------------------------------------------------------------------- refusals before archiving


def assert_refused(site: Site, *words: str) -> None:
    before = (site.rows(audit_log), site.rows(audit_cut), site.rows(events), site.archives())
    for args in (("--dry-run",), ("--yes",)):
        result = site.cli("retention", "apply", *args)
        assert result.exit_code == 1, result.output
        for word in words:
            assert word in result.stderr, result.stderr
    assert (site.rows(audit_log), site.rows(audit_cut), site.rows(events), site.archives()) == before


@pytest.mark.postgres
def test_a_forged_unsigned_cut_is_refused_not_signed_over(site: Site) -> None:
    """An insider deletes entries 1 to 5 and writes an unsigned cut at 5: retention must not chain from it."""
    fifth = site.rows(audit_log)[4]
    site.sql(delete(audit_log).where(audit_log.c.seq <= 5))
    site.sql(insert(audit_cut).values(id=1, seq=5, hash=fifth.hash, at=utcnow(), archive="audit-x-1-5.jsonl.gz",
                                      archive_sha256="0" * 64, top_payout=0, top_reward=0, signature="", key_id=""))
    assert_verify_fails(site, "is not signed")
    assert_refused(site, "does not verify", "retention cut at entry 5", "is not signed")
    assert_verify_fails(site, "is not signed")  # still failing: nothing signed over the forgery


def test_a_chain_broken_after_a_valid_cut_is_refused(site: Site) -> None:
    applied(site)
    cut = cut_row(site)
    site.sql(update(audit_log).where(audit_log.c.seq == cut.seq + 2).values(actor="someone else"))
    site.clock.advance(timedelta(days=40))
    assert_refused(site, "does not verify", f"entry {cut.seq + 2}: entry {cut.seq + 2} was altered")


def test_a_cut_behind_the_checkpoint_directory_is_refused(site: Site) -> None:
    applied(site)
    cut = cut_row(site)
    key = signing.parse_private((site.root / "checkpoint.pem").read_text())
    later = checkpoints.sign_cut(key, cut.seq + 50, "a" * 64, "audit-later.jsonl.gz", "b" * 64)
    checkpoints.append_cut(site.root / "checkpoints", later)
    assert_verify_fails(site, f"entry {cut.seq + 50}", "is later than the database's cut")
    assert_refused(site, f"entry {cut.seq + 50}", "is later than the database's cut")


# ------------------------------------------------------------------------ archived ids, concurrent runs, pending


def test_an_events_only_run_after_a_cut_keeps_verify_passing(site: Site) -> None:
    applied(site)
    cut = cut_row(site)
    assert (cut.top_payout, cut.top_reward) == (1, 1)  # signed with the cut
    site.config.write_text(site.config.read_text().replace("audit_days = 30", ""))
    site.drain()  # p2's reward is paid: its event is due; the audit log is not cut this time
    site.clock.advance(timedelta(days=1))
    out = applied(site)
    assert "archived 1 events" in out.stdout and "audit log cut" not in out.stdout
    assert cut_row(site) == cut
    result = site.verify()
    assert result.exit_code == 0, result.output


def test_the_archived_ids_are_covered_by_the_cut_signature(site: Site) -> None:
    applied(site)
    site.sql(update(audit_cut).values(top_payout=9))
    assert_verify_fails(site, "retention cut", "bad signature")


@pytest.mark.postgres
def test_a_second_concurrent_run_is_refused_and_the_first_completes(site: Site) -> None:
    ready, go = site.root / "ready", site.root / "go"

    def child() -> None:
        rt = Runtime(load_settings(str(site.config)))
        rt.load_plugins()
        original = retention._delete

        def waiting(runtime: Runtime, outcome: Any) -> None:  # archives written, lock held, nothing deleted yet
            ready.touch()
            for _ in range(600):
                if go.exists():
                    break
                time.sleep(0.05)
            original(runtime, outcome)

        retention._delete = waiting  # type: ignore[assignment]
        retention.apply(rt)
        os._exit(0)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    try:
        for _ in range(600):
            if ready.exists() or not process.is_alive():
                break
            time.sleep(0.05)
        assert ready.exists()
        pending = site.archives()
        assert len(pending) == 2 and all(p.name.endswith(".pending") for p in pending)
        result = site.cli("retention", "apply", "--yes")
        assert result.exit_code == 1, result.output
        assert "another `payhub retention apply` is running" in result.stderr
        assert site.archives() == pending  # the first run's files are untouched
    finally:
        go.touch()
        process.join(60)
    assert process.exitcode == 0
    cut = cut_row(site)
    assert [p.name for p in site.archives()] == sorted([cut.archive, "events-20260210-1-1.jsonl.gz"])
    result = site.verify("--archive", str(site.root / "archive" / cut.archive))
    assert result.exit_code == 0, result.output
    assert applied(site).stdout.strip().endswith("nothing to archive")  # the lock was released


def test_pending_archives_are_created_exclusively_with_a_unique_name(site: Site, tmp_path: Path) -> None:
    rows = [{"id": 1, "raw": "x"}]
    first, path = retention._write(tmp_path / "a", "events-1-1.jsonl.gz", rows, None)
    second, other = retention._write(tmp_path / "a", "events-1-1.jsonl.gz", rows, None)
    assert path != other and first.sha256 == second.sha256
    assert path.name.startswith("events-1-1.jsonl.gz.") and path.name.endswith(".pending")
    target = tmp_path / "target"
    target.write_text("kept")
    os.symlink(target, tmp_path / "a" / "link.pending")
    retention.settle_interrupted(site.rt, tmp_path / "a")  # neither pending file is recorded: both removed
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["link.pending"] and target.read_text() == "kept"
