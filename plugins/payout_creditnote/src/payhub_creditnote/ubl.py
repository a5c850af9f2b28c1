"""UBL 2.1 ``CreditNote`` documents with the EN 16931 / Peppol BIS Billing 3.0 fields, and their XSD validation.

:func:`amounts` is the one tax computation; :func:`render` writes a document from plain values (no I/O, the same
inputs give the same bytes); :func:`validate` checks a document against the vendored OASIS UBL 2.1 schema and its
coded values against the EN 16931 code lists (:mod:`payhub_creditnote.codes`); :func:`text_problem` says whether
a value can be written at all.

One payout is one credit note with one line: quantity 1, the payout's net amount, the VAT category the rail chose
for the seller and buyer (:mod:`payhub_creditnote.vat`). With ``amount_includes_tax`` (the default) the payout
amount is what the reseller is credited (PayableAmount); the net is the amount divided by (1 + rate), rounded half
up to the currency's minor units, the VAT is net × rate rounded likewise (BR-S-09), and a difference of a minor
unit, if any, is the PayableRoundingAmount (BT-114) so that PayableAmount equals the payout exactly. Otherwise the
payout amount is the net and VAT is added.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree

from payhub_creditnote import codes

CUSTOMIZATION_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
CREDIT_NOTE_TYPE = "381"

NS_CN = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
NS_CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
NS_CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
NAMESPACES = {None: NS_CN, "cac": NS_CAC, "cbc": NS_CBC}
XPATH_NS = {"cn": NS_CN, "cac": NS_CAC, "cbc": NS_CBC}

# Characters XML 1.0 cannot hold (control characters but tab and line breaks, surrogates, U+FFFE, U+FFFF), listed
# as they are rather than as the complement of what XML can hold: the same set, compiled in a fifth of the time.
NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# VAT categories (UNCL5305) that need an exemption reason (BR-E-10, BR-AE-10, BR-G-10, BR-O-10).
EXEMPT_CATEGORIES = frozenset({"E", "AE", "G", "O"})


@dataclass(frozen=True, slots=True)
class Party:
    """A seller or buyer as the document shows it. ``endpoint`` is (scheme, id): the Peppol electronic address;
    ``identifier`` (scheme, id; scheme may be empty) the party identifier (BT-29 / BT-46)."""

    name: str
    country: str
    endpoint: tuple[str, str]
    vat_id: str | None = None
    registration_id: str | None = None
    identifier: tuple[str, str] | None = None
    street: str | None = None
    additional_street: str | None = None
    city: str | None = None
    postal_code: str | None = None
    contact_email: str | None = None


@dataclass(frozen=True, slots=True)
class Tax:
    """The VAT category of every credit note: ``rate`` in percent (None for category O), exemption reason/code."""

    category: str
    rate: Decimal | None
    exemption_reason: str | None = None
    exemption_reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class Amounts:
    """The document's totals, each rounded to the currency's minor units."""

    net: Decimal  # LineExtensionAmount = TaxExclusiveAmount
    tax: Decimal  # TaxAmount
    inclusive: Decimal  # TaxInclusiveAmount = net + tax
    rounding: Decimal  # PayableRoundingAmount
    payable: Decimal  # PayableAmount = inclusive + rounding


@dataclass(frozen=True, slots=True)
class CreditNote:
    """Everything one document says."""

    document_id: str
    issue_date: date
    currency: str
    minor_units: int
    seller: Party
    buyer: Party
    buyer_reference: str
    tax: Tax
    amounts: Amounts
    item_name: str
    line_note: str
    object_id: str  # the payout's idempotency key, as the line's object identifier (BT-128)
    note: str | None = None


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be written into a document (a character XML cannot hold), or None."""
    found = NOT_XML.search(value)
    return None if found is None else (f"holds the character U+{ord(found.group()):04X}, which XML cannot carry "
                                       "(a control character)")


def quantize(value: Decimal, minor_units: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-minor_units), rounding=ROUND_HALF_UP)


def amounts(amount: Decimal, minor_units: int, rate: Decimal | None, *, includes_tax: bool) -> Amounts:
    """The totals of a credit note for a payout of ``amount`` at VAT ``rate`` percent (see the module docstring)."""
    amount = quantize(amount, minor_units)
    share = (rate or Decimal(0)) / 100
    net = quantize(amount / (1 + share), minor_units) if includes_tax else amount
    tax = quantize(net * share, minor_units)
    inclusive = net + tax
    payable = amount if includes_tax else inclusive
    return Amounts(net, tax, inclusive, payable - inclusive, payable)


def _money(value: Decimal, minor_units: int) -> str:
    return f"{quantize(value, minor_units):.{minor_units}f}"


def _percent(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class _Builder:
    def __init__(self, minor_units: int, currency: str) -> None:
        self.minor_units, self.currency = minor_units, currency

    @staticmethod
    def el(parent: Any, prefix: str, name: str, text: str | None = None, **attrs: str) -> Any:
        node = etree.SubElement(parent, f"{{{NS_CAC if prefix == 'cac' else NS_CBC}}}{name}", attrs)
        if text is not None:
            node.text = text
        return node

    def amount(self, parent: Any, name: str, value: Decimal) -> Any:
        return self.el(parent, "cbc", name, _money(value, self.minor_units), currencyID=self.currency)

    def party(self, parent: Any, role: str, party: Party, tax: Tax) -> None:
        el = self.el
        node = el(el(parent, "cac", role), "cac", "Party")
        el(node, "cbc", "EndpointID", party.endpoint[1], schemeID=party.endpoint[0])
        if party.identifier:
            scheme, identifier = party.identifier
            attrs = {"schemeID": scheme} if scheme else {}
            el(el(node, "cac", "PartyIdentification"), "cbc", "ID", identifier, **attrs)
        el(el(node, "cac", "PartyName"), "cbc", "Name", party.name)
        address = el(node, "cac", "PostalAddress")
        for name, value in (("StreetName", party.street), ("AdditionalStreetName", party.additional_street),
                            ("CityName", party.city), ("PostalZone", party.postal_code)):
            if value:
                el(address, "cbc", name, value)
        el(el(address, "cac", "Country"), "cbc", "IdentificationCode", party.country)
        if party.vat_id and tax.category != "O":  # BR-O-02 / BR-O-03: no VAT identifiers outside the scope of VAT
            scheme = el(node, "cac", "PartyTaxScheme")
            el(scheme, "cbc", "CompanyID", party.vat_id)
            el(el(scheme, "cac", "TaxScheme"), "cbc", "ID", "VAT")
        legal = el(node, "cac", "PartyLegalEntity")
        el(legal, "cbc", "RegistrationName", party.name)
        if party.registration_id:
            el(legal, "cbc", "CompanyID", party.registration_id)
        if party.contact_email:
            el(el(node, "cac", "Contact"), "cbc", "ElectronicMail", party.contact_email)

    def category(self, parent: Any, name: str, tax: Tax, *, with_reason: bool) -> None:
        el = self.el
        node = el(parent, "cac", name)
        el(node, "cbc", "ID", tax.category)
        if tax.rate is not None:
            el(node, "cbc", "Percent", _percent(tax.rate))
        if with_reason and tax.category in EXEMPT_CATEGORIES:
            if tax.exemption_reason_code:
                el(node, "cbc", "TaxExemptionReasonCode", tax.exemption_reason_code)
            if tax.exemption_reason:
                el(node, "cbc", "TaxExemptionReason", tax.exemption_reason)
        el(el(node, "cac", "TaxScheme"), "cbc", "ID", "VAT")


def render(note: CreditNote) -> bytes:
    """The document as UTF-8 XML bytes."""
    b = _Builder(note.minor_units, note.currency)
    el, totals = b.el, note.amounts
    root = etree.Element(f"{{{NS_CN}}}CreditNote", nsmap=NAMESPACES)
    el(root, "cbc", "CustomizationID", CUSTOMIZATION_ID)
    el(root, "cbc", "ProfileID", PROFILE_ID)
    el(root, "cbc", "ID", note.document_id)
    el(root, "cbc", "IssueDate", note.issue_date.isoformat())
    el(root, "cbc", "CreditNoteTypeCode", CREDIT_NOTE_TYPE)
    if note.note:
        el(root, "cbc", "Note", note.note)
    el(root, "cbc", "DocumentCurrencyCode", note.currency)
    el(root, "cbc", "BuyerReference", note.buyer_reference)
    b.party(root, "AccountingSupplierParty", note.seller, note.tax)
    b.party(root, "AccountingCustomerParty", note.buyer, note.tax)
    tax_total = el(root, "cac", "TaxTotal")
    b.amount(tax_total, "TaxAmount", totals.tax)
    subtotal = el(tax_total, "cac", "TaxSubtotal")
    b.amount(subtotal, "TaxableAmount", totals.net)
    b.amount(subtotal, "TaxAmount", totals.tax)
    b.category(subtotal, "TaxCategory", note.tax, with_reason=True)
    monetary = el(root, "cac", "LegalMonetaryTotal")
    b.amount(monetary, "LineExtensionAmount", totals.net)
    b.amount(monetary, "TaxExclusiveAmount", totals.net)
    b.amount(monetary, "TaxInclusiveAmount", totals.inclusive)
    if totals.rounding:
        b.amount(monetary, "PayableRoundingAmount", totals.rounding)
    b.amount(monetary, "PayableAmount", totals.payable)
    line = el(root, "cac", "CreditNoteLine")
    el(line, "cbc", "ID", "1")
    el(line, "cbc", "Note", note.line_note)
    el(line, "cbc", "CreditedQuantity", "1", unitCode="C62")
    b.amount(line, "LineExtensionAmount", totals.net)
    reference = el(line, "cac", "DocumentReference")
    el(reference, "cbc", "ID", note.object_id)
    el(reference, "cbc", "DocumentTypeCode", "130")
    item = el(line, "cac", "Item")
    el(item, "cbc", "Description", note.line_note)
    el(item, "cbc", "Name", note.item_name)
    b.category(item, "ClassifiedTaxCategory", note.tax, with_reason=False)
    price = el(line, "cac", "Price")
    b.amount(price, "PriceAmount", totals.net)
    result: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return result


SCHEMA_DIR = "schemas/ubl-2.1"
MAIN_SCHEMA = "maindoc/UBL-CreditNote-2.1.xsd"


def schema_path() -> Path:
    """Where the vendored UBL 2.1 CreditNote schema is."""
    return Path(__file__).resolve().parent / SCHEMA_DIR / MAIN_SCHEMA


@lru_cache(maxsize=1)
def _schema() -> Any:
    """The parsed schema: parsed by the first validation (a few tenths of a second), then kept for the process."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(schema_path()), parser))


def validate(document: bytes) -> list[str]:
    """Problems of ``document`` (empty when none): against the UBL 2.1 CreditNote schema, then its coded values
    against the EN 16931 code lists (:func:`code_problems`)."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    try:
        tree = etree.fromstring(document, parser)
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed XML: {exc}"]
    schema = _schema()
    if not schema.validate(tree):
        return [f"line {e.line}: {e.message}" for e in schema.error_log]
    return code_problems(tree)


def code_problems(tree: Any) -> list[str]:
    """The coded values of a parsed credit note that break an EN 16931 code-list rule: electronic address schemes
    (BR-CL-25), party identifier schemes (BR-CL-10), countries (BR-CL-14), exemption reason codes (BR-CL-22) and
    VAT identifier prefixes (BR-CO-09)."""
    return [f"{element}: {problem}" for element, problem in _code_findings(tree) if problem]


def _code_findings(tree: Any) -> Iterator[tuple[str, str | None]]:
    for node in tree.iterfind(".//cbc:EndpointID", XPATH_NS):
        yield "EndpointID@schemeID", codes.eas_problem(str(node.get("schemeID")))
    for node in tree.iterfind(".//cac:PartyIdentification/cbc:ID[@schemeID]", XPATH_NS):
        yield "PartyIdentification/ID@schemeID", codes.icd_problem(str(node.get("schemeID")))
    for node in tree.iterfind(".//cac:Country/cbc:IdentificationCode", XPATH_NS):
        yield "Country/IdentificationCode", codes.country_problem(str(node.text))
    for node in tree.iterfind(".//cbc:TaxExemptionReasonCode", XPATH_NS):
        yield "TaxExemptionReasonCode", codes.vatex_problem(str(node.text))
    for node in tree.iterfind(".//cac:PartyTaxScheme/cbc:CompanyID", XPATH_NS):
        yield "PartyTaxScheme/CompanyID", codes.vat_prefix_problem(str(node.text))


def read(document: bytes) -> Mapping[str, str]:
    """A few fields of a credit note, for lookups and tests: ID, IssueDate, DocumentCurrencyCode, PayableAmount."""
    tree = etree.fromstring(document, etree.XMLParser(no_network=True, resolve_entities=False))
    found: dict[str, str] = {}
    for name, path in (("id", "cbc:ID"), ("issue_date", "cbc:IssueDate"), ("currency", "cbc:DocumentCurrencyCode"),
                       ("payable", "cac:LegalMonetaryTotal/cbc:PayableAmount")):
        node = tree.find(path, XPATH_NS)
        found[name] = str(node.text) if node is not None and node.text is not None else ""
    return found
