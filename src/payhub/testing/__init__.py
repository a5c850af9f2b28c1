"""Fakes and helpers for tests: rails and a source that can be told to misbehave, throwaway databases, the command
line in-process, test distributions of plugins. Not used by any production path.

* :class:`FakeRail` keeps its ledger in memory; queue faults with :meth:`FakeRail.plan`.
* :class:`LedgerRail` keeps its ledger in a SQLite file, so it survives a daemon killed with SIGKILL; use it
  in subprocess and crash tests. Every accepted send is a ledger row, so a payout sent twice shows up twice.
* :class:`FakeSource` serves records pushed by the test.
* :func:`throwaway_database` yields a new, empty SQLite or PostgreSQL database for a block of a test.
* :func:`invoke_cli` runs the ``payhub`` command line in the test's process.
* :func:`write_distribution` writes a distribution whose entry points payhub finds once it is on ``sys.path``.

Register the fakes in a test distribution's entry points (``payhub.rails`` / ``payhub.sources``) to load them by name.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal, NoReturn

import sqlalchemy as sa
from click.testing import CliRunner, Result

from payhub.api import (
    ConfigPath,
    FetchResult,
    Outcome,
    Payee,
    PayoutInstruction,
    PermanentRailError,
    PluginSettings,
    Rail,
    RailCapabilities,
    RailResult,
    RetryableRailError,
    Source,
    SourceRecord,
    UnknownOutcomeError,
)
from payhub.cli import main
from payhub.testing.faults import Fault


class FakeRailSettings(PluginSettings):
    lookup: bool = True
    dedup_window_seconds: float | None = None
    max_batch: int = 100
    currencies: list[str] | None = None
    countries: list[str] | None = None
    max_amounts: dict[str, Decimal] = {}
    requires_detail: str | None = None  # a payee detail this rail needs (check_payee refuses payees without it)
    return_window_seconds: float | None = None  # how long a paid payout can still be returned


class FakeRail(Rail):
    """An in-memory rail. ``accepted`` counts acceptances per key: exactly-once means every count is 1."""

    settings_model = FakeRailSettings
    settings: FakeRailSettings

    def __init__(self, name: str, settings: FakeRailSettings | None = None) -> None:
        super().__init__(name, settings or FakeRailSettings())
        self.accepted: Counter[str] = Counter()
        self.calls: list[list[str]] = []
        self.faults: deque[Fault] = deque()
        self.release = threading.Event()
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> RailCapabilities:
        s = self.settings
        window = timedelta(seconds=s.dedup_window_seconds) if s.dedup_window_seconds else None
        return RailCapabilities(lookup=s.lookup, reports_status=s.lookup, dedup_field="key", dedup_window=window,
                                currencies=frozenset(s.currencies) if s.currencies else None,
                                countries=frozenset(s.countries) if s.countries else None,
                                max_batch=s.max_batch, max_amounts=s.max_amounts,
                                return_window=timedelta(seconds=s.return_window_seconds)
                                if s.return_window_seconds else None)

    def check_payee(self, payee: Payee, currency: str) -> str | None:
        detail = self.settings.requires_detail
        if detail and not (payee.details.get(detail) or (detail == "email" and payee.email)):
            return f"payee {payee.id} has no {detail}"
        return None

    def plan(self, *faults: Fault) -> None:
        """Queue faults; each send (or lookup, for ``lookup_fails``) consumes the next one."""
        self.faults.extend(faults)

    def _next(self, *kinds: str) -> Fault | None:
        with self._lock:
            if self.faults and self.faults[0] in kinds:
                return self.faults.popleft()
        return None

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        keys = [i.idempotency_key for i in instructions]
        self.calls.append(keys)
        fault = self._next("retryable", "permanent", "reject", "timeout_after_accept", "timeout_before_accept",
                           "duplicate", "hang")
        if fault == "retryable":
            raise RetryableRailError("provider busy (503)")
        if fault == "permanent":
            raise PermanentRailError("account closed")
        if fault == "timeout_before_accept":
            raise UnknownOutcomeError("read timeout")
        if fault == "reject":
            return [RailResult(k, Outcome.REJECTED, reason="invalid beneficiary") for k in keys]
        if fault == "hang":
            self.release.wait()
        with self._lock:
            for k in keys:
                self.accepted[k] += 1
        results = [RailResult(k, Outcome.ACCEPTED, f"fake-{k[-8:]}") for k in keys]
        if fault == "timeout_after_accept":
            raise UnknownOutcomeError("read timeout after the request was sent")
        if fault == "duplicate":
            return results + results + [RailResult("ph-never-sent", Outcome.ACCEPTED, "fake-stray")]
        return results

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        if not self.settings.lookup:
            return super().lookup(keys)
        if self._next("lookup_fails"):
            raise RetryableRailError("lookup endpoint unavailable")
        with self._lock:
            return {k: RailResult(k, Outcome.ACCEPTED, f"fake-{k[-8:]}") if self.accepted[k] else None for k in keys}


class LedgerRailSettings(PluginSettings):
    path: ConfigPath
    unknown_every: int = 0  # every Nth send accepts, then raises UnknownOutcomeError
    retryable_every: int = 0  # every Nth send raises RetryableRailError
    latency_seconds: float = 0.0


class LedgerRail(Rail):
    """A rail whose ledger is a SQLite file, shared across processes and surviving SIGKILL."""

    settings_model = LedgerRailSettings
    settings: LedgerRailSettings

    def __init__(self, name: str, settings: LedgerRailSettings) -> None:
        super().__init__(name, settings)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS sends (key TEXT NOT NULL, payout_id INTEGER, amount TEXT, "
                       "currency TEXT, at REAL)")
            db.execute("CREATE INDEX IF NOT EXISTS sends_key ON sends (key)")
            db.execute("CREATE TABLE IF NOT EXISTS calls (n INTEGER)")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.settings.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @property
    def capabilities(self) -> RailCapabilities:
        return RailCapabilities(lookup=True, dedup_field="key", max_batch=50)

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        s = self.settings
        if s.latency_seconds:
            time.sleep(s.latency_seconds)
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO calls VALUES (1)")
            n = db.execute("SELECT count(*) FROM calls").fetchone()[0]
            if s.retryable_every and n % s.retryable_every == 0:
                db.execute("COMMIT")
                raise RetryableRailError(f"ledger busy (call {n})")
            db.executemany("INSERT INTO sends VALUES (?, ?, ?, ?, ?)", [
                (i.idempotency_key, i.payout_id, str(i.amount), i.currency, time.time()) for i in instructions])
            db.execute("COMMIT")
        finally:
            db.close()
        if s.unknown_every and n % s.unknown_every == 0:
            raise UnknownOutcomeError(f"response lost (call {n})")
        return [RailResult(i.idempotency_key, Outcome.ACCEPTED, f"ledger-{i.payout_id}") for i in instructions]

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        db = self._db()
        try:
            found = {row[0] for row in db.execute(
                f"SELECT DISTINCT key FROM sends WHERE key IN ({','.join('?' * len(keys))})", list(keys))}
        finally:
            db.close()
        return {k: RailResult(k, Outcome.ACCEPTED, "ledger") if k in found else None for k in keys}

    @staticmethod
    def counts(path: Path) -> Counter[str]:
        """Acceptances per idempotency key recorded in the ledger file at ``path``."""
        db = sqlite3.connect(path)
        try:
            return Counter(dict(db.execute("SELECT key, count(*) FROM sends GROUP BY key").fetchall()))
        finally:
            db.close()


class FakeSource(Source):
    """Serves records the test pushes, ``limit`` at a time, with an integer cursor."""

    def __init__(self, name: str, settings: PluginSettings | None = None) -> None:
        super().__init__(name, settings or PluginSettings())
        self.records: list[SourceRecord] = []
        self.error: Exception | None = None

    def push(self, *records: SourceRecord) -> None:
        self.records.extend(records)

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        if self.error is not None:
            raise self.error
        start = int(cursor or 0)
        batch = self.records[start : start + limit]
        end = start + len(batch)
        return FetchResult(batch, str(end), more=end < len(self.records))


PG_URL_VARIABLE = "PAYHUB_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DatabaseKind = Literal["sqlite", "postgres"]


class DatabaseUnavailable(RuntimeError):
    """The PostgreSQL server of :func:`throwaway_database` cannot be reached."""


def postgres_server_url() -> str:
    """The URL of a database on the PostgreSQL server for tests: ``$PAYHUB_TEST_PG_URL``, else ``DEFAULT_PG_URL``."""
    return os.environ.get(PG_URL_VARIABLE, DEFAULT_PG_URL)


@contextmanager
def throwaway_database(kind: DatabaseKind, directory: Path,
                       unavailable: Callable[[str], NoReturn] | None = None) -> Iterator[str]:
    """Yield the URL of a new, empty database of ``kind``; a PostgreSQL one is dropped when the block ends.

    ``"sqlite"``: the file ``directory / "payhub.db"`` (created by its first use, left to ``directory``'s owner).
    ``"postgres"``: a uniquely named database created on the server of :func:`postgres_server_url`, and dropped
    ``WITH (FORCE)`` on exit, whatever connections are still open. When that server cannot be reached (10 s connect
    timeout), ``unavailable`` is called with the reason before anything is yielded (``pytest.skip`` skips the test);
    without it, or if it returns, :class:`DatabaseUnavailable` is raised.

    A pytest fixture parametrised over both kinds::

        @pytest.fixture(params=["sqlite", "postgres"])
        def db_url(request, tmp_path):
            with throwaway_database(request.param, tmp_path, pytest.skip) as url:
                yield url
    """
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'payhub.db'}"
        return
    if kind != "postgres":
        raise ValueError(f"unknown database kind {kind!r} (sqlite or postgres)")
    server = postgres_server_url()
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})
    try:
        try:
            with admin.connect():
                pass
        except sa.exc.OperationalError as exc:
            reason = f"PostgreSQL not reachable at {server}: {exc}"
            if unavailable is not None:
                unavailable(reason)
            raise DatabaseUnavailable(reason) from exc
        name = f"payhub_t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def invoke_cli(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """Run ``payhub *args`` in this process, with ``env`` added to the environment; return click's result (exit code,
    ``stdout``, ``stderr``).

    Exceptions propagate as tracebacks (they are bugs, not exit codes). The logging handlers and level and the
    SIGTERM/SIGINT handlers a command installs (``run`` does) are restored afterwards, so one test can run many.
    Plugins load through entry points as in production: the plugin under test must be installed, or registered in a
    ``*.dist-info`` directory on ``sys.path``.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        root.handlers[:], root.level = handlers, level
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def write_distribution(directory: Path, name: str, entry_points: str, *, version: str = "1.0",
                       modules: Mapping[str, str] | None = None) -> Path:
    """Write the distribution ``name`` into ``directory`` as pip would install it, and return ``directory``.

    ``<name>-<version>.dist-info`` holds ``METADATA`` and ``entry_points`` (the text of an ``entry_points.txt``: a
    group header such as ``[payhub.rails]``, then lines such as ``fake = payhub.testing:FakeRail``); each item of
    ``modules`` is written as ``<module>.py`` next to it. Once ``directory`` is on ``sys.path`` (and on
    ``PYTHONPATH`` for ``payhub`` subprocesses), settings load its plugins by name, and ``payhub plugins list``
    names ``name`` and ``version``.
    """
    dist = directory / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for module, source in (modules or {}).items():
        (directory / f"{module}.py").write_text(source)
    return directory
