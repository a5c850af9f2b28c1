"""``POST /webhooks/<source>``: deliveries pushed by the systems behind source plugins (docs/api.md#webhooks).

A delivery goes to the configured, loaded source of that name whose plugin implements
:meth:`payhub.api.Source.webhook`; any other name is 404. The plugin's call runs in a thread of its own under
``daemon.plugin_timeout_seconds``: a call still running then is abandoned (503, and the source's deliveries get 503
until it returns). :class:`~payhub.api.WebhookRefused` answers its status and reason; anything else the plugin
raises or returns out of contract answers 500 with a neutral message and is logged.

A genuine delivery is stored in one transaction: its delivery id (already remembered: 409, nothing stored), its
records (validated, quarantined and deduplicated as fetched records are; the source's cursor does not move), its
object ids (queued for the source's next poll) and the ``webhook.received`` audit entry. Its entries, and the
request's own (:mod:`payhub.http.audit`), name the actor ``webhook:<source>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from payhub import webhooks
from payhub.api import Source, SourceRecord, WebhookRefused, WebhookRequest, WebhookResult
from payhub.clock import utcnow
from payhub.db.faults import describe, is_transient
from payhub.errors import PluginTimeout
from payhub.http.state import face, origin
from payhub.pipeline import storable
from payhub.pipeline.ingest import Counts, write_batch
from payhub.runtime import Runtime, Tx

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

NEUTRAL = "the delivery could not be processed and was not stored; the error is in payhub's log"
REASON_CHARS = 500
RETRY_AFTER_SECONDS = 30


class Replayed(Exception):  # noqa: N818 - a condition, not a failure
    """The delivery id is already remembered: the delivery is not stored again."""


class Unusable(Exception):  # noqa: N818 - a condition, not a failure
    """The plugin's result names something payhub cannot store (an object id too long, empty or not text)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer a delivery: the status and JSON body, and for the request's audit entry why it was refused
    and what it carried."""

    status: int
    body: dict[str, Any]
    refusal: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] | None = None


def _refused(status: int, reason: str, **detail: Any) -> Answer:
    return Answer(status, {"error": reason}, reason, detail)


@router.post(
    "/webhooks/{source}", summary="Receive a webhook delivery for a source",
    responses={200: {"description": "Stored: `accepted` records, `new` events, `quarantined` records, `queued` ids"},
               400: {"description": "Malformed headers or body"},
               401: {"description": "Signature or timestamp refused"},
               404: {"description": "No source receives webhooks under this name"},
               409: {"description": "Already received (the same delivery id)"},
               413: {"description": "Body too large"},
               422: {"description": "Understood but not usable"},
               500: {"description": "The source failed"},
               503: {"description": "The source or the database is busy or unavailable; try again"}})
async def receive(source: str, request: Request) -> JSONResponse:
    """Hand the delivery to source ``source``'s webhook and store what it returns (docs/api.md#webhooks)."""
    rt = face(request).rt
    plugin = rt.plugins.sources.get(source)
    if plugin is None or not webhooks.receives_webhooks(plugin):
        request.state.refusal = "no source receives webhooks under this name"
        return JSONResponse({"error": "no source receives webhooks here"}, status_code=404)
    actor = f"webhook:{source}"
    request.state.actor = actor
    body = await request.body()
    headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in request.scope["headers"]]
    delivery = WebhookRequest("POST", str(request.url), headers, body, utcnow())
    answer = await anyio.to_thread.run_sync(accept, rt.as_actor(actor, origin(request)), source, plugin, delivery)
    if answer.refusal is not None:
        request.state.refusal = answer.refusal
    if answer.detail:
        request.state.audit_detail = answer.detail
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


def accept(rt: Runtime, name: str, source: Source, delivery: WebhookRequest) -> Answer:
    """Check ``delivery`` with ``source``'s webhook and store what it carries; never raises."""
    guard = rt.guard(f"webhook {name}", rt.settings.daemon.plugin_timeout_seconds)
    try:
        result = guard.call(source.webhook, delivery, doing="webhook")
    except WebhookRefused as exc:
        status = exc.status if isinstance(exc.status, int) and 400 <= exc.status <= 499 else 400
        reason = storable.sanitise(str(exc.reason), REASON_CHARS)
        log.debug("source %s refused a delivery (%d): %s", name, status, reason)
        return _refused(status, reason)
    except PluginTimeout as exc:
        log.warning("source %s: %s (webhook delivery answered 503)", name, exc)
        return Answer(503, {"error": "the source did not answer in time; try again later"}, str(exc),
                      headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    except NotImplementedError:
        return _refused(404, "this source does not receive webhooks")
    except (Exception, SystemExit):  # noqa: BLE001 - a plugin bug: answered 500, the server goes on
        log.exception("source %s: its webhook raised; the delivery was answered 500 and not stored", name)
        return Answer(500, {"error": NEUTRAL}, "the source's webhook raised")
    try:
        records, object_ids, delivery_id = _checked(result)
        if object_ids and not webhooks.reads_objects(source):
            raise TypeError("webhook returned object_ids, but the source does not implement read_objects")
    except Unusable as exc:
        return _refused(422, str(exc))
    except (TypeError, ValueError) as exc:
        log.error("source %s: its webhook broke its contract: %s; the delivery was answered 500", name, exc)
        return Answer(500, {"error": NEUTRAL}, f"the source's webhook broke its contract: {exc}"[:REASON_CHARS])
    detail: dict[str, Any] = {} if delivery_id is None else {"delivery_id": webhooks.delivery_key(delivery_id)}
    try:
        counts, queued = _store(rt, name, records, object_ids, delivery_id)
    except Replayed:
        return _refused(409, "already received", **detail)
    except Exception as exc:  # noqa: BLE001 - the database failed: the sender sends again later
        if is_transient(exc):
            log.warning("source %s: a webhook delivery could not be stored: %s", name, describe(exc))
            return Answer(503, {"error": "the database is unavailable; try again later"}, "database unavailable",
                          detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        log.exception("source %s: a webhook delivery could not be stored", name)
        return Answer(500, {"error": NEUTRAL}, "the delivery could not be stored", detail)
    webhooks.PRUNER.maybe(rt.engine)
    return Answer(200, {"accepted": len(records), "new": counts.new + counts.corrected,
                        "quarantined": counts.quarantined, "queued": queued}, None, detail)


def _checked(result: object) -> tuple[list[SourceRecord], list[str], str | None]:
    """The records, object ids and delivery id of a webhook's result. TypeError when it is not a WebhookResult of
    sequences and text; Unusable naming an object id the queue cannot hold."""
    if not isinstance(result, WebhookResult):
        raise TypeError(f"webhook returned a {type(result).__name__}, not a WebhookResult")
    records = _sequence(result.records, "records")
    object_ids = _sequence(result.object_ids, "object_ids")
    for number, object_id in enumerate(object_ids, 1):
        if not isinstance(object_id, str):
            raise TypeError(f"object id {number} is a {type(object_id).__name__}, not text")
        problem = "is empty" if not object_id.strip() else storable.text_problem(object_id, webhooks.OBJECT_ID_LIMIT)
        if problem:
            raise Unusable(f"object id {number} {problem}")
    delivery_id = result.delivery_id
    if delivery_id is not None and not isinstance(delivery_id, str):
        raise TypeError(f"delivery_id is a {type(delivery_id).__name__}, not text")
    return records, object_ids, delivery_id or None


def _sequence(value: object, what: str) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"webhook returned {what} as a {type(value).__name__}, not a sequence")
    return list(value)


def _store(rt: Runtime, name: str, records: list[SourceRecord], object_ids: list[str],
           delivery_id: str | None) -> tuple[Counts, int]:
    """Remember the delivery, store its records and queue its object ids in one transaction; Replayed (nothing
    stored) when the delivery id is already remembered."""
    now = utcnow()
    queued = 0

    def finish(tx: Tx, counts: Counts) -> None:
        nonlocal queued
        if delivery_id is not None and not webhooks.remember(tx.conn, name, delivery_id, now):
            raise Replayed(delivery_id)
        queued = webhooks.queue(tx.conn, name, object_ids, now)
        tx.audit("webhook.received", "source", name, {
            "delivery_id": None if delivery_id is None else webhooks.delivery_key(delivery_id),
            "records": len(records), "new": counts.new, "corrected": counts.corrected,
            "duplicates": len(records) - counts.new - counts.corrected, "quarantined": counts.quarantined,
            "queued": queued,
        })

    counts = write_batch(rt, name, records, finish, now)
    return counts, queued
