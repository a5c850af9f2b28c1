"""A plugin named in the settings but not installed: payhub's own error names it, once, with nothing from stevedore."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from payhub.errors import ConfigError
from payhub.plugins import load_plugins
from payhub.settings import load_settings

CLI = [sys.executable, "-c", "from payhub.cli import main; main()"]
SETTINGS = '[hooks.x]\nplugin = "nosuch"\n[rails.r]\nplugin = "fake"\n'
MESSAGE = "hooks.x.plugin: no hook plugin named 'nosuch' is installed (installed: "


def settings_file(directory: Path) -> Path:
    path = directory / "payhub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{directory / "payhub.db"}"\n{SETTINGS}')
    return path


def test_loading_logs_nothing_of_its_own(tmp_path: Path, plugin_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info:
        load_plugins(load_settings(settings_file(tmp_path)))
    assert MESSAGE in str(info.value)
    assert [r for r in caplog.records if r.name.startswith("stevedore") and r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("command", [["run"], ["run", "--once"], ["config", "check"], ["plugins", "list"]])
def test_the_user_sees_payhubs_message_only(tmp_path: Path, subprocess_env: dict[str, str], command: list[str]
                                            ) -> None:
    proc = subprocess.run([*CLI, "-c", str(settings_file(tmp_path)), *command], env=subprocess_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count(MESSAGE) == 1, proc.stderr
    assert "stevedore" not in proc.stderr and "Could not load" not in proc.stderr, proc.stderr
