"""Finding a payee's personal values in stored text, and replacing each with ``[erased]``.

:class:`Scrubber` is the one matcher erasure uses for every kept text column. Text and values are compared after
the same folding on both sides: compatibility decomposition, accents and other combining marks and invisible
format characters (zero-width space, BOM...) removed, case folded, NFKC (so ``Zoë`` written decomposed, ``ZOË``,
``Zoe`` and ``zoë`` are one value). Backslash escapes are read as the characters they stand for: ``\\uXXXX`` in
either case of hexadecimal (surrogate pairs included), ``\\UXXXXXXXX`` and ``\\xXX`` (Python's escapes),
and JSON's ``\\" \\\\ \\/ \\n``... So ``Zo\\u00EB`` and ``zoe\\u002equixote\\u0040example.org`` are found.

- A value made of letters and digits with at least one digit (IBAN, account, routing and phone numbers, TIN) is an
  identifier: it is also found with up to two separators (white space, ``-``, ``.``, ``/``, ``(``, ``)``) between
  any two of its characters (``fr76 3000-6000...``); an all-digit one takes a ``+`` before it along.
- Other values (names, emails) are found with any white space and hyphens between their words, or none.
- Short values (fewer than :data:`SHORT` letters and digits) and all-digit values are found only as whole tokens:
  not inside a longer word, nor inside a longer number (``1004.00`` does not hold the bank code ``004``).
- Values with fewer than :data:`MIN_CHARS` letters and digits are not searched for.

Text that is JSON (an object or an array, or lines each holding one) is searched only inside its strings, keys
included; numbers, literals, white space and structure are kept byte for byte, and a string is written back with
the escapes it had. A string that itself holds JSON text is searched the same way, at any depth.

What this cannot find: spellings payhub was never told (a nickname, a transliteration into another script, a typo),
values split by other characters, text encoded otherwise (URL or HTML encoding, base64, a compressed payload).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from payhub.compliance.personal import ERASED

__all__ = ["ERASED", "MIN_CHARS", "SHORT", "Scrubber", "fold"]

MIN_CHARS = 3
"""Values with fewer letters and digits than this are not searched for (they would match ordinary text)."""
SHORT = 6
"""Values with fewer letters and digits than this are found only as whole tokens."""

_SEP = r"[\s\-./()]"
_WORD_SEP = r"[\s\-]"
_WORD_BEFORE, _WORD_AFTER = r"(?<![^\W_])", r"(?![^\W_])"
_NUMBER_BEFORE, _NUMBER_AFTER = r"(?<!\d)(?<!\d[.,])", r"(?!\d)(?![.,]\d)"
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|x([0-9A-Fa-f]{2})|([\\/\"'bfnrt]))")
_SIMPLE = {"\\": "\\", "/": "/", '"': '"', "'": "'", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_DROPPED = frozenset({"Mn", "Me", "Cf"})


def fold(text: str) -> str:
    """``text`` as compared: decomposed, without combining marks or format characters, case-folded, NFKC."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return unicodedata.normalize("NFKC", "".join(c for c in decomposed if unicodedata.category(c) not in _DROPPED))


@lru_cache(maxsize=8192)
def _fold_cluster(chars: str) -> str:
    """:func:`fold` of one character and its combining marks (text repeats its characters: remembered)."""
    return fold(chars)


def _pattern(value: str) -> tuple[int, str] | None:
    """The regular expression (over folded text) of one value, with its length in letters and digits."""
    folded = fold(value).strip()
    compact = re.sub(rf"{_SEP}+", "", folded).lstrip("+")
    size = sum(c.isalnum() for c in compact)
    if size < MIN_CHARS:
        return None
    if compact.isalnum() and any(c.isdigit() for c in compact):
        body = f"{_SEP}{{0,2}}".join(re.escape(c) for c in compact)
        if compact.isdigit():
            return size, rf"{_NUMBER_BEFORE}(?:\+\s?)?{body}{_NUMBER_AFTER}"  # a phone number's + goes too
    else:
        body = f"{_WORD_SEP}*".join(re.escape(word) for word in re.split(f"{_WORD_SEP}+", folded) if word)
    return size, f"{_WORD_BEFORE}{body}{_WORD_AFTER}" if size < SHORT else body


def _units(text: str) -> list[tuple[int, int, str]]:
    """``text`` as (start, end, character) units, each backslash escape one unit (a surrogate pair joined)."""
    if "\\" not in text:
        return [(at, at + 1, char) for at, char in enumerate(text)]
    units: list[tuple[int, int, str]] = []
    at = 0
    while at < len(text):
        char = text[at]
        match = _ESCAPE.match(text, at) if char == "\\" else None
        if match is None:
            units.append((at, at + 1, char))
            at += 1
            continue
        decoded = _escaped_char(match)
        code = ord(decoded[0])
        if 0xD800 <= code < 0xDC00:
            low = _ESCAPE.match(text, match.end())
            if low and low[1] and 0xDC00 <= int(low[1], 16) < 0xE000:
                decoded = chr(0x10000 + ((code - 0xD800) << 10) + int(low[1], 16) - 0xDC00)
                match = low
        units.append((at, match.end(), decoded))
        at = match.end()
    return units


def _decoded(text: str) -> str:
    """``text`` with its backslash escapes read (as :func:`_units` reads them), surrogate pairs joined."""
    if "\\" not in text:
        return text
    decoded = _ESCAPE.sub(_escaped_char, text)
    return decoded.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _escaped_char(match: re.Match[str]) -> str:
    four, eight, two, simple = match.groups()
    return _SIMPLE[simple] if simple is not None else _chr(int(four or eight or two, 16))


def _chr(code: int) -> str:
    return chr(code) if code <= 0x10FFFF else "\ufffd"


class Scrubber:
    """Replaces the given personal values in text with :data:`ERASED` (see the module docstring for what matches)."""

    def __init__(self, values: Iterable[str]) -> None:
        patterns = sorted({p for p in map(_pattern, values) if p is not None}, key=lambda p: (-p[0], p[1]))
        self._regex = re.compile("|".join(f"(?:{body})" for _size, body in patterns)) if patterns else None

    def __bool__(self) -> bool:
        return self._regex is not None

    def scrub(self, text: str | None) -> str | None:
        """``text`` with every value found replaced; JSON text searched only inside its strings."""
        if not text or self._regex is None:
            return text
        return self._json(text) if _is_json(text) else self._free(text)

    def _json(self, text: str) -> str:
        return _JSON_STRING.sub(self._json_string, text)

    def _json_string(self, match: re.Match[str]) -> str:
        token = match.group()
        content = json.loads(token) if token[1:].lstrip(" \t\r\n")[:1] in ("{", "[", "\\") else None
        if isinstance(content, str) and _is_json(content):
            nested = self._json(content)
            return token if nested == content else json.dumps(nested, ensure_ascii=token.isascii())
        return f'"{self._free(token[1:-1])}"'

    def _free(self, text: str) -> str:
        """Free text: matched on its folded form, each match replaced in the original text (whole escapes)."""
        assert self._regex is not None
        if text.isascii() and "\\" not in text:  # the common case: folding is lower-casing, one character each
            spans = [(m.start(), m.end()) for m in self._regex.finditer(text.lower()) if m.end() > m.start()]
            return _replace(text, spans) if spans else text
        if self._regex.search(fold(_decoded(text))) is None:
            return text  # folded whole (fast) it holds no value; folded piece by piece, as below, it holds none either
        clusters: list[tuple[int, int, str]] = []  # a character with its combining marks, from its units
        for start, end, char in _units(text):
            if clusters and unicodedata.category(char) in ("Mn", "Mc", "Me"):
                first, _end, chars = clusters[-1]
                clusters[-1] = (first, end, chars + char)
            else:
                clusters.append((start, end, char))
        folded: list[str] = []
        owner: list[int] = []
        for number, (_start, _end, chars) in enumerate(clusters):
            part = _fold_cluster(chars)
            folded.append(part)
            owner += [number] * len(part)
        spans = [(clusters[owner[m.start()]][0], clusters[owner[m.end() - 1]][1])
                 for m in self._regex.finditer("".join(folded)) if m.end() > m.start()]
        return _replace(text, spans) if spans else text


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of the (sorted) ``spans`` replaced by :data:`ERASED`, overlapping spans merged."""
    out: list[str] = []
    at = 0
    for start, end in spans:
        if start < at:  # overlaps the previous span, which was already replaced
            if end > at:
                at = end
            continue
        out += [text[at:start], ERASED]
        at = end
    return "".join(out) + text[at:]


def _is_json(text: str) -> bool:
    """Whether ``text`` is one JSON object or array, or lines each holding one."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return False
    if _parses(stripped):
        return True
    lines = [line for line in stripped.splitlines() if line.strip()]
    return len(lines) > 1 and all(_parses(line.strip()) for line in lines)


def _parses(text: str) -> bool:
    if not text or text[0] not in "[{":
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
