"""Planner statistics of payhub's tables kept current on PostgreSQL while they grow fast (a first backlog).

PostgreSQL plans from statistics that ``ANALYZE`` gathers; its autovacuum gathers them a while after a table has
changed (``autovacuum_naptime``, a minute by default, per database). A fresh database taking in its first backlog
is planned without any meanwhile: the planner takes each table for a few rows, and a read by key can become a walk
of the whole table, once per batch (a 500-payout check before a send read every reward's entries: 24 ms at 80,000
entries against 2 ms once analyzed, growing with the log).

:class:`Statistics` analyzes, at most every :data:`INTERVAL_SECONDS`, the payhub tables whose rows written since
their last ANALYZE (PostgreSQL's own change counter, ``n_mod_since_analyze``) reach :data:`MIN_CHANGES` and the
rows they held then: a table is analyzed once 1,000 rows were written into it, and again each time it has doubled
(some ten times on its way to a million rows). ``ANALYZE (SKIP_LOCKED)`` takes a lock that neither reads nor writes
wait for, and skips a table that another replica or autovacuum is analyzing; it waits at most :data:`LOCK_TIMEOUT`
for any other lock (a migration's). Tables the database user does not own are left to autovacuum (a warning says
so, once). A failure (an outage, a statement timeout) is a warning once per cause, and the looks then pause longer
(doubling up to :data:`MAX_PAUSE_SECONDS`). SQLite is left alone: its planner does not depend on statistics in
this way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from payhub.db.schema import metadata

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 5.0
"""Least time between two looks at the tables' counters."""
MAX_PAUSE_SECONDS = 600.0
"""After failed looks the pause doubles from :data:`INTERVAL_SECONDS` up to this."""
MIN_CHANGES = 1000
"""Rows a table holds, or has changed by, before it is analyzed."""
LOCK_TIMEOUT = "200ms"
"""The longest ANALYZE waits for a lock (an index or catalog row that a migration holds): then it gives up until the
next look, and the other transaction goes on, as with autovacuum."""
_LOCK_NOT_AVAILABLE = "55P03"

_DUE = """SELECT s.relname, pg_has_role(c.relowner, 'USAGE') FROM pg_stat_user_tables s JOIN pg_class c
ON c.oid = s.relid WHERE pg_table_is_visible(c.oid) AND s.relname = ANY(%s)
AND s.n_mod_since_analyze >= greatest(%s, c.reltuples)
ORDER BY s.relname"""
"""The tables due, as the search path finds them: changed since their last ANALYZE by as many rows as they held then
(``reltuples`` is -1 or 0 before the first), and by at least the minimum; each with whether this user may analyze it
(it owns the table, or is a member of the role that does: PostgreSQL skips the others with a notice)."""


class Statistics:
    """Keeps the planner statistics of ``engine``'s payhub tables current (PostgreSQL; nothing on SQLite, or when
    not ``enabled``: ``database.refresh_statistics``).

    Call :meth:`tick` between batches; it looks at most every :data:`INTERVAL_SECONDS` (less often after failures)."""

    def __init__(self, engine: Engine, *, enabled: bool = True, clock: Callable[[], float] = time.monotonic,
                 tables: Sequence[str] | None = None) -> None:
        self.engine = engine
        self.enabled = enabled and engine.dialect.name == "postgresql"
        self.tables = sorted(tables if tables is not None else (table.name for table in metadata.sorted_tables))
        self._clock = clock
        self._next = 0.0
        self._pause = INTERVAL_SECONDS
        self._warned: set[str] = set()  # each cause of failure is a warning once, then logged at debug level
        self._not_owned = False  # tables this user may not analyze, logged once

    def tick(self) -> list[str]:
        """Analyze the tables that are due, if it is time to look; return those analyzed."""
        if not self.enabled or self._clock() < self._next:
            return []
        try:
            done = self.refresh()
        except DBAPIError as exc:
            self._pause = min(self._pause * 2, MAX_PAUSE_SECONDS)
            reason = str(exc.orig or exc).strip().splitlines()[0][:300]
            quiet = reason in self._warned or getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE
            (log.debug if quiet else log.warning)(
                "could not refresh the planner statistics (ANALYZE) of payhub's tables: %s; autovacuum keeps them "
                "as usual, and payhub tries again in %.0fs", reason, self._pause)
            self._warned.add(reason)
            done = []
        else:
            self._pause = INTERVAL_SECONDS
        self._next = self._clock() + self._pause
        return done

    def refresh(self) -> list[str]:
        """Analyze the tables that are due now; return them."""
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(_DUE, (self.tables, MIN_CHANGES)).all()
            due = [name for name, allowed in rows if allowed]
            if due:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                conn.exec_driver_sql("ANALYZE (SKIP_LOCKED) " + ", ".join(f'"{name}"' for name in due))
            conn.commit()
        others = sorted(name for name, allowed in rows if not allowed)
        if others and not self._not_owned:
            log.warning("cannot refresh the planner statistics (ANALYZE) of %s: this database user does not own "
                        "them; autovacuum keeps them as usual", ", ".join(others))
            self._not_owned = True
        if due:
            log.info("ran ANALYZE on %s: their planner statistics were missing or out of date", ", ".join(due))
        return due
