"""The whole flow once, on SQLite and PostgreSQL: file source → calculators → csv_export rail."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from payhub.audit import verify
from payhub.db.schema import events, payouts, rewards
from payhub.worker import Worker


def test_quickstart_flow(make_runtime, tmp_path: Path) -> None:
    (tmp_path / "deals.csv").write_text(
        "id,type,occurred_at,payee_id,amount,currency\n"
        "1,deal_won,2026-10-01T00:00:00Z,p1,1000.00,USD\n"
        "2,deal_won,2026-10-02T00:00:00Z,p1,500.00,USD\n"
        "3,deal_won,2026-10-02T00:00:00Z,p2,10.00,XXX\n"
    )
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,US\n")
    rt = make_runtime("""
        [payees]
        file = "payees.csv"
        [sources.deals]
        plugin = "file"
        path = "deals.csv"
        [programs.pct]
        calculator = "percentage"
        percent = "10"
        [rails.csv_export]
        directory = "out"
        [routing]
        default_rail = "csv_export"
    """)
    worker = Worker(rt)
    worker.start()
    worker.run_once()
    worker.stop()
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 3
        assert conn.execute(select(rewards.c.amount_minor).order_by(rewards.c.id)).scalars().all() == [10000, 5000]
        assert conn.execute(select(payouts.c.status, payouts.c.amount_minor)).all() == [("sent", 15000)]
        assert verify(conn).ok
    assert len(list((tmp_path / "out").glob("payouts-*.csv"))) == 1
