"""The import contract in pyproject.toml (run by ``lint-imports``) keeps the first-party plugins on the public API: it
must name every first-party plugin package and forbid every payhub module other than ``payhub.api``,
``payhub.hookspecs`` and ``payhub.testing``, so that a new core module cannot slip past it."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import payhub

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"payhub.api", "payhub.hookspecs", "payhub.testing"}


def importlinter() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return config


def boundary() -> dict[str, Any]:
    contracts: list[dict[str, Any]] = [c for c in importlinter()["contracts"] if c["type"] == "forbidden"]
    assert len(contracts) == 1
    return contracts[0]


def plugin_packages() -> set[str]:
    """The import packages of the first-party plugin distributions (plugins/*/src/<package>)."""
    return {path.parent.name for path in ROOT.glob("plugins/*/src/*/__init__.py")}


def test_every_payhub_module_but_the_public_ones_is_forbidden() -> None:
    modules = {f"payhub.{info.name}" for info in pkgutil.iter_modules(payhub.__path__)}
    assert modules >= PUBLIC
    assert set(boundary()["forbidden_modules"]) == modules - PUBLIC


def test_every_first_party_plugin_package_is_bound_by_it() -> None:
    packages = plugin_packages()
    assert len(packages) == 5, packages
    assert set(boundary()["source_modules"]) == packages
    assert set(importlinter()["root_packages"]) == packages | {"payhub"}


def test_direct_imports_are_what_is_checked() -> None:
    # payhub.api is built on the core, so a plugin reaches it indirectly through the API: only direct imports count.
    assert boundary()["allow_indirect_imports"] is True
    assert not boundary().get("ignore_imports")
