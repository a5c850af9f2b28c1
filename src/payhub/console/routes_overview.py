"""Console pages: the overview (docs/console.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from payhub.console.web import PREFIX, Viewer, page, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/")
def overview(request: Request, viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    return render(request, "overview.html", viewer, title="Overview", section="Overview")
