"""``payhub explain payout:N`` names the bank file and the line of each payout the bank_transfer rail wrote, and says
that the line's end-to-end id or trace number is in the rail's manifest, not in payhub's database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from payhub.testing import invoke_cli
from payhub.testing.pytest_plugin import HarnessFactory
from test_bank_pipeline import start


@pytest.mark.slow  # a whole pipeline run
@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_explain_names_the_bank_file_and_line(payhub_harness: HarnessFactory, tmp_path: Path) -> None:
    outbox = tmp_path / "bank" / "outbox"
    harness = start(payhub_harness, tmp_path)
    harness.run_until_idle()
    config = str(harness.settings_file)
    sent = [p for p in harness.payouts("sent") if p.rail == "bank"]
    manifests = {e["key"]: (p.name.removesuffix(".manifest.json"), e)
                 for p in outbox.glob("*.manifest.json") for e in json.loads(p.read_text())["entries"]}
    assert len(sent) == 4
    for row in sent:
        result = invoke_cli("-c", config, "explain", f"payout:{row.id}", "--format", "json")
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)["payout"]["document"]
        file, entry = manifests[row.idempotency_key]
        assert (document["kind"], document["file"], document["line"]) == ("bank payment file", file, entry["line"])
        line = (outbox / file).read_text().splitlines()[entry["line"] - 1]
        # The payout's transaction starts on that line of the pain.001 file; its NACHA entry ends with its trace number.
        assert "<CdtTrfTxInf>" in line if file.endswith(".xml") else line.endswith(entry["trace_number"])
        assert "manifest" in document["missing"]
        text = invoke_cli("-c", config, "explain", f"payout:{row.id}").stdout
        assert f"document: bank payment file {file} line {entry['line']}" in text
