"""Fuzzy name matching against sanctions lists.

Normalisation (:func:`normalise`), applied to list names and payee names alike: Unicode NFKC; transliteration to
ASCII with ``anyascii`` (so ``Владимир Путин`` becomes ``Vladimir Putin`` and ``محمد`` ``mhmd``); casefold;
every character that is not a letter or digit becomes a space (``AL-QAIDA`` -> ``al qaida``, ``O'Brien`` ->
``o brien``); honorifics and titles (:data:`HONORIFICS`: ``mr``, ``dr``, ``sheikh``, ``general``…) dropped; the
remaining tokens sorted, so word order does not matter (``HUSSEIN, Saddam`` = ``Saddam Hussein``).

Scoring (0-100, rapidfuzz): the higher of

* ``fuzz.token_sort_ratio`` of the two normalised names (an edit-distance similarity of the whole name: a spelling
  variant or a missing letter costs a few points), and
* ``fuzz.token_set_ratio`` (100 when every word of one name is in the other), counted only when the two names share
  at least two words and the shorter name has at least two: ``Saddam Hussein`` matches ``Saddam Hussein
  Al-Tikriti`` at 100, while a single common word (``Ali``) is not a match by itself.

Every name and alias of every entry is compared with every name (name and aliases) of the payee; an entry's score
is its best pair. A pair at or above the threshold is a hit. Country: where the payee has a country and the entry
lists some, the hit says whether they match; with ``country_mismatch_penalty`` > 0, that many points are taken
from a hit whose countries differ, and it is a hit only if it still reaches the threshold (with the default 0, a
country never changes a result). Where either side has no country, the score is unchanged and the hit says
``country_match: None``.

Speed: names are normalised once per list version; each payee name is compared with every list name by
``rapidfuzz.process.extract`` (C code, ``score_cutoff`` at the threshold so most pairs stop early).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from anyascii import anyascii
from rapidfuzz import fuzz, process

from payhub.api import SanctionsEntry

HONORIFICS = frozenset({
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "lord", "lady", "madam", "mme", "mlle",
    "herr", "frau", "sr", "sra", "srta", "sheikh", "shaikh", "sheik", "haji", "hajji", "hadji",
    "mullah", "maulana", "imam", "ayatollah", "general", "gen", "col", "colonel", "capt", "captain", "major",
    "lt", "admiral", "rev", "fr", "jr", "ii", "iii", "esq",
})
"""Words dropped from names before comparison: courtesy titles, honorifics, ranks and generational suffixes."""
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(name: str) -> str:
    """``name`` as compared: NFKC, transliterated to ASCII, casefolded, punctuation to spaces, honorifics dropped,
    tokens sorted; ``""`` when nothing is left."""
    text = anyascii(unicodedata.normalize("NFKC", name)).casefold()
    tokens = [t for t in _NOT_WORD.split(text) if t and t not in HONORIFICS]
    return " ".join(sorted(tokens))


def score(a: str, b: str) -> float:
    """The similarity (0-100) of two names already :func:`normalise`\\ d (see the module docstring)."""
    best = float(fuzz.token_sort_ratio(a, b))
    if _shares_two_words(a, b):
        best = max(best, float(fuzz.token_set_ratio(a, b)))
    return best


def _shares_two_words(a: str, b: str) -> bool:
    words_a, words_b = set(a.split()), set(b.split())
    return min(len(words_a), len(words_b)) >= 2 and len(words_a & words_b) >= 2


@dataclass(frozen=True, slots=True)
class Hit:
    """One listed entry a name matched: the list and its date, the entry, the list's name or alias that matched
    (``matched``), the score after any country penalty, and whether the countries matched (None: unknown)."""

    list_name: str
    published_on: date | None
    entry_id: str
    entry_name: str
    matched: str
    score: float
    country_match: bool | None
    programs: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line naming the list, its date, the entry, the matched name and the score (no payee value)."""
        where = {True: "country matches", False: "country differs", None: "country not compared"}[self.country_match]
        alias = f" (as {self.matched!r})" if self.matched != self.entry_name else ""
        return (f"{self.list_name} of {self.published_on.isoformat() if self.published_on else 'unknown date'}: "
                f"entry {self.entry_id} {self.entry_name!r}{alias}, score {self.score:.1f}, {where}")

    def as_dict(self) -> dict[str, object]:
        return {"list": self.list_name, "published_on": self.published_on.isoformat() if self.published_on else None,
                "entry_id": self.entry_id, "entry_name": self.entry_name, "matched": self.matched,
                "score": round(self.score, 1), "country_match": self.country_match, "programs": list(self.programs)}


class ListIndex:
    """One list's entries with their names normalised once, ready to screen names against."""

    def __init__(self, name: str, published_on: date | None, entries: Sequence[SanctionsEntry]) -> None:
        self.name = name
        self.published_on = published_on
        self.entries = tuple(entries)
        self._names: list[str] = []  # normalised list names
        self._shown: list[str] = []  # the names as the list writes them
        self._owner: list[int] = []  # index of the entry each name belongs to
        for number, entry in enumerate(self.entries):
            for shown in dict.fromkeys((entry.name, *entry.aliases)):
                normal = normalise(shown)
                if normal:
                    self._names.append(normal)
                    self._shown.append(shown)
                    self._owner.append(number)

    def __len__(self) -> int:
        return len(self._names)

    def screen(self, names: Iterable[str], country: str | None, threshold: float,
               country_mismatch_penalty: float = 0) -> list[Hit]:
        """The entries any of ``names`` matches at ``threshold`` or above (after the country penalty), best first."""
        best: dict[int, tuple[float, int]] = {}  # entry -> (raw score, list-name index)
        for raw_name in names:
            query = normalise(raw_name)
            if not query:
                continue
            found = process.extract(query, self._names, scorer=fuzz.token_sort_ratio, processor=None,
                                    score_cutoff=threshold, limit=None)
            found += [match for match in process.extract(query, self._names, scorer=fuzz.token_set_ratio,
                                                          processor=None, score_cutoff=threshold, limit=None)
                      if _shares_two_words(query, match[0])]
            for _text, value, index in found:
                owner = self._owner[index]
                if owner not in best or value > best[owner][0]:
                    best[owner] = (float(value), index)
        hits = []
        wanted = (country or "").upper() or None
        for owner, (value, index) in best.items():
            entry = self.entries[owner]
            match = None if wanted is None or not entry.countries else wanted in entry.countries
            final = value - country_mismatch_penalty if match is False else value
            if final >= threshold:
                hits.append(Hit(self.name, self.published_on, entry.entry_id, entry.name, self._shown[index],
                                final, match, entry.programs))
        return sorted(hits, key=lambda h: (-h.score, h.list_name, h.entry_id))
