"""Running the ``payhub`` CLI from tests."""

from __future__ import annotations

from payhub.testing import invoke_cli as invoke

__all__ = ["invoke"]
