"""``payhub screening refresh``: read the configured list files and the lists provider plugins give, store each
new version that passes the checks of :mod:`.checks`, audit each list (loaded, unchanged, refused or failed), and
retire the lists no longer configured nor provided."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pluggy

from payhub import metrics
from payhub.api import SanctionsList
from payhub.compliance.sanctions import store
from payhub.compliance.sanctions.checks import Counts, Gate
from payhub.compliance.sanctions.config import SanctionsSettings
from payhub.compliance.sanctions.formats import MAX_PROBLEMS, ListFileError, bounded, read_list

if TYPE_CHECKING:
    from payhub.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What happened to one list: ``loaded``, ``unchanged``, ``confirmed`` (unchanged, its files fetched again:
    the version's age counts from then), ``refused`` or ``failed`` (with ``reason``; the previous version, if any,
    stays current), or ``retired`` (no longer configured nor provided)."""

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


def _gate(settings: SanctionsSettings, counts: Counts, name: str, accept_drop: Collection[str]) -> Gate:
    return Gate(counts, settings.max_skipped_share, settings.max_drop_share, name in accept_drop)


def refresh(rt: Runtime, settings: SanctionsSettings, accept_drop: Collection[str] = ()) -> list[Refreshed]:
    """Load every configured list and every provided one; each is checked, stored and audited on its own. A drop
    in entries beyond ``max_drop_share`` is accepted only for the lists named in ``accept_drop``. Then the current
    lists neither configured nor provided are retired (those of a provider that failed this time are kept)."""
    done: list[Refreshed] = []
    for item in settings.lists:
        try:
            parsed = read_list(item.name, item.format, item.files, settings.max_file_bytes)
        except ListFileError as exc:
            store.record_failure(rt, item.name, item.format, str(exc))
            done.append(Refreshed(item.name, item.format, "failed", reason=str(exc)))
            continue
        detail: dict[str, Any] = {"files": [{"file": name, "sha256": digest} for name, digest in parsed.files],
                                  "skipped": parsed.skipped, "problems": parsed.problems[:20]}
        counts = Counts(len(parsed.content.entries), parsed.records, parsed.skipped, parsed.declared)
        result = store.store_list(rt, parsed.content, item.format, detail,
                                  _gate(settings, counts, item.name, accept_drop))
        done.append(Refreshed(item.name, item.format, result.outcome, result.version, parsed.skipped,
                              tuple(parsed.problems), result.reason))
    configured = {item.name for item in settings.lists}
    lists, failures = provided_lists(rt.plugins.hooks)
    for plugin, reason in failures:
        name = f"hooks.{plugin}"
        store.record_failure(rt, name, f"hook:{plugin}", reason)
        done.append(Refreshed(name, f"hook:{plugin}", "failed", reason=reason))
    wanted = set(configured)
    for plugin, provided in lists:
        fmt = f"hook:{plugin}"
        if provided.name in wanted or not provided.name:
            reason = f"the list name {provided.name!r} is empty or already used by another list"
            store.record_failure(rt, provided.name or plugin, fmt, reason)
            done.append(Refreshed(provided.name or plugin, fmt, "failed", reason=reason))
            continue
        wanted.add(provided.name)
        kept, too_large = bounded(provided.entries)
        counts = Counts(len(kept), len(provided.entries), len(too_large))
        result = store.store_list(rt, replace(provided, entries=tuple(kept)), fmt,
                                  {"provider": plugin, "skipped": len(too_large), "problems": too_large[:20]},
                                  _gate(settings, counts, provided.name, accept_drop))
        done.append(Refreshed(provided.name, fmt, result.outcome, result.version, len(too_large),
                              tuple(too_large[:MAX_PROBLEMS]), result.reason))
    kept_formats = {f"hook:{plugin}" for plugin, _reason in failures}
    with rt.engine.connect() as conn:
        retired = [v for v in store.current_lists(conn) if v.name not in wanted and v.format not in kept_formats]
    store.retire(rt, retired)
    done.extend(Refreshed(v.name, v.format, "retired", v) for v in retired)
    return done
