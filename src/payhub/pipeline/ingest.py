"""Ingest: poll a source from its cursor, validate each record, store new events (dedup by key) and the cursor;
read the objects that webhooks queued for the source (:mod:`payhub.webhooks`) first.

No single record can stop ingestion: :func:`validate` turns any object a source returns into a row that the
database can store (an ``ingested`` event, or a ``quarantined`` one with the reason), and :func:`store` writes a
batch so that a record the database still refuses is found and quarantined alone while the rest is stored. Errors
of the database itself (locked, unreachable) are not data and propagate unchanged.

The common record (plain text values that pass every check) is validated by a shortcut that builds the same row
as the full rules without their bookkeeping; anything unusual goes through the full rules, which name the problem.
New events are written many rows per statement at the driver level (:func:`payhub.store.events.insert_new`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from json import encoder as json_encoder
from operator import itemgetter
from typing import Any, Literal

from payhub import webhooks
from payhub.api import FetchResult, SourceRecord
from payhub.audit import canonical_json
from payhub.clock import isoformat, parse_instant, utcnow
from payhub.db.schema import events
from payhub.errors import InvalidRecord, PermanentSourceError, PluginError, PluginTimeout, TransientSourceError
from payhub.guard import Guard
from payhub.money import check_currency, parse_amount
from payhub.payees import erased_since
from payhub.pipeline import storable, waiting
from payhub.pipeline.identity import event_key, malformed_key, normalise_id
from payhub.runtime import Runtime, Tx
from payhub.states import EventStatus
from payhub.store import events as event_store
from payhub.store import leases

log = logging.getLogger(__name__)

__all__ = ["MAX_DECIMALS", "Counts", "event_key", "poll", "poll_batches", "reset_failed_sources", "store", "validate",
           "write_batch"]

MAX_DECIMALS = 18
"""Amounts with more significant decimal places than this are quarantined."""

REASON_LIMIT = storable.REASON_LIMIT
KEY_LENGTH = storable.column_limit(events, "key")
_IDENTITY_LIMITS = tuple(storable.column_limit(events, name) for name in ("object_type", "object_id", "transition"))
_FIELDS = tuple(f.name for f in fields(SourceRecord))
_OBJECT_TYPE_LIMIT, _OBJECT_ID_LIMIT, _TRANSITION_LIMIT = _IDENTITY_LIMITS
_EVENT_TYPE_LIMIT = storable.column_limit(events, "event_type")
_PAYEE_LIMIT = min(storable.column_limit(events, "payee_id"), storable.column_limit(events, "partner_id"))
_AMOUNT_LIMIT = storable.column_limit(events, "amount")
_SOURCE_LIMIT = storable.column_limit(events, "source")


# ------------------------------------------------------------------------------------------------ validation


def validate(record: object, source: str, max_amount: Decimal) -> dict[str, Any]:
    """The events row for ``record``: status ``ingested``, or ``quarantined`` with the reason.

    Never raises, whatever ``record`` is (a SourceRecord with wrong types, one whose ``str()`` raises, not a
    SourceRecord at all), and every value of the returned row can be stored on SQLite and PostgreSQL alike.
    """
    try:
        row = _plain_row(record, source, max_amount)
    except Exception:  # noqa: BLE001 - not a plain record: the full validation says what is wrong
        row = None
    if row is not None:
        return row
    try:
        return _validate(record, source, max_amount)
    except Exception as exc:  # noqa: BLE001 - a record whose values misbehave is quarantined alone
        return _unreadable(record, source, f"the record cannot be read: {_describe(exc)}")


def _plain_row(record: object, source: str, max_amount: Decimal) -> dict[str, Any] | None:
    """The ``ingested`` row of a record of plain values that passes every check, built without the full
    validation's bookkeeping; None when anything is unusual (a value of another type, a problem, a value over a
    limit, a NUL or a lone surrogate), to be decided by :func:`_validate`. Whenever it returns a row, that row is
    the one :func:`_validate` returns for the record (a property the tests check on arbitrary records)."""
    if type(record) is not SourceRecord:
        return None
    raw, problem, attributes = record.raw, record.problem, record.attributes
    if type(raw) is not str or len(raw) > storable.RAW_LIMIT or type(attributes) is not dict:
        return None
    if problem is not None and (type(problem) is not str or problem):
        return None
    event_type, payee, partner = record.event_type, _plain_id(record.payee_id), record.partner_id
    object_type, object_id, transition = (_plain_id(record.object_type), _plain_id(record.object_id),
                                          _plain_id(record.transition))
    if not (object_type and object_id and transition and payee and event_type and type(event_type) is str):
        return None
    if partner is not None:
        if type(partner) is not str:
            return None
        partner = _plain_id(partner) or None
    occurred_at = record.occurred_at
    if type(occurred_at) is not datetime or occurred_at.tzinfo is not UTC:  # else parse_instant would return it
        occurred_at = parse_instant(occurred_at)
    if not EARLIEST <= occurred_at < LATEST:
        return None
    amount, currency = record.amount, record.currency
    if type(amount) is str and _CANONICAL_AMOUNT.fullmatch(amount):  # the canonical text of itself
        if Decimal(amount) > max_amount:
            return None
        currency = _currency(currency)
    elif amount is None or (type(amount) is str and not amount.strip()):
        amount = None
        if currency is not None:
            if type(currency) is not str:
                return None
            currency = check_currency(currency) if currency else None
    else:
        amount = _amount_text(amount, max_amount)
        currency = _currency(currency)
    for name in attributes:
        if type(name) is not str:
            return None
    text = _attributes_json(attributes)
    key = event_key(source, object_type, object_id, transition)
    if (len(key) > KEY_LENGTH or len(object_type) > _OBJECT_TYPE_LIMIT or len(object_id) > _OBJECT_ID_LIMIT
            or len(transition) > _TRANSITION_LIMIT or len(event_type) > _EVENT_TYPE_LIMIT
            or len(payee) > _PAYEE_LIMIT or (partner is not None and len(partner) > _PAYEE_LIMIT)
            or (amount is not None and len(amount) > _AMOUNT_LIMIT) or len(text) > storable.TEXT_LIMIT
            or len(source) > _SOURCE_LIMIT):
        return None
    joined = "".join((key, event_type, payee, partner or "", text, raw))
    if "\x00" in joined or not (joined.isascii() or _encodes(joined)):
        return None
    return {
        "key": key, "source": source, "object_type": object_type, "object_id": object_id, "transition": transition,
        "event_type": event_type, "occurred_at": occurred_at, "payee_id": payee, "partner_id": partner,
        "amount": amount, "currency": currency, "attributes": text, "raw": raw, "reason": None,
        "status": EventStatus.INGESTED,
    }


EARLIEST, LATEST = storable.EARLIEST, storable.LATEST
_CANONICAL_AMOUNT = re.compile(rf"(?:0|[1-9][0-9]*)(?:\.[0-9]{{1,{MAX_DECIMALS}}})?")
"""Amount text that is its own canonical form: no sign, no leading zero, at most MAX_DECIMALS decimal places."""


def _plain_id(value: object) -> str:
    """An id that is plain text, normalised ("" when it is not text: the full validation decides)."""
    if type(value) is not str:
        return ""
    if value.isascii():  # normalise_id's common case, inline
        text = value.strip()
        if text.isprintable():
            return text
    return normalise_id(value, "id")


def _encodes(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate(record: object, source: str, max_amount: Decimal) -> dict[str, Any]:
    if not isinstance(record, SourceRecord):
        return _unreadable(record, source, f"the source returned a {type(record).__name__}, not a SourceRecord")
    raw, raw_problem = _raw_text(record)
    row = _display_row(source, record, raw)
    problem = _problem_text(record.problem)
    try:
        key, identity = _identity(source, record)
    except InvalidRecord as exc:  # no stable identity: keyed by its content, so re-reading it adds nothing
        row["key"], row["reason"] = malformed_key(source, raw), problem or str(exc)
        return _storable(row)
    row.update(key=key, object_type=identity[0], object_id=identity[1], transition=identity[2])
    try:
        if problem:
            raise InvalidRecord(problem)
        if raw_problem:
            raise InvalidRecord(raw_problem)
        _fill(row, record, max_amount)
        found = storable.problems(events, row)
        if found:
            raise InvalidRecord("; ".join(found))
        row["status"] = EventStatus.INGESTED
    except InvalidRecord as exc:
        row["status"], row["reason"] = EventStatus.QUARANTINED, str(exc)
    except Exception as exc:  # noqa: BLE001 - a value that misbehaves when read: quarantined under its key
        row["status"], row["reason"] = EventStatus.QUARANTINED, f"the record cannot be read: {_describe(exc)}"
    return _storable(row)


def _identity(source: str, record: SourceRecord) -> tuple[str, tuple[str, str, str]]:
    """The event key and the normalised (object type, object id, transition); InvalidRecord when they cannot make a
    key."""
    parts = (_id_text(record.object_type, "object type"), _id_text(record.object_id, "object id", numbers=True),
             _id_text(record.transition, "transition"))
    if not all(parts):
        raise InvalidRecord("object type, object id and transition are all required")
    for what, limit, part in zip(("object type", "object id", "transition"), _IDENTITY_LIMITS, parts, strict=True):
        problem = storable.text_problem(part, limit)
        if problem:
            raise InvalidRecord(f"{what} {problem}")
    key = event_key(source, *parts)
    if len(key) > KEY_LENGTH:
        raise InvalidRecord(f"the event key is {len(key)} characters long, more than {KEY_LENGTH}")
    return key, parts


def _fill(row: dict[str, Any], record: SourceRecord, max_amount: Decimal) -> None:
    """Set the row's values from ``record``, one by one; InvalidRecord at the first that is wrong."""
    event_type = _plain_text(record.event_type, "event type")
    if not event_type:
        raise InvalidRecord("event type is missing")
    row["event_type"] = event_type
    occurred_at = parse_instant(record.occurred_at)
    problem = storable.instant_problem(occurred_at)
    if problem:
        raise InvalidRecord(f"timestamp {_shown(str(record.occurred_at))} {problem}")
    row["occurred_at"] = occurred_at
    payee = _id_text(record.payee_id, "payee id", numbers=True)
    if not payee:
        row["payee_id"] = None
        raise InvalidRecord("payee is missing")
    row["payee_id"] = payee
    row["partner_id"] = _id_text(record.partner_id, "partner id", numbers=True) or None
    has_amount = record.amount is not None and not (isinstance(record.amount, str) and not record.amount.strip())
    if has_amount:
        row["amount"] = _amount_text(record.amount, max_amount)
        row["currency"] = _currency(record.currency)
    elif record.currency is not None and record.currency != "":
        row["currency"] = _currency(record.currency)
    row["attributes"] = _attributes(record.attributes)


def _id_text(value: object, what: str, *, numbers: bool = False) -> str:
    """An id as normalised text ("" when absent); an integer is accepted where ``numbers``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return normalise_id(str.__str__(value), what)
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10**200:
            raise InvalidRecord(f"{what} is a number of more than 200 digits")
        return int.__repr__(value)
    raise InvalidRecord(f"{what} must be text, not {type(value).__name__}")


def _plain_text(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRecord(f"{what} must be text, not {type(value).__name__}")
    return str.__str__(value)


def _amount_text(value: object, max_amount: Decimal) -> str:
    """The amount as plain decimal text, checked: not negative, at most ``max_amount``, at most MAX_DECIMALS."""
    amount = parse_amount(value)
    if amount < 0:
        raise InvalidRecord(f"amount {_number(amount)} is negative")
    if amount > max_amount:
        raise InvalidRecord(f"amount {_number(amount)} exceeds the plausible maximum {max_amount}")
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked by parse_amount
    kept = list(digits)
    while exponent < -MAX_DECIMALS and len(kept) > 1 and kept[-1] == 0:  # zeros beyond the limit say nothing
        kept.pop()
        exponent += 1
    if exponent < -MAX_DECIMALS:
        raise InvalidRecord(f"amount {_number(amount)} has more than {MAX_DECIMALS} decimal places")
    return format(Decimal((sign, tuple(kept), exponent)), "f")


def _number(amount: Decimal) -> str:
    """An amount for a reason: plain text, or scientific and cut when it would be very long."""
    exponent = amount.as_tuple().exponent
    text = format(amount, "f") if isinstance(exponent, int) and abs(exponent) < 60 else str(amount)
    return text if len(text) <= 60 else f"{text[:24]}...({len(text)} characters)"


def _currency(value: object) -> str:
    if not isinstance(value, str) and value is not None:
        raise InvalidRecord(f"currency must be text, not {type(value).__name__}")
    return check_currency(value)


def _attribute_value(value: object) -> str:
    """Attribute values JSON has no type for: decimals, dates and times as canonical text; anything else (an
    object, a set, bytes) is refused, never written as its ``str()``."""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, Decimal | date):
        return str(value)
    raise TypeError(f"a value of type {type(value).__name__} is not JSON")


_ATTRIBUTES = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_attribute_value)
"""The canonical JSON of attributes (:func:`payhub.audit.canonical_json`'s form) for values that have one."""


def _c_attributes() -> Callable[[Any, int], Any] | None:
    """The C encoder that :data:`_ATTRIBUTES` makes on every call, made once, without its check for cycles (a cycle
    raises RecursionError, and the full validation, which uses :data:`_ATTRIBUTES`, gives the reason); None where
    the interpreter has none, or one that does not encode as :data:`_ATTRIBUTES` does."""
    try:
        make = getattr(json_encoder, "c_make_encoder", None)
        if make is None:
            return None
        made: Callable[[Any, int], Any] = make(None, _attribute_value, json_encoder.encode_basestring, None, ":", ",",
                                                True, False, True)
        sample = {"b": [1, "é\n"], "a": {"d": Decimal("1.50"), "c": None}}
        return made if "".join(made(sample, 0)) == _ATTRIBUTES.encode(sample) else None
    except Exception:  # noqa: BLE001 - no C encoder (another interpreter, another signature): the plain one serves
        return None


_C_ATTRIBUTES = _c_attributes()


def _attributes_json(value: dict[str, Any]) -> str:
    """``_ATTRIBUTES.encode(value)``, without building an encoder per call."""
    if _C_ATTRIBUTES is None:
        return _ATTRIBUTES.encode(value)
    return "".join(_C_ATTRIBUTES(value, 0))


def _attributes(value: object) -> str:
    if not isinstance(value, Mapping):
        raise InvalidRecord(f"attributes must be a mapping, not {type(value).__name__}")
    try:
        for name in value:
            if not isinstance(name, str):
                raise InvalidRecord(f"attribute names must be text, not {type(name).__name__}")
        text = _ATTRIBUTES.encode(dict(value))
    except InvalidRecord:
        raise
    except Exception as exc:  # noqa: BLE001 - unserialisable values, cycles, nesting too deep, a raising mapping
        raise InvalidRecord(f"attributes cannot be written as JSON: {_describe(exc)}") from None
    problem = storable.text_problem(text, storable.TEXT_LIMIT)
    if problem:
        raise InvalidRecord(f"attributes {problem}")
    return text


def _problem_text(problem: object) -> str | None:
    if problem is None or problem == "":
        return None
    return str.__str__(problem) if isinstance(problem, str) else f"the source flagged a problem: {_safe_repr(problem)}"


def _raw_text(record: SourceRecord) -> tuple[str, str | None]:
    """The record's raw text (its fields as JSON when it has none), and why ``raw`` is unusable, if it is."""
    if isinstance(record.raw, str):
        return str.__str__(record.raw), None
    try:
        text = canonical_json({name: getattr(record, name) for name in _FIELDS if name != "raw"})
    except Exception:  # noqa: BLE001 - a value whose str() raises
        text = canonical_json({name: _safe_repr(getattr(record, name)) for name in _FIELDS if name != "raw"})
    return text, None if record.raw is None else f"raw must be text, not {type(record.raw).__name__}"


def _display_row(source: str, record: SourceRecord, raw: str) -> dict[str, Any]:
    """A quarantined row holding what can be shown of ``record`` (its key is set by the caller)."""
    return {
        "key": "",
        "source": source,
        "object_type": _display(record.object_type) or "",
        "object_id": _display(record.object_id) or "",
        "transition": _display(record.transition) or "",
        "event_type": _display(record.event_type) or "",
        "occurred_at": _display_instant(record.occurred_at),
        "payee_id": _display(record.payee_id),
        "partner_id": _display(record.partner_id),
        "amount": None,
        "currency": None,
        "attributes": "{}",
        "raw": storable.sanitise(raw, storable.RAW_LIMIT),
        "reason": None,
        "status": EventStatus.QUARANTINED,
    }


def _display_instant(value: object) -> datetime | None:
    """``value`` if it is an instant the database can store, to show with a quarantined record; else None."""
    if isinstance(value, datetime) and storable.instant_problem(value) is None:
        return value.astimezone(UTC)
    return None


def _display(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return str.__str__(value).strip() or None
    return _safe_repr(value)


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its reason made storable, and, in a quarantined row, every other value too."""
    if row["reason"] is not None:
        row["reason"] = storable.sanitise(row["reason"], REASON_LIMIT)
    if row["status"] == EventStatus.QUARANTINED:
        for name, value in row.items():
            column = events.c[name]
            if storable.value_problem(column.type, value) is None:
                continue
            if name == "attributes":
                row[name] = "{}"
            elif isinstance(value, str):
                row[name] = storable.sanitise(value, storable.column_limit(events, name))
            else:
                row[name] = None
    return row


def _unreadable(record: object, source: str, reason: str) -> dict[str, Any]:
    """A quarantined row for something that is not a usable record at all."""
    raw = _safe_repr(record, limit=storable.RAW_LIMIT)
    if isinstance(record, SourceRecord):
        with contextlib.suppress(Exception):  # a field that cannot even be read: keep the repr
            raw = _raw_text(record)[0]
    return _minimal_row(source, raw, reason)


def _minimal_row(source: str, raw: str, reason: str) -> dict[str, Any]:
    """A quarantined row keyed by content, whose only values are the record's raw text and the reason, both as
    escaped ASCII: it stores whatever the record held."""
    row: dict[str, Any] = {
        "key": malformed_key(source, raw), "source": source, "object_type": "", "object_id": "", "transition": "",
        "event_type": "", "occurred_at": None, "payee_id": None, "partner_id": None, "amount": None,
        "currency": None, "attributes": "{}", "raw": _ascii(raw, storable.RAW_LIMIT),
        "reason": _ascii(reason, REASON_LIMIT), "status": EventStatus.QUARANTINED,
    }
    return row


def _ascii(text: str, limit: int) -> str:
    return storable.sanitise(text.encode("ascii", "backslashreplace").decode("ascii"), limit)


def _safe_repr(value: object, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a repr that raises is shown by its type
        text = f"<{type(value).__name__} whose repr() raised {type(exc).__name__}>"
    return storable.sanitise(text, limit)


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - str() of the exception raised too
        text = "(no message)"
    return f"{type(exc).__name__}: {_shown(text)}"


def _shown(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------------------------------------------- polling


def poll(rt: Runtime, name: str) -> int:
    """Fetch from source ``name`` until it has nothing more ready; return the number of new events."""
    return poll_batches(rt, name)[0]


def poll_batches(rt: Runtime, name: str, max_batches: int | None = None) -> tuple[int, bool]:
    """Fetch from source ``name`` until it has nothing more ready, or ``max_batches`` batches were stored.

    Returns (new events, whether the source said more records are ready now). When ``fetch`` raises an unexpected
    exception (a plugin bug that one record may trigger), it is called again from the same cursor with half the
    limit, down to one record, so the records before the one that makes it fail are stored; then the error is
    recorded with the cursor it failed at, and the next poll tries again.
    """
    source = rt.plugins.sources[name]
    section = rt.settings.sources[name]
    claim = _claim(rt, name)
    if claim is False:
        return 0, False
    cursor, lease = claim
    guard = rt.guard(f"source {name}", rt.settings.daemon.plugin_timeout_seconds)
    added, batches, more, limit = 0, 0, False, section.batch_size
    queued_more = False
    try:
        if webhooks.reads_objects(source):
            try:
                added, queued_more, go_on = _read_queued(rt, name, guard, lease)
            except leases.LeaseLost:
                log.warning("source %s: stale write dropped: this worker's lease on it expired or was taken over by "
                            "another worker; the objects read stay queued", name)
                return 0, False
            if not go_on:
                return added, False
        while not rt.stop_event.is_set() and (max_batches is None or batches < max_batches):
            try:
                records, next_cursor, more = _checked(guard.call(source.fetch, cursor, limit))
            except (TransientSourceError, PluginTimeout) as exc:
                log.warning("source %s: %s (will retry on the next poll)", name, exc)
                _record_error(rt, name, f"transient: {_describe(exc)}", failed=False)
                return added, False
            except (PermanentSourceError, PluginError) as exc:
                reason = _describe(exc)
                log.error("source %s failed: %s", name, reason)
                _record_error(rt, name, reason, failed=True)
                return added, False
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin bug, maybe set off by one record
                if limit > 1:
                    limit //= 2
                    log.warning("source %s raised %s at cursor %r; fetching again with a limit of %d", name,
                                _describe(exc), cursor, limit)
                    continue
                reason = f"{_describe(exc)} (fetching the record after cursor {_shown(repr(cursor))})"
                log.error("source %s: %s; the next poll tries again", name, reason)
                _record_error(rt, name, reason, failed=False)
                return added, False
            try:
                added += store(rt, name, records, next_cursor, previous=cursor, lease=lease)
            except leases.LeaseLost:  # stalled past the lease: another worker has the source and its cursor now
                log.warning("source %s: stale write dropped: this worker's lease on it expired or was taken over by "
                            "another worker; the fetched batch is not stored (the cursor reads it again)", name)
                return added, False
            # A source that says "more" but returned nothing would be polled forever: take it as done for now.
            cursor, more, batches = next_cursor, more and bool(records), batches + 1
            if not more:
                break
    finally:
        _release(rt, name, lease)
    return added, more or queued_more


def _read_queued(rt: Runtime, name: str, guard: Guard, lease: str) -> tuple[int, bool, bool]:
    """Read the objects that webhooks queued for source ``name``, at most ``batch_size`` of them, oldest first.

    Returns (new events, whether more ids wait, whether the poll goes on). The records read are stored, and their
    ids taken off the queue, in one transaction fenced by the poll's ``lease`` (LeaseLost when it no longer holds).
    Errors are those of a fetch: transient ones and timeouts stop the poll and keep the ids, permanent ones mark
    the source failed; anything else is narrowed down by reading the ids in halves, and an id that still raises
    alone is recorded as the source's error and goes to the back of the queue, for a later poll.
    """
    source = rt.plugins.sources[name]
    limit = rt.settings.sources[name].batch_size
    with rt.engine.connect() as conn:
        batch = webhooks.waiting(conn, name, limit + 1)
    added = 0

    def read(part: list[webhooks.Queued]) -> bool:
        nonlocal added
        if rt.stop_event.is_set():
            return False
        ids = [item.object_id for item in part]
        try:
            records = _object_records(guard.call(source.read_objects, ids, doing=f"read_objects of {len(ids)} ids"))
        except (TransientSourceError, PluginTimeout) as exc:
            log.warning("source %s: %s (reading queued objects; they stay queued)", name, exc)
            _record_error(rt, name, f"transient: {_describe(exc)}", failed=False)
            return False
        except (PermanentSourceError, PluginError) as exc:
            reason = _describe(exc)
            log.error("source %s failed: %s", name, reason)
            _record_error(rt, name, reason, failed=True)
            return False
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin bug, maybe set off by one object
            if len(part) > 1:
                log.warning("source %s raised %s reading %d queued objects; reading them in halves", name,
                            _describe(exc), len(part))
                half = len(part) // 2
                return read(part[:half]) and read(part[half:])
            reason = f"{_describe(exc)} (reading the queued object {_shown(repr(ids[0]))})"
            log.error("source %s: %s; it is read again on a later poll", name, reason)
            _record_error(rt, name, reason, failed=False)
            with rt.engine.begin() as conn:
                webhooks.requeue(conn, name, part[0])
            return True
        added += _store_objects(rt, name, part, records, lease)
        return True

    go_on = read(batch[:limit]) if batch else True
    return added, len(batch) > limit, go_on


def _object_records(result: object) -> list[Any]:
    """The records read_objects returned; ValueError when it returned something else."""
    if isinstance(result, str | bytes) or not isinstance(result, Sequence):
        raise ValueError(f"read_objects returned a {type(result).__name__}, not a sequence of records")
    return list(result)


def _store_objects(rt: Runtime, name: str, read: list[webhooks.Queued], records: list[Any], token: str) -> int:
    """Store the ``records`` read for the queued ids ``read`` and take those ids off the queue, in one transaction
    fenced by the lease ``token``; return how many events were new or corrected."""

    def forget(tx: Tx, counts: Counts) -> None:
        event_store.keep_source(tx.conn, name, token, rt.settings.database.lease_seconds)  # still reading
        webhooks.forget(tx.conn, read)
        tx.audit("source.objects_read", "source", name, {
            "objects": len(read), "records": len(records), "new": counts.new, "corrected": counts.corrected,
            "duplicates": len(records) - counts.new - counts.corrected, "quarantined": counts.quarantined,
        })

    counts = write_batch(rt, name, records, forget)
    return counts.new + counts.corrected


def _checked(result: object) -> tuple[list[Any], str | None, bool]:
    """The records, cursor and ``more`` of a fetch result; ValueError when the source returned something else."""
    if not isinstance(result, FetchResult):
        raise ValueError(f"fetch returned a {type(result).__name__}, not a FetchResult")
    if isinstance(result.records, str | bytes) or not isinstance(result.records, Sequence):
        raise ValueError(f"fetch returned records as a {type(result.records).__name__}, not a sequence")
    cursor = result.cursor
    if cursor is not None:
        if not isinstance(cursor, str):
            raise ValueError(f"fetch returned a cursor of type {type(cursor).__name__}, not text")
        problem = storable.text_problem(cursor, storable.TEXT_LIMIT)
        if problem:
            raise ValueError(f"fetch returned a cursor that cannot be stored: it {problem}")
    return list(result.records), cursor, bool(result.more)


# ---------------------------------------------------------------------------------------------------- storing


@dataclass
class Counts:
    """What writing a batch did: events new, quarantined events corrected, and new events quarantined."""

    new: int = 0
    corrected: int = 0
    quarantined: int = 0

    def add(self, other: Counts) -> None:
        self.new += other.new
        self.corrected += other.corrected
        self.quarantined += other.quarantined


Finish = Callable[[Tx, Counts], None]
"""Completes the transaction of a written batch before it commits (moves a cursor, forgets queued ids, remembers a
webhook delivery); raising rolls the whole batch back."""


def store(rt: Runtime, source: str, records: Sequence[Any], cursor: str | None, previous: str | None = None,
          lease: str | None = None) -> int:
    """Write one fetched batch and its cursor in one transaction; return how many events were new or corrected.

    The records are written as :func:`write_batch` says, and only then does the cursor move. With ``lease`` (the
    token of the poll's claim on the source), the batch is stored only while that lease holds: otherwise nothing
    is written and :class:`~payhub.store.leases.LeaseLost` is raised.
    """
    now = utcnow()

    def advance(tx: Tx, counts: Counts) -> None:
        _advance(rt, tx, source, len(records), counts, cursor, previous, now, lease)

    counts = write_batch(rt, source, records, advance, now)
    return counts.new + counts.corrected


def write_batch(rt: Runtime, source: str, records: Sequence[Any], finish: Finish,
                now: datetime | None = None) -> Counts:
    """Validate ``records`` of ``source`` and write them in one transaction that ``finish`` completes.

    A record whose key is already stored changes nothing, except that a quarantined event is replaced by a
    corrected version of its record (the CRM fixed it and sent it again). Within the batch the copies of a key
    count as if they had arrived one after the other: a later copy replaces an earlier quarantined one, and the
    first valid copy stays. An event dated after now plus ``ingest.future_tolerance_seconds`` is stored waiting
    (see :mod:`payhub.pipeline.waiting`). If the database refuses the batch for its data, the batch is split in
    halves in a new transaction until each refused record is found; that record is stored as a minimal
    quarantined event with the database's reason, the rest as usual, and ``finish`` runs again there. Database
    faults (locked, unreachable) and what ``finish`` raises propagate, and nothing is written.
    """
    now = now or utcnow()
    tolerance = timedelta(seconds=rt.settings.ingest.future_tolerance_seconds)
    rows = _one_per_key([validate(record, source, rt.settings.ingest.max_amount) for record in records])
    for row in rows:
        row["ingested_at"] = now
        waiting.hold_new(row, now + tolerance, tolerance)
    try:
        with rt.transaction() as tx:
            _forget_erased(tx, rows, set(rt.settings.compliance.erasure.event_attributes), source)
            counts = _write(tx, rows)
            finish(tx, counts)
    except Exception as exc:
        if not storable.is_data_error(exc) or not rows:
            raise
        log.warning("source %s: the database refused a batch of %d records (%s); finding the refused records",
                    source, len(rows), storable.describe_error(exc))
        with rt.transaction() as tx:
            counts = _write_isolating(tx, source, rows)
            finish(tx, counts)
    return counts


def _forget_erased(tx: Tx, rows: list[dict[str, Any]], personal: set[str], source: str) -> None:
    """Store new events of payees that ``payhub payees erase`` erased without the personal data erasure removes:
    ``raw`` is dropped and so are the attributes ``personal`` names (``[compliance.erasure] event_attributes``);
    the amount, dates and the rest stay, so that the rewards are calculated and held. Quarantined rows keep their
    raw text, the evidence of what was refused. One warning per erased payee of the batch."""
    ids = sorted({row["payee_id"] for row in rows if row["status"] != EventStatus.QUARANTINED and row["payee_id"]})
    erased = erased_since(tx.conn, ids) if ids else {}
    dropped: dict[str, int] = {}
    for row in rows:
        if row["status"] == EventStatus.QUARANTINED or row["payee_id"] not in erased:
            continue
        attributes = json.loads(row["attributes"] or "{}")
        row["attributes"] = _ATTRIBUTES.encode({k: v for k, v in attributes.items() if k not in personal})
        row["raw"] = None
        dropped[row["payee_id"]] = dropped.get(row["payee_id"], 0) + 1
    for payee_id, count in sorted(dropped.items()):
        log.warning("source %s: %d record(s) for payee %s, erased on %s: stored without their raw record and "
                    "personal attributes", source, count, payee_id, erased[payee_id].date().isoformat())


def _one_per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key, as if the copies had arrived one at a time: the first valid copy of a key stays; before
    it, each differing quarantined copy replaces the one before."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept = chosen.get(row["key"])
        if kept is None or (kept["status"] == EventStatus.QUARANTINED and kept["raw"] != row["raw"]):
            chosen[row["key"]] = row
    return list(chosen.values())


def _write(tx: Tx, rows: list[dict[str, Any]]) -> Counts:
    """Insert the new rows and correct quarantined events; audit each."""
    counts = Counts()
    inserted = event_store.insert_new(tx.conn, [_new_values(row) for row in rows])
    audit = tx.audit
    for event_id, key, status, reason in inserted:
        if status == EventStatus.INGESTED:
            audit("event.ingested", "event", event_id, {"key": key})
        elif status == EventStatus.QUARANTINED:
            counts.quarantined += 1
            audit("event.quarantined", "event", event_id, {"key": key, "reason": reason}, outcome="quarantined")
        else:
            audit("event.ingested", "event", event_id, {"key": key, "status": status, "reason": reason})
    counts.new = len(inserted)
    if len(inserted) < len(rows):
        new_keys = {key for _id, key, _status, _reason in inserted}
        counts.corrected = _replace_quarantined(tx, [row for row in rows if row["key"] not in new_keys])
    return counts


_new_values = itemgetter(*event_store.NEW_EVENT_COLUMNS)
"""The values of a row, in the order :func:`payhub.store.events.insert_new` takes them."""


def _write_isolating(tx: Tx, source: str, rows: list[dict[str, Any]]) -> Counts:
    """:func:`_write` in savepoints, halving the rows the database refuses down to single records, each of which
    is then stored as a minimal quarantined event."""
    counts = Counts()

    def attempt(chunk: list[dict[str, Any]]) -> None:
        part = Tx(tx.conn)
        try:
            with tx.conn.begin_nested():
                done = _write(part, chunk)
        except Exception as exc:
            if not storable.is_data_error(exc):
                raise
            if len(chunk) > 1:
                attempt(chunk[: len(chunk) // 2])
                attempt(chunk[len(chunk) // 2:])
                return
            _refused(chunk[0], exc)
            return
        tx.entries.extend(part.entries)
        counts.add(done)

    def _refused(row: dict[str, Any], exc: BaseException) -> None:
        reason = f"the database refused the record: {storable.describe_error(exc)}"
        log.warning("source %s: %s (key %r)", source, reason, row["key"])
        minimal = _minimal_row(source, row["raw"], reason)
        minimal["ingested_at"] = row["ingested_at"]
        part = Tx(tx.conn)
        with tx.conn.begin_nested():
            done = _write(part, [minimal])
        tx.entries.extend(part.entries)
        counts.add(done)

    attempt(rows)
    return counts


def _advance(rt: Runtime, tx: Tx, source: str, records: int, counts: Counts, cursor: str | None,
             previous: str | None, now: Any, token: str | None = None) -> None:
    """Move the source's cursor (and keep its lease) in the batch's transaction; audit the poll.

    Fenced by the lease ``token``: if it no longer holds, raise LeaseLost, which rolls the whole batch back."""
    seconds = rt.settings.database.lease_seconds  # still fetching: keep the lease
    if records or cursor != previous:
        event_store.keep_source(tx.conn, source, token, seconds, cursor=cursor, last_polled_at=now, reason=None)
        tx.audit("source.polled", "source", source, {
            "records": records, "new": counts.new, "corrected": counts.corrected,
            "duplicates": records - counts.new - counts.corrected, "quarantined": counts.quarantined,
            "cursor": cursor,
        })
    else:
        event_store.keep_source(tx.conn, source, token, seconds, last_polled_at=now, reason=None)


def _replace_quarantined(tx: Tx, rows: list[dict[str, Any]]) -> int:
    """Replace quarantined events by the differing records now received under their keys; return how many."""
    latest = {row["key"]: row for row in rows}
    if not latest:
        return 0
    stored = event_store.quarantined(tx.conn, list(latest))
    count = 0
    for event_id, key, raw in stored:
        row = latest[key]
        if row["raw"] == raw:
            continue
        values = {k: v for k, v in row.items() if k not in ("key", "ingested_at")}
        event_store.correct(tx.conn, event_id, values)
        outcome = "quarantined" if row["status"] == EventStatus.QUARANTINED else "ok"
        tx.audit("event.corrected", "event", event_id, {"key": key, "status": row["status"], "reason": row["reason"]},
                 outcome=outcome)
        count += 1
    return count


def _claim(rt: Runtime, name: str) -> tuple[str | None, str] | Literal[False]:
    """Lease the source for this worker; return its cursor and the lease token, or False if another worker or a
    failure holds it."""
    with rt.engine.begin() as conn:
        claimed = event_store.claim_source(conn, name, rt.worker_id, rt.settings.database.lease_seconds)
    return False if claimed is None else claimed


def _release(rt: Runtime, name: str, token: str) -> None:
    with rt.engine.begin() as conn:
        event_store.release_source(conn, name, token)


def _record_error(rt: Runtime, name: str, reason: str, *, failed: bool) -> None:
    """Record a source's error; a repeat of the error already recorded is not audited again."""
    with rt.transaction() as tx:
        reason = storable.sanitise(reason, REASON_LIMIT)
        previous = event_store.record_source_error(tx.conn, name, reason, failed, utcnow())
        if previous != reason or failed:
            tx.audit("source.failed" if failed else "source.error", "source", name, {"reason": reason},
                     outcome="failed" if failed else "error")


def reset_failed_sources(rt: Runtime) -> None:
    """At start-up, give sources that failed in an earlier run another chance (config may have been fixed).

    Replicas starting together reset each source once: the update applies only while the source is still failed.
    """
    with rt.transaction() as tx:
        for name in event_store.reset_failed_sources(tx.conn):
            tx.audit("source.reset", "source", name, {"reason": "daemon start"})
