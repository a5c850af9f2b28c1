"""``payhub config show`` never prints a database password, wherever the URL carries it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import invoke


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql+psycopg://u@127.0.0.1/x?password=qpSECRET1", "postgresql+psycopg://u@127.0.0.1/x?password=***"),
    ("postgresql+psycopg:///x?host=/tmp&password=SECRET4", "postgresql+psycopg:///x?host=/tmp&password=***"),
    ("postgresql+psycopg://u:pa@ssSECRET3@host/x", "***"),
], ids=["query", "socket-query", "unescaped-at"])
def test_config_show_masks_the_database_url_from_the_environment(tmp_path: Path, url: str, expected: str) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text("", encoding="utf-8")
    result = invoke("-c", str(config), "config", "show", env={"PAYHUB_DATABASE__URL": url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["database"]["url"] == expected
    assert "SECRET" not in result.output
