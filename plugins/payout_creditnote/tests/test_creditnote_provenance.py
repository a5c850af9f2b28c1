"""``payhub explain payout:N`` names the credit note (its number, and its file in the outbox) of each payout the
credit_note rail issued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from payhub.testing import invoke_cli
from payhub.testing.pytest_plugin import HarnessFactory
from test_creditnote_core import SETTINGS

from payhub_creditnote import ubl


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_explain_names_the_credit_note(payhub_harness: HarnessFactory, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text(
        "id,name,country,email,vat_id,city,peppol_id\n"
        "r1,Reseller One B.V.,NL,ap@one.example,NL123456789B01,Amsterdam,0106:12345678\n"
        "r2,Reseller Two BV,BE,ap@two.example,BE0123456789,Brussels,\n")
    (tmp_path / "events.csv").write_text(
        "id,type,occurred_at,payee_id,amount,currency,object_type\n"
        "0061,deal_won,2026-10-01T12:00:00Z,r1,10000.00,EUR,opp\n"
        "0063,deal_won,2026-10-02T12:00:00Z,r2,999.99,EUR,opp\n")
    harness = payhub_harness(SETTINGS, directory=tmp_path)
    harness.run_until_idle()
    config = str(harness.settings_file)
    rows = harness.payouts()
    assert [row.status for row in rows] == ["sent", "sent"]
    for row in rows:
        result = invoke_cli("-c", config, "explain", f"payout:{row.id}", "--format", "json")
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)["payout"]["document"]
        number = row.provider_ref
        assert (document["kind"], document["credit_note"], document["file"], document["missing"]) == (
            "credit note", number, f"{number}.xml", None)
        assert ubl.read((tmp_path / "outbox" / document["file"]).read_bytes())["id"] == number
        text = invoke_cli("-c", config, "explain", f"payout:{row.id}").stdout
        assert f"document: credit note {number}.xml number {number}" in text
