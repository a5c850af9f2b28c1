"""The cross-check of payouts and rewards against the chain gives the same differences, in the same order, when worker
processes compare its ranges, also when a worker cannot finish a batch (those ranges are compared by the caller)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

import payhub.audit
import payhub.crosscheck
from bench.audit_speed import build
from payhub.audit import Workers, verify
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
