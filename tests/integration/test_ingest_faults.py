"""A batch the database refuses is split until the refused record is quarantined alone; a source whose fetch raises
is narrowed to the record that breaks it; database faults are not mistaken for bad data."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text

from payhub.api import FetchResult, Source, SourceRecord
from payhub.audit import verify
from payhub.db.schema import audit_log, events, sources
from payhub.pipeline import ingest, storable
from payhub.pipeline.ingest import poll, store
from payhub.runtime import Runtime
from payhub.worker import Worker

CONFIG = """
    [sources.s]
    plugin = "fake"
    batch_size = 16
    [programs.flat]
    calculator = "flat"
    amount = "10"
    currency = "EUR"
"""


def deal(object_id: str, **overrides: Any) -> SourceRecord:
    values: dict[str, Any] = {
        "object_type": "Opportunity", "object_id": object_id, "transition": "won", "event_type": "deal_won",
        "occurred_at": "2026-10-01T12:00:00Z", "payee_id": "p1", "amount": "1000.00", "currency": "EUR",
    }
    values.update(overrides)
    return SourceRecord(**values)


def all_events(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(events).order_by(events.c.id)).all()


def source_row(rt: Runtime) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(sources).where(sources.c.name == "s")).one()


def audit_actions(rt: Runtime, action: str) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.seq)).all()


def audit_ok(rt: Runtime) -> bool:
    with rt.engine.connect() as conn:
        return verify(conn).ok


def refuse_poison(rt: Runtime) -> None:
    """Make the database itself refuse events whose object id starts with ``poison`` (a constraint the checks
    before writing do not know about)."""
    with rt.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            for when in ("INSERT", "UPDATE"):
                conn.execute(text(f"CREATE TRIGGER poison_{when.lower()} BEFORE {when} ON events "
                                  "WHEN NEW.object_id LIKE 'poison%' BEGIN SELECT RAISE(ABORT, 'poison record'); END"))
        else:
            conn.execute(text("CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.object_id LIKE 'poison%' "
                              "THEN RAISE EXCEPTION 'poison record' USING ERRCODE = 'check_violation'; END IF; "
                              "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON events FOR EACH ROW "
                              "EXECUTE FUNCTION poison()"))


# ----------------------------------------------------------------------------------------- refused batches


def test_a_record_the_database_refuses_is_quarantined_alone_and_the_rest_stored(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    refuse_poison(rt)
    batch = [deal(f"g{i}") for i in range(13)]
    batch[3], batch[4], batch[11] = deal("poison-1"), deal("poison-2", currency="ZZZ"), deal("poison-3")
    rt.plugins.sources["s"].push(*batch)
    assert poll(rt, "s") == 13
    rows = all_events(rt)
    assert [r.object_id for r in rows if r.status == "ingested"] == [f"g{i}" for i in range(13) if i not in (3, 4, 11)]
    refused = [r for r in rows if r.status == "quarantined"]
    assert len(refused) == 3
    for row in refused:
        assert row.key.startswith("s:malformed:") and row.object_id == ""
        assert row.reason.startswith("the database refused the record: ") and "poison record" in row.reason
        assert '"object_id":"poison-' in row.raw  # the record itself is kept for the quarantine listing
    assert source_row(rt).cursor == "13"  # the cursor moved only with the batch stored
    [polled] = audit_actions(rt, "source.polled")
    assert json.loads(polled.detail) | {"cursor": None} == {"records": 13, "new": 13, "corrected": 0,
                                                             "duplicates": 0, "quarantined": 3, "cursor": None}
    assert len(audit_actions(rt, "event.quarantined")) == 3
    assert len(audit_actions(rt, "event.ingested")) == 10
    # read again: the refused records are the same quarantined events, not new ones
    rt.plugins.sources["s"].push(deal("poison-1"), deal("g99"))
    assert poll(rt, "s") == 1
    assert len(all_events(rt)) == 14
    assert audit_ok(rt)


def test_a_correction_the_database_refuses_leaves_the_other_corrections(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    store(rt, "s", [deal("a", currency="ZZZ"), deal("b", currency="ZZZ")], "2")
    with rt.engine.begin() as conn:  # the database now refuses updates of event b
        if conn.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER refuse_b BEFORE UPDATE ON events WHEN NEW.object_id = 'b' "
                              "BEGIN SELECT RAISE(ABORT, 'b is frozen'); END"))
        else:
            conn.execute(text("CREATE FUNCTION refuse_b() RETURNS trigger AS $$ BEGIN IF NEW.object_id = 'b' THEN "
                              "RAISE EXCEPTION 'b is frozen' USING ERRCODE = 'check_violation'; END IF; "
                              "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER refuse_b BEFORE UPDATE ON events FOR EACH ROW "
                              "EXECUTE FUNCTION refuse_b()"))
    assert store(rt, "s", [deal("a"), deal("b"), deal("c")], "5", previous="2") == 3
    stored = {r.object_id: r for r in all_events(rt)}
    assert stored["a"].status == stored["c"].status == "ingested"
    assert stored["b"].status == "quarantined"  # left as it was, with the refusal quarantined beside it
    [refusal] = [r for r in stored.values() if r.key.startswith("s:malformed:")]
    assert "b is frozen" in refusal.reason
    assert audit_ok(rt)


@pytest.mark.parametrize("poison", ["\ud800", "x" * 500, "a\x00b"])
def test_values_that_bypass_the_checks_are_still_isolated(make_runtime: Any, monkeypatch: pytest.MonkeyPatch,
                                                          poison: str) -> None:
    """If a value slipped past the checks, the driver or the database refusing it costs only its own record:
    a lone surrogate the drivers cannot encode, and on PostgreSQL a value longer than its column or a NUL."""
    rt = make_runtime(CONFIG)
    real = ingest.validate

    def unchecked(record: Any, source: str, max_amount: Any) -> dict[str, Any]:
        row = real(record, source, max_amount)
        if row["object_id"].startswith("poison"):
            row["event_type"] = poison  # as if the checks had missed it
        return row

    monkeypatch.setattr(ingest, "validate", unchecked)
    rt.plugins.sources["s"].push(deal("g1"), deal("poison"), deal("g2"))
    assert poll(rt, "s") == 3
    rows = {r.object_id: r for r in all_events(rt)}
    refused = rt.engine.dialect.name == "postgresql" or poison == "\ud800"  # SQLite stores long text and NUL
    if refused:
        assert rows["g1"].status == rows["g2"].status == "ingested"
        [quarantined] = [r for r in rows.values() if r.status == "quarantined"]
        assert quarantined.reason.startswith("the database refused the record: ")
    else:
        assert rows["poison"].event_type == poison
    assert source_row(rt).cursor == "3"
    assert audit_ok(rt)


# ------------------------------------------------------------------------------- faults are not bad data


def _locked() -> sa_exc.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = 5  # type: ignore[attr-defined]
    return sa_exc.OperationalError("INSERT INTO events ...", {}, error)


def _refused_connection() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("INSERT INTO events ...", {}, psycopg.OperationalError(
        "connection failed: Connection refused"))


def _lock_timeout() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("INSERT INTO events ...", {}, psycopg.errors.LockNotAvailable(
        "canceling statement due to lock timeout"))


@pytest.mark.parametrize("fault", [_locked, _refused_connection, _lock_timeout])
def test_a_database_fault_propagates_and_moves_nothing(make_runtime: Any, monkeypatch: pytest.MonkeyPatch,
                                                       fault: Any) -> None:
    rt = make_runtime(CONFIG)
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise fault()

    monkeypatch.setattr(ingest, "_write", failing)
    rt.plugins.sources["s"].push(deal("g1"), deal("g2"))
    with pytest.raises(sa_exc.OperationalError):
        poll(rt, "s")
    assert len(calls) == 1  # not split record by record: it is not the data
    assert all_events(rt) == []
    assert source_row(rt).cursor is None
    monkeypatch.undo()
    assert poll(rt, "s") == 2  # once the database answers, the same records are stored


def test_which_errors_count_as_data() -> None:
    data = [
        sa_exc.IntegrityError("x", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        sa_exc.DataError("x", {}, psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")),
        sa_exc.DataError("x", {}, psycopg.errors.StringDataRightTruncation("value too long")),
        sa_exc.OperationalError("x", {}, psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum")),
        sa_exc.StatementError("x", "INSERT", {}, ValueError("naive datetime given to the database")),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        OverflowError("Python int too large to convert to SQLite INTEGER"),
    ]
    faults = [
        _locked(), _refused_connection(), _lock_timeout(),
        sa_exc.OperationalError("x", {}, psycopg.errors.SerializationFailure("could not serialize")),
        sa_exc.OperationalError("x", {}, psycopg.errors.DeadlockDetected("deadlock detected")),
        sa_exc.InterfaceError("x", {}, psycopg.InterfaceError("connection already closed")),
        sa_exc.TimeoutError("QueuePool limit reached"),
        sa_exc.ProgrammingError("x", {}, psycopg.errors.UndefinedTable("relation events does not exist")),
        ValueError("a bug"), KeyError("a bug"),
    ]
    invalidated = sa_exc.DataError("x", {}, psycopg.DataError("lost"), connection_invalidated=True)
    assert [storable.is_data_error(e) for e in data] == [True] * len(data)
    assert [storable.is_data_error(e) for e in [*faults, invalidated]] == [False] * (len(faults) + 1)


# ---------------------------------------------------------------------------------------- raising sources


class Buggy(Source):
    """Builds its records lazily and raises on the ones marked ``explode``, like a plugin bug set off by one
    CRM record; records the test removes from ``explode`` are "fixed in the CRM"."""

    def __init__(self, ids: Sequence[str], explode: set[str], error: type[Exception] = KeyError) -> None:
        super().__init__("s", None)  # type: ignore[arg-type]
        self.ids, self.explode, self.error = list(ids), explode, error
        self.calls: list[tuple[str | None, int]] = []

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        self.calls.append((cursor, limit))
        start = int(cursor or 0)
        batch = self.ids[start:start + limit]
        for object_id in batch:
            if object_id in self.explode:
                raise self.error(f"Amount__c missing on {object_id}")
        end = start + len(batch)
        return FetchResult([deal(i) for i in batch], str(end), more=end < len(self.ids))


def test_a_fetch_that_raises_is_narrowed_to_the_record_that_breaks_it(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    ids = [f"r{i}" for i in range(40)]
    source = Buggy(ids, {"r21"})
    rt.plugins.sources["s"] = source
    assert poll(rt, "s") == 21  # r0..r15 in the first batch, then r16..r20 by narrowing down to one
    assert [r.object_id for r in all_events(rt)] == ids[:21]
    row = source_row(rt)
    assert (row.status, row.cursor) == ("ok", "21")
    assert row.reason == "KeyError: 'Amount__c missing on r21' (fetching the record after cursor '21')"
    [error] = audit_actions(rt, "source.error")
    assert json.loads(error.detail)["reason"] == row.reason and error.outcome == "error"
    assert source.calls == [(None, 16), ("16", 16), ("16", 8), ("16", 4), ("20", 4), ("20", 2), ("20", 1),
                            ("21", 1)]
    # the next poll tries again (an unchanged error is not audited twice); once the record is fixed, it goes on
    assert poll(rt, "s") == 0
    assert len(audit_actions(rt, "source.error")) == 1
    source.explode.clear()
    assert poll(rt, "s") == 19
    assert [r.object_id for r in all_events(rt)] == ids
    assert source_row(rt).reason is None
    assert audit_ok(rt)


def test_a_source_that_always_raises_is_recorded_and_the_daemon_goes_on(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG + """
        [sources.t]
        plugin = "fake"
    """)
    rt.plugins.sources["s"] = Buggy(["r0", "r1"], {"r0"})
    rt.plugins.sources["t"].push(deal("t1"))
    worker = Worker(rt)
    worker.start()
    worker.run_once()
    worker.stop()
    assert [r.object_id for r in all_events(rt)] == ["t1"]
    assert source_row(rt).reason == "KeyError: 'Amount__c missing on r0' (fetching the record after cursor None)"


class Odd(Source):
    """Returns something that is not a usable fetch result."""

    def __init__(self, result: Any) -> None:
        super().__init__("s", None)  # type: ignore[arg-type]
        self.result = result

    def fetch(self, cursor: str | None, limit: int) -> Any:
        return self.result


@pytest.mark.parametrize(("result", "reason"), [
    ([deal("a")], "fetch returned a list, not a FetchResult"),
    (FetchResult("abc", "1"), "fetch returned records as a str, not a sequence"),  # type: ignore[arg-type]
    (FetchResult([deal("a")], 7), "fetch returned a cursor of type int, not text"),  # type: ignore[arg-type]
    (FetchResult([deal("a")], "c\x00"), "fetch returned a cursor that cannot be stored: it holds a NUL character"),
    (FetchResult([deal("a")], "c\ud800"), "it holds the unpaired surrogate U+D800"),
])
def test_a_fetch_result_that_cannot_be_stored_is_a_source_error(make_runtime: Any, result: Any, reason: str) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"] = Odd(result)
    assert poll(rt, "s") == 0
    row = source_row(rt)
    assert row.status == "ok" and reason in row.reason
    assert all_events(rt) == []
    assert audit_ok(rt)


def test_a_source_error_with_unstorable_text_is_recorded_escaped(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    rt.plugins.sources["s"] = Buggy(["bad\x00\ud800"], {"bad\x00\ud800"}, ValueError)
    assert poll(rt, "s") == 0
    assert source_row(rt).reason == (
        "ValueError: Amount__c missing on bad\\x00\\ud800 (fetching the record after cursor None)")
    assert audit_ok(rt)


def test_a_refused_record_sent_twice_in_a_batch_is_quarantined_once(make_runtime: Any) -> None:
    rt = make_runtime(CONFIG)
    refuse_poison(rt)
    assert store(rt, "s", [deal("poison"), deal("ok"), deal("poison")], "3") == 2
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 2
    [polled] = audit_actions(rt, "source.polled")
    assert json.loads(polled.detail)["duplicates"] == 1
