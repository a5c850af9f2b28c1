"""Hundreds of hostile CRM records through the file source and the whole daemon pass, on SQLite and PostgreSQL.

Each record is ingested correctly or quarantined alone with a reason; every good record around it is ingested;
the daemon goes on (see tests/hostile_corpus.py for the records and what must become of each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hostile_corpus import Case, build
from sqlalchemy import select

from payhub.audit import verify
from payhub.db.schema import events, sources
from payhub.worker import Worker

CONFIG = """
    [payees]
    file = "payees.csv"
    [sources.deals]
    plugin = "file"
    path = "deals.csv"
    settle_seconds = 0
    batch_size = {batch}
    [sources.feed]
    plugin = "file"
    path = "deals.jsonl"
    settle_seconds = 0
    batch_size = {batch}
    [programs.pct]
    calculator = "percentage"
    event_types = ["deal_won"]
    percent = "10"
    [rails.csv_export]
    directory = "out"
    [routing]
    default_rail = "csv_export"
"""


def _events(rt: Any) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(events).order_by(events.c.id))]


def _clean(value: Any) -> bool:
    """Text the database and every reader can hold: no NUL, no lone surrogate."""
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _check(case: Case, found: list[dict[str, Any]], source: str) -> str | None:
    """What is wrong with the events stored for ``case``, or None."""
    label = f"{source} {case.marker} ({case.note or case.line[:60]!r})"
    if case.expect == "dup":
        return f"{label}: expected no event of its own, got {len(found)}" if found else None
    if len(found) != 1:
        return f"{label}: expected one event, got {len(found)}"
    row = found[0]
    if case.expect == "ok":
        if row["status"] not in ("ingested", "calculated"):
            return f"{label}: expected ingested, got {row['status']}: {row['reason']}"
        if case.check is not None and not case.check(row):
            return f"{label}: stored wrongly: {({k: row[k] for k in ('object_id', 'payee_id', 'amount')})}"
    elif case.expect == "bad" and (row["status"] != "quarantined" or not row["reason"]):
        return f"{label}: expected quarantined with a reason, got {row['status']}"
    return None


@pytest.mark.parametrize("batch", [1000, 7])
def test_hostile_corpus(make_runtime: Any, tmp_path: Path, batch: int) -> None:
    corpus = build()
    assert len(corpus.csv_cases) + len(corpus.jsonl_cases) >= 200
    (tmp_path / "deals.csv").write_bytes(bytes(corpus.csv))
    (tmp_path / "deals.jsonl").write_bytes(bytes(corpus.jsonl))
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,US\n")
    rt = make_runtime(CONFIG.format(batch=batch))
    worker = Worker(rt)
    worker.start()
    worker.run_once()

    rows = _events(rt)
    for row in rows:
        assert all(_clean(v) for v in row.values()), row["key"]
    problems = []
    # Every good record around a hostile one is read, exactly once, and calculated.
    in_csv = len(corpus.csv_cases)
    for number, sid in enumerate(corpus.sentinels, start=1):
        source = "deals" if number <= in_csv else "feed"
        mine = [r for r in rows if r["key"] == f"{source}:record:{sid}:deal_won"]
        if len(mine) != 1 or mine[0]["status"] != "calculated" or mine[0]["amount"] != "100.00":
            problems.append(f"sentinel {source} {sid}: {[(r['status'], r['reason']) for r in mine]}")
    for source, cases in (("deals", corpus.csv_cases), ("feed", corpus.jsonl_cases)):
        mine = [r for r in rows if r["source"] == source]
        for case in cases:
            if case.expect == "fix":
                continue
            found = [r for r in mine if r["raw"] is not None and case.marker in r["raw"]]
            problem = _check(case, found, source)
            if problem:
                problems.append(problem)
    fixed = [r for r in rows if r["key"] == "deals:record:fix-1:deal_won"]
    if len(fixed) != 1 or fixed[0]["status"] != "calculated" or fixed[0]["amount"] != "12.00":
        problems.append(f"the correction did not replace its bad record: {fixed}")
    assert not problems, "\n".join(problems)

    with rt.engine.connect() as conn:
        states = conn.execute(select(sources.c.name, sources.c.status, sources.c.reason).order_by(sources.c.name))
        assert states.all() == [("deals", "ok", None), ("feed", "ok", None)]
        assert verify(conn).ok
    # Reading the same files again adds nothing.
    before = len(rows)
    worker.run_once()
    worker.stop()
    assert len(_events(rt)) == before
