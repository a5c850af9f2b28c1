"""``SourceContract``: the pytest suite every source passes (the rules are in :mod:`.source_checks`).

Subclass it in the plugin's tests and provide fixtures:

``plugin_factory`` (required)
    A zero-argument callable returning a new, configured source pointed at the test system.
``upstream`` (required for most checks; None skips them)
    An object with ``add(n)`` that makes ``n`` more records available in that system, each newer than the ones
    before.
``faults`` (default None)
    An object with ``plan(*SourceFault)``: ``"transient"`` (429/503/timeout) and ``"permanent"`` (401/403), each
    consumed by the source's next request. With None the two error checks are skipped.
``fetch_limit`` (default 2)
    The ``limit`` the checks fetch with.

Class attribute ``rereads_boundary`` (default False): set it when the source, by design, reads the records at its
boundary again at each new sync (a lookback window, ties on a timestamp) and relies on dedup by key; the checks then
take a fetch at the end that returns only records already returned (same cursor, ``more`` false) as the end.

Tests are named ``test_<check>`` after :data:`~payhub.testing.contracts.source_checks.SOURCE_CHECKS`, plus the
:class:`~payhub.testing.contracts.settings.SettingsContract` tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest
from pydantic import BaseModel

from payhub.api import Source
from payhub.testing.contracts._pytest import add_check_tests
from payhub.testing.contracts.settings import SettingsContract
from payhub.testing.contracts.settings_checks import PluginKind
from payhub.testing.contracts.source_checks import SOURCE_CHECKS, SourceFaults, SourceSubject, Upstream

__all__ = ["SourceContract"]


class SourceContract(SettingsContract):
    """Limit respected; repeatable from a cursor; the cursor moves forward; an empty fetch keeps its place;
    errors classified."""

    plugin_kind: ClassVar[PluginKind] = "source"
    rereads_boundary: ClassVar[bool] = False

    @pytest.fixture
    def faults(self) -> SourceFaults | None:
        return None

    @pytest.fixture
    def upstream(self) -> Upstream | None:
        return None

    @pytest.fixture
    def fetch_limit(self) -> int:
        return 2

    @pytest.fixture
    def source_subject(self, plugin_factory: Callable[[], Source], upstream: Upstream | None,
                       faults: SourceFaults | None, fetch_limit: int) -> SourceSubject:
        return SourceSubject(plugin_factory, upstream, faults, fetch_limit, rereads_boundary=self.rereads_boundary)

    @pytest.fixture
    def settings_model(self, plugin_factory: Callable[[], Source]) -> type[BaseModel]:
        source = plugin_factory()
        try:
            return type(source).settings_model
        finally:
            source.close()


add_check_tests(SourceContract, SOURCE_CHECKS, "source_subject")
