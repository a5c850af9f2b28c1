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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from payhub.testing.cli import invoke_cli as invoke_cli
    from payhub.testing.cli import write_distribution as write_distribution
    from payhub.testing.clock import ManualClock as ManualClock
    from payhub.testing.db import DEFAULT_PG_URL as DEFAULT_PG_URL
    from payhub.testing.db import PG_URL_VARIABLE as PG_URL_VARIABLE
    from payhub.testing.db import DatabaseKind as DatabaseKind
    from payhub.testing.db import DatabaseUnavailable as DatabaseUnavailable
    from payhub.testing.db import migrate_database as migrate_database
    from payhub.testing.db import postgres_server_url as postgres_server_url
    from payhub.testing.db import throwaway_database as throwaway_database
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
    from payhub.testing.harness import AttemptView as AttemptView
    from payhub.testing.harness import AuditEntryView as AuditEntryView
    from payhub.testing.harness import CalculationView as CalculationView
    from payhub.testing.harness import EventView as EventView
    from payhub.testing.harness import ExactlyOnceError as ExactlyOnceError
    from payhub.testing.harness import Harness as Harness
    from payhub.testing.harness import PayoutItemView as PayoutItemView
    from payhub.testing.harness import PayoutView as PayoutView
    from payhub.testing.harness import RewardView as RewardView
    from payhub.testing.harness import SourceView as SourceView
    from payhub.testing.harness import StoreReader as StoreReader
    from payhub.testing.harness import WebhookDeliveryView as WebhookDeliveryView
    from payhub.testing.harness import WebhookObjectView as WebhookObjectView
    from payhub.testing.provider import FaultProvider as FaultProvider
    from payhub.testing.provider import ProviderRail as ProviderRail
    from payhub.testing.provider import ProviderRailSettings as ProviderRailSettings
    from payhub.testing.server import FaultServer as FaultServer
    from payhub.testing.server import ServerFault as ServerFault

__all__ = [
    "Acceptance",
    "AttemptView",
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
    "FaultServer",
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
    "ServerFault",
    "SourceView",
    "StoreReader",
    "WebhookDeliveryView",
    "WebhookObjectView",
    "invoke_cli",
    "migrate_database",
    "postgres_server_url",
    "throwaway_database",
    "write_distribution",
]

_LAZY: dict[str, str] = {  # a public name defined in a submodule -> that submodule
    "Acceptance": "fakes",
    "AttemptView": "harness",
    "AuditEntryView": "harness",
    "CalculationView": "harness",
    "DEFAULT_PG_URL": "db",
    "DatabaseKind": "db",
    "DatabaseUnavailable": "db",
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
    "PG_URL_VARIABLE": "db",
    "PayoutItemView": "harness",
    "PayoutView": "harness",
    "ProviderLedger": "fakes",
    "FaultProvider": "provider",
    "ProviderRail": "provider",
    "ProviderRailSettings": "provider",
    "FaultServer": "server",
    "ServerFault": "server",
    "RewardView": "harness",
    "SourceView": "harness",
    "StoreReader": "harness",
    "WebhookDeliveryView": "harness",
    "WebhookObjectView": "harness",
    "SEND_FAULTS": "faults",
    "invoke_cli": "cli",
    "migrate_database": "db",
    "postgres_server_url": "db",
    "throwaway_database": "db",
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
