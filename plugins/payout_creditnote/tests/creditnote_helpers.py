"""Helpers shared by the credit-note tests (a module of its own, so that its name is unique on sys.path)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from lxml import etree
from payhub.api import Payee, PayoutInstruction

from payhub_creditnote import CreditNoteRail, CreditNoteSettings
from payhub_creditnote.ubl import XPATH_NS

SELLER = {"name": "Vendor Software GmbH", "country": "DE", "vat_id": "DE123456789", "endpoint_id": "DE123456789",
          "endpoint_scheme": "9930", "registration_id": "HRB 12345", "street": "Hauptstrasse 1", "city": "Berlin",
          "postal_code": "10115", "contact_email": "billing@vendor.example"}
EXEMPT = {"category": "E", "exemption_reason": "Exempt partner incentive", "exemption_reason_code": "VATEX-EU-132"}


def settings_values(directory: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"outbox": str(directory / "outbox"), "series": "CN-2026-", "seller": dict(SELLER),
                              "tax": dict(EXEMPT)}
    values.update(overrides)
    return values


def make_settings(directory: Path, **overrides: Any) -> CreditNoteSettings:
    return CreditNoteSettings.model_validate(settings_values(directory, **overrides),
                                             context={"base_dir": directory})


def make_rail(directory: Path, **overrides: Any) -> CreditNoteRail:
    return CreditNoteRail("cn", make_settings(directory, **overrides))


def payee(pid: str = "r1", *, country: str | None = "NL", email: str | None = "ap@reseller.example",
          **details: str) -> Payee:
    base = {"vat_id": "NL123456789B01", "city": "Amsterdam", "street": "Keizersgracht 1", "postal_code": "1015 CJ"}
    base.update(details)
    return Payee(pid, f"Reseller {pid} B.V.", country=country, email=email,
                 details={k: v for k, v in base.items() if v})


def instruction(n: int = 1, amount: str = "100.00", currency: str = "EUR",
                who: Payee | None = None) -> PayoutInstruction:
    return PayoutInstruction(n, f"ph-{n:032x}", who or payee(), Decimal(amount), currency, f"payhub payout {n}",
                             datetime(2026, 10, 1, tzinfo=UTC))


def xml(path: Path) -> Any:
    return etree.parse(str(path)).getroot()


def text(root: Any, path: str) -> str | None:
    node = root.find(path, XPATH_NS)
    return None if node is None else node.text

