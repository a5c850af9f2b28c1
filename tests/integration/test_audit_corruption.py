"""Every shape of damage to the audit log is a clean ``audit verify`` failure (exit 1, a message), never a traceback.

The site is a real pipeline run (see test_insider.py); each case damages the log or its head with SQL, as someone
with write access to the database could, and runs ``payhub audit verify`` in-process with exceptions propagating.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update
from test_insider import BASE, Site, rewrite_from

import payhub.audit
import payhub.crosscheck
from payhub import signing
from payhub.audit import entry_hash
from payhub.db.schema import audit_head, audit_log
from payhub.runtime import Runtime
from payhub.testing import FakeRail

pytestmark = pytest.mark.slow  # a real pipeline run per database, then a verify per case


@pytest.fixture
def site(make_runtime: Callable[[str], Runtime], tmp_path: Path) -> Site:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\n")
    pem, _key = signing.new_private_key()
    (tmp_path / "checkpoint.pem").write_text(pem)
    rt = make_runtime(BASE)
    rail = rt.plugins.rails["r"]
    assert isinstance(rail, FakeRail)
    s = Site(rt, rail, tmp_path, False)
    s.schedule(("p1", "10.00"), ("p2", "20.00"))
    s.drain()
    return s


def sqlite_only(site: Site) -> None:
    if site.rt.engine.dialect.name != "sqlite":
        pytest.skip("the database's types refuse this value outside SQLite")


def _renumber(site: Site, start: int, shift: int) -> None:
    numbers = sorted((r["seq"] for r in site.entries() if r["seq"] >= start), reverse=True)
    with site.rt.engine.begin() as conn:
        for seq in numbers:
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(seq=seq + shift))


def edited(site: Site) -> str:
    site.sql(update(audit_log).where(audit_log.c.seq == 5).values(detail='{"amount":"999999.00"}'))
    return "at entry 5: entry 5 was altered"


def deleted(site: Site) -> str:
    site.sql(delete(audit_log).where(audit_log.c.seq == 4))
    return "at entry 4: entry 4 is missing (the next entry is 5)"


def inserted_past_the_head(site: Site) -> str:
    last = site.entries()[-1]
    forged = {**last, "seq": last["seq"] + 1, "action": "payout.paid", "prev_hash": last["hash"]}
    forged["hash"] = entry_hash(forged)
    site.sql(audit_log.insert().values(forged))
    return (f"at entry {last['seq'] + 1}: the log ends at entry {last['seq'] + 1} but its head records entry "
            f"{last['seq']} (entries past the head were added outside payhub")


def inserted_in_the_middle(site: Site) -> str:
    rows = site.entries()
    _renumber(site, 3, 1)
    forged = {**rows[1], "seq": 3, "action": "payout.paid", "prev_hash": rows[1]["hash"]}
    forged["hash"] = entry_hash(forged)
    site.sql(audit_log.insert().values(forged))
    site.sql(update(audit_head).values(seq=len(rows) + 1))
    return "at entry 4: entry 4 does not link to entry 3"


def reordered(site: Site) -> str:
    site.sql(update(audit_log).where(audit_log.c.seq == 6).values(seq=-1))
    site.sql(update(audit_log).where(audit_log.c.seq == 8).values(seq=6))
    site.sql(update(audit_log).where(audit_log.c.seq == -1).values(seq=8))
    return "at entry 6: entry 6 does not link to entry 5"


def seq_gap(site: Site) -> str:
    _renumber(site, 5, 10)
    return "at entry 5: entry 5 is missing (the next entry is 15)"


def non_integer_head(site: Site) -> str:
    sqlite_only(site)
    site.sql(text("UPDATE audit_head SET seq = 'twelve'"))
    return "the audit head's sequence number 'twelve' is not a whole number"


def non_text_fields(site: Site) -> str:
    sqlite_only(site)
    site.sql(text("UPDATE audit_log SET at = 12345, subject_id = x'00ff' WHERE seq = 3"))
    return "at entry 3: entry 3 was altered"


def null_hash(site: Site) -> str:
    with site.rt.engine.begin() as conn:
        if conn.dialect.name == "sqlite":  # a copy of the table without its NOT NULL constraints
            conn.execute(text("CREATE TABLE audit_copy AS SELECT * FROM audit_log"))
            conn.execute(text("DROP TABLE audit_log"))
            conn.execute(text("ALTER TABLE audit_copy RENAME TO audit_log"))
        else:
            conn.execute(text("ALTER TABLE audit_log ALTER COLUMN hash DROP NOT NULL"))
        conn.execute(text("UPDATE audit_log SET hash = NULL WHERE seq = 7"))
    return "at entry 7: entry 7 was altered"


def malformed_detail(site: Site) -> str:
    site.sql(update(audit_log).where(audit_log.c.seq == 5).values(detail="{not json"))
    return "at entry 5: entry 5 was altered"


def malformed_detail_rehashed(site: Site) -> str:
    created = next(e for e in site.entries() if e["action"] == "payout.created")
    rewrite_from(site, created["seq"], {"detail": "{not json"})
    return f"payout {created['subject_id']}: audit entry {created['seq']} (payout.created) holds a detail that is " \
           "not a JSON object"


def detail_not_an_object(site: Site) -> str:
    calculated = next(e for e in site.entries() if e["action"] == "reward.calculated")
    rewrite_from(site, calculated["seq"], {"detail": json.dumps(["amount", "10.00"])})
    return f"reward {calculated['subject_id']}: audit entry {calculated['seq']} (reward.calculated) holds a detail"


def head_row_deleted(site: Site) -> str:
    site.sql(delete(audit_head))
    return "audit log FAILED verification: the audit head row is missing (deleted outside payhub)"


def head_table_dropped(site: Site) -> str:
    site.sql(text("DROP TABLE audit_head"))
    return "audit log FAILED verification: the audit head cannot be read"


def head_doubled(site: Site) -> str:
    site.sql(audit_head.insert().values(id=2, seq=1, hash="0" * 64))
    return "the audit head table holds 2 row(s)"


def head_hash_damaged(site: Site) -> str:
    site.sql(update(audit_head).values(hash="not a hash"))
    return "the audit head's hash 'not a hash' is not a SHA-256 hex digest"


def head_moved_past_the_end(site: Site) -> str:
    last = site.entries()[-1]["seq"]
    site.sql(update(audit_head).values(seq=last + 5))
    return f"the log ends at entry {last} but its head records entry {last + 5}"


SHAPES = [edited, deleted, inserted_past_the_head, inserted_in_the_middle, reordered, seq_gap, non_integer_head,
          non_text_fields, null_hash, malformed_detail, malformed_detail_rehashed, detail_not_an_object,
          head_row_deleted, head_table_dropped, head_doubled, head_hash_damaged, head_moved_past_the_end]


HEADLESS = [non_integer_head, head_row_deleted, head_table_dropped, head_doubled, head_hash_damaged]
"""Damage that leaves no usable head: the log's length is unknown, so no workers are started."""


@pytest.mark.parametrize("damage", SHAPES, ids=[f.__name__ for f in SHAPES])
def test_damage_is_a_clean_verify_failure(site: Site, damage: Callable[[Site], str]) -> None:
    expected = damage(site)
    result = site.verify()  # exceptions propagate: a traceback fails the test
    assert result.exit_code == 1, result.output
    assert "audit log FAILED verification" in result.stdout
    assert expected in result.stdout, result.stdout
    assert "Traceback" not in result.output


def test_an_entry_past_the_head_is_reported_even_though_the_read_cannot_be_recorded(site: Site) -> None:
    inserted_past_the_head(site)
    result = site.verify()
    assert result.exit_code == 1
    assert "this verification could not be recorded in the audit log" in result.stderr


@pytest.mark.parametrize("damage", SHAPES, ids=[f.__name__ for f in SHAPES])
def test_worker_processes_name_the_damage_the_same_way(site: Site, damage: Callable[[Site], str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The same damage, with the log checked in ranges of 3 entries and the tables in batches by worker processes."""
    monkeypatch.setattr(payhub.audit, "PARALLEL_MIN", 1)
    monkeypatch.setattr(payhub.audit, "RANGE", 3)
    monkeypatch.setattr(payhub.crosscheck, "PARALLEL_IDS", 1)
    started: list[object] = []
    real = payhub.audit.Workers.start

    def start(*args: object, **kwargs: object) -> object:
        started.append(workers := real(*args, **kwargs))  # type: ignore[arg-type]
        return workers

    monkeypatch.setattr(payhub.audit.Workers, "start", start)
    expected = damage(site)
    result = site.verify()
    assert result.exit_code == 1, result.output
    assert expected in result.stdout, result.stdout
    assert "Traceback" not in result.output
    assert started and (started[0] is not None) == (damage not in HEADLESS)
