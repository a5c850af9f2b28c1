"""The settings file: bad settings stop start-up naming the dotted key, environment overrides, secrets, paths."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
from cli_helpers import PAY_10_PERCENT, invoke, run_payhub, write_config, write_site

SECRET = "sk-live-Zq7Xw3Pv9Lm2"  # distinctive: grepping for it finds any leak


def settings_file(directory: Path, body: str, db: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, db or f"sqlite:///{directory / 'payhub.db'}", body)


BAD_SETTINGS = {
    "unknown key": ("[daemon]\nbogus_key = 1\n", "daemon.bogus_key", "unknown key"),
    "unknown top-level table": ("[nonsense]\nx = 1\n", "nonsense", "unknown key"),
    "wrong type": ('[daemon]\nidle_seconds = "soon"\n', "daemon.idle_seconds", "number"),
    "wrong literal": ('[log]\nlevel = "LOUD"\n', "log.level", "DEBUG"),
    "missing secret": ('[rails.s]\nplugin = "secret_rail"\n', "rails.s.api_key", "Field required"),
    "unknown rail plugin": ('[rails.x]\nplugin = "nope"\n', "rails.x.plugin", "no rail plugin named 'nope'"),
    "unknown calculator": ('[programs.p]\ncalculator = "nope"\n', "programs.p.calculator",
                           "no calculator plugin named 'nope'"),
    "missing calculator": ("[programs.p]\npercent = \"5\"\n", "programs.p.calculator", "Field required"),
    "unknown plugin key": ('[rails.c]\nplugin = "csv_export"\ndirectory = "out"\ncolour = "red"\n',
                           "rails.c.colour", "unknown key"),
    "plugin wrong type": ('[sources.f]\nplugin = "file"\npath = "f.csv"\nsettle_seconds = "later"\n',
                          "sources.f.settle_seconds", "number"),
    "float amount in program": ('[programs.p]\ncalculator = "percentage"\npercent = 2.5\n', "programs.p.percent",
                                "float is not exact"),
    "exponent amount in program": ('[programs.p]\ncalculator = "flat"\namount = "1e3"\ncurrency = "EUR"\n',
                                   "programs.p.amount", "not a plain decimal"),
    "default rail not configured": ('[routing]\ndefault_rail = "bank"\n', "routing.default_rail",
                                    "not configured"),
    "rail timeout longer than the lease": ('[rails.c]\nplugin = "csv_export"\ndirectory = "out"\n'
                                           'timeout_seconds = 200\n',
                                           "rails.c.timeout_seconds", "lookup and a send must fit"),
    "unknown time zone": ('[sources.f]\nplugin = "file"\npath = "f.csv"\ntimezone = "Mars/Olympus"\n',
                          "sources.f.timezone", "unknown time zone"),
}


@pytest.mark.parametrize("command", [["config", "check"], ["run", "--once"]], ids=["check", "run"])
@pytest.mark.parametrize("case", list(BAD_SETTINGS), ids=list(BAD_SETTINGS))
def test_bad_setting_stops_with_dotted_key(tmp_path: Path, plugin_path: Path, case: str, command: list[str]) -> None:
    body, key, message = BAD_SETTINGS[case]
    config = settings_file(tmp_path, body)
    result = invoke("-c", str(config), *command)
    assert result.exit_code == 2, result.output
    assert "configuration error" in result.stderr
    problem = [line for line in result.stderr.splitlines() if line.strip().startswith(f"{key}:")]
    assert problem, result.stderr
    assert message in problem[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "payhub.db").exists()  # stopped before touching the database


@pytest.mark.parametrize("command", [["config", "check"], ["run", "--once"]], ids=["check", "run"])
def test_invalid_toml_and_missing_file(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text('[database]\nurl = "sqlite:///x.db\n')
    result = invoke("-c", str(config), *command)
    assert result.exit_code == 2
    assert "not valid TOML" in result.stderr and "line 2" in result.stderr
    result = invoke("-c", str(tmp_path / "absent.toml"), *command)
    assert result.exit_code == 2
    assert "absent.toml" in result.stderr and "not found" in result.stderr


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    config = settings_file(tmp_path, """
        [daemon]
        idle_seconds = -1
        [ingest]
        max_amount = "lots"
        [payees]
        colour = "red"
    """)
    result = invoke("-c", str(config), "config", "check")
    assert result.exit_code == 2
    for key in ("daemon.idle_seconds", "ingest.max_amount", "payees.colour"):
        assert f"  {key}: " in result.stderr


def test_database_url_must_parse_and_is_never_echoed(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "", db=f"postgresql://admin:{SECRET}@db.example:notaport/payhub")
    for command in (["config", "check"], ["run", "--once"], ["events", "list"]):
        result = invoke("-c", str(config), *command)
        assert result.exit_code == 2
        assert "database.url: " in result.stderr
        assert SECRET not in result.output


def test_config_show_masks_the_database_password(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "")
    url = f"postgresql+psycopg://payhub:{SECRET}@db.example:5432/payhub"
    result = invoke("-c", str(config), "config", "show", env={"PAYHUB_DATABASE__URL": url})
    assert result.exit_code == 0
    assert json.loads(result.stdout)["database"]["url"] == "postgresql+psycopg://payhub:***@db.example:5432/payhub"
    assert SECRET not in result.output


def test_subprocess_exit_code_and_message(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    config = settings_file(tmp_path, '[rails.x]\nplugin = "nope"\n[rails.s]\nplugin = "secret_rail"\n')
    for command in (["config", "check"], ["run", "--once"]):
        proc = run_payhub("-c", str(config), *command, env=subprocess_env)
        assert proc.returncode == 2, proc.stderr
        assert "rails.x.plugin: no rail plugin named 'nope' is installed" in proc.stderr
        assert "rails.s.api_key: Field required" in proc.stderr
        assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------ environment overrides


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "[daemon]\nidle_seconds = 3\n", db=f"sqlite:///{tmp_path / 'from_file.db'}")
    env_db = tmp_path / "from_env.db"
    env = {"PAYHUB_DATABASE__URL": f"sqlite:///{env_db}", "PAYHUB_DAEMON__IDLE_SECONDS": "7.5",
           "PAYHUB_LOG__LEVEL": "WARNING"}
    shown = json.loads(invoke("-c", str(config), "config", "show", env=env).stdout)
    assert shown["database"]["url"] == f"sqlite:///{env_db}"
    assert shown["daemon"]["idle_seconds"] == 7.5
    assert shown["log"]["level"] == "WARNING"
    assert invoke("-c", str(config), "db", "upgrade", env=env).exit_code == 0
    assert env_db.exists() and not (tmp_path / "from_file.db").exists()
    # Without the environment, the file's values apply again.
    shown = json.loads(invoke("-c", str(config), "config", "show").stdout)
    assert shown["daemon"]["idle_seconds"] == 3


def test_bad_environment_values_name_the_key(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "")
    result = invoke("-c", str(config), "config", "check", env={"PAYHUB_DATABASE__BATCH_SIZE": "many"})
    assert result.exit_code == 2 and "database.batch_size: " in result.stderr
    result = invoke("-c", str(config), "config", "check", env={"PAYHUB_DATABASE__BOGUS": "1"})
    assert result.exit_code == 2 and "database.bogus: unknown key" in result.stderr
    result = invoke("-c", str(config), "config", "check", env={"PAYHUB_RAILS": "{not json"})
    assert result.exit_code == 2 and "PAYHUB_RAILS" in result.stderr
    assert "Traceback" not in result.output


def test_secret_from_environment(tmp_path: Path, plugin_path: Path) -> None:
    config = settings_file(tmp_path, '[rails.s]\nplugin = "secret_rail"\n')
    assert invoke("-c", str(config), "config", "check").exit_code == 2
    env = {"PAYHUB_RAILS__S__API_KEY": SECRET}
    result = invoke("-c", str(config), "config", "check", env=env)
    assert "rails.s.api_key" not in result.stderr
    assert SECRET not in result.output
    shown = invoke("-c", str(config), "config", "show", env=env)
    assert shown.exit_code == 0
    rail = json.loads(shown.stdout)["rails"]["s"]
    assert rail["plugin"] == "secret_rail" and rail["base_url"] == "http://127.0.0.1:9"
    assert rail["api_key"] == "**********"
    assert SECRET not in shown.output


def test_secrets_never_leak(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """A full run at DEBUG with the secret in the environment; then with it in the file next to a bad key."""
    body = '[log]\nlevel = "DEBUG"\n[rails.s]\nplugin = "secret_rail"\n' + PAY_10_PERCENT
    config = write_site(tmp_path, "sqlite:///payhub.db", body, payees="id,name,country\np1,Partner One,US\n",
                        deals="id,type,occurred_at,payee_id,amount,currency\nD-1,deal_won,2026-10-01T00:00:00Z,p1,100.00,USD\n")
    env = {"PAYHUB_RAILS__S__API_KEY": SECRET}
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    # The daemon in its own process, so that everything it logs is captured as an operator would see it.
    proc = run_payhub("-c", str(config), "run", "--once", env={**subprocess_env, **env})
    assert proc.returncode == 0, proc.stderr
    assert " DEBUG " in proc.stderr  # it really logged at DEBUG
    outputs = [proc.stdout + proc.stderr]
    for command in (["config", "show"], ["config", "check"], ["plugins", "list", "--format", "json"],
                    ["audit", "export"], ["payouts", "list"], ["events", "list", "--format", "json"]):
        result = invoke("-c", str(config), *command, env=env)
        outputs.append(result.output)
    assert "payout.sent" in outputs[4]
    assert '"section": "s"' in outputs[3]  # the secret rail was configured and validated
    assert all(SECRET not in text for text in outputs)
    # Nothing stored in the database holds the secret either.
    db = sqlite3.connect(tmp_path / "payhub.db")
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for row in db.execute(f'SELECT * FROM "{table}"'):
            assert SECRET not in repr(row), table
    db.close()

    # The secret in the file, next to problems in the same section and elsewhere.
    bad = settings_file(tmp_path / "bad", f"""
        [daemon]
        idle_seconds = "x"
        [rails.s]
        plugin = "secret_rail"
        api_key = "{SECRET}"
        base_url = 5
        api_kye = "{SECRET}"
    """)
    for command in (["config", "check"], ["run", "--once"], ["config", "show"]):
        result = invoke("-c", str(bad), *command)
        assert result.exit_code == 2
        assert "daemon.idle_seconds" in result.stderr
        assert SECRET not in result.output
    bad.write_text(bad.read_text().replace('idle_seconds = "x"', "idle_seconds = 1"))
    result = invoke("-c", str(bad), "config", "check")
    assert result.exit_code == 2
    assert "rails.s.base_url" in result.stderr and "rails.s.api_kye: unknown key" in result.stderr
    assert SECRET not in result.output


def test_secret_wrong_type_is_named_without_value(tmp_path: Path, plugin_path: Path) -> None:
    config = settings_file(tmp_path, f'[rails.s]\nplugin = "secret_rail"\napi_key = ["{SECRET}"]\n')
    result = invoke("-c", str(config), "config", "check")
    assert result.exit_code == 2
    assert "rails.s.api_key: " in result.stderr
    assert SECRET not in result.output


# ------------------------------------------------------------------------------------------------ relative paths


def test_relative_paths_resolve_against_the_settings_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "etc" / "payhub"
    site.mkdir(parents=True)
    (site / "data").mkdir()
    (site / "data" / "deals.csv").write_text("id,type,occurred_at,payee_id,amount,currency\n"
                                             "D-1,deal_won,2026-10-01T00:00:00Z,p1,100.00,USD\n")
    (site / "payees.csv").write_text("id,name,country\np1,Partner One,US\n")
    config = site / "payhub.toml"
    config.write_text(textwrap.dedent("""
        [database]
        url = "sqlite:///state/payhub.db"
        [payees]
        file = "payees.csv"
        [sources.deals]
        plugin = "file"
        path = "data/deals.csv"
        settle_seconds = 0
        [programs.pct]
        calculator = "percentage"
        percent = "10"
        [rails.export]
        plugin = "csv_export"
        directory = "exports"
        [routing]
        default_rail = "export"
    """))
    (site / "state").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data").mkdir()  # decoys: a run resolving against the working directory would use these
    (elsewhere / "data" / "deals.csv").write_text("id,type,occurred_at,payee_id,amount,currency\n")
    monkeypatch.chdir(elsewhere)
    env = {"PAYHUB_CONFIG": str(config)}  # found through the environment, not ./payhub.toml
    assert invoke("db", "upgrade", env=env).exit_code == 0
    result = invoke("run", "--once", env=env)
    assert result.exit_code == 0, result.output
    assert (site / "state" / "payhub.db").exists()
    exported = list((site / "exports").glob("payouts-*.csv"))
    assert len(exported) == 1 and "10.00" in exported[0].read_text()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["data"]
    shown = json.loads(invoke("config", "show", env=env).stdout)
    assert shown["sources"]["deals"]["path"] == str(site / "data" / "deals.csv")
    assert shown["rails"]["export"]["directory"] == str(site / "exports")
