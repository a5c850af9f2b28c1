"""Helpers shared by the gift-card tests (a module of its own, so that its name is unique on sys.path)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from payhub.api import Payee, PayoutInstruction

API_KEY = "sim-test-key"


def payee(pid: str = "p1", *, email: str | None = "p1@example.com", country: str | None = "US",
          details: dict[str, str] | None = None) -> Payee:
    return Payee(pid, f"Partner {pid}", country=country, email=email, details=details or {})


def instruction(n: int = 1, amount: str = "25.00", currency: str = "USD",
                who: Payee | None = None) -> PayoutInstruction:
    return PayoutInstruction(n, f"ph-{n:032x}", who or payee(), Decimal(amount), currency, f"payhub payout {n}",
                             datetime(2026, 10, 1, tzinfo=UTC))

