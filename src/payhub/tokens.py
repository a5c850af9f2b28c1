"""API tokens: who may use the HTTP face, with which role.

A token is ``phk_`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 is stored, so the
database never holds a usable token; :func:`create` returns the token once, and neither the token nor its hash is
written to the audit log. Roles are ordered: an ``auditor`` reads everything, the audit log included; an
``operator`` also acts on rewards, payouts and calculations; an ``admin`` also manages tokens. Each token's identity
in the audit log is ``token:<name>``; names are unique and a revoked token keeps its name for good, so two tokens
are two identities for four-eyes approvals and a name never passes to someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.exc import IntegrityError

from payhub.clock import isoformat, parse_instant, utcnow
from payhub.db.schema import api_tokens
from payhub.errors import InvalidRecord, PayhubError
from payhub.runtime import Runtime

Role = Literal["auditor", "operator", "admin"]
ROLES: tuple[Role, ...] = ("auditor", "operator", "admin")
State = Literal["active", "expired", "revoked"]
Refusal = Literal["missing", "malformed", "unknown", "revoked", "expired"]
PREFIX = "phk_"
NAME_RULE = "1 to 100 letters, digits or . _ @ -, starting with a letter or digit, not with phk_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
_TOKEN = re.compile(r"phk_[A-Za-z0-9_-]{43}")
_TOKENISH = re.compile(r"phk_[^\s&?/=#]*", re.IGNORECASE)  # up to white space or a URL delimiter
TOUCH_SECONDS = 60
"""``last_used_at`` is written at most this often per token."""


class TokenNotFound(PayhubError):
    """No token has the name given."""


class TokenExists(PayhubError):
    """A token (perhaps revoked) has the name given already."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: the token's row id, name and role. ``last_used_at`` is when its use was last
    recorded (not part of its identity)."""

    token_id: int
    name: str
    role: Role
    last_used_at: datetime | None = field(default=None, compare=False)

    @property
    def actor(self) -> str:
        """The name the audit log records for this token: ``token:<name>``, one per token, never reused."""
        return f"token:{self.name}"

    def may(self, role: Role) -> bool:
        """Whether this token's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a presented token was refused; ``name`` is the token's when it was found (revoked or expired)."""

    reason: Refusal
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token, without its secret or hash."""

    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> State:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def shown(self, now: datetime) -> dict[str, object]:
        """The token as listed (``tokens list``, ``GET /api/v1/tokens``)."""
        return {"name": self.name, "role": self.role, "state": self.state(now), "created_at": self.created_at,
                "created_by": self.created_by, "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                "last_used_at": self.last_used_at}


def digest(token: str) -> str:
    """The stored form of ``token``."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def redact(text: str) -> str:
    """``text`` with anything shaped like a token (``phk_…``) replaced by ``phk_**********``: for what a client sent
    (a path, a query string) before it is recorded or logged."""
    return _TOKENISH.sub("phk_**********", text)


def recordable(value: str) -> str:
    """``value`` without outer white space; ValueError when it holds what the database cannot store (NUL, a lone
    surrogate) or something shaped like an API token, which the audit log must never hold (it cannot be erased): for
    an operator's reason or note before it is recorded."""
    for char in value:
        if char == "\x00" or "\ud800" <= char <= "\udfff":
            raise ValueError(f"holds U+{ord(char):04X}, which cannot be stored")
    if redact(value) != value:
        raise ValueError("holds something shaped like an API token (phk_...); tokens are never recorded")
    return value.strip()


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """An expiry given as ISO 8601: a date-time with an offset, or a date, meaning the end of that day in UTC (the
    token is refused from 00:00 UTC the next day). It must be in the future; InvalidRecord says why not."""
    text = text.strip()
    if len(text) == 10:
        try:
            moment = datetime.combine(date.fromisoformat(text), time(0), UTC) + timedelta(days=1)
        except (ValueError, OverflowError):
            raise InvalidRecord(f"{ascii(text)} is not an ISO 8601 date or date-time in the calendar") from None
    else:
        moment = parse_instant(text)
    check_expiry(moment, now)
    return moment


def check_expiry(moment: datetime, now: datetime | None = None) -> None:
    """InvalidRecord unless ``moment`` is an aware date-time after ``now``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRecord(f"the expiry {moment.isoformat()} has no timezone offset")
    if moment <= (now or utcnow()):
        raise InvalidRecord(f"the expiry {isoformat(moment)} is not in the future")


def check_name(name: str) -> None:
    """InvalidRecord unless ``name`` is a valid token name."""
    if not NAME.fullmatch(name):
        raise InvalidRecord(f"token name {ascii(name)[:110]}: {NAME_RULE}")
    if name.lower().startswith(PREFIX):
        raise InvalidRecord(f"token name {PREFIX}…: a name must not look like a token")


def create(rt: Runtime, name: str, role: Role, expires_at: datetime | None = None) -> str:
    """Store a new token named ``name`` with ``role``, created by ``rt``'s actor, and return it (the only time it
    is seen); audited as ``token.created`` (name, role, expiry: never the token or its hash). InvalidRecord for a
    bad name, role or expiry; TokenExists when the name is taken, even by a revoked token."""
    check_name(name)
    if role not in ROLES:
        raise InvalidRecord(f"role {role!r}: one of {', '.join(ROLES)}")
    now = utcnow()
    if expires_at is not None:
        check_expiry(expires_at, now)
        expires_at = expires_at.astimezone(UTC)
    token = PREFIX + secrets.token_urlsafe(32)
    exists = TokenExists(f"a token named {name!r} exists already (a revoked token keeps its name)")
    try:
        with rt.transaction() as tx:
            if tx.conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first() is not None:
                raise exists
            token_id = tx.conn.execute(api_tokens.insert().values(
                name=name, role=role, token_hash=digest(token), created_at=now, created_by=rt.writer.actor,
                expires_at=expires_at).returning(api_tokens.c.id)).scalar_one()
            tx.audit("token.created", "token", name, {"id": token_id, "role": role, "expires_at": expires_at})
    except IntegrityError:  # created at the same moment by another process
        raise exists from None
    return token


def listed(conn: Connection) -> list[TokenInfo]:
    """Every token, oldest first, without secrets."""
    rows = conn.execute(select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.role, api_tokens.c.created_at,
                               api_tokens.c.created_by, api_tokens.c.expires_at, api_tokens.c.revoked_at,
                               api_tokens.c.last_used_at).order_by(api_tokens.c.id))
    return [TokenInfo(*row) for row in rows]


def revoke(rt: Runtime, name: str) -> TokenInfo:
    """Revoke the token named ``name`` at once (its next request is refused) and return it; audited as
    ``token.revoked``. TokenNotFound when no token has the name; PayhubError when it is revoked already."""
    now = utcnow()
    with rt.transaction() as tx:
        row = tx.conn.execute(select(api_tokens).where(api_tokens.c.name == name)).first()
        if row is None:
            raise TokenNotFound(f"no token named {ascii(name)[:110]}")
        if row.revoked_at is not None:
            raise PayhubError(f"token {name!r} is already revoked")
        revoked = tx.conn.execute(update(api_tokens).where(api_tokens.c.id == row.id, api_tokens.c.revoked_at.is_(None))
                                  .values(revoked_at=now)).rowcount
        if revoked != 1:
            raise PayhubError(f"token {name!r} is already revoked")
        tx.audit("token.revoked", "token", name, {"id": row.id, "role": row.role})
    return TokenInfo(row.id, row.name, row.role, row.created_at, row.created_by, row.expires_at, now,
                     row.last_used_at)


def authenticate(conn: Connection, presented: str) -> Principal | Refused:
    """The principal ``presented`` stands for, or why it is refused. The lookup is by hash, so timing tells nothing
    about a stored token."""
    if not _TOKEN.fullmatch(presented):
        return Refused("malformed")
    wanted = digest(presented)
    row = conn.execute(select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.role, api_tokens.c.token_hash,
                              api_tokens.c.expires_at, api_tokens.c.revoked_at, api_tokens.c.last_used_at)
                       .where(api_tokens.c.token_hash == wanted)).first()
    if row is None or not hmac.compare_digest(row.token_hash, wanted) or row.role not in ROLES:
        return Refused("unknown")
    if row.revoked_at is not None:
        return Refused("revoked", row.name)
    if row.expires_at is not None and row.expires_at <= utcnow():
        return Refused("expired", row.name)
    return Principal(row.id, row.name, row.role, row.last_used_at)


def touch(conn: Connection, principal: Principal, now: datetime) -> None:
    """Record that ``principal``'s token was used at ``now``, when its last recorded use is older than
    :data:`TOUCH_SECONDS` (so a busy token costs one write a minute, not one per request)."""
    stale = now - timedelta(seconds=TOUCH_SECONDS)
    if principal.last_used_at is not None and principal.last_used_at > stale:
        return
    conn.execute(update(api_tokens).where(
        api_tokens.c.id == principal.token_id,
        or_(api_tokens.c.last_used_at.is_(None), api_tokens.c.last_used_at <= stale)).values(last_used_at=now))
