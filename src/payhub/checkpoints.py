"""Signed checkpoints: the audit chain's head, anchored with a key that is not in the database.

A checkpoint is (``seq``, ``hash``, ``at``) of the chain's head, signed with the Ed25519 key of ``[audit]``
(:mod:`payhub.signing`). The daemon signs one once ``checkpoint_every_entries`` entries were added since its last
checkpoint, or ``checkpoint_every_seconds`` after it when the head moved; ``payhub audit verify`` signs one after
each verification that passes. Before the daemon signs, the entries added since its previous checkpoint are hashed
again and must continue it, so a checkpoint never vouches for a chain rewritten since the last one.

Each checkpoint is appended as one JSON line to ``checkpoints-<UTC date>.jsonl`` in ``audit.checkpoint_dir`` (files
created 0600, never rewritten) and handed to the ``payhub_audit_checkpoint`` hook, e.g. to keep a copy off-host.
:func:`check` compares the checkpoints with a verified chain: a checkpoint past the log's end means the tail was cut
(and the head moved back); a checkpoint whose hash differs from the recomputed hash at its ``seq`` means the chain
was rewritten consistently; a bad signature means the checkpoint is forged or altered.

A retention cut (:class:`payhub.audit.Cut`) is signed with the same key (:func:`sign_cut`) and written to the same
files as a line with ``"kind": "cut"``; checkpoints at or before the cut are covered by its archive (and compared
with it by ``payhub audit verify --archive``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payhub import signing
from payhub.audit import HEX_HASH, Cut, VerifyResult, read_cut, read_head, verify, verify_since
from payhub.clock import isoformat, utcnow
from payhub.errors import ConfigError
from payhub.plugins import notify

if TYPE_CHECKING:
    import pluggy
    from sqlalchemy import Connection

    from payhub.runtime import Runtime
    from payhub.settings import Settings

log = logging.getLogger(__name__)

DOMAIN = "payhub audit checkpoint v1"
FILE_PATTERN = "checkpoints-*.jsonl"
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed head. ``where`` (file and line it was read from) is not signed."""

    seq: int
    hash: str
    at: str
    key_id: str
    signature: str
    where: str = ""

    def message(self) -> bytes:
        """The signed bytes: a domain tag, then seq, hash, time and key id, one per line."""
        return f"{DOMAIN}\n{self.seq}\n{self.hash}\n{self.at}\n{self.key_id}\n".encode()

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "key_id": self.key_id,
                "signature": self.signature}

    @property
    def label(self) -> str:
        return f"the checkpoint of entry {self.seq} signed at {self.at}" + (f" ({self.where})" if self.where else "")


def load_key(settings: Settings) -> signing.SigningKey | None:
    """The configured checkpoint key (private, or public only), or None; ConfigError naming the key if unusable."""
    audit = settings.audit
    key: signing.SigningKey | None = None
    if audit.checkpoint_key is not None:
        key = signing.parse_private(audit.checkpoint_key.get_secret_value())  # validated with the settings
    elif audit.checkpoint_key_file is not None:
        path = settings.resolve(audit.checkpoint_key_file)
        try:
            key = signing.parse_private(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([("audit.checkpoint_key_file", f"{path}: {exc.strerror or exc}")]) from None
        except (UnicodeDecodeError, signing.BadKey) as exc:
            reason = str(exc) if isinstance(exc, signing.BadKey) else "not UTF-8 text"
            raise ConfigError([("audit.checkpoint_key_file", f"{path}: {reason}")]) from None
    if audit.checkpoint_public_key is not None:
        public = signing.parse_public(audit.checkpoint_public_key)
        if key is not None and key.key_id != public.key_id:
            raise ConfigError([("audit.checkpoint_public_key", "is not the public half of the checkpoint key")])
        key = key or public
    return key


def sign(key: signing.SigningKey, seq: int, digest: str) -> Checkpoint:
    """A checkpoint of entry ``seq`` whose hash is ``digest``, signed now."""
    unsigned = Checkpoint(seq, digest, isoformat(utcnow()), key.key_id, "")
    return Checkpoint(seq, digest, unsigned.at, key.key_id, key.sign(unsigned.message()))


def sign_cut(key: signing.SigningKey, seq: int, digest: str, archive: str, archive_sha256: str,
             archived_ids: dict[str, int] | None = None) -> Cut:
    """A retention cut after entry ``seq`` (hash ``digest``) archived in ``archive``, signed now (whole seconds);
    ``archived_ids``: the highest ``payout`` and ``reward`` ids whose entries this cut and the earlier ones archived."""
    at = isoformat(utcnow().replace(microsecond=0))
    tops = (archived_ids or {}).get("payout", 0), (archived_ids or {}).get("reward", 0)
    unsigned = Cut(seq, digest, at, archive, archive_sha256, key.key_id, "", *tops)
    return Cut(seq, digest, at, archive, archive_sha256, key.key_id, key.sign(unsigned.message()), *tops)


def cut_problem(cut: Cut | None, key: signing.SigningKey | None) -> str | None:
    """Why the retention cut cannot be trusted (unsigned, made with another key, altered or forged, or no key to
    check it with), or None (also when there is no cut)."""
    if cut is None:
        return None
    label = f"the retention cut at entry {cut.seq} (archive {cut.archive})"
    if key is None:
        return (f"{label} cannot be checked: its signature needs audit.checkpoint_key, audit.checkpoint_key_file or "
                "audit.checkpoint_public_key")
    if not cut.signature:
        return f"{label} is not signed"
    if cut.key_id != key.key_id:
        return f"{label} was signed with another key ({cut.key_id}; the configured key is {key.key_id})"
    if not key.check(cut.message(), cut.signature):
        return f"{label} has a bad signature: its seq, hash, time or archive was altered, or it was forged"
    return None


def append_cut(directory: Path, cut: Cut) -> Path:
    """Append the signed ``cut`` to today's checkpoint file in ``directory``, as a ``"kind": "cut"`` line."""
    return _append_line(directory, cut.at, {"kind": "cut", **cut.as_dict()})


def read_cuts(directory: Path) -> list[Cut]:
    """The well-formed cut lines of ``directory``'s checkpoint files (signatures not checked here)."""
    found: list[Cut] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob(FILE_PATTERN)):
        try:
            lines = path.read_bytes().split(b"\n")
        except OSError:
            continue
        for raw in lines:
            try:
                data = json.loads(raw) if raw.strip() else None
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("kind") == "cut":
                values = [data.get(k) for k in ("seq", "hash", "at", "archive", "archive_sha256", "key_id",
                                                 "signature")]
                tops = [data.get(k) for k in ("top_payout", "top_reward")]
                if all(isinstance(v, int) and not isinstance(v, bool) for v in (values[0], *tops)) \
                        and all(isinstance(v, str) for v in values[1:]):
                    found.append(Cut(*values, *tops))  # type: ignore[arg-type]
    return found


def append(directory: Path, checkpoint: Checkpoint) -> Path:
    """Append ``checkpoint`` to today's file in ``directory`` (created 0700, files 0600) and flush it to disk."""
    return _append_line(directory, checkpoint.at, checkpoint.as_dict())


def _append_line(directory: Path, at: str, data: dict[str, Any]) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"checkpoints-{at[:10]}.jsonl"
    line = (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, line)  # one short write in append mode: lines of concurrent writers never interleave
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read(directory: Path) -> tuple[list[Checkpoint], list[str]]:
    """Every checkpoint in ``directory``'s files, and a problem for each line that is not a checkpoint."""
    found: list[Checkpoint] = []
    problems: list[str] = []
    if not directory.is_dir():
        return found, problems
    for path in sorted(directory.glob(FILE_PATTERN)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(f"checkpoint file {path} cannot be read: {exc.strerror or exc}")
            continue
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            checkpoint = _parse(raw, f"{path.name} line {number}")
            if checkpoint is None:  # a retention cut (read_cuts)
                continue
            if isinstance(checkpoint, str):
                problems.append(checkpoint)
            else:
                found.append(checkpoint)
    return found, problems


def _parse(raw: bytes, where: str) -> Checkpoint | str | None:
    try:
        data = json.loads(raw)
    except ValueError:  # includes invalid UTF-8
        return f"{where} is not a checkpoint (not JSON)"
    if not isinstance(data, dict):
        return f"{where} is not a checkpoint (not a JSON object)"
    if data.get("kind") == "cut":
        return None
    seq, digest, at, key_id, signature = (data.get(k) for k in ("seq", "hash", "at", "key_id", "signature"))
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 and isinstance(digest, str)
            and HEX_HASH.fullmatch(digest) and all(isinstance(v, str) for v in (at, key_id, signature))):
        return f"{where} is not a checkpoint (seq, hash, at, key_id or signature missing or malformed)"
    return Checkpoint(seq, digest, str(at), str(key_id), str(signature), where)


def check(checkpoints: Iterable[Checkpoint], key: signing.SigningKey, result: VerifyResult,
          archived: dict[int, str] | None = None) -> list[str]:
    """What each checkpoint says is wrong with the verified chain ``result`` (whose ``hashes`` must hold the
    recomputed hash of every checkpoint's ``seq`` that fits): forged, made with another key, past the log's end
    (tail cut, head moved back), or a hash that differs from the chain's (rewritten). A checkpoint at or before a
    retention cut is compared with the cut's hash (at its ``seq``) or with ``archived`` (hashes recomputed from an
    archive), else it is covered by the archive (:func:`covered`)."""
    problems = []
    end = result.last if result.ok else None
    cut = result.cut
    for cp in checkpoints:
        if cp.key_id != key.key_id:
            problems.append(f"{cp.label} was made with another key ({cp.key_id}; the configured key is "
                            f"{key.key_id}): archive checkpoints of a retired key elsewhere")
        elif not key.check(cp.message(), cp.signature):
            problems.append(f"{cp.label} has a bad signature: it was forged or altered")
        elif cut is not None and cp.seq <= cut.seq:
            expected = cut.hash if cp.seq == cut.seq else (archived or {}).get(cp.seq)
            if expected is not None and expected != cp.hash:
                source = "the retention cut" if cp.seq == cut.seq else "the archive"
                problems.append(f"entry {cp.seq} has hash {expected} in {source}, but {cp.label} recorded {cp.hash}: "
                                f"the chain was rewritten at or before entry {cp.seq}")
        elif cp.seq in result.hashes:
            if result.hashes[cp.seq] != cp.hash:
                problems.append(f"entry {cp.seq} hashes to {result.hashes[cp.seq]}, but {cp.label} recorded "
                                f"{cp.hash}: the chain was rewritten at or before entry {cp.seq}")
        elif end is not None and cp.seq > end:
            problems.append(f"{cp.label} is past the end of the log (entry {end}): entries {end + 1} to {cp.seq} "
                            "or more were cut off and the head moved back")
        elif cp.seq > 0 and not result.ok:
            problems.append(f"{cp.label} cannot be compared: the chain does not verify up to it")
    return problems


def covered(checkpoints: Iterable[Checkpoint], result: VerifyResult) -> int:
    """How many ``checkpoints`` lie at or before the retention cut of ``result`` (their entries are archived)."""
    return 0 if result.cut is None else sum(1 for cp in checkpoints if cp.seq <= result.cut.seq)


def cut_lines_problem(cut: Cut | None, key: signing.SigningKey, directory: Path) -> str | None:
    """Why the database's retention ``cut`` is behind the latest cut line of ``directory`` signed with ``key`` (the
    cut row was deleted or replaced by an older one, or the database restored from before that cut), or None. A
    signed cut later than every line is not a problem: its line may not be written yet (:func:`ensure_cut_line`)."""
    latest = max((c for c in read_cuts(directory) if cut_problem(c, key) is None), key=lambda c: c.seq, default=None)
    if latest is None:
        return None
    label = f"the latest signed retention cut of {directory} (entry {latest.seq}, archive {latest.archive})"
    if cut is None:
        return (f"{label} is not in the database, which has no cut (the audit_cut row was deleted, or the database "
                "was restored from before that cut)")
    if cut.seq < latest.seq:
        return (f"{label} is later than the database's cut at entry {cut.seq} (the cut row was replaced by an older "
                "one, or the database was restored from before that cut)")
    if cut.seq == latest.seq and (cut.hash, cut.archive_sha256) != (latest.hash, latest.archive_sha256):
        return f"{label} differs from the database's cut at the same entry"
    return None


def ensure_cut_line(directory: Path, cut: Cut) -> bool:
    """Append the signed ``cut`` to ``directory`` unless a cut line records it already; True when it was appended."""
    if any(c.seq == cut.seq and c.signature == cut.signature for c in read_cuts(directory)):
        return False
    append_cut(directory, cut)
    return True


def chain_problems(conn: Connection, key: signing.SigningKey, directory: Path) -> tuple[VerifyResult, list[str]]:
    """What ``payhub audit verify`` finds wrong with the audit log, the tables' cross-check aside: the chain from the
    retention cut (or entry 1) to the head (:func:`payhub.audit.verify`), the cut's signature (:func:`cut_problem`),
    a cut behind the cut lines of ``directory`` (:func:`cut_lines_problem`), and each signed checkpoint of
    ``directory`` against the chain (:func:`check`). An empty list: the log is sound and anchored."""
    saved, found = read(directory)
    result = verify(conn, watch={cp.seq for cp in saved})
    if not result.ok:
        found.insert(0, (f"entry {result.first_bad}: " if result.first_bad is not None else "") + str(result.problem))
    found += [p for p in (cut_problem(result.cut, key),
                          cut_lines_problem(result.cut, key, directory) if result.ok or result.cut else None) if p]
    found += check(saved, key, result)
    return result, found


def publish(hooks: pluggy.PluginManager, checkpoint: Checkpoint) -> None:
    """Hand a written checkpoint to the ``payhub_audit_checkpoint`` hook; a failing observer is logged."""
    notify(hooks.hook.payhub_audit_checkpoint, checkpoint=checkpoint.as_dict())


def record(rt: Runtime, key: signing.SigningKey, seq: int, digest: str) -> Checkpoint:
    """Sign entry ``seq`` (hash ``digest``), append it to the checkpoint directory and publish it."""
    checkpoint = sign(key, seq, digest)
    append(rt.settings.resolve(rt.settings.audit.checkpoint_dir), checkpoint)
    publish(rt.plugins.hooks, checkpoint)
    return checkpoint


class Checkpointer:
    """The daemon's periodic checkpoints; :meth:`tick` once per pass (one read of the head when nothing is due)."""

    def __init__(self, rt: Runtime, key: signing.SigningKey) -> None:
        self.rt, self.key = rt, key
        mine = [cp for cp in read(rt.settings.resolve(rt.settings.audit.checkpoint_dir))[0]
                if cp.key_id == key.key_id and key.check(cp.message(), cp.signature)]
        self.last: Checkpoint | None = max(mine, key=lambda cp: cp.seq, default=None)
        self.last_time = time.monotonic()
        self.refused: str | None = None  # the last reason a checkpoint was refused, logged once

    @classmethod
    def for_daemon(cls, rt: Runtime) -> Checkpointer | None:
        """A checkpointer when a private checkpoint key is configured, else None (ConfigError if it is unusable)."""
        key = load_key(rt.settings)
        return cls(rt, key) if key is not None and key.private is not None else None

    def tick(self) -> Checkpoint | None:
        """Sign the head if a checkpoint is due and the entries since the last one continue it."""
        settings = self.rt.settings.audit
        with self.rt.engine.connect() as conn:
            head = read_head(conn)
            if isinstance(head, str):
                self._refuse(head)
                return None
            seq, digest = head
            last = self.last
            if last is not None and seq == last.seq and digest == last.hash:
                return None
            moved = seq - (last.seq if last is not None else 0)
            due = (last is None or moved >= settings.checkpoint_every_entries
                   or time.monotonic() - self.last_time >= settings.checkpoint_every_seconds)
            if not due:
                return None
            cut = read_cut(conn)
            if isinstance(cut, str):
                problem: str | None = cut
            elif last is None:
                result = verify(conn)
                problem = None if result.ok and result.head_seq == seq else result.problem or "the head moved"
            else:
                problem = verify_since(conn, last.seq, last.hash, seq)
            if problem is None and not isinstance(cut, str):
                problem = cut_problem(cut, self.key)
        if problem is not None:
            where = f"the checkpoint of entry {last.seq}" if last is not None else "the start of the log"
            self._refuse(f"the audit chain does not continue from {where}: {problem}")
            return None
        self.refused = None
        self.last = record(self.rt, self.key, seq, digest)
        self.last_time = time.monotonic()
        return self.last

    def _refuse(self, reason: str) -> None:
        if reason != self.refused:
            log.error("audit checkpoint not signed: %s (run `payhub audit verify`)", reason)
            self.refused = reason
        self.last_time = time.monotonic()
