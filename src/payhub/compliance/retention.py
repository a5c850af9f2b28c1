"""Retention (``payhub retention apply``): archive, then delete, old event payloads and old audit entries.

**Events.** An event is due when it is ``calculated``, both its ``ingested_at`` and its ``occurred_at`` (when
known) are older than ``events_days``, no calculation of it failed (a retry reads the payload), every reward it
produced is done (``sent``, ``paid`` or ``cancelled``) and it still holds a payload. Its whole row is archived, then its
payload (``raw``, ``attributes``) is removed; the row stays: its key keeps deduplicating a record the CRM sends
again, and its amounts and dates stay for tax. Quarantined events keep their raw text (it is their evidence, and
their correction compares it).

**Audit entries.** The cut moves to the last entry that is both older than ``audit_days`` and before the first
entry any live work still reads (:func:`needed_floor`: the entries of rewards and payouts not yet sent or final,
which the pre-send check and ``payhub explain`` read, and of events not calculated yet or whose rewards are not
final). The entries from the previous cut to the new one are archived (every field and the hash), verified as a
chain while written, then deleted, and ``audit_cut`` records the last one's ``seq`` and hash with the archive's name
and SHA-256, signed with the checkpoint key.

**Trust.** A run holds the database's retention lock from start to end (:func:`run_lock`: a second run is refused
at once), then checks the audit log as ``payhub audit verify`` does (:func:`audit_problems`: the chain from the cut
to the head, the cut's signature, the checkpoint directory's cut lines and checkpoints) and refuses to archive,
delete or sign anything when it does not verify, so a new cut never vouches for a forged or broken one. The cut's
line in the checkpoint directory is appended if missing (a run killed after its commit).

**Crash safety.** Each archive is written to ``<name>.<random>.pending`` (created exclusively), flushed and fsynced
before the transaction that deletes; that transaction deletes exactly what was archived (counts are compared, else
it rolls back), moves the cut and records ``retention.applied``. Only after commit is the file renamed to its name.
A run first settles what an interrupted run left: a pending file whose name and SHA-256 the last
``retention.applied`` (or the cut) records is renamed (the commit happened), any other is removed (nothing was
deleted; the rows are archived again by this run). So every archived row is in exactly one named archive.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import ColumnElement, Connection, String, and_, cast, delete, exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from payhub import checkpoints, files, signing
from payhub.audit import GENESIS, Cut, canonical_json, entry_hash, read_cut
from payhub.clock import isoformat, utcnow
from payhub.db.engine import sqlite_file
from payhub.db.schema import audit_cut, audit_log, calculations, events, payouts, rewards
from payhub.errors import ConfigError, PayhubError
from payhub.runtime import Runtime
from payhub.states import FINAL_PAYOUT, CalculationStatus, EventStatus, PayoutStatus, RewardStatus

FINAL_REWARDS: tuple[str, ...] = (RewardStatus.SENT, RewardStatus.PAID, RewardStatus.CANCELLED)
"""Reward statuses retention treats as done: nothing reads their entries or their event's payload again. ``sent``
counts: rails such as ``csv_export`` and credit notes never report ``paid``, and the pre-send check reads only
entries of payouts not sent yet."""
FINAL_PAYOUTS: tuple[str, ...] = (*sorted(FINAL_PAYOUT), PayoutStatus.SENT, PayoutStatus.PAID)
"""Payout statuses retention treats as done: accepted by the rail or final (a ``sent`` or ``paid`` payout may still
be returned: see docs/compliance.md)."""
ACTION = "retention.applied"
PENDING = ".pending"
_PENDING_NAME = re.compile(r"(?P<name>.+)\.[0-9a-f]{16}\.pending")
CHUNK = 5000
LOCK_ID = int.from_bytes(b"payhubRT", "big")
"""The PostgreSQL advisory lock key that retention runs hold."""


class RetentionError(PayhubError):
    """Retention cannot run, or the data changed while it archived (nothing was deleted)."""


@dataclass(frozen=True, slots=True)
class Archive:
    """An archive file written by a run: its name in ``archive_dir``, SHA-256 of its bytes, and rows held."""

    name: str
    sha256: str
    rows: int
    first: int
    last: int


@dataclass
class Plan:
    """What a run archives and deletes; nothing is written to make it."""

    events: int = 0
    events_range: tuple[int, int] | None = None
    events_cutoff: datetime | None = None
    previous_cut: Cut | None = None
    audit_cutoff: datetime | None = None
    audit_to: int | None = None  # the new cut: entries (previous cut, audit_to] are archived
    audit_floor: int | None = None  # the first entry live work reads (None: none)

    @property
    def audit_from(self) -> int:
        return (self.previous_cut.seq if self.previous_cut is not None else 0) + 1

    @property
    def audit_entries(self) -> int:
        return 0 if self.audit_to is None else self.audit_to - self.audit_from + 1


@dataclass
class Outcome:
    """What a run did: the plan, the archives written, the new cut, and what it settled from an interrupted run."""

    plan: Plan
    events_archive: Archive | None = None
    audit_archive: Archive | None = None
    cut: Cut | None = None
    settled: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # what the start-of-run check put right (a missing cut line)
    archived_ids: dict[str, int] = field(default_factory=dict)  # highest payout / reward ids archived, this cut too


def checkpoint_key(rt: Runtime) -> signing.SigningKey:
    """The private checkpoint key that signs a cut; ConfigError naming the setting when none is configured."""
    key = checkpoints.load_key(rt.settings)
    if key is None or key.private is None:
        raise ConfigError([("audit.checkpoint_key", "cutting the audit log (compliance.retention.audit_days) needs "
                            "the private checkpoint key (audit.checkpoint_key or audit.checkpoint_key_file) to sign "
                            "the cut")])
    return key


def _due_events(cutoff: datetime) -> ColumnElement[bool]:
    open_reward = exists().where(rewards.c.event_id == events.c.id, rewards.c.status.not_in(FINAL_REWARDS))
    failed = exists().where(calculations.c.event_id == events.c.id,
                            calculations.c.status == CalculationStatus.FAILED)
    return and_(events.c.status == EventStatus.CALCULATED, events.c.ingested_at < cutoff,
                or_(events.c.occurred_at.is_(None), events.c.occurred_at < cutoff),
                or_(events.c.raw.is_not(None), events.c.attributes != "{}"), ~open_reward, ~failed)


def needed_floor(conn: Connection) -> int | None:
    """The first audit entry that live work still reads, or None: the entries of rewards and payouts neither
    sent nor final, and of events not calculated yet or with such a reward. One indexed lookup per live row
    (``ix_audit_subject``), so its cost follows the live work, not the log's length."""
    live_reward = and_(audit_log.c.subject_type == "reward",
                       audit_log.c.subject_id == cast(rewards.c.id, String))
    live_payout = and_(audit_log.c.subject_type == "payout",
                       audit_log.c.subject_id == cast(payouts.c.id, String))
    live_event = and_(audit_log.c.subject_type == "event", audit_log.c.subject_id == cast(events.c.id, String))
    open_reward = exists().where(rewards.c.event_id == events.c.id, rewards.c.status.not_in(FINAL_REWARDS))
    queries = [
        select(func.min(audit_log.c.seq)).select_from(rewards.join(audit_log, live_reward))
        .where(rewards.c.status.not_in(FINAL_REWARDS)),
        select(func.min(audit_log.c.seq)).select_from(payouts.join(audit_log, live_payout))
        .where(payouts.c.status.not_in(FINAL_PAYOUTS)),
        select(func.min(audit_log.c.seq)).select_from(events.join(audit_log, live_event))
        .where(or_(events.c.status.in_((EventStatus.WAITING, EventStatus.INGESTED)), open_reward)),
    ]
    found = [value for value in (conn.execute(q).scalar() for q in queries) if value is not None]
    return min(found) if found else None


def plan(rt: Runtime) -> Plan:
    """What :func:`apply` would archive and delete now (RetentionError when the cut row is damaged)."""
    retention = rt.settings.compliance.retention
    now = utcnow()
    result = Plan()
    with rt.engine.connect() as conn:
        if retention.events_days is not None:
            result.events_cutoff = now - timedelta(days=retention.events_days)
            count, low, high = conn.execute(select(func.count(), func.min(events.c.id), func.max(events.c.id))
                                            .where(_due_events(result.events_cutoff))).one()
            result.events = int(count)
            result.events_range = (int(low), int(high)) if count else None
        if retention.audit_days is not None:
            cut = read_cut(conn)
            if isinstance(cut, str):
                raise RetentionError(f"{cut}: run `payhub audit verify`")
            result.previous_cut = cut
            result.audit_cutoff = now - timedelta(days=retention.audit_days)
            # The first entry at or after the cutoff: entries before it are old (replicas' clocks may differ a
            # little, so an entry is never archived while younger than the period).
            young = conn.execute(select(func.min(audit_log.c.seq))
                                 .where(audit_log.c.at >= isoformat(result.audit_cutoff))).scalar()
            top = conn.execute(select(func.max(audit_log.c.seq))).scalar()
            limit = (young - 1) if young is not None else top
            result.audit_floor = needed_floor(conn)
            if limit is not None and result.audit_floor is not None:
                limit = min(limit, result.audit_floor - 1)
            if limit is not None and limit >= result.audit_from:
                result.audit_to = int(limit)
    return result


def apply(rt: Runtime, *, progress: Callable[[str, int], Any] | None = None) -> Outcome:
    """Holding :func:`run_lock`: check the audit log (:func:`audit_problems`, when a checkpoint key is configured)
    and append the cut's line if missing, settle an interrupted run, archive what :func:`plan` finds, then delete it
    in one audited transaction and append the new cut's line.

    ``progress(kind, rows)`` is called as rows are archived. Raises ConfigError when the audit log is to be cut and
    no private checkpoint key is configured or ``archive_dir`` cannot be created or written
    (:func:`check_archive_dir`), RetentionError when another run holds the lock, the audit log, its cut
    or the checkpoints do not verify, or the rows changed while archiving (in each case nothing is deleted).
    """
    retention = rt.settings.compliance.retention
    key = checkpoint_key(rt) if retention.audit_days is not None else checkpoints.load_key(rt.settings)
    directory = rt.settings.resolve(retention.archive_dir)
    check_archive_dir(directory, keep=True)
    cp_dir = rt.settings.resolve(rt.settings.audit.checkpoint_dir)
    outcome = Outcome(Plan())
    with run_lock(rt):
        if key is not None:
            cut, problems = audit_problems(rt, key)
            if problems:
                raise RetentionError(refusal(problems))
            if cut is not None and checkpoints.ensure_cut_line(cp_dir, cut):
                outcome.repaired.append(f"the signed cut at entry {cut.seq} was missing from {cp_dir}: appended")
        outcome.settled = settle_interrupted(rt, directory)
        outcome.plan = plan(rt)
        _archive_and_delete(rt, outcome, key, directory, progress)
        if outcome.cut is not None:
            checkpoints.ensure_cut_line(cp_dir, outcome.cut)
    return outcome


def _archive_and_delete(rt: Runtime, outcome: Outcome, key: signing.SigningKey | None, directory: Path,
                        progress: Callable[[str, int], Any] | None) -> None:
    """Write the planned archives as pending files, delete their rows in one transaction, then name the files."""
    chosen = outcome.plan
    stamp = utcnow().strftime("%Y%m%d")
    written: list[tuple[Path, str]] = []
    try:
        if chosen.events_range is not None and chosen.events_cutoff is not None:
            low, high = chosen.events_range
            name = f"events-{stamp}-{low}-{high}.jsonl.gz"
            outcome.events_archive, path = _write(directory, name, _event_rows(rt, chosen.events_cutoff, low, high),
                                                  _reporter(progress, "events"))
            written.append((path, name))
        if chosen.audit_to is not None and key is not None:
            name = f"audit-{stamp}-{chosen.audit_from}-{chosen.audit_to}.jsonl.gz"
            checker = _ChainCheck(chosen.audit_from, chosen.previous_cut)
            outcome.audit_archive, path = _write(directory, name, checker.over(_audit_rows(rt, chosen)),
                                                 _reporter(progress, "audit"))
            written.append((path, name))
            if checker.last_hash is None or checker.count != chosen.audit_entries:
                raise RetentionError(f"entries {chosen.audit_from} to {chosen.audit_to} could not all be read "
                                     f"({checker.count} found): run `payhub audit verify`")
            tops = chosen.previous_cut.archived_ids() if chosen.previous_cut is not None else {}
            outcome.archived_ids = {kind: max(tops.get(kind, 0), checker.ids.get(kind, 0))
                                    for kind in ("payout", "reward")}
            outcome.cut = checkpoints.sign_cut(key, chosen.audit_to, checker.last_hash, name,
                                               outcome.audit_archive.sha256, outcome.archived_ids)
        if outcome.events_archive is None and outcome.cut is None:
            return
        _delete(rt, outcome)
    except BaseException:
        for path, _name in written:
            path.unlink(missing_ok=True)
        raise
    for path, name in written:
        os.replace(path, directory / name)
    _fsync_dir(directory)


ARCHIVE_DIR = "compliance.retention.archive_dir"


def check_archive_dir(directory: Path, *, keep: bool) -> None:
    """Make sure archives can be written to ``directory``: create its missing directories (0700) and a probe file
    in it, then remove the probe, and the directories created unless ``keep`` (a dry run leaves nothing behind).
    ConfigError naming :data:`ARCHIVE_DIR`, the path and the OS reason when it cannot be created or written."""
    created: list[Path] = []
    try:
        missing, parent = [], directory
        while not parent.exists() and not parent.is_symlink():
            missing.append(parent)
            parent = parent.parent
        if not missing and not directory.is_dir():
            raise ConfigError([(ARCHIVE_DIR, f"{directory} exists and is not a directory")])
        for path in reversed(missing):
            path.mkdir(mode=0o700)
            created.append(path)
        fd, probe = tempfile.mkstemp(prefix=".payhub-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError([(ARCHIVE_DIR, f"{directory} cannot be created or written: {exc.strerror or exc}")]) \
            from None
    finally:
        if not keep:
            for path in reversed(created):
                with suppress(OSError):
                    path.rmdir()


@contextmanager
def run_lock(rt: Runtime) -> Iterator[None]:
    """Hold the retention lock of ``rt``'s database for the block; RetentionError at once when another run holds it.

    PostgreSQL: a session advisory lock (:data:`LOCK_ID`) on a connection of its own, released when the block ends
    or the connection does (a killed run included). SQLite: a lock on ``<database file>.retention.lock``, released
    when the block or the process ends. An in-memory database has one user and no lock."""
    busy = RetentionError("another `payhub retention apply` is running on this database: nothing was done (run it "
                          "again once that one has finished)")
    if rt.engine.dialect.name == "postgresql":
        conn = rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if not conn.execute(select(func.pg_try_advisory_lock(LOCK_ID))).scalar():
                raise busy
            try:
                yield
            finally:
                try:
                    conn.execute(select(func.pg_advisory_unlock(LOCK_ID)))
                except SQLAlchemyError:
                    conn.invalidate()  # the session ends, and its lock with it
        finally:
            conn.close()
        return
    path = sqlite_file(rt.engine.url.render_as_string(hide_password=False))
    if path is None:
        yield
        return
    lock = FileLock(os.path.realpath(path) + ".retention.lock", mode=files.private_file_mode())
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise busy from None
    try:
        yield
    finally:
        lock.release()


def audit_problems(rt: Runtime, key: signing.SigningKey) -> tuple[Cut | None, list[str]]:
    """The retention cut and what ``payhub audit verify`` finds wrong with the audit log, the cut and the signed
    checkpoints (:func:`payhub.checkpoints.chain_problems`), read in one snapshot; nothing is written."""
    with rt.engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot: entries appended meanwhile are not half seen
            conn.execution_options(isolation_level="REPEATABLE READ")
        result, problems = checkpoints.chain_problems(conn, key,
                                                      rt.settings.resolve(rt.settings.audit.checkpoint_dir))
    return result.cut, problems


def refusal(problems: list[str]) -> str:
    """The error of a run refused because the audit log does not verify."""
    return ("the audit log does not verify, so nothing was archived, deleted or signed (run `payhub audit verify`): "
            + "; ".join(problems))


def _delete(rt: Runtime, outcome: Outcome) -> None:
    """One transaction: remove the archived payloads and entries (exactly those), move the cut, audit the run."""
    chosen = outcome.plan
    detail: dict[str, Any] = {"events": 0, "audit_entries": 0, "archives": []}
    with rt.transaction() as tx:
        conn = tx.conn
        if outcome.events_archive is not None and chosen.events_cutoff is not None:
            archive = outcome.events_archive
            changed = conn.execute(update(events).where(
                events.c.id >= archive.first, events.c.id <= archive.last, _due_events(chosen.events_cutoff)
            ).values(raw=None, attributes="{}")).rowcount
            if changed != archive.rows:
                raise RetentionError(f"{archive.rows} events were archived but {changed} are due now (they changed "
                                     "while archiving): nothing was deleted; run it again")
            detail["events"] = archive.rows
            detail["events_range"] = [archive.first, archive.last]
            detail["archives"].append({"name": archive.name, "sha256": archive.sha256, "kind": "events"})
        if outcome.cut is not None and outcome.audit_archive is not None:
            cut, archive = outcome.cut, outcome.audit_archive
            floor = needed_floor(conn)
            if floor is not None and floor <= cut.seq:
                raise RetentionError(f"entry {floor} became needed by live work while archiving: nothing was "
                                     "deleted; run it again")
            removed = conn.execute(delete(audit_log).where(audit_log.c.seq >= chosen.audit_from,
                                                           audit_log.c.seq <= cut.seq)).rowcount
            if removed != archive.rows:
                raise RetentionError(f"{archive.rows} audit entries were archived but {removed} would be deleted: "
                                     "nothing was deleted; run `payhub audit verify`")
            values = {"seq": cut.seq, "hash": cut.hash, "at": datetime.fromisoformat(cut.at),
                      "archive": cut.archive, "archive_sha256": cut.archive_sha256, "signature": cut.signature,
                      "key_id": cut.key_id, "top_payout": cut.top_payout, "top_reward": cut.top_reward}
            if chosen.previous_cut is None:
                conn.execute(audit_cut.insert().values(id=1, **values))
            elif conn.execute(update(audit_cut).where(
                    audit_cut.c.id == 1, audit_cut.c.seq == chosen.previous_cut.seq,
                    audit_cut.c.signature == chosen.previous_cut.signature).values(**values)).rowcount != 1:
                raise RetentionError("the retention cut changed while archiving: nothing was deleted; run "
                                     "`payhub audit verify`")
            detail.update({"audit_entries": archive.rows, "cut_seq": cut.seq, "cut_hash": cut.hash,
                           "previous_cut_seq": chosen.previous_cut.seq if chosen.previous_cut else 0,
                           "archived_ids": outcome.archived_ids})
            detail["archives"].append({"name": archive.name, "sha256": archive.sha256, "kind": "audit",
                                       "first": chosen.audit_from, "last": cut.seq})
        tx.audit(ACTION, "retention", "apply", detail)


def settle_interrupted(rt: Runtime, directory: Path) -> list[str]:
    """Finish what an interrupted run left in ``directory`` (call it holding :func:`run_lock`): rename each pending
    archive whose name and SHA-256 the last ``retention.applied`` entry or the cut records (its deletion committed),
    remove the others (nothing was deleted). Return what was done, one line per file."""
    pending = []
    if directory.is_dir():
        for path in sorted(directory.glob(f"*{PENDING}")):
            match = _PENDING_NAME.fullmatch(path.name)
            if match is not None:
                pending.append((path, match["name"]))
    if not pending:
        return []
    with rt.engine.connect() as conn:
        detail = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == ACTION)
                              .order_by(audit_log.c.seq.desc()).limit(1)).scalar()
        cut = read_cut(conn)
    recorded: dict[str, str] = {}
    try:
        for archive in json.loads(detail or "{}").get("archives", []):
            if isinstance(archive, dict) and isinstance(archive.get("name"), str):
                recorded[archive["name"]] = str(archive.get("sha256"))
    except (ValueError, AttributeError, TypeError):
        pass
    if isinstance(cut, Cut):
        recorded[cut.archive] = cut.archive_sha256
    done = []
    for path, name in pending:
        if recorded.get(name) == _sha256(path) and not (directory / name).exists():
            os.replace(path, directory / name)
            done.append(f"{name}: completed (its rows were deleted by the interrupted run)")
        else:
            path.unlink()
            done.append(f"{name}: removed (the interrupted run deleted nothing; archived again now)")
    _fsync_dir(directory)
    return done


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _ChainCheck:
    """Checks entries as they are archived: they follow the previous cut (or genesis) and each fits its hash."""

    def __init__(self, first: int, previous: Cut | None) -> None:
        self.expected = first
        self.prev = previous.hash if previous is not None else GENESIS
        self.count = 0
        self.last_hash: str | None = None
        self.ids: dict[str, int] = {}

    def over(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            if row["seq"] != self.expected or row["prev_hash"] != self.prev or entry_hash(row) != row["hash"]:
                raise RetentionError(f"entry {self.expected} does not verify (missing, altered or relinked): "
                                     "nothing was archived or deleted; run `payhub audit verify`")
            self.prev, self.expected, self.last_hash = row["hash"], row["seq"] + 1, row["hash"]
            self.count += 1
            subject = row["subject_id"]
            if row["subject_type"] in ("payout", "reward") and subject.isascii() and subject.isdigit() \
                    and len(subject) <= 18:
                self.ids[row["subject_type"]] = max(self.ids.get(row["subject_type"], 0), int(subject))
            yield row


def _event_rows(rt: Runtime, cutoff: datetime, low: int, high: int) -> Iterator[dict[str, Any]]:
    with rt.engine.connect() as conn:
        query = (select(events).where(events.c.id >= low, events.c.id <= high, _due_events(cutoff))
                 .order_by(events.c.id))
        for row in conn.execution_options(yield_per=CHUNK).execute(query).mappings():
            yield dict(row)


def _audit_rows(rt: Runtime, chosen: Plan) -> Iterator[dict[str, Any]]:
    with rt.engine.connect() as conn:
        query = (select(audit_log).where(audit_log.c.seq >= chosen.audit_from, audit_log.c.seq <= chosen.audit_to)
                 .order_by(audit_log.c.seq))
        for row in conn.execution_options(yield_per=CHUNK).execute(query).mappings():
            yield dict(row)


def _write(directory: Path, name: str, rows: Iterable[dict[str, Any]],
           progress: Callable[[int], Any] | None) -> tuple[Archive, Path]:
    """Write ``rows`` as gzipped JSON lines to a new ``<name>.<random>.pending`` (created exclusively, private
    mode), fsync it; return its digest and path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{name}.{secrets.token_hex(8)}{PENDING}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, files.private_file_mode())
    digest = hashlib.sha256()
    count, first, last = 0, 0, 0
    with os.fdopen(fd, "wb") as raw:
        os.fchmod(raw.fileno(), files.private_file_mode())
        sink = _Hashing(raw, digest)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as out:
            for row in rows:
                key = int(row["seq"] if "seq" in row else row["id"])
                first = first or key
                last = key
                out.write((canonical_json(row) + "\n").encode())
                count += 1
                if progress is not None and count % 1000 == 0:
                    progress(1000)
        raw.flush()
        os.fsync(raw.fileno())
    if progress is not None:
        progress(count % 1000)
    return Archive(name, digest.hexdigest(), count, first, last), path


def _reporter(progress: Callable[[str, int], Any] | None, kind: str) -> Callable[[int], Any] | None:
    if progress is None:
        return None

    def report(rows: int) -> None:
        progress(kind, rows)

    return report


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, raw: Any, digest: Any) -> None:
        self.raw, self.digest = raw, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return int(self.raw.write(data))

    def flush(self) -> None:
        self.raw.flush()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Recorded:
    """An archive as the ``retention.applied`` entry ``seq`` records it: kind (``events`` or ``audit``), name,
    SHA-256, the rows it holds and the first and last event id or entry ``seq`` (None when not recorded)."""

    seq: int
    kind: str
    name: str
    sha256: str
    rows: int | None = None
    first: int | None = None
    last: int | None = None


def recorded_archives(seq: int, detail: Any) -> list[Recorded]:
    """The archives that the ``retention.applied`` entry ``seq`` with ``detail`` (its stored text or its value)
    records; nothing when the detail is not what a run writes."""
    try:
        value = json.loads(detail) if isinstance(detail, str) else detail
        found = []
        for item in value.get("archives", []):
            if not (isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("kind", "name", "sha256"))):
                continue
            if item["kind"] == "events":
                span = value.get("events_range") or [None, None]
                rows, first, last = value.get("events"), span[0], span[1]
            else:
                rows, first, last = value.get("audit_entries"), item.get("first"), item.get("last")
            ints = [v if isinstance(v, int) and not isinstance(v, bool) else None for v in (rows, first, last)]
            found.append(Recorded(seq, item["kind"], item["name"], item["sha256"], *ints))
        return found
    except (ValueError, AttributeError, TypeError, IndexError):
        return []


def applied_archives(conn: Connection, after: int = 0) -> list[Recorded]:
    """The archives recorded by the ``retention.applied`` entries after entry ``after`` (the retention cut): trust
    them only when the chain from the cut verifies."""
    rows = conn.execute(select(audit_log.c.seq, audit_log.c.detail)
                        .where(audit_log.c.action == ACTION, audit_log.c.seq > after).order_by(audit_log.c.seq))
    return [found for seq, detail in rows for found in recorded_archives(seq, detail)]


def first_archived(conn: Connection, cut: Cut) -> int | None:
    """The first entry that the archive of ``cut`` holds, as the ``retention.applied`` entry of that cut records
    (1 for a first cut), or None when that entry is not found."""
    rows = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == ACTION, audit_log.c.seq > cut.seq)
                        .order_by(audit_log.c.seq.desc()))
    for (detail,) in rows:
        try:
            value = json.loads(detail)
            if value.get("cut_seq") == cut.seq and isinstance(value.get("previous_cut_seq"), int):
                return int(value["previous_cut_seq"]) + 1
        except (ValueError, AttributeError, TypeError):
            continue
    return None


def archived_note(conn: Connection, cut: Cut, earlier: Iterable[Cut] = ()) -> str:
    """Which entries are archived where: those of the latest ``cut`` in its archive, and the ones before it in the
    archives of the ``earlier`` signed cuts (cut lines of the checkpoint directory, signatures checked by the
    caller), or a pointer to where those are named."""
    first = first_archived(conn, cut)
    where = "the cut lines of the checkpoint directory and the retention.applied entries name them"
    if first is None:
        return (f"entries up to {cut.seq} are archived, the last of them in {cut.archive} (retention cut of "
                f"{cut.at}) and the earlier ones in earlier archives ({where})")
    note = f"entries {first} to {cut.seq} are archived in {cut.archive} (retention cut of {cut.at})"
    if first <= 1:
        return note
    before = sorted({(c.seq, c.archive) for c in earlier if c.seq < first})
    if before and before[-1][0] == first - 1:
        listed = ", ".join(f"{name} (up to entry {seq})" for seq, name in before)
        return f"{note}; entries 1 to {first - 1} in earlier archives: {listed}"
    return f"{note}; entries 1 to {first - 1} in earlier archives ({where})"


@dataclass
class ArchiveCheck:
    """What :func:`verify_archive` or :func:`verify_events_archive` found in one archive."""

    name: str
    sha256: str
    entries: int = 0  # audit entries, or events in an events archive
    first: int | None = None
    last: int | None = None
    hashes: dict[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    cut: Cut | None = None  # the cut that records this audit archive
    kind: str = "audit"
    applied: list[Recorded] = field(default_factory=list)  # archives its retention.applied entries record
    ids: list[int] = field(default_factory=list)  # the events an events archive holds
    recorded_by: Recorded | None = None  # the retention.applied record of an events archive


def verify_archive(path: Path, cuts: Iterable[Cut], watch: Iterable[int] = ()) -> ArchiveCheck:
    """Check an audit archive against trusted ``cuts`` (signatures checked by the caller): a cut records its name
    and SHA-256 and ends at its last entry's hash; its entries chain from genesis or from the cut before it, each
    matching its hash. ``watch``: sequence numbers whose hashes to return (to compare old checkpoints)."""
    known = list(cuts)
    wanted = set(watch)
    digest = hashlib.sha256()
    check = ArchiveCheck(path.name, "")
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        check.problems.append(f"{path} cannot be read: {exc.strerror or exc}")
        return check
    check.sha256 = digest.hexdigest()
    prev: str | None = None
    broken = False
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                row = _entry(line)
                if row is None:
                    check.problems.append(f"{path.name} line {number} is not an audit entry")
                    broken = True
                    break
                seq = row["seq"]
                if prev is None:
                    check.first = seq
                    before = next((c for c in known if c.seq == seq - 1), None)
                    prev = GENESIS if seq == 1 else (before.hash if before is not None else row["prev_hash"])
                    if seq > 1 and before is None:
                        check.problems.append(f"entry {seq} links to entry {seq - 1}, which no known signed cut "
                                              "records: verify the archive before this one too")
                elif seq != (check.last or 0) + 1:
                    check.problems.append(f"{path.name} line {number}: entry {(check.last or 0) + 1} is missing")
                    broken = True
                    break
                if row["prev_hash"] != prev:
                    check.problems.append(f"entry {seq} does not link to entry {seq - 1} (inserted, reordered, "
                                          "or its predecessor was altered)")
                    broken = True
                    break
                if entry_hash(row) != row["hash"]:
                    check.problems.append(f"entry {seq} ({path.name} line {number}) was altered (its content does "
                                          "not match its hash)")
                    broken = True
                    break
                prev, check.last = row["hash"], seq
                check.entries += 1
                if row["action"] == ACTION:
                    check.applied += recorded_archives(seq, row["detail"])
                if seq in wanted:
                    check.hashes[seq] = row["hash"]
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        check.problems.append(f"{path.name} is not a complete gzip file ({exc})")
        broken = True
    recorded = [c for c in known if c.archive == path.name or c.archive_sha256 == check.sha256]
    if not recorded:
        check.problems.append(f"no signed retention cut records {path.name} or its SHA-256 {check.sha256}")
        return check
    cut = check.cut = recorded[0]
    if cut.archive_sha256 != check.sha256:
        check.problems.append(f"its SHA-256 is {check.sha256}, but the cut at entry {cut.seq} recorded "
                              f"{cut.archive_sha256}: the file was changed")
    if not broken and (check.last != cut.seq or prev != cut.hash):
        check.problems.append(f"it ends at entry {check.last} with hash {prev}, but the cut records entry {cut.seq} "
                              f"with hash {cut.hash}")
    return check


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("seq"), int) or isinstance(row.get("seq"), bool):
        return None
    if not all(isinstance(row.get(name), str) for name in ("prev_hash", "hash")):
        return None
    if any(name not in row for name in ("at", "actor", "action", "subject_type", "subject_id", "outcome", "origin",
                                        "detail")):
        return None
    return row


def archive_kind(path: Path) -> str:
    """``events`` when the first line of the gzipped file ``path`` is an event row, else ``audit`` (what
    :func:`verify_archive` checks, and reports when it is neither)."""
    try:
        with gzip.open(path, "rb") as lines:
            first = lines.readline()
    except (OSError, EOFError):
        return "audit"
    return "events" if _entry(first) is None and _event(first) is not None else "audit"


def verify_events_archive(path: Path, recorded: Iterable[Recorded]) -> ArchiveCheck:
    """Check an events archive against ``recorded``, the archives recorded by ``retention.applied`` entries of a
    verified audit log (the live chain, or audit archives that verified): one records its SHA-256 (and its name,
    event count and id range), and each line is an event row, ids increasing."""
    check = ArchiveCheck(path.name, "", kind="events")
    try:
        check.sha256 = _sha256(path)
    except OSError as exc:
        check.problems.append(f"{path} cannot be read: {exc.strerror or exc}")
        return check
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                event_id = _event(line)
                if event_id is None or (check.ids and event_id <= check.ids[-1]):
                    check.problems.append(f"{path.name} line {number} is not an event row in id order")
                    break
                check.ids.append(event_id)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        check.problems.append(f"{path.name} is not a complete gzip file ({exc})")
    check.entries = len(check.ids)
    check.first, check.last = (check.ids[0], check.ids[-1]) if check.ids else (None, None)
    events_archives = [r for r in recorded if r.kind == "events"]
    match = next((r for r in events_archives if r.sha256 == check.sha256), None)
    if match is None:
        named = next((r for r in events_archives if r.name == path.name), None)
        if named is not None:
            check.problems.append(f"its SHA-256 is {check.sha256}, but the retention.applied entry {named.seq} "
                                  f"recorded {named.sha256}: the file was changed")
        else:
            check.problems.append(f"no retention.applied entry of the verified audit log records this events archive "
                                  f"or its SHA-256 {check.sha256} (when a later retention cut archived that entry, "
                                  "give that cut's audit archive with --archive too)")
        return check
    check.recorded_by = match
    if (match.rows, match.first, match.last) != (check.entries, check.first, check.last):
        check.problems.append(f"it holds {check.entries} events (ids {check.first} to {check.last}), but the "
                              f"retention.applied entry {match.seq} recorded {match.rows} (ids {match.first} to "
                              f"{match.last})")
    return check


def _event(line: bytes) -> int | None:
    """The id of an events archive line, or None when it is not an event row."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or "seq" in row or not isinstance(row.get("key"), str):
        return None
    event_id = row.get("id")
    return event_id if isinstance(event_id, int) and not isinstance(event_id, bool) else None
