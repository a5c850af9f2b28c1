"""``payhub payees erase``: remove a payee's personal data from payhub's tables, keeping the audit chain valid.

In one transaction: the payee's row keeps its id, country, currency, rail, flags, tax form, form date, TIN kind and
TIN status (what tax and audit need for their legal period) and loses its name (a pseudonym takes its place),
email, payout details, aliases and sealed TIN; the payee's events lose their ``raw`` payload and the attributes
named in ``[compliance.erasure] event_attributes``; the free text that payhub keeps next to the payee's rewards,
payouts, attempts, fund entries, calculations and release requests, and the payloads of quarantined events, have
every known value of the payee replaced by ``[erased]`` (found by :class:`payhub.compliance.scrubber.Scrubber`:
any case or Unicode form, escaped, identifiers with separators; JSON searched only inside its strings); the
payee's screening record is deleted; the payee's personal key is deleted, so every value sealed with it
(:mod:`payhub.compliance.personal`), in audit entries included, can no longer be opened; and one
``payee.erased`` audit entry records the reason and the counts (no personal value). Audit entries are not
changed, so ``payhub audit verify`` and earlier signed checkpoints still hold.

After the commit the ``payhub_payee_erased`` observers are called, then the database is compacted so that no old
page keeps the values: on SQLite the transaction runs with ``PRAGMA secure_delete = ON`` (freed space zeroed),
then the write-ahead log is checkpointed and truncated, the file is ``VACUUM``-ed and the log truncated again; on
PostgreSQL the touched tables are ``VACUUM``-ed (see docs/compliance.md for what that does not reach).

Erasing a payee erased before changes no data: it records ``payee.erasure_finished`` and runs the steps after the
commit again (observers, compaction), which a crash after the first commit may have cut short.

A payee with money still moving is refused: rewards not sent, paid or cancelled, and payouts that their rail has
not accepted (scheduled, sending, retrying, unknown, unresolved, held), are named so that an operator settles or
cancels them first.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, select, update

from payhub.audit import canonical_json
from payhub.clock import isoformat, utcnow
from payhub.compliance import personal
from payhub.compliance.scrubber import MIN_CHARS, Scrubber
from payhub.db.schema import (
    attempts,
    calculations,
    console_sessions,
    events,
    fund_entries,
    payee_screenings,
    payees,
    payouts,
    release_requests,
    rewards,
    statement_deliveries,
)
from payhub.errors import PayhubError
from payhub.pipeline.operator import required_reason
from payhub.plugins import notify
from payhub.runtime import Runtime
from payhub.states import EventStatus, PayoutStatus, RewardStatus

log = logging.getLogger(__name__)

ERASED = personal.ERASED
"""What replaces a personal value inside free text that is kept."""
PAGE = 500
"""Rows read at a time when searching a table."""
SETTLED_REWARDS = (RewardStatus.SENT, RewardStatus.PAID, RewardStatus.CANCELLED)
SETTLED_PAYOUTS = (PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.REJECTED, PayoutStatus.RETURNED,
                   PayoutStatus.FAILED, PayoutStatus.CANCELLED)
"""Where a payout may be when its payee is erased: accepted by its rail or final. What follows acceptance (paid,
returned) is matched by idempotency key and provider reference, which erasure keeps."""
TOUCHED = ("payees", "events", "calculations", "rewards", "fund_entries", "payouts", "attempts", "release_requests",
           "payee_screenings", "personal_keys", "statement_deliveries", "console_sessions")
"""The tables an erasure writes, compacted afterwards."""
SHOWN = 10
"""Unsettled rewards and payouts named in a refusal; the rest are counted."""


class UnsettledWork(PayhubError):
    """The payee still has rewards or payouts in motion; ``blockers`` names them."""

    def __init__(self, payee_id: str, blockers: list[str]) -> None:
        more = f"; and {len(blockers) - SHOWN} more" if len(blockers) > SHOWN else ""
        super().__init__(f"payee {payee_id} cannot be erased while money is still moving: "
                         f"{'; '.join(blockers[:SHOWN])}{more}. Settle or cancel these first "
                         "(payhub rewards cancel, payhub payouts cancel/resolve), then erase")
        self.blockers = blockers


@dataclass(slots=True)
class Erasure:
    """What one erasure did."""

    payee_id: str
    pseudonym: str
    erased_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    compaction: str = ""
    compaction_seconds: float = 0.0
    repeated: bool = False
    """True when the payee had been erased before: no data changed, the steps after the commit were run again."""


def unsettled(conn: Connection, payee_id: str) -> list[str]:
    """The payee's rewards and payouts not yet accepted by a rail (nor final), as ``reward 12 (held)``."""
    found = [f"reward {rid} ({status})" for rid, status in conn.execute(
        select(rewards.c.id, rewards.c.status).where(rewards.c.payee_id == payee_id,
                                                     rewards.c.status.not_in(SETTLED_REWARDS))
        .order_by(rewards.c.id))]
    found += [f"payout {pid} ({status})" for pid, status in conn.execute(
        select(payouts.c.id, payouts.c.status).where(payouts.c.payee_id == payee_id,
                                                     payouts.c.status.not_in(SETTLED_PAYOUTS))
        .order_by(payouts.c.id))]
    return found


def _values(row: Any, tin: str | None, attributes: Iterable[str]) -> list[str]:
    """The payee's personal values to search the kept text for."""
    values: set[str] = {row.name, *(row.email or "").split(",")}
    values |= {str(v) for v in json.loads(row.details or "{}").values() if isinstance(v, str | int)}
    values |= {str(v) for v in json.loads(row.aliases or "[]")}
    values |= set(attributes)
    if tin:
        values.add(tin)
    return sorted({v.strip() for v in values if len(v.strip()) >= MIN_CHARS})


def _scrub_rows(conn: Connection, table: Table, columns: tuple[str, ...], where: Any, scrubber: Scrubber) -> int:
    """Scrub ``columns`` of the rows of ``table`` matching ``where`` (read a page at a time, by ``id``); return how
    many rows changed."""
    changed = 0
    pk = table.c.id
    last = None
    while True:
        query = select(pk, *(table.c[c] for c in columns)).where(where).order_by(pk).limit(PAGE)
        page = conn.execute(query if last is None else query.where(pk > last)).all()
        for row in page:
            new = {c: scrubber.scrub(row._mapping[c]) for c in columns}
            if any(new[c] != row._mapping[c] for c in columns):
                conn.execute(update(table).where(pk == row.id).values(new))
                changed += 1
        if len(page) < PAGE:
            return changed
        last = page[-1].id


def _attribute_values(attributes_json: str, names: set[str]) -> list[str]:
    try:
        found = json.loads(attributes_json or "{}")
    except ValueError:
        return []
    if not isinstance(found, dict):
        return []
    return [str(found[n]) for n in names if n in found and isinstance(found[n], str | int | float)]


def erase(rt: Runtime, payee_id: str, reason: str, *, compact: bool = True) -> Erasure:
    """Erase ``payee_id``'s personal data (see the module docstring); return what was done.

    Raises PayhubError when the payee does not exist and :class:`UnsettledWork` while money is moving. A payee
    erased before is not changed: the erasure is recorded as finished and the steps after the commit run again
    (``repeated``). The ``payhub_payee_erased`` observers are called after the commit, each on its own.
    """
    reason = required_reason(reason)
    configured = set(rt.settings.compliance.erasure.event_attributes)
    sqlite = rt.engine.dialect.name == "sqlite"
    with rt.transaction() as tx:
        conn = tx.conn
        if sqlite:  # freed space in the pages this transaction writes is zeroed, not left for later reads
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        query = select(payees).where(payees.c.id == payee_id)
        row = conn.execute(query.with_for_update() if not sqlite else query).first()
        if row is None:
            raise PayhubError(f"payee {payee_id!r} does not exist")
        if row.erased_at is not None:
            tx.audit("payee.erasure_finished", "payee", payee_id, {"reason": reason,
                                                                    "erased_at": isoformat(row.erased_at)})
            done = Erasure(payee_id, row.name, row.erased_at, repeated=True)
        else:
            done = _erase_row(conn, row, configured)
            tx.audit("payee.erased", "payee", payee_id, {"reason": reason, "pseudonym": done.pseudonym,
                                                          "counts": done.counts,
                                                          "event_attributes": sorted(configured)})
    notify(rt.plugins.hooks.hook.payhub_payee_erased, payee_id=payee_id)
    if compact:
        started = time.monotonic()
        done.compaction = compact_database(rt.engine)
        done.compaction_seconds = time.monotonic() - started
    return done


def _erase_row(conn: Connection, row: Any, configured: set[str]) -> Erasure:
    """The erasure's writes for the payee ``row`` (not erased yet), in the caller's transaction."""
    payee_id = row.id
    blockers = unsettled(conn, payee_id)
    if blockers:
        raise UnsettledWork(payee_id, blockers)
    tin = personal.reveal(conn, row.tin_sealed) if row.tin_sealed else None
    tin = tin if tin != ERASED else None
    own_events = conn.execute(select(events.c.id, events.c.attributes).where(events.c.payee_id == payee_id)).all()
    attribute_values = [v for e in own_events for v in _attribute_values(e.attributes, configured)]
    scrubber = Scrubber(_values(row, tin, attribute_values))
    counts: dict[str, int] = {}

    for event in own_events:
        attributes = json.loads(event.attributes or "{}")
        kept = {k: v for k, v in attributes.items() if k not in configured} if isinstance(attributes, dict) \
            else {}
        conn.execute(update(events).where(events.c.id == event.id).values(
            raw=None, attributes=scrubber.scrub(canonical_json(kept))))
    counts["events"] = len(own_events)
    event_ids = select(events.c.id).where(events.c.payee_id == payee_id).scalar_subquery()
    counts["event_reasons"] = _scrub_rows(conn, events, ("reason",), events.c.payee_id == payee_id, scrubber)
    # A quarantined record may not name its payee in a column it could be parsed into, and may spell a value
    # in any case or escape: every quarantined payload is searched.
    counts["quarantined_payloads"] = _scrub_rows(
        conn, events, ("raw", "reason"),
        (events.c.status == EventStatus.QUARANTINED) & (events.c.payee_id.is_(None) | (
            events.c.payee_id != payee_id)), scrubber)
    counts["calculations"] = _scrub_rows(conn, calculations, ("reason",),
                                         calculations.c.event_id.in_(event_ids), scrubber)
    counts["rewards"] = _scrub_rows(conn, rewards, ("description", "details", "hold_reason"),
                                    rewards.c.payee_id == payee_id, scrubber)
    counts["fund_entries"] = _scrub_rows(conn, fund_entries, ("description", "details"),
                                         fund_entries.c.holder_id == payee_id, scrubber)
    counts["payouts"] = _scrub_rows(conn, payouts, ("reason", "route_reason"), payouts.c.payee_id == payee_id,
                                    scrubber)
    payout_ids = select(payouts.c.id).where(payouts.c.payee_id == payee_id).scalar_subquery()
    counts["attempts"] = _scrub_rows(conn, attempts, ("detail",), attempts.c.payout_id.in_(payout_ids),
                                     scrubber)
    counts["release_requests"] = _scrub_release_requests(conn, payout_ids, scrubber)
    counts["statement_deliveries"] = conn.execute(update(statement_deliveries).where(
        statement_deliveries.c.payout_id.in_(payout_ids)).values(destination=None, reason=None)).rowcount
    # A console notice may name anyone an operator acted on; notices are shown once and then dropped anyway.
    conn.execute(update(console_sessions).where(console_sessions.c.notice.is_not(None)).values(notice=None))
    counts["screenings"] = conn.execute(delete(payee_screenings).where(
        payee_screenings.c.payee_id == payee_id)).rowcount
    pseudonym = f"erased-{secrets.token_hex(4)}"
    now = utcnow()
    conn.execute(update(payees).where(payees.c.id == payee_id).values(
        name=pseudonym, email=None, details="{}", aliases="[]", tin_sealed=None,
        fingerprint=secrets.token_hex(32), erased_at=now, updated_at=now))
    counts["keys"] = int(personal.erase_key(conn, payee_id))
    return Erasure(payee_id, pseudonym, now, counts)


def _scrub_release_requests(conn: Connection, payout_ids: Any, scrubber: Scrubber) -> int:
    changed = 0
    for payout_id, operator, text in conn.execute(select(
            release_requests.c.payout_id, release_requests.c.operator, release_requests.c.justification)
            .where(release_requests.c.payout_id.in_(payout_ids))).all():
        new = scrubber.scrub(text)
        if new != text:
            conn.execute(update(release_requests).where(release_requests.c.payout_id == payout_id,
                                                        release_requests.c.operator == operator)
                         .values(justification=new))
            changed += 1
    return changed


def compact_database(engine: Engine) -> str:
    """Rewrite the database so that no free page or log frame keeps erased values; return what was done.

    SQLite: the write-ahead log is checkpointed and truncated, the file rebuilt (``VACUUM``), and the log truncated
    again. A checkpoint that another connection's open read keeps from finishing is reported, not waited for.
    PostgreSQL: ``VACUUM`` of the tables an erasure writes (dead row versions become free space; see
    docs/compliance.md for what remains in the log archive, backups and replicas).
    """
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA secure_delete = ON")
            first = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            cursor.execute("VACUUM")
            last = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            cursor.execute("PRAGMA secure_delete = OFF")
            cursor.close()
        finally:
            raw.close()
        if (first and first[0]) or (last and last[0]):
            log.warning("erasure: another connection kept the write-ahead log from being truncated; run "
                        "`payhub payees erase` again while the daemon is stopped, or wait for its next checkpoint")
            return "vacuum; write-ahead log busy (not truncated)"
        return "vacuum; write-ahead log truncated"
    with engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in TOUCHED:
            auto.exec_driver_sql(f"VACUUM {table}")
    return f"vacuum of {', '.join(TOUCHED)}"
