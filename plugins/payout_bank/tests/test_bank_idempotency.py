"""Paid exactly once: every key in exactly one file line, whatever fails when.

A closed or unwritable outbox refuses with RetryableRailError and writes nothing; a write interrupted before its
manifest is committed leaves nothing behind; one interrupted after is completed and found by lookup; a new process
finds what an earlier one wrote, and never writes a key again."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from filelock import FileLock
from payhub.api import Outcome, RetryableRailError

import payhub_bank.rail as rail_module

KEY = re.compile(r"PH-[0-9A-F]{32}|ph-[0-9a-f]{32}")


def keys_in_files(outbox: Path) -> Counter[str]:
    """How often each payout key is in a payment file, read from the files themselves (EndToEndId, ACH addenda)."""
    found: Counter[str] = Counter()
    for path in outbox.iterdir():
        if path.suffix == ".xml":
            found.update(re.findall(r"<EndToEndId>([^<]+)</EndToEndId>", path.read_text()))
        elif path.suffix == ".ach":
            found.update(m.lower() for line in path.read_text().splitlines() if line.startswith("705")
                         for m in KEY.findall(line))
    return found


def manifest_keys(outbox: Path) -> Counter[str]:
    return Counter(e["key"] for p in outbox.glob("*.manifest.json") for e in json.loads(p.read_text())["entries"])


def assert_once(outbox: Path, keys: list[str]) -> None:
    in_files, in_manifests = keys_in_files(outbox), manifest_keys(outbox)
    assert in_files == in_manifests == Counter(keys), (in_files, in_manifests)
    assert not [p.name for p in outbox.iterdir() if p.name.startswith(".payhub-partial-")]


def batch(payout, start: int = 1) -> list:
    return [payout(n, "EUR", f"{n}.00") for n in range(start, start + 3)] + [
        payout(n, "USD", f"{n}.50") for n in range(start + 3, start + 5)]


def test_a_missing_outbox_refuses_and_writes_nothing(make_rail, payout, outbox: Path) -> None:
    shutil.rmtree(outbox)
    rail = make_rail()
    instructions = batch(payout)
    with pytest.raises(RetryableRailError, match="is not a directory .*mounted"):
        rail.send(instructions)
    with pytest.raises(RetryableRailError):  # never "not received" when it cannot look
        rail.lookup([i.idempotency_key for i in instructions])
    assert not outbox.exists(), "the outbox is not created in its place"
    outbox.mkdir()
    assert [r.outcome for r in rail.send(instructions)] == [Outcome.ACCEPTED] * 5
    assert_once(outbox, [i.idempotency_key for i in instructions])


@pytest.mark.parametrize("error", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_an_unwritable_outbox_refuses_and_nothing_is_sent_twice(make_rail, payout, outbox: Path,
                                                                monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    rail = make_rail()
    first = batch(payout)
    rail.send(first[:2])  # some payouts are out already
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(rail_module.os, "fsync", failing_fsync)
    with pytest.raises(RetryableRailError, match=f"cannot write to outbox .*{os.strerror(error)}"):
        rail.send(first[2:])
    # With payouts already written in the same call, the answer is per payout: those are accepted, the rest retry.
    mixed = rail.send(first)
    assert [r.outcome for r in mixed] == [Outcome.ACCEPTED] * 2 + [Outcome.RETRY] * 3
    assert os.strerror(error) in (mixed[2].reason or "")
    monkeypatch.setattr(rail_module.os, "fsync", real_fsync)
    assert_once(outbox, [i.idempotency_key for i in first[:2]])  # nothing half-written is left
    # The core retries with the same keys: each is written once, the two already out are not written again.
    results = rail.send(first)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 5
    assert_once(outbox, [i.idempotency_key for i in first])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_outbox_refuses(make_rail, payout, outbox: Path) -> None:
    outbox.chmod(0o500)
    try:
        with pytest.raises(RetryableRailError):
            make_rail().send(batch(payout))
    finally:
        outbox.chmod(0o700)
    assert not list(outbox.iterdir())


def test_a_crash_after_the_file_is_written_is_resolved_by_lookup(make_rail, payout, outbox: Path) -> None:
    instructions = batch(payout)
    keys = [i.idempotency_key for i in instructions]
    sent = {r.idempotency_key: r for r in make_rail().send(instructions)}
    # The process dies before the core records the results; the next one looks the keys up before any new send.
    restarted = make_rail()
    found = restarted.lookup(keys + ["ph-" + "f" * 32])
    assert found["ph-" + "f" * 32] is None
    assert {k: found[k] for k in keys} == sent
    assert all(r.outcome == Outcome.ACCEPTED for r in sent.values())
    # Even a blind resend writes nothing new.
    assert {r.idempotency_key: r for r in restarted.send(instructions)} == sent
    assert_once(outbox, keys)
    assert len(list(outbox.glob("*.manifest.json"))) == 2


def test_a_crash_between_manifest_and_file_is_completed(make_rail, payout, outbox: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = batch(payout)
    keys = [i.idempotency_key for i in instructions]
    real_replace = os.replace

    def dies_before_final_rename(src: str, dst: object) -> None:
        if not str(dst).endswith(".manifest.json"):
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(rail_module.os, "replace", dies_before_final_rename)
    results = make_rail().send(instructions)
    monkeypatch.setattr(rail_module.os, "replace", real_replace)
    assert {r.outcome for r in results} == {Outcome.UNKNOWN}  # the core looks them up before anything else
    assert not list(outbox.glob("*.xml")) and not list(outbox.glob("*.ach"))
    assert len(list(outbox.glob(".payhub-partial-*"))) == 2 and len(list(outbox.glob("*.manifest.json"))) == 2

    found = make_rail().lookup(keys)
    assert all(r is not None and r.outcome == Outcome.ACCEPTED for r in found.values())
    assert_once(outbox, keys)  # the files were completed and the temporary files are gone
    for result in found.values():
        assert result is not None
        name, line = result.provider_ref.rsplit(":", 1)
        assert (outbox / name).exists()


def test_a_crash_before_the_manifest_leaves_nothing(make_rail, payout, outbox: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = batch(payout)
    real_replace = os.replace

    def dies_at_commit(src: str, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(rail_module.os, "replace", dies_at_commit)
    with pytest.raises(RetryableRailError):
        make_rail().send(instructions)
    monkeypatch.setattr(rail_module.os, "replace", real_replace)
    assert not list(outbox.iterdir()) or [p.name for p in outbox.iterdir()] == [".payhub-bank.lock"]
    rail = make_rail()
    assert all(v is None for v in rail.lookup([i.idempotency_key for i in instructions]).values())
    rail.send(instructions)
    assert_once(outbox, [i.idempotency_key for i in instructions])


def test_leftovers_of_a_killed_writer_are_removed(make_rail, payout, outbox: Path) -> None:
    (outbox / ".payhub-partial-abc123.tmp").write_text("<Document>half")
    (outbox / ".payhub-partial-def456.json.tmp").write_text("{")
    rail = make_rail()
    assert rail.lookup(["ph-" + "0" * 32]) == {"ph-" + "0" * 32: None}
    assert sorted(p.name for p in outbox.iterdir()) == [".payhub-bank.lock"]


def test_a_manifest_that_cannot_be_read_stops_lookups(make_rail, payout, outbox: Path) -> None:
    make_rail().send(batch(payout))
    manifest = next(outbox.glob("*.xml.manifest.json"))
    manifest.write_text("{not json")
    rail = make_rail()
    with pytest.raises(RetryableRailError, match="cannot read manifest"):
        rail.lookup(["ph-" + "0" * 32])
    with pytest.raises(RetryableRailError, match="cannot read manifest"):
        rail.send([payout(9, "EUR", "1.00")])


def test_another_process_holding_the_outbox_lock(make_rail, payout, outbox: Path) -> None:
    rail = make_rail(lock_timeout_seconds=0.2)
    with FileLock(str(outbox / ".payhub-bank.lock")), pytest.raises(RetryableRailError, match="locked"):
        rail.send([payout(1, "EUR", "1.00")])
    assert not list(outbox.glob("*.xml"))


def test_keys_repeated_in_one_call_are_written_once(rail, payout, outbox: Path) -> None:
    one = payout(1, "EUR", "1.00")
    results = rail.send([one, one, payout(2, "EUR", "2.00")])
    assert len(results) == 2
    assert_once(outbox, [one.idempotency_key, "ph-" + f"{2:032x}"])
