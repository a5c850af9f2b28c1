"""The bank_transfer rail passes payhub's RailContract, with SEPA and ACH on a temporary outbox.

The rail's "provider" is the outbox: payments are counted in the pain.001 files the bank connection would pick up
(``EndToEndId`` is the idempotency key for payhub's keys), so "a resend never pays twice" is measured in the files.
A file rail has no provider to make misbehave: the checks that plan a fault skip with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from payhub.testing.contracts import RailContract
from payhub.testing.contracts.rail_checks import default_payout, new_key
from payhub.testing.faults import Fault

from payhub_bank import BankSettings, BankTransferRail

SEPA_NS = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"
SETTINGS: dict[str, Any] = {
    "outbox": "outbox",
    "inbox": "inbox",
    "inbox_settle_seconds": 0,
    "sepa": {"debtor_name": "Acme Vertriebs GmbH", "debtor_iban": "DE89 3704 0044 0532 0130 00",
             "debtor_bic": "COBADEFFXXX", "debtor_country": "DE"},
    "ach": {"immediate_destination": "091000019", "immediate_origin": "1234567890",
            "immediate_origin_name": "Acme Inc", "company_id": "1234567890", "company_name": "Acme Inc",
            "originating_dfi": "091000019"},
}


class OutboxPayments:
    """Counts the credit transfers for a key in the outbox's payment files; simulates no fault."""

    supported: tuple[Fault, ...] = ()

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def plan(self, *faults: Fault) -> None:
        raise NotImplementedError(f"a file rail's outbox cannot simulate {faults}")

    def payments(self, key: str) -> int:
        count = 0
        for path in self.outbox.glob("*.xml"):
            ids = etree.parse(str(path)).getroot().iterfind(f".//{{{SEPA_NS}}}CdtTrfTxInf/{{{SEPA_NS}}}PmtId/"
                                                            f"{{{SEPA_NS}}}EndToEndId")
            count += sum(1 for e in ids if e.text == key)
        return count


class TestBankTransferContract(RailContract):
    @pytest.fixture
    def plugin_factory(self, tmp_path: Path) -> Callable[[], BankTransferRail]:
        (tmp_path / "outbox").mkdir()
        (tmp_path / "inbox").mkdir()
        settings = BankSettings.model_validate(SETTINGS, context={"base_dir": tmp_path})
        return lambda: BankTransferRail("bank", settings)

    @pytest.fixture
    def faults(self, tmp_path: Path) -> OutboxPayments:
        return OutboxPayments(tmp_path / "outbox")


def test_outbox_counts_each_file_a_key_is_written_to(tmp_path: Path) -> None:
    """The counter the contract relies on sees a payout written twice (by two outboxes' files put together)."""
    for name in ("one", "two"):
        (tmp_path / name / "outbox").mkdir(parents=True)
        (tmp_path / name / "inbox").mkdir()
    payout = default_payout(new_key())
    for name in ("one", "two"):
        rail = BankTransferRail("bank", BankSettings.model_validate(SETTINGS, context={"base_dir": tmp_path / name}))
        try:
            rail.send([payout])
        finally:
            rail.close()
    (tmp_path / "one" / "outbox" / "copy.xml").write_bytes(
        next((tmp_path / "two" / "outbox").glob("*.xml")).read_bytes())
    assert OutboxPayments(tmp_path / "one" / "outbox").payments(payout.idempotency_key) == 2
    assert OutboxPayments(tmp_path / "two" / "outbox").payments(payout.idempotency_key) == 1
