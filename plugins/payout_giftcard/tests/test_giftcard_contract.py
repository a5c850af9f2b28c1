"""The giftcard rail passes payhub's RailContract against the gift-card provider simulator (payhub-simulators).

The contract's fault words are turned into the simulator's own faults by :class:`SimulatorFaults`; payments are the
orders the simulator stored under a payout's key (its ``external_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from payhub.testing.contracts import RailContract
from payhub.testing.contracts.rail_checks import RailSubject
from payhub.testing.faults import FAULTS, Fault
from payhub.testing.server import ServerFault
from payhub_simulators.giftcard import GiftCardSimulator
from pydantic import SecretStr

from payhub_giftcard import GiftCardRail, GiftCardSettings

API_KEY = "contract-key"
HTTP_TIMEOUT = 0.5  # seconds, connect and read: below the stalls planned here and the core's timeout_seconds
STALL = 3.0  # seconds a planned timeout holds the simulator's answer
MAX_RETRY_AFTER = 1.0  # the rail waits a Retry-After up to this long; a longer one is RETRY at once


class SimulatorFaults:
    """The contract's fault vocabulary over the simulator's fault plan (and, for a connection closed before the
    order is handled, the plan of the server under it). The simulator answers one order per request, so a fault meant
    for a whole send ("reject": each payout refused) is planned for as many orders as a contract check sends in one
    call."""

    supported: tuple[Fault, ...] = FAULTS

    def __init__(self, sim: GiftCardSimulator) -> None:
        self.sim = sim

    def plan(self, *faults: Fault) -> None:
        for fault in faults:
            if fault == "reject":
                self.sim.plan(*["error_before=422"] * RailSubject.max_sample)
                continue
            if fault == "timeout_before_accept":  # the connection closed unanswered, the order not stored
                self.sim.server.plan(ServerFault("drop", method="POST", path=f"{self.sim.prefix}/orders"))
                continue
            self.sim.plan({
                "retryable": f"rate_limit={MAX_RETRY_AFTER * 10:g}",  # a Retry-After the rail will not wait for
                "permanent": "error_before=401",
                "timeout_after_accept": f"timeout_after={STALL:g}",
                "duplicate": "duplicate",
                "hang": f"latency={STALL:g}",
                "lookup_fails": "lookup_error=503",
            }[fault])

    def payments(self, key: str) -> int:
        return len(self.sim.orders(key))


class TestGiftCardContract(RailContract):
    @pytest.fixture
    def simulator(self) -> Iterator[GiftCardSimulator]:
        with GiftCardSimulator(api_key=API_KEY) as sim:
            yield sim

    @pytest.fixture
    def faults(self, simulator: GiftCardSimulator) -> SimulatorFaults:
        return SimulatorFaults(simulator)

    @pytest.fixture
    def rail_timeout_seconds(self) -> float:
        return 2.0

    @pytest.fixture
    def plugin_factory(self, simulator: GiftCardSimulator) -> Callable[[], GiftCardRail]:
        settings = GiftCardSettings(base_url=simulator.url, api_key=SecretStr(API_KEY),
                                    http_timeout_seconds=HTTP_TIMEOUT, connect_timeout_seconds=HTTP_TIMEOUT,
                                    max_retry_after_seconds=MAX_RETRY_AFTER)
        return lambda: GiftCardRail("giftcard", settings)
