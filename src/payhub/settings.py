"""The settings file: one TOML document, overridable by ``PAYHUB_…`` environment variables.

The file is found from ``--config``, then ``PAYHUB_CONFIG``, then ``./payhub.toml``. Nested keys are overridden with
``__`` between levels: ``PAYHUB_DATABASE__URL``, ``PAYHUB_RAILS__BANK__API_KEY``. Relative paths in the file are
relative to the file's own directory. Plugin sections (sources, programs, rails, hooks) carry the core keys below
plus the plugin's own keys, which the plugin's settings model validates (see :mod:`payhub.plugins`).

Every number has a lower and an upper bound and must be finite (docs/settings.md lists them); a ``PAYHUB_…``
variable that names no setting is an error, except ``PAYHUB_CONFIG`` and the ``PAYHUB_TEST_…`` names reserved for
test suites.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from payhub import files, money, signing
from payhub.api import Amount, Currency
from payhub.api.settings import JsonFloat
from payhub.compliance.flags import clean_flag, flag_problem
from payhub.errors import ConfigError
from payhub.integers import whole_numbers

DEFAULT_CONFIG = "payhub.toml"
MAX_SETTINGS_BYTES = 10 * 1024 * 1024  # a settings file is a few KB; anything this large is a mistake

MINUTE, HOUR, DAY, WEEK = 60, 3600, 86_400, 604_800
MAX_BATCH = 100_000
MAX_DAYS = 3660  # ten years, for terms counted in days
SUPPORTED_DATABASES = frozenset({"sqlite", "sqlite+pysqlite", "postgresql+psycopg"})
"""The SQLAlchemy dialect+driver names payhub runs on (``database.url``)."""

ENV_PREFIX = "PAYHUB_"
ENV_NOT_SETTINGS = frozenset({"PAYHUB_CONFIG"})
"""``PAYHUB_…`` variables that are not settings (the settings file's location)."""
ENV_RESERVED_PREFIX = "PAYHUB_TEST_"
"""Variables reserved for test suites and tools (``PAYHUB_TEST_PG_URL``); payhub itself ignores them."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    _whole_numbers = field_validator("*", mode="before")(whole_numbers)


class _PluginSection(BaseModel):
    """A section naming a plugin; keys not listed here belong to the plugin's own settings model."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    _whole_numbers = field_validator("*", mode="before")(whole_numbers)

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
    batch_size: int = Field(2000, ge=1, le=MAX_BATCH, description="Rows per stage transaction.")
    lease_seconds: float = Field(
        300, gt=0, le=DAY,
        description="How long a worker owns the payouts or source it claimed; must exceed two rail timeouts.")
    sqlite_busy_timeout_seconds: float = Field(
        30, ge=0, le=HOUR, description="How long a SQLite statement waits for a lock another process holds.")
    refresh_statistics: bool = Field(
        True, description="PostgreSQL: ANALYZE payhub's tables as they grow (a first backlog), not only by autovacuum.")

    @field_validator("url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        # The messages never echo the URL, which may hold a password.
        if "\0" in value:
            raise ValueError("a database URL cannot hold a NUL character")
        try:
            driver = make_url(value).drivername
        except (ArgumentError, ValueError):
            raise ValueError("not a valid SQLAlchemy URL (e.g. sqlite:///payhub.db)") from None
        if driver not in SUPPORTED_DATABASES:
            hint = " (write postgresql+psycopg://…)" if driver.startswith("postgres") else ""
            raise ValueError(f"payhub supports SQLite (sqlite:///…) and PostgreSQL through psycopg "
                             f"(postgresql+psycopg://…), not {driver!r}{hint}")
        return value


class DaemonSettings(_Section):
    idle_seconds: float = Field(1.0, gt=0, le=HOUR, description="Sleep between passes when nothing is due.")
    shutdown_grace_seconds: float = Field(
        15, gt=0, le=HOUR, description="Time in-flight work gets after SIGTERM.")
    plugin_timeout_seconds: float = Field(
        120, gt=0, le=DAY, description="A plugin call running longer is abandoned.")
    db_retry_initial_seconds: float = Field(
        1.0, ge=0.01, le=60, description="First wait before working again after a database outage (doubles).")
    db_retry_max_seconds: float = Field(
        30.0, ge=0.01, le=HOUR, description="Longest wait between tries while the database is unavailable.")
    db_outage_log_seconds: float = Field(
        60.0, ge=1, le=DAY, description="While the database stays unavailable, a reminder is logged this often.")

    @field_validator("db_retry_max_seconds")
    @classmethod
    def _max_retry(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("db_retry_initial_seconds")
        if initial is not None and value < initial:
            raise ValueError(f"{value:g} is below db_retry_initial_seconds = {initial:g}")
        return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class LogSettings(_Section):
    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"
    format: Literal["text", "json"] = "text"


class IngestSettings(_Section):
    max_amount: Amount = Field(Decimal("100000000"), gt=0, description="Event amounts above this are quarantined.")
    future_tolerance_seconds: float = Field(
        DAY, ge=0, le=WEEK, description="An event dated more than this after now waits until then to be calculated.")


class SourceSection(_NamedPluginSection):
    poll_interval_seconds: float = Field(60, gt=0, le=WEEK)
    batch_size: int = Field(1000, ge=1, le=MAX_BATCH)




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
    clawback_term_days: int | None = Field(
        None, ge=1, le=MAX_DAYS, validate_default=True,
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
    max_attempts: int = Field(5, ge=1, le=1000, description="Send attempts per payout before it fails.")
    retry_initial_seconds: float = Field(1.0, ge=0, le=HOUR)
    retry_max_seconds: float = Field(60.0, ge=0, le=DAY)
    timeout_seconds: float = Field(
        60.0, gt=0, le=HOUR, description="A send or lookup call running longer is abandoned.")
    lookup_settle_seconds: float | None = Field(
        None, ge=0, le=DAY, description="A lookup's 'not found' after a send that did not answer is trusted only "
        "once this long has passed since that send started; earlier, the payout is looked up again then "
        "(default: 10 × timeout_seconds).")
    settle_interval_seconds: float = Field(300, gt=0, le=WEEK)
    min_payout: dict[Currency, Annotated[Amount, Field(ge=0)]] = Field(
        default_factory=dict, description="Smallest payout per currency; smaller balances carry forward.")

    @property
    def in_flight_seconds(self) -> float:
        """How long a send that did not answer may still be on its way to the provider (``lookup_settle_seconds``)."""
        return 10 * self.timeout_seconds if self.lookup_settle_seconds is None else self.lookup_settle_seconds


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
    payout_cadence: Literal["pass", "daily", "weekly", "monthly"] = Field(
        "pass", description="When a payee's pending rewards become a payout: every pass, or once the UTC day, ISO "
        "week (from Monday) or calendar month in which they became payable has closed.")

    @field_validator("payout_cadence", mode="before")
    @classmethod
    def _cadence(cls, value: Any) -> Any:
        cadences = ("pass", "daily", "weekly", "monthly")
        if isinstance(value, str) and value.strip().lower() in cadences:
            return value.strip().lower()
        shown = repr(value) if isinstance(value, str) and len(value) <= 40 else type(value).__name__
        raise ValueError(f"must be one of {', '.join(repr(c) for c in cadences)}, not {shown}")


class PayeesSettings(_Section):
    file: Path | None = Field(None, description="CSV of payees and payout details, re-read each pass.")

    @field_validator("file")
    @classmethod
    def _no_nul(cls, value: Path | None) -> Path | None:
        if value is not None and "\0" in str(value):
            raise ValueError("a path cannot hold a NUL character")
        return value


class FilesSettings(_Section):
    """Modes of the files payhub creates that hold payout details (the database, rail output)."""

    group_readable: bool = Field(
        False, description="Create them 0640 (owner and group may read) instead of 0600 (owner only).")


class AuditSettings(_Section):
    """Signed checkpoints of the audit chain (docs/operations.md#signed-checkpoints). The key is never stored in
    the database; give the private key where checkpoints are signed, the public key alone where they are checked."""

    checkpoint_key: SecretStr | None = Field(
        None, description="Ed25519 private key signing checkpoints: PEM (PKCS#8) or base64 of its 32-byte seed.")
    checkpoint_key_file: Path | None = Field(None, description="A file holding that private key (instead).")
    checkpoint_public_key: str | None = Field(
        None, description="Ed25519 public key (PEM or base64) that checks checkpoints where the private key is not.")
    checkpoint_dir: Path = Field(Path("audit-checkpoints"), description="Append-only directory of checkpoints.")
    checkpoint_every_entries: int = Field(
        10_000, ge=1, le=1_000_000_000,
        description="The daemon signs the head once this many entries were added since its last checkpoint.")
    checkpoint_every_seconds: float = Field(
        300, ge=1, le=86_400, description="The daemon also signs a head that moved and is older than this (seconds).")

    @field_validator("checkpoint_key")
    @classmethod
    def _private(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                signing.parse_private(value.get_secret_value())
            except signing.BadKey as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("checkpoint_public_key")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                signing.parse_public(value)
            except signing.BadKey as exc:
                raise ValueError(str(exc)) from None
        return value


LAST_FIXED_THRESHOLD_YEAR = 2026
"""Reporting thresholds through this year are fixed by law (:mod:`payhub.compliance.tax_report`)."""


class TaxSettings(_Section):
    """US information-return rules (docs/compliance.md#tax-profiles): forms, backup withholding, thresholds."""

    enabled: bool = Field(False, description="Apply the tax-form rules before scheduling.")
    us_without_w9: Literal["hold", "withhold"] = Field(
        "hold", description="A US payee without a valid W-9 (and TIN): hold its rewards, or pay with backup "
                            "withholding.")
    backup_withholding_rate: Amount = Field(Decimal("0.24"), gt=0, lt=1, description="Backup withholding rate, as "
                                                                               "decimal text (\"0.24\").")
    non_us_without_w8: Literal["hold", "pay"] = Field(
        "hold", description="A non-US payee without a current W-8BEN or W-8BEN-E: hold its rewards, or pay.")
    thresholds: dict[int, Annotated[Amount, Field(gt=0)]] = Field(
        default_factory=dict, description="Reporting threshold in USD by payment year, for years after 2026 "
                                          "(2025 and before: 600; 2026: 2000).")
    warn_ratio: Amount = Field(Decimal("0.8"), gt=0, le=1, description="Warn when a payee without a form reaches "
                                                                         "this share of the threshold.")
    boxes: dict[str, Literal["1099-NEC-1", "1099-MISC-3", "none"]] = Field(
        default_factory=dict, description="Per program, where the year-end report puts what it paid (1099-NEC box 1, "
                                          "1099-MISC box 3, or not reported), overriding the default of its "
                                          "calculator.")


class FlagCap(_Section):
    """A yearly cap on what payees carrying ``flag`` may receive (docs/compliance.md#gift-and-anti-bribery-limits)."""

    flag: str = Field(min_length=1, max_length=100, description="A payee flag, compared as payhub.compliance.flags "
                                                                "normalises it (case, width, invisible characters).")
    amount: Amount = Field(ge=0, description="The most paid per calendar year (UTC) of the event.")
    currency: Currency = Field(description="Rewards in this currency are capped; a flagged payee's reward in a "
                                           "currency none of the flag's caps has fails its calculation.")
    per: Literal["payee", "program", "flag"] = Field(
        "payee", description="One cap per payee, per payee and program, or one pool for all payees with the flag.")
    programs: list[str] = Field(default_factory=list, description="Programs it applies to; empty = all.")

    @field_validator("flag")
    @classmethod
    def _plain_flag(cls, value: str) -> str:
        problem = flag_problem(value)
        if problem is not None:
            raise ValueError(f"the flag {value!r} {problem}")
        return clean_flag(value)


class GiftSettings(_Section):
    """Gift and anti-bribery limits."""

    flag_caps: list[FlagCap] = Field(default_factory=list, description="Applied at calculation, after the "
                                                                       "program's caps, in the order listed.")
    giftcard_rails: list[str] = Field(default_factory=list, description="Rails whose payouts are gift cards.")
    giftcard_yearly_cap: dict[Currency, Annotated[Amount, Field(ge=0)]] = Field(
        default_factory=dict, description="Per recipient and calendar year, the most paid in gift cards.")


class ErasureSettings(_Section):
    """What ``payhub payees erase`` removes besides the payee's own row (docs/compliance.md#erasure)."""

    event_attributes: list[str] = Field(
        default_factory=list, description="Event attributes that hold personal data of the event's payee.")

    @field_validator("event_attributes")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        for number, name in enumerate(value):
            if not name.strip():
                raise ValueError(f"item {number} is empty or only white space: name an event attribute")
        return value


class RetentionSettings(_Section):
    """How long events' payloads and audit entries are kept (docs/compliance.md#retention)."""

    events_days: int | None = Field(None, ge=1, le=36_600, description="Archive and delete events' payloads "
                                                                          "older than this.")
    audit_days: int | None = Field(None, ge=1, le=36_600, description="Archive and delete audit entries older "
                                                                         "than this.")
    archive_dir: Path = Field(Path("archive"), description="Where `payhub retention apply` writes its archives.")


class ComplianceSettings(_Section):
    """Compliance rules of the core (docs/compliance.md); sanctions screening is the ``sanctions`` hook plugin."""

    tax: TaxSettings = TaxSettings()
    gifts: GiftSettings = GiftSettings()
    erasure: ErasureSettings = ErasureSettings()
    retention: RetentionSettings = RetentionSettings()


class _EnvironmentSource(EnvSettingsSource):
    """The ``PAYHUB_…`` variables. A plugin's own keys are unknown to the core, so pydantic-settings reads their
    values as JSON; a value that is one number with a fraction or an exponent (``0.5``) is kept as the text it is,
    so that an amount takes it as decimal text and any other number parses it as usual. Numbers inside JSON
    tables and lists arrive as :class:`payhub.api.settings.JsonFloat`: an amount refuses them, asking for quotes."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        decoded = super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        if decoded is value or not isinstance(value, str):  # not decoded (NoDecode)
            return decoded
        if isinstance(decoded, float):
            return value
        return json.loads(value, parse_float=JsonFloat)


class HttpSettings(_Section):
    """The HTTP face (docs/api.md): health, metrics, webhooks and API v1, served by ``payhub run`` when ``listen``
    is set and by ``payhub serve``."""

    listen: str | None = Field(
        None, description="host:port to serve HTTP on (e.g. 127.0.0.1:8700); none: `payhub run` serves no HTTP.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="Largest request body accepted; larger ones get 413.")
    read_timeout_seconds: float = Field(
        10, gt=0, le=300, description="Time a client has to send a request body; then 408.")
    max_connections: int = Field(
        100, ge=1, le=10_000, description="Requests served at once; one more is answered 503 at once.")
    auth_failures_per_minute: int = Field(
        10, ge=1, le=10_000, description="Failed sign-ins per origin address per minute before it gets 429.")
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For names the client's address.")
    shutdown_grace_seconds: float = Field(
        5, gt=0, le=HOUR, description="Time open requests get to finish when the server stops.")
    metrics_refresh_seconds: float = Field(
        15, ge=0, le=HOUR, description="How often /metrics reads its counts from the database, off the request path; "
        "0 reads them on every scrape.")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """``listen`` as (host, port), or None."""
        return split_listen(self.listen) if self.listen is not None else None


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8700`` in IPv6) as (host, port); port 0 takes a free one. ValueError names the problem."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8700)")
    return host, int(port)


class ConsoleSettings(_Section):
    """The web console (docs/console.md), served under ``/console`` by the HTTP face."""

    enabled: bool = Field(True, description="Serve the console under /console when HTTP is served.")
    idle_minutes: int = Field(
        30, ge=1, le=24 * 60, description="A console session unused this long is ended; sign in again.")
    max_hours: int = Field(12, ge=1, le=24 * 30, description="A console session ends this long after sign-in.")
    secure_cookie: Literal["auto", "always", "never"] = Field(
        "auto", description="Mark the session cookie Secure: auto does when the request came over HTTPS (directly "
        "or, from an address in http.forwarded_allow_ips, per X-Forwarded-Proto).")


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
"""The hosts ``[notify.smtp] security = \"none\"`` may log in to."""


class SmtpSettings(_Section):
    """The mail server partner statements are sent through (``[notify.smtp]``)."""

    host: str = Field(..., min_length=1, max_length=253, description="The SMTP server's host name or address.")
    port: int = Field(587, ge=1, le=65535, description="The SMTP server's port.")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (upgrade on the port, usually 587), tls (implicit TLS, usually 465) or "
        "none (plain text: only for a relay on this host).")
    username: str | None = Field(None, max_length=400, description="Login name, when the server needs one.")
    password: SecretStr | None = Field(
        None, description="Login password (better set by PAYHUB_NOTIFY__SMTP__PASSWORD).")
    sender: str = Field(..., min_length=3, max_length=400, description="The From address of statements.")
    reply_to: str | None = Field(None, max_length=400, description="The Reply-To address, if any.")
    timeout_seconds: float = Field(30, gt=0, le=300, description="Time each SMTP exchange may take.")

    @field_validator("sender", "reply_to")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        from payhub.statements.addresses import header_address

        if value is not None and header_address(value) is None:
            raise ValueError("one e-mail address (local@domain, or with a name: Payhub <statements@example.com>); "
                             "no list, line break or control character")
        return value

    @model_validator(mode="after")
    def _no_plain_text_login(self) -> SmtpSettings:
        if self.security == "none" and self.username and self.host.strip("[]").lower() not in LOOPBACK_HOSTS:
            raise ValueError(f"security = \"none\" with a username sends the password in plain text to {self.host}: "
                             "use starttls or tls (plain text only for a relay on this host: 127.0.0.1, ::1, "
                             "localhost)")
        return self


class NotifySettings(_Section):
    """Partner statements (remittance advice), one per payout once it is sent or paid (docs/console.md)."""

    statements: Literal["off", "smtp", "outbox"] = Field(
        "off", description="off; smtp: mail each statement to the payee's email through [notify.smtp]; outbox: "
        "write each statement (HTML and PDF) into outbox_dir.")
    outbox_dir: str = Field("statements", min_length=1, max_length=4096, description="Where outbox statements are "
                            "written (relative paths are relative to the settings file; ~ is the home directory).")
    max_attempts: int = Field(5, ge=1, le=100, description="Deliveries tried per statement before it is left failed.")
    since: date | None = Field(
        None, description="Only payouts first sent or paid on or after this day (UTC) get a statement; none: every "
        "sent or paid payout, those paid before statements were turned on included.")
    smtp: SmtpSettings | None = None

    @field_validator("outbox_dir")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("a path cannot hold a NUL character")
        return value

    @field_validator("since")
    @classmethod
    def _plausible_day(cls, value: date | None) -> date | None:
        if value is not None and not 2000 <= value.year <= 9999:
            raise ValueError("a day in the years 2000 to 9999")
        return value

    @model_validator(mode="after")
    def _smtp_given(self) -> NotifySettings:
        if self.statements == "smtp" and self.smtp is None:
            raise ValueError("statements = \"smtp\" needs a [notify.smtp] section (host, sender)")
        return self


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
    files: FilesSettings = FilesSettings()
    audit: AuditSettings = AuditSettings()
    http: HttpSettings = HttpSettings()
    console: ConsoleSettings = ConsoleSettings()
    notify: NotifySettings = NotifySettings()
    compliance: ComplianceSettings = ComplianceSettings()
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
        return _EnvironmentSource(settings_cls), init_settings

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
    """Read and validate the settings file and the ``PAYHUB_…`` variables; raise ConfigError naming each bad key
    (and each variable that names no setting). Applies ``[files]`` to the files payhub creates from then on."""
    file = config_path(path)
    data = read_settings_file(file)
    problems = unknown_environment(os.environ)
    try:
        settings = Settings(**data)
    except RecursionError:
        raise ConfigError(problems + [("", f"{file}: arrays or tables are nested too deeply")]) from None
    except ValidationError as exc:
        raise ConfigError(problems + validation_problems(exc)) from None
    except SettingsError as exc:  # a PAYHUB_… variable holding a table that is not valid JSON
        match = re.search(r'field "([^"]+)"', str(exc))
        key = match.group(1) if match else ""
        variable = f"PAYHUB_{key.upper()}" if key else "a PAYHUB_… variable"
        raise ConfigError(problems + [(key, f"environment variable {variable} is not valid JSON")]) from None
    settings._base_dir = file.resolve().parent
    problems += cross_checks(settings)
    if problems:
        raise ConfigError(problems)
    files.configure(group_readable=settings.files.group_readable)
    return settings


def read_settings_file(file: Path) -> dict[str, Any]:
    """The TOML document in ``file``: UTF-8, with or without a byte order mark. Raise ConfigError when the file is
    missing, a directory or another non-regular file, unreadable, larger than 10 MiB, not UTF-8 or not TOML."""

    def problem(message: str) -> ConfigError:
        return ConfigError([("", message)])

    name = repr(str(file))
    try:
        info = file.stat()
        if stat.S_ISDIR(info.st_mode):
            raise problem(f"settings file {name} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise problem(f"settings file {name} is not a regular file")
        with file.open("rb") as fh:
            raw = fh.read(MAX_SETTINGS_BYTES + 1)
    except FileNotFoundError:
        raise problem(f"settings file {name} not found") from None
    except OSError as exc:
        raise problem(f"settings file {name} cannot be read: {exc.strerror or exc}") from None
    except ValueError:  # a NUL character in the path
        raise problem(f"settings file {name} is not a valid path") from None
    if len(raw) > MAX_SETTINGS_BYTES:
        raise problem(f"settings file {name} is larger than {MAX_SETTINGS_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise problem(f"{file}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at line {line}, column {column}); "
                      "save the file as UTF-8") from None
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise problem(f"{file}: not valid TOML: {exc}") from None
    except RecursionError:
        raise problem(f"{file}: arrays or tables are nested too deeply") from None


def _environment_names() -> Iterator[str]:
    """Every ``PAYHUB_…`` name of a core setting: tables and the keys of the fixed sections."""
    yield from ENV_NOT_SETTINGS
    for table, info in Settings.model_fields.items():
        yield f"{ENV_PREFIX}{table.upper()}"
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key in section.model_fields:
                yield f"{ENV_PREFIX}{table.upper()}__{key.upper()}"


def unknown_environment(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(variable, problem)`` for each ``PAYHUB_…`` variable whose first part names no settings table, with the
    nearest valid name. ``PAYHUB_CONFIG`` and ``PAYHUB_TEST_…`` are not settings and are allowed. (Keys below a
    known table are checked by validation: ``database.bogus: unknown key``.)"""
    tables = {table.upper() for table in Settings.model_fields}
    known = list(_environment_names())
    problems = []
    for variable in sorted(environ):
        name = variable.upper()  # names are matched without regard to case, as pydantic-settings reads them
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS or name.startswith(ENV_RESERVED_PREFIX):
            continue
        first, _, rest = name[len(ENV_PREFIX):].partition("__")
        if first in tables:
            continue
        # Plugin tables take any section and key below them: compare with the same tail under each table.
        candidates = known + [f"{ENV_PREFIX}{table}__{rest}" for table in tables if rest]
        tails = {candidate[len(ENV_PREFIX):]: candidate for candidate in candidates}  # the prefix matches anyway
        nearest = [tails[tail] for tail in difflib.get_close_matches(name[len(ENV_PREFIX):], tails, n=1, cutoff=0.6)]
        if nearest and nearest[0] in ENV_NOT_SETTINGS:
            hint = f"; did you mean {nearest[0]} (the settings file)?"
        elif nearest:
            hint = f"; did you mean {nearest[0]} ({nearest[0][len(ENV_PREFIX):].lower().replace('__', '.')})?"
        else:
            hint = f"; setting variables start with PAYHUB_<table>__ ({', '.join(sorted(t.lower() for t in tables))})"
        problems.append((variable, f"environment variable names no payhub setting{hint}"))
    return problems


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
    if settings.audit.checkpoint_key is not None and settings.audit.checkpoint_key_file is not None:
        problems.append(("audit.checkpoint_key_file", "give the checkpoint key or a key file, not both"))
    for name, rail in settings.rails.items():
        if 2 * rail.timeout_seconds >= lease:
            problems.append((f"rails.{name}.timeout_seconds", f"{rail.timeout_seconds:g}s is too long for "
                             f"database.lease_seconds = {lease:g}: a lookup and a send must fit in one lease"))
    problems += _gift_problems(settings)
    problems += _tax_problems(settings)
    return problems


def _tax_problems(settings: Settings) -> list[tuple[str, str]]:
    """``[compliance.tax]`` thresholds for years whose threshold is fixed by law or out of range, and boxes naming
    programs that are not configured."""
    tax = settings.compliance.tax
    problems = [(f"compliance.tax.thresholds.{year}", "the threshold of payments made through 2026 is fixed by law "
                 "(600 USD through 2025, 2000 USD in 2026) and cannot be set: give only later years")
                for year in sorted(tax.thresholds) if year <= LAST_FIXED_THRESHOLD_YEAR]
    problems += [(f"compliance.tax.thresholds.{year}", f"{year} is not a calendar year payhub reports on (2027 to "
                  "9998)") for year in sorted(tax.thresholds) if year > 9998]
    problems += [(f"compliance.tax.boxes.{name}", f"names program {name!r}, which is not configured")
                 for name in sorted(tax.boxes) if name not in settings.programs]
    return problems


def _gift_problems(settings: Settings) -> list[tuple[str, str]]:
    """``[compliance.gifts]`` keys naming rails or programs that are not configured, and a gift-card cap without
    gift-card rails (it would cap nothing)."""
    gifts = settings.compliance.gifts
    problems = [("compliance.gifts.giftcard_rails", f"names rail {name!r}, which is not configured (configured: "
                 f"{', '.join(sorted(settings.rails)) or 'none'})")
                for name in gifts.giftcard_rails if name not in settings.rails]
    if gifts.giftcard_yearly_cap and not gifts.giftcard_rails:
        problems.append(("compliance.gifts.giftcard_yearly_cap", "is set but giftcard_rails names no rail: it would "
                         "cap nothing"))
    for number, cap in enumerate(gifts.flag_caps):
        problems += [(f"compliance.gifts.flag_caps.{number}.programs", f"names program {name!r}, which is not "
                      "configured") for name in cap.programs if name not in settings.programs]
        problems += _precision_problems(f"compliance.gifts.flag_caps.{number}.amount", cap.amount, cap.currency)
    for currency, amount in gifts.giftcard_yearly_cap.items():
        problems += _precision_problems(f"compliance.gifts.giftcard_yearly_cap.{currency}", amount, currency)
    return problems


def _precision_problems(key: str, amount: Decimal, currency: str) -> list[tuple[str, str]]:
    """A cap with more decimal places than ``currency`` has minor units: no payment can reach it exactly."""
    units = money.minor_units(currency)
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > units:
        return [(key, f"{amount} has more decimal places than {currency} has minor units ({units})")]
    return []


def retention_key_problems(settings: Settings) -> list[tuple[str, str]]:
    """``[compliance.retention] audit_days`` without the private checkpoint key that signs the cut. Checked by
    ``payhub config check`` (and by ``payhub retention apply``), not when every command loads the settings: a host
    that does not run retention (the daemon's, an auditor's with the public key only) may share the file."""
    audit = settings.audit
    if settings.compliance.retention.audit_days is None or audit.checkpoint_key or audit.checkpoint_key_file:
        return []
    return [("compliance.retention.audit_days", "needs audit.checkpoint_key or audit.checkpoint_key_file where "
             "retention runs: `payhub retention apply` signs the cut of the audit log with it and refuses without "
             "it. On hosts that do not run retention, leave audit_days out of their settings (or set it only on the "
             "retention host, e.g. PAYHUB_COMPLIANCE__RETENTION__AUDIT_DAYS)")]


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
