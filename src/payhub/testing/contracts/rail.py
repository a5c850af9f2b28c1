"""``RailContract``: the pytest suite every rail passes (the rules are in :mod:`.rail_checks`).

Subclass it in the plugin's tests and provide fixtures:

``plugin_factory`` (required)
    A zero-argument callable returning a new, configured rail pointed at the test provider. Each check closes the
    instances it makes.
``faults`` (default None)
    The provider's :class:`~payhub.testing.contracts.rail_checks.RailFaults`: ``plan(*Fault)`` and
    ``payments(key)``, optionally ``supported`` and ``release()``. :class:`payhub.testing.provider.FaultProvider`
    is one. With None, every check that needs it is skipped with that reason.
``make_payout`` (default: 10.00 EUR to a payee in DE with an email and an IBAN)
    ``make_payout(key)`` returns a :class:`~payhub.api.PayoutInstruction` with that idempotency key that the rail can
    pay.
``rail_timeout_seconds`` (default 60, the default of ``rails.<name>.timeout_seconds``)
    The core's timeout for one call; the rail's own timeouts must be below it.

Tests are named ``test_<check>`` after :data:`~payhub.testing.contracts.rail_checks.RAIL_CHECKS`, plus the
:class:`~payhub.testing.contracts.settings.SettingsContract` tests on the rail's ``settings_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest
from pydantic import BaseModel

from payhub.api import PayoutInstruction, Rail
from payhub.testing.contracts._pytest import add_check_tests
from payhub.testing.contracts.rail_checks import RAIL_CHECKS, RailFaults, RailSubject, default_payout
from payhub.testing.contracts.settings import SettingsContract
from payhub.testing.contracts.settings_checks import PluginKind

__all__ = ["RailContract"]


class RailContract(SettingsContract):
    """Capabilities stable; one result per key; a resend never pays twice; lookup honest; errors classified;
    max_batch served; thread-safe; timeouts below ``timeout_seconds``."""

    plugin_kind: ClassVar[PluginKind] = "rail"

    @pytest.fixture
    def faults(self) -> RailFaults | None:
        return None

    @pytest.fixture
    def make_payout(self) -> Callable[[str], PayoutInstruction]:
        return default_payout

    @pytest.fixture
    def rail_timeout_seconds(self) -> float:
        return 60.0

    @pytest.fixture
    def rail_subject(self, plugin_factory: Callable[[], Rail], faults: RailFaults | None,
                     make_payout: Callable[[str], PayoutInstruction], rail_timeout_seconds: float) -> RailSubject:
        return RailSubject(plugin_factory, make_payout, rail_timeout_seconds, faults)

    @pytest.fixture
    def settings_model(self, plugin_factory: Callable[[], Rail]) -> type[BaseModel]:
        rail = plugin_factory()
        try:
            return type(rail).settings_model
        finally:
            rail.close()


add_check_tests(RailContract, RAIL_CHECKS, "rail_subject")
