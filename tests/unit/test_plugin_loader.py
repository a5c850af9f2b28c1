"""The loader's checks on installed plugins, with real distributions written to a directory on ``sys.path``: a name
two distributions register, the API range a plugin declares, and deprecated hooks warning through pluggy."""

from __future__ import annotations

import logging
from pathlib import Path

import pluggy
import pytest

from payhub import hookspecs
from payhub import plugins as loader
from payhub.api import API_VERSION, PayhubDeprecationWarning
from payhub.errors import ConfigError
from payhub.plugins import api_version_problem, load_plugins
from payhub.settings import load_settings
from payhub.testing import write_distribution

RAIL_MODULE = '''
from payhub.api import Rail, RailCapabilities

class {name}(Rail):
    {declaration}

    @property
    def capabilities(self):
        return RailCapabilities(lookup=False)

    def send(self, instructions):
        return []
'''


def rail_module(name: str, declaration: str = "pass") -> str:
    return RAIL_MODULE.format(name=name, declaration=declaration)


def settings(directory: Path, text: str) -> Path:
    path = directory / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{directory / "payhub.db"}"\n{text}')
    return path


def test_two_distributions_registering_a_configured_name_is_a_settings_error_naming_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    write_distribution(site, "payhub-acme", "[payhub.rails]\nacme = loader_acme:AcmeRail\n"
                       "only_acme = loader_acme:AcmeRail\n", version="1.4",
                       modules={"loader_acme": rail_module("AcmeRail")})
    write_distribution(site, "acme-fork", "[payhub.rails]\nacme = loader_fork:ForkRail\n", version="2.0",
                       modules={"loader_fork": rail_module("ForkRail")})
    monkeypatch.syspath_prepend(str(site))

    with pytest.raises(ConfigError) as info:
        load_plugins(load_settings(settings(tmp_path, '[rails.pay]\nplugin = "acme"\n')))
    [(key, message)] = info.value.problems
    assert key == "rails.pay.plugin"
    assert "'acme'" in message and "payhub.rails" in message, message
    assert "payhub-acme 1.4" in message and "acme-fork 2.0" in message, message

    # A name only one of them registers is not ambiguous.
    loaded = load_plugins(load_settings(settings(tmp_path, '[rails.pay]\nplugin = "only_acme"\n')))
    [status] = loaded.statuses
    assert (status.state, status.distribution, status.version) == ("loaded", "payhub-acme", "1.4")


def test_a_plugin_is_failed_when_its_api_range_excludes_this_payhub(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    modules = {
        "loader_compat": rail_module("Compat", 'api_version = ">=1.0,<2"'),
        "loader_future": rail_module("Future", 'api_version = ">=2,<3"'),
        "loader_garbled": rail_module("Garbled", 'api_version = "one point oh"'),
        "loader_number": rail_module("Number", "api_version = 1.0"),
        "loader_silent": rail_module("Silent"),
        "loader_future_hook": 'api_version = ">=2"\n',
    }
    write_distribution(site, "payhub-ranges", "[payhub.rails]\ncompat = loader_compat:Compat\n"
                       "future = loader_future:Future\ngarbled = loader_garbled:Garbled\n"
                       "number = loader_number:Number\nsilent = loader_silent:Silent\n"
                       "[payhub.hooks]\nfuture_hook = loader_future_hook\n", modules=modules)
    monkeypatch.syspath_prepend(str(site))
    text = "".join(f"[rails.{name}]\n" for name in ("compat", "future", "garbled", "number", "silent"))
    loaded = load_plugins(load_settings(settings(tmp_path, text + "[hooks.future_hook]\n")))

    status = {s.section: s for s in loaded.statuses}
    assert {name for name, s in status.items() if s.state == "loaded"} == {"compat", "silent"}
    assert set(loaded.rails) == {"compat", "silent"}
    assert status["future"].reason == (f"incompatible: it supports api_version '>=2,<3', and this payhub's "
                                       f"payhub.api.API_VERSION is {API_VERSION}")
    assert status["future_hook"].reason is not None and "'>=2'" in status["future_hook"].reason
    assert loaded.failed_hooks() == ["future_hook"]
    garbled = status["garbled"].reason or ""
    assert garbled.startswith("api_version 'one point oh' is not a version range such as '>=1.0,<2'"), garbled
    assert API_VERSION in garbled
    assert (status["number"].reason or "").startswith("api_version must be a version range such as '>=1.0,<2'")


@pytest.mark.parametrize(("declared", "fits"), [
    (None, True), (">=1.0,<2", True), ("~=1.0", True), (f"=={API_VERSION}", True), (">=1", True),
    ("<1.0", False), (">=2", False), ("", False), (">= 1.0 <2", False), (1, False),
])
def test_api_version_ranges(declared: object, fits: bool) -> None:
    class Plugin:
        pass

    if declared is not None:
        Plugin.api_version = declared  # type: ignore[attr-defined]
    assert (api_version_problem(Plugin) is None) == fits


class DeprecatedSpecs:
    """A hook that is being retired, as payhub.hookspecs would declare it."""

    @pluggy.HookspecMarker("payhub")(warn_on_impl=PayhubDeprecationWarning(
        "payhub_old_notice is deprecated since API 1.0 and goes in 2.0: implement payhub_payout_failed instead"))
    def payhub_old_notice(self, payout: object) -> None:
        """Observe something, the old way."""


def test_implementing_a_deprecated_hook_warns_and_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def with_deprecated_spec() -> pluggy.PluginManager:
        pm = pluggy.PluginManager("payhub")
        pm.add_hookspecs(hookspecs)
        pm.add_hookspecs(DeprecatedSpecs)
        return pm

    monkeypatch.setattr(loader, "new_plugin_manager", with_deprecated_spec)
    site = tmp_path / "site"
    write_distribution(site, "payhub-old-hooks", "[payhub.hooks]\nold = loader_old_hook\nnew = loader_new_hook\n",
                       modules={"loader_old_hook": "from payhub.api import hookimpl\n\n@hookimpl\n"
                                                   "def payhub_old_notice(payout):\n    pass\n",
                                "loader_new_hook": "from payhub.api import hookimpl\n\n@hookimpl\n"
                                                   "def payhub_payout_failed(payout, outcome, reason):\n    pass\n"})
    monkeypatch.syspath_prepend(str(site))
    config = settings(tmp_path, "[hooks.old]\n[hooks.new]\n")

    with caplog.at_level(logging.WARNING, logger="payhub.plugins"), \
            pytest.warns(PayhubDeprecationWarning, match="payhub_old_notice is deprecated") as warned:
        loaded = load_plugins(load_settings(config))
    assert len(warned) == 1
    assert [s.state for s in loaded.statuses] == ["loaded", "loaded"]  # deprecated is not failed
    [record] = [r for r in caplog.records if r.name == "payhub.plugins"]
    assert record.getMessage().startswith("plugin hooks.old: PayhubDeprecationWarning: payhub_old_notice is deprecated")


def test_the_installed_entry_points_are_read_once_for_every_kind_and_loading_sees_the_same_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    write_distribution(site, "payhub-once", "[payhub.rails]\nonce_rail = loader_once:OnceRail\n"
                       "[payhub.sources]\nonce_source = loader_once:Missing\n", version="3.1",
                       modules={"loader_once": rail_module("OnceRail")})
    monkeypatch.syspath_prepend(str(site))
    scans: list[object] = []
    real = loader.entry_points

    def counted(**params: object) -> object:
        scans.append(params)
        return real(**params)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "entry_points", counted)
    text = ('[sources.crm]\nplugin = "file"\npath = "deals.csv"\n[programs.bonus]\ncalculator = "flat"\n'
            'amount = "5"\ncurrency = "USD"\n[rails.pay]\nplugin = "once_rail"\n[rails.gone]\nplugin = "once_source"\n')
    with pytest.raises(ConfigError) as info:  # a rail name that only the sources group registers
        load_plugins(load_settings(settings(tmp_path, text)))
    assert [key for key, _ in info.value.problems] == ["rails.gone.plugin"]
    assert scans == [{}]  # one pass over the distributions for sources, calculators and rails

    scans.clear()
    loaded = load_plugins(load_settings(settings(tmp_path, text.split("[rails.gone]")[0])))
    assert scans == [{}]
    by_section = {status.section: status for status in loaded.statuses}
    assert by_section["pay"].state == "loaded", by_section["pay"].reason
    assert (by_section["pay"].distribution, by_section["pay"].version) == ("payhub-once", "3.1")
    assert by_section["crm"].state == by_section["bonus"].state == "loaded"
    assert by_section["crm"].distribution == by_section["bonus"].distribution == "payhub"
