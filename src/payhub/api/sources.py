"""Sources: the base class, the records a source reads and the webhook types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from payhub.api.settings import NoSettings, PluginSettings

__all__ = [
    "FetchResult",
    "Source",
    "SourceRecord",
    "WebhookRefused",
    "WebhookRequest",
    "WebhookResult",
]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One trigger as a source read it, before validation.

    Its dedup key is ``<source name>:<object_type>:<object_id>:<transition>`` (``%`` and ``:`` percent-encoded in
    the first three parts; ids compared after Unicode NFC, with BOM and zero-width characters removed); give every
    business transition of a CRM object its own stable ``transition`` (``won``, ``registered``, ``refunded``) so
    re-reading it adds nothing. Fields may hold raw text: the core parses ``occurred_at`` (ISO 8601) and ``amount``
    (decimal text) and quarantines the record with a reason when anything is wrong, including values of the wrong
    type or that the database cannot store. Set ``problem`` when the source already knows the record is malformed
    (or use :meth:`quarantined`); ``raw`` is the original text, kept for the quarantine listing.
    """

    object_type: str
    object_id: str
    transition: str
    event_type: str
    occurred_at: datetime | str | None
    payee_id: str | None
    amount: Decimal | str | None = None
    currency: str | None = None
    partner_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    raw: str | None = None
    problem: str | None = None

    @classmethod
    def quarantined(cls, problem: str, raw: str, *, object_type: str = "", object_id: str = "",
                    transition: str = "") -> SourceRecord:
        """A record the source could not make sense of, handed over to be quarantined with ``problem``.

        ``raw`` is the original text (the CRM's JSON, the file's line). Give the identity when it is known, so
        that a corrected record sent later under it replaces the quarantined event; without it the event is keyed
        by the content of ``raw``, and reading the same text again adds nothing.
        """
        return cls(object_type, object_id, transition, "", None, None, raw=raw, problem=problem or "malformed record")


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one :meth:`Source.fetch` call read.

    ``cursor`` is opaque text the core stores in the same transaction as ``records`` and passes to the next fetch.
    ``more`` is true when further records are ready now (the core fetches again without waiting for the interval).
    """

    records: Sequence[SourceRecord]
    cursor: str | None
    more: bool = False


class Source(ABC):
    """Pulls trigger events from a system, incrementally, from a resumable cursor.

    ``fetch`` must be safe to repeat from the same cursor: the core commits each batch's records together with its
    cursor, so a crash before that commit loses both, and the next fetch starts again from the last stored cursor
    (records read twice dedup by key). Raise TransientSourceError for passing trouble, PermanentSourceError for
    problems an admin must fix.
    """

    settings_model: ClassVar[type[PluginSettings]] = NoSettings

    def __init__(self, name: str, settings: PluginSettings) -> None:
        self.name = name
        self.settings = settings

    @abstractmethod
    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        """Return at most ``limit`` records after ``cursor`` and the cursor to continue from."""

    def webhook(self, request: WebhookRequest) -> WebhookResult:
        """Optional: check and parse one delivery POSTed to ``/webhooks/<source name>``.

        Verify its signature and freshness first, on the raw ``request.body``; raise :class:`WebhookRefused` for
        anything that is not a genuine, well-formed delivery. Return the records it carries (stored at once, deduped
        by key like fetched ones), or the ids of the objects it names (queued in the database and handed to
        :meth:`read_objects` by the next poll of any replica), and the sender's delivery id when it has one (a
        second delivery with the same id is refused). Runs in the HTTP server's threads, concurrently with
        ``fetch``: keep it free of shared mutable state. Sources without webhooks do not override it (404).
        """
        raise NotImplementedError

    def read_objects(self, object_ids: Sequence[str]) -> Sequence[SourceRecord]:
        """Optional, with a :meth:`webhook` that returns ``object_ids``: read these objects now (at most the
        source's ``batch_size``) and return their records. Called by the worker, never concurrently with
        ``fetch``; ids that no longer exist return nothing. The ids are forgotten in the transaction that stores
        the records, so a failure (raise as in ``fetch``) leaves them queued for the next poll."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; called once at shutdown."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A POST to ``/webhooks/<source name>`` as it arrived.

    ``url`` is the URL the sender called (scheme and host as the client sent them, after trusted proxy headers;
    a source whose signature covers the URL may let the admin set the public one). ``headers`` keep arrival order
    and repeats, names in lower case. ``body`` is the raw body, at most ``http.max_body_bytes``. ``received_at``
    is aware UTC.
    """

    method: str
    url: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in arrival order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What :meth:`Source.webhook` made of a genuine delivery: ``records`` to store now, ``object_ids`` to read on
    the next poll, and the sender's ``delivery_id`` (unique per message, the same on a resend), remembered for a
    day so that a replay is refused."""

    records: Sequence[SourceRecord] = ()
    object_ids: Sequence[str] = ()
    delivery_id: str | None = None


class WebhookRefused(Exception):
    """A delivery that is not accepted. ``status``: 400 malformed, 401 signature or timestamp refused, 409
    replayed, 413 too large, 422 understood but not usable; ``reason`` is answered to the sender and audited, so
    it must not hold secrets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


