"""Coded values (countries, VAT id prefixes, electronic address schemes, identifier schemes, exemption reason codes)
belong to their EN 16931 code lists: the plugin's lists equal the official CEN artefacts' ones; the settings refuse
a seller or tax value outside them naming the key, ``check_payee`` refuses such a payee before any number is taken,
and a document that would still carry one is refused without using a number. Greece is GR as a country, EL or GR
as a VAT prefix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycountry
import pytest
from creditnote_en16931 import En16931, code_lists
from creditnote_helpers import SELLER, instruction, make_settings, payee, text
from lxml import etree
from payhub.api import ConfigError, Outcome
from payhub.testing import Harness
from pydantic import ValidationError

from payhub_creditnote import CreditNoteRail, codes, ubl

RailFactory = Callable[..., CreditNoteRail]
SUPPLIER = "cac:AccountingSupplierParty/cac:Party/"
CUSTOMER = "cac:AccountingCustomerParty/cac:Party/"
CATEGORY = "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/cbc:ID"
AUTO = {"category": "auto", "rate": "19"}
DOCS = Path(__file__).resolve().parents[3] / "docs" / "rails" / "credit_note.md"


def issued(rail: CreditNoteRail, en16931: En16931, who: Any) -> Any:
    """Issue one credit note to ``who``; check it against the UBL schema and the EN 16931 rules; its root."""
    [result] = rail.send([instruction(1, who=who)])
    assert result.outcome == Outcome.ACCEPTED, result.reason
    document = rail.path_of(str(result.provider_ref)).read_bytes()
    assert ubl.validate(document) == []
    assert en16931.fatal(document) == []
    return etree.fromstring(document)


def test_the_code_lists_are_the_official_ones() -> None:
    """The EAS, ICD and VATEX lists kept in the plugin, and the countries and VAT prefixes it accepts, are exactly
    those of the CEN artefacts the documents are checked against."""
    official = code_lists()
    assert set(official["BR-CL-25"][0]) == codes.EAS
    icd, sepa = official["BR-CL-10"]  # SEPA: the creditor identifier (BT-90), not a seller identifier scheme
    assert set(icd) == codes.ICD and sepa == ["SEPA"]
    assert all(set(official[rule][0]) == codes.ICD for rule in ("BR-CL-11", "BR-CL-21", "BR-CL-26"))
    assert set(official["BR-CL-22"][0]) == codes.VATEX
    assert set(official["BR-CL-14"][0]) == codes.countries() == set(official["BR-CL-15"][0])
    assert codes.countries() - {c.alpha_2 for c in pycountry.countries} == set(codes.COUNTRY_EXTENSIONS)
    assert set(official["BR-CO-09"][0]) == codes.countries() | {"EL"}
    assert not set(codes.NOT_COUNTRIES) & codes.countries()
    for lists in official.values():
        assert all(len(codes_) == len(set(codes_)) for codes_ in lists)


@pytest.mark.parametrize(("element", "value", "rule"), [
    ("cbc:EndpointID@schemeID", "9999", "BR-CL-25"),
    ("cbc:EndpointID@schemeID", "em", "BR-CL-25"),
    ("cac:PartyIdentification/cbc:ID@schemeID", "9999", "BR-CL-10"),
    ("cbc:TaxExemptionReasonCode", "VATEX-FOO", "BR-CL-22"),
    ("cac:PartyTaxScheme/cbc:CompanyID", "ZZ123456789", "BR-CO-09"),
    ("cac:Country/cbc:IdentificationCode", "XX", "BR-CL-14"),
    ("cac:Country/cbc:IdentificationCode", "UK", "BR-CL-14"),
    ("cac:Country/cbc:IdentificationCode", "EL", "BR-CL-14"),
    ("cac:Country/cbc:IdentificationCode", "XK", "BR-CL-14"),
])
def test_a_document_the_rules_refuse_for_a_code_is_refused_before_its_number(
        rail_factory: RailFactory, en16931: En16931, element: str, value: str, rule: str) -> None:
    """The last line of defence: each value the settings and payee checks refuse makes the official rules fail,
    and ``ubl.validate`` (run before a number is committed) finds it in the document too."""
    rail = rail_factory(seller={**SELLER, "identifier": "5790000436057", "identifier_scheme": "0088"})
    [result] = rail.send([instruction(1)])
    document = rail.path_of(str(result.provider_ref)).read_bytes()
    assert en16931.fatal(document) == [] and ubl.validate(document) == []
    root = etree.fromstring(document)
    path, _, attribute = element.partition("@")
    node = root.find(f".//{path}", ubl.XPATH_NS)
    if attribute:
        node.set(attribute, value)
    else:
        node.text = value
    changed = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    assert rule in {f.rule for f in en16931.findings(changed) if f.flag == "fatal"}
    problems = ubl.validate(changed)
    assert problems and rule in problems[0], problems


def test_a_document_breaking_a_code_list_uses_no_number(rail_factory: RailFactory,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Were a payee to get past ``check_payee``, its document is refused before its number is committed: the
    series stays gapless."""
    rail = rail_factory()
    monkeypatch.setattr(rail, "check_payee", lambda who, currency: None)
    [bad] = rail.send([instruction(1, who=payee(country="XX", vat_id=""))])
    assert bad.outcome == Outcome.REJECTED and "BR-CL-14" in str(bad.reason), bad
    assert bad.provider_ref is None and rail.ledger.numbers() == []
    [good] = rail.send([instruction(2)])
    assert good.outcome == Outcome.ACCEPTED and good.provider_ref == "CN-2026-000001"
    assert rail.ledger.numbers() == [("CN-2026-", 1, instruction(2).idempotency_key)]


@pytest.mark.parametrize(("overrides", "key", "message"), [
    ({"seller": {**SELLER, "endpoint_scheme": "9999"}}, ("seller", "endpoint_scheme"), "EAS list (BR-CL-25)"),
    ({"seller": {**SELLER, "identifier": "123", "identifier_scheme": "9999"}}, ("seller", "identifier_scheme"),
     "'9999' is not a code of the ISO 6523 ICD list (BR-CL-10)"),
    ({"tax": {"category": "E", "exemption_reason_code": "VATEX-FOO"}}, ("tax", "exemption_reason_code"),
     "'VATEX-FOO' is not a code of the VATEX list (BR-CL-22)"),
    ({"seller": {**SELLER, "vat_id": "ZZ123456789"}}, ("seller", "vat_id"),
     "starts with 'ZZ', which is not a country prefix (BR-CO-09"),
    ({"seller": {**SELLER, "vat_id": "FR12345678901"}}, ("seller", "vat_id"),
     "starts with FR, but the country is DE: a VAT id starts with the prefix of its country (DE)"),
    ({"seller": {**SELLER, "country": "GR", "vat_id": "DE123456789"}}, ("seller", "vat_id"), "(EL or GR)"),
    ({"seller": {**SELLER, "country": "XX"}}, ("seller", "country"),
     "'XX' is not an ISO 3166-1 alpha-2 country code (BR-CL-14)"),
    ({"seller": {**SELLER, "country": "UK"}}, ("seller", "country"), "the United Kingdom is GB"),
    ({"seller": {**SELLER, "country": "EL", "vat_id": "EL123456789"}}, ("seller", "country"),
     "EL is not an ISO 3166-1 country code: Greece is GR (EL is the prefix of Greek VAT ids"),
    ({"seller": {**SELLER, "name": "Vendor\x0bGmbH"}}, ("seller", "name"), "U+000B, which XML cannot carry"),
    ({"seller": {**SELLER, "street": "Haupt\x00strasse"}}, ("seller", "street"), "U+0000"),
    ({"seller": {**SELLER, "registration_id": "HRB\x1b1"}}, ("seller", "registration_id"), "U+001B"),
    ({"item_name": "Incentive\x01"}, ("item_name",), "U+0001"),
    ({"note": "Q3\x0c"}, ("note",), "U+000C"),
    ({"tax": {"category": "E", "exemption_reason": "Exempt\x02"}}, ("tax", "exemption_reason"), "U+0002"),
], ids=["eas", "icd", "vatex", "vat-prefix", "vat-prefix-of-another-country", "gr-with-de-vat-id", "country-xx",
        "country-uk", "country-el", "name-control", "street-nul", "registration-escape", "item-name",
        "note", "exemption-reason"])
def test_settings_outside_the_code_lists_or_xml_are_refused(tmp_path: Path, overrides: dict[str, Any],
                                                            key: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, **overrides)
    problems = {tuple(e["loc"]): e["msg"] for e in refused.value.errors()}
    assert list(problems) == [key], problems
    assert message in problems[key]


def test_u_plus_7f_is_text_xml_can_hold(tmp_path: Path) -> None:
    """DEL (U+007F) is a control character XML 1.0 allows; only what XML cannot hold is refused."""
    assert make_settings(tmp_path, seller={**SELLER, "endpoint_id": "DE\x7f1"}).seller.endpoint_id == "DE\x7f1"


@pytest.mark.parametrize(("tax", "key", "message"), [
    ({"category": "S"}, "rate", "category S (standard rate) needs a rate above 0 and below 100 percent"),
    ({"category": "S", "rate": "0"}, "rate", "needs a rate above 0 and below 100 percent"),
    ({"category": "S", "rate": "100"}, "rate", "less than 100"),
    ({"category": "S", "rate": "19", "exemption_reason": "x"}, "exemption_reason", "takes no exemption reason"),
    ({"category": "Z", "exemption_reason_code": "VATEX-EU-132"}, "exemption_reason_code",
     "category Z takes no exemption reason"),
    ({"category": "E", "rate": "5", "exemption_reason": "x"}, "rate", "has a VAT rate of 0"),
    ({"category": "O", "rate": "0", "exemption_reason": "x"}, "rate", "takes no rate"),
    ({"category": "E"}, "exemption_reason", "needs exemption_reason or exemption_reason_code"),
    ({"category": "auto", "rate": "19", "exemption_reason_code": "VATEX-EU-AE"}, "exemption_reason_code",
     "writes its own exemption reasons"),
    ({"category": "auto", "rate": "0"}, "rate", "above 0 and below 100 percent"),
])
def test_tax_problems_name_their_key(tmp_path: Path, tax: dict[str, str], key: str, message: str) -> None:
    """Each problem of the tax table names its key (``rails.<name>.tax.rate``), not the table."""
    settings = (f"""\
        [rails.cn]
        plugin = "credit_note"
        outbox = "outbox"

        [rails.cn.seller]
        name = "Vendor Software GmbH"
        country = "DE"
        vat_id = "DE123456789"
        registration_id = "HRB 12345"
        endpoint_id = "DE123456789"
        endpoint_scheme = "9930"

        [rails.cn.tax]
        {chr(10).join(f'{k} = "{v}"' for k, v in tax.items())}
        """)
    with pytest.raises(ConfigError) as refused:
        Harness(settings, directory=tmp_path)
    assert refused.value.problems == [(f"rails.cn.tax.{key}", refused.value.problems[0][1])]
    assert message in refused.value.problems[0][1]


@pytest.mark.parametrize(("who", "problem"), [
    (payee(peppol_id="9999:abc"), "payee r1: the scheme of peppol_id '9999' is not a code of the EAS list (BR-CL-25)"),
    (payee(vat_id="ZZ123456789"), "payee r1: vat_id starts with 'ZZ', which is not a country prefix (BR-CO-09"),
    (payee(vat_id="DE123456789"), "payee r1: vat_id starts with DE, but the country is NL: a VAT id starts with the "
     "prefix of its country (NL)"),
    (payee(country="UK", vat_id="GB123456789"),
     "payee r1: country UK is not an ISO 3166-1 country code: the United Kingdom is GB"),
    (payee(country="XK", vat_id=""), "payee r1: country XK is not an ISO 3166-1 country code: EN 16931 writes Kosovo "
     "as 1A (BR-CL-14)"),
    (payee(country="EL", vat_id="EL123456789"), "payee r1: country EL is not an ISO 3166-1 country code: Greece is GR "
     "(EL is the prefix of Greek VAT ids, not a country code) (BR-CL-14)"),
    (payee(country="XX"), "payee r1: country 'XX' is not an ISO 3166-1 alpha-2 country code (BR-CL-14)"),
    (payee(city="Amster\x0bdam"), "payee r1: city holds the character U+000B, which XML cannot carry"),
    (payee(buyer_reference="PO\x00"), "payee r1: buyer_reference holds the character U+0000"),
    (payee(vat_id="NL123456789\x0bB01"), "payee r1: vat_id holds the character U+000B"),
], ids=["eas", "vat-prefix", "vat-prefix-of-another-country", "uk", "xk", "el", "xx", "city", "buyer-reference",
        "vat-id-control"])
def test_payees_whose_credit_note_would_break_a_rule_are_refused(rail_factory: RailFactory, who: Any,
                                                                 problem: str) -> None:
    """Refused by ``check_payee`` (routing then reroutes or holds the payout with this reason) and, at send,
    rejected before any number is taken."""
    rail = rail_factory(tax=AUTO)
    assert str(rail.check_payee(who, "EUR")).startswith(problem)
    [result] = rail.send([instruction(1, who=who)])
    assert result.outcome == Outcome.REJECTED and str(result.reason).startswith(problem)
    assert rail.ledger.numbers() == []


def test_codes_and_vat_ids_are_taken_in_upper_case(rail_factory: RailFactory, en16931: En16931) -> None:
    """What people type in lower case is written as the rules compare it: ``em`` is EM, ``de444444444`` is
    DE444444444, ``vatex-eu-132`` is VATEX-EU-132."""
    seller = {**SELLER, "endpoint_scheme": "em", "endpoint_id": "billing@vendor.example", "vat_id": " de123456789"}
    rail = rail_factory(seller=seller, tax=AUTO)
    assert rail.settings.seller.endpoint_scheme == "EM" and rail.settings.seller.vat_id == "DE123456789"
    root = issued(rail, en16931, payee(country="DE", vat_id="de444444444", peppol_id="9930:de444444444"))
    assert root.find(SUPPLIER + "cbc:EndpointID", ubl.XPATH_NS).get("schemeID") == "EM"
    assert text(root, CUSTOMER + "cac:PartyTaxScheme/cbc:CompanyID") == "DE444444444"
    assert text(root, CATEGORY) == "S"
    exempt = rail_factory(tax={"category": "E", "exemption_reason_code": "vatex-eu-132"})
    assert exempt.settings.tax.exemption_reason_code == "VATEX-EU-132"


def test_a_lower_case_vat_id_gets_reverse_charge(rail_factory: RailFactory, en16931: En16931) -> None:
    rail = rail_factory(tax=AUTO)
    who = payee(country="NL", vat_id="nl123456789b01")
    assert rail.check_payee(who, "EUR") is None
    root = issued(rail, en16931, who)
    assert text(root, CATEGORY) == "AE"
    assert text(root, CUSTOMER + "cac:PartyTaxScheme/cbc:CompanyID") == "NL123456789B01"


@pytest.mark.parametrize(("buyer", "category"), [
    (payee(country="GR", vat_id="EL987654321"), "S"),  # domestic, the buyer's VAT id with Greece's prefix EL
    (payee(country="GR", vat_id="GR987654321"), "S"),  # GR is a valid prefix too (BR-CO-09)
    (payee(country="DE", vat_id="DE987654321"), "AE"),  # intra-EU B2B from Greece: reverse charge
    (payee(country="US", vat_id=""), "O"),
], ids=["gr-el", "gr-gr", "de", "us"])
def test_a_seller_in_greece(rail_factory: RailFactory, en16931: En16931, buyer: Any, category: str) -> None:
    """Greece is GR, in the EU; its VAT ids start with EL (or GR)."""
    seller = {**SELLER, "country": "GR", "vat_id": "el123456789", "city": "Athens", "endpoint_id": "EL123456789",
              "endpoint_scheme": "9933"}
    rail = rail_factory(seller=seller, tax={"category": "auto", "rate": "24"})
    root = issued(rail, en16931, buyer)
    assert text(root, CATEGORY) == category
    assert text(root, SUPPLIER + "cac:PostalAddress/cac:Country/cbc:IdentificationCode") == "GR"
    if category != "O":
        assert text(root, SUPPLIER + "cac:PartyTaxScheme/cbc:CompanyID") == "EL123456789"


def test_a_buyer_in_greece_gets_reverse_charge(rail_factory: RailFactory, en16931: En16931) -> None:
    root = issued(rail_factory(tax=AUTO), en16931, payee(country="GR", vat_id="EL987654321"))
    assert text(root, CATEGORY) == "AE"
    assert text(root, CUSTOMER + "cac:PostalAddress/cac:Country/cbc:IdentificationCode") == "GR"


def test_greece_written_el_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    settings = ("""\
        [rails.cn]
        plugin = "credit_note"
        outbox = "outbox"

        [rails.cn.seller]
        name = "Vendor Software AE"
        country = "EL"
        vat_id = "EL123456789"
        registration_id = "GEMI 123"
        endpoint_id = "EL123456789"
        endpoint_scheme = "9933"

        [rails.cn.tax]
        rate = "24"
        """)
    with pytest.raises(ConfigError) as refused:
        Harness(settings, directory=tmp_path)
    [(key, message)] = refused.value.problems
    assert key == "rails.cn.seller.country" and "Greece is GR" in message


def test_the_documented_messages_are_the_real_ones(tmp_path: Path) -> None:
    """The messages docs/rails/credit_note.md quotes are the ones the settings give."""
    docs = " ".join(DOCS.read_text().split())
    cases = [
        {"tax": {"category": "O", "exemption_reason_code": "VATEX-EU-O"},
         "seller": {**SELLER, "registration_id": None}},
        {"tax": {"category": "auto"}},
        {"tax": {"category": "auto", "rate": "19"}, "seller": {**SELLER, "vat_id": None}},
        {"tax": {"category": "S"}},
        {"seller": {**SELLER, "country": "EL"}},
        {"seller": {**SELLER, "vat_id": "FR12345678901"}},
        {"seller": {**SELLER, "endpoint_scheme": "9999"}},
        {"tax": {"category": "E", "exemption_reason_code": "VATEX-FOO"}},
        {"seller": {**SELLER, "name": "Vendor\x0bGmbH"}},
    ]
    for overrides in cases:
        with pytest.raises(ValidationError) as refused:
            make_settings(tmp_path, **overrides)
        for error in refused.value.errors():
            quoted = f"rails.credit.{'.'.join(map(str, error['loc']))}: {error['msg']}"
            assert quoted in docs, quoted
