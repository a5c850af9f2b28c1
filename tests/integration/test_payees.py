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


def test_compliance_columns_are_read_checked_and_sealed(make_runtime, tmp_path: Path) -> None:
    import json

    from payhub.api import Payee
    from payhub.compliance import personal
    from payhub.payees import load_payees

    file = tmp_path / "payees.csv"
    file.write_text(
        "id,name,country,tax_form,form_date,tin,flags,aliases,iban\n"
        "u1,Ann Lee,US,w9,2026-01-15,536-90-4399,government_official; hcp ;,A. Lee;Annie Lee,\n"
        "u2,Bo Ray,US,W-9,,000-00-0000,,,\n"
        "d1,Dora,DE,W-8BEN,2023-05-01,DE136695976,,,DE89370400440532013000\n"
        "x1,Bad Form,US,1099,,,,,\n"
        "x2,Bad Date,US,W-9,15/01/2026,,,,\n")
    rows, problems = read_payees(file)
    assert problems == ["payees.csv line 5: tax_form: '1099' is not one of W-9, W-8BEN, W-8BEN-E or none",
                        "payees.csv line 6: form_date: '15/01/2026' is not a date (YYYY-MM-DD)"]
    rt = make_runtime('[payees]\nfile = "payees.csv"\n')
    assert sync_payees(rt) == 3
    with rt.engine.connect() as conn:
        stored = {r.id: r for r in conn.execute(select(payees))}
        audit = " ".join(conn.execute(select(audit_log.c.detail)).scalars())
        found = load_payees(conn, ["u1", "d1"])
        tin = personal.reveal(conn, stored["u1"].tin_sealed)
    assert (stored["u1"].tax_form, str(stored["u1"].form_signed_on), stored["u1"].tin_kind,
            stored["u1"].tin_status) == ("W-9", "2026-01-15", "ssn", "valid")
    assert (stored["u2"].tin_kind, stored["u2"].tin_status) == ("us_tin", "invalid")
    assert (stored["d1"].tax_form, stored["d1"].tin_kind, stored["d1"].tin_status) == ("W-8BEN", "vat", "valid")
    assert json.loads(stored["u1"].flags) == ["government_official", "hcp"]
    assert found["u1"] == Payee(id="u1", name="Ann Lee", country="US", details={}, aliases=("A. Lee", "Annie Lee"),
                                flags=frozenset({"government_official", "hcp"}))
    assert found["d1"].details == {"iban": "DE89370400440532013000"}  # the compliance columns are not details
    assert tin == "536-90-4399"
    for secret in ("536-90-4399", "536904399", "DE136695976", "Ann Lee", "Annie Lee", "Dora"):
        assert secret not in audit  # the TIN never, names only sealed
        assert all(secret not in str(value) for value in stored["u1"]._mapping.values()
                   if value is not None and secret.startswith("5"))
    # A new TIN alone is a change (the fingerprint covers it without storing it readably).
    file.write_text(file.read_text().replace("536-90-4399", "04-2103594"))
    assert sync_payees(rt) == 1
    with rt.engine.connect() as conn:
        row = conn.execute(select(payees).where(payees.c.id == "u1")).one()
        assert (row.tin_kind, personal.reveal(conn, row.tin_sealed)) == ("ein", "04-2103594")


def test_ids_follow_the_rule_of_event_ids(tmp_path: Path) -> None:
    """Invisible characters leave an id (so ``p1`` + zero-width space is ``p1``); control characters refuse it."""
    file = tmp_path / "payees.csv"
    file.write_text("id,name\np1\u200b,One\n\ufeffp2 ,Two\np\x1b3,Three\np\u202e4,Four\np1,One again\n",
                    encoding="utf-8")
    rows, problems = read_payees(file)
    assert [r["id"] for r in rows] == ["p1", "p2"]
    assert problems == [
        "payees.csv line 4: id 'p\\x1b3' holds U+001B, a control, format or surrogate character",
        "payees.csv line 5: id 'p\\u202e4' holds U+202E, a control, format or surrogate character",
        "payees.csv line 6: payee 'p1' appears twice"]
