"""The hubspot source passes payhub's SourceContract against the HubSpot simulator (payhub-simulators).

The account lives on a clock of its own (the source's ``wall_clock``, a day behind the real one): ``upstream.add(n)``
creates n closed-won deals, each with a primary partner company and modified at that clock's now, and moves the clock
past the source's index lag and lookback window after each, as time passing between deals would. The source runs
with its default windows. Faults are the simulator's HTTP errors on the CRM API: transient is 503 on every attempt
the source makes; permanent is 401 for the private app token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from payhub_simulators.hubspot import HubSpotSimulator

from payhub.testing.contracts import SourceContract
from payhub.testing.contracts.source_checks import SourceFault
from payhub_hubspot import HubSpotSettings, HubSpotSource

MAX_RETRIES = 1


class Portal:
    """The simulated HubSpot account as the contract's upstream and fault controller, and its clock."""

    def __init__(self, sim: HubSpotSimulator, settings: HubSpotSettings) -> None:
        self.sim = sim
        self.partner = sim.add_company("Partner GmbH")
        self.now = time.time() - 86_400
        self.step = settings.index_lag_seconds + settings.lookback_seconds + 1

    def clock(self) -> float:
        return self.now

    def add(self, count: int) -> None:
        for _ in range(count):
            self.sim.add_deal("closedwon", "1000.00", at_ms=int(self.now * 1000), company=self.partner)
            self.now += self.step

    def plan(self, *faults: SourceFault) -> None:
        for fault in faults:
            if fault == "transient":
                self.sim.fail("/crm/", 503, times=MAX_RETRIES + 1)
            else:
                self.sim.fail("/crm/", 401)


class TestHubSpotContract(SourceContract):

    @pytest.fixture
    def simulator(self) -> Iterator[HubSpotSimulator]:
        with HubSpotSimulator(search_per_second=10_000) as sim:
            yield sim

    @pytest.fixture
    def settings(self, simulator: HubSpotSimulator) -> HubSpotSettings:
        return HubSpotSettings.model_validate({
            "base_url": simulator.url, "access_token": simulator.private_token, "start_date": "2020-01-01",
            "company_currency": "USD", "http_timeout_seconds": 2, "search_requests_per_second": 1000,
            "requests_per_second": 1000, "max_retries": MAX_RETRIES, "retry_initial_seconds": 0,
            "retry_max_seconds": 0})

    @pytest.fixture
    def upstream(self, simulator: HubSpotSimulator, settings: HubSpotSettings) -> Portal:
        return Portal(simulator, settings)

    @pytest.fixture
    def faults(self, upstream: Portal) -> Portal:
        return upstream

    @pytest.fixture
    def plugin_factory(self, settings: HubSpotSettings, upstream: Portal) -> Callable[[], HubSpotSource]:
        return lambda: HubSpotSource("hubspot", settings, wall_clock=upstream.clock)
