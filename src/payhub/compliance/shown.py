"""Sealed personal values (:mod:`payhub.compliance.personal`) as audit listings show them.

Whoever may read personal values sees them opened, and ``[erased]`` once the payee's key is gone; whoever may not
sees ``[sealed]``. Exports keep the stored (sealed) text, so that each exported entry still matches its hash.
Keys are read once per payee (and remembered for the listing) on the listing's own connection (another
connection would wait for the first one's lock on SQLite).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from payhub.compliance import personal

SEALED = "[sealed]"
"""What a reader not allowed to see personal values is shown in place of one."""
OPENING_ROLES = frozenset({"operator", "admin"})
"""API roles that see personal values opened; auditors see :data:`SEALED`."""


class Opener:
    """Shows the sealed values in audit details: opened when ``reveal`` (else :data:`SEALED`)."""

    def __init__(self, conn: Connection, *, reveal: bool) -> None:
        self.conn = conn
        self.reveal = reveal
        self._keyring = personal.Keyring(conn)

    def __call__(self, value: Any) -> Any:
        """``value`` (text, or JSON-shaped lists and dicts) with each sealed text shown."""
        return personal.each_sealed(value, self._keyring.open if self.reveal else _sealed)

    def entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        """An audit entry (``detail`` parsed) with its detail shown."""
        return {**entry, "detail": self(entry["detail"])}


def _sealed(_value: str) -> str:
    return SEALED


def reveals(role: str) -> bool:
    """Whether an API token of ``role`` sees personal values opened."""
    return role in OPENING_ROLES
