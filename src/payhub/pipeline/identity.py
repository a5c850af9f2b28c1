"""Identity of events: normalised ids and the unambiguous dedup key.

An id (object type, object id, transition, payee, partner) is compared as text after normalisation: Unicode NFC,
the invisible characters CRMs and spreadsheets slip in removed (BOM U+FEFF, zero-width space U+200B, zero-width
non-joiner U+200C, zero-width joiner U+200D, word joiner U+2060), and outer white space stripped. An id that still
holds another control or format character (NUL, TAB, bidirectional overrides...) is refused: the record is
quarantined, since no CRM id legitimately holds one and two ids that print the same must be the same id.

The event key joins ``source``, ``object_type``, ``object_id`` and ``transition`` with ``:``. In the first three
parts ``%`` is written ``%25`` and ``:`` is written ``%3A``; the transition, last, is kept as it is (it may hold
``:``, like Salesforce's ``won:<marker>``). So no two identities share a key, and ordinary keys read as before:
``salesforce:Opportunity:006A000008:won``. A record without a usable identity is keyed by its content,
``<source>:malformed:<sha256 of its raw text>``; with two colons where every event key has at least three, it can
never equal an event key.
"""

from __future__ import annotations

import hashlib
import unicodedata

from payhub.errors import InvalidRecord

INVISIBLE = "\ufeff\u200b\u200c\u200d\u2060"
"""Characters removed from ids: BOM, zero-width space, non-joiner, joiner, word joiner."""

_REMOVE = dict.fromkeys(map(ord, INVISIBLE))


def normalise_id(value: str, what: str) -> str:
    """``value`` in NFC without invisible characters or outer white space; InvalidRecord names ``what`` when the
    rest still holds a control or format character. The result may be empty (the caller decides if that is an
    error)."""
    if value.isascii():  # the common case: nothing to normalise, and printable ASCII holds no control character
        text = value.strip()
        if text.isprintable():
            return text
    else:
        text = unicodedata.normalize("NFC", value).translate(_REMOVE).strip()
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise InvalidRecord(f"{what} {_show(value)} holds U+{ord(char):04X}, a control, format or surrogate "
                                "character")
    return text


def _show(value: str) -> str:
    shown = ascii(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def encode_part(part: str) -> str:
    """One of the first three parts of a key: ``%`` and ``:`` percent-encoded."""
    if "%" not in part and ":" not in part:  # the common case
        return part
    return part.replace("%", "%25").replace(":", "%3A")


def event_key(source: str, object_type: str, object_id: str, transition: str) -> str:
    """The dedup key of an event: ``source:object_type:object_id:transition``, the first three parts encoded."""
    return f"{encode_part(source)}:{encode_part(object_type)}:{encode_part(object_id)}:{transition}"


def malformed_key(source: str, raw: str) -> str:
    """The key of a record without a usable identity: its source and the SHA-256 of its raw text."""
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{encode_part(source)}:malformed:{digest}"
