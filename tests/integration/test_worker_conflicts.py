"""A stage whose transaction PostgreSQL cancelled for a conflict with another replica's (a real deadlock here) is done
again at once by the worker, a bounded number of times; other errors are not retried."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from payhub import worker as worker_module
from payhub.worker import CONFLICT_RETRIES, Worker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _deadlock(engine: sa.Engine) -> sa_exc.DBAPIError:
    """Two transactions locking two rows in opposite orders: the one PostgreSQL cancels raises this."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE conflict_rows (id INTEGER PRIMARY KEY, n INTEGER)"))
        conn.execute(sa.text("INSERT INTO conflict_rows VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2, timeout=10)
    errors: list[sa_exc.DBAPIError] = []

    def lock(first: int, second: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE conflict_rows SET n = n + 1 WHERE id = :id"), {"id": first})
                barrier.wait()
                conn.execute(sa.text("UPDATE conflict_rows SET n = n + 1 WHERE id = :id"), {"id": second})
        except sa_exc.DBAPIError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=lock, args=order) for order in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(errors) == 1
    return errors[0]


class _Step:
    def __init__(self, errors: list[BaseException], result: int = 5) -> None:
        self.errors, self.result, self.calls = errors, result, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture
def worker(make_runtime: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Worker:
    monkeypatch.setattr(worker_module, "CONFLICT_PAUSE_SECONDS", 0.001)
    return Worker(make_runtime(""))


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_stage_cancelled_for_a_deadlock_is_done_again(worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    deadlock = _deadlock(worker.rt.engine)
    assert getattr(deadlock.orig, "sqlstate", None) == "40P01"
    step = _Step([deadlock, deadlock])
    with caplog.at_level("INFO", logger="payhub.worker"):
        assert worker._repeat("calculated", step)
    assert step.calls == 2 + worker_module.STAGE_BATCHES  # two cancelled tries, then every batch of the pass
    assert worker.summary.counts["calculated"] == 5 * worker_module.STAGE_BATCHES
    assert sum("conflict with another replica" in r.getMessage() for r in caplog.records) == 2
    assert not worker.waiting  # not an outage


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_conflicts_past_the_retries_and_other_errors_propagate(worker: Worker) -> None:
    deadlock = _deadlock(worker.rt.engine)
    step = _Step([deadlock] * (CONFLICT_RETRIES + 1))
    with pytest.raises(sa_exc.OperationalError):
        worker._repeat("calculated", step)
    assert step.calls == CONFLICT_RETRIES + 1
    with worker.rt.engine.connect() as conn, pytest.raises(sa_exc.IntegrityError) as duplicate:
        conn.execute(sa.text("INSERT INTO conflict_rows VALUES (1, 0)"))
    step = _Step([duplicate.value])
    with pytest.raises(sa_exc.IntegrityError):
        worker._repeat("calculated", step)
    assert step.calls == 1


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_redone_stage_finds_the_payouts_its_cancelled_try_leased(worker: Worker) -> None:
    """The cancelled try had committed its claim (as ``claim_to_settle`` does) before the transaction PostgreSQL
    cancelled: the try done again finds that work free, not leased to this worker until the lease runs out."""
    deadlock = _deadlock(worker.rt.engine)
    me = worker.rt.worker_id
    with worker.rt.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sources (name, status, lease_owner, lease_token, lease_until) "
                             "VALUES ('s', 'ok', NULL, NULL, NULL)"))
    owners: list[str | None] = []

    def claim_then_conflict() -> int:
        with worker.rt.engine.begin() as conn:
            owners.append(conn.execute(sa.text("SELECT lease_owner FROM sources WHERE name = 's'")).scalar())
            conn.execute(sa.text("UPDATE sources SET lease_owner = :me, lease_token = 't', "
                                 "lease_until = now() + interval '1 hour' WHERE name = 's'"), {"me": me})
        if len(owners) == 1:
            raise deadlock
        return 0

    assert not worker._repeat("settled", claim_then_conflict)
    assert owners == [None, None]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_stage_is_not_done_again_once_told_to_stop(worker: Worker) -> None:
    deadlock = _deadlock(worker.rt.engine)

    calls = 0

    def conflict_then_stop() -> int:
        nonlocal calls
        calls += 1
        worker.rt.stop_event.set()  # a stop request arrives before the pause is over
        raise deadlock

    assert not worker._repeat("calculated", conflict_then_stop)
    assert calls == 1
