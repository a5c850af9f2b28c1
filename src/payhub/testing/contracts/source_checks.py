"""The rules of the source contract (:class:`payhub.api.Source`), as checks over a :class:`SourceSubject`.

A record is known by its identity ``(object_type, object_id, transition)``, the part of its dedup key the source
chooses. Source faults (:data:`SourceFault`): ``"transient"`` (the system is busy, rate-limited or timed out: HTTP
429/503, a read timeout) must raise :class:`~payhub.api.TransientSourceError`; ``"permanent"`` (credentials or
permissions refused: HTTP 401/403) must raise :class:`~payhub.api.PermanentSourceError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

from payhub.api import FetchResult, PermanentSourceError, Source, SourceRecord, TransientSourceError
from payhub.testing.contracts.checks import Check, CheckSkipped, ContractViolation

__all__ = ["SOURCE_CHECKS", "SOURCE_FAULTS", "SourceFault", "SourceFaults", "SourceSubject", "Upstream"]

SourceFault = Literal["transient", "permanent"]
SOURCE_FAULTS: tuple[SourceFault, ...] = get_args(SourceFault)
Identity = tuple[str, str, str]


@runtime_checkable
class Upstream(Protocol):
    """The system behind a source under test: ``add(n)`` makes ``n`` more records available, each newer than every
    record before it."""

    def add(self, count: int) -> None: ...


@runtime_checkable
class SourceFaults(Protocol):
    """``plan(*faults)`` queues :data:`SourceFault` values, each consumed by the next request of a fetch."""

    def plan(self, *faults: SourceFault) -> None: ...


@dataclass
class SourceSubject:
    """A source under test: ``factory`` makes a new, configured instance; ``upstream`` feeds it records;
    ``faults`` makes its system fail, or None; ``limit`` is the batch size the checks fetch with. ``live``: the source
    reads a configured system with no upstream: the checks that only read run on whatever records it holds.
    ``rereads_boundary``: by design the source reads the records at its boundary again when a new sync starts (a
    lookback window, ties on a timestamp), relying on dedup by key: at the end, a fetch may return records it already
    returned, with the same cursor and ``more`` false, but never one it had not."""

    factory: Callable[[], Source]
    upstream: Upstream | None = None
    faults: SourceFaults | None = None
    limit: int = 2
    live: bool = False
    rereads_boundary: bool = False

    def need_upstream(self) -> Upstream:
        if self.upstream is None:
            raise CheckSkipped("needs an upstream to add records to (the suite's upstream fixture returned None)")
        return self.upstream

    def feed(self, count: int) -> None:
        if self.upstream is None and self.live:
            return
        self.need_upstream().add(count)


@contextmanager
def _source(subject: SourceSubject) -> Iterator[Source]:
    source = subject.factory()
    try:
        yield source
    finally:
        source.close()


def identity(record: SourceRecord) -> Identity:
    return (record.object_type, record.object_id, record.transition)


def _fetch(source: Source, cursor: str | None, limit: int) -> FetchResult:
    result = source.fetch(cursor, limit)
    if not isinstance(result, FetchResult):
        raise ContractViolation(f"fetch returned {type(result).__name__}, not payhub.api.FetchResult")
    if len(result.records) > limit:
        raise ContractViolation(f"fetch(cursor={cursor!r}, limit={limit}) returned {len(result.records)} records; "
                                f"at most limit = {limit} (the core sizes its transactions by it)")
    return result


def _drain(source: Source, cursor: str | None, limit: int, budget: int, rereads: bool = False
           ) -> tuple[list[Identity], str | None]:
    """Fetch from ``cursor`` until the end: a fetch that returns nothing, or with ``rereads`` one that returns only
    records already read, with the same cursor and ``more`` false; ``budget`` fetches at most."""
    seen: list[Identity] = []
    for _ in range(budget):
        result = _fetch(source, cursor, limit)
        if not result.records:
            return seen, result.cursor if result.cursor is not None else cursor
        ids = [identity(r) for r in result.records]
        if result.cursor == cursor and cursor is not None:
            if rereads and not result.more and set(ids) <= set(seen):
                return seen, cursor
            raise ContractViolation(f"fetch returned {len(ids)} records but the same cursor {cursor!r}: the next "
                                    "fetch would read them again for ever")
        cursor = result.cursor
        seen += ids
    raise ContractViolation(f"{budget} fetches from the cursor did not reach the end of {budget * limit} records at "
                            "most: the cursor does not move forward")


def limit_respected(subject: SourceSubject) -> None:
    subject.feed(2 * subject.limit + 1)
    with _source(subject) as source:
        first = _fetch(source, None, subject.limit)
        _fetch(source, first.cursor, subject.limit)
        _fetch(source, None, 1)


def repeatable_from_cursor(subject: SourceSubject) -> None:
    subject.feed(2 * subject.limit)
    with _source(subject) as source:
        first = _fetch(source, None, subject.limit)
        again = _fetch(source, None, subject.limit)
        after = _fetch(source, first.cursor, subject.limit)
        after_again = _fetch(source, first.cursor, subject.limit)
    with _source(subject) as fresh:
        after_fresh = _fetch(fresh, first.cursor, subject.limit)
    if [identity(r) for r in first.records] != [identity(r) for r in again.records]:
        raise ContractViolation("two fetches from the start returned different records; a fetch must be safe to "
                                "repeat from the same cursor (the core repeats it after a crash)")
    expected = [identity(r) for r in after.records]
    for other, who in ((after_again, "the same instance"), (after_fresh, "a new instance")):
        if [identity(r) for r in other.records] != expected:
            raise ContractViolation(f"fetching again from cursor {first.cursor!r} with {who} returned other records "
                                    f"({[identity(r) for r in other.records]} instead of {expected})")


def cursor_moves_forward(subject: SourceSubject) -> None:
    total = 3 * subject.limit
    subject.need_upstream().add(total)
    with _source(subject) as source:
        seen, _ = _drain(source, None, subject.limit, budget=total + 3, rereads=subject.rereads_boundary)
    unique = set(seen)
    if len(unique) < total:
        raise ContractViolation(f"following the cursors read {len(unique)} distinct records of the {total} added")
    repeated = len(seen) - len(unique)
    if repeated > total // 2:
        raise ContractViolation(f"following the cursors read {len(seen)} records for {total} added: each cursor must "
                                "continue after the records already returned, not before them")


def empty_fetch_keeps_place(subject: SourceSubject) -> None:
    subject.need_upstream().add(subject.limit)
    with _source(subject) as source:
        seen, cursor = _drain(source, None, subject.limit, budget=10, rereads=subject.rereads_boundary)
        empty = _fetch(source, cursor, subject.limit)
        unread = [identity(r) for r in empty.records if identity(r) not in set(seen)]
        if empty.records and not subject.rereads_boundary:
            raise ContractViolation("a fetch after the end returned records")
        if unread:
            raise ContractViolation(f"a fetch after the end returned a record it had not returned before ({unread[0]})")
        kept = empty.cursor if empty.cursor is not None else cursor
        if empty.cursor is None and cursor is not None:
            raise ContractViolation(f"an empty fetch from cursor {cursor!r} returned cursor None: the next fetch "
                                    "would start again from the beginning")
        subject.need_upstream().add(1)
        new, _ = _drain(source, kept, subject.limit, budget=10, rereads=subject.rereads_boundary)
    old = set(seen) & set(new)
    if not set(new) - set(seen):
        raise ContractViolation("after an empty fetch, the record added next was not read from the cursor it gave")
    if len(old) == len(seen) and seen:
        raise ContractViolation("after an empty fetch, its cursor read every earlier record again: it lost its place")


def _raises(subject: SourceSubject, fault: SourceFault, expected: type[Exception]) -> None:
    if subject.faults is None:
        raise CheckSkipped("needs a fault controller (the suite's faults fixture returned None)")
    subject.feed(1)
    with _source(subject) as source:
        subject.faults.plan(fault)
        try:
            source.fetch(None, subject.limit)
        except expected:
            return
        except Exception as exc:  # noqa: BLE001 - reported below
            raise ContractViolation(f"a {fault} failure of the system raised {type(exc).__name__}: {exc}; raise "
                                    f"payhub.api.{expected.__name__}") from exc
    raise ContractViolation(f"a {fault} failure of the system raised nothing; raise payhub.api.{expected.__name__}")


def transient_errors_classified(subject: SourceSubject) -> None:
    _raises(subject, "transient", TransientSourceError)


def permanent_errors_classified(subject: SourceSubject) -> None:
    _raises(subject, "permanent", PermanentSourceError)


SOURCE_CHECKS: tuple[Check[SourceSubject], ...] = (
    Check("limit_respected", "fetch returns at most limit records", limit_respected),
    Check("repeatable_from_cursor", "a fetch repeated from the same cursor returns the same records",
          repeatable_from_cursor),
    Check("cursor_moves_forward", "following the cursors reads every record, each about once", cursor_moves_forward),
    Check("empty_fetch_keeps_place", "an empty fetch keeps its place: later records are read, earlier ones not",
          empty_fetch_keeps_place),
    Check("transient_errors_classified", "passing trouble raises TransientSourceError", transient_errors_classified,
          faults=True),
    Check("permanent_errors_classified", "refused credentials raise PermanentSourceError",
          permanent_errors_classified, faults=True),
)
"""The source contract, in the order it is run."""
