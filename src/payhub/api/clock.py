"""The clock, re-exported from :mod:`payhub.clock`: time is timezone-aware UTC everywhere.

Read the time with :func:`utcnow` only (never ``datetime.now()``), so that a test clock can stand in for it.
"""

from __future__ import annotations

from payhub.clock import (
    isoformat,
    parse_instant,
    utcnow,
)

__all__ = [
    "isoformat",
    "parse_instant",
    "utcnow",
]
