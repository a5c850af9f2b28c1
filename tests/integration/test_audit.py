"""Invariant 5 at the library level: the hash chain detects any edit, deletion, insertion or reordering."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, update

from payhub.audit import GENESIS, Entry, entry_hash, verify
from payhub.db.engine import make_engine
from payhub.db.migrate import upgrade
from payhub.db.schema import audit_head, audit_log
from payhub.store.audit import AuditWriter


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def append(engine: Engine, n: int, writer: AuditWriter | None = None) -> list[dict[str, Any]]:
    writer = writer or AuditWriter(actor="payhub", origin="test@host:1")
    with engine.begin() as conn:
        return writer.append(conn, [
            Entry("payout.sent", "payout", i, {"amount": Decimal("10.50"), "i": i}) for i in range(1, n + 1)])


def check(engine: Engine) -> Any:
    with engine.connect() as conn:
        return verify(conn)


def entries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(audit_log).order_by(audit_log.c.seq)).mappings()]


def test_empty_log_verifies(engine: Engine) -> None:
    result = check(engine)
    assert (result.ok, result.checked, result.head_seq, result.head_hash) == (True, 0, 0, GENESIS)


def test_append_chains_entries(engine: Engine) -> None:
    first = append(engine, 2)
    writer = AuditWriter(actor="payhub", origin="cli@host:2")
    with engine.begin() as conn:
        second = writer.append(conn, [Entry("reward.held", "reward", "r-9", {"reason": "x"}, outcome="held",
                                            actor="user:alice")])
        assert writer.append(conn, []) == []
    rows = entries(engine)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == GENESIS
    assert rows[1]["prev_hash"] == rows[0]["hash"] and rows[2]["prev_hash"] == rows[1]["hash"]
    assert [r["hash"] for r in rows] == [r["hash"] for r in first + second]
    assert all(entry_hash(r) == r["hash"] for r in rows)
    third = rows[2]
    assert (third["actor"], third["action"], third["subject_type"], third["subject_id"], third["outcome"],
            third["origin"]) == ("user:alice", "reward.held", "reward", "r-9", "held", "cli@host:2")
    assert json.loads(rows[0]["detail"]) == {"amount": "10.50", "i": 1}
    assert third["at"].endswith("Z")
    result = check(engine)
    assert (result.ok, result.checked, result.head_seq, result.head_hash) == (True, 3, 3, rows[2]["hash"])


def test_rolled_back_transaction_writes_no_entry(engine: Engine) -> None:
    append(engine, 2)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        AuditWriter("payhub", "test").append(conn, [Entry("payout.sent", "payout", 9)])
        raise RuntimeError("the change failed")
    assert [r["seq"] for r in entries(engine)] == [1, 2]
    assert check(engine).ok
    append(engine, 1)
    assert [r["seq"] for r in entries(engine)] == [1, 2, 3]
    assert check(engine).ok


def assert_bad(engine: Engine, first_bad: int, words: str) -> None:
    result = check(engine)
    assert not result.ok
    assert result.first_bad == first_bad, result.problem
    assert words in result.problem


def test_edited_field_is_detected(engine: Engine) -> None:
    rows = append(engine, 5)
    for column in ("at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail"):
        forged = json.dumps({"amount": "1000000.00", "i": 3}) if column == "detail" else rows[2][column] + "x"
        with engine.begin() as conn:
            conn.execute(update(audit_log).where(audit_log.c.seq == 3).values({column: forged}))
        assert_bad(engine, 3, "entry 3 was altered")
        with engine.begin() as conn:  # put it back: the chain verifies again
            conn.execute(update(audit_log).where(audit_log.c.seq == 3).values({column: rows[2][column]}))
        assert check(engine).ok, column


def test_edited_entry_with_recomputed_hash_breaks_the_next_link(engine: Engine) -> None:
    append(engine, 5)
    row = entries(engine)[1]
    row["outcome"] = "failed"
    row["hash"] = entry_hash(row)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(outcome="failed", hash=row["hash"]))
    assert_bad(engine, 3, "entry 3 does not link to entry 2")


def test_edited_last_entry_with_recomputed_hash_mismatches_the_head(engine: Engine) -> None:
    append(engine, 5)
    row = entries(engine)[4]
    row["actor"] = "someone-else"
    row["hash"] = entry_hash(row)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 5).values(actor=row["actor"], hash=row["hash"]))
    assert_bad(engine, 5, "head")


def test_deleted_middle_entry_is_detected(engine: Engine) -> None:
    append(engine, 5)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 3))
    assert_bad(engine, 3, "entry 3 is missing")


def test_deleted_first_entry_is_detected(engine: Engine) -> None:
    append(engine, 5)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 1))
    assert_bad(engine, 1, "entry 1 is missing")


def test_deleted_last_entry_is_detected(engine: Engine) -> None:
    append(engine, 5)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
    assert_bad(engine, 5, "the log ends at entry 4 but its head records entry 5")


def test_deleted_tail_with_head_rewound_is_not_self_evident_but_head_changes(engine: Engine) -> None:
    """Rewinding the head too leaves a consistent chain: only a head anchored elsewhere catches it."""
    append(engine, 5)
    anchored = check(engine).head_hash
    rows = entries(engine)
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
        conn.execute(update(audit_head).values(seq=4, hash=rows[3]["hash"]))
    result = check(engine)
    assert result.ok
    assert result.head_hash != anchored


def _renumber_from(engine: Engine, seq: int, shift: int) -> None:
    """Move entries ``seq``.. by ``shift`` (highest first, so the primary key never collides)."""
    with engine.begin() as conn:
        numbers = conn.execute(select(audit_log.c.seq).where(audit_log.c.seq >= seq)
                               .order_by(audit_log.c.seq.desc())).scalars().all()
        for n in numbers:
            conn.execute(update(audit_log).where(audit_log.c.seq == n).values(seq=n + shift))


def test_inserted_forged_entry_is_detected(engine: Engine) -> None:
    append(engine, 5)
    rows = entries(engine)
    _renumber_from(engine, 3, 1)
    forged = {**rows[1], "seq": 3, "action": "payout.paid", "subject_id": "999", "prev_hash": rows[1]["hash"]}
    forged["hash"] = entry_hash(forged)  # a well-formed entry, linked to its predecessor
    with engine.begin() as conn:
        conn.execute(audit_log.insert().values(forged))
        conn.execute(update(audit_head).values(seq=6))
    assert_bad(engine, 4, "entry 4 does not link to entry 3")


def test_forged_entry_appended_past_the_head_is_detected(engine: Engine) -> None:
    append(engine, 5)
    last = entries(engine)[4]
    forged = {**last, "seq": 6, "action": "payout.paid", "prev_hash": last["hash"]}
    forged["hash"] = entry_hash(forged)
    with engine.begin() as conn:
        conn.execute(audit_log.insert().values(forged))
    assert_bad(engine, 6, "head records entry 5")


def test_forged_entry_with_bad_hash_is_detected(engine: Engine) -> None:
    append(engine, 5)
    rows = entries(engine)
    _renumber_from(engine, 2, 1)
    forged = {**rows[0], "seq": 2, "prev_hash": rows[0]["hash"], "hash": "f" * 64}
    with engine.begin() as conn:
        conn.execute(audit_log.insert().values(forged))
    assert_bad(engine, 2, "entry 2 was altered")


def test_swapped_entries_are_detected(engine: Engine) -> None:
    append(engine, 5)
    rows = entries(engine)
    content = [c for c in rows[0] if c != "seq"]
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values({c: rows[3][c] for c in content}))
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values({c: rows[1][c] for c in content}))
    assert_bad(engine, 2, "entry 2 does not link to entry 1")


def test_swapped_details_are_detected(engine: Engine) -> None:
    append(engine, 5)
    rows = entries(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(detail=rows[3]["detail"]))
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(detail=rows[1]["detail"]))
    assert_bad(engine, 2, "entry 2 was altered")


def test_verify_reports_progress(engine: Engine) -> None:
    append(engine, 4)
    seen: list[int] = []
    with engine.connect() as conn:
        assert verify(conn, progress=seen.append).ok
    assert sum(seen) == 4 and all(seen)  # the entries read, a chunk at a time
