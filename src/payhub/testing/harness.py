"""The in-process harness: payhub's pipeline run by a test, one stage or pass at a time, on a real database.

A :class:`Harness` validates settings given as a dict with payhub's own settings model, migrates its database (a
SQLite file in a temporary directory by default, or any URL), uses plugin instances the test gives (no entry points)
next to plugins loaded by name, and installs a :class:`~payhub.testing.ManualClock`. What payhub stored is read back
as frozen views (:class:`EventView`, :class:`CalculationView`, :class:`RewardView`, :class:`PayoutView`,
:class:`AuditEntryView`, :class:`SourceView`, :class:`WebhookDeliveryView`, :class:`WebhookObjectView`), and
:meth:`Harness.assert_exactly_once` checks payhub's invariants on all of it. :meth:`Harness.open` reads back a
database another process wrote (a ``payhub run`` under test) without changing it, as a :class:`StoreReader`.
:meth:`Harness.http_client` sends requests to payhub's HTTP app on the harness's database.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import importlib
import io
import json
import re
import shutil
import sys
import tempfile
import textwrap
import tomllib
import types
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine

from payhub import audit
from payhub.api import Calculator, Outcome, Payee, Rail, Source
from payhub.clock import parse_instant
from payhub.db import schema
from payhub.db.schema import attempts, audit_log, calculations, events, payout_items, payouts, rewards, sources
from payhub.errors import ConfigError
from payhub.money import from_minor, to_minor
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll_batches
from payhub.pipeline.schedule import route, schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.plugins import load_plugins
from payhub.runtime import Runtime
from payhub.settings import Settings, cross_checks, validation_problems
from payhub.states import FINAL_PAYOUT, PayoutStatus
from payhub.testing.cli import write_distribution
from payhub.testing.clock import ManualClock
from payhub.testing.db import migrate_database
from payhub.testing.fakes import FakeRail, ProviderLedger
from payhub.worker import STAGE_BATCHES, Worker

STAGES = ("ingested", "calculated", "scheduled", "disbursed", "settled")
"""The keys of the counts :meth:`Harness.run_pass` returns, in pipeline order."""

CLOSED_PAYOUTS = FINAL_PAYOUT
"""Payout statuses that no longer hold their rewards (they are owed again or cancelled)."""

UNPAID_PAYOUTS = CLOSED_PAYOUTS | {PayoutStatus.HELD}
"""Payout statuses in which payhub holds that the provider has not paid the payout (or paid it and got it back)."""

WAITING_PAYOUTS = (PayoutStatus.RETRYING, PayoutStatus.UNKNOWN)
"""Payout statuses that wait for their ``next_attempt_at``."""

_TABLES = {"sources": Source, "programs": Calculator, "rails": Rail, "hooks": object}
_GROUPS = {"sources": "payhub.sources", "programs": "payhub.calculators", "rails": "payhub.rails",
           "hooks": "payhub.hooks"}


class ExactlyOnceError(AssertionError):
    """:meth:`Harness.assert_exactly_once` found payhub's invariants broken; ``problems`` lists each finding."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("exactly-once violated:\n" + "\n".join(f"- {p}" for p in self.problems))


@dataclass(frozen=True, slots=True)
class EventView:
    """An event as stored: its dedup ``key``, identity, content and ``status`` (``ingested``, ``waiting``,
    ``calculated``, ``quarantined``) with the ``reason`` of a quarantine."""

    id: int
    key: str
    source: str
    object_type: str
    object_id: str
    transition: str
    event_type: str
    occurred_at: datetime | None
    payee_id: str | None
    partner_id: str | None
    amount: Decimal | None
    currency: str | None
    attributes: Mapping[str, Any]
    status: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class CalculationView:
    """One program's calculation of one event: ``status`` ``rewarded``, ``not_eligible`` or ``failed``."""

    event_id: int
    program: str
    status: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class RewardView:
    """A reward: what a program owes a payee for an event, where it is (``status``, ``hold_code``) and the payout
    that holds it now, if any."""

    id: int
    event_id: int
    program: str
    payee_id: str
    amount: Decimal
    currency: str
    status: str
    hold_code: str | None
    hold_reason: str | None
    payout_id: int | None


@dataclass(frozen=True, slots=True)
class PayoutItemView:
    """One reward in a payout, with its amount in the payout's currency."""

    reward_id: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class PayoutView:
    """A payout: its fixed idempotency key, payee, rail and why routing chose it (``route_reason``), money,
    ``status`` and attempts, and its items."""

    id: int
    idempotency_key: str
    payee_id: str
    rail: str
    route_reason: str
    amount: Decimal
    currency: str
    status: str
    reason: str | None
    attempts: int
    provider_ref: str | None
    next_attempt_at: datetime | None
    items: tuple[PayoutItemView, ...]


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One call of a rail for a payout: ``kind`` ``send`` or ``lookup``, its ``number`` among the payout's calls of
    that kind, and its ``outcome`` (a :class:`payhub.api.Outcome` value, ``not_found`` for a lookup that found
    nothing, None while the call runs) with the rail's ``detail``."""

    payout_id: int
    kind: str
    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class AuditEntryView:
    """An audit entry: who (``actor``, ``origin``) did what (``action``) to which subject, when, with what outcome,
    and its ``detail``."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    outcome: str
    origin: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SourceView:
    """A source's stored state: its ``cursor`` (the plugin's text, None before its first batch), ``status`` (``ok``,
    or ``failed`` with the ``reason``) and when it was last polled. ``more``: whether the source said, at the end of
    this harness's last poll of it, that more records were ready (False when this harness never polled it or
    when it is read back by :meth:`Harness.open`)."""

    name: str
    cursor: str | None
    status: str
    reason: str | None
    last_polled_at: datetime | None
    more: bool


@dataclass(frozen=True, slots=True)
class WebhookDeliveryView:
    """A webhook delivery a source accepted: the sender's ``delivery_id`` (a second delivery with it is refused)."""

    source: str
    delivery_id: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookObjectView:
    """An object a webhook named, queued for the source's next poll (removed once the poll read it)."""

    source: str
    object_id: str
    received_at: datetime


class StoreReader:
    """What payhub stored in a database, read back as frozen views. A :class:`Harness` is one; :meth:`Harness.open`
    makes one on a database written by another process, read-only (SQLite ``query_only``, PostgreSQL read-only
    transactions). Close it (or use it as a context manager) to release its connections."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._more: dict[str, bool] = {}

    def close(self) -> None:
        """Release the database connections. Safe to call more than once."""
        self._engine.dispose()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def events(self, status: str | None = None) -> list[EventView]:
        """The stored events (of ``status``), in order of arrival."""
        query = select(events).order_by(events.c.id)
        if status is not None:
            query = query.where(events.c.status == status)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [EventView(r.id, r.key, r.source, r.object_type, r.object_id, r.transition, r.event_type,
                          r.occurred_at, r.payee_id, r.partner_id, None if r.amount is None else Decimal(r.amount),
                          r.currency, json.loads(r.attributes or "{}"), r.status, r.reason) for r in rows]

    def calculations(self) -> list[CalculationView]:
        """Every calculation, by event then program."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(calculations).order_by(calculations.c.event_id, calculations.c.program)).all()
        return [CalculationView(r.event_id, r.program, r.status, r.reason) for r in rows]

    def rewards(self, status: str | None = None) -> list[RewardView]:
        """The rewards (of ``status``), in order of calculation."""
        query = select(rewards).order_by(rewards.c.id)
        if status is not None:
            query = query.where(rewards.c.status == status)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [RewardView(r.id, r.event_id, r.program, r.payee_id, from_minor(r.amount_minor, r.currency),
                           r.currency, r.status, r.hold_code, r.hold_reason, r.payout_id) for r in rows]

    def payouts(self, status: str | None = None) -> list[PayoutView]:
        """The payouts (of ``status``) with their items, in order of creation."""
        query = select(payouts).order_by(payouts.c.id)
        if status is not None:
            query = query.where(payouts.c.status == status)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            items: dict[int, list[PayoutItemView]] = {r.id: [] for r in rows}
            currency = {r.id: r.currency for r in rows}
            for item in conn.execute(select(payout_items).order_by(payout_items.c.payout_id,
                                                                   payout_items.c.reward_id)):
                if item.payout_id in items:
                    items[item.payout_id].append(
                        PayoutItemView(item.reward_id, from_minor(item.amount_minor, currency[item.payout_id])))
        return [PayoutView(r.id, r.idempotency_key, r.payee_id, r.rail, r.route_reason,
                           from_minor(r.amount_minor, r.currency),
                           r.currency, r.status, r.reason, r.attempts, r.provider_ref, r.next_attempt_at,
                           tuple(items[r.id])) for r in rows]

    def attempts(self, kind: str | None = None) -> list[AttemptView]:
        """The rail calls made for payouts (of ``kind``, ``send`` or ``lookup``), in the order they started."""
        query = select(attempts).order_by(attempts.c.id)
        if kind is not None:
            query = query.where(attempts.c.kind == kind)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [AttemptView(r.payout_id, r.kind, r.number, r.started_at, r.finished_at, r.outcome, r.detail)
                for r in rows]

    def audit(self, action: str | None = None) -> list[AuditEntryView]:
        """The audit entries (of ``action``, e.g. ``payout.sent``), in chain order."""
        query = select(audit_log).order_by(audit_log.c.seq)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [AuditEntryView(r.seq, parse_instant(r.at), r.actor, r.action, r.subject_type, r.subject_id,
                               r.outcome, r.origin, json.loads(r.detail)) for r in rows]

    def audit_problem(self) -> str | None:
        """What ``payhub audit verify`` finds wrong with the audit chain, or None when it is intact."""
        with self._engine.connect() as conn:
            result = audit.verify(conn)
        return None if result.ok else result.problem or "the audit log does not verify"

    def next_attempt_at(self) -> datetime | None:
        """When the earliest payout waiting in ``retrying`` or ``unknown`` is due, or None when none waits."""
        with self._engine.connect() as conn:
            due: datetime | None = conn.execute(select(func.min(payouts.c.next_attempt_at))
                                                .where(payouts.c.status.in_(WAITING_PAYOUTS))).scalar()
        return due

    def sources(self) -> list[SourceView]:
        """The state of every source payhub polled, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(sources).order_by(sources.c.name)).all()
        return [SourceView(r.name, r.cursor, r.status, r.reason, r.last_polled_at, self._more.get(r.name, False))
                for r in rows]

    def webhook_deliveries(self, source: str | None = None) -> list[WebhookDeliveryView]:
        """The webhook deliveries accepted (for ``source``), in order of arrival."""
        table = schema.webhook_deliveries
        query = select(table).order_by(table.c.received_at, table.c.delivery_id)
        if source is not None:
            query = query.where(table.c.source == source)
        with self._engine.connect() as conn:
            return [WebhookDeliveryView(r.source, r.delivery_id, r.received_at) for r in conn.execute(query)]

    def webhook_objects(self, source: str | None = None) -> list[WebhookObjectView]:
        """The objects webhooks named that wait for their source's next poll (for ``source``), in order of arrival."""
        query = select(schema.webhook_objects).order_by(schema.webhook_objects.c.id)
        if source is not None:
            query = query.where(schema.webhook_objects.c.source == source)
        with self._engine.connect() as conn:
            return [WebhookObjectView(r.source, r.object_id, r.received_at) for r in conn.execute(query)]


class Harness(StoreReader):
    """payhub's pipeline in this process, driven by the test.

    ``settings``: the settings file's tables as a dict (``{"programs": {"pct": {"calculator": "percentage",
    "percent": "10"}}, "routing": {"default_rail": "bank"}}``) or the file's TOML text (dedented), validated by
    payhub's settings model; relative paths are resolved against :attr:`directory`. ``plugins``: instances by
    section key (``{"sources.crm": FakeSource("crm"), "rails.bank": FakeRail("bank")}``), used as given; their
    section is added when the settings lack it and may hold core keys only (``max_attempts``, ``batch_size``…): the
    instance carries its own settings. Every other
    enabled section is loaded by name through entry points, as in production. ``payees``: rows of the payees file
    (``{"id": "p1", "name": "Partner One", "country": "DE"}``), written to ``payees.csv`` in :attr:`directory`.
    ``database_url``: default a SQLite file in :attr:`directory`; the schema is migrated to this payhub's revision.
    ``directory``: default a new temporary directory, removed by :meth:`close`. ``clock``: default a new
    :class:`ManualClock` at the current time; installed until :meth:`close`.

    Invalid settings raise :class:`payhub.api.ConfigError` naming each key, as ``payhub config check`` would. Use
    it as a context manager, or call :meth:`close`.
    """

    def __init__(self, settings: Mapping[str, Any] | str | None = None, *, plugins: Mapping[str, object] | None = None,
                 payees: Iterable[Mapping[str, str]] | None = None, database_url: str | None = None,
                 directory: Path | None = None, clock: ManualClock | None = None) -> None:
        self._owns_directory = directory is None
        self.directory: Path = Path(tempfile.mkdtemp(prefix="payhub-harness-")) if directory is None else directory
        self.clock: ManualClock = clock or ManualClock()
        self._given = dict(plugins or {})
        self._cleanups: list[Callable[[], None]] = []
        try:
            self.settings: Settings = self._settings(_tables(settings), database_url, payees)
            self.clock.install()
            self._cleanups.append(self.clock.uninstall)
            migrate_database(self.settings.database_url)  # a new database is a copy of a template migrated once
            self._rt = Runtime(self.settings, role="harness")
            self._cleanups.append(self._rt.close)
            super().__init__(self._rt.engine)
            self._rt.plugins = load_plugins(self.settings, instances=self._given)
            self._worker = Worker(self._rt)
            self._worker.start()
            self._cleanups.append(self._worker.stop)
        except BaseException:
            self.close()
            raise

    @property
    def database_url(self) -> str:
        """The URL of the harness's database."""
        return self.settings.database_url

    # -------------------------------------------------------------------------------------------- set-up

    def _settings(self, data: dict[str, Any], database_url: str | None,
                  payees: Iterable[Mapping[str, str]] | None) -> Settings:
        data = copy.deepcopy(data)
        problems: list[tuple[str, str]] = []
        for key, instance in self._given.items():
            table, _, name = key.partition(".")
            base = _TABLES.get(table)
            if base is None or not name:
                problems.append((key, "a plugin instance is given by its section key: sources.<name>, "
                                      "programs.<name>, rails.<name> or hooks.<name>"))
                continue
            if not isinstance(data.setdefault(table, {}), dict):
                continue  # the settings model names the table that is not a table
            if not isinstance(instance, base):
                problems.append((key, f"{type(instance).__name__} is not a payhub.api.{base.__name__}"))
            section = data.setdefault(table, {}).setdefault(name, {})
            if table == "programs":
                section.setdefault("calculator", name)
        database = data.setdefault("database", {})
        if not isinstance(database, dict):
            raise ConfigError([("database", f"a table is required, not {type(database).__name__}")])
        if database_url is not None or "url" not in database:
            database["url"] = database_url or f"sqlite:///{self.directory / 'payhub.db'}"
        if payees is not None:
            (self.directory / "payees.csv").write_text(_payees_csv(list(payees)), encoding="utf-8")
            data.setdefault("payees", {})["file"] = "payees.csv"
        self._data = data
        try:
            settings = Settings(**data)
        except ValidationError as exc:
            raise ConfigError(problems + validation_problems(exc)) from None
        settings._base_dir = self.directory
        for key in self._given:
            table, _, name = key.partition(".")
            section = getattr(settings, table, {}).get(name) if table in _TABLES else None
            if section is not None and section.plugin_settings():
                problems += [(f"{key}.{k}", "given as an instance: configure the instance, not its section")
                             for k in section.plugin_settings() if not (table == "programs" and k == "calculator")]
        problems += cross_checks(settings)
        if problems:
            raise ConfigError(problems)
        return settings

    @property
    def settings_file(self) -> Path:
        """The settings as a TOML file, ``payhub.toml`` in :attr:`directory` (written when first asked), for the
        command line on the harness's database: ``invoke_cli("-c", str(harness.settings_file), "explain", ...)``.

        It holds the tables the harness was given, with its database URL and payees file. A plugin given as an
        instance is named by an entry point of a distribution written into ``directory / "harness-site"``, which is
        on ``sys.path`` until :meth:`close` (put it on ``PYTHONPATH`` for a ``payhub`` subprocess): its section
        names the instance's class, with the instance's settings, so the command line makes its own instance of
        that class (state the test's instance holds, such as a FakeRail's ledger, is not shared). An instance
        whose class cannot be imported by name (defined inside a function, or in ``__main__``) is written as a
        disabled section (``enabled = false``), with a comment saying so, so that routing still names a rail.
        """
        path = self.directory / "payhub.toml"
        if path.exists():
            return path
        data = copy.deepcopy(self._data)
        notes: list[str] = []
        entry_points: dict[str, list[str]] = {}
        token = uuid.uuid4().hex[:8]
        for number, (key, instance) in enumerate(self._given.items()):
            table, _, name = key.partition(".")
            section = data[table][name]
            target = _importable(instance)
            if target is None:
                section["enabled"] = False
                notes.append(f"# {key}: given to the harness as a {type(instance).__qualname__} that the command "
                              "line cannot import by name: disabled here\n")
                continue
            entry_point = f"harness-{token}-{number}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
            entry_points.setdefault(_GROUPS[table], []).append(f"{entry_point} = {target}\n")
            section.update(_plugin_settings(instance, table))
            section["calculator" if table == "programs" else "plugin"] = entry_point
        if entry_points:
            site = self.directory / "harness-site"
            write_distribution(site, f"payhub-harness-{token}", "".join(
                f"[{group}]\n" + "".join(lines) for group, lines in entry_points.items()))
            sys.path.insert(0, str(site))
            importlib.invalidate_caches()
            self._cleanups.append(partial(_remove_path, str(site)))
        path.write_text("".join(notes) + "".join(f"{_toml(key)} = {_toml(value)}\n" for key, value in data.items()
                                                        if value is not None),
                        encoding="utf-8")
        return path

    def source(self, name: str) -> Source:
        """The source of section ``name`` (given or loaded)."""
        return self._rt.plugins.sources[name]

    def rail(self, name: str) -> Rail:
        """The rail of section ``name`` (given or loaded)."""
        return self._rt.plugins.rails[name]

    def route(self, payee: Payee, amount: Decimal, currency: str) -> tuple[str | None, str]:
        """The rail routing would choose for a payout of ``amount`` ``currency`` to ``payee``, and why; ``(None,
        every refusal)`` when no configured rail takes it. Candidates are the payee's preferred rail, the rails of the
        first matching ``routing.rules`` entry, then ``routing.default_rail``; a rail refuses a currency, country or
        amount its capabilities exclude, and a payee its ``check_payee`` rejects."""
        return route(self._rt, payee, currency, to_minor(amount, currency))

    def plugin_failures(self) -> dict[str, str]:
        """The configured plugins that failed to load or start: section key -> reason (``payhub plugins list``)."""
        return {status.key: status.reason or "failed" for status in self._rt.plugins.statuses
                if status.state == "failed"}

    # ---------------------------------------------------------------------------------------------- time

    def advance(self, by: timedelta | float) -> datetime:
        """Move the clock forward by ``by`` (a timedelta, or seconds); return the new time."""
        return self.clock.advance(by)

    def skip_to_next_attempt(self) -> datetime | None:
        """Move the clock to :meth:`next_attempt_at` (if later than now); return it, or None when nothing waits."""
        due = self.next_attempt_at()
        if due is not None and due > self.clock.now():
            self.clock.set(due)
        return due

    # ------------------------------------------------------------------------------------------- stages

    def ingest(self, source: str | None = None, *, batches: int | None = STAGE_BATCHES) -> int:
        """Poll ``source`` (default every enabled one) now: one fetch per batch, up to ``batches`` batches (default
        the daemon's batches per pass; None: until the source says nothing more is ready); return the new events.
        Whether the source said more was ready is :attr:`SourceView.more` in :meth:`sources`."""
        sync_payees(self._rt)
        names = [source] if source is not None else list(self._rt.plugins.sources)
        added = 0
        for name in names:
            new, self._more[name] = poll_batches(self._rt, name, batches)
            added += new
        return added

    def calculate(self) -> int:
        """Calculate ingested events that are due, up to the daemon's batches per pass; return how many."""
        return self._repeat(lambda: calculate_batch(self._rt, self._worker.versions))

    def schedule(self) -> int:
        """Approve, screen, route and group pending rewards into payouts; return how many rewards it took."""
        sync_payees(self._rt)
        return self._repeat(lambda: schedule_batch(self._rt))

    def disburse(self, rail: str | None = None) -> int:
        """Look up unknown outcomes and send the payouts that are due, on ``rail`` (default every enabled one);
        return how many payouts it worked."""
        names = [rail] if rail is not None else list(self._rt.plugins.rails)
        return sum(self._repeat(partial(disburse_rail, self._rt, name)) for name in names)

    def settle(self, rail: str | None = None) -> int:
        """Ask ``rail`` (default every enabled one) for the status of accepted payouts not checked for its
        ``settle_interval_seconds``; return how many it asked about."""
        names = [rail] if rail is not None else list(self._rt.plugins.rails)
        return sum(self._repeat(partial(settle_rail, self._rt, name)) for name in names)

    def run_pass(self) -> dict[str, int]:
        """One pass of the daemon: every stage once, in order; return the count of each (:data:`STAGES`)."""
        counts = dict(zip(STAGES, (self.ingest(), self.calculate(), self.schedule(), self.disburse(),
                                   self.settle()), strict=True))
        if self._worker.checkpointer is not None:
            self._worker.checkpointer.tick()
        return counts

    def run_until_idle(self, *, skip_waits: bool = False, max_passes: int = 100) -> dict[str, int]:
        """Run passes until one does nothing; return the counts summed over all passes.

        With ``skip_waits``, whenever the pipeline is idle but payouts wait for their next attempt (a retry's
        backoff, an unknown outcome's lookup), the clock is moved to the earliest of them and the passes go on.
        Raise RuntimeError after ``max_passes`` passes that were never idle.
        """
        totals = dict.fromkeys(STAGES, 0)
        for _ in range(max_passes):
            counts = self.run_pass()
            for stage, n in counts.items():
                totals[stage] += n
            if any(counts.values()):
                continue
            if not skip_waits or self.skip_to_next_attempt() is None:
                return totals
        raise RuntimeError(f"the pipeline was not idle after {max_passes} passes: {totals}")

    @staticmethod
    def _repeat(step: Callable[[], int]) -> int:
        done = 0
        for _ in range(STAGE_BATCHES):
            n = step()
            done += n
            if not n:
                break
        return done

    # ------------------------------------------------------------------------------------------- checks

    def assert_exactly_once(self, *ledgers: ProviderLedger) -> None:
        """Raise :class:`ExactlyOnceError` listing every breach of payhub's invariants found in what it stored.

        Checked: every (program, event) calculated once; every reward in at most one live payout (one not
        ``rejected``, ``returned``, ``failed`` or ``cancelled``); each payout's amount equal to the sum of its
        items; the audit chain verifies. And against what the providers accepted, in the ledger of every
        :class:`FakeRail` the harness runs and in ``ledgers`` (a :class:`~payhub.testing.FaultProvider`'s
        ``ledger``, say): each payout key accepted at most once; no acceptance of a payout payhub recorded
        :data:`UNPAID_PAYOUTS`; no reward in two payouts a provider accepted. An acceptance whose provider outcome
        is ``REJECTED`` or ``RETURNED`` (:meth:`ProviderLedger.set_outcome`) counts as not paid.
        """
        problems: list[str] = []
        rows: Counter[tuple[str, int]] = Counter((c.program, c.event_id) for c in self.calculations())
        audited: Counter[tuple[str, int]] = Counter()
        for entry in self.audit("event.calculated"):
            for program, outcome in entry.detail.get("programs", {}).items():
                if not str(outcome).startswith("failed"):  # a failed calculation may be retried
                    audited[(program, int(entry.subject_id))] += 1
        for what, counts in (("calculation rows", rows), ("event.calculated entries", audited)):
            problems += [f"program {program!r} calculated event {event} {n} times ({what})"
                         for (program, event), n in sorted(counts.items()) if n > 1]
        all_payouts = self.payouts()
        live: dict[int, list[int]] = {}
        for payout in all_payouts:
            total = sum((item.amount for item in payout.items), Decimal(0))
            if total != payout.amount:
                problems.append(f"payout {payout.id} is {payout.amount} {payout.currency} but its items sum to "
                                f"{total}")
            if payout.status not in CLOSED_PAYOUTS:
                for item in payout.items:
                    live.setdefault(item.reward_id, []).append(payout.id)
        problems += [f"reward {reward} is in {len(ids)} live payouts: {ids}"
                     for reward, ids in sorted(live.items()) if len(ids) > 1]
        problems += _provider_problems(all_payouts, self._ledgers(ledgers))
        audit_problem = self.audit_problem()
        if audit_problem is not None:
            problems.append(f"audit verify: {audit_problem}")
        if problems:
            raise ExactlyOnceError(problems)

    def _ledgers(self, given: Iterable[ProviderLedger]) -> list[ProviderLedger]:
        """The ledgers of the harness's FakeRails and ``given``, each once."""
        known = {id(r.ledger): r.ledger for r in self._rt.plugins.rails.values() if isinstance(r, FakeRail)}
        known.update((id(ledger), ledger) for ledger in given)
        return list(known.values())

    # --------------------------------------------------------------------------------------------- HTTP

    def http_client(self, *, client: tuple[str, int] = ("203.0.113.7", 50000)) -> httpx.Client:
        """An httpx client (base URL ``http://testserver``) whose requests go to payhub's HTTP app (``payhub run``'s
        API and webhook endpoints) on the harness's database and plugins, in this process, through httpx's ASGI
        transport, as from the address ``client``. Close it after use (``with harness.http_client() as http:``)."""
        from payhub.http.app import create_app

        return httpx.Client(transport=_SyncASGITransport(httpx.ASGITransport(app=create_app(self._rt),
                                                                             client=client)),
                            base_url="http://testserver", timeout=30)

    # ---------------------------------------------------------------------------------------- read only

    @staticmethod
    def open(database_url: str) -> StoreReader:
        """A read-only :class:`StoreReader` on the database at ``database_url``, as written by another process (a
        ``payhub run`` subprocess, say), which may still be running: nothing is migrated, locked or changed."""
        if database_url.startswith("sqlite"):
            engine = create_engine(database_url, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _query_only(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA query_only=ON")
        else:
            engine = create_engine(database_url, connect_args={
                "connect_timeout": 10, "options": "-c default_transaction_read_only=on"})
        return StoreReader(engine)

    # -------------------------------------------------------------------------------------------- close

    def close(self) -> None:
        """Stop the worker, close the plugins and the database, give payhub back its clock and remove the
        temporary directory. Safe to call more than once."""
        while self._cleanups:
            self._cleanups.pop()()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._owns_directory = False

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _provider_problems(all_payouts: Sequence[PayoutView], ledgers: Iterable[ProviderLedger]) -> list[str]:
    """What the providers' ``ledgers`` say was paid that payhub's ``all_payouts`` do not: a key accepted twice, an
    acceptance of a payout payhub recorded as not paid, a reward in two payouts a provider accepted. An acceptance
    the provider later rejected or returned (:meth:`ProviderLedger.set_outcome`) paid nothing that stands."""
    problems: list[str] = []
    by_key = {p.idempotency_key: p for p in all_payouts}
    standing: dict[int, PayoutView] = {}  # payouts with an acceptance whose money stands, by id
    for ledger in ledgers:
        for key, n in sorted(ledger.accepted.items()):
            payout = by_key.get(key)
            if n > 1:
                owner = f"payout {payout.id} {key!r}" if payout else f"key {key!r}"
                problems.append(f"{owner} was accepted {n} times by its provider (paid twice)")
            if payout is None or ledger.outcome(key)[0] in (Outcome.REJECTED, Outcome.RETURNED):
                continue
            standing[payout.id] = payout
            if payout.status in UNPAID_PAYOUTS:
                reason = f" ({payout.reason})" if payout.reason else ""
                problems.append(f"the provider accepted payout {payout.id} (key {key!r}), which payhub recorded "
                                f"{payout.status}{reason}")
    paid_in: dict[int, list[int]] = {}
    for payout_id, payout in sorted(standing.items()):
        for item in payout.items:
            paid_in.setdefault(item.reward_id, []).append(payout_id)
    for reward, ids in sorted(paid_in.items()):
        if len(ids) > 1:
            shown = ", ".join(str(i) for i in ids[:-1]) + f" and {ids[-1]}"
            problems.append(f"reward {reward} was paid by the provider in payouts {shown}")
    return problems


def _tables(settings: object) -> dict[str, Any]:
    """The settings tables of ``settings`` as :class:`Harness` takes them: a dict, TOML text or None."""
    if settings is None:
        return {}
    if isinstance(settings, str):
        try:
            return tomllib.loads(textwrap.dedent(settings))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([("", f"the settings text is not valid TOML: {exc}")]) from None
    if isinstance(settings, Mapping):
        if bad := [key for key in settings if not isinstance(key, str)]:
            raise ConfigError([("", f"settings tables are named by text, not {type(bad[0]).__name__} {bad[0]!r}")])
        return dict(settings)
    raise TypeError("Harness settings are the settings file's tables as a dict, or its TOML text, or None; not "
                    f"{type(settings).__name__}")


def _importable(instance: object) -> str | None:
    """The entry-point value (``module:Class``) that loads the class of ``instance`` (or the module ``instance``)
    in another process, or None when it cannot be imported by name."""
    if isinstance(instance, types.ModuleType):
        return instance.__name__ if sys.modules.get(instance.__name__) is instance else None
    cls = type(instance)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return None
    try:
        found: object = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{cls.__module__}:{cls.__qualname__}" if found is cls else None


def _plugin_settings(instance: object, table: str) -> dict[str, Any]:
    """The settings ``instance`` carries (a calculator's ``params``, another plugin's ``settings``), as its
    section's keys; values equal to the model's defaults are left out."""
    model = getattr(instance, "params" if table == "programs" else "settings", None)
    if not isinstance(model, BaseModel):
        return {}
    return model.model_dump(by_alias=True, exclude_defaults=True)


def _remove_path(entry: str) -> None:
    if entry in sys.path:
        sys.path.remove(entry)


def _toml(value: Any) -> str:
    """``value`` (a table, array, string, number, boolean or datetime, as ``tomllib`` reads them; a secret, a
    duration in seconds, a set, and other values as their text) as TOML text on one line: tables inline, keys whose
    value is None left out, strings in JSON's escapes (which TOML's basic strings share)."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, set | frozenset):
        return _toml(sorted(value, key=str))
    if isinstance(value, SecretStr):
        return _toml(value.get_secret_value())
    if isinstance(value, timedelta):
        return _toml(value.total_seconds())
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool | int | float | str):
        return json.dumps(value)
    return json.dumps(str(value))  # Decimal, Path and other values settings read from text


def _payees_csv(rows: list[Mapping[str, str]]) -> str:
    columns = list(dict.fromkeys(["id", "name", *(key for row in rows for key in row)]))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class _SyncASGITransport(httpx.BaseTransport):
    """httpx's ASGI transport for a synchronous client: each request runs the app in a new event loop."""

    def __init__(self, transport: httpx.ASGITransport) -> None:
        self._transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            request.read()
            response = await self._transport.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content,
                                  request=request, extensions=response.extensions)

        return asyncio.run(send())
