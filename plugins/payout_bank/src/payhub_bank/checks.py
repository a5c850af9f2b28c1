"""Payee details each scheme needs, checked with schwifty (IBAN, BIC) and python-stdnum (ABA routing numbers).

Each check returns the reason a payee cannot be paid, or None. Reasons never show a full account number.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from functools import lru_cache

from payhub.api import Payee
from schwifty import BIC, IBAN, registry
from schwifty.exceptions import SchwiftyException

from payhub_bank.settings import AchSettings, SepaSettings, check_routing_number
from payhub_bank.text import ach_text, mask_account, sepa_text

# Territories whose banks use the BICs of another country (French overseas, Crown dependencies, Åland, Monaco).
BIC_COUNTRY_OF = {"GF": "FR", "GP": "FR", "MQ": "FR", "RE": "FR", "YT": "FR", "PM": "FR", "BL": "FR", "MF": "FR",
                  "NC": "FR", "PF": "FR", "WF": "FR", "TF": "FR", "MC": "FR", "GG": "GB", "JE": "GB", "IM": "GB",
                  "AX": "FI"}
# SEPA countries and territories outside the EEA: a SEPA transfer there needs the payee's BIC.
OUTSIDE_EEA = frozenset({"CH", "GB", "GG", "JE", "IM", "GI", "MC", "SM", "VA", "AD", "NC", "PF", "WF", "PM", "BL",
                         "TF"})
ACCOUNT_TYPES = {"checking": "22", "savings": "32"}  # NACHA transaction codes of an automated deposit (credit)


@lru_cache(maxsize=1)
def sepa_countries() -> frozenset[str]:
    """Country codes whose IBANs are in the SEPA zone, from schwifty's IBAN registry (countries and territories)."""
    found = set()
    for a in string.ascii_uppercase:
        for b in string.ascii_uppercase:
            try:
                if registry.get_iban_spec(a + b).in_sepa_zone:
                    found.add(a + b)
            except SchwiftyException:
                continue
    return frozenset(found)


def detail(details: Mapping[str, str], name: str) -> str:
    return (details.get(name) or "").strip()


def sepa_payee_problem(payee: Payee, sepa: SepaSettings) -> str | None:
    """Why a SEPA credit transfer cannot be made to ``payee``, or None."""
    raw_iban = detail(payee.details, "iban")
    if not raw_iban:
        return f"payee {payee.id} has no iban (payee file column iban)"
    try:
        iban = IBAN(raw_iban)
    except SchwiftyException as exc:
        return f"payee {payee.id} IBAN {mask_account(raw_iban)} is invalid: {exc}"
    if not iban.in_sepa_zone:
        return f"payee {payee.id} IBAN is from {iban.country_code}, which is not in the SEPA zone"
    if not sepa_text(payee.name, 70):
        return f"payee {payee.id} name has no characters of the SEPA character set"
    if iban.country_code in OUTSIDE_EEA and not sepa.debtor_country:
        return (f"transfers to {iban.country_code} (outside the EEA) must carry the payer's address: set "
                "sepa.debtor_country and sepa.debtor_address")
    raw_bic = detail(payee.details, "bic")
    if not raw_bic:
        needed = sepa.require_bic == "always" or (
            sepa.require_bic == "outside_eea" and iban.country_code in OUTSIDE_EEA)
        if needed:
            return f"payee {payee.id} has no bic, which SEPA needs for accounts in {iban.country_code}"
        return None
    try:
        bic = BIC(raw_bic)
    except SchwiftyException as exc:
        return f"payee {payee.id} BIC {raw_bic!r} is invalid: {exc}"
    countries = {iban.country_code, BIC_COUNTRY_OF.get(iban.country_code, iban.country_code)}
    if bic.country_code not in countries:
        return (f"payee {payee.id} BIC {bic.compact} is from {bic.country_code} but the IBAN is from "
                f"{iban.country_code}")
    if sepa.bic_must_match_bank:
        try:
            known = [BIC(str(b)) for b in BIC.candidates_from_bank_code(iban.country_code, iban.bank_code)]
        except (SchwiftyException, ValueError):
            known = []  # the registry does not know this bank code: nothing to compare with
        if known and not any(k.compact[:8] == bic.compact[:8] for k in known):
            expected = ", ".join(sorted({k.compact[:8] for k in known}))
            return (f"payee {payee.id} BIC {bic.compact} does not match the bank of the IBAN (bank code "
                    f"{iban.bank_code} is {expected})")
    return None


def ach_entry_class(payee: Payee, ach: AchSettings) -> str:
    return detail(payee.details, "entry_class").upper() or ach.entry_class


def ach_payee_problem(payee: Payee, ach: AchSettings) -> str | None:
    """Why an ACH credit cannot be made to ``payee``, or None."""
    if payee.country not in (None, "US"):
        return f"payee {payee.id} is in {payee.country}; ACH pays US accounts only (international ACH is not supported)"
    routing = detail(payee.details, "routing_number")
    account = detail(payee.details, "account_number")
    if not routing:
        return f"payee {payee.id} has no routing_number (payee file column routing_number)"
    if not account:
        return f"payee {payee.id} has no account_number (payee file column account_number)"
    try:
        check_routing_number(routing)
    except ValueError as exc:
        return f"payee {payee.id} routing number {routing!r} is invalid: {exc}"
    compact = re.sub(r"[\s-]", "", account)
    if not re.fullmatch(r"\d{4,17}", compact):
        return f"payee {payee.id} account number {mask_account(account)} is not 4 to 17 digits"
    kind = detail(payee.details, "account_type").lower() or "checking"
    if kind not in ACCOUNT_TYPES:
        return f"payee {payee.id} account_type {kind!r} is not checking or savings"
    entry_class = ach_entry_class(payee, ach)
    if entry_class not in ("CCD", "PPD"):
        return f"payee {payee.id} entry_class {entry_class!r} is not CCD (business) or PPD (individual)"
    if not ach_text(payee.name, 22):
        return f"payee {payee.id} name has no characters usable in a NACHA file"
    return None


def ach_account(payee: Payee) -> tuple[str, str, str]:
    """(routing number, account number, transaction code) of a payee that passed :func:`ach_payee_problem`."""
    routing = detail(payee.details, "routing_number")
    account = re.sub(r"[\s-]", "", detail(payee.details, "account_number"))
    kind = detail(payee.details, "account_type").lower() or "checking"
    return routing, account, ACCOUNT_TYPES[kind]
