"""``payhub screening refresh``: read the configured list files and the lists provider plugins give, store each
new version, audit each list (loaded, unchanged or failed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from payhub import metrics
from payhub.api import SanctionsList
from payhub.compliance.sanctions import store
from payhub.compliance.sanctions.config import SanctionsSettings
from payhub.compliance.sanctions.formats import ListFileError, read_list

if TYPE_CHECKING:
    from payhub.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What happened to one list: ``loaded``, ``unchanged`` or ``failed`` (with ``reason``)."""

    name: str
    format: str
    outcome: str
    version: store.StoredList | None = None
    skipped: int = 0
    problems: tuple[str, ...] = ()
    reason: str | None = None


def provided_lists(hooks: pluggy.PluginManager) -> tuple[list[tuple[str, SanctionsList]], list[tuple[str, str]]]:
    """The lists each ``payhub_sanctions_lists`` implementation gives, as (plugin, list), and (plugin, error) for
    each that raised or returned something else. One failing provider does not stop the others."""
    hook = hooks.hook.payhub_sanctions_lists
    found: list[tuple[str, SanctionsList]] = []
    failed: list[tuple[str, str]] = []
    for impl in reversed(hook.get_hookimpls()):
        try:
            result: Any = impl.function()
        except Exception as exc:  # noqa: BLE001 - one provider must not hide the other lists
            log.exception("plugin hooks.%s: payhub_sanctions_lists failed", impl.plugin_name)
            metrics.plugin_failed("hook", impl.plugin_name, "error")
            failed.append((impl.plugin_name, f"{type(exc).__name__}: {exc}"))
            continue
        for item in result or []:
            if isinstance(item, SanctionsList):
                found.append((impl.plugin_name, item))
            else:
                failed.append((impl.plugin_name, f"returned a {type(item).__name__}, not a payhub.api.SanctionsList"))
    return found, failed


def refresh(rt: Runtime, settings: SanctionsSettings) -> list[Refreshed]:
    """Load every configured list and every provided one; each is stored and audited on its own."""
    done: list[Refreshed] = []
    for item in settings.lists:
        try:
            parsed = read_list(item.name, item.format, item.files)
        except ListFileError as exc:
            store.record_failure(rt, item.name, item.format, str(exc))
            done.append(Refreshed(item.name, item.format, "failed", reason=str(exc)))
            continue
        detail: dict[str, Any] = {"files": [{"file": name, "sha256": digest} for name, digest in parsed.files],
                                  "skipped": parsed.skipped, "problems": parsed.problems[:20]}
        result = store.store_list(rt, parsed.content, item.format, detail)
        done.append(Refreshed(item.name, item.format, result.outcome, result.version, parsed.skipped,
                              tuple(parsed.problems)))
    configured = {item.name for item in settings.lists}
    lists, failures = provided_lists(rt.plugins.hooks)
    for plugin, reason in failures:
        name = f"hooks.{plugin}"
        store.record_failure(rt, name, f"hook:{plugin}", reason)
        done.append(Refreshed(name, f"hook:{plugin}", "failed", reason=reason))
    for plugin, provided in lists:
        fmt = f"hook:{plugin}"
        if provided.name in configured or not provided.name:
            reason = f"the list name {provided.name!r} is empty or already used by a configured list"
            store.record_failure(rt, provided.name or plugin, fmt, reason)
            done.append(Refreshed(provided.name or plugin, fmt, "failed", reason=reason))
            continue
        configured.add(provided.name)
        result = store.store_list(rt, provided, fmt, {"provider": plugin, "skipped": 0})
        done.append(Refreshed(provided.name, fmt, result.outcome, result.version))
    return done
