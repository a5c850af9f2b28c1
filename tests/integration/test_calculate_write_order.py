"""The calculate stage writes the volume totals last in its transaction (before the audit entries, which every
transaction appends at its end): two replicas calculating events of the same partners and month wait on those rows
until the first one commits, so nothing else may be written while they are held."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from payhub.api import SourceRecord
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll


def test_volume_totals_are_the_last_rows_written_before_the_audit(make_runtime: Any, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\n")
    rt = make_runtime("""
        [payees]
        file = "payees.csv"
        [sources.s]
        plugin = "fake"
        [programs.full]
        calculator = "percentage"
        percent = "10"
    """)
    rt.plugins.sources["s"].push(*(
        SourceRecord("Opportunity", f"o{n}", "won", "deal_won", "2026-10-01T00:00:00Z", f"p{n % 2 + 1}", "1000.00",
                     "EUR", partner_id="acme") for n in range(6)))
    poll(rt, "s")
    versions = register_program_versions(rt)
    writes: list[str] = []

    @event.listens_for(rt.engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        words = statement.split()
        verb = words[0].upper()
        if verb in ("INSERT", "UPDATE"):
            writes.append(words[2] if verb == "INSERT" else words[1])
        elif verb == "WITH":
            writes.append("(with)")

    assert calculate_batch(rt, versions) == 6
    event.remove(rt.engine, "before_cursor_execute", record)
    assert {"rewards", "events", "calculations", "volume_totals", "audit_log"} <= set(writes), writes
    tail = writes[writes.index("volume_totals"):]
    assert set(tail) == {"volume_totals", "audit_log", "audit_head"}, writes  # nothing else after them
    assert tail[-2:] == ["audit_log", "audit_head"], writes
