"""The ``hubspot`` source: closed-won deals and their reversals, read incrementally from HubSpot CRM v3.

How a fetch reads (see docs/sources/hubspot.md for the admin's view):

1. **Windows.** Deals are found with the search endpoint in windows of ``hs_lastmodifieddate``:
   ``[start, end)`` with ``end`` fixed when the window opens at the sync's start minus ``index_lag_seconds``. Inside
   a window, pages are sorted by ``hs_object_id`` ascending and each page asks for ``hs_object_id > last id``
   (keyset paging): no query ever pages past HubSpot's 10,000-result cap, ties on the modification date do not
   matter, and a deal modified during the sync leaves the window (its new date is past ``end``) to be read by the
   next one. A window ends when a page has no ``paging.next``, never because a page is short. The next window
   starts ``lookback_seconds`` before this one ended, so updates indexed late are still seen.
2. **Archive sweep.** Every ``archived_sweep_seconds``, archived (deleted) deals are listed for reversals.

Each deal found is read by id (batch read) with the history of ``dealstage``, which gives every time it entered or
left a closed-won stage. Closed-won is per pipeline, from the pipelines API. Each entry into closed-won is one
``won:<epoch ms>`` event; each exit is one ``reopened:<ms>`` or ``lost:<ms>`` reversal; an archived deal that was
won is one ``deleted:<archivedAt ms>`` reversal. Keys are stable, so re-reading a deal adds nothing, and a deal won
again after a reversal has a new key and is rewarded again.

Webhooks: :meth:`HubSpotSource.webhook` checks a delivery and names its deals (:mod:`payhub_hubspot.webhooks`);
payhub queues the ids in its database and hands them to :meth:`HubSpotSource.read_objects`, which reads those deals
the same way, by id.

The cursor is JSON: ``{"v": 1, "start": ms, "end": ms | null, "after": "<last deal id>" | null, "sweep": ...}``,
with ``"nb": ms`` while HubSpot asked (a long ``Retry-After``) not to be called before that instant: the polls until
then make no request, also after a restart. The ``"wh"`` key of cursors stored by earlier versions (their in-memory
webhook queue) is ignored.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from payhub.api import (
    FetchResult,
    PermanentSourceError,
    Source,
    SourceRecord,
    TransientSourceError,
    WebhookRequest,
    WebhookResult,
)
from payhub_hubspot.client import RETRY_AFTER_CAP_SECONDS, HubSpotClient, RateLimited
from payhub_hubspot.settings import HubSpotSettings
from payhub_hubspot.webhooks import as_object_id, receive

log = logging.getLogger(__name__)

SEARCH_PATH = "/crm/v3/objects/deals/search"
BATCH_READ_PATH = "/crm/v3/objects/deals/batch/read"
LIST_PATH = "/crm/v3/objects/deals"
PIPELINES_PATH = "/crm/v3/pipelines/deals"
ASSOCIATIONS_PATH = "/crm/v4/associations/deals/companies/batch/read"

PROPERTIES = ("dealname", "amount", "deal_currency_code", "closedate", "dealstage", "pipeline", "hubspot_owner_id",
              "createdate", "hs_lastmodifieddate", "hs_object_id")
"""The deal properties every read asks for (plus ``extra_properties``)."""
HISTORY = ("dealstage", "hubspot_owner_id")
"""The deal properties read with their history: the stage (transitions) and the owner (the payee of a reversal)."""

PRIMARY_COMPANY_TYPE_ID = 5  # HUBSPOT_DEFINED deal -> company "Primary"
CURSOR_VERSION = 1
RETRY_GRACE_SECONDS = 60.0
"""Retries inside a fetch never sleep past its time budget plus this (then the poll ends, transiently)."""
_DECIMAL = re.compile(r"^[+-]?\d+(\.\d+)?$")


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def parse_time(value: Any) -> datetime | None:
    """A HubSpot date-time (ISO 8601, or epoch milliseconds) as aware UTC; None if empty or unreadable."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    try:
        if text.isdigit():
            return from_ms(int(text))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError, OSError):  # unreadable, or off the calendar once moved to UTC
        return None


# ------------------------------------------------------------------------------------------------ cursor


@dataclass
class Cursor:
    """Where the sync is. ``end`` is set while a window is open; ``after`` is the keyset position inside it."""

    start: int
    end: int | None = None
    after: str | None = None
    sweep: dict[str, Any] | None = None  # {"after": token | None, "skip": n, "since": ms, "started": ms}
    sweep_since: int = 0
    sweep_next: int = 0
    nb: int | None = None  # no request to HubSpot before this instant (epoch ms): it asked to wait

    @classmethod
    def decode(cls, text: str | None, start_ms: int) -> Cursor:
        if not text:
            return cls(start=start_ms, sweep_since=start_ms)
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
                raise ValueError("not a hubspot cursor")
            return cls(start=int(data["start"]), end=None if data.get("end") is None else int(data["end"]),
                       after=None if data.get("after") is None else str(data["after"]), sweep=data.get("sweep"),
                       sweep_since=int(data.get("sweep_since", start_ms)), sweep_next=int(data.get("sweep_next", 0)),
                       nb=None if data.get("nb") is None else int(data["nb"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentSourceError(f"the stored cursor {text[:80]!r} is not a hubspot cursor ({exc})") from None

    def encode(self) -> str:
        data: dict[str, Any] = {"v": CURSOR_VERSION, "start": self.start, "end": self.end, "after": self.after,
                                "sweep": self.sweep, "sweep_since": self.sweep_since, "sweep_next": self.sweep_next}
        if self.nb is not None:
            data["nb"] = self.nb
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------ stages


@dataclass(frozen=True, slots=True)
class Stage:
    id: str
    pipeline: str
    label: str
    kind: str  # "won", "lost" or "open"


def stage_kind(metadata: Any) -> str:
    """``won`` for isClosed "true" with probability 1.0, ``lost`` for other closed stages, else ``open``."""
    metadata = metadata if isinstance(metadata, dict) else {}
    closed = str(metadata.get("isClosed", "false")).strip().lower() == "true"
    try:
        probability = Decimal(str(metadata.get("probability", "0")).strip())
    except InvalidOperation:
        probability = Decimal(0)
    if closed:
        return "won" if probability == 1 else "lost"
    return "open"


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a deal: ``won``, ``reopened``, ``lost`` or ``deleted`` at ``ms`` (epoch milliseconds)."""

    change: str
    ms: int
    stage: str
    from_stage: str | None = None

    @property
    def name(self) -> str:
        return f"{self.change}:{self.ms}"


def transitions(history: Sequence[tuple[int, str]], kind_of: Callable[[str], str | None],
                in_scope: Callable[[str], bool] = lambda stage: True) -> list[Transition]:
    """The won / reopened / lost transitions in a deal's ``dealstage`` history (oldest first).

    A stay in closed-won runs from entering a won stage to leaving for an open (``reopened``) or lost stage; moves
    between two closed-won stages (another pipeline) are not transitions. A stay counts, its won and its reversal
    together, when one of its won stages is ``in_scope`` (a pipeline the source reads): so a deal won in scope and
    then moved to a stage of another pipeline is still reversed. A list that ends with ``won`` means the deal is in
    closed-won now. Stages that are not known any more (``kind_of`` answers None) are skipped.
    """
    found: list[Transition] = []
    stay: list[Transition] = []
    scoped = False
    won_stage: str | None = None
    for ms, stage in history:
        kind = kind_of(stage)
        if kind is None:
            continue
        if kind == "won":
            if won_stage is None:
                stay, scoped = [Transition("won", ms, stage)], False
            scoped = scoped or in_scope(stage)
            won_stage = stage
        elif won_stage is not None:
            stay.append(Transition("reopened" if kind == "open" else "lost", ms, stage, won_stage))
            if scoped:
                found += stay
            won_stage = None
    if won_stage is not None and scoped:
        found += stay
    return found


def property_history(deal: dict[str, Any], name: str) -> list[tuple[int, str]] | None:
    """The non-empty values of a property's history as (ms, value), oldest first; None when the answer has none."""
    histories = deal.get("propertiesWithHistory")
    entries = histories.get(name) if isinstance(histories, dict) else None
    if not entries or not isinstance(entries, list):
        return None
    out: list[tuple[int, str]] = []
    for entry in reversed(entries):  # HubSpot lists the newest first; the stable sort keeps same-ms order
        moment = parse_time(entry.get("timestamp")) if isinstance(entry, dict) else None
        if moment is not None and entry.get("value"):
            out.append((to_ms(moment), str(entry["value"])))
    out.sort(key=lambda item: item[0])
    return out


def pick_partner(associations: Sequence[dict[str, Any]], preference: str) -> tuple[str | None, list[str]]:
    """The partner company among a deal's associated companies, and all their ids."""
    companies: dict[str, list[dict[str, Any]]] = {}
    for item in associations:
        company = str(item.get("toObjectId", ""))
        if company:
            companies.setdefault(company, []).extend(
                t for t in item.get("associationTypes") or [] if isinstance(t, dict))
    ids = sorted(companies, key=lambda c: (len(c), c))
    wanted = preference.strip().lower()
    if wanted == "primary":
        primary = [c for c, types in companies.items()
                   if any(t.get("typeId") == PRIMARY_COMPANY_TYPE_ID or str(t.get("label") or "").lower() == "primary"
                          for t in types)]
        if len(primary) == 1:
            return primary[0], ids
        return (ids[0] if len(ids) == 1 else None), ids
    matching = [c for c, types in companies.items()
                if any(str(t.get("label") or "").lower() == wanted or str(t.get("typeId")) == wanted for t in types)]
    return (matching[0] if len(matching) == 1 else None), ids


# ------------------------------------------------------------------------------------------------ the source


@dataclass
class _Batch:
    """Records made from some deals, grouped per deal in id order."""

    per_deal: list[tuple[str, list[SourceRecord]]] = field(default_factory=list)


class HubSpotSource(Source):
    """Closed-won deals (and reversals) of one HubSpot account. See the module docstring."""

    settings_model = HubSpotSettings
    settings: HubSpotSettings

    def __init__(self, name: str, settings: HubSpotSettings, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None,
                 wall_clock: Callable[[], float] | None = None) -> None:
        super().__init__(name, settings)
        self.client = HubSpotClient(settings, transport=transport, sleep=sleep or time.sleep,
                                    clock=clock or time.monotonic, wall_clock=lambda: self.wall_clock())
        self.wall_clock = wall_clock or time.time
        self.start_ms = to_ms(settings.start_date)
        self.properties = list(dict.fromkeys([*PROPERTIES, *settings.extra_properties]))
        self._stages: dict[str, Stage] = {}
        self._stages_at: float | None = None
        self._not_before: int | None = None  # the cursor's "nb", for read_objects (which has no cursor)
        self._wait_logged: int | None = None  # the "not before" instant already logged

    # ------------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------------------------------- fetch

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        state = Cursor.decode(cursor, self.start_ms)
        known = [ms for ms in (state.nb, self._not_before) if ms is not None]  # read_objects may have been told
        state.nb = self._hold(max(known) if known else None)
        if state.nb is not None:
            return FetchResult([], state.encode(), False)
        limit = max(1, limit)
        deadline = self._start_budget()
        records: list[SourceRecord] = []

        opened = False
        while len(records) < limit and self.client.clock() < deadline:
            before = state.encode()
            try:
                if state.end is not None:
                    records += self._window_page(state, limit - len(records))
                    continue
                if not opened:
                    opened = True
                    end = int(self.wall_clock() * 1000 - self.settings.index_lag_seconds * 1000)
                    if end > state.start:
                        state.end, state.after = end, None
                        continue
                if self.settings.archived_sweep_seconds > 0 and (
                        state.sweep is not None or self.wall_clock() * 1000 >= state.sweep_next):
                    records += self._sweep_page(state, limit - len(records))
                    if state.sweep is None:  # one sweep per fetch at most
                        break
                    continue
                break
            except RateLimited as exc:
                return self._wait_until(Cursor.decode(before, self.start_ms), exc, records)
            except TransientSourceError as exc:
                if not records:
                    raise
                # Keep what was read: the cursor goes back to just before the step that failed, and the next
                # poll carries on from there.
                log.warning("source %s: %s; storing the %d records read so far", self.name, exc, len(records))
                return FetchResult(records, Cursor.decode(before, self.start_ms).encode(), False)
        more = state.end is not None or state.sweep is not None
        return FetchResult(records, state.encode(), more)

    def _start_budget(self) -> float:
        """Start a call's time budget: the instant (``client.clock``) after which no new page is read; retries never
        sleep past it plus ``RETRY_GRACE_SECONDS``."""
        deadline = self.client.clock() + self.settings.fetch_time_budget_seconds
        self.client.deadline = deadline + RETRY_GRACE_SECONDS
        return deadline

    def _hold(self, not_before: int | None) -> int | None:
        """The instant (epoch ms) before which HubSpot must not be called, from ``not_before`` (a long
        ``Retry-After``, as a cursor or an earlier call kept it): None once it has passed.

        An instant further ahead than ``RETRY_AFTER_CAP_SECONDS`` (a wall clock set back, an edited cursor) is
        brought back to that bound. Logged once per instant (and once more after a restart); remembered for
        :meth:`read_objects`, which has no cursor.
        """
        if not_before is not None:
            now = int(self.wall_clock() * 1000)
            if now >= not_before:
                not_before = None
            else:
                not_before = min(not_before, now + int(RETRY_AFTER_CAP_SECONDS * 1000))
                if self._wait_logged != not_before:
                    self._wait_logged = not_before
                    log.info("source %s: HubSpot asked not to be called before %s; this poll makes no request",
                             self.name, from_ms(not_before).isoformat())
        self._not_before = not_before
        return not_before

    def _told_to_wait(self, exc: RateLimited) -> int:
        """Remember a long ``Retry-After``: no call to HubSpot before ``exc.until``; return it in epoch ms."""
        self._not_before = self._wait_logged = int(exc.until * 1000)
        return self._not_before

    def _wait_until(self, state: Cursor, exc: RateLimited, records: list[SourceRecord]) -> FetchResult:
        """End the fetch after a long ``Retry-After``: the records read so far, and a cursor that makes the polls
        before ``exc.until`` skip HubSpot."""
        state.nb = self._told_to_wait(exc)
        log.warning("source %s: %s: no request to HubSpot before %s (the polls until then make none)%s", self.name,
                    exc, from_ms(state.nb).isoformat(),
                    f"; storing the {len(records)} records read so far" if records else "")
        return FetchResult(records, state.encode(), False)

    # ------------------------------------------------------------------------------------------- webhooks

    def webhook(self, request: WebhookRequest) -> WebhookResult:
        """Check a delivery's v3 signature and name the deals of its events (:func:`payhub_hubspot.webhooks.receive`).

        Reads only the settings and the wall clock, so it is safe in the HTTP server's threads next to ``fetch``.
        """
        return receive(self.settings, request, now_ms=int(self.wall_clock() * 1000))

    def read_objects(self, object_ids: Sequence[str]) -> Sequence[SourceRecord]:
        """The records of the deals ``object_ids`` (named by webhooks), read by id as ``fetch`` reads the deals its
        windows find: batch reads with the stage history, deleted deals from the archive (their reversals), at most
        ``read_chunk_size`` per request. Ids that are not HubSpot ids, and deals that no longer exist, give nothing.

        Raises TransientSourceError (the ids stay queued) while HubSpot asked not to be called (a long
        ``Retry-After`` seen by this call, by ``fetch`` or kept in the cursor), and for failures as ``fetch`` does.
        """
        ids = sorted({i for i in map(as_object_id, object_ids) if i is not None}, key=int)
        not_before = self._hold(self._not_before)
        if not_before is not None:
            raise TransientSourceError(f"HubSpot asked not to be called before {from_ms(not_before).isoformat()}; "
                                       f"the {len(ids)} deals named by webhooks are read after it")
        self._start_budget()
        records: list[SourceRecord] = []
        try:
            for chunk in _chunks(ids, self.settings.read_chunk_size):
                for _, found in self._read_deals(chunk).per_deal:
                    records += found
        except RateLimited as exc:
            log.warning("source %s: %s: no request to HubSpot before %s", self.name, exc,
                        from_ms(self._told_to_wait(exc)).isoformat())
            raise
        return records

    # ------------------------------------------------------------------------------------------- windows

    def search_body(self, state: Cursor) -> dict[str, Any]:
        """The search request of the next page of the open window."""
        assert state.end is not None
        filters: list[dict[str, Any]] = [
            {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(state.start)},
            {"propertyName": "hs_lastmodifieddate", "operator": "LT", "value": str(state.end)},
        ]
        if state.after is not None:
            filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": state.after})
        # No pipeline filter: a deal won in one of ``pipelines`` and moved to another pipeline must still be read,
        # to be reversed. ``pipelines`` is applied to the stage history instead (see ``transitions``).
        return {"filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": ["hs_object_id", "hs_lastmodifieddate"], "limit": self.settings.page_size}

    def _window_page(self, state: Cursor, room: int) -> list[SourceRecord]:
        """Read one search page of the open window; advance ``state``; close the window after its last page."""
        answer = self.client.request("POST", SEARCH_PATH, json=self.search_body(state), search=True)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise TransientSourceError("HubSpot search answered without a results list")
        ids = sorted({str(r.get("id")) for r in results if isinstance(r, dict) and str(r.get("id", "")).isdigit()},
                     key=int)
        paging = answer.get("paging") or {}
        has_next = isinstance(paging, dict) and bool(paging.get("next"))
        records: list[SourceRecord] = []
        for chunk in _chunks(ids, self.settings.read_chunk_size):
            for deal_id, recs in self._read_deals(chunk).per_deal:
                if records and len(records) + len(recs) > room:
                    return records  # state.after is the last deal handled; the next page starts after it
                records += recs
                state.after = deal_id
        if not ids or not has_next:
            assert state.end is not None
            log.debug("source %s: window [%s, %s) done", self.name, state.start, state.end)
            state.start = max(self.start_ms, state.end - int(self.settings.lookback_seconds * 1000))
            state.end, state.after = None, None
        return records

    # ------------------------------------------------------------------------------------------- archive

    def _sweep_page(self, state: Cursor, room: int) -> list[SourceRecord]:
        """Read one page of archived deals; those deleted since the last sweep are read again with their history,
        for the reversals they had before deletion and for their deletion if they were won then."""
        now = int(self.wall_clock() * 1000)
        if state.sweep is None:
            state.sweep = {"after": None, "skip": 0, "since": state.sweep_since, "started": now}
        sweep = state.sweep
        params: dict[str, Any] = {"archived": "true", "limit": 100, "properties": ",".join(self.properties)}
        if sweep.get("after"):
            params["after"] = sweep["after"]
        answer = self.client.request("GET", LIST_PATH, params=params)
        results = [r for r in (answer.get("results") or []) if isinstance(r, dict)]
        since = max(int(sweep.get("since") or 0), self.start_ms)
        skip = int(sweep.get("skip") or 0)
        deleted = [(index, deal) for index, deal in enumerate(results) if index >= skip
                   and (moment := parse_time(deal.get("archivedAt"))) is not None and to_ms(moment) >= since]
        wanted = [i for _, deal in deleted if (i := str(deal.get("id", ""))).isascii() and i.isdigit()]
        read = {str(d["id"]): d for chunk in _chunks(wanted, self.settings.read_chunk_size)
                for d in self._batch_read(chunk, archived=True)}
        records: list[SourceRecord] = []
        for index, deal in deleted:
            deal_id = str(deal.get("id"))
            try:
                recs = self._archived_records(read.get(deal_id, deal), since)
            except Exception as exc:  # noqa: BLE001 - one malformed deal is quarantined, the others go on
                recs = [self._unreadable(deal_id, deal, exc)]
            if records and len(records) + len(recs) > room:
                sweep["skip"] = index
                return records
            records += recs
        next_after = ((answer.get("paging") or {}).get("next") or {}).get("after")
        if next_after:
            sweep["after"], sweep["skip"] = str(next_after), 0
        else:
            started = int(sweep.get("started") or now)
            state.sweep_since = started - int(self.settings.lookback_seconds * 1000)
            state.sweep_next = started + int(self.settings.archived_sweep_seconds * 1000)
            state.sweep = None
        return records

    # ------------------------------------------------------------------------------------------- reads

    def stages(self, refresh: bool = False) -> dict[str, Stage]:
        """Deal stages by id, from the pipelines API (cached for ``pipelines_refresh_seconds``)."""
        now = self.client.clock()
        if refresh or self._stages_at is None or now - self._stages_at >= self.settings.pipelines_refresh_seconds:
            answer = self.client.request("GET", PIPELINES_PATH)
            stages: dict[str, Stage] = {}
            for pipeline in answer.get("results") or []:
                for stage in (pipeline.get("stages") if isinstance(pipeline, dict) else None) or []:
                    if not isinstance(stage, dict) or stage.get("id") is None:
                        continue
                    kind = stage_kind(stage.get("metadata"))
                    if self.settings.won_stages:
                        kind = "won" if str(stage["id"]) in self.settings.won_stages else (
                            "open" if kind == "open" else "lost")
                    stages[str(stage["id"])] = Stage(str(stage["id"]), str(pipeline.get("id")),
                                                     str(stage.get("label") or ""), kind)
            self._stages, self._stages_at = stages, now
        return self._stages

    def _kind(self, stage: str) -> str | None:
        known = self.stages()
        if stage not in known and self._stages_at is not None and self.client.clock() - self._stages_at > 60:
            known = self.stages(refresh=True)
        found = known.get(stage)
        return found.kind if found is not None else None

    def _in_scope(self, stage: str) -> bool:
        """Whether a (known) stage belongs to one of the ``pipelines`` read; every stage when none is set."""
        found = self._stages.get(stage)
        return not self.settings.pipelines or (found is not None and found.pipeline in self.settings.pipelines)

    def _batch_read(self, ids: Sequence[str], archived: bool) -> list[dict[str, Any]]:
        body = {"inputs": [{"id": i} for i in ids], "properties": self.properties,
                "propertiesWithHistory": list(HISTORY)}
        answer = self.client.request("POST", BATCH_READ_PATH, json=body, params={"archived": "true"} if archived
                                     else None, allow=(200, 207, 404))
        return [r for r in (answer.get("results") or []) if isinstance(r, dict) and r.get("id") is not None]

    def _companies(self, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Associated companies per deal id (deals without any are absent)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for chunk in _chunks(list(ids), self.settings.read_chunk_size):
            answer = self.client.request("POST", ASSOCIATIONS_PATH, json={"inputs": [{"id": i} for i in chunk]},
                                         allow=(200, 207, 404))
            for result in answer.get("results") or []:
                if not isinstance(result, dict) or not isinstance(result.get("from"), dict):
                    continue
                source = str(result["from"].get("id", ""))
                found.setdefault(source, []).extend(t for t in result.get("to") or [] if isinstance(t, dict))
        return found

    def _read_deals(self, ids: Sequence[str]) -> _Batch:
        """Records for the deals ``ids`` (any order): one entry per id, in id order, possibly without records."""
        wanted = set(ids)
        live = {str(d["id"]): d for d in self._batch_read(ids, archived=False) if str(d["id"]) in wanted}
        missing = [i for i in ids if i not in live]
        archived = {str(d["id"]): d for d in self._batch_read(missing, archived=True)
                    if str(d["id"]) in wanted} if missing else {}
        plans: dict[str, tuple[dict[str, Any], list[Transition] | None]] = {}
        broken: dict[str, SourceRecord] = {}
        for deal_id, deal in live.items():
            try:
                history = property_history(deal, "dealstage")
                if history is None:
                    plans[deal_id] = (deal, None)
                    continue
                found = [t for t in transitions(history, self._kind, self._in_scope) if t.ms >= self.start_ms]
            except Exception as exc:  # noqa: BLE001 - one malformed deal is quarantined, the others go on
                broken[deal_id] = self._unreadable(deal_id, deal, exc)
                continue
            if found:
                plans[deal_id] = (deal, found)
        companies = self._companies(sorted(plans, key=int)) if plans else {}
        batch = _Batch()
        for deal_id in sorted(wanted, key=int):
            try:
                if deal_id in broken:
                    records = [broken[deal_id]]
                elif deal_id in archived:
                    records = self._archived_records(archived[deal_id], self.start_ms)
                elif deal_id in plans:
                    deal, planned = plans[deal_id]
                    records = self._deal_records(deal, planned, companies.get(deal_id, []))
                else:
                    if deal_id not in live:
                        log.info("source %s: deal %s is gone (neither live nor archived)", self.name, deal_id)
                    records = []
            except Exception as exc:  # noqa: BLE001 - one malformed deal is quarantined, the others go on
                records = [self._unreadable(deal_id, archived.get(deal_id) or live.get(deal_id), exc)]
            batch.per_deal.append((deal_id, records))
        return batch

    def _unreadable(self, deal_id: str, deal: Any, exc: Exception) -> SourceRecord:
        """A deal that the mapping could not read, handed to the core to quarantine with the reason."""
        try:
            raw = json.dumps(deal, sort_keys=True, separators=(",", ":"), default=str)
        except Exception:  # noqa: BLE001 - values that cannot even be written as JSON
            raw = f"<HubSpot deal {deal_id} that cannot be written as JSON>"
        return SourceRecord.quarantined(f"HubSpot deal {deal_id} cannot be read: {type(exc).__name__}: {exc}", raw,
                                        object_type=self.settings.object_type, object_id=deal_id)

    # ------------------------------------------------------------------------------------------- mapping

    def _payee(self, props: dict[str, Any]) -> tuple[str | None, str | None]:
        """(payee id, problem) from ``hubspot_owner_id`` and ``owner_payees``."""
        owner = str(props.get("hubspot_owner_id") or "").strip()
        if not owner:
            return None, None  # the core quarantines the record: "payee is missing"
        if owner in self.settings.owner_payees:
            return self.settings.owner_payees[owner], None
        if self.settings.require_owner_mapping:
            return None, f"owner {owner} has no entry in owner_payees"
        return owner, None

    def _attributes(self, deal: dict[str, Any], companies: list[str]) -> dict[str, Any]:
        props = deal.get("properties") or {}
        attributes: dict[str, Any] = {"hubspot_id": str(deal.get("id")), "dealname": props.get("dealname"),
                                      "pipeline": props.get("pipeline"), "dealstage": props.get("dealstage"),
                                      "hubspot_owner_id": props.get("hubspot_owner_id")}
        if companies:
            attributes["company_ids"] = companies
        for name in self.settings.extra_properties:
            attributes[name] = props.get(name)
        return {k: v for k, v in attributes.items() if v not in (None, "")}

    def _raw(self, deal: dict[str, Any], transition: str) -> str:
        """The record's original text, without fields that change on every edit (so a re-read compares equal)."""
        props = deal.get("properties") or {}
        kept = {k: props.get(k) for k in self.properties if k not in ("hs_lastmodifieddate", "hs_object_id")}
        return json.dumps({"id": str(deal.get("id")), "transition": transition, "properties": kept,
                           "archivedAt": deal.get("archivedAt")}, sort_keys=True, separators=(",", ":"))

    def _deal_records(self, deal: dict[str, Any], found: list[Transition] | None,
                      associations: list[dict[str, Any]]) -> list[SourceRecord]:
        s = self.settings
        props = deal.get("properties") or {}
        deal_id = str(deal.get("id"))
        partner, companies = pick_partner(associations, s.partner_association)
        payee, payee_problem = self._payee(props)
        if found is None:  # no stage history in the answer: we cannot tell when it was won
            stage = str(props.get("dealstage") or "")
            if self._kind(stage) != "won" or not self._in_scope(stage):
                return []
            return [SourceRecord(s.object_type, deal_id, "won:unknown", s.won_event_type, None, payee,
                                 partner_id=partner, attributes=self._attributes(deal, companies),
                                 raw=self._raw(deal, "won:unknown"),
                                 problem="HubSpot returned no dealstage history: cannot tell when it was won")]
        records: list[SourceRecord] = []
        for change in found:
            attributes = self._attributes(deal, companies)
            if change.change == "won":
                if s.partner_required and partner is None:
                    log.debug("source %s: deal %s won without a partner company; skipped", self.name, deal_id)
                    continue
                problems = [payee_problem] if payee_problem else []
                closed = parse_time(props.get("closedate"))
                if not props.get("closedate"):
                    problems.append("closedate is missing")
                elif closed is None:
                    problems.append(f"closedate {props.get('closedate')!r} is not a date")
                amount = str(props.get("amount") or "").strip() or None
                if amount is not None and not _DECIMAL.fullmatch(amount):
                    problems.append(f"amount {amount!r} is not a decimal number")
                currency = str(props.get("deal_currency_code") or "").strip().upper() or s.company_currency
                if amount is not None and currency is None:
                    problems.append("the deal has no deal_currency_code and company_currency is not set")
                attributes["won_at"] = from_ms(change.ms).isoformat()
                records.append(SourceRecord(
                    s.object_type, deal_id, change.name, s.won_event_type, closed, payee, amount=amount,
                    currency=currency, partner_id=partner, attributes=attributes, raw=self._raw(deal, change.name),
                    problem="; ".join(problems) or None))
            else:
                records.append(self._reversal(deal, change, partner, companies))
        return records

    def _reversal(self, deal: dict[str, Any], change: Transition, partner: str | None,
                  companies: list[str]) -> SourceRecord:
        """The reversal record of ``change`` (reopened, lost or deleted).

        Never held back by the mapping: its payee is the deal's owner, or the last owner its history shows when
        the owner was cleared, mapped by ``owner_payees`` when listed and the owner id otherwise (a reversal pays
        nobody; the clawback takes back what the deal's rewards granted, whoever they went to).
        """
        s = self.settings
        props = deal.get("properties") or {}
        owner = str(props.get("hubspot_owner_id") or "").strip()
        if not owner:
            owners = property_history(deal, "hubspot_owner_id") or []
            owner = owners[-1][1].strip() if owners else ""
        payee = s.owner_payees.get(owner, owner) or None
        attributes = self._attributes(deal, companies)
        attributes.update({"change": change.change, "from_stage": change.from_stage, "to_stage": change.stage,
                           "amount": props.get("amount"), "currency": props.get("deal_currency_code")})
        return SourceRecord(s.object_type, str(deal.get("id")), change.name, s.reversal_event_type, from_ms(change.ms),
                            payee, partner_id=partner,
                            attributes={k: v for k, v in attributes.items() if v not in (None, "")},
                            raw=self._raw(deal, change.name))

    def _archived_records(self, deal: dict[str, Any], since: int) -> list[SourceRecord]:
        """The reversals of an archived (deleted) deal: those in its stage history, and ``deleted:<archivedAt>`` if
        it was in closed-won when deleted (at or after ``since``). Its wins are not emitted: a deleted deal earns
        nothing, and a win stored before the deletion is taken back by these reversals."""
        props = deal.get("properties") or {}
        archived_at = parse_time(deal.get("archivedAt"))
        history = property_history(deal, "dealstage")
        if history is None:  # no history in the answer (the archived list): the stage it was deleted in
            history = [(0, str(props.get("dealstage") or ""))]
        found = transitions(history, self._kind, self._in_scope)
        changes = [t for t in found if t.change != "won" and t.ms >= self.start_ms]
        if found and found[-1].change == "won" and archived_at is not None and to_ms(archived_at) >= since:
            changes.append(Transition("deleted", to_ms(archived_at), "", str(props.get("dealstage") or "")))
        return [self._reversal(deal, change, None, []) for change in changes]


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
