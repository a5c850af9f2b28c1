"""The salesforce source passes payhub's SourceContract against the Salesforce simulator (payhub-simulators).

``upstream.add(n)`` inserts n closed-won partner deals into the simulated org, each last modified one second after
the one before, all older than the source's lookback window: records that have settled. (Deals modified within the
window, and those on the mark's second, are read again by the next sync on purpose, and dedup by key: the suite is
told so with ``rereads_boundary``.) Faults are the simulator's errors on the REST
API: transient is 503 on every attempt the source makes; permanent is 401 INVALID_SESSION_ID on the request and on
its repetition with a renewed session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from payhub_simulators.salesforce import SalesforceSimulator

from payhub.testing.contracts import SourceContract
from payhub.testing.contracts.source_checks import SourceFault
from payhub_salesforce import SalesforceSettings, SalesforceSource

RETRY_ATTEMPTS = 2


class Org:
    """The simulated org as the contract's upstream and fault controller."""

    def __init__(self, sim: SalesforceSimulator) -> None:
        self.sim = sim
        self.next_modstamp = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        self.added = 0

    def add(self, count: int) -> None:
        clock = self.sim.clock
        try:
            for _ in range(count):
                moment = self.next_modstamp
                self.sim.clock = lambda moment=moment: moment  # type: ignore[misc]
                self.sim.add_opportunity(Name=f"Deal {self.added}", StageName="Closed Won",
                                         Amount=Decimal(1000 + self.added),
                                         PartnerAccountId=f"001{self.added % 7:012d}AAA")
                self.next_modstamp += timedelta(seconds=1)
                self.added += 1
        finally:
            self.sim.clock = clock

    def plan(self, *faults: SourceFault) -> None:
        for fault in faults:
            if fault == "transient":
                self.sim.fail_next(503, RETRY_ATTEMPTS)
            else:
                self.sim.fail_next(401, 2)  # the session refused, and again after the source renewed it


class TestSalesforceContract(SourceContract):
    rereads_boundary = True  # each sync reads SystemModstamp >= its mark again (ties on the second, late commits)

    @pytest.fixture
    def simulator(self) -> Iterator[SalesforceSimulator]:
        with SalesforceSimulator() as sim:
            yield sim

    @pytest.fixture
    def upstream(self, simulator: SalesforceSimulator) -> Org:
        return Org(simulator)

    @pytest.fixture
    def faults(self, upstream: Org) -> Org:
        return upstream

    @pytest.fixture
    def plugin_factory(self, simulator: SalesforceSimulator) -> Callable[[], SalesforceSource]:
        values: dict[str, Any] = {"auth": "client_credentials", "login_url": simulator.url,
                                  "client_id": simulator.client_id, "client_secret": simulator.client_secret,
                                  "org_currency": "USD", "page_size": 200, "http_timeout_seconds": 2,
                                  "retry_attempts": RETRY_ATTEMPTS, "retry_backoff_seconds": 0,
                                  "retry_backoff_max_seconds": 0}
        settings = SalesforceSettings.model_validate(values)
        return lambda: SalesforceSource("salesforce", settings)
