"""Console page: search and the filtered listings of events, rewards and payouts (docs/console.md, Search and
provenance).

``GET /console/search?q=…`` reads ``q`` as the API's references do (:func:`payhub.provenance.parse_ref`:
``payout:N``, ``reward:N``, ``event:N``, ``record:ID``, a bare number is a reward, else an event key or a CRM object
id) and also as a payee id, a payout's rail reference (or a bank file's name) or its idempotency key; a single
payout, reward or event found is answered with a redirect (303) to its page. ``kind=events|rewards|payouts`` with
the filters of
:mod:`payhub.reports` (``status``, and ``source`` for events, ``payee`` and ``program`` for rewards, ``rail`` and
``payee`` for payouts) lists rows oldest first, paged by keyset (``after`` the last id, ``limit`` rows).

Every parameter is bounded and checked: a bad one is answered 422 with the form and what is wrong, never a 500.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection, func, or_, select

from payhub import provenance, reports, states
from payhub.console.routes_payouts import clip
from payhub.console.web import PREFIX, Viewer, opener, page, query_string, render
from payhub.db.schema import events, payees, payouts, rewards
from payhub.http.state import face

router = APIRouter(prefix=PREFIX, include_in_schema=False)

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
MAX_FILTER = 200
"""The longest filter value (ids and names are at most 200 characters)."""
PAGE = 50
MAX_PAGE = 500
MAX_HITS = 50
"""The most rows of one kind a search shows; more are counted as "more"."""
MAX_COUNT = 10_000
"""The most rows of a payee counted (more are shown as "10,000+")."""
REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
"""Characters refused in a parameter: control characters (NUL among them) and lone surrogates."""


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
    limit: int = PAGE

    def filters(self) -> dict[str, str]:
        """The listing's filters that are set."""
        return {name: getattr(self, name) for name in FILTERS.get(self.kind, ()) if getattr(self, name)}

    def link(self, **changes: Any) -> str:
        """This page's URL with ``changes``."""
        values = {"q": self.q, "kind": self.kind, **self.filters(),
                  "limit": self.limit if self.limit != PAGE else None, **changes}
        return f"{PREFIX}/search?{query_string(values)}"


def _text(name: str, raw: str | None, limit: int, problems: list[str]) -> str:
    if raw is None:
        return ""
    value = raw.strip()
    if len(value) > limit:
        problems.append(f"{name} is {len(value):,} characters long; at most {limit} are allowed.")
        return ""
    if any(unicodedata.category(c) in REFUSED_CATEGORIES for c in value):
        problems.append(f"{name} holds a control character; type it without one.")
        return ""
    return value


def _number(name: str, raw: str | None, low: int, high: int, problems: list[str]) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not low <= int(text) <= high:
        problems.append(f"{name} must be a whole number from {low} to {high}; {clip(text, 40)!r} is not.")
        return None
    return int(text)


def parse(request: Request) -> tuple[Query, list[str]]:
    """The page's parameters and what is wrong with them (nothing: ``[]``)."""
    params = request.query_params
    problems: list[str] = []
    for name in set(params.keys()):
        if len(params.getlist(name)) > 1:
            problems.append(f"{clip(name, 40)} is given more than once.")
    found = Query()
    found.q = _text("The search text", params.get("q"), MAX_QUERY, problems)
    kind = _text("kind", params.get("kind"), 20, problems)
    if kind and kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}; {clip(kind, 40)!r} is not.")
        kind = ""
    found.kind = kind
    for name in TEXT_FILTERS:
        setattr(found, name, _text(name, params.get(name), MAX_FILTER, problems))
    found.status = _text("status", params.get("status"), 40, problems)
    given = [name for name in ("status", *TEXT_FILTERS) if getattr(found, name)]
    if given and not found.kind:
        found.kind = "payouts" if "rail" in given else "events" if "source" in given else "rewards"
    if found.kind:
        for name in given:
            if name not in FILTERS[found.kind]:
                problems.append(f"{found.kind} cannot be filtered by {name}; they are filtered by "
                                f"{', '.join(FILTERS[found.kind])}.")
        if found.status and found.status not in STATUSES[found.kind]:
            problems.append(f"status of {found.kind} is one of {', '.join(STATUSES[found.kind])}; "
                            f"{clip(found.status, 40)!r} is not.")
    found.after = _number("after", params.get("after"), 0, provenance.MAX_ID, problems)
    limit = _number("limit", params.get("limit"), 1, MAX_PAGE, problems)
    found.limit = limit if limit is not None else PAGE
    return found, problems


# ------------------------------------------------------------------------------------------------ the search


def _first(conn: Connection, query: Any) -> list[Any]:
    return list(conn.execute(query.limit(MAX_HITS + 1)))


def _event_hits(rows: list[Any]) -> list[Hit]:
    return [Hit("event", str(r.id), f"{clip(r.key, 200)} ({clip(r.event_type, 80)}, payee {clip(r.payee_id, 80)})",
                f"{PREFIX}/events/{r.id}", r.status) for r in rows]


def _payout_hits(rows: list[Any]) -> list[Hit]:
    return [Hit("payout", str(r.id), f"{reports.amount_text(r.amount_minor, r.currency)} {r.currency} to "
                f"{clip(r.payee_id, 80)} via {clip(r.rail, 80)}", f"{PREFIX}/payouts/{r.id}", r.status) for r in rows]


def _reward_hits(rows: list[Any]) -> list[Hit]:
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
        if 1 <= ref.number <= provenance.MAX_ID:
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
    in_file = text + ":"  # a bank file's name finds the payouts of its lines (<file>:<line>)
    add(_payout_hits(_first(conn, select(payouts).where(or_(
        payouts.c.provider_ref == text, func.substr(payouts.c.provider_ref, 1, len(in_file)) == in_file,
        payouts.c.idempotency_key == text)).order_by(payouts.c.id))))
    add(_payee_hits(conn, text))
    return hits, more


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
                f"{PREFIX}/search?{query_string({'kind': 'payouts', 'payee': payee})}")]


# ------------------------------------------------------------------------------------------------ the listings


def listing(conn: Connection, query: Query, viewer: Viewer) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the listing ``query`` asks for and the link to the next page (None after the last row); each
    row's reason shown to ``viewer`` (sealed personal values opened or not by role)."""
    args: dict[str, Any] = {name: query.filters().get(name) or None for name in FILTERS[query.kind]}
    reader = READERS[query.kind]
    rows = list(islice(reader(conn, **args, after=query.after, limit=query.limit + 1), query.limit + 1))
    shown = opener(conn, viewer)
    for row in rows:
        row["reason"] = shown(row["reason"])
    following = None
    if len(rows) > query.limit:
        del rows[query.limit:]
        following = query.link(q=None, after=rows[-1]["id"])
    return rows, following


@router.get("/search")
def search_page(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The search box and the listings (see the module's docstring)."""
    query, problems = parse(request)
    context: dict[str, Any] = {"title": "Search", "section": "Search", "query": query, "kinds": KINDS,
                               "statuses": STATUSES, "filters": FILTERS, "problems": problems, "hits": None,
                               "more": False, "rows": None, "next_href": None}
    if problems:
        request.state.refusal = "invalid search parameters"
        return render(request, "search.html", viewer, status_code=422, **context)
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
