"""``GET /healthz``: the process answers."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    """Alive: answers as long as the process serves HTTP, whatever the database does."""
    return {"status": "alive"}
