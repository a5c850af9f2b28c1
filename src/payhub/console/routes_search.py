"""Console page: search and the filtered listings of events, rewards and payouts (docs/console.md, Search and
provenance).

``GET /console/search?q=…`` reads ``q`` as the API's references do (:func:`payhub.provenance.parse_ref`:
``payout:N``, ``reward:N``, ``event:N``, ``record:ID``, a bare number is a reward, else an event key or a CRM object
id) and also as a payee id, a payout's rail reference (or a bank file's name) or its idempotency key; a single
payout, reward or event found is answered with a redirect (303) to its page. ``kind=events|rewards|payouts`` with
the filters of :mod:`payhub.reports` (``status``, and ``source`` for events, ``payee`` and ``program`` for rewards,
``rail`` and ``payee`` for payouts) lists rows oldest first, paged by keyset (``after`` the last id, ``limit`` rows).

Every parameter is bounded and checked (:mod:`payhub.console.params`): a bad one (an unknown one, such as a misspelt
filter, among them) is answered 422 with the form and what is wrong, never a widened listing or a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from payhub import provenance, reports, states
from payhub.console.params import (
    BAD_STATUS,
    MAX_ID,
    NAME_LENGTH,
    NUMBER_LENGTH,
    PAGE_SIZE,
    BadQuery,
    choice,
    keyset,
    page_limit,
    query_params,
    refused,
    url,
    whole_number,
)
from payhub.console.web import PREFIX, Viewer, clip, opener, page, render
from payhub.db.schema import events, payees, payouts, rewards
from payhub.http.state import face

router = APIRouter(prefix=PREFIX, include_in_schema=False)

SEARCH = f"{PREFIX}/search"

KINDS = ("payouts", "rewards", "events")
STATUSES: dict[str, tuple[str, ...]] = {
    "events": tuple(states.EventStatus), "rewards": tuple(states.RewardStatus),
    "payouts": tuple(states.PayoutStatus)}
FILTERS: dict[str, tuple[str, ...]] = {
    "events": ("status", "source"), "rewards": ("status", "payee", "program"),
    "payouts": ("status", "rail", "payee")}
"""The filters of each listing: those of :mod:`payhub.reports`."""
READERS: dict[str, Callable[..., Iterator[dict[str, Any]]]] = {
    "events": reports.events, "rewards": reports.rewards, "payouts": reports.payouts}
TEXT_FILTERS = ("source", "payee", "program", "rail")
MAX_QUERY = 600
"""The longest search text (as the API's references)."""
PARAMETERS = {"q": MAX_QUERY, "kind": 20, "status": 40, **{name: NAME_LENGTH for name in TEXT_FILTERS},
              "after": NUMBER_LENGTH, "limit": NUMBER_LENGTH}
"""The page's parameters and their longest text."""
MAX_HITS = 50
"""The most rows of one kind a search shows; more are counted as "more"."""
MAX_COUNT = 10_000
"""The most rows of a payee counted (more are shown as "10,000+")."""


@dataclass(frozen=True)
class Hit:
    """One thing a search found: ``kind`` is payout, reward, event or payee; ``href`` its page."""

    kind: str
    ident: str
    summary: str
    href: str
    status: str = ""


@dataclass
class Query:
    """The page's parameters, checked."""

    q: str = ""
    kind: str = ""
    status: str = ""
    source: str = ""
    payee: str = ""
    program: str = ""
    rail: str = ""
    after: int | None = None
    limit: int = PAGE_SIZE

    def filters(self) -> dict[str, str]:
        """The listing's filters that are set."""
        return {name: getattr(self, name) for name in FILTERS.get(self.kind, ()) if getattr(self, name)}

    def link(self, **changes: Any) -> str:
        """This page's URL with ``changes``."""
        return url(SEARCH, {"q": self.q, "kind": self.kind, **self.filters(), "limit": self.limit, **changes})


def parse(request: Request) -> Query:
    """The page's parameters, checked (:class:`~payhub.console.params.BadQuery` says what is wrong)."""
    params = query_params(request, PARAMETERS)
    found = Query(q=params.get("q", ""), kind=choice(params, "kind", KINDS),
                  **{name: params.get(name, "") for name in TEXT_FILTERS}, status=params.get("status", ""),
                  after=whole_number(params, "after", 0, MAX_ID), limit=page_limit(params))
    given = [name for name in ("status", *TEXT_FILTERS) if getattr(found, name)]
    if given and not found.kind:
        found.kind = "payouts" if "rail" in given else "events" if "source" in given else "rewards"
    if found.kind:
        wrong = [name for name in given if name not in FILTERS[found.kind]]
        if wrong:
            raise BadQuery(f"{found.kind} cannot be filtered by {', '.join(wrong)}; they are filtered by "
                           f"{', '.join(FILTERS[found.kind])}")
        if found.status and found.status not in STATUSES[found.kind]:
            raise BadQuery(f"status of {found.kind}: one of {', '.join(STATUSES[found.kind])}")
    return found


# ------------------------------------------------------------------------------------------------ the search


def _first(conn: Connection, query: Any) -> list[Any]:
    """The first :data:`MAX_HITS` rows of ``query`` and one more (which says there are more)."""
    return list(conn.execute(query.limit(MAX_HITS + 1)))


def _event_hits(rows: list[Any]) -> list[Hit]:
    """Events found, each with its key, type and payee (clipped) and a link to its page."""
    return [Hit("event", str(r.id), f"{clip(r.key, 200)} ({clip(r.event_type, 80)}, payee {clip(r.payee_id, 80)})",
                f"{PREFIX}/events/{r.id}", r.status) for r in rows]


def _payout_hits(rows: list[Any]) -> list[Hit]:
    """Payouts found, each with its exact amount, payee and rail (clipped) and a link to its page."""
    return [Hit("payout", str(r.id), f"{reports.amount_text(r.amount_minor, r.currency)} {r.currency} to "
                f"{clip(r.payee_id, 80)} via {clip(r.rail, 80)}", f"{PREFIX}/payouts/{r.id}", r.status) for r in rows]


def _reward_hits(rows: list[Any]) -> list[Hit]:
    """Rewards found, each with its exact amount, payee and program (clipped) and a link to its page."""
    return [Hit("reward", str(r.id), f"{reports.amount_text(r.amount_minor, r.currency)} {r.currency} to "
                f"{clip(r.payee_id, 80)} from program {clip(r.program, 80)}", f"{PREFIX}/rewards/{r.id}", r.status)
            for r in rows]


def search(conn: Connection, text: str) -> tuple[list[Hit], bool]:
    """What ``text`` names, and whether there were more than :data:`MAX_HITS` of a kind (the rest not listed).

    A typed reference (``payout:N``, ``reward:N``, ``event:N``) names that row only. ``record:ID`` names the events of
    that CRM object. Other text is looked up as an event key or CRM object id (a bare number also as a reward, as
    the API reads it), a payee id, a payout's rail reference or idempotency key, and a bank file's name (the payouts
    whose reference is ``<file>:<line>``).
    """
    ref = provenance.parse_ref(text, "reward")
    hits: list[Hit] = []
    more = False

    def add(found: list[Hit]) -> None:
        nonlocal more
        more = more or len(found) > MAX_HITS
        hits.extend(found[:MAX_HITS])

    bare = ref.kind == "reward" and text.isascii() and text.isdigit()  # a reward id, or a CRM or payee id
    if ref.kind != "record":
        if 1 <= ref.number <= MAX_ID:
            if ref.kind == "payout":
                add(_payout_hits(_first(conn, select(payouts).where(payouts.c.id == ref.number))))
            elif ref.kind == "reward":
                add(_reward_hits(_first(conn, select(rewards).where(rewards.c.id == ref.number))))
            else:
                add(_event_hits(_first(conn, select(events).where(events.c.id == ref.number))))
        if not bare:
            return hits, more
    prefix, sep, object_id = text.partition(":")
    match = or_(events.c.key == text, events.c.object_id == text)
    if sep and prefix == "record":
        match = or_(match, events.c.object_id == object_id)
    add(_event_hits(_first(conn, select(events).where(match).order_by(events.c.id))))
    add(_payout_hits(_first(conn, select(payouts).where(or_(
        payouts.c.provider_ref == text, _lines_of(conn, text), payouts.c.idempotency_key == text))
        .order_by(payouts.c.id))))
    add(_payee_hits(conn, text))
    return hits, more


def _lines_of(conn: Connection, name: str) -> ColumnElement[bool]:
    """The payouts whose rail reference is a line of the bank file ``name`` (``<name>:<line>``): a prefix that the
    index on ``provider_ref`` serves. SQLite compares text by code point, so the prefix is a range (``name:`` up to
    ``name;``, ``;`` following ``:``); PostgreSQL's order depends on its collation, so there it is an escaped LIKE,
    served by the index's pattern operator class (:mod:`payhub.db.schema`)."""
    prefix = name + ":"
    column = payouts.c.provider_ref
    if conn.dialect.name == "sqlite":
        return and_(column >= prefix, column < name + ";")
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")


def _payee_hits(conn: Connection, payee: str) -> list[Hit]:
    """The payee ``payee`` names, with links to its listings, when the registry or a reward or payout knows it."""
    counted = {name: conn.execute(select(func.count()).select_from(
                   select(column).where(column == payee).limit(MAX_COUNT + 1).subquery())).scalar_one()
               for name, column in (("rewards", rewards.c.payee_id), ("payouts", payouts.c.payee_id))}
    known = conn.execute(select(payees.c.id).where(payees.c.id == payee)).first() is not None
    if not known and not any(counted.values()):
        return []
    listed = ", ".join(f"{MAX_COUNT:,}+ {name}" if n > MAX_COUNT else f"{n:,} {name}" for name, n in counted.items())
    return [Hit("payee", payee, f"payee with {listed}",
                url(SEARCH, {"kind": "payouts", "payee": payee}))]


# ------------------------------------------------------------------------------------------------ the listings


def listing(conn: Connection, query: Query, viewer: Viewer) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the listing ``query`` asks for and the link to the next page (None after the last row); each
    row's reason shown to ``viewer`` (sealed personal values opened or not by role)."""
    args: dict[str, Any] = {name: query.filters().get(name) or None for name in FILTERS[query.kind]}
    rows, following = keyset(READERS[query.kind](conn, **args, after=query.after, limit=query.limit + 1),
                             query.limit, lambda last: query.link(q=None, after=last["id"]))
    shown = opener(conn, viewer)
    for row in rows:
        row["reason"] = shown(row["reason"])
    return rows, following


@router.get("/search")
def search_page(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The search box and the listings (see the module's docstring)."""
    context: dict[str, Any] = {"title": "Search", "section": "Search", "kinds": KINDS, "statuses": STATUSES,
                               "filters": FILTERS, "problems": [], "hits": None, "more": False, "rows": None,
                               "next_href": None, "page_size": PAGE_SIZE}
    try:
        query = parse(request)
    except BadQuery as exc:
        shown = Query()  # the form as asked, cut to its bounds
        for name in ("q", "kind", "status", *TEXT_FILTERS):
            setattr(shown, name, request.query_params.get(name, "")[:PARAMETERS[name]])
        return render(request, "search.html", viewer, status_code=BAD_STATUS,
                      **{**context, "query": shown, "problems": [refused(request, exc)]})
    context["query"] = query
    with face(request).rt.engine.connect() as conn:
        if query.q:
            context["hits"], context["more"] = search(conn, query.q)
            entities = [h for h in context["hits"] if h.kind != "payee"]
            if len(context["hits"]) == 1 and entities and not query.kind:
                request.state.audit_detail = {"rows": 1, "found": f"{entities[0].kind}:{entities[0].ident}"}
                return RedirectResponse(entities[0].href, status_code=303)
        if query.kind or not query.q:
            if not query.kind:
                query.kind = "payouts"
            context["rows"], context["next_href"] = listing(conn, query, viewer)
    request.state.audit_detail = {"rows": len(context["rows"] or []) + len(context["hits"] or [])}
    return render(request, "search.html", viewer, **context)
