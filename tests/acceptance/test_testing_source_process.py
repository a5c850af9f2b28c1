"""The file-backed FakeSource across processes: the test pushes records, a ``payhub run --once`` subprocess loads
the source by name with the same ``path`` and consumes them, and the test reads what it consumed and where its
cursor stood."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import migrated, run_payhub, write_config

from payhub.api import SourceRecord
from payhub.testing import FakeSource, FakeSourceSettings, Fetch, LedgerRail

SETTINGS = """
[payees]
file = "payees.csv"

[sources.crm]
plugin = "fake"
path = "records.jsonl"
batch_size = 2

[programs.pct]
calculator = "percentage"
percent = "10"

[rails.ledger]
plugin = "ledger"
path = "ledger.db"

[routing]
default_rail = "ledger"
"""


def deal(n: int) -> SourceRecord:
    return SourceRecord("Opportunity", f"D-{n}", "won", "deal_won", "2026-04-01T00:00:00Z", "p1", "100.00", "EUR")


@pytest.mark.slow
def test_a_payhub_subprocess_consumes_what_the_test_pushed(tmp_path: Path, db_url: str,
                                                           subprocess_env: dict[str, str]) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\n")
    config = write_config(tmp_path, db_url, SETTINGS)
    migrated(db_url)
    source = FakeSource("crm", FakeSourceSettings(path=tmp_path / "records.jsonl"))
    source.push(deal(1), deal(2), deal(3))

    first = run_payhub("-c", str(config), "run", "--once", "--no-progress", env=subprocess_env)
    assert first.returncode == 0, first.stderr
    assert [r.object_id for r in source.consumed()] == ["D-1", "D-2", "D-3"]
    assert source.fetches()[:2] == [Fetch(None, 2, 2), Fetch("2", 2, 1)]  # batch_size respected, cursor moved on

    source.push(deal(4))
    again = run_payhub("-c", str(config), "run", "--once", "--no-progress", env=subprocess_env)
    assert again.returncode == 0, again.stderr
    assert [r.object_id for r in source.consumed()] == ["D-1", "D-2", "D-3", "D-4"]
    assert Fetch("3", 2, 1) in source.fetches()  # resumed from the stored cursor
    assert sorted(LedgerRail.counts(tmp_path / "ledger.db").values()) == [1, 1]  # one payout per run, each once
