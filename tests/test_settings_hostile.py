"""Settings files and values a hostile tester tried: deep nesting, NUL bytes and foreign dialects in the database
URL, floats and booleans for whole numbers, decimal amounts from the environment, invisible characters in ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import invoke


def settings_file(tmp_path: Path, body: str = "", db: str | None = None) -> Path:
    config = tmp_path / "payhub.toml"
    url = db if db is not None else f"sqlite:///{tmp_path / 'payhub.db'}"
    config.write_text(f'[database]\nurl = "{url}"\n{body}', encoding="utf-8")
    return config


# ----------------------------------------------------------------------------------------------- deep nesting

@pytest.mark.parametrize("value", ["[" * 600 + "]" * 600, "{b=" * 600 + "1" + "}" * 600],
                         ids=["arrays", "inline-tables"])
def test_deeply_nested_settings_are_one_settings_error(tmp_path: Path, value: str) -> None:
    config = tmp_path / "d.toml"
    config.write_text(f"a = {value}\n", encoding="utf-8")
    result = invoke("-c", str(config), "config", "check")
    assert result.exit_code == 2, result.output
    assert "nested too deeply" in result.stderr
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr


# ----------------------------------------------------------------------------------------------- database.url

@pytest.mark.parametrize("command", [["config", "check"], ["db", "upgrade"]], ids=["check", "upgrade"])
def test_a_nul_in_the_database_url_is_a_settings_error(tmp_path: Path, command: list[str]) -> None:
    result = invoke("-c", str(settings_file(tmp_path, db=f"sqlite:///{tmp_path}/x\\u0000y.db")), *command)
    assert result.exit_code == 2, result.output
    assert "database.url: Value error, a database URL cannot hold a NUL character" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "payhub.toml"]


@pytest.mark.parametrize("url", ["mysql://u:pw@h/x", "postgresql://u:pw@h/x", "sqlite+aiosqlite:///x.db",
                                 "oracle://u:pw@h/x"])
@pytest.mark.parametrize("command", [["config", "check"], ["db", "status"]], ids=["check", "status"])
def test_an_unsupported_database_is_a_settings_error(tmp_path: Path, url: str, command: list[str]) -> None:
    result = invoke("-c", str(settings_file(tmp_path, db=url)), *command)
    assert result.exit_code == 2, result.output
    assert "database.url: Value error, payhub supports SQLite (sqlite:///…) and PostgreSQL through psycopg" \
        in result.stderr
    assert "pw" not in result.stderr  # the password is never echoed
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/a.db", "sqlite+pysqlite:///{tmp}/a.db", "sqlite://",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"])
def test_supported_databases_pass(tmp_path: Path, url: str) -> None:
    result = invoke("-c", str(settings_file(tmp_path, db=url.format(tmp=tmp_path))), "config", "check")
    assert result.exit_code == 0, result.output
