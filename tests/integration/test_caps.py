"""Program caps (the core key ``caps``): per payee, partner and program, per period, applied in the listed order."""

from __future__ import annotations

from test_programs import SOURCE, paid, record, results, run


def test_caps_cut_in_order_and_record_the_cut(make_runtime) -> None:
    """100 USD a deal, at most 250 per rep a month and 400 per partner for ever, in batches of two events."""
    rt = make_runtime(SOURCE + """
        [programs.p]
        calculator = "flat"
        amount = "100"
        currency = "USD"
        caps = [{per = "payee", period = "month", amount = "250", currency = "USD"},
                {per = "partner", amount = "400", currency = "USD"}]
    """)
    run(rt,
        record("a1", "2026-10-01T00:00:00Z", payee="ana"), record("a2", "2026-10-02T00:00:00Z", payee="ana"),
        record("a3", "2026-10-03T00:00:00Z", payee="ana"),  # payee cap: 50 of 100
        record("b1", "2026-10-04T00:00:00Z", payee="ben"),  # acme at 350
        record("b2", "2026-10-05T00:00:00Z", payee="ben"),  # partner cap: 50 of 100
        record("a4", "2026-11-01T00:00:00Z", payee="ana"),  # new month for ana, but acme is capped
        record("g1", "2026-11-01T00:00:00Z", payee="ana", partner="globex"),  # another partner
        limit=2)
    found = results(rt, "p")
    assert [paid(found, x) for x in ("a1", "a2", "a3", "b1", "b2", "g1")] == [
        [("ana", "100.00")], [("ana", "100.00")], [("ana", "50.00")], [("ben", "100.00")], [("ben", "50.00")],
        [("ana", "100.00")]]
    assert found["a3"]["rewards"][0][3]["capped"] == [
        {"cap": "per payee ana 2026-10", "limit": "250.00", "used": "200.00", "cut": "50.00"}]
    assert found["b2"]["rewards"][0][3]["capped"][0]["cap"] == "per partner acme all"
    assert found["a4"]["status"] == "not_eligible"
    assert "cap per partner acme all of 400.00 USD cut 100.00 USD" in found["a4"]["reason"]


def test_a_cap_in_another_currency_fails_the_calculation(make_runtime) -> None:
    rt = make_runtime(SOURCE + """
        [programs.p]
        calculator = "flat"
        amount = "100"
        currency = "USD"
        caps = [{per = "program", amount = "250", currency = "EUR"}]
    """)
    run(rt, record("a1", "2026-10-01T00:00:00Z"))
    found = results(rt, "p")
    assert found["a1"]["status"] == "failed"
    assert "not compared" in found["a1"]["reason"]
