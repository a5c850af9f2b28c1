"""Bank status reports: ISO 20022 ``pain.002`` customer payment status reports (SEPA) and NACHA return files.

A pain.002 reports a status for the whole message (``OrgnlGrpInfAndSts/GrpSts``), for a payment information block
(``OrgnlPmtInfAndSts/PmtInfSts``) or for single transactions (``TxInfAndSts/TxSts``, matched by
``OrgnlEndToEndId``), each with optional reasons (``StsRsnInf/Rsn/Cd``, ``AddtlInf``). Every pain.002 version
(``.001.03`` to ``.001.14``) has these elements; the reader goes by element names, whatever the namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from lxml import etree
from payhub.api import Outcome


class ReportError(Exception):
    """A report file that cannot be read."""


class Rank(IntEnum):
    """Statuses only move forward: a later report never turns a final status back into a pending one."""

    ACCEPTED = 1
    PAID = 2
    REJECTED = 3
    RETURNED = 4


OUTCOME = {Rank.ACCEPTED: Outcome.ACCEPTED, Rank.PAID: Outcome.PAID, Rank.REJECTED: Outcome.REJECTED,
           Rank.RETURNED: Outcome.RETURNED}

# ISO 20022 ExternalPaymentTransactionStatus1Code -> what it means for payhub; PART (some accepted, some not) and
# unknown codes say nothing on their own.
STATUS_RANK = {
    "ACSC": Rank.PAID,  # settlement completed (debtor's account debited)
    "ACCC": Rank.PAID,  # settlement completed on the creditor's account
    "RJCT": Rank.REJECTED,
    "ACTC": Rank.ACCEPTED, "ACCP": Rank.ACCEPTED, "ACSP": Rank.ACCEPTED, "ACWC": Rank.ACCEPTED,
    "ACWP": Rank.ACCEPTED, "ACFC": Rank.ACCEPTED, "PDNG": Rank.ACCEPTED, "RCVD": Rank.ACCEPTED,
}

# ISO 20022 ExternalStatusReason1Code: the codes the EPC lists for SEPA credit transfer rejections.
REASONS = {
    "AC01": "incorrect account number", "AC04": "closed account number", "AC06": "blocked account",
    "AC13": "invalid debtor account type", "AG01": "transaction forbidden", "AG02": "invalid bank operation code",
    "AM04": "insufficient funds", "AM05": "duplication", "AM09": "wrong amount", "AM23": "amount exceeds limit",
    "BE04": "missing creditor address", "BE05": "unrecognised initiating party", "CNOR": "creditor bank is not "
    "registered", "DNOR": "debtor bank is not registered", "DT01": "invalid date", "DU01": "duplicate message id",
    "DU02": "duplicate payment information id", "ED05": "settlement failed", "FF01": "invalid file format",
    "FOCR": "following cancellation request", "MD07": "end customer deceased", "MS02": "not specified reason "
    "(customer)", "MS03": "not specified reason (agent)", "RC01": "bank identifier incorrect",
    "RR01": "missing debtor account or identification", "RR02": "missing debtor name or address",
    "RR03": "missing creditor name or address", "RR04": "regulatory reason", "SL01": "specific service offered by "
    "the debtor agent", "TM01": "received after cut-off time", "CUST": "requested by customer",
}


@dataclass(frozen=True, slots=True)
class Status:
    """A status a report gave: what it means, why, and which file said so."""

    rank: Rank
    reason: str | None
    report: str


def strongest(*found: Status | None) -> Status | None:
    best: Status | None = None
    for status in found:
        if status is not None and (best is None or status.rank > best.rank):
            best = status
    return best


@dataclass
class Pain002:
    """What one pain.002 says, by original message id, payment information id and end-to-end id."""

    groups: dict[str, Status]
    payments: dict[str, Status]
    transactions: dict[str, Status]


def _local(element: etree._Element) -> str:
    return str(etree.QName(element).localname)


def _children(element: etree._Element, name: str) -> Iterator[etree._Element]:
    return (child for child in element if isinstance(child.tag, str) and _local(child) == name)


def _text(element: etree._Element, name: str) -> str | None:
    for child in _children(element, name):
        return (child.text or "").strip() or None
    return None


def _reasons(element: etree._Element) -> str | None:
    found = []
    for info in _children(element, "StsRsnInf"):
        code = None
        for reason in _children(info, "Rsn"):
            code = _text(reason, "Cd") or _text(reason, "Prtry")
        extra = " ".join(filter(None, ((child.text or "").strip() for child in _children(info, "AddtlInf"))))
        words = [code] if code else []
        if code in REASONS:
            words.append(REASONS[code])
        text = " ".join(words)
        if extra:
            text = f"{text}: {extra}" if text else extra
        if text:
            found.append(text)
    return "; ".join(found) or None


def _status(code: str | None, reasons: str | None, report: str) -> Status | None:
    rank = STATUS_RANK.get(code or "")
    if rank is None:
        return None
    words = [code or "", reasons or ""] if rank >= Rank.REJECTED else [code or ""]
    detail = " ".join(w for w in words if w)
    return Status(rank, f"{detail} (bank status report {report})", report)


def is_pain002(data: bytes) -> bool:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<")


def read_pain002(data: bytes, report: str) -> Pain002:
    """Parse a pain.002; raise ReportError when it is not one."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ReportError(f"not well-formed XML: {exc}") from None
    reports = [root] if _local(root) == "CstmrPmtStsRpt" else list(_children(root, "CstmrPmtStsRpt"))
    if not reports:
        raise ReportError(f"not a pain.002 customer payment status report (root element {_local(root)})")
    found = Pain002({}, {}, {})
    for rpt in reports:
        for group in _children(rpt, "OrgnlGrpInfAndSts"):
            msg_id = _text(group, "OrgnlMsgId")
            status = _status(_text(group, "GrpSts"), _reasons(group), report)
            if msg_id and status:
                found.groups[msg_id] = strongest(found.groups.get(msg_id), status) or status
        for payment in _children(rpt, "OrgnlPmtInfAndSts"):
            pmt_id = _text(payment, "OrgnlPmtInfId")
            status = _status(_text(payment, "PmtInfSts"), _reasons(payment), report)
            if pmt_id and status:
                found.payments[pmt_id] = strongest(found.payments.get(pmt_id), status) or status
            for tx in _children(payment, "TxInfAndSts"):
                e2e = _text(tx, "OrgnlEndToEndId")
                status = _status(_text(tx, "TxSts"), _reasons(tx), report)
                if e2e and status:
                    found.transactions[e2e] = strongest(found.transactions.get(e2e), status) or status
    return found


def read_report(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReportError(f"cannot read: {exc}") from None
