"""Settings of the ``bank_transfer`` rail: ``[rails.<name>]``, ``[rails.<name>.sepa]``, ``[rails.<name>.ach]``.

Bad values stop start-up with the key and the problem, e.g. ``rails.bank.sepa.debtor_iban: Value error, invalid
IBAN: Invalid checksum digits``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from payhub.api import Amount, ConfigPath, PluginSettings
from pydantic import Field, field_validator, model_validator
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.us import rtn

from payhub_bank.text import ach_text, sepa_text

SEPA_MAX = Decimal("999999999.99")  # the SCT scheme's largest amount
ACH_MAX = Decimal("99999999.99")  # the 10-digit amount field of a NACHA entry


def check_routing_number(value: str) -> str:
    """A 9-digit ABA routing transit number with a valid check digit (weights 3, 7, 1) and a Federal Reserve
    routing symbol (01-12, 21-32, 61-72); returns it, or raises ValueError with the reason."""
    number = value.strip()
    if not re.fullmatch(r"\d{9}", number):
        raise ValueError("a routing number has 9 digits")
    try:
        rtn.validate(number)
    except StdnumError:
        raise ValueError("routing number check digit is wrong") from None
    prefix = int(number[:2])
    if not (1 <= prefix <= 12 or 21 <= prefix <= 32 or 61 <= prefix <= 72):
        raise ValueError(f"routing number prefix {number[:2]} is not one ACH accepts (01-12, 21-32, 61-72)")
    return number


class SepaSettings(PluginSettings):
    """The debtor side of SEPA credit transfers (pain.001.001.03)."""

    debtor_name: str = Field(description="Name of the account holder paying, as the bank knows it (max 70).")
    debtor_iban: str = Field(description="IBAN of the account the transfers are paid from.")
    debtor_bic: str | None = Field(None, description="BIC of the debtor's bank; omitted: NOTPROVIDED (IBAN only).")
    debtor_country: str | None = Field(
        None, description="ISO country of the debtor's address (Dbtr/PstlAdr/Ctry); needed for payees outside the EEA.")
    debtor_address: list[str] = Field(
        default_factory=list, description="Up to 2 address lines (Dbtr/PstlAdr/AdrLine, max 70 each).")
    initiating_party_id: str | None = Field(
        None, description="Customer id the bank assigned for file uploads (InitgPty/Id/OrgId/Othr/Id), if it asks.")
    max_amount: Amount = Field(Decimal("100000"), gt=0, le=SEPA_MAX, description="Largest single payout in EUR.")
    require_bic: Literal["never", "outside_eea", "always"] = Field(
        "outside_eea", description="When a payee must give a BIC: SEPA needs it for accounts outside the EEA.")
    bic_must_match_bank: bool = Field(
        True, description="Refuse a payee BIC that is not the BIC of the IBAN's bank code in schwifty's registry.")
    batch_booking: bool = Field(True, description="One debit for the whole file on the statement (BtchBookg).")
    category_purpose: str | None = Field(None, description="ISO category purpose code, e.g. SUPP (CtgyPurp/Cd).")
    remittance: str = Field(
        "{reference}", description="Unstructured remittance text (max 140): {reference} {payout_id} {key} {payee_id}.")

    @field_validator("debtor_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not sepa_text(value, 70):
            raise ValueError("the debtor name has no characters of the SEPA character set")
        return value

    @field_validator("debtor_iban")
    @classmethod
    def _iban(cls, value: str) -> str:
        try:
            iban = IBAN(value)
        except SchwiftyException as exc:
            raise ValueError(f"invalid IBAN: {exc}") from None
        if not iban.in_sepa_zone:
            raise ValueError(f"IBAN country {iban.country_code} is not in the SEPA zone")
        return str(iban.compact)

    @field_validator("debtor_bic")
    @classmethod
    def _bic(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(BIC(value).compact)
        except SchwiftyException as exc:
            raise ValueError(f"invalid BIC: {exc}") from None

    @field_validator("debtor_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError("an ISO 3166 alpha-2 country code in capitals, e.g. DE")
        return value

    @field_validator("debtor_address")
    @classmethod
    def _address(cls, value: list[str]) -> list[str]:
        if len(value) > 2 or any(not sepa_text(line, 70) for line in value):
            raise ValueError("at most 2 lines, each with characters of the SEPA character set")
        return value

    @field_validator("initiating_party_id")
    @classmethod
    def _party(cls, value: str | None) -> str | None:
        if value is not None and (not value or len(value) > 35 or sepa_text(value, 35) != value):
            raise ValueError("1-35 characters of the SEPA character set")
        return value

    @field_validator("category_purpose")
    @classmethod
    def _purpose(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]{4}", value):
            raise ValueError("an ISO 20022 category purpose code is 4 capital letters (e.g. SUPP)")
        return value

    @field_validator("remittance")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(reference="r", payout_id=1, key="k", payee_id="p")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad template ({exc}); use {{reference}} {{payout_id}} {{key}} {{payee_id}}") from None
        return value


class AchSettings(PluginSettings):
    """The originator side of NACHA ACH credit files, as agreed with the originating bank (ODFI)."""

    immediate_destination: str = Field(description="Routing number of the bank or operator receiving the file.")
    immediate_destination_name: str = Field("", description="Its name (max 23).")
    immediate_origin: str = Field(description="10 characters the bank assigned (often 1 + tax id) or your routing.")
    immediate_origin_name: str = Field(description="Your company's name in the file header (max 23).")
    company_id: str = Field(description="Company identification the bank assigned (10 characters, often 1 + EIN).")
    company_name: str = Field(description="Company name shown to receivers (max 16).")
    originating_dfi: str = Field(description="Routing number (9 digits) or its first 8 digits, of your bank.")
    entry_class: Literal["CCD", "PPD"] = Field(
        "CCD", description="SEC code for payees without an entry_class detail: CCD business, PPD individual.")
    entry_description: str = Field("PAYOUT", description="Company entry description (max 10), shown to receivers.")
    max_amount: Amount = Field(Decimal("100000"), gt=0, le=ACH_MAX, description="Largest single payout in USD.")
    addenda: bool = Field(True, description="Add a 05 addenda with the payout's key and reference to each entry.")
    reference_code: str = Field("", description="File header reference code (max 8).")
    line_ending: Literal["LF", "CRLF"] = "LF"
    paid_after_business_days: int | None = Field(
        None, ge=1, le=60, description="Report an entry PAID this many business days after its effective date "
        "when no return was imported; unset: it stays accepted until a return arrives.")
    return_window_days: int = Field(
        60, ge=0, le=120, description="Days after an entry is reported paid that a late return (unauthorized "
        "debits may come back up to 60 days after settlement) is still imported and reopens the payout; 0 = paid "
        "is final.")

    @field_validator("immediate_destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        return check_routing_number(value)

    @field_validator("originating_dfi")
    @classmethod
    def _odfi(cls, value: str) -> str:
        value = value.strip()
        if re.fullmatch(r"\d{9}", value):
            return check_routing_number(value)[:8]
        if not re.fullmatch(r"\d{8}", value):
            raise ValueError("the routing number (9 digits) or its first 8 digits")
        return value

    @field_validator("immediate_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        value = value.strip()
        if re.fullmatch(r"\d{9}", value):
            return " " + value
        if not re.fullmatch(r"[A-Z0-9]{10}", value):
            raise ValueError("9 digits (a routing number) or 10 capital letters and digits (e.g. 1 + tax id)")
        return value

    @field_validator("company_id")
    @classmethod
    def _company_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z0-9 ]{1,10}", value):
            raise ValueError("up to 10 capital letters and digits")
        return value

    @field_validator("company_name", "immediate_origin_name", "entry_description")
    @classmethod
    def _text(cls, value: str) -> str:
        if not ach_text(value, 94):
            raise ValueError("no characters usable in a NACHA file")
        return value

    @field_validator("reference_code")
    @classmethod
    def _reference(cls, value: str) -> str:
        if len(value) > 8:
            raise ValueError("at most 8 characters")
        return value


class BankSettings(PluginSettings):
    """``[rails.<name>]`` keys of the bank_transfer rail; give ``sepa``, ``ach`` or both."""

    outbox: ConfigPath = Field(description="Directory the bank connection picks files up from; must exist.")
    inbox: ConfigPath | None = Field(
        None, description="Directory the bank connection drops status reports and return files into.")
    inbox_settle_seconds: float = Field(
        2.0, ge=0, le=3600,
        description="A report file is read once it has not changed for this long (still being written).")
    prefix: str = Field("payhub", description="File name prefix (1-8 letters, digits or dashes).")
    execution_offset_days: int = Field(
        1, ge=0, le=30, description="Requested execution / effective entry date: this many business days ahead.")
    max_batch: int = Field(500, ge=1, le=10000, description="Most payouts in one file (one send call).")
    lock_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Wait for another process writing the outbox.")
    file_mode: int | None = Field(
        None, ge=0o600, le=0o660,
        description="Permissions of the written files, which hold account numbers (TOML octal: 0o640); default "
                    "payhub's [files] mode: 0600, or 0640 with group_readable. Never readable by others.")
    sepa: SepaSettings | None = None
    ach: AchSettings | None = None

    @field_validator("file_mode")
    @classmethod
    def _mode(cls, value: int | None) -> int | None:
        if value is not None and (value & ~0o660 or value & 0o600 != 0o600):
            raise ValueError(f"{value:#o}: the owner reads and writes, the group may read or write (0o600, 0o640, "
                             "0o660), others get nothing: the files hold account numbers")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,7}", value):
            raise ValueError("1-8 letters, digits or dashes, starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _some_scheme(self) -> BankSettings:
        if self.sepa is None and self.ach is None:
            raise ValueError("configure [sepa] (EUR), [ach] (USD) or both")
        return self
