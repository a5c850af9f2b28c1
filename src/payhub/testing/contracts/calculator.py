"""``CalculatorContract``: the pytest suite every calculator passes (the rules are in :mod:`.calculator_checks`).

Subclass it in the plugin's tests and provide fixtures:

``plugin_factory`` (required)
    A zero-argument callable returning a new calculator with the program's params.
``sample_events`` (required)
    A list of :class:`payhub.api.Event` the calculator is meant for (some eligible, some not).
``history`` (default: nothing rewarded yet)
    The :class:`payhub.api.History` passed to ``calculate``.

Tests are named ``test_<check>`` after :data:`~payhub.testing.contracts.calculator_checks.CALCULATOR_CHECKS`, plus
the :class:`~payhub.testing.contracts.settings.SettingsContract` tests on the ``params_model``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import pytest
from pydantic import BaseModel

from payhub.api import Calculator, Event, History
from payhub.testing.contracts._pytest import add_check_tests
from payhub.testing.contracts.calculator_checks import CALCULATOR_CHECKS, CalculatorSubject, EmptyHistory
from payhub.testing.contracts.settings import SettingsContract
from payhub.testing.contracts.settings_checks import PluginKind

__all__ = ["CalculatorContract"]


class CalculatorContract(SettingsContract):
    """Deterministic; no I/O; valid lines."""

    plugin_kind: ClassVar[PluginKind] = "calculator"

    @pytest.fixture
    def history(self) -> History:
        return EmptyHistory()

    @pytest.fixture
    def calculator_subject(self, plugin_factory: Callable[[], Calculator], sample_events: Sequence[Event],
                           history: History) -> CalculatorSubject:
        return CalculatorSubject(plugin_factory, sample_events, history)

    @pytest.fixture
    def settings_model(self, plugin_factory: Callable[[], Calculator]) -> type[BaseModel]:
        return type(plugin_factory()).params_model


add_check_tests(CalculatorContract, CALCULATOR_CHECKS, "calculator_subject")
