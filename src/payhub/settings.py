"""The settings file: one TOML document, overridable by ``PAYHUB_…`` environment variables.

The file is found from ``--config``, then ``PAYHUB_CONFIG``, then ``./payhub.toml``. Nested keys are overridden with
``__`` between levels: ``PAYHUB_DATABASE__URL``, ``PAYHUB_RAILS__BANK__API_KEY``. Relative paths in the file are
relative to the file's own directory. Plugin sections (sources, programs, rails, hooks) carry the core keys below
plus the plugin's own keys, which the plugin's settings model validates (see :mod:`payhub.plugins`).
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from payhub.api import Amount, Currency
from payhub.errors import ConfigError

DEFAULT_CONFIG = "payhub.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _PluginSection(BaseModel):
    """A section naming a plugin; keys not listed here belong to the plugin's own settings model."""

    model_config = ConfigDict(extra="allow")

    enabled: bool = True

    def plugin_name(self, section: str) -> str:
        raise NotImplementedError

    def plugin_settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class _NamedPluginSection(_PluginSection):
    plugin: str | None = Field(None, description="Entry-point name; defaults to the section name.")

    def plugin_name(self, section: str) -> str:
        return self.plugin or section


class DatabaseSettings(_Section):
    url: str = Field("sqlite:///payhub.db", description="SQLAlchemy URL; sqlite:/// paths are relative to the file.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    batch_size: PositiveInt = Field(2000, description="Rows per stage transaction.")
    lease_seconds: PositiveFloat = Field(
        300, description="How long a worker owns the payouts or source it claimed; must exceed two rail timeouts.")

    @field_validator("url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        try:
            make_url(value)
        except (ArgumentError, ValueError):  # the message never echoes the URL, which may hold a password
            raise ValueError("not a valid SQLAlchemy URL (e.g. sqlite:///payhub.db)") from None
        return value


class DaemonSettings(_Section):
    idle_seconds: PositiveFloat = Field(1.0, description="Sleep between passes when nothing is due.")
    shutdown_grace_seconds: PositiveFloat = Field(15, description="Time in-flight work gets after SIGTERM.")
    plugin_timeout_seconds: PositiveFloat = Field(120, description="A plugin call running longer is abandoned.")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class LogSettings(_Section):
    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"
    format: Literal["text", "json"] = "text"


class IngestSettings(_Section):
    max_amount: Decimal = Field(Decimal("100000000"), gt=0, description="Event amounts above this are quarantined.")


class SourceSection(_NamedPluginSection):
    poll_interval_seconds: PositiveFloat = 60
    batch_size: PositiveInt = 1000




class BudgetSettings(_Section):
    """A fund pool a program's rewards draw on; a reward that would overdraw it is held."""

    amount: Amount = Field(gt=0, description="The pool for each period (and each partner with per = \"partner\").")
    currency: Currency
    period: Literal["month", "quarter", "year", "program"] = Field(
        "program", description="Calendar period of the event the pool belongs to; \"program\" = one pool for ever.")
    per: Literal["program", "partner"] = Field("program", description="One pool, or one per partner.")


class CapSettings(_Section):
    """The most a program pays one payee, one partner (on its events) or in all, per calendar period."""

    per: Literal["payee", "partner", "program"]
    amount: Amount = Field(ge=0)
    currency: Currency
    period: Literal["month", "quarter", "year", "program"] = Field(
        "program", description="Calendar period of the event the cap counts in; \"program\" = for ever.")


class ApprovalSettings(_Section):
    """Rewards above ``threshold`` wait for an approver; above ``dual_threshold``, for two different approvers."""

    currency: Currency
    threshold: Amount = Field(ge=0)
    dual_threshold: Amount | None = Field(None, ge=0)

    @field_validator("dual_threshold")
    @classmethod
    def _above(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        threshold = info.data.get("threshold")
        if value is not None and threshold is not None and value < threshold:
            raise ValueError(f"dual_threshold {value} is below threshold {threshold}")
        return value


class ProgramSection(_PluginSection):
    """A program: a calculator plus its parameters, applied to matching events, and the core rules around it."""

    calculator: str
    event_types: list[str] = Field(default_factory=list, description="Event types it applies to; empty = all.")
    sources: list[str] = Field(default_factory=list, description="Sources it applies to; empty = all.")
    splits: bool = Field(False, description="Split what the event's payee earns by the event's `splits` attribute.")
    split_overlay: bool = Field(False, description="Split shares may add up to more than 100% (overlay programs).")
    once_per_object: bool = Field(
        False, description="Reward each CRM object at most once until a clawback takes the reward back (a deal "
        "seen won twice is not paid twice).")
    clawback_event_types: list[str] = Field(
        default_factory=list, description="Event types (refund, cancellation, lost after won) that take back the "
        "program's rewards for the same CRM object.")
    clawback: Literal["full", "prorated"] = Field(
        "full", description="Take back everything, or the share of the term left unused.")
    clawback_term_days: PositiveInt | None = Field(
        None, validate_default=True,
        description="The term a prorated clawback measures, from the first rewarded event of the object.")
    caps: list[CapSettings] = Field(
        default_factory=list, description="Caps applied to each reward in the order listed; cut amounts recorded.")
    budget: BudgetSettings | None = None
    approval: ApprovalSettings | None = None
    payout_currency: Literal["reward", "payee"] = Field(
        "reward", description="Pay in the reward's currency, or convert to the payee's currency.")
    fx_date: Literal["event", "payout"] = Field(
        "event", description="The date whose rate converts: the event's date, or the day the payout is made.")
    fx_rate_type: str = Field("reference", description="The rate type asked from the FX providers.")

    @field_validator("clawback_term_days")
    @classmethod
    def _term(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None and info.data.get("clawback") == "prorated":
            raise ValueError("a prorated clawback needs clawback_term_days")
        return value

    def plugin_name(self, section: str) -> str:
        return self.calculator


class RailSection(_NamedPluginSection):
    max_attempts: PositiveInt = Field(5, description="Send attempts per payout before it fails.")
    retry_initial_seconds: float = Field(1.0, ge=0)
    retry_max_seconds: float = Field(60.0, ge=0)
    timeout_seconds: PositiveFloat = Field(60.0, description="A send or lookup call running longer is abandoned.")
    settle_interval_seconds: PositiveFloat = 300
    min_payout: dict[Currency, Amount] = Field(
        default_factory=dict, description="Smallest payout per currency; smaller balances carry forward.")


class HookSection(_NamedPluginSection):
    pass


class RouteRule(_Section):
    """Payees matching ``countries`` and ``currencies`` (empty = any) are paid by the first of ``rails`` that can."""

    countries: list[str] = Field(default_factory=list, description="ISO 3166 alpha-2 codes of the payee.")
    currencies: list[Currency] = Field(default_factory=list, description="Payout currencies.")
    rails: list[str] = Field(min_length=1, description="Rails tried in order (fallbacks).")

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        bad = [code for code in value if not re.fullmatch(r"[A-Za-z]{2}", code)]
        if bad:
            raise ValueError(f"not ISO 3166 alpha-2 country codes: {', '.join(bad)}")
        return [code.upper() for code in value]


class RoutingSettings(_Section):
    rules: list[RouteRule] = Field(
        default_factory=list, description="The first rule matching the payee's country and the currency routes it.")
    default_rail: str | None = Field(
        None, description="Rail for payees no rule matches, and the last fallback when the chosen rails cannot pay.")


class PayeesSettings(_Section):
    file: Path | None = Field(None, description="CSV of payees and payout details, re-read each pass.")


class Settings(BaseSettings):
    """Every payhub setting. Unknown keys are errors."""

    model_config = SettingsConfigDict(
        env_prefix="PAYHUB_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    database: DatabaseSettings = DatabaseSettings()
    daemon: DaemonSettings = DaemonSettings()
    log: LogSettings = LogSettings()
    ingest: IngestSettings = IngestSettings()
    routing: RoutingSettings = RoutingSettings()
    payees: PayeesSettings = PayeesSettings()
    sources: dict[str, SourceSection] = Field(default_factory=dict)
    programs: dict[str, ProgramSection] = Field(default_factory=dict)
    rails: dict[str, RailSection] = Field(default_factory=dict)
    hooks: dict[str, HookSection] = Field(default_factory=dict)

    # Not a setting: the directory relative paths are resolved against (the settings file's).
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; the environment overrides them.
        return env_settings, init_settings

    def resolve(self, path: Path | str) -> Path:
        """``path`` made absolute against the settings file's directory."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The settings file to read: ``explicit``, else ``$PAYHUB_CONFIG``, else ``./payhub.toml``."""
    return Path(explicit or os.environ.get("PAYHUB_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the settings file; raise ConfigError naming each bad key."""
    file = config_path(path)
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([("", f"settings file {str(file)!r} not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"{file}: not valid TOML: {exc}")]) from None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc)) from None
    except SettingsError as exc:  # a PAYHUB_… variable holding a table that is not valid JSON
        match = re.search(r'field "([^"]+)"', str(exc))
        key = match.group(1) if match else ""
        variable = f"PAYHUB_{key.upper()}" if key else "a PAYHUB_… variable"
        raise ConfigError([(key, f"environment variable {variable} is not valid JSON")]) from None
    settings._base_dir = file.resolve().parent
    problems = cross_checks(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def cross_checks(settings: Settings) -> list[tuple[str, str]]:
    """Problems that involve more than one key."""
    problems = []
    default = settings.routing.default_rail
    if default and default not in settings.rails:
        configured = ", ".join(sorted(settings.rails)) or "none"
        problems.append(("routing.default_rail", f"names rail {default!r}, which is not configured "
                         f"(configured: {configured})"))
    for number, rule in enumerate(settings.routing.rules):
        for name in rule.rails:
            if name not in settings.rails:
                problems.append((f"routing.rules.{number}.rails", f"names rail {name!r}, which is not configured"))
    lease = settings.database.lease_seconds
    if settings.sources and settings.daemon.plugin_timeout_seconds >= lease:
        problems.append(("daemon.plugin_timeout_seconds", f"{settings.daemon.plugin_timeout_seconds:g}s must be "
                         f"below database.lease_seconds = {lease:g}: a source fetch must fit in its lease"))
    for name, rail in settings.rails.items():
        if 2 * rail.timeout_seconds >= lease:
            problems.append((f"rails.{name}.timeout_seconds", f"{rail.timeout_seconds:g}s is too long for "
                             f"database.lease_seconds = {lease:g}: a lookup and a send must fit in one lease"))
    return problems


def validation_problems(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted.key, message)`` for each error of a pydantic ValidationError."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append((key, message))
    return problems
