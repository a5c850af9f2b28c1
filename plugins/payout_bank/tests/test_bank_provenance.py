"""``payhub explain payout:N`` names the bank file and the line of each payout the bank_transfer rail wrote, and says
that the line's end-to-end id or trace number is in the rail's manifest, not in payhub's database."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from payhub.cli import main
from payhub.db.schema import payouts
from payhub.runtime import Runtime
from sqlalchemy import select
from test_bank_pipeline import EVENTS, PAYEES, SETTINGS, run_once


def test_explain_names_the_bank_file_and_line(make_runtime: Callable[[str], Runtime], tmp_path: Path) -> None:
    outbox = tmp_path / "bank" / "outbox"
    outbox.mkdir(parents=True)
    (tmp_path / "bank" / "inbox").mkdir()
    (tmp_path / "payees.csv").write_text(PAYEES, encoding="utf-8")
    (tmp_path / "events.csv").write_text(EVENTS)
    rt = make_runtime(SETTINGS)
    run_once(rt)
    with rt.engine.connect() as conn:
        sent = conn.execute(select(payouts).where(payouts.c.rail == "bank", payouts.c.status == "sent")
                            .order_by(payouts.c.id)).all()
    manifests = {e["key"]: (p.name.removesuffix(".manifest.json"), e)
                 for p in outbox.glob("*.manifest.json") for e in json.loads(p.read_text())["entries"]}
    assert len(sent) == 4
    for row in sent:
        result = CliRunner().invoke(main, ["-c", str(tmp_path / "payhub.toml"), "explain", f"payout:{row.id}",
                                           "--format", "json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)["payout"]["document"]
        file, entry = manifests[row.idempotency_key]
        assert (document["kind"], document["file"], document["line"]) == ("bank payment file", file, entry["line"])
        line = (outbox / file).read_text().splitlines()[entry["line"] - 1]
        # The payout's transaction starts on that line of the pain.001 file; its NACHA entry ends with its trace number.
        assert "<CdtTrfTxInf>" in line if file.endswith(".xml") else line.endswith(entry["trace_number"])
        assert "manifest" in document["missing"]
        text = CliRunner().invoke(main, ["-c", str(tmp_path / "payhub.toml"), "explain", f"payout:{row.id}"],
                                  catch_exceptions=False).stdout
        assert f"document: bank payment file {file} line {entry['line']}" in text
