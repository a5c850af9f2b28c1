"""``payhub run --once`` with a HubSpot token the HubSpot simulator refuses: the source fails permanently, the
other source's deals are still calculated and paid, and the run exits 5 naming the source and HubSpot's answer."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

from payhub_simulators.hubspot import HubSpotSimulator

from payhub.testing import invoke_cli


def test_a_refused_token_makes_run_once_exit_5_after_the_rest_is_paid(tmp_path: Path, sim: HubSpotSimulator) -> None:
    (tmp_path / "deals.csv").write_text("id,type,occurred_at,payee_id,amount,currency\n"
                                        "D-1,deal_won,2026-10-01T00:00:00Z,p1,1000.00,USD\n")
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,US\n")
    config = tmp_path / "payhub.toml"
    config.write_text(textwrap.dedent(f"""\
        [database]
        url = "sqlite:///payhub.db"
        [payees]
        file = "payees.csv"
        [sources.deals]
        plugin = "file"
        path = "deals.csv"
        settle_seconds = 0
        [sources.hs]
        plugin = "hubspot"
        base_url = {json.dumps(sim.url)}
        access_token = "pat-na1-revoked"
        start_date = "2020-01-01"
        company_currency = "USD"
        [programs.pct]
        calculator = "percentage"
        percent = "10"
        [rails.export]
        plugin = "csv_export"
        directory = "out"
        [routing]
        default_rail = "export"
    """))
    assert invoke_cli("-c", str(config), "db", "upgrade").exit_code == 0
    result = invoke_cli("-c", str(config), "run", "--once", "--no-progress")
    assert result.exit_code == 5, result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: source hs failed permanently: PermanentSourceError: HubSpot ")
    assert "the access token was refused (HTTP 401)" in line
    assert "pat-na1-revoked" not in result.stderr  # the token itself is never shown
    db = sqlite3.connect(tmp_path / "payhub.db")
    try:
        assert db.execute("SELECT payee_id, status, amount_minor FROM payouts").fetchall() == [("p1", "sent", 10000)]
        assert db.execute("SELECT status FROM sources WHERE name = 'hs'").fetchall() == [("failed",)]
    finally:
        db.close()
