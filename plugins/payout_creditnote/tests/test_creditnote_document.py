"""The documents: UBL 2.1 CreditNote, valid against the vendored OASIS schema and free of fatal EN 16931 rules (the
official CEN artefacts), with the Peppol BIS Billing 3.0 fields and totals that add up exactly."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from creditnote_en16931 import En16931
from creditnote_helpers import EXEMPT, SELLER, instruction, make_settings, payee, text, xml
from lxml import etree
from payhub.api import Outcome
from pydantic import ValidationError

from payhub_creditnote import CreditNoteRail, ubl

RailFactory = Callable[..., CreditNoteRail]
SCHEMAS = ubl.schema_path().parent.parent


def amount_of(root: Any, path: str) -> Decimal:
    value = text(root, path)
    assert value is not None, path
    return Decimal(value)


def issue_one(rail: CreditNoteRail, en16931: En16931, n: int = 1, **kwargs: Any) -> Any:
    """Issue one credit note, check it against the UBL schema and the EN 16931 rules, return its root element."""
    [result] = rail.send([instruction(n, **kwargs)])
    assert result.outcome == Outcome.ACCEPTED, result.reason
    path = rail.path_of(str(result.provider_ref))
    assert ubl.validate(path.read_bytes()) == []
    assert en16931.fatal(path.read_bytes()) == []
    return xml(path)


@pytest.mark.parametrize("tax", [
    EXEMPT,
    {"category": "S", "rate": "21"},
    {"category": "S", "rate": "7.5"},
    {"category": "Z", "rate": "0"},
    {"category": "O", "exemption_reason": "Not subject to VAT", "exemption_reason_code": "VATEX-EU-O"},
    {"category": "AE", "exemption_reason_code": "VATEX-EU-AE"},
    {"category": "G", "exemption_reason": "Export outside the EU"},
])
def test_documents_validate_and_carry_the_peppol_fields(rail_factory: RailFactory, en16931: En16931,
                                                        tax: dict[str, str]) -> None:
    rail = rail_factory(tax=tax, note="Q3 partner programme")
    root = issue_one(rail, en16931)
    assert root.tag == f"{{{ubl.NS_CN}}}CreditNote"
    assert text(root, "cbc:CustomizationID") == ubl.CUSTOMIZATION_ID
    assert text(root, "cbc:ProfileID") == "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
    assert text(root, "cbc:ID") == "CN-2026-000001"
    assert date.fromisoformat(str(text(root, "cbc:IssueDate")))
    assert text(root, "cbc:CreditNoteTypeCode") == "381"
    assert text(root, "cbc:DocumentCurrencyCode") == "EUR"
    assert text(root, "cbc:BuyerReference") == "r1"
    assert text(root, "cbc:Note") == "Q3 partner programme"
    seller = "cac:AccountingSupplierParty/cac:Party/"
    buyer = "cac:AccountingCustomerParty/cac:Party/"
    assert text(root, seller + "cbc:EndpointID") == "DE123456789"
    assert root.find(seller + "cbc:EndpointID", ubl.XPATH_NS).get("schemeID") == "9930"
    assert text(root, seller + "cac:PartyName/cbc:Name") == SELLER["name"]
    assert text(root, seller + "cac:PartyLegalEntity/cbc:RegistrationName") == SELLER["name"]
    assert text(root, seller + "cac:PostalAddress/cac:Country/cbc:IdentificationCode") == "DE"
    assert text(root, buyer + "cbc:EndpointID") == "ap@reseller.example"
    assert text(root, buyer + "cac:PostalAddress/cac:Country/cbc:IdentificationCode") == "NL"
    assert text(root, buyer + "cac:PartyLegalEntity/cbc:RegistrationName") == "Reseller r1 B.V."
    outside = tax["category"] == "O"  # BR-O-02/03: no VAT identifiers on a document outside the scope of VAT
    assert (text(root, seller + "cac:PartyTaxScheme/cbc:CompanyID") is None) is outside
    assert (text(root, buyer + "cac:PartyTaxScheme/cbc:CompanyID") is None) is outside
    category = "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/"
    assert text(root, category + "cbc:ID") == tax["category"]
    assert text(root, category + "cac:TaxScheme/cbc:ID") == "VAT"
    rate = text(root, category + "cbc:Percent")
    assert rate == (None if outside else str(Decimal(tax.get("rate", "0")).normalize()))
    exempt = tax["category"] in ubl.EXEMPT_CATEGORIES
    reason = (text(root, category + "cbc:TaxExemptionReason"), text(root, category + "cbc:TaxExemptionReasonCode"))
    assert any(reason) is exempt
    line = "cac:CreditNoteLine/"
    assert text(root, line + "cbc:ID") == "1"
    assert text(root, line + "cbc:Note") == "payhub payout 1"
    assert text(root, line + "cac:DocumentReference/cbc:ID") == instruction(1).idempotency_key
    assert text(root, line + "cac:Item/cbc:Name") == "Channel partner incentive"
    assert text(root, line + "cac:Item/cac:ClassifiedTaxCategory/cbc:ID") == tax["category"]
    assert root.find(line + "cbc:CreditedQuantity", ubl.XPATH_NS).get("unitCode") == "C62"
    # The totals add up.
    net = amount_of(root, "cac:LegalMonetaryTotal/cbc:LineExtensionAmount")
    vat = amount_of(root, "cac:TaxTotal/cbc:TaxAmount")
    assert net == amount_of(root, line + "cbc:LineExtensionAmount")
    assert net == amount_of(root, line + "cac:Price/cbc:PriceAmount")
    assert net == amount_of(root, "cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount")
    assert net == amount_of(root, "cac:TaxTotal/cac:TaxSubtotal/cbc:TaxableAmount")
    assert vat == amount_of(root, "cac:TaxTotal/cac:TaxSubtotal/cbc:TaxAmount")
    assert amount_of(root, "cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount") == net + vat
    assert vat == (net * Decimal(rate or 0) / 100).quantize(Decimal("0.01"))
    assert amount_of(root, "cac:LegalMonetaryTotal/cbc:PayableAmount") == Decimal("100.00")
    currencies = {node.get("currencyID") for node in root.iter() if node.get("currencyID") is not None}
    assert currencies == {"EUR"}


def test_tax_on_top_when_amounts_exclude_it(rail_factory: RailFactory, en16931: En16931) -> None:
    root = issue_one(rail_factory(tax={"category": "S", "rate": "19"}, amount_includes_tax=False), en16931)
    assert amount_of(root, "cac:LegalMonetaryTotal/cbc:LineExtensionAmount") == Decimal("100.00")
    assert amount_of(root, "cac:TaxTotal/cbc:TaxAmount") == Decimal("19.00")
    assert amount_of(root, "cac:LegalMonetaryTotal/cbc:PayableAmount") == Decimal("119.00")


def test_rounding_keeps_the_payable_amount_exact() -> None:
    cases = 0
    for cents in range(1, 2000):
        amount = Decimal(cents).scaleb(-2)
        totals = ubl.amounts(amount, 2, Decimal("19"), includes_tax=True)
        assert totals.payable == amount
        assert totals.inclusive == totals.net + totals.tax
        assert totals.tax == (totals.net * Decimal("0.19")).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
        assert totals.payable == totals.inclusive + totals.rounding and abs(totals.rounding) <= Decimal("0.01")
        cases += bool(totals.rounding)
    assert cases, "no amount needed a rounding line; the test does not cover PayableRoundingAmount"


def test_a_rounding_amount_validates(rail_factory: RailFactory, en16931: En16931) -> None:
    amount = next(Decimal(c).scaleb(-2) for c in range(1, 2000)
                  if ubl.amounts(Decimal(c).scaleb(-2), 2, Decimal(19), includes_tax=True).rounding)
    root = issue_one(rail_factory(tax={"category": "S", "rate": "19"}), en16931, amount=str(amount))
    assert amount_of(root, "cac:LegalMonetaryTotal/cbc:PayableRoundingAmount") != 0
    assert amount_of(root, "cac:LegalMonetaryTotal/cbc:PayableAmount") == amount


def test_currencies_without_decimals(rail_factory: RailFactory, en16931: En16931) -> None:
    root = issue_one(rail_factory(tax={"category": "S", "rate": "10"}), en16931, amount="12345", currency="JPY")
    assert text(root, "cac:LegalMonetaryTotal/cbc:PayableAmount") == "12345"
    assert text(root, "cac:LegalMonetaryTotal/cbc:LineExtensionAmount") == "11223"
    assert text(root, "cac:TaxTotal/cbc:TaxAmount") == "1122"


def test_buyer_details_from_the_payee(rail_factory: RailFactory, en16931: En16931) -> None:
    who = payee(peppol_id="0106:12345678", registration_id="KVK 12345678", buyer_reference="PO-77")
    root = issue_one(rail_factory(), en16931, who=who)
    buyer = "cac:AccountingCustomerParty/cac:Party/"
    assert text(root, buyer + "cbc:EndpointID") == "12345678"
    assert root.find(buyer + "cbc:EndpointID", ubl.XPATH_NS).get("schemeID") == "0106"
    assert text(root, buyer + "cac:PartyLegalEntity/cbc:CompanyID") == "KVK 12345678"
    assert text(root, buyer + "cac:PostalAddress/cbc:StreetName") == "Keizersgracht 1"
    assert text(root, buyer + "cac:PostalAddress/cbc:PostalZone") == "1015 CJ"
    assert text(root, "cbc:BuyerReference") == "PO-77"


def test_special_characters_are_escaped_and_valid(rail_factory: RailFactory, en16931: En16931) -> None:
    who = payee(city="Zürich <&> \"Süd\"")
    root = issue_one(rail_factory(), en16931, who=who)
    assert text(root, "cac:AccountingCustomerParty/cac:Party/cac:PostalAddress/cbc:CityName") == 'Zürich <&> "Süd"'


def _document(rail: CreditNoteRail) -> bytes:
    [result] = rail.send([instruction(1)])
    return rail.path_of(str(result.provider_ref)).read_bytes()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.replace(b"<cbc:ID>CN-2026-000001</cbc:ID>", b""), "IssueDate"),
    (lambda d: d.replace(b">100.00</cbc:PayableAmount>", b">one hundred</cbc:PayableAmount>"), "PayableAmount"),
    (lambda d: d.replace(b"<cbc:IssueDate>", b"<cbc:IssueDat>").replace(b"</cbc:IssueDate>", b"</cbc:IssueDat>"),
     "IssueDat"),
    (lambda d: d.replace(b"<cac:LegalMonetaryTotal>", b"<cac:LegalMonetaryTotal><cbc:Bogus>1</cbc:Bogus>"), "Bogus"),
    (lambda d: d.replace(b"</CreditNote>", b""), "not well-formed"),
])
def test_validation_catches_broken_documents(rail_factory: RailFactory, change: Any, message: str) -> None:
    document = _document(rail_factory())
    assert ubl.validate(document) == []
    problems = ubl.validate(change(document))
    assert problems and message in problems[0]


def test_an_invalid_document_is_rejected_without_using_a_number(rail_factory: RailFactory) -> None:
    rail = rail_factory()
    [bad] = rail.send([instruction(1, who=payee(city="\x0b"))])  # a control character: not even XML
    assert bad.outcome == Outcome.REJECTED
    [good] = rail.send([instruction(2)])
    assert good.provider_ref == "CN-2026-000001"
    assert rail.ledger.numbers() == [("CN-2026-", 1, instruction(2).idempotency_key)]


def test_vendored_schemas_are_unchanged_and_keep_their_notices() -> None:
    sums = (SCHEMAS / "SHA256SUMS").read_text().split("\n")
    listed = {}
    for line in filter(None, sums):
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    files = {str(p.relative_to(SCHEMAS)) for p in SCHEMAS.rglob("*.xsd")}
    assert set(listed) == files and "maindoc/UBL-CreditNote-2.1.xsd" in files
    assert len(files) == 15
    for name, digest in listed.items():
        data = (SCHEMAS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        if name.startswith(("maindoc/UBL-CreditNote", "common/UBL-Common")):
            assert b"Copyright (c) OASIS Open 2013" in data[:1000], name
            assert b"OASIS DISCLAIMS ALL WARRANTIES" in data, name


def test_the_schema_loads_without_the_network() -> None:
    parser = etree.XMLParser(no_network=True)
    tree = etree.parse(str(ubl.schema_path()), parser)
    locations = {e.get("schemaLocation") for e in tree.getroot() if e.get("schemaLocation")}
    assert all(loc.startswith("../common/") for loc in locations)


def test_settings_are_checked(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tax": {"category": "S"}}, "needs a rate"),
        ({"tax": {"category": "S", "rate": "19", "exemption_reason": "x"}}, "takes no exemption reason"),
        ({"tax": {"category": "E"}}, "needs exemption_reason"),
        ({"tax": {"category": "E", "rate": "5", "exemption_reason": "x"}}, "has a VAT rate of 0"),
        ({"tax": {"category": "X"}}, "Input should be"),
        ({"tax": {"category": "S", "rate": 19.0}}, "float is not exact"),
        ({"seller": {**SELLER, "vat_id": None}}, r"seller.vat_id\n  required \(BT-31\) for VAT category E"),
        ({"seller": {**SELLER, "country": "Germany"}}, "not an ISO 3166"),
        ({"seller": {**SELLER, "extra": 1}}, "Extra inputs"),
        ({"currencies": ["BHD"]}, "at most 2"),
        ({"currencies": ["XXX1"]}, "unknown currency"),
        ({"series": "CN 2026"}, "letters, digits"),
        ({"delivery_url": "billing.example"}, "not an http"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValidationError, match=message):
            make_settings(tmp_path, **overrides)
    outside = make_settings(tmp_path, seller={**SELLER, "vat_id": None},
                            tax={"category": "O", "exemption_reason": "Not subject to VAT"})
    assert outside.tax.categories("DE") == {"O"}
    assert make_settings(tmp_path, tax={"rate": "19"}).tax.categories("DE") == {"S", "AE", "O"}  # auto
    assert outside.ledger_path == tmp_path / "outbox.ledger.sqlite"
    assert make_settings(tmp_path, ledger="numbers.sqlite").ledger_path == tmp_path / "numbers.sqlite"


def test_check_payee(rail_factory: RailFactory) -> None:
    rail = rail_factory()
    assert rail.check_payee(payee(), "EUR") is None
    assert rail.check_payee(payee(country=None), "EUR") == (
        "payee r1 has no country (a credit note names the buyer's country)")
    assert "no electronic address" in str(rail.check_payee(payee(email=None), "EUR"))
    assert rail.check_payee(payee(email=None, peppol_id="0088:5790000436057"), "EUR") is None
    assert "no electronic address" in str(rail.check_payee(payee(email=None, peppol_id="5790000436057"), "EUR"))
    assert rail.check_payee(payee(), "BHD") == "BHD has 3 decimals; credit notes take at most 2"
    reverse = rail_factory(tax={"category": "AE", "exemption_reason": "Reverse charge"})
    assert reverse.check_payee(payee(vat_id=""), "EUR") == (
        "payee r1 has no vat_id (needed for VAT category AE, BR-AE-02)")
    [result] = reverse.send([instruction(1, who=payee(vat_id=""))])
    assert result.outcome == Outcome.REJECTED and reverse.ledger.numbers() == []


def test_capabilities(rail_factory: RailFactory) -> None:
    caps = rail_factory(currencies=["eur", "usd"], max_batch=25).capabilities
    assert (caps.lookup, caps.reports_status, caps.currencies, caps.max_batch) == (
        True, False, frozenset({"EUR", "USD"}), 25)


def test_the_characters_xml_cannot_hold_are_exactly_those_outside_xml_1_0s_char_production() -> None:
    def xml_char(cp: int) -> bool:  # XML 1.0, production [2] Char
        return cp in (0x9, 0xA, 0xD) or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or 0x10000 <= cp <= 0x10FFFF

    refused = [cp for cp in range(0x110000) if ubl.NOT_XML.fullmatch(chr(cp))]
    assert refused == [cp for cp in range(0x110000) if not xml_char(cp)]
