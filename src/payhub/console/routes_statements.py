"""Console pages: a payout's partner statement (docs/console.md, Partner statements).

``GET /console/payouts/{id}/statement`` shows the statement (:func:`payhub.statements.content.build`, the same
data the mailed HTML and PDF are made from) with its delivery row; ``GET /console/payouts/{id}/statement.pdf``
downloads the PDF, rendered now (the same bytes as the one delivered, unless the payout changed since: compare its
SHA-256 with the delivery's). Both need the auditor role. An id that is not a whole number is refused (422), as is
any query parameter (:mod:`payhub.console.params`), one that names no payout is not found (404), a payout whose
lines do not add up gets no statement (409, with why).

The statement's text was made visible and bounded when it was built; the template escapes it. The address a
statement was mailed to is shown as the audit reads show personal values: opened for operators and admins,
``[erased]`` once the payee is erased, ``[sealed]`` for auditors.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from payhub.compliance.shown import reveals
from payhub.console.params import not_found, page_id
from payhub.console.web import PREFIX, Viewer, page, render
from payhub.http.state import face
from payhub.statements import content, stage
from payhub.statements import render as documents
from payhub.statements.delivery import rendered

router = APIRouter(prefix=PREFIX, include_in_schema=False)



def _read(request: Request, number: int, viewer: Viewer) -> tuple[content.Statement | str, dict[str, Any] | None]:
    """The statement (or why there is none: the mismatch) and the delivery row shown for the viewer."""
    with face(request).rt.engine.connect() as conn:
        try:
            found: content.Statement | str = content.build(conn, number)
        except content.StatementNotFound as exc:
            raise not_found(request, "payout", number) from exc
        except content.StatementMismatch as exc:
            found = str(exc)
        row = stage.delivery_row(conn, number, reveal=reveals(viewer.principal.role))
    return found, row


@router.get("/payouts/{payout_id}/statement")
def statement_page(request: Request, payout_id: str,
                   viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The payout's statement and its delivery."""
    number = page_id(request, payout_id, "payout")
    found, row = _read(request, number, viewer)
    statement = found if isinstance(found, content.Statement) else None
    request.state.audit_detail = {"statement": number, "delivery": row["status"] if row else None}
    if statement is None:
        request.state.refusal = "the statement does not add up"
    return render(request, "statement.html", viewer, status_code=200 if statement else 409,
                  title=f"Statement of payout {number}", section="Search", payout_id=number, s=statement,
                  problem=None if statement else found, delivery=row, KIND_LABELS=documents.KIND_LABELS,
                  notify=face(request).rt.settings.notify.statements)


@router.get("/payouts/{payout_id}/statement.pdf")
async def statement_pdf(request: Request, payout_id: str,
                        viewer: Annotated[Viewer, Depends(page("auditor"))]) -> Response:
    """The payout's statement as a PDF download."""
    number = page_id(request, payout_id, "payout")
    found, _row = await run_in_threadpool(_read, request, number, viewer)
    if not isinstance(found, content.Statement):
        request.state.refusal = "the statement does not add up"
        raise HTTPException(409, found)
    doc = await run_in_threadpool(rendered, found)
    request.state.audit_detail = {"statement": number, "format": "pdf", "sha256": doc.sha256}
    return Response(doc.pdf, media_type="application/pdf", headers={
        "content-disposition": f'attachment; filename="statement-{number}.pdf"', "x-statement-sha256": doc.sha256})
