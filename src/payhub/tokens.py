"""API tokens: who may use the HTTP face, with which role.

A token is ``phk_`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 is stored, so the
database never holds a usable token; :func:`create` returns the token once. Roles are ordered: an ``auditor``
reads everything, the audit log included; an ``operator`` also acts on rewards, payouts and calculations; an
``admin`` also manages tokens. Each token's identity in the audit log is ``token:<name>``, so two tokens are two
people for four-eyes approvals.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, select, update

from payhub.clock import utcnow
from payhub.db.schema import api_tokens
from payhub.errors import PayhubError
from payhub.runtime import Runtime

Role = Literal["auditor", "operator", "admin"]
ROLES: tuple[Role, ...] = ("auditor", "operator", "admin")
PREFIX = "phk_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
_TOKEN = re.compile(r"phk_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: the token's row id, name and role."""

    token_id: int
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """The name the audit log records for this token."""
        return f"token:{self.name}"

    def may(self, role: Role) -> bool:
        """Whether this token's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token, without its secret."""

    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def digest(token: str) -> str:
    """The stored form of ``token``."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create(rt: Runtime, name: str, role: Role, expires_at: datetime | None = None) -> str:
    """Store a new token named ``name`` and return it (the only time it is seen); audited as ``token.created``."""
    if not NAME.fullmatch(name):
        raise PayhubError(f"token name {name!r}: 1 to 100 letters, digits or . _ @ -, starting with a letter or digit")
    if role not in ROLES:
        raise PayhubError(f"role {role!r}: one of {', '.join(ROLES)}")
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise PayhubError(f"the expiry {expires_at.isoformat()} is not in the future")
    token = PREFIX + secrets.token_urlsafe(32)
    with rt.transaction() as tx:
        if tx.conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first() is not None:
            raise PayhubError(f"a token named {name!r} exists already (revoked tokens keep their name)")
        token_id = tx.conn.execute(api_tokens.insert().values(
            name=name, role=role, token_hash=digest(token), created_at=now, created_by=rt.writer.actor,
            expires_at=expires_at).returning(api_tokens.c.id)).scalar_one()
        tx.audit("token.created", "token", name, {"id": token_id, "role": role, "expires_at": expires_at})
    return token


def listed(conn: Connection) -> list[TokenInfo]:
    """Every token, oldest first, without secrets."""
    rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id))
    return [TokenInfo(r.id, r.name, r.role, r.created_at, r.created_by, r.expires_at, r.revoked_at, r.last_used_at)
            for r in rows]


def revoke(rt: Runtime, name: str) -> None:
    """Revoke the token named ``name`` at once; audited as ``token.revoked``."""
    with rt.transaction() as tx:
        row = tx.conn.execute(select(api_tokens).where(api_tokens.c.name == name)).first()
        if row is None:
            raise PayhubError(f"no token named {name!r}")
        if row.revoked_at is not None:
            raise PayhubError(f"token {name!r} is already revoked")
        tx.conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(revoked_at=utcnow()))
        tx.audit("token.revoked", "token", name, {"id": row.id, "role": row.role})


def authenticate(conn: Connection, presented: str) -> Principal | str:
    """The principal ``presented`` stands for, or why it is refused (``malformed``, ``unknown``, ``revoked``,
    ``expired``). The comparison is by hash, so timing tells nothing about a stored token."""
    if not _TOKEN.fullmatch(presented):
        return "malformed"
    wanted = digest(presented)
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == wanted)).first()
    if row is None or not hmac.compare_digest(row.token_hash, wanted):
        return "unknown"
    now = utcnow()
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    if row.role not in ROLES:
        return "unknown"
    return Principal(row.id, row.name, row.role)
