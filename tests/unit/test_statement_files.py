"""One atomic write for statements, reports and CSV exports (payhub.files.write_atomic), and one refusal when
statements are off."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from payhub import files
from payhub.settings import NotifySettings, Settings
from payhub.statements import stage


def test_write_atomic_writes_whole_private_files_and_syncs_the_directory(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    target = tmp_path / "statement-1.pdf"
    target.write_bytes(b"old")
    assert files.write_atomic(target, b"%PDF-new") == target
    assert target.read_bytes() == b"%PDF-new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert synced == [False, True]  # the file, then its directory (the rename survives a crash)
    assert sorted(os.listdir(tmp_path)) == ["statement-1.pdf"]


def test_write_atomic_leaves_the_old_file_and_no_partial_one_on_failure(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.csv"
    target.write_bytes(b"old")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["report.csv"]


def test_one_refusal_when_statements_are_off() -> None:
    with pytest.raises(stage.StatementsOff, match=r"\[notify\] statements is off"):
        stage.refuse_when_off(Settings())
    stage.refuse_when_off(Settings(notify=NotifySettings(statements="outbox")))
