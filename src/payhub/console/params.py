"""What every console page reads from its URL: query parameters, an id in the path, and the page of a listing.

Query parameters are hostile. Each page names the parameters it takes, each with its longest text, and reads them
through :func:`query_params`, the one allow-list parser: an unknown parameter (a misspelt filter would silently widen
a listing), one given twice, one longer than its bound, or one holding a control character (NUL among them) or a lone
surrogate raises :class:`BadQuery`, and so do :func:`whole_number` (a number that is not a whole number in its range)
and :func:`choice` (a value that is not one of the page's). A page answers :class:`BadQuery` with
:data:`BAD_STATUS` (422, as the API answers a bad parameter): its own form with the message, or the error page
(:func:`refuse`); the refusal is recorded in the request's audit entry. Nothing is listed then: a bad parameter never
gives a partial or widened result.

An id in a path is read by :func:`path_id`, for a page (GET) and a form post alike: text that is not a whole number
is a bad parameter (422), a number that names no row is not found (404, :func:`not_found`).

Listings are keyset pages: a page reads one row more than it shows to know whether there is a next page
(:func:`keyset`), whose link carries the last key shown and the filters (:func:`url`). Every listing shows
:data:`PAGE_SIZE` rows unless ``limit`` asks for 1 to :data:`MAX_PAGE` (:func:`page_limit`), as the API's listings.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any

from fastapi import HTTPException, Request

from payhub.cli.params import MAX_ID as MAX_ID  # the one bound of row ids, re-exported for the pages
from payhub.console.web import query_string
from payhub.http.routes_reads import MAX_PAGE as API_MAX_PAGE

BAD_STATUS = 422
"""The status of a page asked for with a bad query parameter (or a form post with a bad field)."""
PAGE_SIZE = 100
"""Rows on a listing's page unless ``limit`` says otherwise (the API's default)."""
MAX_PAGE = API_MAX_PAGE
"""The largest ``limit`` of every listing (the API's)."""
ID_DIGITS = len(str(MAX_ID)) + 1
"""The longest id text read from a path: one digit more than :data:`MAX_ID`, so that a number just out of range is
named as not found rather than as malformed."""
NUMBER_LENGTH = 40
"""The longest text of a number parameter: longer than any valid one, so that a wrong one is named as such."""
NAME_LENGTH = 200
"""The longest id or name a filter takes (payee, program, holder, source, rail: as the database stores them)."""
REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
"""Unicode categories refused in a parameter: control characters (NUL among them) and lone surrogates."""


class BadQuery(ValueError):
    """A query parameter that is not valid: the message says which and why."""


def query_params(request: Request, allowed: Mapping[str, int]) -> dict[str, str]:
    """The query's parameters, trimmed, empty ones left out. Each must be one of ``allowed`` (which maps each name
    to its longest text), given at most once, within its length and without control characters or lone
    surrogates; else :class:`BadQuery`."""
    found: dict[str, str] = {}
    for name in dict.fromkeys(request.query_params.keys()):
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) if allowed else "no parameters"
            raise BadQuery(f"unknown parameter {name[:40]!r}: a misspelt filter would widen the search (this page "
                           f"takes {takes})")
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise BadQuery(f"{name}: given more than once")
        value = values[0].strip()
        if len(value) > allowed[name]:
            raise BadQuery(f"{name}: at most {allowed[name]} characters")
        bad = next((c for c in value if unicodedata.category(c) in REFUSED_CATEGORIES), None)
        if bad == "\x00":
            raise BadQuery(f"{name}: contains a NUL character")
        if bad is not None:
            raise BadQuery(f"{name}: contains a control character (U+{ord(bad):04X})")
        if value:
            found[name] = value
    return found


def number_in(text: str, low: int, high: int) -> int | None:
    """``text`` as a whole number from ``low`` to ``high`` (ASCII digits only), or None."""
    if len(text) > NUMBER_LENGTH or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if low <= number <= high else None


def whole_number(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """The parameter ``name`` as a whole number from ``low`` to ``high``, None when absent; else :class:`BadQuery`."""
    text = params.get(name)
    if text is None:
        return None
    number = number_in(text, low, high)
    if number is None:
        raise BadQuery(f"{name}: a whole number from {low} to {high}")
    return number


def choice(params: Mapping[str, str], name: str, allowed: Iterable[str], default: str = "") -> str:
    """The parameter ``name``, one of ``allowed`` (``default`` when absent); else :class:`BadQuery`."""
    options = list(allowed)
    value = params.get(name, default)
    if value and value not in options:
        raise BadQuery(f"{name}: one of {', '.join(options)}")
    return value


def page_limit(params: Mapping[str, str]) -> int:
    """The ``limit`` parameter: rows per page, 1 to :data:`MAX_PAGE`, :data:`PAGE_SIZE` when absent."""
    return whole_number(params, "limit", 1, MAX_PAGE) or PAGE_SIZE


def refused(request: Request, problem: BadQuery | str) -> str:
    """Record ``problem`` as the request's refusal (its audit entry says why) and return its message, for a page
    that answers it with its own form and :data:`BAD_STATUS`."""
    request.state.refusal = str(problem)
    return str(problem)


def refuse(request: Request, problem: BadQuery | str) -> HTTPException:
    """The error to raise for a bad parameter or form field: the error page with the message and
    :data:`BAD_STATUS`, the refusal recorded."""
    return HTTPException(BAD_STATUS, refused(request, problem))


def path_id(request: Request, text: str, what: str) -> int:
    """The id in a page's or a form's path: text that is not a whole number (ASCII digits, at most
    :data:`ID_DIGITS`) is refused (:data:`BAD_STATUS`), a number that cannot name a row (0, above :data:`MAX_ID`)
    is not found (404), as is one that names no row (:func:`not_found`)."""
    if len(text) > ID_DIGITS or not (text.isascii() and text.isdigit()):
        request.state.refusal = f"{what} id is not a whole number"
        raise HTTPException(BAD_STATUS, f"A {what} id is a whole number, like {what}s/12; {ascii(text[:40])} is "
                                        "not one.")
    number = int(text)
    if not 1 <= number <= MAX_ID:
        raise not_found(request, what, number)
    return number


def page_id(request: Request, text: str, what: str) -> int:
    """The id in the path of a page that takes no query parameters: :func:`path_id`, then any query parameter
    refused (:func:`refuse`)."""
    number = path_id(request, text, what)
    try:
        query_params(request, {})
    except BadQuery as exc:
        raise refuse(request, exc) from None
    return number


def not_found(request: Request, what: str, number: int) -> HTTPException:
    """The error to raise when ``what`` ``number`` names no row (404), the refusal recorded."""
    request.state.refusal = "nothing found"
    return HTTPException(404, f"There is no {what} {number}.")


def url(path: str, values: Mapping[str, Any] | None = None) -> str:
    """The console ``path`` with ``values`` as its query: empty ones (None, '') and a ``limit`` of
    :data:`PAGE_SIZE` (the default) left out, so that links keep a page's filters and nothing more."""
    kept = {name: value for name, value in (values or {}).items()
            if not (name == "limit" and value == PAGE_SIZE)}
    query = query_string(kept)
    return f"{path}?{query}" if query else path


def keyset(rows: Iterable[dict[str, Any]], limit: int,
           following: Callable[[dict[str, Any]], str]) -> tuple[list[dict[str, Any]], str | None]:
    """A listing's page: the first ``limit`` of ``rows`` (read with ``limit + 1``: the one more row says whether
    there is a next page), and the next page's link, ``following(the last row shown)``, or None after the last."""
    found = list(islice(rows, limit + 1))
    if len(found) <= limit:
        return found, None
    del found[limit:]
    return found, following(found[-1])
