"""Every numeric setting, core and plugin, is finite and bounded; amounts are decimal text; names cannot escape.

The table of bad values is built from the settings models themselves, so a numeric key added later without bounds
fails ``test_every_numeric_setting_declares_bounds`` and gets rows in the table as soon as it has them.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
import types
import typing
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
from cli_helpers import invoke
from pydantic import BaseModel, ValidationError

from payhub.errors import ConfigError
from payhub.plugins import load_plugins
from payhub.settings import (
    DaemonSettings,
    DatabaseSettings,
    GiftSettings,
    IngestSettings,
    ProgramSection,
    RailSection,
    RetentionSettings,
    Settings,
    SourceSection,
    TaxSettings,
    load_settings,
    validation_problems,
)

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = (int, float, Decimal)

# --------------------------------------------------------------------------------------------- model walking


def leaves(annotation: Any, metadata: list[Any] | None = None) -> Iterator[tuple[Any, list[Any], str]]:
    """(leaf type, its constraints, how it is reached: "" itself, "[]" a list item, "{}" a dict value)."""
    metadata = metadata or []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        flat = [m for item in extra for m in (getattr(item, "metadata", None) or [item])]
        yield from leaves(base, metadata + flat)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                yield from leaves(arg, metadata)
    elif origin is list:
        for leaf, meta, how in leaves(typing.get_args(annotation)[0], metadata):
            yield leaf, meta, "[]" + how
    elif origin is dict:
        for leaf, meta, how in leaves(typing.get_args(annotation)[1], metadata):
            yield leaf, meta, "{}" + how
    else:
        yield annotation, metadata, ""


def is_model(leaf: Any) -> bool:
    return isinstance(leaf, type) and issubclass(leaf, BaseModel)


@functools.cache
def plugin_models() -> dict[str, type[BaseModel]]:
    """The settings (or params) model of every plugin that payhub and its plugin distributions register."""
    found = {}
    for group, attribute in (("payhub.sources", "settings_model"), ("payhub.rails", "settings_model"),
                             ("payhub.calculators", "params_model"), ("payhub.hooks", "settings_model")):
        for ep in entry_points(group=group):
            if not ep.value.startswith("payhub"):
                continue  # test plugins of other suites
            model = getattr(ep.load(), attribute, None)
            if model is not None:
                found[f"{group.removeprefix('payhub.')}:{ep.name}"] = model
    return found


def all_models() -> dict[type[BaseModel], str]:
    seen: dict[type[BaseModel], str] = {}

    def walk(model: type[BaseModel], where: str) -> None:
        if model in seen:
            return
        seen[model] = where
        for name, info in model.model_fields.items():
            for leaf, _meta, _how in leaves(info.annotation):
                if is_model(leaf):
                    walk(leaf, f"{where}.{name}")

    walk(Settings, "settings")
    for where, model in plugin_models().items():
        walk(model, where)
    return seen


def bounds(metadata: list[Any]) -> tuple[bool, bool]:
    low = any(isinstance(m, (at.Ge, at.Gt)) for m in metadata)
    high = any(isinstance(m, (at.Le, at.Lt)) for m in metadata)
    return low, high


def test_every_numeric_setting_declares_bounds() -> None:
    models = all_models()
    assert len(models) > 25  # core sections, every plugin and their nested tables
    unbounded = []
    for model, where in models.items():
        for name, info in model.model_fields.items():
            for leaf, metadata, _how in leaves(info.annotation):
                if leaf is bool or leaf not in NUMBERS:
                    continue
                low, high = bounds(metadata + list(info.metadata))
                finite = leaf is int or model.model_config.get("allow_inf_nan") is False
                if not (low and high and finite):
                    unbounded.append(f"{where}.{name} ({model.__name__}): lower={low} upper={high} finite={finite}")
    assert unbounded == []


# ------------------------------------------------------------------------------------------- valid sections

PROGRAM_DOCS = ROOT / "docs" / "programs.md"
BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def documented_programs() -> dict[str, dict[str, Any]]:
    """A valid program section per calculator, from the examples of docs/programs.md."""
    found: dict[str, dict[str, Any]] = {
        "flat": {"calculator": "flat", "amount": "50", "currency": "USD"},
        "percentage": {"calculator": "percentage", "percent": "2.5"},
    }
    for text in BLOCK.findall(PROGRAM_DOCS.read_text(encoding="utf-8")):
        if "..." in text:
            continue
        for section in tomllib.loads(text).get("programs", {}).values():
            found.setdefault(section["calculator"], section)
    return found


SELLER = {"name": "Vendor GmbH", "country": "DE", "registration_id": "HRB 12345",
          "endpoint_id": "billing@vendor.example", "endpoint_scheme": "EM"}
PLUGIN_SECTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "sources:file": ("sources", {"plugin": "file", "path": "deals.csv"}),
    "sources:webhook": ("sources", {"plugin": "webhook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
    "sources:hubspot": ("sources", {"plugin": "hubspot", "access_token": "pat-x", "start_date": date(2026, 1, 1),
                                    "company_currency": "USD"}),
    "sources:salesforce": ("sources", {"plugin": "salesforce", "auth": "client_credentials", "client_id": "3MVG9",
                                       "client_secret": "s",
                                       "org_currency": "USD"}),
    "rails:csv_export": ("rails", {"plugin": "csv_export", "directory": "out"}),
    "rails:bank_transfer": ("rails", {
        "plugin": "bank_transfer", "outbox": "outbox", "min_payout": {"EUR": "1"},
        "sepa": {"debtor_name": "Vendor GmbH", "debtor_iban": "DE89370400440532013000"},
        "ach": {"immediate_destination": "091000019", "immediate_origin": "1234567890",
                "immediate_origin_name": "Vendor", "company_id": "1234567890", "company_name": "Vendor",
                "originating_dfi": "091000019"}}),
    "rails:giftcard": ("rails", {"plugin": "giftcard", "base_url": "http://127.0.0.1:9/api/v2", "api_key": "k",
                                 "max_amounts": {"EUR": "500"}}),
    "rails:credit_note": ("rails", {"plugin": "credit_note", "outbox": "notes", "seller": SELLER,
                                    "tax": {"category": "O", "exemption_reason_code": "VATEX-EU-O"}}),
    "hooks:ecb_rates": ("hooks", {"plugin": "ecb_rates", "path": "rates.csv"}),
    "hooks:sanctions": ("hooks", {"plugin": "sanctions"}),
}


def section_for(where: str) -> tuple[str, dict[str, Any]]:
    if where in PLUGIN_SECTIONS:
        return PLUGIN_SECTIONS[where]
    calculator = where.removeprefix("calculators:")
    return "programs", dict(documented_programs()[calculator])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                 else repr(value))
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_table(header: str, values: dict[str, Any]) -> str:
    return f"[{header}]\n" + "".join(f'"{k}" = {toml_value(v)}\n' for k, v in values.items())


# ------------------------------------------------------------------------------------------ the bad values

BAD_FLOATS = [math.inf, -math.inf, math.nan, 1e308]
BAD_INTS = [2**70, -(2**70)]
BAD_AMOUNTS = [0.1, "1e308", "NaN", "1" + "0" * 30]


def bad_values(leaf: Any) -> list[Any]:
    return BAD_FLOATS if leaf is float else BAD_INTS if leaf is int else BAD_AMOUNTS


def numeric_paths(model: type[BaseModel], base: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path inside the section, leaf type) of every numeric key of ``model``, following ``base`` into nested
    tables, the first item of lists and the first key of tables of values (or ``EUR``)."""
    for name, info in model.model_fields.items():
        for leaf, _meta, how in leaves(info.annotation):
            present = base.get(name)
            if is_model(leaf):
                if how == "":
                    inner = present if isinstance(present, dict) else {}
                    yield from (((name, *p), t) for p, t in numeric_paths(leaf, inner))
                elif how == "[]" and isinstance(present, list) and present:
                    yield from (((name, "0", *p), t) for p, t in numeric_paths(leaf, present[0]))
            elif leaf in NUMBERS and leaf is not bool:
                if how == "":
                    yield (name,), leaf
                elif how == "{}":
                    key = next(iter(present)) if isinstance(present, dict) and present else "EUR"
                    yield (name, key), leaf


def with_value(section: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``section`` with ``value`` at ``path`` (list items by index)."""
    result: Any = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                   for k, v in section.items()}
    node = result
    for step in path[:-1]:
        child = node[int(step)] if isinstance(node, list) else node.get(step)
        if isinstance(child, dict):
            child = dict(child)
        elif isinstance(child, list):
            child = [dict(item) if isinstance(item, dict) else item for item in child]
        else:
            child = {}
        if isinstance(node, list):
            node[int(step)] = child
        else:
            node[step] = child
        node = child
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return typing.cast(dict[str, Any], result)


CORE_SECTIONS: dict[str, tuple[type[BaseModel], str, dict[str, Any]]] = {
    # table header -> (model, dotted key prefix, the other keys of a valid section)
    "database": (DatabaseSettings, "database", {}),
    "daemon": (DaemonSettings, "daemon", {}),
    "ingest": (IngestSettings, "ingest", {}),
    "sources.s": (SourceSection, "sources.s", {"plugin": "file", "path": "deals.csv"}),
    "rails.r": (RailSection, "rails.r", {"plugin": "csv_export", "directory": "out"}),
    "programs.p": (ProgramSection, "programs.p", {"calculator": "percentage", "percent": "2"}),
    "compliance.tax": (TaxSettings, "compliance.tax", {"thresholds": {"2027": "2100"}}),
    "compliance.gifts": (GiftSettings, "compliance.gifts", {}),
    "compliance.retention": (RetentionSettings, "compliance.retention", {}),
}


def core_cases() -> Iterator[Any]:
    for header, (model, prefix, base) in CORE_SECTIONS.items():
        for name, info in model.model_fields.items():
            for leaf, _meta, how in leaves(info.annotation):
                if leaf in NUMBERS and leaf is not bool:
                    present = base.get(name)
                    first = next(iter(present)) if isinstance(present, dict) and present else "EUR"
                    path = (name,) if how == "" else (name, first)
                    for value in bad_values(leaf):
                        key = ".".join((prefix, *path))
                        body = toml_table(header, with_value(base, path, value))
                        yield pytest.param(body, key, id=f"{key}={value!r}"[:80])


def plugin_cases() -> Iterator[Any]:
    for where, model in sorted(plugin_models().items()):
        table, base = section_for(where)
        for path, leaf in numeric_paths(model, base):
            for value in bad_values(leaf):
                key = ".".join((table, "x", *path))
                yield pytest.param(where, with_value(base, path, value), key,
                                   id=f"{where}:{'.'.join(path)}={value!r}"[:90])


def with_database(tmp_path: Path, body: str) -> str:
    """``body`` with a ``[database]`` table whose URL is a file in ``tmp_path``."""
    url = f'url = "sqlite:///{tmp_path / "payhub.db"}"\n'
    if body.startswith("[database]\n"):
        return "[database]\n" + url + body.removeprefix("[database]\n")
    return "[database]\n" + url + body


CORE_MODELS: dict[str, type[BaseModel]] = {"sources": SourceSection, "rails": RailSection, "programs": ProgramSection}


def check(tmp_path: Path, body: str) -> list[tuple[str, str]]:
    """The problems load_settings and load_plugins report for ``body``."""
    (tmp_path / "outbox").mkdir(exist_ok=True)
    config = tmp_path / "payhub.toml"
    config.write_text(with_database(tmp_path, body), encoding="utf-8")
    try:
        load_plugins(load_settings(config)).close()
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(("body", "key"), list(core_cases()))
def test_core_numeric_setting_refuses_non_finite_and_absurd_values(tmp_path: Path, body: str, key: str) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text(with_database(tmp_path, body), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert key in [k for k, _ in raised.value.problems], (body, raised.value.problems)


@pytest.mark.parametrize(("where", "section", "key"), list(plugin_cases()))
def test_plugin_numeric_setting_refuses_non_finite_and_absurd_values(
    tmp_path: Path, where: str, section: dict[str, Any], key: str
) -> None:
    """The plugin's model, validated as load_plugins does (the whole path: test_every_command_refuses…)."""
    table = key.split(".")[0]
    core = CORE_MODELS.get(table)
    raw = {k: v for k, v in section.items() if k != "plugin" and (core is None or k not in core.model_fields)}
    with pytest.raises(ValidationError) as raised:
        plugin_models()[where].model_validate(raw, context={"base_dir": tmp_path})
    assert key in [k for k, _ in validation_problems(raised.value, prefix=f"{table}.x")]


def test_the_plugin_table_reaches_every_plugin_and_nested_table() -> None:
    ids = [p.id for p in plugin_cases()]
    for where, model in plugin_models().items():
        if list(numeric_paths(model, section_for(where)[1])):
            assert any(i.startswith(where + ":") for i in ids), where
    for nested in ("rails:bank_transfer:sepa.max_amount", "rails:bank_transfer:ach.max_amount",
                   "rails:bank_transfer:file_mode", "rails:credit_note:tax.rate",
                   "calculators:rebate:tiers.0.up_to", "calculators:loyalty_points:tiers.0.min_points",
                   "rails:giftcard:max_amounts.EUR"):
        assert any(i.startswith(nested + "=") for i in ids), nested
    assert len(ids) > 250


def test_the_valid_sections_used_above_are_valid(tmp_path: Path) -> None:
    """Each row above changes one value of a valid section, so the problem it finds is that value's."""
    assert check(tmp_path, "") == []
    for header, (_model, _prefix, base) in CORE_SECTIONS.items():
        assert check(tmp_path, toml_table(header, base)) == [], header
    for where in sorted(plugin_models()):
        table, section = section_for(where)
        problems = check(tmp_path, toml_table(f"{table}.x", section))
        assert problems == [], (where, problems)


# ------------------------------------------------------------------------------------ through the command line

CLI_CASES = {
    "lease inf": ("[database]\nlease_seconds = inf\n", "database.lease_seconds", "finite number"),
    "lease 1e308": ("[database]\nlease_seconds = 1e308\n", "database.lease_seconds", "less than or equal to 86400"),
    "lease nan": ("[database]\nlease_seconds = nan\n", "database.lease_seconds", "finite number"),
    "batch 2^70": (f"[database]\nbatch_size = {2**70}\n", "database.batch_size", "less than or equal to 100000"),
    "idle inf": ("[daemon]\nidle_seconds = inf\n", "daemon.idle_seconds", "finite number"),
    "grace inf": ("[daemon]\nshutdown_grace_seconds = inf\n", "daemon.shutdown_grace_seconds", "finite number"),
    "max_amount float": ("[ingest]\nmax_amount = 0.1\n", "ingest.max_amount", 'write decimal amounts as strings'),
    "max_amount huge": (f'[ingest]\nmax_amount = "{10**13}"\n', "ingest.max_amount", "less than or equal to"),
    "min_payout float": ('[rails.c]\nplugin = "csv_export"\ndirectory = "out"\nmin_payout = {EUR = 2.5}\n',
                         "rails.c.min_payout.EUR", "write decimal amounts as strings"),
    "rail timeout inf": ('[rails.c]\nplugin = "csv_export"\ndirectory = "out"\ntimeout_seconds = inf\n',
                         "rails.c.timeout_seconds", "finite number"),
}
PLUGIN_CLI_CASES = {
    "file settle inf": ('[sources.f]\nplugin = "file"\npath = "f.csv"\nsettle_seconds = inf\n',
                        "sources.f.settle_seconds", "finite number"),
    "hubspot timeout 1e308": (toml_table("sources.hs", {**PLUGIN_SECTIONS["sources:hubspot"][1],
                                                        "http_timeout_seconds": 1e308}),
                              "sources.hs.http_timeout_seconds", "less than or equal to 600"),
    "bank sepa max float": (toml_table("rails.bank", with_value(PLUGIN_SECTIONS["rails:bank_transfer"][1],
                                                               ("sepa", "max_amount"), 0.1)),
                            "rails.bank.sepa.max_amount", "write decimal amounts as strings"),
    "percent huge": ('[programs.p]\ncalculator = "percentage"\npercent = "1000000000000000000000"\n',
                     "programs.p.percent", "less than or equal to 100"),
}


@pytest.mark.parametrize("command", [["config", "check"], ["run", "--once"], ["events", "list"]],
                         ids=["check", "run", "events"])
@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_every_command_refuses_with_the_dotted_key(tmp_path: Path, case: str, command: list[str]) -> None:
    body, key, message = CLI_CASES[case]
    config = tmp_path / "payhub.toml"
    config.write_text(with_database(tmp_path, body))
    result = invoke("-c", str(config), *command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith(f"{key}:")]
    assert lines and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "payhub.db").exists()


@pytest.mark.parametrize("command", [["config", "check"], ["run", "--once"]], ids=["check", "run"])
@pytest.mark.parametrize("case", list(PLUGIN_CLI_CASES), ids=list(PLUGIN_CLI_CASES))
def test_plugin_settings_refused_by_check_and_run(tmp_path: Path, case: str, command: list[str]) -> None:
    body, key, message = PLUGIN_CLI_CASES[case]
    (tmp_path / "outbox").mkdir()
    config = tmp_path / "payhub.toml"
    config.write_text(with_database(tmp_path, body))
    result = invoke("-c", str(config), *command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith(f"{key}:")]
    assert lines and message in lines[0], result.stderr


@pytest.mark.parametrize(("variable", "value", "key"), [
    ("PAYHUB_DATABASE__LEASE_SECONDS", "inf", "database.lease_seconds"),
    ("PAYHUB_DATABASE__LEASE_SECONDS", "nan", "database.lease_seconds"),
    ("PAYHUB_DATABASE__BATCH_SIZE", str(2**70), "database.batch_size"),
    ("PAYHUB_DAEMON__SHUTDOWN_GRACE_SECONDS", "Infinity", "daemon.shutdown_grace_seconds"),
    ("PAYHUB_INGEST__MAX_AMOUNT", "1e3", "ingest.max_amount"),
])
def test_environment_values_are_bounded_too(tmp_path: Path, variable: str, value: str, key: str) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n')
    for command in (["config", "check"], ["run", "--once"]):
        result = invoke("-c", str(config), *command, env={variable: value})
        assert result.exit_code == 2, result.output
        assert f"  {key}: " in result.stderr


def test_amount_settings_are_decimal_text(tmp_path: Path) -> None:
    """Amounts are documented as decimal text: a string or an integer; a TOML float is refused with the fix."""
    config = tmp_path / "payhub.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n[ingest]\nmax_amount = 250000.5\n')
    result = invoke("-c", str(config), "config", "check")
    assert result.exit_code == 2
    assert 'ingest.max_amount: Value error, write decimal amounts as strings ("250000.5")' in result.stderr
    for good in ('"250000.50"', "250000"):
        config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "payhub.db"}"\n[ingest]\nmax_amount = {good}\n')
        assert load_settings(config).ingest.max_amount == Decimal(good.strip('"'))


# ------------------------------------------------------------------------------------------ documented bounds

CORE_TABLES = {"database": "database", "daemon": "daemon", "ingest": "ingest", "audit": "audit",
               "compliance": "compliance", "sources": "sources.<name>", "rails": "rails.<name>",
               "programs": "programs.<name>", "http": "http", "console": "console", "notify": "notify"}


def number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bound_text(metadata: list[Any]) -> tuple[str, str]:
    lows = [(m.ge, "≥") for m in metadata if isinstance(m, at.Ge)] + [(m.gt, ">") for m in metadata
                                                                      if isinstance(m, at.Gt)]
    highs = [(m.le, "≤") for m in metadata if isinstance(m, at.Le)] + [(m.lt, "<") for m in metadata
                                                                       if isinstance(m, at.Lt)]
    low = max(lows, key=lambda b: (b[0], b[1] == ">"))
    high = min(highs, key=lambda b: (b[0], b[1] == "≤"))
    return f"{low[1]} {number(low[0])}", f"{high[1]} {number(high[0])}"


CHECKED_BY_VALIDATOR = {  # a stricter bound that the model's own validator enforces, with its own message
    ("`activity`", "programs.<name>.rewards.<key>"): "> 0",
    ("`giftcard`", "rails.<name>.max_amounts.<key>"): "> 0",
}


def documented_rows(model: type[BaseModel], prefix: str, plugin: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        for leaf, metadata, how in leaves(info.annotation):
            key = prefix + "." + name + {"": "", "[]": "[]", "{}": ".<key>"}.get(how, how)
            if is_model(leaf):
                yield from documented_rows(leaf, key, plugin)
            elif leaf in NUMBERS and leaf is not bool:
                low, high = bound_text(metadata + list(info.metadata))
                low = CHECKED_BY_VALIDATOR.get((plugin, key), low)
                if name == "file_mode":  # permissions read better in octal
                    low, high = (re.sub(r"\d+", lambda m: oct(int(m.group())), text) for text in (low, high))
                kind = {int: "integer", float: "number", Decimal: "amount"}[leaf]
                yield f"| `{key}` | {plugin} | {kind} | {low} | {high} |"


def bounds_table() -> list[str]:
    rows = []
    for table, prefix in CORE_TABLES.items():
        section = Settings.model_fields[table].annotation
        model = typing.get_args(section)[1] if typing.get_origin(section) is dict else section
        rows += list(documented_rows(typing.cast(type[BaseModel], model), prefix, "core"))
    for where, model in sorted(plugin_models().items(), key=lambda item: (item[0].split(":")[1], item[0])):
        table = {"sources": "sources", "rails": "rails", "calculators": "programs", "hooks": "hooks"}[
            where.split(":")[0]]
        rows += list(documented_rows(model, f"{table}.<name>", f"`{where.split(':')[1]}`"))
    return rows


def test_docs_list_the_bounds_of_every_numeric_setting() -> None:
    docs = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [row for row in bounds_table() if row not in docs]
    assert missing == [], "\n".join(missing)


@pytest.mark.parametrize(("where", "path", "value"), [
    ("calculators:activity", ("rewards", "webinar"), "0"),
    ("rails:giftcard", ("max_amounts", "EUR"), "-5"),
])
def test_bounds_checked_by_validators_hold(tmp_path: Path, where: str, path: tuple[str, ...], value: str) -> None:
    """The rows of CHECKED_BY_VALIDATOR: the documented lower bound is enforced."""
    table, base = section_for(where)
    core = CORE_MODELS[table]
    raw = {k: v for k, v in with_value(base, path, value).items() if k != "plugin" and k not in core.model_fields}
    with pytest.raises(ValidationError):
        plugin_models()[where].model_validate(raw, context={"base_dir": tmp_path})


if __name__ == "__main__":  # prints the table of docs/settings.md#numbers-amounts-and-names
    print("\n".join(bounds_table()))
