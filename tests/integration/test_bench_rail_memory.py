"""The bench's pipeline run keeps the fake rail's bookkeeping flat: the rail records no calls or instructions and its
ledger keeps packed keys and counts only, while the end-of-run checks (each payout's key accepted exactly once)
still read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.checks import check
from bench.runner import RssMeter, RunOptions, run_pipeline


@pytest.mark.slow
def test_the_bench_rail_keeps_counts_only_and_the_exactly_once_check_reads_them(tmp_path: Path) -> None:
    run = run_pipeline(tmp_path, RunOptions(events=300, quiet=True), RssMeter())
    rail = run["rail"]
    assert rail.ledger.compact and rail.calls == [] and rail.sent == [] and rail.lookups == []
    result = check(run["database_url"], rail, 300)
    assert result["ok"], result["problems"]
    assert len(rail.accepted) == result["rows"]["payouts"] > 0 and set(rail.accepted.values()) == {1}
    assert run["rail_ledger_mb"] < 0.1
