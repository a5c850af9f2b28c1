"""Ingest: poll a source from its cursor, validate each record, store new events (dedup by key) and the cursor."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import or_, select, update

from payhub.api import SourceRecord
from payhub.audit import canonical_json
from payhub.clock import parse_instant, utcnow
from payhub.db.queries import insert_ignore
from payhub.db.schema import events, sources
from payhub.errors import InvalidRecord, PermanentSourceError, PluginError, PluginTimeout, TransientSourceError
from payhub.money import check_currency, parse_amount
from payhub.runtime import Runtime, Tx

log = logging.getLogger(__name__)


def event_key(source: str, object_type: str, object_id: str, transition: str) -> str:
    """The dedup key of an event: ``source:object_type:object_id:transition``."""
    return f"{source}:{object_type}:{object_id}:{transition}"


def validate(record: SourceRecord, source: str, max_amount: Decimal) -> dict[str, Any]:
    """The events row for ``record``: status ``ingested``, or ``quarantined`` with the reason."""
    raw = record.raw if record.raw is not None else canonical_json(_record_dict(record))
    ids_present = all(str(part or "").strip() for part in (record.object_type, record.object_id, record.transition))
    if ids_present:
        key = event_key(source, record.object_type, str(record.object_id).strip(), record.transition)
    else:  # no stable identity: key the quarantined record by its content, so re-reading it adds nothing
        key = f"{source}:malformed:{hashlib.sha256(raw.encode()).hexdigest()}"
    row: dict[str, Any] = {
        "key": key,
        "source": source,
        "object_type": str(record.object_type or ""),
        "object_id": str(record.object_id or "").strip(),
        "transition": str(record.transition or ""),
        "event_type": str(record.event_type or ""),
        "occurred_at": None,
        "payee_id": (record.payee_id or "").strip() or None,
        "partner_id": (record.partner_id or "").strip() or None,
        "amount": None,
        "currency": None,
        "attributes": canonical_json(dict(record.attributes)),
        "raw": raw,
        "reason": None,
    }
    try:
        if record.problem:
            raise InvalidRecord(record.problem)
        if not ids_present:
            raise InvalidRecord("object type, object id and transition are all required")
        if not row["event_type"]:
            raise InvalidRecord("event type is missing")
        row["occurred_at"] = parse_instant(record.occurred_at)
        if row["payee_id"] is None:
            raise InvalidRecord("payee is missing")
        has_amount = record.amount is not None and str(record.amount).strip() != ""
        if has_amount:
            amount = parse_amount(record.amount)
            if amount < 0:
                raise InvalidRecord(f"amount {amount} is negative")
            if amount > max_amount:
                raise InvalidRecord(f"amount {amount} exceeds the plausible maximum {max_amount}")
            row["amount"] = str(amount)
            row["currency"] = check_currency(record.currency)
        elif record.currency:
            row["currency"] = check_currency(record.currency)
        row["status"] = "ingested"
    except InvalidRecord as exc:
        row["status"] = "quarantined"
        row["reason"] = str(exc)
    return row


def _record_dict(record: SourceRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in SourceRecord.__slots__ if name not in ("raw",)}


def poll(rt: Runtime, name: str) -> int:
    """Fetch from source ``name`` until it has nothing more ready; return the number of new events."""
    return poll_batches(rt, name)[0]


def poll_batches(rt: Runtime, name: str, max_batches: int | None = None) -> tuple[int, bool]:
    """Fetch from source ``name`` until it has nothing more ready, or ``max_batches`` batches were stored.

    Returns (new events, whether the source said more records are ready now).
    """
    source = rt.plugins.sources[name]
    section = rt.settings.sources[name]
    cursor = _claim(rt, name)
    if cursor is False:
        return 0, False
    guard = rt.guard(f"source {name}", rt.settings.daemon.plugin_timeout_seconds)
    added, batches, more = 0, 0, False
    try:
        while not rt.stop_event.is_set() and (max_batches is None or batches < max_batches):
            try:
                result = guard.call(source.fetch, cursor, section.batch_size)
            except (TransientSourceError, PluginTimeout) as exc:
                log.warning("source %s: %s (will retry on the next poll)", name, exc)
                _record_error(rt, name, f"transient: {exc}", failed=False)
                return added, False
            except (PermanentSourceError, PluginError, Exception) as exc:  # noqa: BLE001 - isolate the plugin
                reason = f"{type(exc).__name__}: {exc}"
                log.error("source %s failed: %s", name, reason)
                _record_error(rt, name, reason, failed=True)
                return added, False
            added += store(rt, name, result.records, result.cursor, previous=cursor)
            # A source that says "more" but returned nothing would be polled forever: take it as done for now.
            cursor, more, batches = result.cursor, result.more and bool(result.records), batches + 1
            if not more:
                break
    finally:
        _release(rt, name)
    return added, more


def store(rt: Runtime, source: str, records: Any, cursor: str | None, previous: str | None = None) -> int:
    """Write one fetched batch and its cursor in one transaction; return how many events were new.

    A record whose key is already stored changes nothing, except that a quarantined event is replaced by a
    corrected version of its record (the CRM fixed it and sent it again).
    """
    now = utcnow()
    rows = [validate(record, source, rt.settings.ingest.max_amount) for record in records]
    for row in rows:
        row["ingested_at"] = now
    with rt.transaction() as tx:
        # The reason comes back from the stored row: a batch may hold a key twice, and only the first is stored.
        inserted = insert_ignore(tx.conn, events, rows, "key", events.c.id, events.c.key, events.c.status,
                                 events.c.reason)
        quarantined = 0
        for event_id, key, status, reason in inserted:
            if status == "quarantined":
                quarantined += 1
                tx.audit("event.quarantined", "event", event_id, {"key": key, "reason": reason},
                         outcome="quarantined")
            else:
                tx.audit("event.ingested", "event", event_id, {"key": key})
        new_keys = {key for _id, key, _status, _reason in inserted}
        corrected = _replace_quarantined(tx, [row for row in rows if row["key"] not in new_keys])
        lease = now + timedelta(seconds=rt.settings.database.lease_seconds)  # still fetching: keep the lease
        if rows or cursor != previous:
            tx.conn.execute(update(sources).where(sources.c.name == source)
                            .values(cursor=cursor, last_polled_at=now, reason=None, lease_until=lease))
            tx.audit("source.polled", "source", source, {
                "records": len(rows), "new": len(inserted), "corrected": corrected,
                "duplicates": len(rows) - len(inserted) - corrected, "quarantined": quarantined, "cursor": cursor,
            })
        else:
            tx.conn.execute(update(sources).where(sources.c.name == source)
                            .values(last_polled_at=now, reason=None, lease_until=lease))
    return len(inserted) + corrected


def _replace_quarantined(tx: Tx, rows: list[dict[str, Any]]) -> int:
    """Replace quarantined events by the differing records now received under their keys; return how many."""
    latest = {row["key"]: row for row in rows}  # the last copy of a key in the batch wins
    if not latest:
        return 0
    stored = tx.conn.execute(select(events.c.id, events.c.key, events.c.raw).where(
        events.c.key.in_(list(latest)), events.c.status == "quarantined")).all()
    count = 0
    for event_id, key, raw in stored:
        row = latest[key]
        if row["raw"] == raw:
            continue
        values = {k: v for k, v in row.items() if k not in ("key", "ingested_at")}
        tx.conn.execute(update(events).where(events.c.id == event_id).values(**values))
        outcome = "quarantined" if row["status"] == "quarantined" else "ok"
        tx.audit("event.corrected", "event", event_id, {"key": key, "status": row["status"], "reason": row["reason"]},
                 outcome=outcome)
        count += 1
    return count


def _claim(rt: Runtime, name: str) -> str | None | Literal[False]:
    """Lease the source for this worker; return its cursor, or False if another worker or a failure holds it."""
    now = utcnow()
    with rt.engine.begin() as conn:
        insert_ignore(conn, sources, [{"name": name, "status": "ok"}], "name")
        claimed = conn.execute(
            update(sources)
            .where(sources.c.name == name, sources.c.status == "ok")
            .where(or_(sources.c.lease_until.is_(None), sources.c.lease_until < now,
                       sources.c.lease_owner == rt.worker_id))
            .values(lease_owner=rt.worker_id, lease_until=now + timedelta(seconds=rt.settings.database.lease_seconds))
        ).rowcount
        if not claimed:
            return False
        return cast("str | None", conn.execute(select(sources.c.cursor).where(sources.c.name == name)).scalar_one())


def _release(rt: Runtime, name: str) -> None:
    with rt.engine.begin() as conn:
        conn.execute(
            update(sources).where(sources.c.name == name, sources.c.lease_owner == rt.worker_id)
            .values(lease_owner=None, lease_until=None)
        )


def _record_error(rt: Runtime, name: str, reason: str, *, failed: bool) -> None:
    """Record a source's error; a repeat of the error already recorded is not audited again."""
    with rt.transaction() as tx:
        known = tx.conn.execute(select(sources.c.reason, sources.c.status).where(sources.c.name == name)).first()
        values: dict[str, Any] = {"reason": reason, "last_polled_at": utcnow()}
        if failed:
            values["status"] = "failed"
        tx.conn.execute(update(sources).where(sources.c.name == name).values(**values))
        if known is None or known.reason != reason or failed:
            tx.audit("source.failed" if failed else "source.error", "source", name, {"reason": reason},
                     outcome="failed" if failed else "error")


def reset_failed_sources(rt: Runtime) -> None:
    """At start-up, give sources that failed in an earlier run another chance (config may have been fixed)."""
    with rt.transaction() as tx:
        failed = tx.conn.execute(select(sources.c.name).where(sources.c.status == "failed")).scalars().all()
        for name in failed:
            tx.conn.execute(update(sources).where(sources.c.name == name).values(status="ok"))
            tx.audit("source.reset", "source", name, {"reason": "daemon start"})
