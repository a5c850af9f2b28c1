"""The runtime: settings, database, plugins and the audit writer, shared by the pipeline, the daemon and the CLI."""

from __future__ import annotations

import copy
import getpass
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from payhub.audit import Entry
from payhub.db.engine import make_engine
from payhub.guard import Guard
from payhub.plugins import Plugins, load_plugins, new_plugin_manager, notify
from payhub.settings import Settings
from payhub.store.audit import AuditWriter

log = logging.getLogger(__name__)


@dataclass
class Tx:
    """An open transaction and the audit entries to append to it before commit."""

    conn: Connection
    entries: list[Entry] = field(default_factory=list)

    def audit(
        self,
        action: str,
        subject_type: str,
        subject_id: str | int,
        detail: dict[str, Any] | None = None,
        outcome: str = "ok",
        actor: str | None = None,
    ) -> None:
        self.entries.append(Entry(action, subject_type, subject_id, detail or {}, outcome, actor))


class Runtime:
    """One process's view of payhub. ``actor`` signs its audit entries; ``worker_id`` owns its leases."""

    def __init__(
        self, settings: Settings, *, actor: str = "payhub", role: str = "daemon", plugins: Plugins | None = None
    ) -> None:
        self.settings = settings
        self.engine: Engine = make_engine(
            settings.database_url, sqlite_synchronous=settings.database.sqlite_synchronous,
            sqlite_busy_timeout=settings.database.sqlite_busy_timeout_seconds,
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.writer = AuditWriter(actor=actor, origin=f"{role}@{socket.gethostname()}:{os.getpid()}")
        self._closed = False
        self.plugins = plugins if plugins is not None else Plugins(hooks=new_plugin_manager())
        self.stop_event = threading.Event()
        self._guards: dict[str, Guard] = {}
        self.payees_seen: str | None = None  # SHA-256 of the payees file content last synced
        self.payees_skipped: dict[str, str] = {}  # payee id -> why its line of the payees file was skipped

    @classmethod
    def for_cli(cls, settings: Settings, actor: str | None = None) -> Runtime:
        """A runtime for CLI commands: audit entries signed by the operating-system user (or ``actor``)."""
        return cls(settings, actor=actor or f"user:{getpass.getuser()}", role="cli")

    def as_actor(self, actor: str, origin: str) -> Runtime:
        """This runtime (same engine, settings and plugins) writing audit entries as ``actor`` from ``origin``:
        one per HTTP request, so that each token signs its own decisions."""
        view = copy.copy(self)
        view.writer = AuditWriter(actor=actor, origin=origin)
        return view

    def load_plugins(self) -> None:
        self.plugins = load_plugins(self.settings)

    def require_schema(self) -> None:
        from payhub.db import migrate

        migrate.require_current(self.engine)

    def guard(self, label: str, timeout: float) -> Guard:
        """The call guard of one plugin (created on first use)."""
        if label not in self._guards:
            self._guards[label] = Guard(label, timeout)
        return self._guards[label]

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction whose audit entries are chained and committed with it, then shown to observers."""
        with self.engine.begin() as conn:
            tx = Tx(conn)
            yield tx
            rows = self.writer.append(conn, tx.entries)
        hook = self.plugins.hooks.hook.payhub_audit_entry
        if rows and hook.get_hookimpls():
            for row in rows:
                notify(hook, entry=row)

    def close(self) -> None:
        """Close the plugins and the database connections; again, it does nothing."""
        if self._closed:
            return
        self._closed = True
        self.plugins.close()
        self.engine.dispose()
