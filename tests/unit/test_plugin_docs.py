"""docs/plugins.md stays true to the code: the built-in plugins it lists are the entry points the ``payhub``
distribution registers, the first-party plugin distributions are named with their entry points, and every hook
declared in ``payhub.hookspecs`` is documented in its Hooks table (and nothing else is)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import distribution
from pathlib import Path

from payhub import hookspecs
from payhub.plugins import GROUPS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "plugins.md").read_text()


def section(title: str) -> str:
    """The text of the ``## title`` section of docs/plugins.md."""
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end != -1 else None]


def documented_builtins() -> dict[str, set[str]]:
    """Entry-point group -> the names in the "built in" column of the Kinds of plugins table."""
    found = {}
    for line in section("Kinds of plugins").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`payhub."):
            found[cells[0].strip("`")] = set(re.findall(r"`([A-Za-z0-9_]+)`", cells[3]))
    return found


def test_the_built_ins_listed_are_the_registered_entry_points() -> None:
    registered: dict[str, set[str]] = {group: set() for group in GROUPS.values()}
    for ep in distribution("payhub").entry_points:
        if ep.group in registered:
            registered[ep.group].add(ep.name)
    assert documented_builtins() == registered
    assert len(registered["payhub.calculators"]) == 10
    assert registered["payhub.hooks"] == {"ecb_rates", "sanctions"}


def test_the_first_party_distributions_are_named_with_their_entry_points() -> None:
    kinds = section("Kinds of plugins")
    named = 0
    for pyproject in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for group, entries in project.get("entry-points", {}).items():
            assert group in GROUPS.values(), (pyproject, group)
            for name in entries:
                assert f"`{name}` (`{project['name']}`)" in kinds, (name, project["name"])
                named += 1
    assert named == 5


def test_every_hookspec_is_documented_in_the_hooks_table() -> None:
    declared = {name for name in dir(hookspecs)
                if name.startswith("payhub_") and hasattr(getattr(hookspecs, name), "payhub_spec")}
    documented = set(re.findall(r"^\| `(payhub_[a-z_]+)\(", section("Hooks"), flags=re.MULTILINE))
    assert declared == documented
    assert len(declared) == 10


def test_the_payout_failed_row_names_every_outcome_the_hookspec_names() -> None:
    [row] = [line for line in section("Hooks").splitlines() if line.startswith("| `payhub_payout_failed(")]
    spec = hookspecs.payhub_payout_failed.__doc__ or ""
    outcomes = {"rejected", "returned", "failed", "cancelled", "held", "unresolved"}
    for outcome in outcomes:
        assert f"``{outcome}``" in spec, outcome
        assert f"`{outcome}` (" in row, outcome
    assert "not called for a payout an operator cancels" not in row
