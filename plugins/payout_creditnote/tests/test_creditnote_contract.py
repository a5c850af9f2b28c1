"""The credit_note rail passes payhub's RailContract, issuing UBL credit notes into a temporary outbox.

The rail's "provider" is its outbox: payments are counted as credit-note lines in the documents written there (the
line's object identifier, BT-128, is the payout's idempotency key), so "a resend never pays twice" is measured in the
files. A file rail without a billing system has no provider to make misbehave: the checks that plan a fault skip
with that reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from payhub.api import Payee, PayoutInstruction
from payhub.testing.contracts import RailContract
from payhub.testing.contracts.rail_checks import RailSubject, max_batch_respected, new_key
from payhub.testing.faults import Fault

from payhub_creditnote import CreditNoteRail, CreditNoteSettings

UBL = {"cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
       "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
SETTINGS: dict[str, Any] = {
    "outbox": "outbox",
    "series": "CN-2026-",
    "seller": {"name": "Vendor Software GmbH", "country": "DE", "vat_id": "DE123456789", "endpoint_id": "DE123456789",
               "endpoint_scheme": "9930", "street": "Hauptstrasse 1", "city": "Berlin", "postal_code": "10115"},
    "tax": {"category": "E", "exemption_reason": "Exempt partner incentive",
            "exemption_reason_code": "VATEX-EU-132"},
}
_ids = itertools.count(1)


def reseller_payout(key: str) -> PayoutInstruction:
    """100.00 EUR to a Dutch reseller with a VAT id and an email address for its credit notes."""
    n = next(_ids)
    payee = Payee(f"r{n}", f"Reseller {n} B.V.", country="NL", currency="EUR", email="ap@reseller.example",
                  details={"vat_id": "NL123456789B01", "street": "Keizersgracht 1", "city": "Amsterdam",
                           "postal_code": "1015 CJ"})
    return PayoutInstruction(n, key, payee, Decimal("100.00"), "EUR", f"payhub payout {n}", datetime.now(UTC))


class OutboxCreditNotes:
    """Counts the credit-note lines for a key in the outbox's documents; simulates no fault."""

    supported: tuple[Fault, ...] = ()

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def plan(self, *faults: Fault) -> None:
        raise NotImplementedError(f"a file rail's outbox cannot simulate {faults}")

    def payments(self, key: str) -> int:
        return sum(1 for path in self.outbox.glob("*.xml")
                   for ref in etree.parse(str(path)).getroot().iterfind(
                       ".//cac:CreditNoteLine/cac:DocumentReference/cbc:ID", UBL) if ref.text == key)


class TestCreditNoteContract(RailContract):
    @pytest.fixture
    def plugin_factory(self, tmp_path: Path) -> Callable[[], CreditNoteRail]:
        (tmp_path / "outbox").mkdir()
        settings = CreditNoteSettings.model_validate(SETTINGS, context={"base_dir": tmp_path})
        return lambda: CreditNoteRail("credit_note", settings)

    @pytest.fixture
    def faults(self, tmp_path: Path) -> OutboxCreditNotes:
        return OutboxCreditNotes(tmp_path / "outbox")

    @pytest.fixture
    def make_payout(self) -> Callable[[str], PayoutInstruction]:
        return reseller_payout

    @pytest.mark.slow  # 50 credit notes, each numbered and written durably (fsync): 3-5 s on a busy machine
    def test_max_batch_respected(self, rail_subject: RailSubject) -> None:
        max_batch_respected(rail_subject)


def test_outbox_counts_each_document_a_key_is_in(tmp_path: Path) -> None:
    """The counter the contract relies on sees a payout issued by two ledgers into one outbox."""
    payout = reseller_payout(new_key())
    for ledger in ("one.sqlite", "two.sqlite"):
        (tmp_path / "outbox").mkdir(exist_ok=True)
        settings = CreditNoteSettings.model_validate({**SETTINGS, "ledger": ledger,
                                                      "series": f"CN-{ledger[:3].upper()}-"},
                                                     context={"base_dir": tmp_path})
        rail = CreditNoteRail("credit_note", settings)
        try:
            rail.send([payout])
        finally:
            rail.close()
    assert OutboxCreditNotes(tmp_path / "outbox").payments(payout.idempotency_key) == 2
    assert OutboxCreditNotes(tmp_path / "outbox").payments(new_key()) == 0
