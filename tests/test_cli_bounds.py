"""Numbers and files on the command line that the database or the file system cannot take: a usage error or one
clean line, never a traceback."""

from __future__ import annotations

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
