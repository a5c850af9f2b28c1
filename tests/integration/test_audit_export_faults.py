"""``payhub audit export`` when something fails, on SQLite and PostgreSQL: an output that fails partway records an
``incomplete`` read with exactly the rows written before the failure (inside a chunk of rows read or past it), and a
query that fails leaves an earlier export in the output file untouched (the query runs before the file is opened)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliSite
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from payhub.audit_query import STREAM_ROWS
from payhub.cli import audit as cli_audit
from payhub.db.schema import audit_log
from payhub.runtime import Runtime

ENTRIES = STREAM_ROWS + 100  # more than one chunk of rows read from the database


class FailingOutput(io.StringIO):
    """An output file that takes ``lines`` writes (a CSV row or a JSON line each), then fails as a full disk does;
    ``taken`` keeps what it took (closing it does not lose it)."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines
        self.taken: list[str] = []

    def write(self, s: str) -> int:
        if len(self.taken) == self.lines:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.taken.append(s)
        return len(s)


def seed(rt: Runtime, n: int) -> None:
    for low in range(0, n, 500):
        with rt.transaction() as tx:
            for i in range(low, min(n, low + 500)):
                tx.audit("event.ingested", "event", i, {"key": f"crm:Opportunity:{i}:won"})


def recorded_exports(rt: Runtime) -> list[tuple[str, dict[str, Any]]]:
    with rt.engine.connect() as conn:
        return [(outcome, json.loads(detail)) for outcome, detail in conn.execute(
            select(audit_log.c.outcome, audit_log.c.detail).where(audit_log.c.action == "audit.export")
            .order_by(audit_log.c.seq))]


@pytest.fixture
def site(make_runtime: Any, tmp_path: Path) -> tuple[CliSite, Runtime]:
    rt = make_runtime("")
    seed(rt, ENTRIES)
    return CliSite(tmp_path), rt


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("lines", [1500, STREAM_ROWS + 50])
def test_an_export_that_fails_partway_records_the_rows_written(site: tuple[CliSite, Runtime], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, fmt: str,
                                                               lines: int) -> None:
    cli, rt = site
    output = FailingOutput(lines)
    monkeypatch.setattr(cli_audit, "_open_export", lambda path: output)
    result = cli.cli("audit", "export", "--format", fmt, "-o", str(tmp_path / "audit.out"))
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    rows = lines - 1 if fmt == "csv" else lines  # a CSV file starts with its header
    assert recorded_exports(rt) == [("incomplete", {"filters": {}, "format": fmt, "output": str(tmp_path / "audit.out"),
                                                    "rows": rows})]
    written = "".join(output.taken).splitlines()
    assert len(written) == lines
    assert written[-1].startswith(f'{{"seq": {rows}, ' if fmt == "jsonl" else f"{rows},")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_query_that_fails_leaves_the_earlier_export_in_place(site: tuple[CliSite, Runtime], tmp_path: Path,
                                                               fmt: str) -> None:
    cli, rt = site
    target = tmp_path / f"audit.{fmt}"
    earlier = cli.ok("audit", "export", "--format", fmt, "-o", str(target))
    assert "exported" in earlier.stderr
    before = target.read_bytes()
    with rt.engine.begin() as conn:  # the query fails as it would on a missing table
        conn.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    try:
        with contextlib.suppress(SQLAlchemyError):  # PostgreSQL's error is not one fail_cleanly words
            assert cli.cli("audit", "export", "--format", fmt, "-o", str(target)).exit_code != 0
        assert target.read_bytes() == before
    finally:
        with rt.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    assert [outcome for outcome, _ in recorded_exports(rt)] == ["ok"]


def test_an_existing_file_it_cannot_write_gives_one_line_and_an_incomplete_record(site: tuple[CliSite, Runtime],
                                                                                   tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    cli, rt = site
    target = tmp_path / "audit.jsonl"
    target.write_text("an earlier export\n")

    def refuse(path: str) -> io.StringIO:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(cli_audit, "_open_export", refuse)
    result = cli.cli("audit", "export", "-o", str(target))
    assert result.exit_code == 1, result.output
    assert "Permission denied" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert target.read_text() == "an earlier export\n"
    assert recorded_exports(rt) == [("incomplete", {"filters": {}, "format": "jsonl", "output": str(target),
                                                    "rows": 0})]
