"""``payhub funds list``: each fund's credits, spending, expiry and balance, as an operator or auditor sees it."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import invoke
from test_programs import SOURCE, run

from payhub.api import SourceRecord


def purchase(object_id: str, when: str, amount: str) -> SourceRecord:
    return SourceRecord("Order", object_id, "booked", "purchase", when, "rep1", amount, "USD", "acme")


def claim(object_id: str, when: str, amount: str) -> SourceRecord:
    return SourceRecord("Claim", object_id, "approved", "coop_claim", when, "rep1", amount, "USD", "acme")


def test_funds_list_shows_credits_spending_expiry_and_balance(make_runtime, tmp_path: Path) -> None:
    rt = make_runtime(SOURCE + """
        [programs.coop]
        calculator = "coop"
        percent = "2"
        participation_percent = "50"
        expiry_days = 90
    """)
    run(rt, purchase("o1", "2026-01-10T00:00:00Z", "100000"),  # +2,000.00, lapses 2026-04-10
        purchase("o2", "2026-03-01T00:00:00Z", "10000"),  # +200.00, lapses 2026-05-30
        claim("c1", "2026-02-01T00:00:00Z", "1800"))  # pays 900.00 from the oldest credit
    config = str(tmp_path / "payhub.toml")

    def funds(*args: str) -> list[dict[str, str]]:
        result = invoke("-c", config, "funds", "list", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    [before] = funds("--at", "2026-03-15")
    assert {k: before[k] for k in ("program", "holder", "unit", "credited", "spent", "expired", "balance")} == {
        "program": "coop", "holder": "acme", "unit": "USD", "credited": "2200.00", "spent": "900.00",
        "expired": "0.00", "balance": "1300.00"}
    assert before["next_expiry"].startswith("2026-04-10")
    [after] = funds("--at", "2026-05-01", "--program", "coop", "--holder", "acme")
    assert (after["expired"], after["balance"]) == ("1100.00", "200.00")  # the rest of the first credit lapsed
    assert funds("--holder", "nobody") == []
    bad = invoke("-c", config, "funds", "list", "--at", "yesterday")
    assert bad.exit_code != 0 and "--at" in bad.output


def test_next_expiry_is_the_next_unspent_credit_to_lapse(make_runtime, tmp_path: Path) -> None:
    rt = make_runtime(SOURCE + """
        [programs.coop]
        calculator = "coop"
        percent = "2"
        participation_percent = "50"
        expiry_days = 90
    """)
    run(rt, purchase("o1", "2026-01-10T00:00:00Z", "50000"),  # +1,000.00, lapses 2026-04-10
        purchase("o2", "2026-02-01T00:00:00Z", "25000"),  # +500.00, lapses 2026-05-02
        purchase("o3", "2026-03-01T00:00:00Z", "50000"),  # +1,000.00, lapses 2026-05-30
        claim("c1", "2026-02-15T00:00:00Z", "2000"),  # pays 1,000.00: o1's credit, spent in full
        claim("c2", "2026-03-10T00:00:00Z", "600"))  # pays 300.00 from o2's credit: 200.00 of it left
    config = str(tmp_path / "payhub.toml")

    def fund(at: str) -> dict[str, str | None]:
        result = invoke("-c", config, "funds", "list", "--format", "json", "--at", at)
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.output)
        expiry = row["next_expiry"]
        return {"spent": row["spent"], "expired": row["expired"], "balance": row["balance"],
                "next_expiry": expiry[:10] if expiry else None}

    assert fund("2026-02-10") == {"spent": "0.00", "expired": "0.00", "balance": "1500.00",
                                  "next_expiry": "2026-04-10"}
    # o1's credit is spent, so it is not what lapses next: the rest of o2's partly spent credit is
    assert fund("2026-03-15") == {"spent": "1300.00", "expired": "0.00", "balance": "1200.00",
                                  "next_expiry": "2026-05-02"}
    assert fund("2026-05-10") == {"spent": "1300.00", "expired": "200.00", "balance": "1000.00",
                                  "next_expiry": "2026-05-30"}  # o2's 200.00 lapsed: no longer next
    assert fund("2026-06-01") == {"spent": "1300.00", "expired": "1200.00", "balance": "0.00", "next_expiry": None}
    csv = invoke("-c", config, "funds", "list", "--format", "csv", "--at", "2026-03-15")
    assert csv.exit_code == 0 and "2026-05-02" in csv.output and "2026-04-10" not in csv.output, csv.output


def test_every_amount_of_a_fund_has_its_units_minor_units(make_runtime, tmp_path: Path) -> None:
    """Nothing spent or lapsed yet: every column still shows the unit's minor units (EUR 2, JPY 0, BHD 3, whole
    points), in JSON and CSV alike."""
    rt = make_runtime(SOURCE + """
        [programs.coop]
        calculator = "coop"
        percent = "2"

        [programs.points]
        calculator = "loyalty_points"
        points_per_unit_amount = "1"
        currency = "USD"
    """)
    run(rt, *(SourceRecord("Order", f"o-{currency}", "booked", "purchase", "2026-01-10T00:00:00Z", "rep1", amount,
                           currency, "acme") for currency, amount in
              (("EUR", "500"), ("JPY", "100000"), ("BHD", "100.5"), ("USD", "1500"))))
    config = str(tmp_path / "payhub.toml")
    result = invoke("-c", config, "funds", "list", "--format", "json", "--at", "2026-02-01")
    assert result.exit_code == 0, result.output
    shown = {(row["program"], row["unit"]): [row[k] for k in ("credited", "spent", "expired", "balance")]
             for row in json.loads(result.output)}
    assert shown == {
        ("coop", "BHD"): ["2.010", "0.000", "0.000", "2.010"],
        ("coop", "EUR"): ["10.00", "0.00", "0.00", "10.00"],
        ("coop", "JPY"): ["2000", "0", "0", "2000"],
        ("coop", "USD"): ["30.00", "0.00", "0.00", "30.00"],
        ("points", "points"): ["1500", "0", "0", "1500"],
    }
    csv = invoke("-c", config, "funds", "list", "--format", "csv", "--at", "2026-02-01", "--program", "coop")
    assert csv.exit_code == 0, csv.output
    assert "coop,acme,EUR,10.00,0.00,0.00,10.00," in csv.output, csv.output
