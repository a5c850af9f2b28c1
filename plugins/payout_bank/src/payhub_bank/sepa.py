"""SEPA credit transfer initiation files: ISO 20022 ``pain.001.001.03``, validated against the official XSD.

One file is one message (GrpHdr) with one payment information block (PmtInf: one debtor account, one requested
execution date) holding one CdtTrfTxInf per payout. Identifiers:

* ``MsgId`` and ``PmtInfId``: the file name without extension (unique per file);
* ``InstrId`` and ``EndToEndId``: the payout's idempotency key (``ph-`` + 32 hex digits = 35 characters, the field's
  maximum), or a deterministic short form of a longer key (see :func:`payhub_bank.text.end_to_end_id`).

The payee's bank receives ``EndToEndId`` and the remittance text, so the payee and their bank can quote them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from importlib import resources

from lxml import etree

from payhub_bank.settings import SepaSettings
from payhub_bank.text import sepa_text

MESSAGE = "pain.001.001.03"
NS = f"urn:iso:std:iso:20022:tech:xsd:{MESSAGE}"
CENT = Decimal("0.01")


class SchemaError(Exception):
    """A generated document does not validate against its XSD (a bug: nothing is written)."""


@dataclass(frozen=True, slots=True)
class SepaItem:
    """One credit transfer."""

    key: str
    end_to_end_id: str
    amount: Decimal
    name: str
    iban: str
    bic: str | None
    remittance: str


@lru_cache(maxsize=1)
def schema() -> etree.XMLSchema:
    """The official ISO 20022 XSD of pain.001.001.03, shipped in this package."""
    ref = resources.files("payhub_bank") / "schemas" / f"{MESSAGE}.xsd"
    with resources.as_file(ref) as path:
        return etree.XMLSchema(etree.parse(str(path)))


def amount_text(amount: Decimal) -> str:
    return str(amount.quantize(CENT))


def build(msg_id: str, created_at: datetime, execution_date: date, sepa: SepaSettings,
          items: Sequence[SepaItem]) -> tuple[bytes, dict[str, int]]:
    """The pain.001 document for ``items`` and the line of each payout's CdtTrfTxInf (by end-to-end id).

    Raises SchemaError when the document does not validate against the XSD.
    """
    total = sum((i.amount for i in items), Decimal(0))

    def sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
        element = etree.SubElement(parent, f"{{{NS}}}{tag}", attrib)
        if text is not None:
            element.text = text
        return element

    def path(parent: etree._Element, tags: str, text: str) -> etree._Element:
        *outer, last = tags.split("/")
        for tag in outer:
            parent = sub(parent, tag)
        return sub(parent, last, text)

    root = etree.Element(f"{{{NS}}}Document", nsmap={None: NS})
    initiation = sub(root, "CstmrCdtTrfInitn")
    header = sub(initiation, "GrpHdr")
    sub(header, "MsgId", msg_id)
    sub(header, "CreDtTm", created_at.strftime("%Y-%m-%dT%H:%M:%S"))
    sub(header, "NbOfTxs", str(len(items)))
    sub(header, "CtrlSum", amount_text(total))
    party = sub(header, "InitgPty")
    sub(party, "Nm", sepa_text(sepa.debtor_name, 70))
    if sepa.initiating_party_id:
        path(party, "Id/OrgId/Othr/Id", sepa.initiating_party_id)

    payment = sub(initiation, "PmtInf")
    sub(payment, "PmtInfId", msg_id)
    sub(payment, "PmtMtd", "TRF")
    sub(payment, "BtchBookg", "true" if sepa.batch_booking else "false")
    sub(payment, "NbOfTxs", str(len(items)))
    sub(payment, "CtrlSum", amount_text(total))
    kind = sub(payment, "PmtTpInf")
    path(kind, "SvcLvl/Cd", "SEPA")
    if sepa.category_purpose:
        path(kind, "CtgyPurp/Cd", sepa.category_purpose)
    sub(payment, "ReqdExctnDt", execution_date.isoformat())
    debtor = sub(payment, "Dbtr")
    sub(debtor, "Nm", sepa_text(sepa.debtor_name, 70))
    if sepa.debtor_country:
        address = sub(debtor, "PstlAdr")
        sub(address, "Ctry", sepa.debtor_country)
        for line in sepa.debtor_address:
            sub(address, "AdrLine", sepa_text(line, 70))
    account = sub(payment, "DbtrAcct")
    path(account, "Id/IBAN", sepa.debtor_iban)
    sub(account, "Ccy", "EUR")
    agent = sub(sub(payment, "DbtrAgt"), "FinInstnId")
    if sepa.debtor_bic:
        sub(agent, "BIC", sepa.debtor_bic)
    else:
        path(agent, "Othr/Id", "NOTPROVIDED")
    sub(payment, "ChrgBr", "SLEV")
    for item in items:
        tx = sub(payment, "CdtTrfTxInf")
        ids = sub(tx, "PmtId")
        sub(ids, "InstrId", item.end_to_end_id)
        sub(ids, "EndToEndId", item.end_to_end_id)
        path(tx, "Amt/InstdAmt", amount_text(item.amount)).set("Ccy", "EUR")
        if item.bic:
            path(tx, "CdtrAgt/FinInstnId/BIC", item.bic)
        path(tx, "Cdtr/Nm", sepa_text(item.name, 70))
        path(tx, "CdtrAcct/Id/IBAN", item.iban)
        remittance = sepa_text(item.remittance, 140)
        if remittance:
            path(tx, "RmtInf/Ustrd", remittance)

    # The declaration in double quotes, as most bank samples have it (lxml would write single quotes).
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8", pretty_print=True,
                                                                        xml_declaration=False)
    parsed = etree.fromstring(body)
    validator = schema()
    if not validator.validate(parsed):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in list(validator.error_log)[:5])
        raise SchemaError(f"generated {MESSAGE} does not validate against the XSD: {errors}")
    lines = {}
    for tx in parsed.iter(f"{{{NS}}}CdtTrfTxInf"):
        e2e = tx.findtext(f"{{{NS}}}PmtId/{{{NS}}}EndToEndId")
        if e2e is not None and tx.sourceline is not None:
            lines[e2e] = tx.sourceline
    return body, lines
