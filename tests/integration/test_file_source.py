"""The built-in ``file`` source: CSV and JSON Lines that grow or are replaced, read into events exactly once."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from payhub.db import migrate
from payhub.db.engine import make_engine
from payhub.db.schema import audit_log, events, rewards, sources
from payhub.pipeline.ingest import poll
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.worker import Worker

HEADER = "id,type,occurred_at,payee_id,amount,currency\n"


def row(object_id: str, amount: str = "100.00", payee: str = "p1", day: int = 1) -> str:
    return f"{object_id},deal_won,2026-10-{day:02d}T00:00:00Z,{payee},{amount},USD\n"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Any]:
    """``runtime(source_settings, extra="")``: a Runtime on a migrated SQLite file with one source ``deals``."""
    url = f"sqlite:///{tmp_path / 'payhub.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    made: list[Runtime] = []

    def factory(source: str, extra: str = "") -> Runtime:
        config = tmp_path / "payhub.toml"
        config.write_text(f'[database]\nurl = "{url}"\n[sources.deals]\nplugin = "file"\n{source}\n{extra}\n')
        rt = Runtime(load_settings(config))
        rt.load_plugins()
        assert not [s for s in rt.plugins.statuses if s.state != "loaded"]
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        rt.close()


def stored(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(events).order_by(events.c.id))]


def count(rt: Runtime, table: Any) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def age(path: Path, seconds: float = 120) -> None:
    """Make ``path`` look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def rewrite_in_place(path: Path, text: str) -> None:
    """Truncate and rewrite ``path`` keeping its inode, as some export tools do."""
    inode = path.stat().st_ino
    with path.open("r+") as fh:
        fh.truncate(0)
        fh.write(text)
    assert path.stat().st_ino == inode


def replace_atomically(path: Path, text: str) -> None:
    """Write a new file and rename it over ``path`` (a new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ columns


def test_csv_documented_columns_and_attributes(tmp_path: Path, runtime: Any) -> None:
    (tmp_path / "deals.csv").write_text(
        "ID, Type ,transition,object_type,occurred_at,payee_id,partner_id,amount,currency,quantity,product,empty\n"
        "D-1,deal_won,won,opportunity,2026-10-01T12:00:00Z,p1,acme,1000.50,usd,3,widget,\n"
        "D-2,deal_registered,,,2026-07-01T12:00:00,p2,,,,,,\n"
        'D-3,deal_won,,,2026-10-03,p3,,20,EUR,1,"Widget, large\nblue",\n'
    )
    rt = runtime('path = "deals.csv"\nobject_type = "deal"\ntimezone = "Europe/Berlin"\nsettle_seconds = 0')
    assert poll(rt, "deals") == 3
    one, two, three = stored(rt)
    assert one["key"] == "deals:opportunity:D-1:won"
    assert (one["event_type"], one["payee_id"], one["partner_id"]) == ("deal_won", "p1", "acme")
    assert (one["amount"], one["currency"], one["status"]) == ("1000.50", "USD", "ingested")
    assert one["occurred_at"] == datetime(2026, 10, 1, 12, tzinfo=UTC)
    assert json.loads(one["attributes"]) == {"quantity": "3", "product": "widget"}
    # Defaults: the transition is the type, the object type comes from the settings, no amount is fine.
    assert two["key"] == "deals:deal:D-2:deal_registered"
    assert (two["amount"], two["currency"], two["partner_id"], two["status"]) == (None, None, None, "ingested")
    assert two["occurred_at"] == datetime(2026, 7, 1, 10, tzinfo=UTC)  # naive times are in the source's zone
    assert json.loads(two["attributes"]) == {}
    # A quoted field may hold commas and newlines.
    assert json.loads(three["attributes"]) == {"quantity": "1", "product": "Widget, large\nblue"}
    assert three["occurred_at"] == datetime(2026, 10, 3, tzinfo=UTC)


def test_jsonl_documented_keys_and_attributes(tmp_path: Path, runtime: Any) -> None:
    lines = [
        {"id": "D-1", "type": "deal_won", "transition": "won", "object_type": "opportunity",
         "occurred_at": "2026-10-01T12:00:00+02:00", "payee_id": "p1", "partner_id": "acme", "amount": "99.99",
         "currency": "EUR", "quantity": 2, "tags": ["new", "emea"], "region": {"code": "DE"}},
        {"ID": 42, "Type": "referral", "occurred_at": "2026-10-02", "payee_id": 7, "amount": 1500,
         "currency": "JPY", "note": None},
    ]
    (tmp_path / "deals.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    rt = runtime('path = "deals.jsonl"\nsettle_seconds = 0')
    assert poll(rt, "deals") == 2
    one, two = stored(rt)
    assert one["key"] == "deals:opportunity:D-1:won"
    assert (one["payee_id"], one["partner_id"], one["amount"], one["currency"]) == ("p1", "acme", "99.99", "EUR")
    assert one["occurred_at"] == datetime(2026, 10, 1, 10, tzinfo=UTC)
    assert json.loads(one["attributes"]) == {"quantity": 2, "tags": ["new", "emea"], "region": {"code": "DE"}}
    # Keys are case-insensitive; integers are exact and kept as text.
    assert two["key"] == "deals:record:42:referral"
    assert (two["payee_id"], two["amount"], two["currency"], two["status"]) == ("7", "1500", "JPY", "ingested")
    assert json.loads(two["attributes"]) == {}


def test_format_setting_overrides_the_suffix(tmp_path: Path, runtime: Any) -> None:
    (tmp_path / "deals.txt").write_text(json.dumps({"id": "D-1", "type": "deal_won", "occurred_at": "2026-10-01",
                                                    "payee_id": "p1"}) + "\n")
    rt = runtime('path = "deals.txt"\nformat = "jsonl"\nsettle_seconds = 0')
    assert poll(rt, "deals") == 1
    assert stored(rt)[0]["status"] == "ingested"


# ------------------------------------------------------------------------------------------ growing files


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_appended_rows_are_read_on_the_next_poll(tmp_path: Path, runtime: Any, fmt: str) -> None:
    def line(object_id: str) -> str:
        if fmt == "csv":
            return row(object_id)
        return json.dumps({"id": object_id, "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1",
                           "amount": "100.00", "currency": "USD"}) + "\n"

    path = tmp_path / f"deals.{fmt}"
    path.write_text((HEADER if fmt == "csv" else "") + line("D-1") + line("D-2"))
    rt = runtime(f'path = "deals.{fmt}"\nsettle_seconds = 0')
    assert poll(rt, "deals") == 2
    assert poll(rt, "deals") == 0
    with path.open("a") as fh:
        fh.write(line("D-3"))
    assert poll(rt, "deals") == 1
    assert poll(rt, "deals") == 0
    assert [e["object_id"] for e in stored(rt)] == ["D-1", "D-2", "D-3"]
    assert all(e["status"] == "ingested" for e in stored(rt))


def test_batches_of_batch_size_are_read_in_one_poll(tmp_path: Path, runtime: Any) -> None:
    (tmp_path / "deals.csv").write_text(HEADER + "".join(row(f"D-{n}") for n in range(7)))
    rt = runtime('path = "deals.csv"\nsettle_seconds = 0\nbatch_size = 2')
    assert poll(rt, "deals") == 7
    with rt.engine.connect() as conn:
        polled = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "source.polled")).scalars()
        assert [json.loads(d)["records"] for d in polled] == [2, 2, 2, 1]


def test_unterminated_last_line_waits_until_settled(tmp_path: Path, runtime: Any) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(HEADER + row("D-1") + row("D-2") + "D-3,deal_won,2026-10-03T00:00:00Z,p1,5")
    rt = runtime('path = "deals.csv"\nsettle_seconds = 30')
    assert poll(rt, "deals") == 2  # the writer may still be writing D-3's amount
    assert poll(rt, "deals") == 0
    with path.open("a") as fh:
        fh.write("0.00,USD\n")
    assert poll(rt, "deals") == 1
    assert stored(rt)[-1]["amount"] == "50.00"  # the whole line, not the fragment seen before

    with path.open("a") as fh:
        fh.write(row("D-4", amount="70.00").rstrip("\n"))
    assert poll(rt, "deals") == 0  # changed just now: not settled
    age(path)
    assert poll(rt, "deals") == 1  # left alone for settle_seconds: a last line without newline counts
    assert stored(rt)[-1]["amount"] == "70.00"
    # The writer resumes with a newline first: the settled line is not read again.
    with path.open("a") as fh:
        fh.write("\n" + row("D-5"))
    assert poll(rt, "deals") == 1
    assert [(e["object_id"], e["status"]) for e in stored(rt)] == [
        (f"D-{n}", "ingested") for n in range(1, 6)]


def test_missing_file_or_header_is_waited_for(tmp_path: Path, runtime: Any) -> None:
    path = tmp_path / "deals.csv"
    rt = runtime('path = "deals.csv"\nsettle_seconds = 0')
    assert poll(rt, "deals") == 0
    with rt.engine.connect() as conn:
        status, reason = conn.execute(select(sources.c.status, sources.c.reason)).one()
    assert status == "ok" and "does not exist" in reason  # transient: polled again next time
    path.write_text(HEADER.rstrip("\n"))
    assert poll(rt, "deals") == 0
    path.write_text(HEADER + row("D-1"))
    assert poll(rt, "deals") == 1


# ------------------------------------------------------------------------------------------ re-read files


PROGRAM = """
[programs.flat]
calculator = "flat"
amount = "5"
currency = "USD"
"""
ORIGINAL = HEADER + row("D-1") + "broken,row\n" + row("D-2")


@pytest.mark.parametrize("how", ["replaced", "rewritten", "rewritten_new_rows_first"])
def test_reread_file_rewards_only_new_rows(tmp_path: Path, runtime: Any, how: str) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(ORIGINAL)
    rt = runtime('path = "deals.csv"\nsettle_seconds = 0', PROGRAM)
    worker = Worker(rt)
    worker.start()
    try:
        worker.run_once()
        assert count(rt, rewards) == 2 and count(rt, events) == 3
        if how == "replaced":
            replace_atomically(path, ORIGINAL + row("D-3") + row("D-4"))
        elif how == "rewritten":
            rewrite_in_place(path, ORIGINAL + row("D-3") + row("D-4"))
        else:  # the export changed its order: new rows first, so the old offset points into other rows
            rewrite_in_place(path, HEADER + row("D-3") + row("D-4") + row("D-2") + "broken,row\n" + row("D-1"))
        worker.run_once()
        worker.run_once()
    finally:
        worker.stop()
    with rt.engine.connect() as conn:
        paid = conn.execute(select(events.c.object_id).join(rewards, rewards.c.event_id == events.c.id)
                            .order_by(events.c.object_id)).scalars().all()
    assert paid == ["D-1", "D-2", "D-3", "D-4"]  # one reward each, none twice
    assert count(rt, events) == 5  # the malformed row is quarantined once, not once per read
    assert [e["status"] for e in stored(rt)].count("quarantined") == 1


def test_reread_is_audited_as_duplicates(tmp_path: Path, runtime: Any) -> None:
    path = tmp_path / "deals.csv"
    path.write_text(ORIGINAL)
    rt = runtime('path = "deals.csv"\nsettle_seconds = 0')
    poll(rt, "deals")
    replace_atomically(path, ORIGINAL + row("D-3"))
    assert poll(rt, "deals") == 1
    with rt.engine.connect() as conn:
        last = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "source.polled")
                            .order_by(audit_log.c.seq.desc())).scalars().first()
    detail = json.loads(last)
    assert (detail["records"], detail["new"], detail["duplicates"]) == (4, 1, 3)


# ------------------------------------------------------------------------------------------- bad input


def test_malformed_csv_rows_are_quarantined_with_reasons(tmp_path: Path, runtime: Any) -> None:
    (tmp_path / "deals.csv").write_text(
        HEADER
        + row("D-1")
        + "D-2,deal_won,2026-10-01T00:00:00Z,p1,100.00\n"
        + "D-3,deal_won,2026-10-01T00:00:00Z,p1,100.00,USD,surplus\n"
        + "D-4,deal_won,yesterday,p1,100.00,USD\n"
        + "D-5,deal_won,2026-10-01T00:00:00Z,p1,-1,USD\n"
        + "D-6,deal_won,2026-10-01T00:00:00Z,p1,100.00,DOLLARS\n"
        + "D-7,deal_won,2026-10-01T00:00:00Z,,100.00,USD\n"
        + row("D-8")
    )
    rt = runtime('path = "deals.csv"\nsettle_seconds = 0')
    assert poll(rt, "deals") == 8
    got = stored(rt)
    assert [(e["object_id"], e["status"]) for e in got if e["status"] == "ingested"] == [
        ("D-1", "ingested"), ("D-8", "ingested")]
    reasons = {e["raw"].split(",")[0]: e["reason"] for e in got if e["status"] == "quarantined"}
    assert reasons["D-2"] == "deals.csv line 3: row has 5 columns, the header has 6"
    assert reasons["D-3"] == "deals.csv line 4: row has 7 columns, the header has 6"
    assert reasons["D-4"].startswith("deals.csv line 5: ") and "'yesterday' is not ISO 8601" in reasons["D-4"]
    assert "negative" in reasons["D-5"]
    assert reasons["D-6"].startswith("deals.csv line 7: ") and "DOLLARS" in reasons["D-6"]
    assert reasons["D-7"] == "deals.csv line 8: payee_id is missing"
    assert all(e["raw"].startswith(e["raw"].split(",")[0] + ",") for e in got)
    with rt.engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "event.quarantined")
                               .order_by(audit_log.c.seq)).scalars().all()
    assert [json.loads(d)["reason"] for d in audited] == [reasons[f"D-{n}"] for n in range(2, 8)]
    assert poll(rt, "deals") == 0


def test_malformed_jsonl_lines_are_quarantined_with_reasons(tmp_path: Path, runtime: Any) -> None:
    good = {"id": "D-1", "type": "deal_won", "occurred_at": "2026-10-01", "payee_id": "p1", "amount": "10.00",
            "currency": "USD"}
    (tmp_path / "deals.jsonl").write_text(
        json.dumps(good) + "\n"
        + '{"id": "D-2", "type": "deal_won",\n'
        + '["D-3", "deal_won"]\n'
        + json.dumps({**good, "id": "D-4", "amount": 10.1}) + "\n"
        + json.dumps({**good, "id": None}) + "\n"
        + json.dumps({**good, "id": "D-6", "type": ""}) + "\n"
        + json.dumps({**good, "id": "D-7"}) + "\n"
    )
    rt = runtime('path = "deals.jsonl"\nsettle_seconds = 0')
    assert poll(rt, "deals") == 7
    got = stored(rt)
    assert [e["object_id"] for e in got if e["status"] == "ingested"] == ["D-1", "D-7"]
    quarantined = [e for e in got if e["status"] == "quarantined"]
    assert [e["raw"] for e in quarantined][:2] == ['{"id": "D-2", "type": "deal_won",', '["D-3", "deal_won"]']
    reasons = [e["reason"] for e in quarantined]
    assert reasons[0].startswith("deals.jsonl line 2: invalid JSON: ")
    assert reasons[1] == "deals.jsonl line 3: invalid JSON: not a JSON object"
    assert reasons[2] == "deals.jsonl line 4: amount is a JSON float; write it as a string to keep it exact"
    assert reasons[3] == "deals.jsonl line 5: id is missing"
    assert reasons[4] == "deals.jsonl line 6: type is missing"
    assert poll(rt, "deals") == 0
