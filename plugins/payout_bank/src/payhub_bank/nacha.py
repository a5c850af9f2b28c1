"""NACHA ACH files of credit entries (CCD for businesses, PPD for individuals), and the return-file reader.

A file holds a file header (1), one batch per entry class (batch header 5, entry details 6 with an optional 05
addenda 7 each, batch control 8), a file control (9), and lines of 94 ``9`` characters up to a multiple of ten
records (blocking factor 10). Every record is 94 characters.

Per entry, the payout is found again by its trace number (originating DFI + a 7-digit sequence that continues
across files) and its individual identification number (a short form of the idempotency key); both are in the
manifest written next to the file, and the 05 addenda carries the whole key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from payhub_bank.settings import AchSettings
from payhub_bank.text import ach_text

RECORD = 94
BLOCK = 10
MODIFIERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SERVICE_CLASS_CREDITS = "220"
HASH_MODULUS = 10**10


class NachaError(Exception):
    """A value does not fit its NACHA field, or a file read is malformed."""


@dataclass(frozen=True, slots=True)
class AchItem:
    """One credit entry."""

    key: str
    individual_id: str
    amount_cents: int
    name: str
    routing: str
    account: str
    transaction_code: str
    entry_class: str
    addenda: str | None


@dataclass(frozen=True, slots=True)
class AchEntry:
    """Where an item went: its physical line (1-based), trace number and batch."""

    key: str
    line: int
    trace_number: str
    batch_number: int


def alpha(value: str, size: int) -> str:
    """Left-justified text, space filled, cut to ``size``."""
    return value[:size].ljust(size)


def numeric(value: int, size: int) -> str:
    """Right-justified, zero filled; a value that does not fit is an error, never cut."""
    text = str(value)
    if value < 0 or len(text) > size:
        raise NachaError(f"{value} does not fit a {size}-digit NACHA field")
    return text.zfill(size)


def entry_hash(routings: Sequence[str]) -> int:
    """Sum of the 8-digit receiving DFI identifications, its rightmost 10 digits."""
    return sum(int(r[:8]) for r in routings) % HASH_MODULUS


def build(ach: AchSettings, created_at: datetime, modifier: str, effective_date: date, items: Sequence[AchItem],
          first_trace: int) -> tuple[str, list[AchEntry], int]:
    """The file text for ``items``, where each went, and the next unused trace sequence number."""
    eol = "\r\n" if ach.line_ending == "CRLF" else "\n"
    records: list[str] = [
        "1" + "01" + (" " + ach.immediate_destination) + ach.immediate_origin.rjust(10)
        + created_at.strftime("%y%m%d") + created_at.strftime("%H%M") + modifier + "094" + "10" + "1"
        + alpha(ach_text(ach.immediate_destination_name, 23), 23) + alpha(ach_text(ach.immediate_origin_name, 23), 23)
        + alpha(ach.reference_code, 8)
    ]
    placed: list[AchEntry] = []
    trace = first_trace
    batches = [(cls, [i for i in items if i.entry_class == cls]) for cls in ("CCD", "PPD")]
    batch_number = 0
    file_hash = file_credit = file_count = 0
    for entry_class, members in batches:
        if not members:
            continue
        batch_number += 1
        records.append(
            "5" + SERVICE_CLASS_CREDITS + alpha(ach_text(ach.company_name, 16), 16) + alpha("", 20)
            + alpha(ach.company_id, 10) + entry_class + alpha(ach_text(ach.entry_description, 10), 10)
            + alpha("", 6) + effective_date.strftime("%y%m%d") + alpha("", 3) + "1" + ach.originating_dfi
            + numeric(batch_number, 7))
        count = 0
        for item in members:
            trace_number = ach.originating_dfi + numeric(trace, 7)
            records.append(
                "6" + item.transaction_code + item.routing[:8] + item.routing[8] + alpha(item.account, 17)
                + numeric(item.amount_cents, 10) + alpha(item.individual_id, 15)
                + alpha(ach_text(item.name, 22), 22) + "  " + ("1" if item.addenda else "0") + trace_number)
            placed.append(AchEntry(item.key, len(records), trace_number, batch_number))
            count += 1
            if item.addenda:
                records.append("7" + "05" + alpha(item.addenda, 80) + numeric(1, 4) + trace_number[-7:])
                count += 1
            trace = trace + 1 if trace < 9_999_999 else 1
        batch_hash = entry_hash([i.routing for i in members])
        batch_credit = sum(i.amount_cents for i in members)
        records.append(
            "8" + SERVICE_CLASS_CREDITS + numeric(count, 6) + numeric(batch_hash, 10) + numeric(0, 12)
            + numeric(batch_credit, 12) + alpha(ach.company_id, 10) + alpha("", 19) + alpha("", 6)
            + ach.originating_dfi + numeric(batch_number, 7))
        file_hash = (file_hash + batch_hash) % HASH_MODULUS
        file_credit += batch_credit
        file_count += count
    blocks = math.ceil((len(records) + 1) / BLOCK)
    records.append(
        "9" + numeric(batch_number, 6) + numeric(blocks, 6) + numeric(file_count, 8) + numeric(file_hash, 10)
        + numeric(0, 12) + numeric(file_credit, 12) + alpha("", 39))
    records += ["9" * RECORD] * (blocks * BLOCK - len(records))
    for number, record in enumerate(records, start=1):
        if len(record) != RECORD:  # a bug in a layout above: never write such a file
            raise NachaError(f"record {number} is {len(record)} characters, not {RECORD}: {record!r}")
    return eol.join(records) + eol, placed, trace


# ------------------------------------------------------------------------------------------------ returns

RETURN_REASONS = {
    "R01": "insufficient funds",
    "R02": "account closed",
    "R03": "no account / unable to locate account",
    "R04": "invalid account number structure",
    "R05": "unauthorized debit to consumer account",
    "R06": "returned per ODFI's request",
    "R07": "authorization revoked by customer",
    "R08": "payment stopped",
    "R09": "uncollected funds",
    "R10": "customer advises originator is not known or not authorized",
    "R11": "customer advises entry not in accordance with the terms of the authorization",
    "R12": "account sold to another DFI",
    "R13": "invalid ACH routing number",
    "R14": "representative payee deceased or unable to continue in that capacity",
    "R15": "beneficiary or account holder deceased",
    "R16": "account frozen / entry returned per OFAC instruction",
    "R17": "file record edit criteria / entry with invalid account number initiated under questionable "
           "circumstances",
    "R20": "non-transaction account",
    "R21": "invalid company identification",
    "R22": "invalid individual ID number",
    "R23": "credit entry refused by receiver",
    "R24": "duplicate entry",
    "R29": "corporate customer advises not authorized",
    "R31": "permissible return entry (CCD and CTX only)",
    "R34": "limited participation DFI",
    "R37": "source document presented for payment",
    "R61": "misrouted return",
    "R67": "duplicate return",
    "R68": "untimely return",
    "R69": "field error(s)",
    "R70": "permissible return entry not accepted / return not requested by ODFI",
}


@dataclass(frozen=True, slots=True)
class AchReturn:
    """One returned entry: the trace number of the original entry and why it came back."""

    original_trace: str
    code: str
    description: str
    individual_id: str
    amount_cents: int
    information: str


@dataclass(frozen=True, slots=True)
class AchChange:
    """A notification of change (addenda 98): the receiver's bank asks to correct the payee's details."""

    original_trace: str
    code: str
    corrected_data: str


def read_returns(text: str) -> tuple[list[AchReturn], list[AchChange]]:
    """The returns (addenda 99) and notifications of change (addenda 98) of a NACHA return file.

    Raises NachaError when the text is not a NACHA file (wrong record length or type, an addenda without entry).
    """
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].startswith("1"):
        raise NachaError("does not start with a NACHA file header record (type 1)")
    returns: list[AchReturn] = []
    changes: list[AchChange] = []
    entry: str | None = None
    for number, line in enumerate(lines, start=1):
        if len(line) != RECORD:
            raise NachaError(f"line {number} has {len(line)} characters, not {RECORD}")
        kind = line[0]
        if kind not in "156789":
            raise NachaError(f"line {number}: unknown record type {kind!r}")
        if kind == "6":
            entry = line
        elif kind == "7":
            if entry is None:
                raise NachaError(f"line {number}: addenda record without an entry detail record")
            addenda_type = line[1:3]
            if addenda_type == "99":
                code, amount = line[3:6], entry[29:39]
                if not amount.isdigit():
                    raise NachaError(f"line {number - 1}: amount {amount!r} is not a number")
                returns.append(AchReturn(
                    original_trace=line[6:21], code=code,
                    description=RETURN_REASONS.get(code, "return reason not known to payhub"),
                    individual_id=entry[39:54].strip(), amount_cents=int(amount),
                    information=line[35:79].strip()))
            elif addenda_type == "98":
                changes.append(AchChange(original_trace=line[6:21], code=line[3:6], corrected_data=line[35:64].strip()))
        else:
            entry = None
    return returns, changes
