"""``HookContract``: the pytest suite every hook plugin passes (the rules are in :mod:`.hook_checks`).

Subclass it in the plugin's tests with a ``plugin_factory`` fixture: a zero-argument callable returning the object
payhub registers (a hook class's instance, built with its settings, or the module). Tests are named
``test_<check>`` after :data:`~payhub.testing.contracts.hook_checks.HOOK_CHECKS`, plus the
:class:`~payhub.testing.contracts.settings.SettingsContract` tests when the plugin declares a ``settings_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from payhub.testing.contracts._pytest import add_check_tests
from payhub.testing.contracts.hook_checks import HOOK_CHECKS, HookSubject
from payhub.testing.contracts.settings import SettingsContract
from payhub.testing.contracts.settings_checks import PluginKind

__all__ = ["HookContract"]


class HookContract(SettingsContract):
    """Every hookimpl names a hookspec of payhub.hookspecs and takes only its arguments."""

    plugin_kind: ClassVar[PluginKind] = "hook"

    @pytest.fixture
    def hook_subject(self, plugin_factory: Callable[[], Any]) -> HookSubject:
        return HookSubject(plugin_factory)

    @pytest.fixture
    def settings_model(self, plugin_factory: Callable[[], Any]) -> type[BaseModel] | None:
        plugin = plugin_factory()
        model = getattr(plugin if isinstance(plugin, type) else type(plugin), "settings_model", None)
        return model if isinstance(model, type) and issubclass(model, BaseModel) else None


add_check_tests(HookContract, HOOK_CHECKS, "hook_subject")
