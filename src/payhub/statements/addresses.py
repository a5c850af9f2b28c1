"""E-mail addresses of statements: one plain address (``local@domain``), checked the same way for a payee's address
and for the settings' ``sender`` and ``reply_to``. Imports nothing heavy: the settings use it."""

from __future__ import annotations

import re
from email.utils import getaddresses, parseaddr

MAX_ADDRESS = 254
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def mail_address(value: str | None) -> str | None:
    """``value`` as one plain e-mail address (``local@domain``, ASCII local part, the domain in IDNA), or None when
    it is not one: a list, a display name, white space or a control character is refused, never guessed at."""
    if not value or len(value) > MAX_ADDRESS:
        return None
    local, at, domain = value.rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or len(local) > 64:
        return None
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    labels = ascii_domain.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or len(ascii_domain) > 253:
        return None
    return f"{local}@{ascii_domain}"


def header_address(value: str) -> str | None:
    """The one address of a ``From`` / ``Reply-To`` value (``statements@example.com`` or ``Payhub
    <statements@example.com>``), checked by :func:`mail_address`; None when ``value`` holds a line break or a
    control character, no address, more than one, or one that is not plain."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return None
    found = getaddresses([value])
    if len(found) != 1 or not found[0][1] or parseaddr(value)[1] != found[0][1] or found[0][1] not in value:
        return None  # none, several, or one the parser had to repair (white space dropped)
    return mail_address(found[0][1])
