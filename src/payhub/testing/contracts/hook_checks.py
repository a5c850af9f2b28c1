"""The rules of a hook plugin: pluggy's own validation against payhub's hook specifications.

The plugin is registered with a :class:`pluggy.PluginManager` for project ``payhub`` holding
:mod:`payhub.hookspecs`, as the core does: pluggy refuses an implementation whose arguments the specification
does not have, and ``check_pending`` one whose name no specification declares (a misspelt hook).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from payhub import hookspecs
from payhub.plugins import new_plugin_manager
from payhub.testing.contracts.checks import Check, ContractViolation

__all__ = ["HOOK_CHECKS", "HookSubject"]


@dataclass
class HookSubject:
    """A hook plugin under test: ``factory`` makes the object registered with pluggy (an instance or a module)."""

    factory: Callable[[], Any]


def hookimpls_match_specs(subject: HookSubject) -> None:
    pm = new_plugin_manager()
    try:
        pm.register(subject.factory(), name="under-test")
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ContractViolation(f"pluggy refused the hook plugin: {exc} (payhub.hookspecs declares "
                                f"{', '.join(sorted(_spec_names()))})") from exc


def _spec_names() -> list[str]:
    return [name for name in dir(hookspecs) if name.startswith("payhub_")]


def implements_a_hook(subject: HookSubject) -> None:
    pm = new_plugin_manager()
    plugin = subject.factory()
    try:
        pm.register(plugin, name="under-test")
    except pluggy.PluginValidationError:
        return  # reported by hookimpls_match_specs
    if not pm.get_hookcallers(plugin):
        raise ContractViolation("the plugin implements no hook: mark its functions with @payhub.api.hookimpl and "
                                f"name them after a hook of payhub.hookspecs ({', '.join(_spec_names())})")


HOOK_CHECKS: tuple[Check[HookSubject], ...] = (
    Check("hookimpls_match_specs", "every hookimpl names a payhub hookspec and takes only its arguments",
          hookimpls_match_specs),
    Check("implements_a_hook", "the plugin implements at least one hook", implements_a_hook),
)
"""The hook contract, in the order it is run."""
