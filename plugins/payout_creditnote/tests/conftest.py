"""Fixtures for the credit-note rail tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from creditnote_en16931 import En16931, compiled
from creditnote_helpers import make_rail

from payhub_creditnote import CreditNoteRail


@pytest.fixture
def rail_factory(tmp_path: Path) -> Iterator[Callable[..., CreditNoteRail]]:
    """``rail_factory(**settings)``: a CreditNoteRail on ``tmp_path/outbox``, closed after the test."""
    made: list[CreditNoteRail] = []

    def factory(**overrides: Any) -> CreditNoteRail:
        rail = make_rail(tmp_path, **overrides)
        made.append(rail)
        return rail

    yield factory
    for rail in made:
        rail.close()


@pytest.fixture(scope="session")
def en16931() -> Iterator[En16931]:
    """The official EN 16931 UBL rules (CEN validation artefacts), compiled once per test session."""
    with compiled() as rules:
        yield rules
