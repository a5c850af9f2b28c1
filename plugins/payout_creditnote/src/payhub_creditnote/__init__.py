"""Credit-note payout rail for payhub (entry point ``credit_note`` in ``payhub.rails``).

* :class:`CreditNoteRail` / :class:`CreditNoteSettings`: the rail (see :mod:`payhub_creditnote.rail`).
* :mod:`payhub_creditnote.ubl`: UBL 2.1 CreditNote documents (EN 16931 / Peppol BIS Billing 3.0) and their
  validation (XSD and code lists).
* :mod:`payhub_creditnote.codes`: the EN 16931 code lists (countries, VAT prefixes, EAS, ICD, VATEX).
* :mod:`payhub_creditnote.ledger`: the gapless numbering ledger.
* :mod:`payhub_creditnote.delivery`: optional delivery to a billing system over HTTP.
"""

from payhub_creditnote.rail import CreditNoteRail, CreditNoteSettings

__all__ = ["CreditNoteRail", "CreditNoteSettings"]
