"""The first-party plugins' tests import from payhub only what a third party's tests may: ``payhub.api``,
``payhub.hookspecs`` and ``payhub.testing`` (and their submodules). Everything else of payhub is internal.

ALLOWED lists, per test file, the internal modules it still imports because the kit cannot express that test yet.
It may only shrink: an entry the file no longer needs fails the test too, so that it is removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = ("payhub.api", "payhub.hookspecs", "payhub.testing")

ALLOWED: dict[str, set[str]] = {
    # file (relative to the repository) -> internal payhub modules it imports, and why the kit cannot stand in yet.
}


def plugin_test_files() -> list[Path]:
    return sorted([*ROOT.glob("plugins/*/tests/*.py"), *ROOT.glob("plugins/integration/*.py")])


def payhub_imports(path: Path) -> set[str]:
    """Every payhub module ``path`` imports, at any depth (``from payhub import x`` counts as ``payhub.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "payhub":
                found.update(f"payhub.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return {name for name in found if name == "payhub" or name.startswith("payhub.")}


def internal(module: str) -> bool:
    return not any(module == public or module.startswith(public + ".") for public in PUBLIC)


def test_the_scan_sees_plugin_tests_and_every_kind_of_import(tmp_path: Path) -> None:
    assert len(plugin_test_files()) > 20
    sample = tmp_path / "test_sample.py"
    sample.write_text("import payhub.db\nfrom payhub import runtime, api\nfrom payhub.testing.harness import Harness\n"
                      "from payhub_bank import rail\nfrom . import local\n"
                      "def f():\n    from payhub.worker import Worker\n")
    assert payhub_imports(sample) == {"payhub.db", "payhub.runtime", "payhub.api", "payhub.testing.harness",
                                      "payhub.worker"}
    assert {m for m in payhub_imports(sample) if internal(m)} == {"payhub.db", "payhub.runtime", "payhub.worker"}


@pytest.mark.parametrize("path", plugin_test_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_tests_import_only_the_public_payhub(path: Path) -> None:
    name = str(path.relative_to(ROOT))
    used = {m for m in payhub_imports(path) if internal(m)}
    allowed = ALLOWED.get(name, set())
    assert used <= allowed, f"{name} imports payhub internals {sorted(used - allowed)}: use payhub.api or " \
                            "payhub.testing (add what a plugin's test needs to the kit)"
    assert allowed <= used, f"{name} no longer imports {sorted(allowed - used)}: remove them from ALLOWED"


def test_the_allow_list_names_existing_files() -> None:
    assert {name for name in ALLOWED if not (ROOT / name).is_file()} == set()
