"""Fake plugins for tests: a payment provider model, a rail that spies on what it sends, and sources fed by the test.

* :class:`ProviderLedger` is what a payment provider accepted, per idempotency key, with or without deduplication.
* :class:`FakeRail` is a rail over a ledger that records every call and misbehaves as planned
  (:mod:`payhub.testing.faults`).
* :class:`LedgerRail` keeps its ledger in a SQLite file, so it survives a daemon killed with SIGKILL.
* :class:`FakeSource` serves records the test pushes, from memory or from a JSON-lines file shared with other
  processes.

Register them in a test distribution's entry points (``payhub.rails`` / ``payhub.sources``) to load them by name,
or give instances to :class:`payhub.testing.Harness`.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from filelock import FileLock

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
from payhub.clock import utcnow
from payhub.testing.faults import SEND_FAULTS, Fault

FILE_LOCK_SECONDS = 30.0
"""How long :class:`FakeSource` waits for another process to finish writing its file."""


@dataclass(frozen=True, slots=True)
class Acceptance:
    """One payment a provider accepted: the instruction's key, payout and money, the provider's reference, when."""

    key: str
    provider_ref: str
    payout_id: int
    amount: Decimal
    currency: str
    at: datetime


def _ref(key: str, number: int) -> str:
    """The provider's reference of the ``number``-th acceptance of ``key``."""
    return f"fake-{key[-8:]}" + (f"-{number}" if number > 1 else "")


_KEY_PREFIX = "ph-"


def _pack(key: str) -> int | str:
    """``key`` as a compact ledger keeps it: payhub's keys (``ph-`` and 32 lowercase hex digits) as the integer the
    digits spell, any other key as it is. :func:`_unpack` gives the key back exactly."""
    if len(key) == 35 and key.startswith(_KEY_PREFIX):
        try:
            packed = int(key[3:], 16)
        except ValueError:
            return key
        if f"{_KEY_PREFIX}{packed:032x}" == key:
            return packed
    return key


def _unpack(packed: int | str) -> str:
    return packed if isinstance(packed, str) else f"{_KEY_PREFIX}{packed:032x}"


class ProviderLedger:
    """What a payment provider accepted, per idempotency key. Thread-safe.

    With ``dedup`` (the default) the provider deduplicates on the key: a send of a key it already accepted (within
    ``window`` of that acceptance, when a window is given) is answered with the first acceptance and is not a new
    payment. Without it every send is a new acceptance, so a payout sent twice is paid twice, and visibly so in
    :attr:`accepted`. Times are read from :func:`payhub.api.utcnow`, so a :class:`~payhub.testing.ManualClock`
    moves the window.

    A ``compact`` ledger keeps only counts per key (payhub's keys packed as integers), not the acceptances:
    :meth:`find` and :attr:`acceptances` are not available, :meth:`first_ref` is.
    """

    def __init__(self, *, dedup: bool = True, window: timedelta | None = None, compact: bool = False) -> None:
        self.dedup = dedup
        self.window = window
        self.compact = compact
        self._acceptances: list[Acceptance] = []
        self._first: dict[str, Acceptance] = {}  # the first acceptance of each key
        self._count: Counter[str] = Counter()  # acceptances per key
        self._received: Counter[str] = Counter()
        self._outcomes: dict[str, tuple[Outcome, str | None]] = {}
        # compact: the keys accepted (packed, see _pack), the count of those accepted more than once, the
        # deduplicated resends per key, and (with a window only) when each key was first accepted
        self._keys: set[int | str] = set()
        self._more: dict[str, int] = {}
        self._resent: Counter[str] = Counter()
        self._first_at: dict[int | str, datetime] = {}
        self._lock = threading.Lock()

    def accept(self, instruction: PayoutInstruction) -> Acceptance:
        """Receive ``instruction``; return the acceptance that answers it (the first one, when deduplicated)."""
        key = instruction.idempotency_key
        now = utcnow()
        if self.compact:
            return self._accept_compact(instruction, key, now)
        with self._lock:
            self._received[key] += 1
            first = self._first.get(key)
            if self.dedup and first is not None and (self.window is None or now - first.at < self.window):
                return first
            self._count[key] += 1
            number = self._count[key]
            ref = _ref(key, number)
            acceptance = Acceptance(key, ref, instruction.payout_id, instruction.amount, instruction.currency, now)
            self._acceptances.append(acceptance)
            self._first.setdefault(key, acceptance)
            return acceptance

    def _accept_compact(self, instruction: PayoutInstruction, key: str, now: datetime) -> Acceptance:
        packed = _pack(key)
        with self._lock:
            seen = packed in self._keys
            if self.dedup and seen and (self.window is None or now - self._first_at[packed] < self.window):
                self._resent[key] += 1
                return Acceptance(key, _ref(key, 1), instruction.payout_id, instruction.amount,
                                  instruction.currency, self._first_at.get(packed, now))
            if seen:
                number = self._more[key] = self._more.get(key, 1) + 1
            else:
                number = 1
                self._keys.add(packed)
                if self.window is not None:
                    self._first_at[packed] = now
            return Acceptance(key, _ref(key, number), instruction.payout_id, instruction.amount,
                              instruction.currency, now)

    def find(self, key: str) -> Acceptance | None:
        """The first acceptance of ``key``, or None when the provider never accepted it (not kept by a compact
        ledger: see :meth:`first_ref`)."""
        if self.compact:
            raise RuntimeError("a compact ledger keeps no acceptances, only counts per key (use first_ref)")
        with self._lock:
            return self._first.get(key)

    def first_ref(self, key: str) -> str | None:
        """The provider's reference of the first acceptance of ``key``, or None when it never accepted it."""
        if self.compact:
            with self._lock:
                return _ref(key, 1) if _pack(key) in self._keys else None
        found = self.find(key)
        return None if found is None else found.provider_ref

    def set_outcome(self, key: str, outcome: Outcome, reason: str | None = None) -> None:
        """Make lookups answer ``outcome`` (``PAID``, ``REJECTED``, ``RETURNED``) for the accepted ``key``."""
        with self._lock:
            if (_pack(key) not in self._keys) if self.compact else (key not in self._first):
                raise KeyError(f"the provider never accepted {key!r}")
            self._outcomes[key] = (outcome, reason)

    def outcome(self, key: str) -> tuple[Outcome, str | None]:
        """What a lookup of an accepted ``key`` answers: ``ACCEPTED`` unless :meth:`set_outcome` said otherwise."""
        with self._lock:
            return self._outcomes.get(key, (Outcome.ACCEPTED, None))

    @property
    def acceptances(self) -> list[Acceptance]:
        """Every acceptance, in order (a copy); a compact ledger keeps none."""
        if self.compact:
            raise RuntimeError("a compact ledger keeps no acceptances, only counts per key")
        with self._lock:
            return list(self._acceptances)

    @property
    def accepted(self) -> Counter[str]:
        """Payments per key (a copy): exactly once means every count is 1; deduplicated resends do not count."""
        with self._lock:
            if not self.compact:
                return Counter(self._count)
            counts = Counter(dict.fromkeys(map(_unpack, self._keys), 1))
            counts.update({key: n - 1 for key, n in self._more.items()})
            return counts

    @property
    def received(self) -> Counter[str]:
        """Sends per key (a copy), deduplicated resends included."""
        if not self.compact:
            with self._lock:
                return Counter(self._received)
        counts = self.accepted
        with self._lock:
            counts.update(self._resent)
        return counts

    def nbytes(self) -> int:
        """About how much memory the ledger's per-key bookkeeping takes (its containers and what they hold)."""
        with self._lock:
            if self.compact:
                parts: list[Any] = [self._keys, self._more, self._resent, self._first_at]
                return (sum(sys.getsizeof(c) for c in parts) + sum(sys.getsizeof(k) for k in self._keys)
                        + sum(sys.getsizeof(k) for k in self._more) + sum(sys.getsizeof(k) for k in self._resent))
            return (sum(sys.getsizeof(c) for c in (self._acceptances, self._first, self._count, self._received))
                    + sum(sys.getsizeof(a) + sys.getsizeof(a.key) + sys.getsizeof(a.provider_ref)
                          for a in self._acceptances))

    def paid_twice(self) -> list[str]:
        """The keys accepted more than once, sorted."""
        return sorted(key for key, n in self.accepted.items() if n > 1)


class FakeRailSettings(PluginSettings):
    """Settings of :class:`FakeRail`; ``dedup`` None means: the provider deduplicates exactly when the rail declares
    a window (``dedup_window_seconds``)."""

    lookup: bool = True
    dedup_window_seconds: float | None = None
    dedup: bool | None = None
    max_batch: int = 100
    currencies: list[str] | None = None
    countries: list[str] | None = None
    max_amounts: dict[str, Decimal] = {}
    requires_detail: str | None = None  # a payee detail this rail needs (check_payee refuses payees without it)
    return_window_seconds: float | None = None  # how long a paid payout can still be returned
    record: bool = True  # keep every call and instruction (False: only counts per key, in flat memory)


class FakeRail(Rail):
    """A spy rail over a :class:`ProviderLedger`: it records every call, plays the faults planned with :meth:`plan`
    and sends the rest to the ledger.

    ``calls`` lists the keys of each send, ``sent`` every instruction sent, ``lookups`` the keys of each lookup;
    ``accepted`` is the ledger's payments per key. Without ``ledger`` it gets its own, deduplicating as the
    settings say.

    With ``record = false`` (or after :meth:`keep_counts_only`) it keeps none of ``calls``, ``sent`` and
    ``lookups`` and its own ledger is compact (:class:`ProviderLedger` ``compact``): what it holds grows only by a
    packed key per payout accepted, so a long run's memory is the pipeline's, not the test double's.
    """

    settings_model = FakeRailSettings
    settings: FakeRailSettings

    def __init__(self, name: str, settings: FakeRailSettings | None = None, *,
                 ledger: ProviderLedger | None = None) -> None:
        super().__init__(name, settings or FakeRailSettings())
        s = self.settings
        window = timedelta(seconds=s.dedup_window_seconds) if s.dedup_window_seconds else None
        self.ledger = ledger or ProviderLedger(dedup=window is not None if s.dedup is None else s.dedup,
                                               window=window, compact=not s.record)
        self._own_ledger = ledger is None
        self.record = s.record
        self.calls: list[list[str]] = []
        self.sent: list[PayoutInstruction] = []
        self.lookups: list[list[str]] = []
        self.faults: deque[Fault] = deque()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def keep_counts_only(self) -> None:
        """From now on keep no ``calls``, ``sent`` or ``lookups``, and make the rail's own ledger compact (it must
        not have accepted anything yet); a ledger given to the rail, shared with others, is left as it is."""
        with self._lock:
            if self._own_ledger and not self.ledger.compact:
                if self.ledger.accepted:
                    raise RuntimeError("the ledger already holds acceptances")
                self.ledger = ProviderLedger(dedup=self.ledger.dedup, window=self.ledger.window, compact=True)
            self.record = False
            self.calls, self.sent, self.lookups = [], [], []

    @property
    def accepted(self) -> Counter[str]:
        """Payments per idempotency key, as the provider counts them (see :attr:`ProviderLedger.accepted`)."""
        return self.ledger.accepted

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

    def _next(self, *kinds: Fault) -> Fault | None:
        with self._lock:
            if self.faults and self.faults[0] in kinds:
                return self.faults.popleft()
        return None

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        if self.record:
            with self._lock:
                self.calls.append([i.idempotency_key for i in instructions])
                self.sent.extend(instructions)
        fault = self._next(*SEND_FAULTS)
        if fault == "retryable":
            raise RetryableRailError("provider busy (503)")
        if fault == "permanent":
            raise PermanentRailError("account closed")
        if fault == "timeout_before_accept":
            raise UnknownOutcomeError("read timeout")
        if fault == "reject":
            return [RailResult(i.idempotency_key, Outcome.REJECTED, reason="invalid beneficiary")
                    for i in instructions]
        if fault == "hang":
            self.release.wait()
        results = [RailResult(i.idempotency_key, Outcome.ACCEPTED, self.ledger.accept(i).provider_ref)
                   for i in instructions]
        if fault == "timeout_after_accept":
            raise UnknownOutcomeError("read timeout after the request was sent")
        if fault == "duplicate":
            return results + results + [RailResult("ph-never-sent", Outcome.ACCEPTED, "fake-stray")]
        return results

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        if not self.settings.lookup:
            return super().lookup(keys)
        if self.record:
            with self._lock:
                self.lookups.append(list(keys))
        if self._next("lookup_fails"):
            raise RetryableRailError("lookup endpoint unavailable")
        found: dict[str, RailResult | None] = {}
        for key in keys:
            ref = self.ledger.first_ref(key)
            if ref is None:
                found[key] = None
            else:
                outcome, reason = self.ledger.outcome(key)
                found[key] = RailResult(key, outcome, ref, reason)
        return found


class LedgerRailSettings(PluginSettings):
    path: ConfigPath
    unknown_every: int = 0  # every Nth send accepts, then raises UnknownOutcomeError
    retryable_every: int = 0  # every Nth send raises RetryableRailError
    latency_seconds: float = 0.0


class LedgerRail(Rail):
    """A rail whose ledger is a SQLite file, shared across processes and surviving SIGKILL. It does not
    deduplicate: every accepted send is a row, so a payout sent twice shows up twice."""

    settings_model = LedgerRailSettings
    settings: LedgerRailSettings

    def __init__(self, name: str, settings: LedgerRailSettings) -> None:
        super().__init__(name, settings)
        with closing(self._db()) as db, db:
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


class FakeSourceSettings(PluginSettings):
    """Settings of :class:`FakeSource`: ``path`` of its JSON-lines file, or None to keep records in memory."""

    path: ConfigPath | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    """One :meth:`FakeSource.fetch` call: the cursor and limit it was given and how many records it returned."""

    cursor: str | None
    limit: int
    count: int


class FakeSource(Source):
    """Serves records the test pushes, ``limit`` at a time, with an integer cursor (the number of records before).

    Without ``path`` the records are kept in memory and may be anything (hostile objects too). With ``path`` they
    are lines of a JSON-lines file, appended by :meth:`push` under a file lock, so another process (a ``payhub run``
    subprocess loading this source by name with the same ``path``) serves them; each fetch is logged to
    ``<path>.fetches``, so :meth:`fetches` and :meth:`consumed` show what any process read. In the file, datetimes
    and decimals (also inside ``attributes``) become ISO 8601 and decimal text, which the core accepts alike.
    Set ``error`` to an exception to make this instance's ``fetch`` raise it.
    """

    settings_model = FakeSourceSettings
    settings: FakeSourceSettings

    def __init__(self, name: str, settings: FakeSourceSettings | None = None) -> None:
        super().__init__(name, settings or FakeSourceSettings())
        self.error: Exception | None = None
        self._records: list[SourceRecord] = []
        self._fetches: list[Fetch] = []
        path = self.settings.path
        self._lock: FileLock | None = None if path is None else FileLock(f"{path}.lock", timeout=FILE_LOCK_SECONDS)

    @property
    def records(self) -> list[SourceRecord]:
        """Every record pushed so far, in order (a copy)."""
        if self.settings.path is None:
            return list(self._records)
        return [SourceRecord(**line) for line in self._read(self.settings.path)]

    def push(self, *records: SourceRecord) -> None:
        """Make ``records`` available after those already pushed."""
        path = self.settings.path
        if path is None:
            self._records.extend(records)
            return
        text = "".join(_record_line(record) for record in records)
        assert self._lock is not None
        with self._lock, path.open("a", encoding="utf-8") as fh:
            fh.write(text)

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        if self.error is not None:
            raise self.error
        records = self.records
        start = int(cursor or 0)
        batch = records[start : start + limit]
        end = start + len(batch)
        self._log(Fetch(cursor, limit, len(batch)))
        return FetchResult(batch, str(end), more=end < len(records))

    def fetches(self) -> list[Fetch]:
        """Every fetch so far, in order: this instance's, or with ``path`` those of every process."""
        path = self.settings.path
        if path is None:
            return list(self._fetches)
        return [Fetch(**line) for line in self._read(Path(f"{path}.fetches"))]

    def consumed(self) -> list[SourceRecord]:
        """The records fetches have returned so far: those before the furthest point any fetch reached."""
        end = max((int(f.cursor or 0) + f.count for f in self.fetches()), default=0)
        return self.records[:end]

    def _log(self, fetch: Fetch) -> None:
        path = self.settings.path
        if path is None:
            self._fetches.append(fetch)
            return
        assert self._lock is not None
        with self._lock, open(f"{path}.fetches", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(fetch)) + "\n")

    def _read(self, path: Path) -> list[dict[str, Any]]:
        assert self._lock is not None
        with self._lock:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _record_line(record: SourceRecord) -> str:
    if not isinstance(record, SourceRecord):
        raise TypeError(f"a file-backed FakeSource stores SourceRecord objects, not {type(record).__name__}")
    values = {f.name: getattr(record, f.name) for f in fields(SourceRecord)}
    values["attributes"] = dict(record.attributes)
    return json.dumps(values, default=_json_text, ensure_ascii=False) + "\n"


def _json_text(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"a FakeSource record cannot hold {type(value).__name__} in a file")
