"""Every hook declared in ``payhub.hookspecs`` is documented in docs/plugins.md "Hooks" and exercised by a test: some
test file under tests/ or plugins/*/tests implements it with ``@hookimpl`` (in Python, or in the source of a test
distribution it writes), so a new hook cannot ship undocumented or untested."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from payhub import hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "plugins.md").read_text()
# ``@hookimpl`` (or ``@payhub.api.hookimpl``, with or without options), then ``def <hook>(`` on the next line.
IMPLEMENTED = re.compile(r"@(?:[\w.]+\.)?hookimpl(?:\([^)]*\))?[ \t]*\\?n?\s*(?:async\s+)?def (payhub_\w+)\(")


def declared() -> list[str]:
    return sorted(name for name in dir(hookspecs)
                  if name.startswith("payhub_") and hasattr(getattr(hookspecs, name), "payhub_spec"))


def hooks_section() -> str:
    start = DOC.index("\n## Hooks\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end != -1 else None]


def implemented_in_tests() -> dict[str, list[str]]:
    """Hook name -> the test files that implement it."""
    found: dict[str, list[str]] = {}
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py")]
    for path in sorted(files):
        for name in set(IMPLEMENTED.findall(path.read_text(encoding="utf-8"))):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_hooks_are_found() -> None:
    assert len(declared()) >= 6
    assert "payhub_payout_settled" in declared()


@pytest.mark.parametrize("hook", declared())
def test_the_hook_is_documented_in_the_hooks_table(hook: str) -> None:
    rows = re.findall(r"^\| `(payhub_[a-z_]+)\(", hooks_section(), flags=re.MULTILINE)
    assert hook in rows, f"{hook} is not in the Hooks table of docs/plugins.md"


@pytest.mark.parametrize("hook", declared())
def test_the_hook_is_implemented_by_a_test(hook: str) -> None:
    assert hook in implemented_in_tests(), f"no test implements {hook} with @hookimpl"


def test_the_pattern_sees_implementations_in_code_and_in_written_modules() -> None:
    code = "class A:\n    @hookimpl\n    def payhub_fx_rate(self, base):\n        pass\n"
    written = "'from payhub.api import hookimpl\\n\\n@hookimpl\\ndef payhub_audit_entry(entry):\\n    pass\\n'"
    options = "@payhub.api.hookimpl(tryfirst=True)\ndef payhub_screen_payout(payout):\n"
    assert IMPLEMENTED.findall(code + written + options) == ["payhub_fx_rate", "payhub_audit_entry",
                                                             "payhub_screen_payout"]
    assert IMPLEMENTED.findall("def payhub_fx_rate(base):\n") == []
