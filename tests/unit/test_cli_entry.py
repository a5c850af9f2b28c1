"""The ``payhub`` console script (:func:`payhub.cli.entry`): it ends the process without tearing the interpreter
down, and nothing a normal exit does for the user is lost: the exit code, what was printed, the exit handlers,
and a thread still working."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def entry(args: list[str], *, before: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script's function in a new interpreter, after the Python code ``before``."""
    code = f"{before}\nfrom payhub.cli import entry\nentry()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_the_console_script_is_entry() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["payhub"] == "payhub.cli:entry"


def test_help_is_printed_whole_to_a_pipe_with_status_0() -> None:
    done = entry(["--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: ")
    assert "tokens" in done.stdout  # the last command listed: the buffer was flushed to its end


@pytest.mark.parametrize(("args", "status"), [
    (["no-such-command"], 2),  # click's usage error
    (["--config", "missing.toml", "config", "check"], 2),  # payhub's configuration error
])
def test_the_commands_exit_status_is_kept(args: list[str], status: int, tmp_path: Path) -> None:
    done = entry(args, cwd=tmp_path)
    assert done.returncode == status, (done.stdout, done.stderr)
    assert done.stderr.strip()  # and its message was flushed


def test_exit_handlers_run(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    before = ("import atexit, logging\n"
              f"atexit.register(lambda: open({str(mark)!r}, 'w').write('ran'))\n")
    done = entry(["--help"], before=before)
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "ran"


def test_logging_buffered_by_a_handler_is_written(tmp_path: Path) -> None:
    """logging's own exit handler flushes and closes the handlers: a MemoryHandler's buffer reaches its file."""
    log = tmp_path / "log.txt"
    before = ("import logging, logging.handlers\n"
              f"target = logging.FileHandler({str(log)!r})\n"
              "buffered = logging.handlers.MemoryHandler(capacity=1000, target=target)\n"
              "logging.getLogger('probe').addHandler(buffered)\n"
              "logging.getLogger('probe').warning('kept until exit')\n")
    done = entry(["--help"], before=before)
    assert done.returncode == 0, done.stderr
    assert "kept until exit" in log.read_text()


def test_a_thread_still_working_is_waited_for(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    before = ("import threading, time\n"
              f"def work():\n    time.sleep(0.5)\n    open({str(mark)!r}, 'w').write('done')\n"
              "threading.Thread(target=work).start()\n")
    done = entry(["--help"], before=before)
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "done"


def test_a_closed_stdout_is_reported_as_a_normal_exit_would(tmp_path: Path) -> None:
    """Output to a pipe whose reader has gone: status 120 as with sys.exit, never a status of 0."""
    code = "from payhub.cli import entry\nentry()\n"
    with subprocess.Popen([sys.executable, "-c", code, "--help"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        proc.stdout.close()
        status = proc.wait(timeout=60)
    assert status != 0


@pytest.mark.parametrize("closed", [">&-", "2>&-"])
@pytest.mark.parametrize(("args", "status"), [(["--version"], 0), (["no-such-command"], 2)])
def test_a_standard_stream_closed_from_the_start_keeps_the_status(closed: str, args: list[str], status: int) -> None:
    """Started with stdout or stderr closed (cron, a supervisor), Python has no stream object for it: the status is
    the command's, as with an ordinary exit."""
    code = "from payhub.cli import entry; entry()"
    done = subprocess.run(["sh", "-c", f'"$0" -c "{code}" "$@" {closed}', sys.executable, *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == status, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr


def test_a_command_leaves_the_sqlite_database_whole_in_its_file(tmp_path: Path) -> None:
    """The command's database connections are closed before the process ends: SQLite checkpoints its write-ahead
    log into the database file and removes it, so that the file alone (a copy, a backup) holds every commit."""
    db = tmp_path / "payhub.db"
    (tmp_path / "payhub.toml").write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    for args in (["db", "upgrade"], ["audit", "query", "--limit", "1"], ["audit", "verify"]):
        done = entry(["-c", str(tmp_path / "payhub.toml"), *args], cwd=tmp_path)
        assert done.returncode in (0, 1), (args, done.stdout, done.stderr)
        assert not (tmp_path / "payhub.db-wal").exists(), args
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    with sqlite3.connect(copy) as conn:
        actions = [action for (action,) in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
    assert actions == ["audit.query", "audit.verify"], actions

