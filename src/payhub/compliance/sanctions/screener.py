"""Screening names against the current lists stored in the database, reloaded when a newer version appears.

Each call first reads the ids of the current versions (one small query); only when they differ from those in
memory are the changed lists' entries read and normalised again. Only the lists in use count: those configured in
the settings, and those a provider plugin gave (format ``hook:<plugin>``; ``payhub screening refresh`` retires the
ones no provider gives any more). A list removed from the settings is neither screened against nor blocks payouts,
even before the next refresh retires it; its versions stay as evidence, never deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import date

from sqlalchemy import Engine

from payhub.compliance.sanctions import store
from payhub.compliance.sanctions.checks import date_problem
from payhub.compliance.sanctions.config import SanctionsSettings
from payhub.compliance.sanctions.matcher import Hit, ListIndex


class NoListsLoaded(LookupError):
    """No sanctions list is loaded: nothing can be screened (``payhub screening refresh`` loads them)."""


class Screener:
    """Screens names with ``settings`` (threshold, country penalty) against the lists current in ``engine``."""

    def __init__(self, engine: Engine, settings: SanctionsSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._lock = threading.Lock()
        self._indexes: dict[int, ListIndex] = {}  # by stored version id

    def lists(self) -> list[store.StoredList]:
        """The current version of each list in use: configured in the settings, or given by a provider plugin."""
        configured = {item.name for item in self.settings.lists}
        with self.engine.connect() as conn:
            return [version for version in store.current_lists(conn)
                    if version.name in configured or version.format.startswith("hook:")]

    def indexes(self) -> list[ListIndex]:
        """The current lists, ready to screen (reloaded where a version changed)."""
        current = self.lists()
        with self._lock:
            wanted = {version.id: version for version in current}
            missing = [version for version_id, version in wanted.items() if version_id not in self._indexes]
            if missing:
                with self.engine.connect() as conn:
                    for version in missing:
                        self._indexes[version.id] = ListIndex(version.name, version.published_on,
                                                              store.entries_of(conn, version.id))
            for version_id in [v for v in self._indexes if v not in wanted]:
                del self._indexes[version_id]
            return [self._indexes[version.id] for version in current]

    def screen(self, names: Iterable[str], country: str | None) -> list[Hit]:
        """Hits for ``names`` (a payee's name and aliases) of ``country`` on every current list, best first; raise
        NoListsLoaded when there is no list."""
        indexes = self.indexes()
        if not indexes:
            raise NoListsLoaded("no sanctions list is loaded (run `payhub screening refresh`)")
        wanted = [name for name in names if name and name.strip()]
        hits = [hit for index in indexes for hit in index.screen(
            wanted, country, self.settings.threshold, self.settings.country_mismatch_penalty)]
        return sorted(hits, key=lambda h: (-h.score, h.list_name, h.entry_id))

    def blocked(self, today: date) -> str | None:
        """Why payouts must wait: a configured list never loaded, a current list without entries, one dated more
        than a day after ``today``, or one whose date and last confirmation are both more than
        ``max_list_age_days`` before ``today``; None when every list in use is fresh."""
        current = {version.name: version for version in self.lists()}
        reasons = [f"sanctions list {item.name} was never loaded (run `payhub screening refresh`)"
                   for item in self.settings.lists if item.name not in current]
        if not current and not self.settings.lists:
            reasons.append("no sanctions list is configured or loaded")
        limit = self.settings.max_list_age_days
        for version in current.values():
            age = version.age_days(today)
            ahead = date_problem(version.published_on, today)
            if version.entries <= 0:
                reasons.append(f"sanctions list {version.name} has no entries")
            elif age is None:
                reasons.append(f"sanctions list {version.name} has no date")
            elif ahead is not None:
                reasons.append(f"sanctions list {version.name} is {ahead}")
            elif age > limit:
                reasons.append(f"sanctions list {version.name} of {version.dated()} is {age} days old "
                               f"(max_list_age_days {limit})")
        return "; ".join(reasons) or None
