"""The production distributions (payhub and the plugins under plugins/) contain no simulator and do not depend on
``payhub-simulators``: the simulators are a test tool, a distribution of their own."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = [ROOT / "src" / "payhub", *sorted(p / "src" for p in (ROOT / "plugins").glob("*") if (p / "src").is_dir())]


def modules() -> list[Path]:
    return [path for tree in PRODUCTION for path in tree.rglob("*.py")]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def simulator_imports(path: Path) -> list[str]:
    return sorted(n for n in imported(path)
                  if n.split(".")[0] == "payhub_simulators" or re.search(r"(^|\.)simulators?($|\.)", n))


def test_the_trees_scanned_are_the_production_ones() -> None:
    assert len(PRODUCTION) >= 6 and all(tree.is_dir() for tree in PRODUCTION)
    assert len(modules()) > 50


def test_no_simulator_module_in_a_production_tree() -> None:
    found = [str(p.relative_to(ROOT)) for p in modules() if "simulator" in p.stem.lower()]
    assert found == []


def test_no_production_module_imports_the_simulators() -> None:
    found = {str(p.relative_to(ROOT)): simulator_imports(p) for p in modules()}
    assert {path: names for path, names in found.items() if names} == {}


def test_simulators_are_a_test_dependency_only() -> None:
    for pyproject in [ROOT / "pyproject.toml", *sorted((ROOT / "plugins").glob("*/pyproject.toml"))]:
        project = tomllib.loads(pyproject.read_text())["project"]
        assert not [d for d in project.get("dependencies", []) if "simulator" in d], pyproject
        for extra, requirements in project.get("optional-dependencies", {}).items():
            if extra != "test":
                assert not [d for d in requirements if "simulator" in d], (pyproject, extra)


def test_the_scan_finds_a_simulator_import(tmp_path: Path) -> None:
    bad = tmp_path / "rail.py"
    bad.write_text("from payhub_simulators.giftcard import GiftCardSimulator\nimport payhub_x.simulator\n"
                   "import payhub_simulators\nfrom payhub.api import Rail\n")
    assert simulator_imports(bad) == ["payhub_simulators", "payhub_simulators.giftcard", "payhub_x.simulator"]
