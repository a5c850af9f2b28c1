"""``SettingsContract``: the pytest suite for a plugin's settings model (see :mod:`.settings_checks`).

Subclass it with a ``settings_model`` fixture returning the model class and set ``plugin_kind`` (``"rail"``,
``"source"``, ``"calculator"`` or ``"hook"``); ``secret_exempt`` names keys that only look like secrets. The rail,
source, calculator and hook suites include it, reading the model from the plugin.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import BaseModel

from payhub.testing.contracts._pytest import add_check_tests
from payhub.testing.contracts.settings_checks import SETTINGS_CHECKS, PluginKind, SettingsSubject

__all__ = ["SettingsContract"]


class SettingsContract:
    """Secrets are ``SecretStr``; no key collides with a core key of the plugin's section."""

    plugin_kind: ClassVar[PluginKind]
    secret_exempt: ClassVar[frozenset[str]] = frozenset()

    @pytest.fixture
    def settings_subject(self, settings_model: type[BaseModel] | None) -> SettingsSubject:
        if settings_model is None:
            pytest.skip("the plugin declares no settings model")
        kind = getattr(self, "plugin_kind", None)
        if kind is None:
            pytest.fail(f"{type(self).__name__} must set plugin_kind (rail, source, calculator or hook)",
                        pytrace=False)
        return SettingsSubject(settings_model, kind, self.secret_exempt)


add_check_tests(SettingsContract, SETTINGS_CHECKS, "settings_subject")
