"""Through the core: a settings file with ``[rails.bank] plugin = "bank_transfer"``, a payee file with iban, bic,
account_number and routing_number columns, CRM events in a CSV file; ``payhub run --once`` (the Worker) writes the
bank files, routing falls back for a bad IBAN and holds a bad routing number, and the settle stage turns bank
reports into paid, rejected and returned payouts, the money of the last two owed again. The pipeline runs in the
test's process through payhub's harness."""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from ach.parser import Parser
from payhub.testing import Harness
from payhub.testing.pytest_plugin import HarnessFactory

from payhub_bank import BankTransferRail

SETTINGS = """
    [payees]
    file = "payees.csv"

    [sources.crm]
    plugin = "file"
    path = "events.csv"
    settle_seconds = 0

    [programs.deals]
    calculator = "percentage"
    percent = "100"

    [rails.bank]
    plugin = "bank_transfer"
    outbox = "bank/outbox"
    inbox = "bank/inbox"
    inbox_settle_seconds = 0
    settle_interval_seconds = 0.01
    max_attempts = 3

    [rails.bank.sepa]
    debtor_name = "Acme Vertriebs GmbH"
    debtor_iban = "DE89 3704 0044 0532 0130 00"
    debtor_bic = "COBADEFFXXX"

    [rails.bank.ach]
    immediate_destination = "091000019"
    immediate_destination_name = "Wells Fargo"
    immediate_origin = "1234567890"
    immediate_origin_name = "Acme Inc"
    company_id = "1234567890"
    company_name = "Acme Inc"
    originating_dfi = "091000019"

    [rails.export]
    plugin = "csv_export"
    directory = "exports"

    [[routing.rules]]
    currencies = ["EUR"]
    rails = ["bank", "export"]

    [[routing.rules]]
    currencies = ["USD"]
    rails = ["bank"]
"""

PAYEES = """\
id,name,country,iban,bic,account_number,routing_number,entry_class,account_type
de1,Jürgen Müller GmbH,DE,DE89 3704 0044 0532 0130 00,COBADEFFXXX,,,,
fr1,Élodie Ørsted,FR,FR1420041010050500013M02606,,,,,
nl1,Foute Iban BV,NL,NL91ABNA0417164301,,,,,
us1,Acme Partner LLC,US,,,123456789,091000019,CCD,
us2,Jane Doe,US,,,0000123,021000021,PPD,savings
us3,Wrong Routing Inc,US,,,123456789,091000018,,
"""

EVENTS = """\
id,type,occurred_at,payee_id,amount,currency
o1,deal_won,2026-10-01T10:00:00Z,de1,1234.56,EUR
o2,deal_won,2026-10-01T11:00:00Z,de1,10.00,EUR
o3,deal_won,2026-10-01T12:00:00Z,fr1,99.99,EUR
o4,deal_won,2026-10-01T13:00:00Z,nl1,50.00,EUR
o5,deal_won,2026-10-01T14:00:00Z,us1,2500.00,USD
o6,deal_won,2026-10-01T15:00:00Z,us2,75.25,USD
o7,deal_won,2026-10-01T16:00:00Z,us3,12.00,USD
"""


def by_payee(rows: Iterable[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for row in rows:
        found.setdefault(row.payee_id, []).append(row)
    return found


def start(payhub_harness: HarnessFactory, tmp_path: Path) -> Harness:
    """The bank's directories, the payees and the CRM events in ``tmp_path``, and a harness on SETTINGS there."""
    (tmp_path / "bank" / "outbox").mkdir(parents=True)
    (tmp_path / "bank" / "inbox").mkdir()
    (tmp_path / "payees.csv").write_text(PAYEES, encoding="utf-8")
    (tmp_path / "events.csv").write_text(EVENTS)
    return payhub_harness(SETTINGS, directory=tmp_path)


@pytest.mark.slow  # a whole pipeline run
@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_pipeline_writes_bank_files_and_settles_reports(payhub_harness: HarnessFactory, tmp_path: Path,
                                                        make_pain002, make_return) -> None:
    outbox, inbox = tmp_path / "bank" / "outbox", tmp_path / "bank" / "inbox"
    harness = start(payhub_harness, tmp_path)
    assert isinstance(harness.rail("bank"), BankTransferRail)
    harness.run_until_idle()

    paid = {p: rows[0] for p, rows in by_payee(harness.payouts()).items()}
    assert set(paid) == {"de1", "fr1", "nl1", "us1", "us2"}
    assert {p: (r.rail, r.status) for p, r in paid.items()} == {
        "de1": ("bank", "sent"), "fr1": ("bank", "sent"), "nl1": ("export", "sent"), "us1": ("bank", "sent"),
        "us2": ("bank", "sent")}
    assert paid["de1"].amount == Decimal("1244.56")  # two rewards netted
    assert "NL91…4301 is invalid: Invalid checksum digits" in paid["nl1"].route_reason
    held = by_payee(harness.rewards())["us3"]
    assert [(r.status, r.hold_code) for r in held] == [("held", "no_rail")]
    assert "routing number '091000018' is invalid" in held[0].hold_reason

    # The files: one pain.001 and one NACHA file, each line traceable to its payout.
    [xml] = sorted(outbox.glob("*.xml"))
    [ach] = sorted(outbox.glob("*.ach"))
    with resources.as_file(resources.files("payhub_bank") / "schemas" / "pain.001.001.03.xsd") as xsd:
        document = xmlschema.XMLSchema(str(xsd)).to_dict(str(xml))["CstmrCdtTrfInitn"]  # validates, then decodes
    payment = document["PmtInf"][0]
    assert document["GrpHdr"]["NbOfTxs"] == "2" and Decimal(str(document["GrpHdr"]["CtrlSum"])) == Decimal("1344.55")
    assert sorted(tx["PmtId"]["EndToEndId"] for tx in payment["CdtTrfTxInf"]) == sorted(
        paid[p].idempotency_key for p in ("de1", "fr1"))
    assert {tx["Cdtr"]["Nm"] for tx in payment["CdtTrfTxInf"]} == {"Jurgen Muller GmbH", "Elodie Orsted"}
    parsed = Parser(ach.read_text()).as_dict()
    assert [b["batch_header"]["std_ent_cls_code"] for b in parsed["batches"]] == ["CCD", "PPD"]
    assert int(parsed["file_control"]["credit_amount"]) == 257525
    manifests = {e["key"]: e for p in outbox.glob("*.manifest.json") for e in json.loads(p.read_text())["entries"]}
    for payee in ("de1", "fr1", "us1", "us2"):
        row = paid[payee]
        entry = manifests[row.idempotency_key]
        assert row.provider_ref == f"{xml.name if payee in ('de1', 'fr1') else ach.name}:{entry['line']}"
        assert entry["payout_id"] == row.id and entry["payee_id"] == payee

    # The bank reports back: de1 settled, fr1 rejected, us1 returned; us2 hears nothing yet.
    msg_id = xml.stem
    (inbox / "pain.002-1.xml").write_text(make_pain002(msg_id, transactions=[
        (paid["de1"].idempotency_key, "ACSC", None), (paid["fr1"].idempotency_key, "RJCT", "AC04")]))
    us1 = manifests[paid["us1"].idempotency_key]
    (inbox / "returns.ach").write_text(make_return([(us1["trace_number"], "R01", 250000, us1["individual_id"])]))
    harness.advance(0.05)  # past settle_interval_seconds
    assert harness.settle("bank") == 4

    after = {p: rows[0] for p, rows in by_payee(harness.payouts()).items()}
    assert {p: after[p].status for p in after} == {"de1": "paid", "fr1": "rejected", "nl1": "sent",
                                                   "us1": "returned", "us2": "sent"}
    assert "AC04 closed account number" in after["fr1"].reason
    assert "R01 insufficient funds" in after["us1"].reason
    owed = by_payee(harness.rewards())
    assert [(r.status, r.hold_code) for r in owed["de1"]] == [("paid", None), ("paid", None)]
    for payee, why in (("fr1", "AC04"), ("us1", "R01")):
        [reward] = owed[payee]
        assert (reward.status, reward.hold_code) == ("held", "payout_failed")  # the money is owed again
        assert why in reward.hold_reason
    assert [r.status for r in owed["us2"]] == ["sent"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["pain.002-1.xml", "returns.ach"]
    assert harness.audit_problem() is None
