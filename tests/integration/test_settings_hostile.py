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


# ------------------------------------------------------------------------------------------------ whole numbers

RAIL = '[rails.c]\nplugin = "csv_export"\ndirectory = "out"\n'
SOURCE = '[sources.f]\nplugin = "file"\npath = "deals.csv"\n'


@pytest.mark.parametrize(("body", "key", "shown"), [
    ("batch_size = true\n", "database.batch_size", "not true"),  # below the [database] url
    ("batch_size = 1.0\n", "database.batch_size", "not 1.0"),
    (RAIL + "max_attempts = 1e3\n", "rails.c.max_attempts", "not 1000.0"),
    (SOURCE + "batch_size = false\n", "sources.f.batch_size", "not false"),
    (SOURCE + "max_field_bytes = 100000.0\n", "sources.f.max_field_bytes", "not 100000.0"),
    ('[programs.p]\ncalculator = "loyalty_points"\nvalue_per_point = "0.1"\ncurrency = "USD"\n'
     'points_per_action = {webinar = 2.0}\n', "programs.p.points_per_action", "not 2.0"),
    ('[programs.p]\ncalculator = "flat"\namount = "1"\ncurrency = "USD"\nclawback = "prorated"\n'
     "clawback_term_days = 30.0\n", "programs.p.clawback_term_days", "not 30.0"),
])
def test_a_whole_number_setting_refuses_floats_and_booleans(tmp_path: Path, body: str, key: str, shown: str) -> None:
    result = invoke("-c", str(settings_file(tmp_path, body)), "config", "check")
    assert result.exit_code == 2, result.output
    assert f"{key}: Value error, a whole number is required, {shown}" in result.stderr


@pytest.mark.parametrize("variable", ["PAYHUB_DATABASE__BATCH_SIZE", "PAYHUB_RAILS__C__MAX_ATTEMPTS",
                                      "PAYHUB_SOURCES__F__MAX_FIELD_BYTES"])
@pytest.mark.parametrize("value", ["1.0", "true", "1e3", "5.5"])
def test_a_whole_number_variable_refuses_other_text(tmp_path: Path, variable: str, value: str) -> None:
    result = invoke("-c", str(settings_file(tmp_path, RAIL + SOURCE)), "config", "check", env={variable: value})
    assert result.exit_code == 2, result.output
    assert "a whole number is required" in result.stderr or "valid integer" in result.stderr


def test_whole_numbers_pass_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = settings_file(tmp_path, RAIL + "max_attempts = 7\n" + SOURCE + "max_field_bytes = 4096\n"
                           + '[programs.p]\ncalculator = "loyalty_points"\nvalue_per_point = "0.1"\ncurrency = "USD"\n'
                           "points_per_action = {webinar = 2}\n")
    result = invoke("-c", str(config), "config", "show", env={
        "PAYHUB_DATABASE__BATCH_SIZE": "250", "PAYHUB_SOURCES__F__BATCH_SIZE": " 9 ",
        "PAYHUB_SOURCES__F__MAX_RECORD_BYTES": "+2048"})
    assert result.exit_code == 0, result.output
    for shown in ['"batch_size": 250', '"batch_size": 9', '"max_attempts": 7', '"max_field_bytes": 4096',
                  '"max_record_bytes": 2048', '"webinar": 2']:
        assert shown in result.stdout


# ------------------------------------------------------------------------------------ amounts from the environment

FLAT = '[programs.p]\ncalculator = "flat"\namount = "1"\ncurrency = "USD"\n'


@pytest.mark.parametrize(("variable", "value", "shown"), [
    ("PAYHUB_PROGRAMS__P__AMOUNT", "0.5", '"amount": "0.5"'),
    ("PAYHUB_PROGRAMS__P__AMOUNT", "12", '"amount": "12"'),
    ("PAYHUB_INGEST__MAX_AMOUNT", "0.5", '"max_amount": "0.5"'),
    ("PAYHUB_RAILS__C__MIN_PAYOUT", '{"USD": "0.5"}', '"USD": "0.5"'),
    ("PAYHUB_RAILS__C__TIMEOUT_SECONDS", "2.5", '"timeout_seconds": 2.5'),
])
def test_an_amount_variable_is_decimal_text(tmp_path: Path, variable: str, value: str, shown: str) -> None:
    result = invoke("-c", str(settings_file(tmp_path, FLAT + RAIL)), "config", "show", env={variable: value})
    assert result.exit_code == 0, result.output
    assert shown in result.stdout


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("PAYHUB_RAILS__C__MIN_PAYOUT", '{"USD": 0.5}',
     'rails.c.min_payout.USD: Value error, write decimal amounts as strings, in JSON too: quote it ("0.5")'),
    ("PAYHUB_PROGRAMS__P", '{"calculator": "flat", "amount": 0.25, "currency": "USD"}',
     'programs.p.amount: Value error, write decimal amounts as strings, in JSON too: quote it ("0.25")'),
    ("PAYHUB_PROGRAMS__P__AMOUNT", "1e3", "programs.p.amount: Value error, amount '1e3' is not a plain decimal"),
])
def test_an_amount_variable_refuses_json_floats_and_exponents(tmp_path: Path, variable: str, value: str,
                                                              message: str) -> None:
    result = invoke("-c", str(settings_file(tmp_path, FLAT + RAIL)), "config", "check", env={variable: value})
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_float_amount_in_the_file_is_still_refused(tmp_path: Path) -> None:
    result = invoke("-c", str(settings_file(tmp_path, FLAT.replace('"1"', "0.5"))), "config", "check")
    assert result.exit_code == 2, result.output
    assert 'programs.p.amount: Value error, write decimal amounts as strings ("0.5"), a float is not exact' \
        in result.stderr


# ---------------------------------------------------------------------------------------- file source object_type

@pytest.mark.parametrize(("value", "message"), [
    ("deal\\u202e", "object_type 'deal\\u202e' holds U+202E, a control, format or surrogate character"),
    ("de\\u0000al", "holds U+0000"),
    ("deal\\tx", "holds U+0009"),
    ("\\u200b \\ufeff", "object_type is empty once white space and invisible characters are removed"),
])
def test_the_file_source_refuses_an_object_type_no_event_can_have(tmp_path: Path, value: str, message: str) -> None:
    body = f'[sources.f]\nplugin = "file"\npath = "deals.csv"\nobject_type = "{value}"\n'
    result = invoke("-c", str(settings_file(tmp_path, body)), "config", "check")
    assert result.exit_code == 2, result.output
    assert "sources.f.object_type: Value error, " in result.stderr and message in result.stderr


def test_the_file_source_object_type_is_normalised_like_event_ids(tmp_path: Path) -> None:
    (tmp_path / "deals.csv").write_text("id,type,occurred_at,payee_id\nD-1,deal_won,2026-01-05,rep-ana\n",
                                        encoding="utf-8")
    body = '[sources.f]\nplugin = "file"\npath = "deals.csv"\nobject_type = " Deal\\u200b"\n'
    config = str(settings_file(tmp_path, body))
    assert invoke("-c", config, "db", "upgrade").exit_code == 0
    assert invoke("-c", config, "run", "--once").exit_code == 0
    result = invoke("-c", config, "events", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"key": "f:Deal:D-1:deal_won"' in result.stdout
    assert "quarantined" not in result.stdout
