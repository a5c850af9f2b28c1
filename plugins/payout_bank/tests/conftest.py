"""Fixtures for the bank_transfer rail: rails on temporary outbox/inbox directories, payout instructions and bank
status reports written the way banks write them. Tests through the core use payhub's kit (``payhub_harness``)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from payhub.api import Payee, PayoutInstruction

from payhub_bank import BankSettings, BankTransferRail

SEPA = {
    "debtor_name": "Acme Vertriebs GmbH",
    "debtor_iban": "DE89 3704 0044 0532 0130 00",
    "debtor_bic": "COBADEFFXXX",
    "debtor_country": "DE",
    "debtor_address": ["Friedrichstraße 123", "10117 Berlin"],
}
ACH = {
    "immediate_destination": "091000019",
    "immediate_destination_name": "Wells Fargo Bank",
    "immediate_origin": "1234567890",
    "immediate_origin_name": "Acme Inc",
    "company_id": "1234567890",
    "company_name": "Acme Inc",
    "originating_dfi": "091000019",
}

# Real-world test accounts: IBANs with valid checksums whose bank codes schwifty knows, ABA numbers that pass 3-7-1.
EUR_PAYEES = {
    "de": ("DE89370400440532013000", "COBADEFFXXX"),
    "fr": ("FR1420041010050500013M02606", "PSSTFRPPXXX"),
    "nl": ("NL91ABNA0417164300", "ABNANL2A"),
    "es": ("ES9121000418450200051332", ""),
    "at": ("AT611904300234573201", ""),
}
USD_ROUTING = ["091000019", "021000021", "011000015", "026009593", "122105278", "322271627", "111000025"]


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    path = tmp_path / "outbox"
    path.mkdir()
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def make_rail(tmp_path: Path, outbox: Path, inbox: Path) -> Callable[..., BankTransferRail]:
    """``make_rail(**changes)``: a rail on the test outbox and inbox; nested dicts change [sepa] / [ach] keys, and
    a value None removes a key."""

    def factory(**changes: Any) -> BankTransferRail:
        raw = merged({"outbox": "outbox", "inbox": "inbox", "inbox_settle_seconds": 0, "sepa": SEPA, "ach": ACH},
                     changes)
        return BankTransferRail("bank", BankSettings.model_validate(raw, context={"base_dir": tmp_path}))

    return factory


@pytest.fixture
def rail(make_rail: Callable[..., BankTransferRail]) -> BankTransferRail:
    return make_rail()


Instruction = Callable[..., PayoutInstruction]


@pytest.fixture
def payout() -> Instruction:
    """``payout(n, currency, amount, name=…, country=…, **details)``: an instruction with key ``ph-<n as 32 hex>``."""

    def factory(n: int, currency: str, amount: str, *, name: str | None = None, country: str | None = None,
                key: str | None = None, **details: str) -> PayoutInstruction:
        if currency == "EUR" and "iban" not in details:  # pass iban="" for a payee without one
            iban, bic = list(EUR_PAYEES.values())[n % len(EUR_PAYEES)]
            details = {"iban": iban, **({"bic": bic} if bic else {}), **details}
        if currency == "USD":
            details = {"routing_number": USD_ROUTING[n % len(USD_ROUTING)], "account_number": f"{1000 + n:08d}",
                       **details}
        payee = Payee(f"p{n}", name or f"Partner {n}", country=country or ("US" if currency == "USD" else "DE"),
                      details=details)
        return PayoutInstruction(n, key or f"ph-{n:032x}", payee, Decimal(amount), currency, f"payhub payout {n}",
                                 datetime.now(UTC))

    return factory


# ---------------------------------------------------------------------------------------------- bank reports


def pain002(original_msg_id: str, *, group: str | None = None, group_reason: str | None = None,
            payment: tuple[str, str] | None = None,
            transactions: Sequence[tuple[str, str, str | None]] = ()) -> str:
    """A pain.002.001.03 status report as a bank sends it: group status, payment information status
    ``(pmt_inf_id, status)`` and transaction statuses ``(end_to_end_id, status, reason code or None)``."""
    reason = (f"<StsRsnInf><Rsn><Cd>{group_reason}</Cd></Rsn><AddtlInf>file refused</AddtlInf></StsRsnInf>"
              if group_reason else "")
    group_xml = f"<GrpSts>{group}</GrpSts>{reason}" if group else ""
    tx_xml = "".join(
        f"<TxInfAndSts><StsId>S{n}</StsId><OrgnlInstrId>{e2e}</OrgnlInstrId><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId>"
        f"<TxSts>{status}</TxSts>"
        + (f"<StsRsnInf><Orgtr><Nm>Creditor bank</Nm></Orgtr><Rsn><Cd>{code}</Cd></Rsn>"
           f"<AddtlInf>Account unknown at creditor bank</AddtlInf></StsRsnInf>" if code else "")
        + "</TxInfAndSts>" for n, (e2e, status, code) in enumerate(transactions))
    payment_xml = ""
    if payment or transactions:
        pmt_id, pmt_status = payment or (original_msg_id, "")
        payment_xml = (f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>{pmt_id}</OrgnlPmtInfId>"
                       + (f"<PmtInfSts>{pmt_status}</PmtInfSts>" if pmt_status else "") + tx_xml
                       + "</OrgnlPmtInfAndSts>")
    return textwrap.dedent(f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"
                  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
          <CstmrPmtStsRpt>
            <GrpHdr>
              <MsgId>STATUS-{original_msg_id[-20:]}</MsgId>
              <CreDtTm>2026-10-02T08:15:00</CreDtTm>
              <InitgPty><Id><OrgId><BICOrBEI>COBADEFFXXX</BICOrBEI></OrgId></Id></InitgPty>
            </GrpHdr>
            <OrgnlGrpInfAndSts>
              <OrgnlMsgId>{original_msg_id}</OrgnlMsgId>
              <OrgnlMsgNmId>pain.001.001.03</OrgnlMsgNmId>
              {group_xml}
            </OrgnlGrpInfAndSts>
            {payment_xml}
          </CstmrPmtStsRpt>
        </Document>
        """)


def nacha_return(returns: list[tuple[str, str, int, str]], *, odfi: str = "09100001") -> str:
    """A NACHA return file from the ODFI: one CCD batch of returned credits (transaction code 21), each entry with
    an addenda 99 ``(original trace number, return reason code, amount in cents, original individual id)``.

    Written field by field from the NACHA rules, independently of the plugin's writer."""
    def field(value: str, size: int, right: bool = False) -> str:
        assert len(value) <= size, (value, size)
        return value.rjust(size, "0") if right else value.ljust(size)

    lines = ["1" + "01" + " 123456789" + " 091000019" + "261005" + "0600" + "A" + "094" + "10" + "1"
             + field("ACME INC", 23) + field("WELLS FARGO BANK", 23) + field("", 8)]
    lines.append("5" + "220" + field("ACME INC", 16) + field("", 20) + field("1234567890", 10) + "CCD"
                 + field("PAYOUT", 10) + field("", 6) + "261005" + "279" + "1" + "02100002" + field("1", 7, True))
    hash_total = credit = count = 0
    for n, (trace, code, cents, individual) in enumerate(returns, start=1):
        rdfi = "02100002"
        return_trace = rdfi + field(str(n), 7, True)
        lines.append("6" + "21" + odfi + "9" + field("123456789", 17) + field(str(cents), 10, True)
                     + field(individual, 15) + field("ACME INC", 22) + "  " + "1" + return_trace)
        lines.append("7" + "99" + code + trace + field("", 6) + odfi + field("RETURNED BY RDFI", 44) + return_trace)
        hash_total += int(odfi)
        credit += cents
        count += 2
    lines.append("8" + "220" + field(str(count), 6, True) + field(str(hash_total % 10**10), 10, True)
                 + field("0", 12, True) + field(str(credit), 12, True) + field("1234567890", 10) + field("", 19)
                 + field("", 6) + "02100002" + field("1", 7, True))
    blocks = (len(lines) + 1 + 9) // 10
    lines.append("9" + field("1", 6, True) + field(str(blocks), 6, True) + field(str(count), 8, True)
                 + field(str(hash_total % 10**10), 10, True) + field("0", 12, True) + field(str(credit), 12, True)
                 + field("", 39))
    lines += ["9" * 94] * (blocks * 10 - len(lines))
    assert all(len(line) == 94 for line in lines)
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_pain002() -> Callable[..., str]:
    return pain002


@pytest.fixture
def make_return() -> Callable[..., str]:
    return nacha_return

