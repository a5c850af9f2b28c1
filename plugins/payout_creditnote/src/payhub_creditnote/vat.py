"""Which VAT category (EN 16931 BT-118 / BT-151) a credit note gets when the settings say ``category = "auto"``.

The vendor issuing the credit note is the seller (BG-4) and the reseller it credits is the buyer (BG-7): the credit
note reduces what the reseller owes for the vendor's supplies, so it carries the VAT treatment of those supplies,
decided by :func:`choose`:

* seller outside the EU: ``O``, not subject to (EU) VAT;
* seller in the EU, buyer outside the EU: ``O``;
* seller and buyer in two different EU member states, buyer with a VAT id (B2B): ``AE``, reverse charge;
* otherwise (same member state, or a buyer in the EU without a VAT id): ``S`` at the seller's standard rate.
"""

from __future__ import annotations

from decimal import Decimal

from payhub_creditnote.ubl import Tax

# The 27 EU member states by ISO 3166-1 alpha-2 code (Greece is GR here; its VAT ids start with EL).
EU_MEMBER_STATES = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU",
    "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK"})

REVERSE_CHARGE = Tax("AE", Decimal(0), "Reverse charge", "VATEX-EU-AE")
NOT_SUBJECT = Tax("O", None, "Not subject to VAT", "VATEX-EU-O")


def choose(seller_country: str, standard_rate: Decimal | None, buyer_country: str, buyer_vat_id: str | None) -> Tax:
    """The category of a credit note from the seller to the buyer (see the module docstring).

    ``standard_rate`` (percent) is needed only for a seller in the EU; it is the rate of category ``S``.
    """
    if seller_country not in EU_MEMBER_STATES or buyer_country not in EU_MEMBER_STATES:
        return NOT_SUBJECT
    if buyer_country != seller_country and buyer_vat_id:
        return REVERSE_CHARGE
    if standard_rate is None:
        raise ValueError("a seller in the EU needs its standard VAT rate")
    return Tax("S", standard_rate)


def categories(seller_country: str) -> frozenset[str]:
    """Every category :func:`choose` can give a seller in ``seller_country``."""
    return frozenset({"S", "AE", "O"}) if seller_country in EU_MEMBER_STATES else frozenset({"O"})
