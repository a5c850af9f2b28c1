"""The pytest plugin of payhub's kit (entry point ``payhub`` in ``pytest11``): installing payhub makes these fixtures
available to every test session, with no ``conftest.py`` and no import.

* ``payhub_harness``: a factory of :class:`payhub.testing.Harness` on ``payhub_db_url`` with ``payhub_clock``;
  every harness it made is closed after the test.
* ``payhub_clock``: a :class:`payhub.testing.ManualClock`, installed for the test.
* ``payhub_fake_rail``: a :class:`payhub.testing.FakeRail` named ``fake`` with default settings.
* ``payhub_fake_source``: a :class:`payhub.testing.FakeSource` named ``fake``, file-backed in the test's
  ``tmp_path``.
* ``payhub_provider``: a started :class:`payhub.testing.provider.FaultProvider` (deduplicating), stopped after the
  test; pass it as the ``faults`` of a ``RailContract``.
* ``payhub_db_url``: the URL of a new, empty database, once on SQLite and once on PostgreSQL (skipped when the
  server of ``$PAYHUB_TEST_PG_URL`` cannot be reached); narrow it with
  ``@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)``.

The module imports nothing from payhub until a fixture is used, so sessions that use none pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from payhub.testing import FakeRail, FakeSource, Harness, ManualClock
    from payhub.testing.provider import FaultProvider

DATABASE_KINDS = ("sqlite", "postgres")
"""The parameters of ``payhub_db_url``."""


class HarnessFactory(Protocol):
    """The type of the ``payhub_harness`` fixture."""

    def __call__(self, settings: Mapping[str, Any] | str | None = None, plugins: Mapping[str, object] | None = None,
                 **options: Any) -> Harness:
        """A new :class:`~payhub.testing.Harness`; ``options`` are its keyword arguments (``payees``,
        ``database_url``, ``directory``, ``clock``), defaulting to ``payhub_db_url``, a new directory under
        ``tmp_path`` and ``payhub_clock``."""
        ...


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server at $PAYHUB_TEST_PG_URL")


@pytest.fixture(params=[DATABASE_KINDS[0], pytest.param(DATABASE_KINDS[1], marks=pytest.mark.postgres)])
def payhub_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database for the test: a SQLite file in ``tmp_path``, or a PostgreSQL database dropped after
    the test (skipped when the server cannot be reached)."""
    from payhub.testing import throwaway_database

    directory = tmp_path / "payhub-db"
    directory.mkdir(exist_ok=True)
    with throwaway_database(request.param, directory, pytest.skip) as url:
        yield url


@pytest.fixture
def payhub_clock() -> Iterator[ManualClock]:
    """A ManualClock at the current time, installed as payhub's clock for the test."""
    from payhub.testing import ManualClock

    with ManualClock() as clock:
        yield clock


@pytest.fixture
def payhub_fake_rail() -> FakeRail:
    """A FakeRail named ``fake`` (lookup on, no declared dedup window, so every resend is a visible payment)."""
    from payhub.testing import FakeRail

    return FakeRail("fake")


@pytest.fixture
def payhub_fake_source(tmp_path: Path) -> FakeSource:
    """A FakeSource named ``fake`` whose records are in ``tmp_path / "fake-source.jsonl"``."""
    from payhub.testing import FakeSource, FakeSourceSettings

    return FakeSource("fake", FakeSourceSettings(path=tmp_path / "fake-source.jsonl"))


@pytest.fixture
def payhub_provider() -> Iterator[FaultProvider]:
    """A FaultProvider on 127.0.0.1 (deduplicating on the idempotency key, no API key), stopped after the test."""
    from payhub.testing.provider import FaultProvider

    with FaultProvider() as provider:
        yield provider


@pytest.fixture
def payhub_harness(payhub_db_url: str, payhub_clock: ManualClock, tmp_path: Path) -> Iterator[HarnessFactory]:
    """``payhub_harness(settings, plugins, **options)``: a Harness on ``payhub_db_url`` with ``payhub_clock``; all
    are closed after the test. One harness at a time per SQLite database (it holds the daemon's file lock)."""
    from payhub.testing import Harness

    made: list[Harness] = []

    def factory(settings: Mapping[str, Any] | str | None = None, plugins: Mapping[str, object] | None = None,
                **options: Any) -> Harness:
        options.setdefault("database_url", payhub_db_url)
        options.setdefault("clock", payhub_clock)
        options.setdefault("directory", tmp_path / f"harness-{len(made) + 1}")
        options["directory"].mkdir(parents=True, exist_ok=True)
        harness = Harness(settings, plugins=plugins, **options)
        made.append(harness)
        return harness

    yield factory
    for harness in reversed(made):
        harness.close()
