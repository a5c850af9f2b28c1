"""The payee registry follows its file: changes are written and audited once, an unchanged file costs nothing."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from payhub.db.schema import audit_log, payees
from payhub.payees import read_payees, sync_payees


def test_changes_are_synced_and_audited_once(make_runtime, tmp_path: Path) -> None:
    file = tmp_path / "payees.csv"
    file.write_text("id,name,country,iban\np1,Partner One,US,\np2,Partner Two,FR,FR7630006000011234567890189\n")
    rt = make_runtime('[payees]\nfile = "payees.csv"\n')
    assert sync_payees(rt) == 2
    assert sync_payees(rt) == 0  # unchanged
    file.write_text(file.read_text().replace("US", "DE"))  # same size, new content
    assert sync_payees(rt) == 1
    file.write_text(file.read_text() + "p3,Partner Three,IT,\n")
    assert sync_payees(rt) == 1
    with rt.engine.connect() as conn:
        assert {i: c for i, c in conn.execute(select(payees.c.id, payees.c.country))} == {
            "p1": "DE", "p2": "FR", "p3": "IT"}
        actions = conn.execute(select(audit_log.c.action, audit_log.c.subject_id, audit_log.c.detail)
                               .where(audit_log.c.subject_type == "payee").order_by(audit_log.c.seq)).all()
    assert [(a, s) for a, s, _d in actions] == [("payee.added", "p1"), ("payee.added", "p2"),
                                                 ("payee.updated", "p1"), ("payee.added", "p3")]
    assert all("FR76" not in d for _a, _s, d in actions)  # account numbers never reach the audit log


def test_a_bad_min_payout_skips_the_line_with_the_reason(tmp_path: Path) -> None:
    file = tmp_path / "payees.csv"
    file.write_text("id,name,currency,min_payout\np1,One,USD,25\np2,Two,USD,-5\np3,Three,USD,1e3\np4,Four,USD,\n")
    rows, problems = read_payees(file)
    assert [(r["id"], r["min_payout"]) for r in rows] == [("p1", "25"), ("p4", None)]
    assert problems == ["payees.csv line 3: min_payout: -5 is negative",
                        "payees.csv line 4: min_payout: amount '1e3' is not a plain decimal number (like 1234.56)"]
