"""The numbering ledger: a small SQLite file that issues gapless credit-note numbers, once per payout.

Issuing is one SQLite transaction (``BEGIN IMMEDIATE``, so one writer at a time across threads and processes):
if the payout's idempotency key already has a number, that row is returned unchanged; otherwise the next number of
the series (the largest so far plus one) is taken, the document is rendered and validated with it, and the row,
document bytes included, is inserted; then the transaction commits. A crash before the commit leaves nothing (the
number is not used); after it, the number and its document exist together in the ledger, and the file in the outbox
is only a copy that :meth:`Ledger.unwritten` lets the rail (re)write at any later time. Rows are never deleted or
renumbered, so within a series the numbers are exactly 1..N, and a key has at most one number (its primary key).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payhub.api import prepare_sqlite_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS credit_notes (
    key TEXT PRIMARY KEY,
    series TEXT NOT NULL,
    number INTEGER NOT NULL CHECK (number > 0),
    document_id TEXT NOT NULL UNIQUE,
    payout_id INTEGER NOT NULL,
    payee_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    issue_date TEXT NOT NULL,
    issued_at REAL NOT NULL,
    document BLOB NOT NULL,
    written INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'delivered', 'refused')),
    detail TEXT,
    UNIQUE (series, number)
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One issued credit note."""

    key: str
    series: str
    number: int
    document_id: str
    payout_id: int
    payee_id: str
    amount: str
    currency: str
    issue_date: str
    document: bytes
    written: bool
    state: str
    detail: str | None


COLUMNS = ("key", "series", "number", "document_id", "payout_id", "payee_id", "amount", "currency", "issue_date",
           "document", "written", "state", "detail")


class DocumentRefused(Exception):
    """The rendered document failed validation; nothing was issued."""


@dataclass(frozen=True, slots=True)
class Draft:
    """What the caller knows before a number exists; ``render(document_id)`` makes the document."""

    key: str
    payout_id: int
    payee_id: str
    amount: str
    currency: str
    issue_date: str
    render: Callable[[str], bytes]


class Ledger:
    """Opens a connection per operation, so one Ledger may be used from any thread."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        path.parent.mkdir(parents=True, exist_ok=True)
        prepare_sqlite_file(path)  # 0600 (0640) before SQLite creates it, whatever the umask; WAL and SHM follow
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def issue(self, draft: Draft, series: str, document_id: Callable[[int], str],
              check: Callable[[bytes], list[str]]) -> tuple[Entry, bool]:
        """The entry for ``draft.key``: the existing one, or a new one with the next number of ``series``.
        Returns (entry, created). Raises DocumentRefused (nothing issued) when ``check`` finds problems."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                found = self._get(db, draft.key)
                if found is not None:
                    db.execute("ROLLBACK")
                    return found, False
                (last,) = db.execute("SELECT COALESCE(MAX(number), 0) FROM credit_notes WHERE series = ?",
                                     (series,)).fetchone()
                number = int(last) + 1
                doc_id = document_id(number)
                try:
                    document = draft.render(doc_id)
                except ValueError as exc:  # text XML cannot hold (control characters)
                    raise DocumentRefused(str(exc)) from exc
                problems = check(document)
                if problems:
                    raise DocumentRefused("; ".join(problems[:3]))
                self._before_commit(number)
                db.execute(
                    "INSERT INTO credit_notes (key, series, number, document_id, payout_id, payee_id, amount, "
                    "currency, issue_date, issued_at, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (draft.key, series, number, doc_id, draft.payout_id, draft.payee_id, draft.amount, draft.currency,
                     draft.issue_date, time.time(), document))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            created = self._get(db, draft.key)
        assert created is not None
        return created, True

    def _before_commit(self, number: int) -> None:
        """A seam for crash tests: called with the number allocated, before the transaction commits."""

    def get(self, key: str) -> Entry | None:
        with self._connect() as db:
            return self._get(db, key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM credit_notes WHERE key IN "
                                  f"({', '.join('?' * len(chunk))})", chunk)
                for row in rows:
                    entry = _entry(row)
                    found[entry.key] = entry
        return found

    def unwritten(self) -> list[Entry]:
        """Issued credit notes whose file may not be in the outbox yet, oldest first."""
        with self._connect() as db:
            return [_entry(r) for r in db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM credit_notes WHERE written = 0 ORDER BY series, number")]

    def mark_written(self, key: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE credit_notes SET written = 1 WHERE key = ?", (key,))

    def set_state(self, key: str, state: str, detail: str | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE credit_notes SET state = ?, detail = ? WHERE key = ?", (state, detail, key))

    def numbers(self, series: str | None = None) -> list[tuple[str, int, str]]:
        """(series, number, key) of every entry, in order: for audits and tests."""
        with self._connect() as db:
            query = "SELECT series, number, key FROM credit_notes"
            rows = (db.execute(query + " WHERE series = ? ORDER BY number", (series,)) if series is not None
                    else db.execute(query + " ORDER BY series, number"))
            return [(str(s), int(n), str(k)) for s, n, k in rows]

    @staticmethod
    def _get(db: sqlite3.Connection, key: str) -> Entry | None:
        row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM credit_notes WHERE key = ?", (key,)).fetchone()
        return _entry(row) if row else None


def _entry(row: Sequence[Any]) -> Entry:
    values = dict(zip(COLUMNS, row, strict=True))
    return Entry(
        key=str(values["key"]), series=str(values["series"]), number=int(str(values["number"])),
        document_id=str(values["document_id"]), payout_id=int(str(values["payout_id"])),
        payee_id=str(values["payee_id"]), amount=str(values["amount"]), currency=str(values["currency"]),
        issue_date=str(values["issue_date"]), document=bytes(values["document"]),
        written=bool(values["written"]), state=str(values["state"]),
        detail=str(values["detail"]) if values["detail"] is not None else None)
