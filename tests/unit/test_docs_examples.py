"""The settings examples in the docs are valid: every TOML block of docs/programs.md and docs/settings.md parses,
and every program in them loads with its calculator's parameters, so the docs cannot drift from the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from payhub.plugins import load_plugins
from payhub.settings import load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(name: str) -> list[str]:
    return BLOCK.findall((DOCS / name).read_text(encoding="utf-8"))


EXAMPLES = [pytest.param(text, id=f"{name}-{number}") for name in ("programs.md", "settings.md")
            for number, text in enumerate(blocks(name), start=1)]


def test_the_docs_have_examples() -> None:
    complete = [t for t in blocks("programs.md") if "programs" in tomllib.loads(t) and "..." not in t]
    assert len(complete) >= 8  # one per calculator


@pytest.mark.parametrize("text", EXAMPLES)
def test_a_docs_example_parses_and_its_programs_load(text: str, tmp_path: Path) -> None:
    parsed = tomllib.loads(text)
    if "programs" not in parsed or "..." in text:
        return  # a fragment (another section, or parameters left out on purpose): valid TOML is what it can show
    rails = "" if "rails" in parsed else '\n[rails.csv_export]\ndirectory = "out"\n'
    path = tmp_path / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n' + rails + "\n" + text)
    settings = load_settings(path)
    plugins = load_plugins(settings, kinds={"calculator"})
    assert set(plugins.calculators) == {name for name, p in parsed["programs"].items() if p.get("enabled", True)}
