"""Console pages: payouts (docs/console.md)."""

from __future__ import annotations

from fastapi import APIRouter

from payhub.console.web import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)
