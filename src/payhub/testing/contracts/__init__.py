"""Contract suites: pytest classes a plugin's tests subclass, and the checks behind them.

* :class:`RailContract`, :class:`SourceContract`, :class:`CalculatorContract`, :class:`HookContract` and
  :class:`SettingsContract` (included in the other four) are the suites; each module's docstring lists the fixtures
  a subclass provides.
* The rules themselves are plain functions in ``*_checks`` modules (``RAIL_CHECKS`` …), run by the suites and by
  ``payhub plugins check``, which does not need pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from payhub.testing.contracts.checks import Check, CheckResult, CheckSkipped, ContractViolation

if TYPE_CHECKING:
    from payhub.testing.contracts.calculator import CalculatorContract
    from payhub.testing.contracts.hook import HookContract
    from payhub.testing.contracts.rail import RailContract
    from payhub.testing.contracts.settings import SettingsContract
    from payhub.testing.contracts.source import SourceContract

__all__ = [
    "CalculatorContract",
    "Check",
    "CheckResult",
    "CheckSkipped",
    "ContractViolation",
    "HookContract",
    "RailContract",
    "SettingsContract",
    "SourceContract",
]

_SUITES = {
    "CalculatorContract": "calculator",
    "HookContract": "hook",
    "RailContract": "rail",
    "SettingsContract": "settings",
    "SourceContract": "source",
}


def __getattr__(name: str) -> Any:
    """The suites import pytest, so they load on first use; the checks do not need it."""
    if name in _SUITES:
        from importlib import import_module

        return getattr(import_module(f"payhub.testing.contracts.{_SUITES[name]}"), name)
    raise AttributeError(name)
