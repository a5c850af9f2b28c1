"""The cross-check of payouts and rewards against the chain gives the same differences, in the same order, when worker
processes compare its ranges, also when a worker cannot finish a batch (those ranges are compared by the caller)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

import payhub.audit
import payhub.crosscheck
from bench.audit_speed import build
from payhub.audit import Workers, read_head, share_snapshot, verify
from payhub.crosscheck import AuditedIds, Difference, differences
from payhub.db.engine import make_engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    build(db_url, 700, 7)  # 100 events, each with its reward and payout, and their entries
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


TAMPER = [
    "UPDATE payouts SET amount_minor = amount_minor + 1 WHERE id = 37",
    "UPDATE rewards SET payee_id = 'rep-x' WHERE id = 8",
    "UPDATE payout_items SET amount_minor = 1 WHERE payout_id = 64",
    "DELETE FROM payout_items WHERE reward_id = 50",
    "DELETE FROM rewards WHERE id = 50",
    "UPDATE audit_log SET detail = '[1]' WHERE action = 'reward.calculated' AND subject_id = '71'",
    "UPDATE rewards SET status = 'paid' WHERE id = 99",
]


def compare(engine: Engine, workers: Workers | None) -> list[Difference]:
    ids = AuditedIds()
    with engine.connect() as conn:
        verify(conn, top_ids=ids.top)
        return list(differences(conn, ids, chunk=7, workers=workers))


def test_workers_give_the_same_differences_in_the_same_order(engine: Engine, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    assert compare(engine, None) == []
    for statement in TAMPER:
        with engine.begin() as conn:
            conn.execute(text(statement))
    monkeypatch.setattr(payhub.crosscheck, "PARALLEL_IDS", 1)
    monkeypatch.setattr(payhub.crosscheck, "BATCH", 2)
    alone = compare(engine, None)
    assert len(alone) >= len(TAMPER)
    monkeypatch.setattr(payhub.audit, "PARALLEL_MIN", 1)
    with Workers.start(engine, 700, processes=2) as workers:  # type: ignore[union-attr]
        assert compare(engine, workers) == alone
    real = payhub.crosscheck._compare_batch

    def fails_after_20(kind: str, ranges: list[tuple[int, int]], archived: int) -> Any:
        return None if ranges[0][0] > 20 else real(kind, ranges, archived)

    monkeypatch.setattr(payhub.crosscheck, "_compare_batch", fails_after_20)  # forked workers inherit it
    with Workers.start(engine, 700, processes=2) as workers:  # type: ignore[union-attr]
        assert compare(engine, workers) == alone


def test_a_worker_that_died_leaves_its_work_to_the_command(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed before the work starts breaks the pool: the chain and the cross-check are then done by the
    caller, with the same result, instead of failing with the pool's error."""
    with engine.begin() as conn:
        conn.execute(text(TAMPER[0]))
    alone = compare(engine, None)
    assert alone
    monkeypatch.setattr(payhub.audit, "PARALLEL_MIN", 1)
    monkeypatch.setattr(payhub.audit, "RANGE", 50)
    monkeypatch.setattr(payhub.crosscheck, "PARALLEL_IDS", 1)
    with Workers.start(engine, 700, processes=2) as workers:  # type: ignore[union-attr]
        victim = next(iter(workers.pool._processes.values()))  # noqa: SLF001 - the pool names no other way
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        assert compare(engine, workers) == alone


def test_workers_end_when_the_command_is_killed(db_url: str, tmp_path: Path) -> None:
    """Workers die with the process that started them, even by SIGKILL, instead of waiting for work for ever."""
    build(db_url, 70, 7)
    script = (
        "import os\nimport payhub.audit\nfrom payhub.audit import Workers\n"
        "from payhub.db.engine import make_engine\n"
        "payhub.audit.PARALLEL_MIN = 1\n"
        f"workers = Workers.start(make_engine({db_url!r}), 70, processes=2)\n"
        "print(' '.join(str(p) for p in workers.pool._processes), flush=True)\n"
        "os.kill(os.getpid(), 9)\n")
    # (a worker left behind would hold the output pipe open: the run would time out)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    pids = [int(pid) for pid in done.stdout.split()]
    assert done.returncode == -signal.SIGKILL and len(pids) == 2, done.stderr
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_verify_reads_one_snapshot_while_entries_are_appended(make_runtime: Any, db_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL the head, the log and the workers' ranges are read from one exported snapshot: entries
    committed by others after the head was read are not taken for entries added past the head."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's read transaction already sees one state")
    rt = make_runtime("")
    for i in range(40):
        with rt.transaction() as tx:
            tx.audit("event.ingested", "event", i, {"n": i})
    monkeypatch.setattr(payhub.audit, "PARALLEL_MIN", 1)
    monkeypatch.setattr(payhub.audit, "RANGE", 7)
    for parallel in (False, True):
        with rt.engine.connect() as conn:
            snapshot = share_snapshot(conn)
            head = read_head(conn)
            assert snapshot and isinstance(head, tuple)
            for i in range(5):  # committed after the head was read
                with rt.transaction() as tx:
                    tx.audit("event.ingested", "event", 100 + i, {"n": i})
            with (Workers.start(rt.engine, head[0], processes=2, snapshot=snapshot) if parallel else None) \
                    or contextlib.nullcontext() as workers:
                result = verify(conn, workers=workers)
        assert result.ok and result.head_seq == head[0] and result.checked == head[0], result
