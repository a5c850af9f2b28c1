"""The ``salesforce`` source: closed-won Opportunities, their reversals, and mapped custom objects, incrementally.

**Streams.** Each sync reads, in this order, the streams configured: ``Opportunity`` (closed won, not deleted,
with the admin's ``where``), ``Opportunity.reopened`` (deals whose stage history holds a won stage but that are no
longer won) and ``Opportunity.deleted`` (every deleted deal, through queryAll), then each custom object mapping
and, with ``deleted_event_type``, its deleted records. Every stream is read by SystemModstamp, then Id.

**Reversals ignore the filter.** A deal the ``where`` selected when it was won may no longer match it when it is
undone (its partner cleared in the same edit that reopens it, or earlier), so the reversal and deletion streams never
carry the admin's ``where``: they find every deal that was won, rewarded or not, without remembering which ones were
(a reversal of a deal never rewarded takes nothing back). Every deleted deal is a reversal, whatever its stage, so
that a deal reopened or lost and then deleted before a sync saw it is found without relying on its stage history.
A reversal whose ``payee_field`` was cleared takes the owner as payee rather than being quarantined. The filter's
semi-joins stay at the top level of WHERE, as Salesforce requires.

**Cursor.** Opaque JSON text::

    {"v": 1,
     "marks": {"Opportunity": "2026-05-01T09:55:00Z", ...},            # per stream, inclusive lower bound
     "sync": {"start": "2026-05-01T10:00:00Z", "stream": "Opportunity",  # only while a sync is in progress
              "after": ["2026-04-30T12:00:00Z", "006..."], "max": "2026-05-01T09:59:58Z"}}

A sync pins ``start`` (Salesforce's clock, from the Date header). ``after`` is the last record read with
SystemModstamp <= start - lookback: such a record cannot have changed since the query ran (a change would give it a
later SystemModstamp), so query order and position agree and resuming after it leaves no gap. Records past that line
are returned too, but do not move ``after``: a resumed or next sync reads them again and they dedup by key. When a
stream is done its mark becomes ``min(max SystemModstamp seen, start - lookback)`` (never past the sync start, never
backwards), and the next sync queries ``SystemModstamp >= mark``: records on the mark's second are read again (ties),
and so are late commits within the lookback window.

Query locators (nextRecordsUrl) are used only within one process while the core keeps fetching from the cursor this
source returned; they are never stored, since they expire. Any other cursor is resumed by a new query from ``after``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import httpx

from payhub.api import FetchResult, PermanentSourceError, Source, SourceRecord, TransientSourceError
from payhub_salesforce import soql
from payhub_salesforce.client import LocatorExpired, SalesforceClient
from payhub_salesforce.settings import (
    DELETED_STREAM,
    OPPORTUNITY_STREAM,
    REOPENED_STREAM,
    ObjectMapping,
    SalesforceSettings,
)

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
MAX_MARKER = 60  # transitions are stored in 100 characters: longer markers are replaced by a digest
MAX_EVENT_TYPE = 100
MAX_TRANSITION = 100
DEFERRED_ERROR_SECONDS = 60.0
PARTNER_RELATIONSHIP = "OpportunityPartnersFrom"


@dataclass
class Stream:
    """One incremental query and how its records become events."""

    name: str
    sobject: str
    fields: list[str]
    conditions: list[str]
    to_record: Callable[[dict[str, Any]], SourceRecord | None]


@dataclass
class _Sync:
    start: datetime
    stream: str
    after: tuple[datetime, str] | None = None
    max: datetime | None = None


@dataclass
class _State:
    marks: dict[str, datetime] = field(default_factory=dict)
    sync: _Sync | None = None

    @classmethod
    def parse(cls, cursor: str | None) -> _State:
        if not cursor:
            return cls()
        try:
            data = json.loads(cursor)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"cursor version {data.get('v')!r}")
            marks = {name: _ts(text) for name, text in data.get("marks", {}).items()}
            sync = data.get("sync")
            state = cls(marks)
            if sync:
                after = sync.get("after")
                state.sync = _Sync(_ts(sync["start"]), str(sync["stream"]),
                                   (_ts(after[0]), str(after[1])) if after else None,
                                   _ts(sync["max"]) if sync.get("max") else None)
            return state
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            log.warning("unreadable salesforce cursor (%s): reading again from the start (events dedup by key)", exc)
            return cls()

    def dump(self) -> str:
        data: dict[str, Any] = {"v": CURSOR_VERSION,
                                "marks": {name: soql.datetime_literal(m) for name, m in sorted(self.marks.items())}}
        if self.sync is not None:
            s = self.sync
            data["sync"] = {"start": soql.datetime_literal(s.start), "stream": s.stream,
                            "after": [soql.datetime_literal(s.after[0]), s.after[1]] if s.after else None,
                            "max": soql.datetime_literal(s.max) if s.max else None}
        return json.dumps(data, separators=(",", ":"))


def _ts(text: Any) -> datetime:
    moment = soql.parse_datetime(text)
    if moment is None:
        raise ValueError(f"bad timestamp {text!r}")
    return moment


@dataclass
class _Live:
    """The open query of the current stream in this process: buffered records and the next page's locator."""

    stream: str
    cursor: str | None = None  # the cursor text returned after this state
    started: bool = False
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    next_url: str | None = None
    done: bool = False


class SalesforceSource(Source):
    """Reads Salesforce through the REST API's queryAll; see the module docstring for the cursor."""

    settings_model = SalesforceSettings
    settings: SalesforceSettings

    def __init__(self, name: str, settings: SalesforceSettings, *, http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(name, settings)
        self.client = SalesforceClient(settings, http=http, clock=clock, sleep=sleep)
        self.mapper = Mapper(settings)
        self._lock = threading.Lock()
        self._live: _Live | None = None
        self._deferred: tuple[str, float, TransientSourceError | PermanentSourceError] | None = None
        self._won_stages: list[str] | None = settings.opportunity.won_stages
        self._streams: list[Stream] | None = None

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        with self._lock:
            return self._fetch(cursor, max(1, limit))

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------------------------------------- reading

    def _fetch(self, cursor: str | None, limit: int) -> FetchResult:
        deferred, self._deferred = self._deferred, None
        if deferred and deferred[0] == cursor and time.monotonic() - deferred[1] < DEFERRED_ERROR_SECONDS:
            raise deferred[2]
        streams = self.streams()
        names = [stream.name for stream in streams]
        state = _State.parse(cursor)
        live = self._live if self._live is not None and self._live.cursor == cursor and cursor else None
        self._live = None
        if state.sync is None or state.sync.stream not in names:
            state.sync, live = _Sync(self.client.now(), names[0]), None
        if live is not None and live.stream != state.sync.stream:
            live = None
        records: list[SourceRecord] = []
        deadline = time.monotonic() + self.settings.fetch_time_budget_seconds
        try:
            while state.sync is not None and len(records) < limit:
                stream = streams[names.index(state.sync.stream)]
                live = live or _Live(stream.name)
                if not self._drain(stream, live, state, records, limit, deadline):
                    break
                self._finish(state)
                index = names.index(stream.name) + 1
                state.sync = _Sync(state.sync.start, names[index]) if index < len(names) else None
                live = None
                if time.monotonic() > deadline:
                    break
        except (TransientSourceError, PermanentSourceError) as exc:
            if not records:
                raise
            # Keep what was read (its cursor is exact); the error is raised by the next fetch from that cursor.
            text = state.dump()
            self._deferred = (text, time.monotonic(), exc)
            log.warning("source %s: %s (returning the %d records read before it)", self.name, exc, len(records))
            return FetchResult(records, text, True)
        text = state.dump()
        if state.sync is not None and live is not None:
            live.cursor = text
            self._live = live
        return FetchResult(records, text, state.sync is not None)

    def _drain(self, stream: Stream, live: _Live, state: _State, records: list[SourceRecord], limit: int,
               deadline: float) -> bool:
        """Read ``stream`` into ``records`` until ``limit`` or the deadline; True when the stream is exhausted."""
        sync = state.sync
        assert sync is not None
        safe = sync.start - timedelta(seconds=self.settings.lookback_seconds)
        while len(records) < limit:
            if not live.pending:
                if live.done:
                    return True
                if records and time.monotonic() > deadline:
                    return False
                try:
                    if live.started and live.next_url:
                        page = self.client.more(live.next_url)
                    else:
                        page = self.client.query_all(self._query(stream, state))
                except LocatorExpired:
                    live.started, live.next_url = False, None  # query again from the position reached
                    continue
                live.started = True
                live.pending.extend(r for r in page.get("records") or [] if isinstance(r, dict))
                next_url = page.get("nextRecordsUrl")
                live.next_url = next_url if isinstance(next_url, str) and next_url else None
                live.done = bool(page.get("done", True)) or not live.next_url
                continue
            raw = live.pending.popleft()
            try:
                record = stream.to_record(raw)
            except Exception as exc:  # noqa: BLE001 - one record that breaks the mapping is quarantined alone
                record = _unreadable(stream.sobject, raw, exc)
            moment, record_id = soql.parse_datetime(raw.get("SystemModstamp")), raw.get("Id")
            if moment is not None and isinstance(record_id, str):
                sync.max = max(sync.max, moment) if sync.max else moment
                if moment <= safe and (sync.after is None or (moment, record_id) > sync.after):
                    sync.after = (moment, record_id)
            if record is not None:
                records.append(record)
        return not live.pending and live.done

    def _finish(self, state: _State) -> None:
        """The stream of ``state.sync`` is read to its end: move its mark up to min(max seen, start - lookback)."""
        sync = state.sync
        assert sync is not None
        if sync.max is None:
            return
        mark = min(sync.max, sync.start - timedelta(seconds=self.settings.lookback_seconds))
        old = state.marks.get(sync.stream)
        state.marks[sync.stream] = max(old, mark) if old else mark

    def _query(self, stream: Stream, state: _State) -> str:
        sync = state.sync
        assert sync is not None
        mark = state.marks.get(stream.name) or self.settings.modified_since
        return soql.incremental(stream.sobject, stream.fields, stream.conditions, mark, sync.after)

    # ---------------------------------------------------------------------------------------------- streams

    def streams(self) -> list[Stream]:
        """The configured streams, in reading order (looks the won stages up once, if needed)."""
        if self._streams is not None:
            return self._streams
        s, opp = self.settings, self.settings.opportunity
        streams: list[Stream] = []
        if opp.enabled:
            fields = self.mapper.opportunity_fields()
            streams.append(Stream(OPPORTUNITY_STREAM, "Opportunity", fields,
                                  ["IsWon = true", "IsClosed = true", "IsDeleted = false", *_where(opp.where)],
                                  self.mapper.opportunity))
            if opp.reversals:  # without the where: see "Reversals ignore the filter" above
                stages = self.won_stages()
                if stages:
                    history = ("Id IN (SELECT OpportunityId FROM OpportunityHistory WHERE StageName IN ("
                               + ", ".join(soql.quote(stage) for stage in stages) + "))")
                    streams.append(Stream(REOPENED_STREAM, "Opportunity", fields, ["IsWon = false", history],
                                          self.mapper.opportunity))
                else:
                    log.warning("source %s: no won opportunity stage found; reopened deals are not detected", self.name)
                streams.append(Stream(DELETED_STREAM, "Opportunity", fields, ["IsDeleted = true"],
                                      self.mapper.opportunity))
        for mapping in s.objects:
            fields = self.mapper.object_fields(mapping)
            to_record = partial(self.mapper.custom, mapping)
            streams.append(Stream(mapping.stream, mapping.object, fields,
                                  ["IsDeleted = false", *_where(mapping.where)], to_record))
            if mapping.deleted_stream:
                streams.append(Stream(mapping.deleted_stream, mapping.object, fields, ["IsDeleted = true"], to_record))
        self._streams = streams
        return streams

    def won_stages(self) -> list[str]:
        if self._won_stages is None:
            page = self.client.query("SELECT ApiName FROM OpportunityStage WHERE IsWon = true AND IsActive = true")
            self._won_stages = [str(r["ApiName"]) for r in page.get("records") or [] if r.get("ApiName")]
        return self._won_stages


# ---------------------------------------------------------------------------------------------------- mapping


class Mapper:
    """Turns Salesforce records into SourceRecords; never raises: a malformed record gets ``problem`` set."""

    def __init__(self, settings: SalesforceSettings) -> None:
        self.settings = settings

    def opportunity_fields(self) -> list[str]:
        opp = self.settings.opportunity
        fields = ["Id", "IsDeleted", "IsWon", "IsClosed", "StageName", "SystemModstamp", opp.won_transition_field,
                  opp.occurred_at_field, opp.amount_field, opp.payee_field, "OwnerId", *opp.attributes.values()]
        if self.settings.multi_currency:
            fields.append("CurrencyIsoCode")
        fields = soql.unique(fields)
        if opp.partner == "field":
            fields = soql.unique([*fields, opp.partner_field])
        else:
            fields.append(f"(SELECT AccountToId FROM {PARTNER_RELATIONSHIP} WHERE IsPrimary = true)")
        return fields

    def object_fields(self, m: ObjectMapping) -> list[str]:
        fields = ["Id", "IsDeleted", "SystemModstamp", m.event_type_field, m.transition_field, m.occurred_at_field,
                  m.payee_field, m.partner_field, m.amount_field, m.currency_field, *m.attributes.values()]
        if m.amount_field and not m.currency_field and self.settings.multi_currency:
            fields.append("CurrencyIsoCode")
        return soql.unique(f for f in fields if f)

    # --- Opportunity

    def opportunity(self, raw: dict[str, Any]) -> SourceRecord | None:
        opp = self.settings.opportunity
        object_id = _text(raw.get("Id"))
        modstamp = soql.parse_datetime(raw.get("SystemModstamp"))
        partner = _text(get(raw, opp.partner_field)) if opp.partner == "field" else _primary_partner(raw)
        attributes = self._attributes(opp.attributes, raw)
        if "stage" not in attributes and raw.get("StageName") is not None:
            attributes["stage"] = raw.get("StageName")
        common: dict[str, Any] = {"object_type": "Opportunity", "object_id": object_id or "",
                                  "payee_id": _text(get(raw, opp.payee_field)), "partner_id": partner,
                                  "raw": _raw(raw)}
        deleted, won = raw.get("IsDeleted") is True, raw.get("IsWon") is True and raw.get("IsClosed") is True
        if deleted or not won:
            if not opp.reversals:
                return None
            attributes["reason"] = "deleted" if deleted else ("lost" if raw.get("IsClosed") is True else "reopened")
            # A reversal pays nobody (the clawback takes back what the deal's rewards granted, whoever got them), so
            # a payee field cleared with the reopening must not get it quarantined: the owner stands in.
            common["payee_id"] = common["payee_id"] or _text(raw.get("OwnerId"))
            amount = get(raw, opp.amount_field)
            if amount is not None:
                attributes["amount"] = _plain(amount)
            return self._reversal(common, opp.reversal_event_type, modstamp, raw, attributes)
        problems: list[str] = []
        marker = _marker(get(raw, opp.won_transition_field))
        if marker is None:
            problems.append(f"{opp.won_transition_field} is missing on a closed-won opportunity")
        occurred = _when(get(raw, opp.occurred_at_field), opp.occurred_at_field, problems)
        amount = get(raw, opp.amount_field)
        if amount is None or amount == "":
            problems.append(f"{opp.amount_field} is missing on a closed-won opportunity")
        currency = self._currency(raw, None, problems) if amount not in (None, "") else None
        attributes["system_modstamp"] = raw.get("SystemModstamp")
        return SourceRecord(event_type=opp.event_type, transition=f"won:{marker or ''}", occurred_at=occurred,
                            amount=_plain(amount) if amount not in (None, "") else None, currency=currency,
                            attributes=attributes, problem=_problem(object_id, problems), **common)

    # --- custom objects

    def custom(self, m: ObjectMapping, raw: dict[str, Any]) -> SourceRecord | None:
        object_id = _text(raw.get("Id"))
        modstamp = soql.parse_datetime(raw.get("SystemModstamp"))
        attributes = self._attributes(m.attributes, raw)
        common: dict[str, Any] = {"object_type": m.object, "object_id": object_id or "",
                                  "payee_id": _text(get(raw, m.payee_field)),
                                  "partner_id": _text(get(raw, m.partner_field)) if m.partner_field else None,
                                  "raw": _raw(raw)}
        if raw.get("IsDeleted") is True:
            if m.deleted_event_type is None:
                return None
            attributes["reason"] = "deleted"
            return self._reversal(common, m.deleted_event_type, modstamp, raw, attributes)
        problems: list[str] = []
        if m.event_type is not None:
            event_type: str | None = m.event_type
        else:
            value = _text(get(raw, m.event_type_field or ""))
            if value is None:
                event_type = None
                problems.append(f"{m.event_type_field} is empty")
            elif m.event_type_values:
                event_type = m.event_type_values.get(value)
                if event_type is None:
                    return None  # a value that is no event
            else:
                event_type = value
        if event_type is not None and len(event_type) > MAX_EVENT_TYPE:
            problems.append(f"event type {event_type[:40]!r}... is longer than {MAX_EVENT_TYPE} characters")
            event_type = event_type[:MAX_EVENT_TYPE]
        transition = event_type or ""
        if m.transition_field:
            marker = _marker(get(raw, m.transition_field))
            if marker is None:
                problems.append(f"{m.transition_field} is empty")
            transition += f":{marker or ''}"
        if len(transition) > MAX_TRANSITION:  # stored in 100 characters; keep it stable and unique
            transition = transition[:50] + ":sha256-" + hashlib.sha256(transition.encode()).hexdigest()[:32]
        occurred = _when(get(raw, m.occurred_at_field), m.occurred_at_field, problems)
        amount = get(raw, m.amount_field) if m.amount_field else None
        currency = self._currency(raw, m.currency_field, problems) if amount not in (None, "") else None
        return SourceRecord(event_type=event_type or "", transition=transition, occurred_at=occurred,
                            amount=_plain(amount) if amount not in (None, "") else None, currency=currency,
                            attributes=attributes, problem=_problem(object_id, problems), **common)

    # --- shared

    def _reversal(self, common: dict[str, Any], event_type: str, modstamp: datetime | None, raw: dict[str, Any],
                  attributes: dict[str, Any]) -> SourceRecord:
        problem = None if modstamp else f"SystemModstamp {raw.get('SystemModstamp')!r} is not a date-time"
        stamp = soql.datetime_literal(modstamp) if modstamp else str(raw.get("SystemModstamp"))
        attributes["system_modstamp"] = raw.get("SystemModstamp")
        return SourceRecord(event_type=event_type, transition=f"reversed:{stamp}", occurred_at=modstamp,
                            attributes=attributes, problem=_problem(common["object_id"], [problem] if problem else []),
                            **common)

    def _currency(self, raw: dict[str, Any], currency_field: str | None, problems: list[str]) -> str | None:
        if currency_field:
            value = _text(get(raw, currency_field))
            if value is None:
                problems.append(f"{currency_field} is empty")
            return value
        if self.settings.multi_currency:
            value = _text(raw.get("CurrencyIsoCode"))
            if value is None:
                problems.append("CurrencyIsoCode is empty in a multi-currency org")
            return value
        return self.settings.org_currency

    @staticmethod
    def _attributes(mapping: Mapping[str, str], raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, path in mapping.items():
            value = get(raw, path)
            if value is not None:
                out[name] = _plain(value) if isinstance(value, Decimal) else value
        return out


def _where(condition: str) -> list[str]:
    """The admin's ``where`` as one parenthesised condition (none when empty)."""
    return [f"({condition})"] if condition.strip() else []


def get(raw: Mapping[str, Any], path: str) -> Any:
    """A field of a record; ``Account.Name`` follows a relationship. None when absent or null."""
    value: Any = raw
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
        if value is None:
            return None
    return value


def _primary_partner(raw: Mapping[str, Any]) -> str | None:
    related = raw.get(PARTNER_RELATIONSHIP)
    rows = related.get("records") if isinstance(related, Mapping) else None
    if isinstance(rows, list) and rows and isinstance(rows[0], Mapping):
        return _text(rows[0].get("AccountToId"))
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _plain(value: Any) -> str:
    """Amount text without exponent (``1.2E+4`` -> ``12000``); other values as they are."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _marker(value: Any) -> str | None:
    """A value as part of a transition: date-times normalised to the second in UTC; long text by its digest."""
    if value is None or value == "":
        return None
    moment = soql.parse_datetime(value)
    text = soql.datetime_literal(moment) if moment else _plain(value)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return text if len(text) <= MAX_MARKER else "sha256-" + digest


def _when(value: Any, field_name: str, problems: list[str]) -> datetime | str | None:
    """A date (``2026-05-01``, kept as text: midnight UTC) or a date-time; a problem when neither."""
    if value is None or value == "":
        problems.append(f"{field_name} is missing")
        return None
    if soql.parse_date(value) is not None:
        return str(value)
    moment = soql.parse_datetime(value)
    if moment is None:
        problems.append(f"{field_name} {value!r} is not a date or date-time")
        return None
    return moment


def _problem(object_id: str | None, problems: list[str]) -> str | None:
    if not object_id:
        problems = ["the record has no Id", *problems]
    return "; ".join(problems) or None


def _raw(raw: Mapping[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), default=_plain)


def _unreadable(sobject: str, raw: Mapping[str, Any], exc: Exception) -> SourceRecord:
    """A record the mapping could not read, handed to the core to quarantine with the reason."""
    try:
        text = _raw(raw)
    except Exception:  # noqa: BLE001 - values that cannot even be written as JSON
        text = f"<{sobject} record {raw.get('Id')!r} that cannot be written as JSON>"
    record_id = raw.get("Id")
    return SourceRecord.quarantined(f"the {sobject} record cannot be read: {type(exc).__name__}: {exc}", text,
                                    object_type=sobject, object_id=record_id if isinstance(record_id, str) else "")


__all__ = ["Mapper", "SalesforceSource", "Stream"]
