"""Country names as sanctions lists write them, read as ISO 3166 alpha-2 codes.

OFAC's files name countries in English (``Russia``, ``Korea, North``, ``Burma``); the EU's give ISO codes. A name
neither pycountry nor the table below knows is left out of the entry's countries (the entry is still screened by
name; only the country comparison has nothing to go on).
"""

from __future__ import annotations

from functools import lru_cache

import pycountry

OFAC_NAMES = {
    "russia": "RU",
    "korea, north": "KP",
    "north korea": "KP",
    "korea, south": "KR",
    "south korea": "KR",
    "burma": "MM",
    "turkey": "TR",
    "congo, democratic republic of the": "CD",
    "congo, republic of the": "CG",
    "cote d ivoire": "CI",
    "cote d'ivoire": "CI",
    "laos": "LA",
    "macau": "MO",
    "west bank": "PS",
    "gaza": "PS",
    "palestinian": "PS",
    "the bahamas": "BS",
    "the gambia": "GM",
    "czech republic": "CZ",
    "kosovo": "XK",
    "region: crimea": "UA",
    "region: gaza": "PS",
    "region: kurdistan region": "IQ",
    "region: northern mali": "ML",
}


@lru_cache(maxsize=4096)
def country_code(text: str) -> str | None:
    """The ISO 3166 alpha-2 code of a country named ``text`` (a name or a code), or None when unknown."""
    value = " ".join(text.split()).strip().rstrip(".")
    if not value or value.upper() == "00":
        return None
    if value.lower() in OFAC_NAMES:
        return OFAC_NAMES[value.lower()]
    try:
        return str(pycountry.countries.lookup(value).alpha_2)
    except LookupError:
        return None
