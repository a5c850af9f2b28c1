"""``payhub.api`` is the whole public API, documented: its ``__all__`` is sorted, every name in it is documented in
docs/plugins.md "The public API" with a contract, nothing documented there is missing, and the submodules re-export
the core's implementations (one place for each concept) rather than copies."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import payhub.api
from payhub import clock, errors, files, money, states
from payhub.api import versions

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
SUBMODULES = sorted(info.name for info in pkgutil.iter_modules(payhub.api.__path__))


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end != -1 else None]


def documented() -> dict[str, str]:
    """Name -> its contract, from the tables of "The public API"."""
    rows = re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \| (.+) \|$", section("The public API"), flags=re.MULTILINE)
    names = [name for name, _contract in rows]
    assert len(names) == len(set(names)), "a name is documented twice"
    return dict(rows)


def test_all_is_sorted_and_unique() -> None:
    assert payhub.api.__all__ == sorted(set(payhub.api.__all__))
    for name in SUBMODULES:
        module = importlib.import_module(f"payhub.api.{name}")
        assert module.__all__ == sorted(set(module.__all__)), name


def test_every_public_name_is_documented_and_nothing_else() -> None:
    docs = documented()
    assert sorted(docs) == payhub.api.__all__
    assert all(len(contract.strip()) > 10 for contract in docs.values())


def test_every_name_exists_and_comes_from_a_documented_submodule() -> None:
    exported: dict[str, object] = {}
    for name in SUBMODULES:
        module = importlib.import_module(f"payhub.api.{name}")
        assert module.__doc__, name
        assert f"**`payhub.api.{name}`**" in section("The public API"), name
        for public in module.__all__:
            exported.setdefault(public, getattr(module, public))
    for name in payhub.api.__all__:
        assert getattr(payhub.api, name) is exported[name], name


@pytest.mark.parametrize(("submodule", "core"), [
    ("errors", errors), ("money", money), ("clock", clock), ("states", states), ("files", files)])
def test_re_exports_are_the_core_implementations(submodule: str, core: object) -> None:
    module = importlib.import_module(f"payhub.api.{submodule}")
    for name in module.__all__:
        assert getattr(module, name) is getattr(core, name), name


def test_the_error_tree_is_whole() -> None:
    tree = {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.PayhubError)}
    assert tree <= set(payhub.api.__all__)


def test_the_version_is_major_dot_minor() -> None:
    assert re.fullmatch(r"[1-9][0-9]*\.[0-9]+", versions.API_VERSION)
    assert issubclass(payhub.api.PayhubDeprecationWarning, DeprecationWarning)
    assert f"`payhub.api.API_VERSION` (`\"{versions.API_VERSION}\"`)" in section("API versions and compatibility")
