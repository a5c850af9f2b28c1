"""The README's quickstart, end to end: the ``payhub`` CLI in a subprocess on a copy of ``examples/`` pays through
the three rail plugins offline (SEPA and NACHA files, gift-card orders at the simulator of ``payhub-simulators``,
served by ``payhub-simulator`` while ``run --once`` runs, a credit note), and a second ``run --once`` pays nothing
again."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

pytest.importorskip("payhub_bank")
pytest.importorskip("payhub_creditnote")
simulator = pytest.importorskip("payhub_simulators.giftcard")
_SIMULATOR = Path(sys.executable).with_name("payhub-simulator")
SIMULATOR = [str(_SIMULATOR)] if _SIMULATOR.exists() else [sys.executable, "-m", "payhub_simulators"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_SCRIPT = Path(sys.executable).with_name("payhub")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from payhub.cli import main; main()"]
PAIN = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"
UBL = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}


def copy_quickstart(target: Path) -> Path:
    """What a fresh clone has: the settings, the CSV inputs and the committed (empty) output directories; nothing
    a local quickstart run may have left in examples/."""
    shutil.copy(EXAMPLES / "quickstart.toml", target / "quickstart.toml")
    source = EXAMPLES / "quickstart"
    (target / "quickstart").mkdir()
    for csv in source.glob("*.csv"):
        shutil.copy(csv, target / "quickstart" / csv.name)
    for keep in source.rglob(".gitkeep"):
        (target / "quickstart" / keep.parent.relative_to(source)).mkdir(parents=True, exist_ok=True)
    return target / "quickstart.toml"


def payhub(config: Path, *args: str, gift_cards: bool = False) -> subprocess.CompletedProcess[str]:
    """``payhub -c config *args``; with ``gift_cards``, as the README runs it: inside ``payhub-simulator giftcard
    --rail gift --``, which serves the gift-card provider while payhub runs."""
    around = [*SIMULATOR, "giftcard", "--state", str(config.parent / "quickstart" / "giftcard-sim.db"),
              "--rail", "gift", "--"] if gift_cards else []
    done = subprocess.run([*around, *CLI, "-c", str(config), *args], capture_output=True, text=True, timeout=60,
                          cwd=config.parent)
    assert done.returncode == 0, f"payhub {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def stage_counts(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"│ (\w+)\s+│ (\d+)\s+│", output)}


def outputs(root: Path) -> dict[str, bytes]:
    """Every file the rails wrote (bank outbox, credit notes), by path."""
    return {str(p.relative_to(root)): p.read_bytes() for d in ("bank-outbox", "credit-notes")
            for p in sorted((root / d).glob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
def test_quickstart_pays_through_the_three_rails_once(tmp_path: Path) -> None:
    config = copy_quickstart(tmp_path)
    root = tmp_path / "quickstart"
    payhub(config, "db", "upgrade")
    first = payhub(config, "run", "--once", gift_cards=True)
    assert stage_counts(first.stdout) == {"ingested": 9, "calculated": 5, "scheduled": 9, "disbursed": 6,
                                          "settled": 0}
    assert "gift-card provider SIMULATOR listening on http://127.0.0.1:" in first.stderr
    assert "WARNING" not in first.stderr

    listed: list[dict[str, Any]] = json.loads(payhub(config, "payouts", "list", "--format", "json").stdout)
    assert {p["payee"]: (p["rail"], p["amount"], p["currency"]) for p in listed} == {
        "acme-reseller": ("credit", "830.86", "USD"), "nordic-dist": ("bank", "387.50", "EUR"),
        "rep-ana": ("bank", "650.00", "USD"), "rep-ben": ("bank", "200.00", "USD"),
        "rep-chloe": ("gift", "250.00", "USD"), "tokyo-partners": ("gift", "48000", "JPY")}
    assert {p["status"] for p in listed if p["rail"] == "gift"} == {"paid"}
    assert {p["status"] for p in listed if p["rail"] != "gift"} == {"sent"}
    created = json.loads(payhub(config, "audit", "query", "--action", "payout.created", "--format", "json").stdout)
    routes = {e["detail"]["payee"]: e["detail"]["route"] for e in created}
    assert routes["acme-reseller"] == "payee acme-reseller prefers rail credit"
    assert routes["nordic-dist"] == "routing rule 0 (EUR) rail bank"
    assert routes["rep-ana"] == routes["rep-ben"] == "routing rule 1 (USD) rail bank"
    assert routes["rep-chloe"].startswith("routing rule 1 (USD) rail gift (rail bank: payee rep-chloe is in FR")
    assert routes["tokyo-partners"] == "default rail gift"

    # bank_transfer: one SEPA pain.001 file (EUR) and one NACHA file (USD)
    [sct] = (root / "bank-outbox").glob("payhub-sct-*.xml")
    document = ElementTree.parse(sct).getroot()
    assert document.tag == f"{PAIN}Document"
    assert [e.text for e in document.iter(f"{PAIN}IBAN")] == ["DE89370400440532013000", "SE4550000000058398257466"]
    assert [e.text for e in document.iter(f"{PAIN}InstdAmt")] == ["387.50"]
    [ach] = (root / "bank-outbox").glob("payhub-ach-*.ach")
    records = ach.read_text().splitlines()
    assert len(records) % 10 == 0 and all(len(r) == 94 for r in records)
    entries = [r for r in records if r.startswith("6")]
    assert [(r[3:12], r[29:39], r[54:76].strip()) for r in entries] == [
        ("011000015", "0000065000", "ANA SOUZA"), ("011000015", "0000020000", "BEN OKAFOR")]
    assert {f"{p.name}.manifest.json" for p in (sct, ach)} <= {p.name for p in (root / "bank-outbox").iterdir()}

    # giftcard: two orders at the simulator, kept in its state file
    orders = simulator.stored_orders(root / "giftcard-sim.db")
    assert sorted((o["rewards"][0]["recipient"]["email"], str(o["rewards"][0]["value"]["denomination"]),
                   o["rewards"][0]["value"]["currency_code"]) for o in orders) == [
        ("chloe@nordic-dist.example", "250.00", "USD"), ("keiri@tokyo-partners.example", "48000", "JPY")]

    # credit_note: one UBL credit note for the reseller
    [note] = (root / "credit-notes").glob("*.xml")
    credit = ElementTree.parse(note).getroot()
    assert note.name == "CN-2026-000001.xml" and credit.findtext("cbc:ID", namespaces=UBL) == "CN-2026-000001"
    assert [(e.text, e.get("currencyID")) for e in credit.iter(f"{{{UBL['cbc']}}}PayableAmount")] == [
        ("830.86", "USD")]

    # A second pass pays nothing again: no new payout, file, order or credit note.
    written = outputs(root)
    second = payhub(config, "run", "--once", gift_cards=True)
    assert stage_counts(second.stdout) == dict.fromkeys(("ingested", "calculated", "scheduled", "disbursed",
                                                         "settled"), 0)
    assert outputs(root) == written
    assert len(simulator.stored_orders(root / "giftcard-sim.db")) == 2
    assert len(json.loads(payhub(config, "payouts", "list", "--format", "json").stdout)) == 6
    assert "audit log OK" in payhub(config, "audit", "verify").stdout
