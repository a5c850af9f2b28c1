"""Numbers and files on the command line that the database or the file system cannot take: a usage error or one
clean line, never a traceback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cli_helpers import invoke

HUGE = "99999999999999999999999"
MAX_ID = str(2**63 - 1)


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n', encoding="utf-8")
    assert invoke("-c", str(path), "db", "upgrade").exit_code == 0
    return str(path)


@pytest.mark.parametrize("args", [
    ["events", "list", "--limit", HUGE],
    ["rewards", "list", "--limit", HUGE],
    ["payouts", "list", "--limit", HUGE],
    ["audit", "query", "--limit", HUGE],
    ["explain", HUGE],
    ["payouts", "release", HUGE, "--reason", "x"],
    ["payouts", "cancel", HUGE, "--reason", "x"],
    ["payouts", "resolve", HUGE, "--outcome", "paid", "--reason", "x"],
    ["rewards", "approve", HUGE],
    ["rewards", "hold", HUGE, "--reason", "x"],
    ["rewards", "release", HUGE],
    ["rewards", "cancel", HUGE, "--reason", "x"],
    ["calculations", "retry", "--event", HUGE],
    ["explain", str(2**63)],
    ["events", "list", "--limit", "1000001"],
], ids=lambda args: "-".join(a for a in args if a not in (HUGE, "x")))
def test_a_number_out_of_range_is_a_usage_error(config: str, args: list[str]) -> None:
    result = invoke("-c", config, *args)
    assert result.exit_code == 2, result.output
    assert "is not in the range" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["explain", MAX_ID], f"reward {MAX_ID} does not exist"),
    (["payouts", "release", MAX_ID, "--reason", "x"], MAX_ID),
    (["audit", "trace", f"reward:{HUGE}"], f"nothing found for 'reward:{HUGE}'"),
    (["audit", "trace", f"payout:{HUGE}"], f"nothing found for 'payout:{HUGE}'"),
    (["audit", "trace", f"event:{MAX_ID}"], f"nothing found for 'event:{MAX_ID}'"),
])
def test_the_largest_ids_are_looked_up_and_not_found(config: str, args: list[str], message: str) -> None:
    result = invoke("-c", config, *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_a_limit_within_bounds_is_accepted(config: str) -> None:
    assert invoke("-c", config, "events", "list", "--limit", "1000000").exit_code == 0
    assert invoke("-c", config, "audit", "query", "--limit", "1000000").exit_code == 0


# ------------------------------------------------------------------------------------------------ audit export

@pytest.mark.parametrize(("target", "reason"), [
    ("/nonexistent/dir/x.jsonl", "No such file or directory"),
    ("/dev/full", "No space left on device"),
])
def test_an_export_that_cannot_be_written_is_one_line(config: str, target: str, reason: str) -> None:
    assert invoke("-c", config, "audit", "query").exit_code == 0  # an entry to export
    mode = Path(target).stat().st_mode if Path(target).exists() else None
    result = invoke("-c", config, "audit", "export", "-o", target)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: cannot write {target}: {reason}"
    if mode is not None:
        assert Path(target).stat().st_mode == mode  # a device keeps its mode


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_an_export_file_is_created_owner_only(config: str, tmp_path: Path, umask: int) -> None:
    target = tmp_path / "audit.jsonl"
    assert invoke("-c", config, "audit", "query").exit_code == 0
    old = os.umask(umask)
    try:
        result = invoke("-c", config, "audit", "export", "-o", str(target))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text(encoding="utf-8").count("\n") >= 1


def test_an_existing_export_file_is_tightened(config: str, tmp_path: Path) -> None:
    target = tmp_path / "audit.csv"
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o644)
    result = invoke("-c", config, "audit", "export", "--format", "csv", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text(encoding="utf-8").startswith("seq,at,actor,")
