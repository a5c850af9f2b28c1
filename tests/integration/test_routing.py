"""Routing: the payee's preference, then the first matching rule's rails in order, then the default rail; each
candidate must serve the currency and country, take the amount and accept the payee's details."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from test_disburse import BASE, schedule

from payhub.audit import verify
from payhub.db.schema import audit_log, rewards
from payhub.errors import ConfigError
from payhub.settings import load_settings

RAILS = """
    [rails.bank]
    plugin = "fake"
    currencies = ["EUR"]
    countries = ["DE", "FR"]
    requires_detail = "iban"
    max_amounts = {EUR = "10000"}

    [rails.gift]
    plugin = "fake"
    countries = ["DE", "FR", "US"]
    requires_detail = "email"

    [rails.credit]
    plugin = "fake"

    [[routing.rules]]
    countries = ["DE", "FR"]
    currencies = ["EUR"]
    rails = ["bank", "gift"]

    [[routing.rules]]
    rails = ["gift"]
"""


def test_rules_fall_back_in_order_and_record_why(make_runtime, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text(
        "id,name,country,rail,iban,email\n"
        "banked,Banked GmbH,DE,,DE89370400440532013000,\n"     # bank
        "noiban,No IBAN SARL,FR,,,ap@noiban.example\n"          # bank refuses: no iban -> gift
        "prefers,Prefers Credit,DE,credit,DE89370400440532013000,\n"  # its preference
        "big,Big GmbH,DE,,DE89370400440532013000,\n"           # over the bank's limit -> gift refuses (no email)
        "jp,Tokyo KK,JP,,,\n")                                  # rule 2: gift refuses (country) -> default
    rt = make_runtime(BASE.replace('default_rail = "r"', 'default_rail = "credit"') + RAILS)
    found = {p.payee_id: p for p in schedule(rt, ("banked", "100"), ("noiban", "200"), ("prefers", "300"),
                                              ("big", "20000"), ("jp", "400"))}
    assert {payee: p.rail for payee, p in found.items()} == {
        "banked": "bank", "noiban": "gift", "prefers": "credit", "big": "credit", "jp": "credit"}
    assert found["banked"].route_reason == "routing rule 0 (DE,FR EUR) rail bank"
    assert found["noiban"].route_reason == \
        "routing rule 0 (DE,FR EUR) rail gift (rail bank: payee noiban has no iban)"
    assert found["prefers"].route_reason == "payee prefers prefers rail credit"
    assert found["big"].route_reason == (
        "default rail credit (rail bank pays at most 10000 EUR per payout, this one is 20000.00 EUR; "
        "rail gift: payee big has no email)")
    assert found["jp"].route_reason == "default rail credit (rail gift does not serve country JP)"
    with rt.engine.connect() as conn:
        created = {json.loads(d)["payee"]: json.loads(d)["route"] for d in conn.execute(
            select(audit_log.c.detail).where(audit_log.c.action == "payout.created")).scalars()}
        assert created == {payee: p.route_reason for payee, p in found.items()}
        assert verify(conn).ok


def test_no_rail_left_holds_the_rewards_with_every_reason(make_runtime, tmp_path: Path) -> None:
    (tmp_path / "payees.csv").write_text("id,name,country\nfr,Sans Banque,FR\n")
    rt = make_runtime(BASE.replace('default_rail = "r"', "") + RAILS.split("[rails.credit]")[0] +
                      '\n[[routing.rules]]\nrails = ["bank", "gift"]\n')
    assert schedule(rt, ("fr", "50")) == []
    with rt.engine.connect() as conn:
        row = conn.execute(select(rewards.c.status, rewards.c.hold_code, rewards.c.hold_reason)).one()
        assert tuple(row) == ("held", "no_rail", "rail bank: payee fr has no iban; rail gift: payee fr has no email")
        assert verify(conn).ok


def test_a_rule_naming_an_unconfigured_rail_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text('[rails.bank]\nplugin = "fake"\n[[routing.rules]]\ncountries = ["DEU"]\nrails = ["bank", "wire"]\n')
    try:
        load_settings(path)
    except ConfigError as exc:
        problems = exc.problems
    else:
        raise AssertionError("settings loaded")
    assert [key for key, _ in problems] == ["routing.rules.0.countries"]
    path.write_text('[rails.bank]\nplugin = "fake"\n[[routing.rules]]\nrails = ["bank", "wire"]\n')
    try:
        load_settings(path)
    except ConfigError as exc:
        assert exc.problems == [("routing.rules.0.rails", "names rail 'wire', which is not configured")]
    else:
        raise AssertionError("settings loaded")
