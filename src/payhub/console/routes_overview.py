"""The overview (docs/console.md, Overview): the KPIs of a period as tiles, charts and tables.

``GET /console/?period=2026-Q4`` shows :func:`payhub.kpis.kpis` of the period (default: the current quarter, UTC)
with each chart's data as a table; ``GET /console/kpi.csv?period=...&chart=<id>`` downloads one chart's or table's
data (:func:`payhub.kpis.figures`) as spreadsheet-safe CSV (:mod:`payhub.csvsafe`). Auditor role and above. A bad
period or chart is answered 422 or 404 with a message, never a server error.

The page always reads the KPIs anew; a CSV download uses the figures the page last read for the same period when
they are at most :data:`CACHE_SECONDS` old (kept by each app), so that it gives the figures the page showed without
reading them again (on a large database a read takes seconds).
"""

from __future__ import annotations

import io
import re
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from payhub import csvsafe
from payhub.clock import utcnow
from payhub.console.params import BadQuery, query_params
from payhub.console.web import PREFIX, Viewer, page, query_string, render
from payhub.http.state import face
from payhub.kpis import MAX_TEXT, Figure, Kpis, Period, PeriodError, figures, kpis, tiles

router = APIRouter(prefix=PREFIX, include_in_schema=False)

MAX_CHART = 60
"""The longest chart id read from a query."""
CACHE_SECONDS = 300.0
"""How long the KPIs a page read serve the CSV downloads of its period."""
CACHE_PERIODS = 16
"""The most periods whose KPIs an app keeps."""
_CACHE_LOCK = threading.Lock()
SECTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("flows", "Accrued, approved and paid", ("flow-", "program-", "flows")),
    ("budgets", "Budgets and funds", ("budgets", "funds")),
    ("payouts", "Payouts by rail and status", ("rail-status", "success", "rail-amounts")),
    ("timing", "Time from CRM event to paid", ("time-to-paid",)),
    ("open", "Open payouts and held rewards", ("open-payouts", "open-reasons", "open-list", "held-rewards")),
    ("revenue", "Partner-sourced revenue against incentive cost", ("revenue-program", "revenue-partner")),
]
"""The page's sections: (anchor, heading, the figure ids or id prefixes shown in it, in order)."""


def _chosen(params: dict[str, str]) -> Period:
    text = params.get("period")
    return Period.parse(text) if text is not None else Period.quarter_of(utcnow())


def _read(request: Request, period: Period, *, kept_ok: bool) -> Kpis:
    """The KPIs of ``period``: read now (and kept), or, with ``kept_ok``, those kept by this app within the last
    :data:`CACHE_SECONDS`."""
    now = time.monotonic()
    with _CACHE_LOCK:
        cache: dict[str, tuple[float, Kpis]] = getattr(request.app.state, "kpi_cache", None) or {}
        request.app.state.kpi_cache = cache
        kept = cache.get(period.label)
    if kept_ok and kept is not None and now - kept[0] < CACHE_SECONDS:
        return kept[1]
    rt = face(request).rt
    with rt.engine.connect() as conn:
        found = kpis(conn, period, programs=rt.settings.programs)
    with _CACHE_LOCK:
        cache[period.label] = (now, found)
        for label, _kept in sorted(cache.items(), key=lambda item: item[1][0])[:-CACHE_PERIODS]:
            del cache[label]  # the oldest beyond CACHE_PERIODS
    return found


def _sections(found: list[Figure]) -> list[tuple[str, str, list[Figure]]]:
    return [(anchor, heading, [f for f in found if any(f.id == p or (p.endswith("-") and f.id.startswith(p))
                                                       for p in wanted)])
            for anchor, heading, wanted in SECTIONS]


@router.get("/")
def overview(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The KPIs of the period asked for (default: the current quarter)."""
    context: dict[str, Any] = {"title": "Overview", "section": "Overview", "problem": None, "k": None,
                               "period_text": request.query_params.get("period", "")[:MAX_TEXT]}
    try:
        period = _chosen(query_params(request, {"period": MAX_TEXT}))
    except (BadQuery, PeriodError) as exc:
        request.state.refusal = str(exc)
        return render(request, "overview.html", viewer, status_code=422, **{**context, "problem": str(exc)})
    found = _read(request, period, kept_ok=False)
    shown = figures(found)

    def csv_href(chart: str) -> str:
        return f"{PREFIX}/kpi.csv?{query_string({'period': period.label, 'chart': chart})}"

    return render(request, "overview.html", viewer, **{
        **context, "period_text": context["period_text"] or period.label, "period": period, "k": found,
        "tiles": tiles(found), "sections": _sections(shown), "csv_href": csv_href})


def _filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text)[:100]


@router.get("/kpi.csv")
def kpi_csv(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """One chart's or table's data of the period as CSV: its columns, then a line per row (amounts exact)."""
    try:
        params = query_params(request, {"period": MAX_TEXT, "chart": MAX_CHART})
        period = _chosen(params)
    except (BadQuery, PeriodError) as exc:
        request.state.refusal = str(exc)
        raise HTTPException(422, str(exc)) from None
    wanted = params.get("chart")
    if wanted is None:
        raise HTTPException(422, "chart: name the chart or table whose data to download (its CSV link does)")
    found = next((f for f in figures(_read(request, period, kept_ok=True)) if f.id == wanted), None)
    if found is None:
        raise HTTPException(404, f"no chart or table {wanted!r} in the overview of {period.label}")
    out = io.StringIO()
    writer = csvsafe.writer(out)
    writer.writerow(found.columns)
    for row in found.text_rows():
        writer.writerow(row)
    name = _filename(f"kpi-{period.label}-{found.id}.csv")
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"'})
