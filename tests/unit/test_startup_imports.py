"""Start-up cost: ``payhub --help`` lists every command without importing them, and the schema check of every
command imports no Alembic; the lazy command table and the head revision each have one source of truth."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from payhub.cli import COMMANDS, main
from payhub.db import migrate

CHECK = """
import sys
{body}
print("modules:" + ",".join(sorted(sys.modules)))
"""


def imported_after(body: str) -> set[str]:
    """The top-level packages and payhub modules a new interpreter has imported after running ``body``."""
    done = subprocess.run([sys.executable, "-c", CHECK.format(body=body)], capture_output=True, text=True,
                          timeout=60, check=True)
    names = done.stdout.rsplit("modules:", 1)[1].strip().split(",")
    return {name if name.startswith("payhub.") else name.split(".")[0] for name in names}


HELP = "from payhub.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nsys.stdout.flush()"


def test_payhub_help_imports_no_command_database_settings_or_rich() -> None:
    found = imported_after(HELP)
    heavy = {"sqlalchemy", "alembic", "rich", "pydantic", "pydantic_settings", "stevedore", "pluggy", "httpx",
             "payhub.settings", "payhub.runtime", "payhub.plugins", "payhub.worker", "payhub.pipeline.calculate"}
    assert found & heavy == set()
    assert not {name for name in found if name.startswith("payhub.cli.") and name != "payhub.cli.params"}


def test_the_schema_check_imports_no_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'payhub.db'}"
    migrate.upgrade(create_engine(url))
    body = f"from sqlalchemy import create_engine\nfrom payhub.db import migrate\n" \
           f"migrate.require_current(create_engine({url!r}))"
    assert "alembic" not in imported_after(body)


def test_help_lists_every_command_as_if_all_were_imported() -> None:
    lazy = CliRunner().invoke(main, ["--help"], prog_name="payhub", terminal_width=80)
    assert lazy.exit_code == 0
    eager = click.Group("payhub", params=main.params, help=main.help,
                        context_settings=main.context_settings,
                        commands={name: main.get_command(click.Context(main), name) for name in COMMANDS})
    real = CliRunner().invoke(eager, ["--help"], prog_name="payhub", terminal_width=80)
    assert lazy.output == real.output
    listed = [line.split()[0] for line in lazy.output.split("Commands:")[1].splitlines() if line[2:3].isalpha()]
    assert listed == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_holds_each_commands_module_and_short_help(name: str) -> None:
    module, short_help = COMMANDS[name]
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.callback is not None
    assert command.callback.__module__ == module
    assert not command.hidden and not command.deprecated and command.short_help is None
    assert command.get_short_help_str(limit=10**6) == short_help


def test_every_registered_command_is_in_the_table() -> None:
    for name in COMMANDS:
        main.get_command(click.Context(main), name)
    assert set(main.commands) == set(COMMANDS)


def test_the_head_revision_is_alembics() -> None:
    assert migrate.head_revision() == migrate._alembic_head()


def test_an_unreadable_migration_falls_back_to_alembic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_a.py").write_text("revision = '0001'\ndown_revision = None\n")
    (versions / "0002_b.py").write_text("revision = '0002'\ndown_revision = '0001'\n")
    monkeypatch.setattr(migrate, "MIGRATIONS", tmp_path)
    monkeypatch.setattr(migrate, "_alembic_head", lambda: "from-alembic")
    assert migrate.head_revision() == "0002"
    (versions / "0003_c.py").write_text("revision = make_revision()\ndown_revision = '0002'\n")
    assert migrate.head_revision() == "from-alembic"
    (versions / "0003_c.py").write_text("revision = '0003'\ndown_revision = '0001'\n")  # two heads: a branch
    assert migrate.head_revision() == "from-alembic"


def test_every_module_that_registers_a_command_is_in_the_table() -> None:
    cli = Path(__file__).resolve().parents[2] / "src" / "payhub" / "cli"
    registering = {f"payhub.cli.{path.stem}" for path in cli.glob("*.py")
                   if re.search(r"^@main\.(command|group)\(", path.read_text(encoding="utf-8"), re.MULTILINE)}
    assert registering == {module for module, _ in COMMANDS.values()}


@pytest.mark.parametrize("body", [
    "revision = '0003'\ndown_revision = '0002'\n",  # a stray copy of 0003_c.py: the id twice
    '"""\nrevision = \'0004\'\n"""\nrevision = \'0003\'\ndown_revision = \'0002\'\n',  # a docstring line is no revision
    "revision = '0004'\ndown_revision = '0003'\nrevision = '0005'\n",  # assigned twice
    "revision = '0004'\n",  # no down_revision
    "revision = '0004'\ndown_revision = '0003'\nx = (\n",  # Python cannot parse what is read
    "down_revision = '0003'\ndef upgrade() -> None:\n    pass\nrevision = f'{4:04}'\n",  # not a constant
    "revision = '0004'\ndown_revision = '0003'\nif True:\n    revision = '0005'\n",  # bound in a branch
    "revision: str = '0004'\ndown_revision = '0003'\nx = revision = '0005'\n",  # chained
])
def test_migration_files_other_than_plain_fall_back_to_alembic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               body: str) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_a.py").write_text('"""a\n\ndef upgrade\n"""\nrevision = \'0001\'\ndown_revision = None\n')
    (versions / "0002_b.py").write_text('"""b\n\nrevision = \'0009\'\n"""\nrevision = \'0002\'\n'
                                        "down_revision: str | None = '0001'  # after 0001\n")
    (versions / "0003_c.py").write_text("revision = '0003'\ndown_revision = ('0002',)\n\n\ndef upgrade() -> None:\n"
                                        "    revision = 'local'\n")
    monkeypatch.setattr(migrate, "MIGRATIONS", tmp_path)
    monkeypatch.setattr(migrate, "_alembic_head", lambda: "from-alembic")
    assert migrate.head_revision() == "0003"
    (versions / "0004_d.py").write_text(body)
    assert migrate.head_revision() == "from-alembic"


def test_loading_a_command_or_the_plugins_leaves_the_collector_as_it_was(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No object is frozen out of the collector's passes for the process's life (a failed plugin's traceback frames
    among them), and the collector runs again even when the import or the loading raised."""
    import gc

    from payhub import cli
    from payhub.cli import daemon

    class Failing:
        def load_plugins(self) -> None:
            frames = [object() for _ in range(1000)]
            raise RuntimeError(f"a plugin failed with {len(frames)} objects alive")

    (tmp_path / "payhub_broken_command.py").write_text("cycle: list = []\ncycle.append(cycle)\nraise ImportError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError):
        daemon._load_plugins(Failing())  # type: ignore[arg-type]
    with pytest.raises(ImportError):
        cli._import("payhub_broken_command")
    cli._import("json.tool")
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


@pytest.mark.parametrize(("typed", "suggested"), [("rewrds", "rewards"), ("confg", "config"), ("paouts", "payouts")])
def test_a_misspelt_command_gets_a_suggestion_before_any_command_is_imported(typed: str, suggested: str) -> None:
    found = subprocess.run([sys.executable, "-c", "from payhub.cli import main; main()", typed],
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 2
    assert f"No such command '{typed}'. Did you mean '{suggested}'?" in found.stderr


def test_threads_read_the_head_revision_at_the_same_time() -> None:
    import threading

    failures: list[BaseException] = []
    heads: set[str] = set()

    def read() -> None:
        try:
            for _ in range(20):
                heads.add(migrate.head_revision())
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and len(heads) == 1


RUN_ONCE_NEEDS_NONE_OF = {
    "alembic",  # the schema check reads the head revision from the migration files
    "prometheus_client",  # the in-process instruments are made when one is first used
    "cryptography",  # signing and personal-data sealing import it when they use a key
    "sqlalchemy.dialects.postgresql",  # declared by make_engine for a PostgreSQL URL only
    "jinja2", "weasyprint", "payhub.statements.render",  # statements are off in the quickstart
    "payhub.http.server", "uvicorn", "starlette",  # --once serves nothing
    "payhub.console", "payhub.compliance.tax_report",
    "pythonjsonlogger",  # the quickstart logs text
    "payhub_creditnote.delivery",  # the quickstart's credit-note rail delivers to no billing system
}


@pytest.mark.slow  # a migration and two runs of payhub
def test_run_once_on_an_empty_backlog_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    """``payhub run --once`` with the quickstart's settings (its three rail plugins), nothing to do: every check of
    start-up runs (settings, plugins by name, schema revision), and none of the named modules is imported."""
    from bench.startup import quickstart_site

    config = quickstart_site(tmp_path)  # migrated; a first run synced the payees
    args = ["-c", str(config), "run", "--once", "--no-progress"]
    body = (f"from payhub.cli import main\ntry:\n    main({args!r})\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\nsys.stdout.flush()")
    done = subprocess.run([sys.executable, "-c", CHECK.format(body=body)], capture_output=True, text=True, timeout=120,
                          check=True, cwd=tmp_path)
    modules = set(done.stdout.rsplit("modules:", 1)[1].strip().split(","))
    assert "ingested" in done.stdout and "payhub_giftcard.rail" in modules and "payhub.db.migrate" in modules
    unneeded = {name for name in modules if {name, name.split(".")[0]} & RUN_ONCE_NEEDS_NONE_OF}
    assert unneeded == set()


def test_the_metrics_are_made_when_first_used() -> None:
    body = ("from payhub import metrics\nmetrics.set_payouts_blocked(False)\nmetrics.plugin_failed\n"
            "assert 'prometheus_client' not in sys.modules\n"
            "import threading\nfound = []\n"
            "threads = [threading.Thread(target=lambda: found.append(metrics.STAGE_ITEMS)) for _ in range(8)]\n"
            "[t.start() for t in threads]\n[t.join() for t in threads]\n"
            "assert len({id(x) for x in found}) == 1\n"
            "assert metrics.REGISTRY.get_sample_value('payhub_payouts_blocked') == 0\n"
            "metrics.set_payouts_blocked(True)\n"
            "assert metrics.REGISTRY.get_sample_value('payhub_payouts_blocked') == 1\n")
    assert "prometheus_client" in imported_after(body)


def test_what_start_up_makes_goes_to_the_oldest_generation_and_stays_collectable() -> None:
    import gc
    import weakref

    from payhub.collector import paused

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    frozen = gc.get_freeze_count()
    with paused():
        kept, dropped = Node(), Node()
        assert not gc.isenabled()
    gone = weakref.ref(dropped)
    del dropped
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert any(obj is kept for obj in gc.get_objects(generation=2))
    assert not any(obj is kept for obj in gc.get_objects(generation=0))
    gc.collect(1)  # the young generations' passes do not walk it
    assert gone() is not None
    gc.collect()  # a full pass frees the garbage made while paused
    assert gone() is None


def test_help_reads_no_distribution_metadata_and_version_reads_it() -> None:
    body = HELP + "\nassert 'importlib.metadata' not in sys.modules, 'imported by --help'"
    imported_after(body)  # fails (check=True) when the assertion does
    import payhub

    shown = CliRunner().invoke(main, ["--version"], prog_name="payhub")
    assert shown.exit_code == 0
    assert shown.output == f"payhub, version {payhub.__version__}\n"
    assert payhub.__version__ not in {"", "0.0.0"}  # the installed distribution's (payhub is installed here)
