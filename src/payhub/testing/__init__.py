"""The plugin author's kit: fakes, a controllable clock, an in-process harness, a pytest plugin, throwaway
databases, the command line in-process and test distributions. No production path uses it.

* :class:`ProviderLedger` models what a payment provider accepted per idempotency key (deduplicating or not);
  :class:`FakeRail` is a rail that spies on its calls over a ledger and misbehaves as planned
  (:mod:`payhub.testing.faults`); :class:`LedgerRail` keeps its ledger in a SQLite file shared across processes.
* :class:`FakeSource` serves records the test pushes, from memory or from a JSON-lines file another process reads.
* :class:`ManualClock` stands in for payhub's clock, so backoffs and windows pass when the test says.
* :class:`Harness` runs the pipeline in-process, one stage or pass at a time, with plugin instances given by the
  test, reads back what it stored (:class:`EventView`, :class:`RewardView`, :class:`PayoutView`,
  :class:`AuditEntryView`) and checks that every reward was calculated and paid exactly once.
* :func:`throwaway_database` yields a new, empty SQLite or PostgreSQL database for a block of a test.
* :func:`invoke_cli` runs the ``payhub`` command line in the test's process; :func:`write_distribution` writes a
  distribution whose entry points payhub finds once it is on ``sys.path``.

The pytest plugin (:mod:`payhub.testing.pytest_plugin`, entry point ``payhub``) offers them as fixtures. Names are
imported from their modules when first used, so that loading the pytest plugin costs next to nothing.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

if TYPE_CHECKING:
    from payhub.testing.cli import invoke_cli as invoke_cli
    from payhub.testing.cli import write_distribution as write_distribution
    from payhub.testing.clock import ManualClock as ManualClock
    from payhub.testing.fakes import Acceptance as Acceptance
    from payhub.testing.fakes import FakeRail as FakeRail
    from payhub.testing.fakes import FakeRailSettings as FakeRailSettings
    from payhub.testing.fakes import FakeSource as FakeSource
    from payhub.testing.fakes import FakeSourceSettings as FakeSourceSettings
    from payhub.testing.fakes import Fetch as Fetch
    from payhub.testing.fakes import LedgerRail as LedgerRail
    from payhub.testing.fakes import LedgerRailSettings as LedgerRailSettings
    from payhub.testing.fakes import ProviderLedger as ProviderLedger
    from payhub.testing.faults import FAULTS as FAULTS
    from payhub.testing.faults import SEND_FAULTS as SEND_FAULTS
    from payhub.testing.faults import Fault as Fault
    from payhub.testing.harness import AuditEntryView as AuditEntryView
    from payhub.testing.harness import CalculationView as CalculationView
    from payhub.testing.harness import EventView as EventView
    from payhub.testing.harness import ExactlyOnceError as ExactlyOnceError
    from payhub.testing.harness import Harness as Harness
    from payhub.testing.harness import PayoutItemView as PayoutItemView
    from payhub.testing.harness import PayoutView as PayoutView
    from payhub.testing.harness import RewardView as RewardView
    from payhub.testing.provider import FaultProvider as FaultProvider
    from payhub.testing.provider import ProviderRail as ProviderRail
    from payhub.testing.provider import ProviderRailSettings as ProviderRailSettings

__all__ = [
    "Acceptance",
    "AuditEntryView",
    "CalculationView",
    "DEFAULT_PG_URL",
    "DatabaseKind",
    "DatabaseUnavailable",
    "EventView",
    "ExactlyOnceError",
    "FAULTS",
    "FakeRail",
    "FakeRailSettings",
    "FakeSource",
    "FakeSourceSettings",
    "Fault",
    "FaultProvider",
    "Fetch",
    "Harness",
    "LedgerRail",
    "LedgerRailSettings",
    "ManualClock",
    "PG_URL_VARIABLE",
    "PayoutItemView",
    "PayoutView",
    "ProviderLedger",
    "ProviderRail",
    "ProviderRailSettings",
    "RewardView",
    "SEND_FAULTS",
    "invoke_cli",
    "postgres_server_url",
    "throwaway_database",
    "write_distribution",
]

_LAZY: dict[str, str] = {  # a public name defined in a submodule -> that submodule
    "Acceptance": "fakes",
    "AuditEntryView": "harness",
    "CalculationView": "harness",
    "EventView": "harness",
    "ExactlyOnceError": "harness",
    "FAULTS": "faults",
    "FakeRail": "fakes",
    "FakeRailSettings": "fakes",
    "FakeSource": "fakes",
    "FakeSourceSettings": "fakes",
    "Fault": "faults",
    "Fetch": "fakes",
    "Harness": "harness",
    "LedgerRail": "fakes",
    "LedgerRailSettings": "fakes",
    "ManualClock": "clock",
    "PayoutItemView": "harness",
    "PayoutView": "harness",
    "ProviderLedger": "fakes",
    "FaultProvider": "provider",
    "ProviderRail": "provider",
    "ProviderRailSettings": "provider",
    "RewardView": "harness",
    "SEND_FAULTS": "faults",
    "invoke_cli": "cli",
    "write_distribution": "cli",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


PG_URL_VARIABLE = "PAYHUB_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DatabaseKind = Literal["sqlite", "postgres"]


class DatabaseUnavailable(RuntimeError):
    """The PostgreSQL server of :func:`throwaway_database` cannot be reached."""


def postgres_server_url() -> str:
    """The URL of a database on the PostgreSQL server for tests: ``$PAYHUB_TEST_PG_URL``, else ``DEFAULT_PG_URL``."""
    return os.environ.get(PG_URL_VARIABLE, DEFAULT_PG_URL)


@contextmanager
def throwaway_database(kind: DatabaseKind, directory: Path,
                       unavailable: Callable[[str], NoReturn] | None = None) -> Iterator[str]:
    """Yield the URL of a new, empty database of ``kind``; a PostgreSQL one is dropped when the block ends.

    ``"sqlite"``: the file ``directory / "payhub.db"`` (created by its first use, left to ``directory``'s owner).
    ``"postgres"``: a uniquely named database created on the server of :func:`postgres_server_url`, and dropped
    ``WITH (FORCE)`` on exit, whatever connections are still open. When that server cannot be reached (10 s connect
    timeout), ``unavailable`` is called with the reason before anything is yielded (``pytest.skip`` skips the test);
    without it, or if it returns, :class:`DatabaseUnavailable` is raised.

    A pytest fixture parametrised over both kinds::

        @pytest.fixture(params=["sqlite", "postgres"])
        def db_url(request, tmp_path):
            with throwaway_database(request.param, tmp_path, pytest.skip) as url:
                yield url
    """
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'payhub.db'}"
        return
    import sqlalchemy as sa  # imported when first needed: the pytest plugin imports this package

    if kind != "postgres":
        raise ValueError(f"unknown database kind {kind!r} (sqlite or postgres)")
    server = postgres_server_url()
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})
    try:
        try:
            with admin.connect():
                pass
        except sa.exc.OperationalError as exc:
            reason = f"PostgreSQL not reachable at {server}: {exc}"
            if unavailable is not None:
                unavailable(reason)
            raise DatabaseUnavailable(reason) from exc
        name = f"payhub_t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
