"""Loading plugins by name from the settings file (an allow-list), through stevedore and pluggy.

Start-up stops with a ConfigError when the settings name a plugin that is not installed, a name that two installed
distributions register in the same group, or give a plugin invalid settings. A plugin that is installed but fails
to import, declares an ``api_version`` range that excludes :data:`payhub.api.API_VERSION`, or fails to start is
recorded as failed with the reason, and everything else runs: its source is not polled; its programs record a
failed calculation with the reason (re-run them with ``payhub calculations retry`` once fixed); rewards routed only
to its rail are held with the reason.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, EntryPoints, entry_points
from typing import Any

import pluggy
from pydantic import ValidationError
from stevedore import NamedExtensionManager

from payhub import hookspecs, metrics
from payhub.api import API_VERSION, Calculator, Rail, RailCapabilities, Source
from payhub.errors import ConfigError
from payhub.settings import Settings, validation_problems

log = logging.getLogger(__name__)

GROUPS = {
    "source": "payhub.sources",
    "calculator": "payhub.calculators",
    "rail": "payhub.rails",
    "hook": "payhub.hooks",
}
BASES: dict[str, type] = {"source": Source, "calculator": Calculator, "rail": Rail}


@dataclass(frozen=True, slots=True)
class PluginStatus:
    """One configured plugin as ``payhub plugins list`` shows it."""

    section: str
    kind: str
    plugin: str
    distribution: str | None
    version: str | None
    state: str  # loaded | failed
    reason: str | None = None

    @property
    def key(self) -> str:
        """The dotted settings key of its section, e.g. ``sources.crm`` or ``programs.bonus``."""
        return _key(self.kind, self.section)


@dataclass
class Plugins:
    """What the settings enabled: instances by section name, plus the hook manager and each plugin's status."""

    sources: dict[str, Source] = field(default_factory=dict)
    calculators: dict[str, Calculator] = field(default_factory=dict)  # by program name
    rails: dict[str, Rail] = field(default_factory=dict)
    hooks: pluggy.PluginManager = field(default_factory=lambda: new_plugin_manager())
    statuses: list[PluginStatus] = field(default_factory=list)
    validated: dict[str, Any] = field(default_factory=dict)  # "sources.x" -> the plugin's settings model

    def failed(self, kind: str, section: str) -> str | None:
        """The failure reason of a configured plugin, or None if it loaded."""
        for status in self.statuses:
            if status.kind == kind and status.section == section and status.state == "failed":
                return status.reason
        return None

    def failed_hooks(self) -> list[str]:
        """The sections of the configured hook plugins that failed: no payout is sent while there is one, since a
        screening check the settings ask for might be missing."""
        return [status.section for status in self.statuses if status.kind == "hook" and status.state == "failed"]

    def close(self) -> None:
        closing: list[Source | Rail] = [*self.sources.values(), *self.rails.values()]
        for plugin in closing:
            try:
                plugin.close()
            except Exception:  # noqa: BLE001 - shutting down; the rest must close too
                log.exception("closing plugin %s failed", plugin.name)


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("payhub")
    pm.add_hookspecs(hookspecs)
    return pm


Dist = tuple[str | None, str | None]  # (distribution name, version) of an entry point


def _distributions(installed: Iterable[EntryPoint], names: Iterable[str],
                   read: dict[int, Dist] | None = None) -> dict[str, list[Dist]]:
    """Entry-point name -> the distributions registering it among ``installed`` (one group's entry points; one
    distribution, unless two claim the name); every installed name is a key, but only those in ``names`` have their
    distributions read (the costly part: each distribution's metadata is parsed once, and kept in ``read``)."""
    wanted = set(names)
    read = {} if read is None else read
    found: dict[str, list[Dist]] = {}
    for ep in installed:
        found.setdefault(ep.name, [])
        if ep.name not in wanted:
            continue  # listed by name only
        dist = ep.dist
        if dist is None:
            named: Dist = (None, None)
        elif (named_ := read.get(id(dist))) is not None:
            named = named_
        else:
            metadata = dist.metadata  # parsed on each access: read once for both fields
            named = read[id(dist)] = (metadata["Name"], metadata["Version"])
        if named not in found[ep.name]:
            found[ep.name].append(named)
    return found


def _ambiguous(kind: str, name: str, group: str, dists: list[Dist]) -> str:
    shown = " and ".join(f"{dist or 'an unnamed distribution'} {version or ''}".rstrip() for dist, version in dists)
    return (f"the {kind} plugin name {name!r} is registered in {group} by {len(dists)} distributions: {shown}; "
            "uninstall all but one")


def api_version_problem(plugin: object) -> str | None:
    """Why ``plugin`` (a class, module or object) cannot run on this payhub's :data:`payhub.api.API_VERSION`, or None.

    A plugin may declare ``api_version``, a PEP 440 specifier set such as ``">=1.0,<2"``; without one it is taken as
    compatible. A declared range that excludes API_VERSION, or that is not a specifier set, is a problem.
    """
    declared = getattr(plugin, "api_version", None)
    if declared is None:
        return None
    if not isinstance(declared, str) or not declared.strip():
        return (f"api_version must be a version range such as '>=1.0,<2' (payhub.api.API_VERSION is {API_VERSION}), "
                f"not {declared!r}")
    from packaging.specifiers import InvalidSpecifier, SpecifierSet  # here: only a plugin that declares a range

    try:
        supported = SpecifierSet(declared)
    except InvalidSpecifier as exc:
        return (f"api_version {declared!r} is not a version range such as '>=1.0,<2' ({exc}); payhub.api.API_VERSION "
                f"is {API_VERSION}")
    if not supported.contains(API_VERSION, prereleases=True):
        return (f"incompatible: it supports api_version {declared!r}, and this payhub's payhub.api.API_VERSION is "
                f"{API_VERSION}")
    return None


def _reported_below(_names: object) -> None:
    """Stevedore's missing-names callback: instead of its own warning, load_plugins names each plugin that is not
    installed in its ConfigError (the settings key, the name, what is installed)."""


def _wanted(settings: Settings) -> list[tuple[str, str, str, Any]]:
    """(kind, section name, entry-point name, section) for every enabled section."""
    wanted = []
    for kind, sections in (
        ("source", settings.sources),
        ("calculator", settings.programs),
        ("rail", settings.rails),
        ("hook", settings.hooks),
    ):
        for name, section in sections.items():
            if section.enabled:
                wanted.append((kind, name, section.plugin_name(name), section))
    return wanted


def _key(kind: str, section: str) -> str:
    table = {"source": "sources", "calculator": "programs", "rail": "rails", "hook": "hooks"}[kind]
    return f"{table}.{section}"


def load_plugins(settings: Settings, kinds: set[str] | None = None, *,
                 instances: Mapping[str, Any] | None = None) -> Plugins:
    """Load and start every enabled plugin (of ``kinds``, default all); raise ConfigError for unknown names or
    invalid plugin settings.

    ``instances`` maps section keys (``rails.fake``, ``programs.bonus``) to plugin objects used as given, without
    entry points or settings validation (stevedore's test instances; ``payhub.testing.Harness`` passes them)."""
    given = instances or {}
    wanted = [w for w in _wanted(settings) if kinds is None or w[0] in kinds]
    plugins = Plugins()
    problems: list[tuple[str, str]] = []
    classes: dict[tuple[str, str], Any] = {}
    failures: dict[tuple[str, str], str] = {}
    dists: dict[str, dict[str, list[Dist]]] = {}
    by_group: dict[str, EntryPoints] | None = None  # every group's entry points, read in one pass over the dists
    read: dict[int, Dist] = {}  # (name, version) by distribution object, for the entry points of ``by_group``

    for kind, group in GROUPS.items():
        names = sorted({ep for k, s, ep, _sec in wanted if k == kind and _key(k, s) not in given})
        if not names:
            continue
        if by_group is None:
            every = entry_points()
            by_group = {name: every.select(group=name) for name in GROUPS.values()}
        group_eps = by_group[group]
        dists[kind] = _distributions(group_eps, names, read)
        names = [name for name in names if len(dists[kind].get(name, ())) < 2]  # two claimants: a settings error
        if not names:
            continue

        def on_failure(_mgr: Any, ep: Any, exc: BaseException, kind: str = kind) -> None:
            failures[(kind, ep.name)] = f"failed to load {ep.value}: {type(exc).__name__}: {exc}"

        # stevedore keeps a per-process list of each group's entry points (read from its own cache of every
        # group's): it is given the list read above, so that loading sees the same installed plugins as
        # _distributions, even when plugins were installed since the last load, without a second scan.
        NamedExtensionManager.ENTRY_POINT_CACHE[group] = list(group_eps)
        manager = NamedExtensionManager(
            group, names, invoke_on_load=False, on_load_failure_callback=on_failure, propagate_map_exceptions=False,
            on_missing_entrypoints_callback=_reported_below,
        )
        for ext in manager.extensions:
            classes[(kind, ext.name)] = ext.plugin

    for kind, section_name, ep_name, section in wanted:
        key = _key(kind, section_name)
        if key in given:
            _register(plugins, kind, section_name, given[key])
            plugins.statuses.append(PluginStatus(section_name, kind, ep_name, None, None, "loaded"))
            continue
        field_name = "calculator" if kind == "calculator" else "plugin"
        if ep_name not in dists.get(kind, {}):
            installed = ", ".join(sorted(dists.get(kind, {}))) or "none"
            problems.append((f"{key}.{field_name}", f"no {kind} plugin named {ep_name!r} is installed "
                             f"(installed: {installed})"))
            continue
        if len(claimants := dists[kind][ep_name]) > 1:
            problems.append((f"{key}.{field_name}", _ambiguous(kind, ep_name, GROUPS[kind], claimants)))
            continue
        [(dist, version)] = claimants
        reason = failures.get((kind, ep_name))
        if reason is None and (kind, ep_name) not in classes:
            reason = "failed to load: the entry point was not found when loading"
        instance = None
        if reason is None:
            reason = api_version_problem(classes[(kind, ep_name)])
        if reason is None:
            target = classes[(kind, ep_name)]
            try:
                instance, problem = _start(kind, section_name, target, section, settings, key, plugins)
            except Exception as exc:  # noqa: BLE001 - a plugin failing to start is isolated
                reason = f"failed to start: {type(exc).__name__}: {exc}"
            else:
                if problem:
                    problems.extend(problem)
                    continue
        if reason is None:
            try:
                _register(plugins, kind, section_name, instance)
            except Exception as exc:  # noqa: BLE001 - e.g. a hook with a wrong signature or an unknown name
                reason = f"failed to register: {type(exc).__name__}: {exc}"
        if reason is not None:
            log.error("plugin %s (%s) failed: %s", key, ep_name, reason)
            metrics.plugin_failed(kind, section_name, "load")
        plugins.statuses.append(
            PluginStatus(section_name, kind, ep_name, dist, version, "failed" if reason else "loaded", reason)
        )
    if problems:
        raise ConfigError(problems)
    return plugins


def _start(
    kind: str, section_name: str, target: Any, section: Any, settings: Settings, key: str, plugins: Plugins
) -> tuple[Any, list[tuple[str, str]]]:
    """Validate the plugin's settings and instantiate it; return (instance, problems)."""
    base = BASES.get(kind)
    if base is not None and not (isinstance(target, type) and issubclass(target, base)):
        raise TypeError(f"{target!r} is not a payhub.api.{base.__name__} subclass")
    model = getattr(target, "params_model" if kind == "calculator" else "settings_model", None)
    raw: Mapping[str, Any] = section.plugin_settings()
    if model is None:
        if raw:
            return None, [(f"{key}.{name}", "unknown key (this plugin takes no settings)") for name in raw]
        model_settings = None
    else:
        try:
            # The database URL lets a built-in plugin read what payhub stores (the sanctions lists).
            model_settings = model.model_validate(raw, context={"base_dir": settings.base_dir,
                                                                "database_url": settings.database_url})
        except ValidationError as exc:
            return None, validation_problems(exc, prefix=key)
        plugins.validated[key] = model_settings
    if kind == "hook":
        return (target(model_settings) if isinstance(target, type) else target), []
    instance = target(section_name, model_settings)
    if kind == "rail":  # read once here, so a rail whose guarantees cannot be read fails alone, at start-up
        caps = instance.capabilities
        if not isinstance(caps, RailCapabilities):
            raise TypeError(f"capabilities is {type(caps).__name__}, not payhub.api.RailCapabilities")
    return instance, []


def _register(plugins: Plugins, kind: str, section_name: str, instance: Any) -> None:
    if kind == "source":
        plugins.sources[section_name] = instance
    elif kind == "calculator":
        plugins.calculators[section_name] = instance
    elif kind == "rail":
        plugins.rails[section_name] = instance
    else:
        with warnings.catch_warnings(record=True) as caught:  # a deprecated hook's warn_on_impl (pluggy)
            warnings.simplefilter("always")
            plugins.hooks.register(instance, name=section_name)
        for warning in caught:  # logged with the plugin's key, and passed on
            log.warning("plugin %s: %s: %s", _key(kind, section_name), warning.category.__name__, warning.message)
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        try:
            plugins.hooks.check_pending()  # an implementation of a hook that does not exist (a misspelt name)
        except Exception:
            plugins.hooks.unregister(name=section_name)
            raise


def notify(hook: Any, **kwargs: Any) -> None:
    """Call every implementation of the observer hook ``hook`` with ``kwargs``, each on its own.

    An implementation that raises is logged with its plugin's key and counted (``payhub_plugin_failures``, reason
    ``error``); the others are still called, in pluggy's order. Nothing is raised.
    """
    for impl in reversed(hook.get_hookimpls()):
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception:  # noqa: BLE001 - one observer must not stop the others, nor the caller
            log.exception("plugin %s: %s failed", _key("hook", impl.plugin_name), hook.name)
            metrics.plugin_failed("hook", impl.plugin_name, "error")
