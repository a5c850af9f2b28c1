"""Personal values sealed with a per-payee key, so that erasure can destroy them anywhere, the audit log included.

A sealed value is text: ``pii:v1:<payee id>:<base64url of nonce + AES-256-GCM ciphertext>``, the payee id bound
as associated data. Each payee's key is a row of ``personal_keys``, made the first time a value of theirs is
sealed. ``payhub payees erase`` deletes the row: every value sealed for the payee, wherever it is stored (audit
entries, whose hashes cover the sealed text and so stay valid), can no longer be opened. What this does not reach
(backups, copies made before the erasure, values written unsealed by plugins) is listed in docs/compliance.md.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, delete, select

from payhub.clock import utcnow
from payhub.db.queries import in_chunks, insert_ignore
from payhub.db.schema import personal_keys

PREFIX = "pii:v1:"
ERASED = "[erased]"
_SEALED = re.compile(r"pii:v1:(?P<subject>.+):(?P<box>[A-Za-z0-9_-]+=*)", re.DOTALL)


def keys(conn: Connection, subjects: Iterable[str], *, create: bool = False) -> dict[str, bytes]:
    """The keys of ``subjects`` (payee ids); with ``create``, a new key for each that has none (in the caller's
    transaction: the key exists once the values sealed with it are committed)."""
    wanted = set(subjects)
    found = _stored_keys(conn, wanted)
    missing = wanted - found.keys()
    if create and missing:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # here: imported when a key is made

        now = utcnow()
        insert_ignore(conn, personal_keys, [
            {"subject": s, "key": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode(), "created_at": now}
            for s in sorted(missing)], "subject")
        found.update(_stored_keys(conn, missing))  # another writer may have made a key first: read what is stored
    return found


def _stored_keys(conn: Connection, subjects: Iterable[str]) -> dict[str, bytes]:
    return {subject: base64.b64decode(key) for chunk in in_chunks(subjects) for subject, key in conn.execute(
        select(personal_keys.c.subject, personal_keys.c.key).where(personal_keys.c.subject.in_(chunk)))}


def seal_with(key: bytes, subject: str, value: str) -> str:
    """``value`` sealed with ``subject``'s ``key`` (from :func:`keys`)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    box = nonce + AESGCM(key).encrypt(nonce, value.encode(), subject.encode())
    return f"{PREFIX}{subject}:{base64.urlsafe_b64encode(box).decode()}"


def subject_of(value: str) -> str | None:
    """The payee id a sealed value belongs to, or None when ``value`` is not sealed."""
    match = _SEALED.fullmatch(value)
    return match["subject"] if match else None


def open_with(found: dict[str, bytes], value: str) -> str:
    """The plain text of a sealed ``value`` with the keys in ``found``; :data:`ERASED` when its key is gone (or
    the text was altered). Text that is not sealed is returned as it is."""
    match = _SEALED.fullmatch(value)
    if match is None:
        return value
    key = found.get(match["subject"])
    if key is None:
        return ERASED
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        box = base64.urlsafe_b64decode(match["box"])
        return AESGCM(key).decrypt(box[:12], box[12:], match["subject"].encode()).decode()
    except (InvalidTag, ValueError):
        return ERASED


def each_sealed(value: Any, show: Callable[[str], str]) -> Any:
    """``value`` (text, or JSON-shaped lists and dicts) with each sealed text replaced by ``show(text)``."""
    if isinstance(value, str):
        return show(value) if value.startswith(PREFIX) and subject_of(value) is not None else value
    if isinstance(value, dict):
        return {name: each_sealed(item, show) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [each_sealed(item, show) for item in value]
    return value


class Keyring:
    """Opens sealed texts with the keys read on ``conn``, each payee's key read once."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._keys: dict[str, bytes | None] = {}

    def open(self, value: str) -> str:
        """The plain text of a sealed ``value``, :data:`ERASED` when its key is gone; other text as it is."""
        subject = subject_of(value)
        if subject is None:
            return value
        if subject not in self._keys:
            self._keys[subject] = keys(self.conn, [subject]).get(subject)
        key = self._keys[subject]
        return open_with({subject: key} if key is not None else {}, value)


def reveal(conn: Connection, value: Any) -> Any:
    """``value`` (text, or JSON-shaped lists and dicts) with every sealed text opened, or :data:`ERASED`."""
    return each_sealed(value, Keyring(conn).open)


def erase_key(conn: Connection, subject: str) -> bool:
    """Delete ``subject``'s key; return whether there was one. Every value sealed with it is unreadable after."""
    return bool(conn.execute(delete(personal_keys).where(personal_keys.c.subject == subject)).rowcount)
