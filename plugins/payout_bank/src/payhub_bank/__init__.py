"""payhub-bank: the ``bank_transfer`` rail (SEPA pain.001 for EUR, NACHA ACH for USD)."""

from payhub_bank.rail import BankTransferRail
from payhub_bank.settings import AchSettings, BankSettings, SepaSettings

__all__ = ["AchSettings", "BankSettings", "BankTransferRail", "SepaSettings"]
