"""Loaded sanctions lists in the database (``screening_lists``): every replica and the command line screen against
the same versions.

Each load of a list is a row: its name, format, the list's own date, the SHA-256 of its files, the entry count,
who loaded it and when, and the parsed entries (gzipped JSON). The newest load of a name is ``current``; older
ones stay as evidence of what was screened against when. Loading a list whose SHA-256 equals the current one's
stores nothing new and audits the check (``screening.list_checked``); when the same content is read with a later
date (an OFAC CSV list whose files were fetched again: newer modification times), the read confirms that the
version is still the publisher's current one, audited ``screening.list_confirmed`` with the date it was confirmed
on. The confirmation is read back from the (hash-chained) audit log, not from an editable column; a version's age
counts from the later of its date and its last confirmation. A load the checks of :mod:`.checks` refuse
stores nothing and is audited ``screening.list_refused``; a list no longer configured or provided is retired (no
version of it current), audited ``screening.list_retired``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from payhub.api import SanctionsEntry, SanctionsList
from payhub.clock import utcnow
from payhub.compliance.sanctions.checks import Gate
from payhub.db.schema import audit_log, screening_lists

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
    confirmed_on: date | None = None  # the last day a read of the same content confirmed it (audit log)

    @property
    def current_as_of(self) -> date | None:
        """The later of the list's date and its last confirmation; None when it has neither."""
        known = [day for day in (self.published_on, self.confirmed_on) if day is not None]
        return max(known) if known else None

    def age_days(self, today: date) -> int | None:
        """Whole days from :attr:`current_as_of` to ``today``, or None when the list has no date."""
        since = self.current_as_of
        return None if since is None else (today - since).days

    def dated(self) -> str:
        """The list's date, and its last confirmation when later: ``2026-12-01`` or ``2026-12-01 (confirmed
        current on 2026-12-20)``."""
        day = self.published_on.isoformat() if self.published_on else "unknown date"
        if self.confirmed_on is not None and (self.published_on is None or self.confirmed_on > self.published_on):
            return f"{day} (confirmed current on {self.confirmed_on.isoformat()})"
        return day


@dataclass(frozen=True, slots=True)
class Stored:
    """What :func:`store_list` did: ``loaded`` (a new current version), ``unchanged``, ``confirmed`` (unchanged,
    read with a later date) or ``refused`` (with ``reason``), and the version current afterwards (None when a
    refused list has none)."""

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


CONFIRMED = "screening.list_confirmed"
"""The audit action recording that a read of a list's current version, with the same content, confirmed it."""


def confirmed_on(conn: Connection, version: StoredList) -> date | None:
    """The date the last ``screening.list_confirmed`` entry of ``version`` confirmed it on; None when its list's
    latest confirmation is of another version (or there is none)."""
    detail = conn.execute(select(audit_log.c.detail).where(
        audit_log.c.subject_id == version.name, audit_log.c.subject_type == "screening_list",
        audit_log.c.action == CONFIRMED).order_by(audit_log.c.seq.desc()).limit(1)).scalar()
    if detail is None:
        return None
    recorded: dict[str, Any] = json.loads(detail)
    if recorded.get("version") != version.id:
        return None
    try:
        return date.fromisoformat(str(recorded.get("confirmed_on")))
    except ValueError:
        return None


def current_lists(conn: Connection) -> list[StoredList]:
    """The current version of every loaded list, by name, with its last confirmation."""
    rows = conn.execute(select(*_COLUMNS).where(screening_lists.c.current.is_(True))
                        .order_by(screening_lists.c.name, screening_lists.c.id.desc())).all()
    seen: dict[str, StoredList] = {}
    for row in rows:  # two loads racing may both be marked current for an instant: the newest wins
        seen.setdefault(row.name, StoredList(*row))
    return [replace(version, confirmed_on=confirmed_on(conn, version)) for version in seen.values()]


def entries_of(conn: Connection, list_id: int) -> tuple[SanctionsEntry, ...]:
    """The entries of the stored version ``list_id``."""
    data = conn.execute(select(screening_lists.c.data).where(screening_lists.c.id == list_id)).scalar_one()
    return decode(bytes(data))


def store_list(rt: Runtime, parsed: SanctionsList, fmt: str, detail: dict[str, Any], gate: Gate) -> Stored:
    """Store ``parsed`` as the current version of its name, audited ``screening.list_loaded`` with ``detail`` added
    to the entry; unless ``gate`` refuses it (audited ``screening.list_refused`` with the reason; the current
    version stays) or the current version has the same SHA-256: then the read is audited
    ``screening.list_confirmed`` when its date is later than the version's date and last confirmation (the same
    content fetched again), else ``screening.list_checked``."""
    now = utcnow()
    with rt.transaction() as tx:
        current = [v for v in current_lists(tx.conn) if v.name == parsed.name]
        common = {"name": parsed.name, "format": fmt, "published_on": parsed.published_on.isoformat(),
                  "sha256": parsed.sha256, "entries": len(parsed.entries), **detail}
        verdict = gate.judge(parsed.name, current[0].entries if current else None, parsed.published_on, now.date())
        if verdict.refusal is not None:
            tx.audit("screening.list_refused", "screening_list", parsed.name,
                     {**common, "records": gate.counts.records, "declared": gate.counts.declared,
                      "current_version": current[0].id if current else None,
                      "current_entries": current[0].entries if current else None, "reason": verdict.refusal},
                     outcome="refused")
            return Stored("refused", current[0] if current else None, verdict.refusal)
        if current and current[0].sha256 == parsed.sha256:
            version = current[0]
            since, confirmed = version.current_as_of, min(parsed.published_on, now.date())
            if since is not None and confirmed > since:
                tx.audit(CONFIRMED, "screening_list", parsed.name,
                         {**common, "published_on": version.published_on.isoformat() if version.published_on
                          else None, "read_date": parsed.published_on.isoformat(), "version": version.id,
                          "confirmed_on": confirmed.isoformat(),
                          "previously_confirmed_on": version.confirmed_on.isoformat() if version.confirmed_on
                          else None, "checked_at": now.isoformat()}, outcome="confirmed")
                return Stored("confirmed", replace(version, confirmed_on=confirmed))
            tx.audit("screening.list_checked", "screening_list", parsed.name,
                     {**common, "version": version.id, "checked_at": now.isoformat()}, outcome="unchanged")
            return Stored("unchanged", version)
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
