"""Console sessions: a browser signs in once with an API token and then carries a random session id in a cookie.

Only the SHA-256 of the session id is stored (``console_sessions``), beside the token it was opened with, its CSRF
token and its times. A session is valid while it has not been ended (signed out), has been used within the idle
limit, is younger than the maximum age, and its token is neither revoked nor expired: the token's current role
applies on every request. An invalid session is ended when it is next seen.

Starting, ending and expiring a session are audited in the transaction that writes them (``console.signed_in``,
``console.signed_out``, ``console.session_ended`` with the reason), as the token (``token:<name>``). Each sign-in
deletes the rows of sessions older than the maximum age (none of them can be valid); until then an ended session's
row says why it ended, so a cookie used after its end is refused with its token's name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, delete, select, update

from payhub.db.schema import api_tokens, console_sessions
from payhub.runtime import Tx
from payhub.tokens import ROLES, Principal

ENDINGS = frozenset({"signed_out", "idle", "too_old", "token", "replaced"})
"""The reasons a session row records for its end."""
TOUCH_SECONDS = 30
"""``last_seen_at`` is written at most this often per session."""
MAX_NOTICE = 2000

Ended = Literal["none", "unknown", "signed_out", "idle", "too_old", "token", "replaced"]


@dataclass(frozen=True, slots=True)
class NoSession:
    """Why a request has no valid session, and the name of the token of the session it presented, if any."""

    reason: Ended
    token_name: str | None = None


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A valid session: who it is (the token's principal) and the CSRF token its forms must carry."""

    id_hash: str
    principal: Principal
    csrf: str
    created_at: datetime
    last_seen_at: datetime


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def start(tx: Tx, principal: Principal, now: datetime, max_age: timedelta) -> tuple[str, ConsoleSession]:
    """A new session for ``principal``: the id for the cookie (never stored) and the session; audited."""
    gone = tx.conn.execute(delete(console_sessions).where(console_sessions.c.created_at < now - max_age)).rowcount
    session_id = secrets.token_urlsafe(32)
    session = ConsoleSession(_hash(session_id), principal, secrets.token_urlsafe(32), now, now)
    tx.conn.execute(console_sessions.insert().values(
        id_hash=session.id_hash, token_id=principal.token_id, csrf=session.csrf, created_at=now, last_seen_at=now))
    tx.audit("console.signed_in", "token", principal.name, {"role": principal.role, "old_sessions_removed": gone},
             actor=principal.actor)
    return session_id, session


def find(tx: Tx, session_id: str | None, now: datetime, *, idle: timedelta,
         max_age: timedelta) -> ConsoleSession | NoSession:
    """The valid session with id ``session_id``, or why there is none (an invalid one is ended now, audited)."""
    conn = tx.conn
    if not session_id or len(session_id) > 200:
        return NoSession("none")
    id_hash = _hash(session_id)
    row = conn.execute(
        select(console_sessions, api_tokens.c.name, api_tokens.c.role, api_tokens.c.revoked_at,
               api_tokens.c.expires_at, api_tokens.c.last_used_at)
        .join(api_tokens, api_tokens.c.id == console_sessions.c.token_id)
        .where(console_sessions.c.id_hash == id_hash)).first()
    if row is None:
        return NoSession("unknown")
    if row.ended_at is not None:
        return NoSession(row.ended_why if row.ended_why in ENDINGS else "signed_out", row.name)
    why: Ended | None = None
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now) or row.role not in ROLES:
        why = "token"
    elif now - row.last_seen_at > idle:
        why = "idle"
    elif now - row.created_at > max_age:
        why = "too_old"
    if why is not None:
        _end(conn, id_hash, now, why)
        tx.audit("console.session_ended", "token", row.name, {"reason": why.replace("_", " ")},
                 actor=f"token:{row.name}")
        return NoSession(why, row.name)
    if now - row.last_seen_at > timedelta(seconds=TOUCH_SECONDS):
        conn.execute(update(console_sessions).where(console_sessions.c.id_hash == id_hash)
                     .values(last_seen_at=now))
    principal = Principal(row.token_id, row.name, row.role, row.last_used_at)
    return ConsoleSession(id_hash, principal, row.csrf, row.created_at, now)


def sign_out(tx: Tx, session: ConsoleSession, now: datetime, why: Ended = "signed_out") -> None:
    """End ``session`` at the user's request (or ``replaced`` by a new sign-in in the same browser); audited."""
    if _end(tx.conn, session.id_hash, now, why):
        tx.audit("console.signed_out", "token", session.principal.name, {"reason": why.replace("_", " ")},
                 actor=session.principal.actor)


def _end(conn: Connection, id_hash: str, now: datetime, why: Ended) -> bool:
    """End the session; False when it had ended already."""
    return bool(conn.execute(update(console_sessions).where(
        console_sessions.c.id_hash == id_hash, console_sessions.c.ended_at.is_(None)).values(
        ended_at=now, ended_why=why)).rowcount)


def csrf_matches(session: ConsoleSession, presented: str | None) -> bool:
    """Whether a form's CSRF field is the session's token (compared in constant time)."""
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), str(presented).encode("utf-8", "replace"))


def set_notice(conn: Connection, id_hash: str, text: str) -> None:
    """Keep the outcome of an action to show once on the session's next page."""
    conn.execute(update(console_sessions).where(console_sessions.c.id_hash == id_hash)
                 .values(notice=text[:MAX_NOTICE]))


def take_notice(conn: Connection, id_hash: str) -> str | None:
    """The session's pending notice, cleared."""
    text = conn.execute(select(console_sessions.c.notice).where(console_sessions.c.id_hash == id_hash)).scalar()
    if text is not None:
        conn.execute(update(console_sessions).where(console_sessions.c.id_hash == id_hash).values(notice=None))
    return text
