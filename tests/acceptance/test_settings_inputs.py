"""What reaches the settings besides good TOML: misspelt PAYHUB_ variables, unreadable or non-UTF-8 files, and
path-like settings that try to leave their directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from pydantic import ValidationError

from payhub.builtin.csv_export import CsvExportRail, CsvExportSettings
from payhub.errors import ConfigError
from payhub.settings import load_settings, unknown_environment

CLI = [sys.executable, "-c", "from payhub.cli import main; main()"]


def settings_file(tmp_path: Path, body: str = "") -> Path:
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n{body}', encoding="utf-8")
    return config


# ---------------------------------------------------------------------------------------- PAYHUB_ variables

MISSPELT = [
    ("PAYHUB_DATABASE_URL", "sqlite:///other.db", "PAYHUB_DATABASE__URL (database.url)"),
    ("PAYHUB_DATABSE__LEASE_SECONDS", "60", "PAYHUB_DATABASE__LEASE_SECONDS (database.lease_seconds)"),
    ("PAYHUB_DAEMON_IDLE_SECONDS", "5", "PAYHUB_DAEMON__IDLE_SECONDS (daemon.idle_seconds)"),
    ("PAYHUB_RAIL__BANK__API_KEY", "sk-live-Zq7Xw3Pv9Lm2", "PAYHUB_RAILS__BANK__API_KEY (rails.bank.api_key)"),
    ("PAYHUB_CONFG", "payhub.toml", "PAYHUB_CONFIG (the settings file)"),
    ("payhub_log__levle", "DEBUG", None),  # a known table: validation names the key below it
]


@pytest.mark.parametrize(("variable", "value", "nearest"), MISSPELT, ids=[m[0] for m in MISSPELT])
@pytest.mark.parametrize("command", [["config", "check"], ["run", "--once"], ["events", "list"]],
                         ids=["check", "run", "events"])
def test_a_misspelt_variable_is_refused_by_name(
    tmp_path: Path, variable: str, value: str, nearest: str | None, command: list[str]
) -> None:
    result = invoke("-c", str(settings_file(tmp_path)), *command, env={variable: value})
    assert result.exit_code == 2, result.output
    if nearest is None:
        assert "log.levle: unknown key" in result.stderr
    else:
        assert f"  {variable}: environment variable names no payhub setting; did you mean {nearest}?" \
            in result.stderr
    assert value not in result.stderr.replace(variable, "")  # the value may be a secret: never echoed
    assert not (tmp_path / "payhub.db").exists()


def test_a_variable_far_from_any_setting_lists_the_tables(tmp_path: Path) -> None:
    result = invoke("-c", str(settings_file(tmp_path)), "config", "check", env={"PAYHUB_ZZZ": "1"})
    assert result.exit_code == 2
    assert "PAYHUB_ZZZ: environment variable names no payhub setting; setting variables start with " \
           "PAYHUB_<table>__ (" in result.stderr


@pytest.mark.parametrize("variable", ["PAYHUB_CONFIG", "PAYHUB_TEST_PG_URL", "PAYHUB_TEST_CRASH_SEED",
                                      "PAYHUB_DATABASE__LEASE_SECONDS", "PAYHUB_SOURCES__CRM__POLL_INTERVAL_SECONDS",
                                      "OTHER_TOOL_SETTING", "PAYHUBX"])
def test_documented_variables_and_other_prefixes_pass(variable: str) -> None:
    assert unknown_environment({variable: "1"}) == []


def test_subprocess_refuses_a_misspelt_variable(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "PAYHUB_DATABASE_URL": "sqlite:///elsewhere.db"}
    proc = subprocess.run([*CLI, "-c", str(settings_file(tmp_path)), "config", "check"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "PAYHUB_DATABASE_URL: environment variable names no payhub setting; did you mean " \
           "PAYHUB_DATABASE__URL (database.url)?" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------ the settings file


def test_invalid_utf8_names_line_and_byte(tmp_path: Path) -> None:
    config = tmp_path / "payhub.toml"
    config.write_bytes(b'[database]\nurl = "sqlite:///x.db"\n[log]\nlevel = "INFO" # caf\xe9\n')
    for command in (["config", "check"], ["run", "--once"], ["events", "list"]):
        result = invoke("-c", str(config), *command)
        assert result.exit_code == 2
        assert "not valid UTF-8 (byte 0xe9 at line 4, column 21); save the file as UTF-8" in result.stderr
        assert "Traceback" not in result.output


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "payhub.toml"
    config.write_bytes(b"\xef\xbb\xbf[daemon]\nidle_seconds = 2\n")
    assert load_settings(config).daemon.idle_seconds == 2


def test_a_directory_is_not_a_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "payhub.toml").mkdir()
    monkeypatch.chdir(tmp_path)  # ./payhub.toml, found by default
    result = invoke("config", "check")
    assert result.exit_code == 2
    assert "settings file 'payhub.toml' is a directory, not a file" in result.stderr
    result = invoke("-c", str(tmp_path / "payhub.toml"), "config", "check")  # the option refuses it too
    assert result.exit_code == 2 and "is a directory" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_settings_file(tmp_path: Path) -> None:
    config = settings_file(tmp_path)
    config.chmod(0o000)
    try:
        result = invoke("-c", str(config), "config", "check")
    finally:
        config.chmod(0o600)
    assert result.exit_code == 2
    assert "cannot be read: Permission denied" in result.stderr


def test_an_unreadable_settings_file_as_root_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same error path, whoever runs the tests: opening fails with EACCES."""
    config = settings_file(tmp_path)
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == config:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert raised.value.problems == [("", f"settings file {str(config)!r} cannot be read: Permission denied")]


def test_not_toml_and_not_a_regular_file(tmp_path: Path) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text("[daemon\nidle_seconds = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_settings(fifo)  # never opened: reading a FIFO would wait for a writer


# ---------------------------------------------------------------------------------------------- path settings

ESCAPES = ["../outside", "/tmp/abs", "sub/name", "..", ".hidden", "a\\b", "", "a b", "x" * 65, "pay*", "nul\0"]


@pytest.mark.parametrize("prefix", ESCAPES, ids=[repr(p) for p in ESCAPES])
def test_csv_export_prefix_cannot_leave_its_directory(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValidationError, match="part of a file name"):
        CsvExportSettings.model_validate({"directory": str(tmp_path), "prefix": prefix})
    config = settings_file(tmp_path, f'[rails.c]\nplugin = "csv_export"\ndirectory = "out"\nprefix = {prefix!r}\n'
                           .replace("'", '"').replace("\\", "\\\\").replace("\0", "\\u0000"))
    result = invoke("-c", str(config), "config", "check")
    assert result.exit_code == 2 and "rails.c.prefix: " in result.stderr, result.output


def test_csv_export_writes_only_inside_its_directory(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from payhub.api import Payee, PayoutInstruction

    settings = CsvExportSettings.model_validate({"directory": str(tmp_path / "out"), "prefix": "bank-portal_v2.1"})
    rail = CsvExportRail("c", settings)
    rail.send([PayoutInstruction(1, "k1", Payee("p1", "P"), Decimal("1.00"), "EUR", "r", datetime.now(UTC))])
    assert [p.name.startswith("bank-portal_v2.1-") for p in (tmp_path / "out").iterdir()] == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(("section", "key"), [
    ('[sources.f]\nplugin = "file"\npath = "deals\\u0000.csv"\n', "sources.f.path"),
    ('[rails.c]\nplugin = "csv_export"\ndirectory = "out\\u0000"\n', "rails.c.directory"),
    ('[payees]\nfile = "payees\\u0000.csv"\n', "payees.file"),
])
def test_a_nul_in_a_path_is_a_settings_error(tmp_path: Path, section: str, key: str) -> None:
    result = invoke("-c", str(settings_file(tmp_path, section)), "config", "check")
    assert result.exit_code == 2, result.output
    assert f"{key}: Value error, a path cannot hold a NUL character" in result.stderr


@pytest.mark.parametrize("series", ["../x-", "CN/2026/", ".partial-", "/abs-"])
def test_credit_note_series_cannot_leave_the_outbox(series: str, tmp_path: Path) -> None:
    from payhub_creditnote.rail import CreditNoteSettings

    seller = {"name": "V", "country": "US", "registration_id": "1", "endpoint_id": "b@v.example",
              "endpoint_scheme": "EM"}
    with pytest.raises(ValidationError, match="cannot hold a / or lead out of the outbox"):
        CreditNoteSettings.model_validate({"outbox": str(tmp_path), "series": series, "seller": seller})
    CreditNoteSettings.model_validate({"outbox": str(tmp_path), "series": "CN-2026.", "seller": seller})


@pytest.mark.parametrize("prefix", ["../x", "a/b", "-x", "toolongname"])
def test_bank_file_prefix_cannot_leave_the_outbox(prefix: str) -> None:
    from payhub_bank.settings import BankSettings

    with pytest.raises(ValidationError, match="letters, digits or dashes"):
        BankSettings.model_validate({"outbox": "/tmp", "prefix": prefix,
                                     "sepa": {"debtor_name": "V", "debtor_iban": "DE89370400440532013000"}})
