"""Concurrent start-up: PostgreSQL replicas started at the same instant all start, and each change is made once.

Each round, REPLICAS threads, each with its own Runtime (its own engine and connections, as separate processes
would have), wait at a barrier and then start exactly as ``payhub run`` does: ``Worker.start`` (schema check,
program versions, failed sources reset) and the first pass's payee sync. Between rounds the payee file gains new
payees and changes some existing ones, program ``pct`` gets new parameters (the same on every replica), program
``bonus`` gets two different new parameter sets (half the replicas each: a race for the next version number), and
the source is marked failed. Every replica must start; every change must be written and audited exactly once, by
one replica; replicas with the same parameters must use the same version row; the audit chain must verify.

``PAYHUB_TEST_STARTUP_ROUNDS`` (default 20) and ``PAYHUB_TEST_STARTUP_REPLICAS`` (default 4) make longer runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import migrated
from sqlalchemy import create_engine, insert, select, update

from payhub import audit
from payhub.db.schema import audit_log, payees, program_versions, sources
from payhub.payees import sync_payees
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.worker import Worker

ROUNDS = int(os.environ.get("PAYHUB_TEST_STARTUP_ROUNDS", "20"))
REPLICAS = int(os.environ.get("PAYHUB_TEST_STARTUP_REPLICAS", "4"))
NEW_PAYEES = 25  # per round
CHANGED_PAYEES = 5  # existing payees whose name changes, per round

postgres_only = pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                        indirect=True)


def _config(directory: Path, db_url: str, round_no: int, group: int) -> Path:
    """Settings of one group of replicas in one round (the bonus amount differs between the groups)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "payhub.toml"
    path.write_text(f"""\
[database]
url = "{db_url}"

[payees]
file = "{directory.parent / 'payees.csv'}"

[programs.pct]
calculator = "percentage"
percent = "{round_no + 1}"

[programs.bonus]
calculator = "flat"
amount = "{round_no}.{group}0"
currency = "USD"
""")
    return path


def _renamed_in(i: int) -> int:
    """The round in which payee number ``i`` is renamed (the last CHANGED_PAYEES of each round's new payees are
    renamed in the next round), or 0 for never."""
    if (i + CHANGED_PAYEES) % NEW_PAYEES < CHANGED_PAYEES:
        return (i + CHANGED_PAYEES) // NEW_PAYEES
    return 0


def _payee_file(path: Path, round_no: int) -> tuple[set[str], set[str]]:
    """Write the payee file of ``round_no``; return (ids new this round, ids changed this round)."""
    total = NEW_PAYEES * (round_no + 1)
    lines = ["id,name,country,currency,iban"]
    for i in range(total):
        renamed = _renamed_in(i)
        name = f"Partner {i} (renamed in round {renamed})" if 0 < renamed <= round_no else f"Partner {i}"
        lines.append(f"p{i:05d},{name},DE,EUR,DE89370400440532013{i:03d}")
    path.write_text("\n".join(lines) + "\n")
    new = {f"p{i:05d}" for i in range(NEW_PAYEES * round_no, total)}
    changed = {f"p{i:05d}" for i in range(total) if round_no and _renamed_in(i) == round_no}
    assert len(changed) == (CHANGED_PAYEES if round_no else 0)
    return new, changed


def _start_replica(config: Path, barrier: threading.Barrier, results: dict[int, Any], index: int) -> None:
    rt = Runtime(load_settings(config))
    try:
        barrier.wait(timeout=30)
        worker = Worker(rt)
        worker.start()
        results[index] = (worker.versions, sync_payees(rt))
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        results[index] = exc
    finally:
        rt.close()


@postgres_only
def test_replicas_starting_together(db_url: str, tmp_path: Path) -> None:
    migrated(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(sources).values(name="crm", status="failed", reason="earlier run"))
    payee_file = tmp_path / "payees.csv"
    started = time.monotonic()
    try:
        for round_no in range(ROUNDS):
            new, changed = _payee_file(payee_file, round_no)
            configs = [_config(tmp_path / f"r{round_no}g{group}", db_url, round_no, group) for group in (1, 2)]
            with engine.begin() as conn:
                conn.execute(update(sources).where(sources.c.name == "crm").values(status="failed"))
                last_seq = conn.execute(select(audit_log.c.seq).order_by(audit_log.c.seq.desc()).limit(1)
                                        ).scalar() or 0
            barrier = threading.Barrier(REPLICAS)
            results: dict[int, Any] = {}
            threads = [threading.Thread(target=_start_replica, args=(configs[i % 2], barrier, results, i))
                       for i in range(REPLICAS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            failures = {i: r for i, r in results.items() if isinstance(r, BaseException)}
            assert not failures, f"round {round_no}: replicas failed to start: {failures}"
            assert len(results) == REPLICAS

            # Same parameters, same version row; the two bonus parameter sets, two versions.
            pct_ids = {versions["pct"] for versions, _n in results.values()}
            bonus_ids = {i % 2: results[i][0]["bonus"] for i in range(REPLICAS)}
            assert len(pct_ids) == 1
            assert all(results[i][0]["bonus"] == bonus_ids[i % 2] for i in range(REPLICAS))
            assert bonus_ids[0] != bonus_ids[1]
            # The replicas' own counts of payees they changed add up to the real changes: none counted twice.
            assert sum(n for _versions, n in results.values()) == len(new) + len(changed)

            with engine.connect() as conn:
                entries = conn.execute(select(audit_log.c.action, audit_log.c.subject_id, audit_log.c.detail)
                                       .where(audit_log.c.seq > last_seq)).all()
                rows = conn.execute(select(program_versions.c.id, program_versions.c.program,
                                           program_versions.c.version)
                                    .where(program_versions.c.id.in_([*pct_ids, *bonus_ids.values()]))).all()
                stored = dict(conn.execute(select(payees.c.id, payees.c.name)
                                           .where(payees.c.id.in_(sorted(new | changed)))).all())
                status = conn.execute(select(sources.c.status).where(sources.c.name == "crm")).scalar_one()
            once = Counter((action, subject, json.loads(detail).get("version")) for action, subject, detail in entries)
            assert {k: n for k, n in once.items() if n > 1} == {}, f"round {round_no}: audited twice"
            actions = Counter((action, subject) for action, subject, _detail in entries)
            assert {s for (a, s) in actions if a == "payee.added"} == new
            assert {s for (a, s) in actions if a == "payee.updated"} == changed
            assert all(name.startswith("Partner ") for name in stored.values()) and set(stored) == new | changed
            assert all("renamed" in stored[p] for p in changed)
            assert sorted(s for (a, s, _v) in once if a == "program.version_created") == ["bonus", "bonus", "pct"]
            assert [s for (a, s) in actions if a == "source.reset"] == ["crm"] and status == "ok"
            numbers = {program: sorted(v for _id, p, v in rows if p == program) for program in ("pct", "bonus")}
            assert numbers == {"pct": [round_no + 1], "bonus": [2 * round_no + 1, 2 * round_no + 2]}, numbers

        with engine.connect() as conn:
            result = audit.verify(conn)
            assert result.ok, result
            total = Counter(conn.execute(select(audit_log.c.action)).scalars())
    finally:
        engine.dispose()
    assert total["payee.added"] == NEW_PAYEES * ROUNDS
    assert total["program.version_created"] == 3 * ROUNDS
    print(f"\n{ROUNDS} rounds of {REPLICAS} replicas starting together in {time.monotonic() - started:.1f}s; "
          f"{total['payee.added']} payee.added, {total['payee.updated']} payee.updated, "
          f"{total['program.version_created']} program versions, {total['source.reset']} source resets")
