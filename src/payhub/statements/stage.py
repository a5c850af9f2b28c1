"""The statements stage: deliver the statement of each payout once it is sent or paid, record each delivery.

When ``[notify] statements`` is ``smtp`` or ``outbox``, :func:`deliver_batch` (one step of the daemon's pass, after
settle) takes the payouts that are ``sent`` or ``paid`` and have no delivery row yet, or whose last delivery
failed and is due again, and for each:

1. decides without any outside call whether it is **skipped**: the payee was erased (erased payees get no
   statement), or, for ``smtp``, the payee has no e-mail address or one that is not a single plain address;
2. otherwise builds and renders the statement (:mod:`payhub.statements.content` refuses one that does not add
   up), before any claim, so that however long rendering takes it never eats into a claim's lease;
3. **claims** it: the row ``statement_deliveries`` is written ``failed`` with the reason ``in progress`` and one
   more attempt, audited ``statement.sending``, and committed; just before sending, the claim is renewed, fenced
   by its attempt number (a claim another worker took over meanwhile is never sent); then mails the statement or
   writes it into the outbox (:mod:`payhub.statements.delivery`), the call bounded by a guard
   (:func:`attempt_seconds`);
4. records the outcome, ``delivered`` (destination, the PDF's SHA-256) or ``failed`` (the reason), audited
   ``statement.delivered`` / ``statement.failed`` / ``statement.skipped`` in the same transaction as the row. The
   write is fenced by the attempt number: a worker whose claim was taken over records nothing.

A failed delivery is tried again on a later pass, after a backoff (:func:`retry_delay`), until ``max_attempts``
attempts were made; ``payhub statements send --payout N`` or ``--retry-failed`` tries again after that. A claim
left ``in progress`` by a worker that died is closed once its lease (the attempt's bound plus a minute) has passed:
recorded as a failed attempt (reason ``abandoned: …``, audited ``statement.failed``), before the ``max_attempts``
limit applies, so no row stays ``in progress`` for ever. One payout's failure, whatever it is, is recorded and the
others go on; only a database error stops the step (the daemon waits for the database; the claim is closed after
its lease).

**At least once.** A mail is sent before its delivery is recorded: after a crash between the two (or an attempt
abandoned at its bound while the server was still taking the mail), the statement is sent again on a later
attempt. The copy carries the same ``Message-ID`` (:func:`payhub.statements.delivery.message_id`), so the
receiving side can recognise it; payhub cannot know whether the first copy arrived. Outbox files are rewritten
with the same content.

E-mail addresses are personal data: the address a statement went to is stored sealed with the payee's personal key
(in the row's ``destination`` and the audit entry), so an erasure makes it unreadable.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from functools import partial
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, and_, false, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from payhub.clock import isoformat, utcnow
from payhub.compliance import personal
from payhub.db.queries import for_update, insert_ignore
from payhub.db.schema import payees, payouts, statement_deliveries
from payhub.errors import PayhubError, PluginTimeout
from payhub.guard import Guard
from payhub.runtime import Runtime, Tx
from payhub.settings import Settings, SmtpSettings
from payhub.statements import addresses, content, delivery

log = logging.getLogger(__name__)

BATCH = 20
"""Payouts one step delivers at most."""
PASS_SECONDS = 10.0
"""The daemon's pass takes no new statement after this many seconds of statement work (a statement costs about
0.1-0.5 s to render, plus its send), so that ingest, disburse and settle get their turn."""
IN_PROGRESS = "in progress"
"""The reason of a claimed row while its delivery runs (or after a crash during it)."""
OUTBOX_SECONDS = 60.0
"""The bound of one outbox delivery (two file writes)."""
SMTP_EXCHANGES = 9
"""The waits of one mail, each bounded by ``[notify.smtp] timeout_seconds``: connect, greeting, EHLO, MAIL, RCPT,
DATA, the message's bytes, the answer to them, QUIT; :func:`smtp_exchanges` adds TLS and login."""
LEASE_MARGIN_SECONDS = 60.0
RETRY_BASE_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
MAX_DESTINATION = 400  # the column's size
MAX_REASON = 2000

Status = Literal["delivered", "failed", "skipped"]
Channel = Literal["smtp", "outbox"]


class StatementsOff(PayhubError):
    """``[notify] statements`` is ``off``: nothing is delivered."""


def refuse_when_off(settings: Settings) -> None:
    """Raise :class:`StatementsOff` when ``[notify] statements`` is ``off``."""
    if settings.notify.statements == "off":
        raise StatementsOff("[notify] statements is off: set it to smtp or outbox to deliver statements")


@dataclass(frozen=True, slots=True)
class Result:
    """What one delivery did: its status, the attempt number, where it went and why it failed or was skipped;
    ``server`` for a failure of the mail server or the outbox rather than of this statement."""

    payout_id: int
    status: Status
    attempt: int
    destination: str | None = None
    reason: str | None = None
    sha256: str | None = None
    server: bool = False


_paused: weakref.WeakKeyDictionary[Runtime, datetime] = weakref.WeakKeyDictionary()
"""Per runtime: until when deliveries wait after the mail server or the outbox failed."""


def paused_until(rt: Runtime) -> datetime | None:
    """Until when the stage delivers nothing because the server or the outbox failed (None: it is not paused)."""
    until = _paused.get(rt)
    return until if until is not None and until > utcnow() else None


def smtp_exchanges(smtp: SmtpSettings) -> int:
    """How many waits bounded by ``timeout_seconds`` one mail makes: :data:`SMTP_EXCHANGES`, plus STARTTLS, its
    handshake and the second EHLO (``starttls``) or the handshake (``tls``), plus two for the login (AUTH and its
    continuation)."""
    tls = {"starttls": 3, "tls": 1, "none": 0}[smtp.security]
    return SMTP_EXCHANGES + tls + (2 if smtp.username else 0)


def attempt_seconds(settings: Settings) -> float:
    """The longest one delivery may take before it is abandoned and recorded failed: one ``timeout_seconds`` per
    exchange of a mail (:func:`smtp_exchanges`), or :data:`OUTBOX_SECONDS`."""
    smtp = settings.notify.smtp
    if settings.notify.statements == "smtp" and smtp is not None:
        return smtp_exchanges(smtp) * smtp.timeout_seconds
    return OUTBOX_SECONDS


def lease(settings: Settings) -> timedelta:
    """How long a claim stays another worker's: an ``in progress`` row older than this was left by a crash."""
    return timedelta(seconds=attempt_seconds(settings) + LEASE_MARGIN_SECONDS)


def retry_delay(settings: Settings, attempts: int) -> timedelta:
    """The wait after ``attempts`` failed attempts before the next: 1, 2, 4 … minutes up to an hour, never less
    than the :func:`lease`."""
    backoff = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** min(max(attempts - 1, 0), 20))
    return max(lease(settings), timedelta(seconds=backoff))


def _retry_due(settings: Settings, now: datetime) -> ColumnElement[bool]:
    """Rows whose failed delivery may be tried again now (fewer than ``max_attempts`` attempts, backoff over)."""
    d = statement_deliveries
    most = settings.notify.max_attempts
    clauses: list[ColumnElement[bool]] = []
    n = 1
    while n < most:
        delay = retry_delay(settings, n)
        if delay >= timedelta(seconds=RETRY_MAX_SECONDS):  # every later attempt waits the same
            clauses.append(and_(d.c.attempts >= n, d.c.attempts < most, d.c.updated_at <= now - delay))
            break
        clauses.append(and_(d.c.attempts == n, d.c.updated_at <= now - delay))
        n += 1
    return and_(d.c.status == "failed", or_(*clauses)) if clauses else false()


def _in_progress(reason: str | None) -> bool:
    return (reason or "").startswith(IN_PROGRESS)


def due(conn: Connection, settings: Settings, now: datetime, limit: int,
        retry_failed_before: datetime | None = None) -> list[int]:
    """Ids of up to ``limit`` payouts whose statement is to be delivered now, lowest first: sent or paid without a
    delivery row, failed and due again, or left in progress past its lease (to be closed); with
    ``retry_failed_before``, also every failed row last tried before that time, whatever its attempts."""
    p, d = payouts, statement_deliveries
    abandoned = and_(d.c.status == "failed", d.c.reason.startswith(IN_PROGRESS),
                     d.c.updated_at <= now - lease(settings))
    wanted = or_(d.c.payout_id.is_(None), _retry_due(settings, now), abandoned)
    if retry_failed_before is not None:
        wanted = or_(wanted, and_(d.c.status == "failed", d.c.updated_at < retry_failed_before,
                                  or_(~d.c.reason.startswith(IN_PROGRESS), d.c.reason.is_(None),
                                      d.c.updated_at <= now - lease(settings))))
    query = (select(p.c.id).select_from(p.outerjoin(d, d.c.payout_id == p.c.id))
             .where(p.c.status.in_(sorted(content.STATEMENT_STATUSES)), wanted).order_by(p.c.id).limit(limit))
    since = settings.notify.since
    if since is not None:
        query = query.where(p.c.first_sent_at >= datetime.combine(since, day_time(0), UTC))
    return list(conn.execute(query).scalars())


def _claimable(row: Any, settings: Settings, now: datetime, *, force: bool) -> bool:
    """Whether the delivery row ``row`` (None: there is none yet) may be claimed now (see :func:`_claim`)."""
    if row is None:
        return True
    if row.status == "delivered":
        return False
    if _in_progress(row.reason):  # claimed; once its lease has passed, closed first (:func:`_close_abandoned`)
        return False
    return force or (row.status == "failed" and row.attempts < settings.notify.max_attempts
                     and row.updated_at <= now - retry_delay(settings, row.attempts))


def _claim(tx: Tx, settings: Settings, payout_id: int, channel: str, now: datetime, *, force: bool) -> int | None:
    """Take the payout's delivery: write its row ``failed``/``in progress`` with one more attempt; return the
    attempt's number, or None when it is not to be delivered now (delivered, being delivered, or not due)."""
    d = statement_deliveries
    conn = tx.conn
    row = conn.execute(for_update(conn, select(d).where(d.c.payout_id == payout_id))).first()
    values: dict[str, Any] = {"channel": channel, "status": "failed", "updated_at": now, "destination": None,
                              "sha256": None}
    if row is None:
        reason = f"{IN_PROGRESS}: attempt 1 since {isoformat(now)}"
        made = insert_ignore(conn, d, [{**values, "payout_id": payout_id, "attempts": 1, "reason": reason}],
                             "payout_id", d.c.payout_id)
        return 1 if made else None  # else another worker inserted it first
    if not _claimable(row, settings, now, force=force):
        return None
    attempt = row.attempts + 1
    changed = conn.execute(update(d).where(d.c.payout_id == payout_id, d.c.attempts == row.attempts,
                                           d.c.status == row.status).values(
        **values, attempts=attempt, reason=f"{IN_PROGRESS}: attempt {attempt} since {isoformat(now)}"))
    return attempt if changed.rowcount == 1 else None


ABANDONED = "abandoned"
"""The reason's start of an attempt closed because its lease passed while it was still ``in progress``."""


def _abandoned(row: Any, settings: Settings, now: datetime) -> bool:
    return (row is not None and row.status == "failed" and _in_progress(row.reason)
            and row.updated_at <= now - lease(settings))


def _close_abandoned(rt: Runtime, payout_id: int, now: datetime) -> Result | None:
    """Close the payout's attempt left ``in progress`` past its lease (its worker died, or its call was abandoned)
    as a failed attempt, audited ``statement.failed``; return it, or None when there is none (or another worker
    closed or claimed it first). Its time is left as it was, so its retry is due as for any failure."""
    settings = rt.settings
    d = statement_deliveries
    most = settings.notify.max_attempts
    with rt.transaction() as tx:
        conn = tx.conn
        row = conn.execute(for_update(conn, select(d).where(d.c.payout_id == payout_id))).first()
        if row is None or not _abandoned(row, settings, now):
            return None
        reason = (f"{ABANDONED}: attempt {row.attempts} was still in progress when its lease passed (its worker "
                  "stopped, or the call was abandoned); by e-mail the statement may have been sent")
        changed = conn.execute(update(d).where(d.c.payout_id == payout_id, d.c.attempts == row.attempts,
                                               d.c.reason == row.reason).values(reason=reason))
        if changed.rowcount != 1:
            return None
        tx.audit("statement.failed", "payout", payout_id, {
            "channel": row.channel, "attempt": row.attempts, "reason": reason, "last": row.attempts >= most,
            "server": False, "abandoned": True}, outcome="failed")
    log.warning("statement of payout %d: attempt %d abandoned (its lease passed)%s", payout_id, row.attempts,
                "; no more tries" if row.attempts >= most else "")
    return Result(payout_id, "failed", row.attempts, reason=reason)


def _renew(rt: Runtime, payout_id: int, attempt: int) -> bool:
    """Just before sending: renew the claim of ``attempt`` (its lease starts again now); False when it was taken
    over meanwhile (another attempt was claimed, or the row was closed), so that nothing is sent."""
    d = statement_deliveries
    now = utcnow()
    with rt.transaction() as tx:
        changed = tx.conn.execute(update(d).where(
            d.c.payout_id == payout_id, d.c.attempts == attempt, d.c.status == "failed",
            d.c.reason.startswith(IN_PROGRESS)).values(
            updated_at=now, reason=f"{IN_PROGRESS}: attempt {attempt} since {isoformat(now)}"))
        return changed.rowcount == 1


def _finish(tx: Tx, payout_id: int, attempt: int, status: Status, *, destination: str | None = None,
            sha256: str | None = None, reason: str | None = None) -> bool:
    """Record the outcome of ``attempt``; False when another worker has claimed the delivery since (nothing is
    written)."""
    d = statement_deliveries
    changed = tx.conn.execute(update(d).where(d.c.payout_id == payout_id, d.c.attempts == attempt).values(
        status=status, destination=destination, sha256=sha256,
        reason=reason[:MAX_REASON] if reason is not None else None, updated_at=utcnow()))
    return changed.rowcount == 1


def _seal(tx: Tx, payee_id: str, address: str) -> str:
    key = personal.keys(tx.conn, [payee_id], create=True)[payee_id]
    return personal.seal_with(key, payee_id, address)


def _guard(rt: Runtime) -> Guard:
    return rt.guard("statements", attempt_seconds(rt.settings))


def _target(conn: Connection, payout_id: int) -> Any:
    return conn.execute(
        select(payouts.c.status, payouts.c.payee_id, payees.c.email, payees.c.erased_at)
        .select_from(payouts.outerjoin(payees, payees.c.id == payouts.c.payee_id))
        .where(payouts.c.id == payout_id)).first()


def _skip_reason(target: Any, channel: str) -> str | None:
    if target.erased_at is not None:
        return f"the payee was erased at {isoformat(target.erased_at)}: erased payees get no statement"
    if channel == "smtp":
        if not target.email:
            return "the payee has no e-mail address in the payee registry"
        if addresses.mail_address(target.email) is None:
            return "the payee's e-mail address is not one plain address (local@domain)"
    return None


def _send(rt: Runtime, doc: delivery.Rendered, to: str | None) -> str:
    """Deliver ``doc`` on the configured channel (bounded by the guard); return the plain destination."""
    settings = rt.settings
    guard = _guard(rt)
    payout = doc.statement.payout_id
    if settings.notify.statements == "smtp":
        smtp = settings.notify.smtp
        assert smtp is not None and to is not None  # checked by the settings and _skip_reason
        msg = delivery.message(doc, smtp, to)
        guard.call(delivery.send_mail, msg, smtp, to, doing=f"mail of statement {payout}")
        return to
    path = guard.call(delivery.write_outbox, doc, delivery.outbox_dir(settings),
                      doing=f"outbox files of statement {payout}")
    return str(path)


def deliver(rt: Runtime, payout_id: int, *, force: bool = False) -> Result | None:
    """Deliver the statement of ``payout_id`` if it is due (or, with ``force``, unless it is delivered or being
    delivered); return what was done, or None when nothing was (see the module docstring)."""
    settings = rt.settings
    channel = settings.notify.statements
    refuse_when_off(settings)
    with rt.engine.connect() as conn:
        target = _target(conn, payout_id)
    if target is None or target.status not in content.STATEMENT_STATUSES:
        return None
    with rt.engine.connect() as conn:
        row = conn.execute(select(statement_deliveries).where(statement_deliveries.c.payout_id == payout_id)).first()
    closed = _close_abandoned(rt, payout_id, utcnow()) if _abandoned(row, settings, utcnow()) else None
    if closed is not None:
        with rt.engine.connect() as conn:
            row = conn.execute(select(statement_deliveries)
                               .where(statement_deliveries.c.payout_id == payout_id)).first()
    if not _claimable(row, settings, utcnow(), force=force):
        return closed
    skip = _skip_reason(target, channel)
    if skip is not None:
        with rt.transaction() as tx:
            attempt = _claim(tx, settings, payout_id, channel, utcnow(), force=force)
            if attempt is None:
                return None
            _finish(tx, payout_id, attempt, "skipped", reason=skip)
            tx.audit("statement.skipped", "payout", payout_id, {"channel": channel, "attempt": attempt,
                                                                 "reason": skip}, outcome="skipped")
        log.info("statement of payout %d skipped: %s", payout_id, skip)
        return Result(payout_id, "skipped", attempt, reason=skip)
    to = addresses.mail_address(target.email) if channel == "smtp" else None
    # Built and rendered before the claim: the claim's lease covers only the send, however long rendering takes.
    doc: delivery.Rendered | None = None
    problem: str | None = None
    try:
        with rt.engine.connect() as conn:
            statement = content.build(conn, payout_id)
        doc = delivery.rendered(statement)
    except SQLAlchemyError:
        raise  # the database: the daemon waits for it
    except PayhubError as exc:  # a statement that does not add up
        problem = str(exc)
    except Exception as exc:  # noqa: BLE001 - one statement's failure (a rendering bug) never stops the others
        log.exception("statement of payout %d: unexpected error", payout_id)
        problem = f"{type(exc).__name__}: {exc}"
    with rt.transaction() as tx:
        attempt = _claim(tx, settings, payout_id, channel, utcnow(), force=force)
        if attempt is None:
            return None
        tx.audit("statement.sending", "payout", payout_id, {"channel": channel, "attempt": attempt})
    if problem is not None or doc is None:
        return _record_failure(rt, payout_id, attempt, channel, problem or "not rendered", None)
    if not _renew(rt, payout_id, attempt):
        log.warning("statement of payout %d: the claim of attempt %d was taken over before sending; not sent",
                    payout_id, attempt)
        return None
    try:
        destination = _send(rt, doc, to)
    except SQLAlchemyError:
        raise  # the database: the daemon waits for it; the claim is taken again after its lease
    except PayhubError as exc:  # a refused mail, a timeout (PluginTimeout)
        server = isinstance(exc, PluginTimeout) or (isinstance(exc, delivery.DeliveryError) and exc.server)
        return _record_failure(rt, payout_id, attempt, channel, _without_address(str(exc), to), doc, server=server)
    except Exception as exc:  # noqa: BLE001 - one statement's failure never stops the others
        log.exception("statement of payout %d: unexpected error", payout_id)
        return _record_failure(rt, payout_id, attempt, channel, f"{type(exc).__name__}: {exc}", doc)
    with rt.transaction() as tx:
        shown = _seal(tx, target.payee_id, destination) if channel == "smtp" else destination
        stored = shown if len(shown) <= MAX_DESTINATION else None  # the audit entry keeps it whole
        if not _finish(tx, payout_id, attempt, "delivered", destination=stored, sha256=doc.sha256):
            log.warning("statement of payout %d: delivered, but another worker took the delivery over meanwhile; "
                        "it may be delivered again", payout_id)
            return None
        detail: dict[str, Any] = {"channel": channel, "attempt": attempt, "sha256": doc.sha256,
                                  "lines": len(doc.statement.lines), "total": doc.statement.total,
                                  "currency": doc.statement.currency}
        if channel == "smtp":
            assert settings.notify.smtp is not None
            detail.update(to=shown, message_id=delivery.message_id(doc.statement, settings.notify.smtp.sender))
        else:
            detail["file"] = destination
        tx.audit("statement.delivered", "payout", payout_id, detail)
    log.info("statement of payout %d delivered (%s, attempt %d)", payout_id, channel, attempt)
    return Result(payout_id, "delivered", attempt, destination=destination, sha256=doc.sha256)


def _without_address(reason: str, address: str | None) -> str:
    """``reason`` (a mail server's answer, which often quotes the recipient) without the payee's address: the audit
    log keeps reasons for good, and an address is personal data that erasure must be able to remove."""
    if not address:
        return reason
    return re.sub(re.escape(address), "<the payee's address>", reason, flags=re.IGNORECASE)


def _record_failure(rt: Runtime, payout_id: int, attempt: int, channel: str, reason: str,
                    doc: delivery.Rendered | None, *, server: bool = False) -> Result | None:
    most = rt.settings.notify.max_attempts
    reason = reason[:MAX_REASON]
    if server:  # the next statements would fail the same way: wait as long as this one does
        _paused[rt] = utcnow() + retry_delay(rt.settings, 1)
    with rt.transaction() as tx:
        if not _finish(tx, payout_id, attempt, "failed", reason=reason,
                       sha256=doc.sha256 if doc is not None else None):
            return None
        tx.audit("statement.failed", "payout", payout_id, {
            "channel": channel, "attempt": attempt, "reason": reason, "last": attempt >= most, "server": server},
            outcome="failed")
    if attempt >= most:
        log.error("statement of payout %d failed (attempt %d of %d, no more tries; `payhub statements send "
                  "--payout %d` tries again): %s", payout_id, attempt, most, payout_id, reason)
    else:
        log.warning("statement of payout %d failed (attempt %d of %d; tried again later): %s", payout_id, attempt,
                    most, reason)
    return Result(payout_id, "failed", attempt, reason=reason, server=server)


def deliver_one(rt: Runtime, payout_id: int) -> Result:
    """Deliver the statement of ``payout_id`` now, whatever its earlier attempts (``statements send --payout``):
    raise :class:`~payhub.statements.content.StatementError` when the payout does not exist, is not sent or paid,
    or its statement is delivered or being delivered."""
    refuse_when_off(rt.settings)
    with rt.engine.connect() as conn:
        target = _target(conn, payout_id)
        row = delivery_row(conn, payout_id, reveal=False)
    if target is None:
        raise content.StatementNotFound(f"payout {payout_id} does not exist")
    if target.status not in content.STATEMENT_STATUSES:
        raise content.StatementError(f"payout {payout_id} is {target.status}: statements are delivered for sent or "
                                     "paid payouts")
    if row is not None and row["status"] == "delivered":
        raise content.StatementError(f"the statement of payout {payout_id} was delivered at "
                                     f"{isoformat(row['updated_at'])} ({row['channel']})")
    done = deliver(rt, payout_id, force=True)
    if done is None:
        raise content.StatementError(f"the statement of payout {payout_id} is being delivered by another worker; "
                                     "try again later")
    return done


def deliver_batch(rt: Runtime, limit: int = BATCH, retry_failed_before: datetime | None = None,
                  deadline: float | None = None) -> list[Result]:
    """Deliver up to ``limit`` due statements (see :func:`due`), taking no new one once the stop signal is set or
    ``time.monotonic()`` reached ``deadline``; [] when statements are off, while an abandoned
    delivery is still running (nothing else is tried until it returns), or while paused after a failure of the
    server or the outbox (:func:`paused_until`: as long as that statement's retry delay). The batch stops at such
    a failure: the statements after it are not tried, so no attempt of theirs is spent on it."""
    settings = rt.settings
    if settings.notify.statements == "off" or _guard(rt).busy or paused_until(rt) is not None:
        return []
    with rt.engine.connect() as conn:
        ids = due(conn, settings, utcnow(), limit, retry_failed_before)
    results: list[Result] = []
    for payout_id in ids:
        if rt.stop_event.is_set() or _guard(rt).busy or (deadline is not None and time.monotonic() >= deadline):
            break
        done = deliver(rt, payout_id, force=retry_failed_before is not None)
        if done is not None:
            results.append(done)
            if done.server:
                break
    return results


def deliver_step(rt: Runtime, deadline: float | None = None) -> int:
    """One step: :func:`deliver_batch` until ``deadline``; return how many statements it delivered, failed or
    skipped (0 once the deadline has passed)."""
    if deadline is not None and time.monotonic() >= deadline:
        return 0
    return len(deliver_batch(rt, deadline=deadline))


def deliver_pass(rt: Runtime) -> Callable[[], int]:
    """The daemon's step for one pass: :func:`deliver_step` with a deadline :data:`PASS_SECONDS` from now, so that
    the pass's repeated steps together take no new statement after it."""
    return partial(deliver_step, rt, deadline=time.monotonic() + PASS_SECONDS)


def delivery_row(conn: Connection, payout_id: int, *, reveal: bool) -> dict[str, Any] | None:
    """The payout's delivery row for display (None when there is none); an e-mail destination opened with the
    payee's key when ``reveal`` (``[erased]`` once the key is gone), else shown ``[sealed]``."""
    d = statement_deliveries
    row = conn.execute(select(d).where(d.c.payout_id == payout_id)).first()
    if row is None:
        return None
    found = dict(row._mapping)
    destination = found["destination"]
    if isinstance(destination, str) and personal.subject_of(destination) is not None:
        found["destination"] = personal.Keyring(conn).open(destination) if reveal else "[sealed]"
    return found
