"""Loaded sanctions lists in the database (``screening_lists``): every replica and the command line screen against
the same versions.

Each load of a list is a row: its name, format, the list's own date, the SHA-256 of its files, the entry count,
who loaded it and when, and the parsed entries (gzipped JSON). The newest load of a name is ``current``; older
ones stay as evidence of what was screened against when. Loading a list whose SHA-256 equals the current one's
stores nothing new and audits the check (``screening.list_checked``). A load the checks of :mod:`.checks` refuse
stores nothing and is audited ``screening.list_refused``; a list no longer configured or provided is retired (no
version of it current), audited ``screening.list_retired``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from payhub.api import SanctionsEntry, SanctionsList
from payhub.clock import utcnow
from payhub.compliance.sanctions.checks import Gate
from payhub.db.schema import screening_lists

if TYPE_CHECKING:
    from payhub.runtime import Runtime


@dataclass(frozen=True, slots=True)
class StoredList:
    """A current list version as stored (without its entries)."""

    id: int
    name: str
    format: str
    published_on: date | None
    sha256: str
    entries: int
    loaded_at: datetime
    loaded_by: str

    def age_days(self, today: date) -> int | None:
        """Whole days since the list's date, or None when it has none."""
        return None if self.published_on is None else (today - self.published_on).days


@dataclass(frozen=True, slots=True)
class Stored:
    """What :func:`store_list` did: ``loaded`` (a new current version), ``unchanged`` or ``refused`` (with
    ``reason``), and the version current afterwards (None when a refused list has none)."""

    outcome: str
    version: StoredList | None
    reason: str | None = None


def encode(entries: Sequence[SanctionsEntry]) -> bytes:
    """Entries as gzipped JSON (one array per entry: id, name, aliases, countries, programs, kind)."""
    rows = [[e.entry_id, e.name, list(e.aliases), list(e.countries), list(e.programs), e.kind] for e in entries]
    return gzip.compress(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode(), mtime=0)


def decode(data: bytes) -> tuple[SanctionsEntry, ...]:
    """The entries :func:`encode` wrote."""
    rows: list[list[Any]] = json.loads(gzip.decompress(data))
    return tuple(SanctionsEntry(str(r[0]), str(r[1]), tuple(r[2]), tuple(r[3]), tuple(r[4]), str(r[5]))
                 for r in rows)


_COLUMNS = (screening_lists.c.id, screening_lists.c.name, screening_lists.c.format, screening_lists.c.published_on,
            screening_lists.c.sha256, screening_lists.c.entries, screening_lists.c.loaded_at,
            screening_lists.c.loaded_by)


def current_lists(conn: Connection) -> list[StoredList]:
    """The current version of every loaded list, by name."""
    rows = conn.execute(select(*_COLUMNS).where(screening_lists.c.current.is_(True))
                        .order_by(screening_lists.c.name, screening_lists.c.id.desc())).all()
    seen: dict[str, StoredList] = {}
    for row in rows:  # two loads racing may both be marked current for an instant: the newest wins
        seen.setdefault(row.name, StoredList(*row))
    return list(seen.values())


def entries_of(conn: Connection, list_id: int) -> tuple[SanctionsEntry, ...]:
    """The entries of the stored version ``list_id``."""
    data = conn.execute(select(screening_lists.c.data).where(screening_lists.c.id == list_id)).scalar_one()
    return decode(bytes(data))


def store_list(rt: Runtime, parsed: SanctionsList, fmt: str, detail: dict[str, Any], gate: Gate) -> Stored:
    """Store ``parsed`` as the current version of its name, audited ``screening.list_loaded`` with ``detail`` added
    to the entry; unless ``gate`` refuses it (audited ``screening.list_refused`` with the reason; the current
    version stays) or the current version has the same SHA-256 (audited ``screening.list_checked``)."""
    now = utcnow()
    with rt.transaction() as tx:
        current = [v for v in current_lists(tx.conn) if v.name == parsed.name]
        common = {"name": parsed.name, "format": fmt, "published_on": parsed.published_on.isoformat(),
                  "sha256": parsed.sha256, "entries": len(parsed.entries), **detail}
        verdict = gate.judge(parsed.name, current[0].entries if current else None)
        if verdict.refusal is not None:
            tx.audit("screening.list_refused", "screening_list", parsed.name,
                     {**common, "records": gate.counts.records, "declared": gate.counts.declared,
                      "current_version": current[0].id if current else None,
                      "current_entries": current[0].entries if current else None, "reason": verdict.refusal},
                     outcome="refused")
            return Stored("refused", current[0] if current else None, verdict.refusal)
        if current and current[0].sha256 == parsed.sha256:
            tx.audit("screening.list_checked", "screening_list", parsed.name,
                     {**common, "version": current[0].id, "checked_at": now.isoformat()}, outcome="unchanged")
            return Stored("unchanged", current[0])
        tx.conn.execute(update(screening_lists).where(screening_lists.c.name == parsed.name,
                                                      screening_lists.c.current.is_(True)).values(current=False))
        actor = rt.writer.actor
        new_id = tx.conn.execute(screening_lists.insert().values(
            name=parsed.name, format=fmt, published_on=parsed.published_on, sha256=parsed.sha256,
            entries=len(parsed.entries), loaded_at=now, loaded_by=actor, current=True,
            data=encode(parsed.entries)).returning(screening_lists.c.id)).scalar_one()
        loaded = {**common, "version": new_id, "replaced": current[0].id if current else None}
        if verdict.accepted_drop is not None:
            loaded["drop_accepted"] = {"previous_entries": current[0].entries if current else None,
                                       "share": round(verdict.accepted_drop, 4)}
        tx.audit("screening.list_loaded", "screening_list", parsed.name, loaded,
                 outcome="ok" if verdict.accepted_drop is None else "drop_accepted")
        return Stored("loaded", StoredList(new_id, parsed.name, fmt, parsed.published_on, parsed.sha256,
                                           len(parsed.entries), now, actor))


def record_failure(rt: Runtime, name: str, fmt: str, reason: str) -> None:
    """Audit a list that could not be loaded (``screening.list_failed``); the current version stays."""
    with rt.transaction() as tx:
        tx.audit("screening.list_failed", "screening_list", name, {"name": name, "format": fmt, "reason": reason},
                 outcome="failed")


def retire(rt: Runtime, versions: Sequence[StoredList]) -> None:
    """Mark ``versions`` (current versions of lists no longer configured or provided) not current, each audited
    ``screening.list_retired``; their rows stay as evidence."""
    if not versions:
        return
    with rt.transaction() as tx:
        for version in versions:
            changed = tx.conn.execute(update(screening_lists).where(
                screening_lists.c.name == version.name, screening_lists.c.current.is_(True)).values(current=False))
            if not changed.rowcount:
                continue  # retired meanwhile by another refresh
            tx.audit("screening.list_retired", "screening_list", version.name,
                     {"name": version.name, "format": version.format, "version": version.id,
                      "published_on": version.published_on.isoformat() if version.published_on else None,
                      "entries": version.entries,
                      "reason": "no longer configured in [hooks.sanctions] lists nor given by a provider plugin"},
                     outcome="retired")
