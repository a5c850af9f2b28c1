"""The EN 16931 code lists that the coded values of a credit note must belong to, and the checks against them.

* Countries (BT-40, BT-55; rule BR-CL-14): ISO 3166-1 alpha-2, as ``pycountry`` has it, plus the two codes that
  EN 16931's country list adds: ``1A`` (Kosovo) and ``XI`` (United Kingdom, Northern Ireland).
* VAT identifier prefixes (BT-31, BT-48; BR-CO-09): those country codes and ``EL``, the prefix of Greek VAT ids.
  A VAT id starts with the prefix of its party's country (:func:`vat_prefixes`).
* EAS, the electronic address schemes (``schemeID`` of BT-34, BT-49; BR-CL-25), the ISO 6523 ICD schemes of party
  identifiers (BT-29; BR-CL-10) and the VATEX exemption reason codes (BT-121; BR-CL-22). No well-kept package
  publishes them, so they are kept here as data, exactly as the official CEN/TC 434 validation artefacts for UBL
  have them: release 1.3.16 (2026-03-30; ConnectingEurope/eInvoicing-EN16931, tag ``validation-1.3.16``, file
  ``ubl/xslt/EN16931-UBL-validation.xslt``). A test extracts the same lists from that stylesheet and asserts that
  they are equal to these, so they cannot drift from the rules the documents are checked against; moving to a
  newer release of the artefacts means updating them here.

Codes are case-sensitive in the rules: :func:`normal` (upper case, no surrounding blanks) is applied to what people
type before it is checked.
"""

from __future__ import annotations

from functools import lru_cache

import pycountry

# BR-CL-25: the EAS code list (electronic address schemes), CEN validation artefacts 1.3.16.
EAS = frozenset({
    "0002", "0007", "0009", "0037", "0060", "0088", "0096", "0097", "0106", "0130", "0135", "0142", "0147", "0151",
    "0154", "0158", "0170", "0177", "0183", "0184", "0188", "0190", "0191", "0192", "0193", "0194", "0195", "0196",
    "0198", "0199", "0200", "0201", "0202", "0203", "0204", "0205", "0208", "0209", "0210", "0211", "0212", "0213",
    "0215", "0216", "0217", "0218", "0219", "0220", "0221", "0225", "0230", "0235", "0240", "0244", "0242", "0245",
    "0246", "0248", "9910", "9913", "9914", "9915", "9918", "9919", "9920", "9922", "9923", "9924", "9925", "9926",
    "9927", "9928", "9929", "9930", "9931", "9932", "9933", "9934", "9935", "9936", "9937", "9938", "9939", "9940",
    "9941", "9942", "9943", "9944", "9945", "9946", "9947", "9948", "9949", "9950", "9951", "9952", "9953", "9957",
    "9959", "AN", "AQ", "AS", "AU", "EM",
})

# BR-CL-10: the ISO 6523 ICD code list (identifier schemes), CEN validation artefacts 1.3.16.
ICD = frozenset({
    "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010", "0011", "0012", "0013", "0014", "0015",
    "0016", "0017", "0018", "0019", "0020", "0021", "0022", "0023", "0024", "0025", "0026", "0027", "0028", "0029",
    "0030", "0031", "0032", "0033", "0034", "0035", "0036", "0037", "0038", "0039", "0040", "0041", "0042", "0043",
    "0044", "0045", "0046", "0047", "0048", "0049", "0050", "0051", "0052", "0053", "0054", "0055", "0056", "0057",
    "0058", "0059", "0060", "0061", "0062", "0063", "0064", "0065", "0066", "0067", "0068", "0069", "0070", "0071",
    "0072", "0073", "0074", "0075", "0076", "0077", "0078", "0079", "0080", "0081", "0082", "0083", "0084", "0085",
    "0086", "0087", "0088", "0089", "0090", "0091", "0093", "0094", "0095", "0096", "0097", "0098", "0099", "0100",
    "0101", "0102", "0104", "0105", "0106", "0107", "0108", "0109", "0110", "0111", "0112", "0113", "0114", "0115",
    "0116", "0117", "0118", "0119", "0120", "0121", "0122", "0123", "0124", "0125", "0126", "0127", "0128", "0129",
    "0130", "0131", "0132", "0133", "0134", "0135", "0136", "0137", "0138", "0139", "0140", "0141", "0142", "0143",
    "0144", "0145", "0146", "0147", "0148", "0149", "0150", "0151", "0152", "0153", "0154", "0155", "0156", "0157",
    "0158", "0159", "0160", "0161", "0162", "0163", "0164", "0165", "0166", "0167", "0168", "0169", "0170", "0171",
    "0172", "0173", "0174", "0175", "0176", "0177", "0178", "0179", "0180", "0183", "0184", "0185", "0186", "0187",
    "0188", "0189", "0190", "0191", "0192", "0193", "0194", "0195", "0196", "0197", "0198", "0199", "0200", "0201",
    "0202", "0203", "0204", "0205", "0206", "0207", "0208", "0209", "0210", "0211", "0212", "0213", "0214", "0215",
    "0216", "0217", "0218", "0219", "0220", "0221", "0222", "0223", "0224", "0225", "0226", "0227", "0228", "0229",
    "0230", "0231", "0232", "0233", "0234", "0235", "0236", "0237", "0238", "0239", "0240", "0241", "0242", "0243",
    "0244", "0245", "0246", "0247", "0248",
})

# BR-CL-22: the VATEX code list (VAT exemption reason codes), CEN validation artefacts 1.3.16.
VATEX = frozenset({
    "VATEX-EU-79-C", "VATEX-EU-132", "VATEX-EU-132-1A", "VATEX-EU-132-1B", "VATEX-EU-132-1C", "VATEX-EU-132-1D",
    "VATEX-EU-132-1E", "VATEX-EU-132-1F", "VATEX-EU-132-1G", "VATEX-EU-132-1H", "VATEX-EU-132-1I",
    "VATEX-EU-132-1J", "VATEX-EU-132-1K", "VATEX-EU-132-1L", "VATEX-EU-132-1M", "VATEX-EU-132-1N",
    "VATEX-EU-132-1O", "VATEX-EU-132-1P", "VATEX-EU-132-1Q", "VATEX-EU-135-1", "VATEX-EU-143", "VATEX-EU-143-1A",
    "VATEX-EU-143-1B", "VATEX-EU-143-1C", "VATEX-EU-143-1D", "VATEX-EU-143-1E", "VATEX-EU-143-1F",
    "VATEX-EU-143-1FA", "VATEX-EU-143-1G", "VATEX-EU-143-1H", "VATEX-EU-143-1I", "VATEX-EU-143-1J",
    "VATEX-EU-143-1K", "VATEX-EU-143-1L", "VATEX-EU-144", "VATEX-EU-146-1E", "VATEX-EU-159", "VATEX-EU-309",
    "VATEX-EU-148", "VATEX-EU-148-A", "VATEX-EU-148-B", "VATEX-EU-148-C", "VATEX-EU-148-D", "VATEX-EU-148-E",
    "VATEX-EU-148-F", "VATEX-EU-148-G", "VATEX-EU-151", "VATEX-EU-151-1A", "VATEX-EU-151-1AA", "VATEX-EU-151-1B",
    "VATEX-EU-151-1C", "VATEX-EU-151-1D", "VATEX-EU-151-1E", "VATEX-EU-G", "VATEX-EU-O", "VATEX-EU-IC",
    "VATEX-EU-AE", "VATEX-EU-D", "VATEX-EU-F", "VATEX-EU-I", "VATEX-EU-J", "VATEX-FR-FRANCHISE", "VATEX-FR-CNWVAT",
    "VATEX-EU-153", "VATEX-FR-CGI261-1", "VATEX-FR-CGI261-2", "VATEX-FR-CGI261-3", "VATEX-FR-CGI261-4",
    "VATEX-FR-CGI261-5", "VATEX-FR-CGI261-7", "VATEX-FR-CGI261-8", "VATEX-FR-CGI261A", "VATEX-FR-CGI261B",
    "VATEX-FR-CGI261C-1", "VATEX-FR-CGI261C-2", "VATEX-FR-CGI261C-3", "VATEX-FR-CGI261D-1", "VATEX-FR-CGI261D-1BIS",
    "VATEX-FR-CGI261D-2", "VATEX-FR-CGI261D-3", "VATEX-FR-CGI261D-4", "VATEX-FR-CGI261E-1", "VATEX-FR-CGI261E-2",
    "VATEX-FR-CGI277A", "VATEX-FR-CGI275", "VATEX-FR-298SEXDECIESA", "VATEX-FR-CGI295", "VATEX-FR-AE",
})

# The codes EN 16931's country list (BR-CL-14) has beyond ISO 3166-1 alpha-2.
COUNTRY_EXTENSIONS = {"1A": "Kosovo", "XI": "United Kingdom (Northern Ireland)"}

# Codes people write for a country that are not country codes, and what to write instead.
NOT_COUNTRIES = {
    "EL": "Greece is GR (EL is the prefix of Greek VAT ids, not a country code)",
    "UK": "the United Kingdom is GB (XI for Northern Ireland)",
    "XK": "EN 16931 writes Kosovo as 1A",
}

# Countries whose VAT ids may start with another prefix than the country code (BR-CO-09).
OTHER_VAT_PREFIXES = {"GR": frozenset({"EL"}), "GB": frozenset({"XI"}), "XI": frozenset({"GB"})}


def normal(value: str) -> str:
    """A code or identifier as the rules compare it: upper case, without surrounding blanks."""
    return value.strip().upper()


@lru_cache(maxsize=1)
def countries() -> frozenset[str]:
    """The country codes of BR-CL-14: ISO 3166-1 alpha-2 (pycountry) and :data:`COUNTRY_EXTENSIONS`."""
    return frozenset(c.alpha_2 for c in pycountry.countries) | frozenset(COUNTRY_EXTENSIONS)


def vat_prefixes(country: str) -> frozenset[str]:
    """The prefixes a VAT id of a party in ``country`` may start with: the country code (EL for Greece too)."""
    return frozenset({country}) | OTHER_VAT_PREFIXES.get(country, frozenset())


def country_problem(code: str) -> str | None:
    """Why ``code`` is not a country code of EN 16931 (BR-CL-14), or None."""
    if code in countries():
        return None
    if code in NOT_COUNTRIES:
        return f"{code} is not an ISO 3166-1 country code: {NOT_COUNTRIES[code]} (BR-CL-14)"
    return f"{code!r} is not an ISO 3166-1 alpha-2 country code (BR-CL-14)"


def vat_prefix_problem(vat_id: str) -> str | None:
    """Why ``vat_id`` (already :func:`normal`) does not start with a VAT prefix of BR-CO-09, or None. The answer
    names the id's prefix, not the id."""
    prefix = vat_id[:2]
    if prefix == "EL" or prefix in countries():
        return None
    return (f"starts with {prefix!r}, which is not a country prefix (BR-CO-09: a VAT id starts with the "
            "ISO 3166-1 alpha-2 code of the country that issued it, EL for Greece)")


def vat_id_problem(vat_id: str, country: str) -> str | None:
    """Why ``vat_id`` (already :func:`normal`) cannot be the VAT id of a party in ``country``, or None: its prefix
    must be a VAT prefix (BR-CO-09) and the prefix of ``country`` (:func:`vat_prefixes`)."""
    problem = vat_prefix_problem(vat_id)
    if problem is not None:
        return problem
    expected = vat_prefixes(country)
    if vat_id[:2] not in expected:
        return (f"starts with {vat_id[:2]}, but the country is {country}: a VAT id starts with the prefix of its "
                f"country ({' or '.join(sorted(expected))})")
    return None


def eas_problem(scheme: str) -> str | None:
    """Why ``scheme`` is not an electronic address scheme (BR-CL-25), or None."""
    if scheme in EAS:
        return None
    return (f"{scheme!r} is not a code of the EAS list (BR-CL-25), such as 0088 (GLN), 0106 (Dutch KvK), "
            "0208 (Belgian enterprise number), 9930 (German VAT number) or EM (e-mail)")


def icd_problem(scheme: str) -> str | None:
    """Why ``scheme`` is not an ISO 6523 ICD identifier scheme (BR-CL-10), or None."""
    if scheme in ICD:
        return None
    return f"{scheme!r} is not a code of the ISO 6523 ICD list (BR-CL-10), such as 0088 (GLN) or 0060 (DUNS)"


def vatex_problem(code: str) -> str | None:
    """Why ``code`` is not a VAT exemption reason code (BR-CL-22), or None."""
    if code in VATEX:
        return None
    return (f"{code!r} is not a code of the VATEX list (BR-CL-22), such as VATEX-EU-132, VATEX-EU-AE, VATEX-EU-G "
            "or VATEX-EU-O")
