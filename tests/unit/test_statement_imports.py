"""Start-up cost: the command line and the daemon's loop import partner statements' heavy libraries (Jinja2,
smtplib, WeasyPrint) only when statements are used."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("jinja2", "smtplib", "weasyprint")
CHECK = """
import sys
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print("heavy:" + ",".join(heavy))
"""


def imported_after(body: str) -> str:
    done = subprocess.run([sys.executable, "-c", CHECK.format(body=body, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.rsplit("heavy:", 1)[1].strip()


def test_payhub_help_imports_no_statement_library() -> None:
    body = "from payhub.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nsys.stdout.flush()"
    assert imported_after(body) == ""


def test_the_worker_module_imports_no_statement_library() -> None:
    assert imported_after("import payhub.worker\nimport payhub.cli.statements") == ""


@pytest.mark.slow  # a new interpreter renders a statement
def test_rendering_imports_jinja2_on_first_use() -> None:
    assert imported_after("from payhub.statements import render") == ""
    assert "jinja2" in imported_after("from payhub.statements import render\nrender.templates()")
