"""``log.format = "json"``: one JSON object per line with the renamed fields; the JSON formatter's package is
imported by that set-up only (text logs never import it)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from payhub.logs import setup_logging
from payhub.settings import LogSettings


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging(LogSettings(format="json", level="INFO"))
        logging.getLogger("payhub.test").warning("payee %s is not in the registry", "p1\nforged")
    finally:
        root.handlers[:], root.level = handlers, level
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert {key: record[key] for key in ("level", "name", "message")} == {
        "level": "WARNING", "name": "payhub.test", "message": "payee p1\nforged is not in the registry"}
    assert record["time"]


@pytest.mark.parametrize(("log_format", "imported"), [("text", False), ("json", True)])
def test_only_json_logs_import_the_json_formatter(log_format: str, imported: bool) -> None:
    code = (f"import sys\nfrom payhub.logs import setup_logging\nfrom payhub.settings import LogSettings\n"
            f"setup_logging(LogSettings(format={log_format!r}))\nprint('pythonjsonlogger' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == str(imported)
