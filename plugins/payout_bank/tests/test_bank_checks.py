"""Bad input never reaches a file: payee details checked with schwifty (IBAN, BIC) and python-stdnum (ABA routing
numbers), currencies the rail does not serve, amounts over the per-payout limit, and bad settings."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from payhub.api import Outcome, Payee
from payhub.testing.pytest_plugin import HarnessFactory
from pydantic import ValidationError
from stdnum.us import rtn

from payhub_bank import BankSettings


def eur(**details: str) -> Payee:
    return Payee("p1", "Partner One", country="DE", details=details)


def usd(**details: str) -> Payee:
    return Payee("p2", "Partner Two", country="US", details=details)


def with_check_digit(eight: str) -> str:
    return eight + rtn.calc_check_digit(eight)


def test_valid_payees_pass(rail) -> None:
    assert rail.check_payee(eur(iban="DE89 3704 0044 0532 0130 00"), "EUR") is None
    assert rail.check_payee(eur(iban="de89370400440532013000", bic="cobadeffxxx"), "EUR") is None
    assert rail.check_payee(eur(iban="FR1420041010050500013M02606", bic="PSSTFRPP"), "EUR") is None
    assert rail.check_payee(eur(iban="CH9300762011623852957", bic="UBSWCHZH80A"), "EUR") is None
    assert rail.check_payee(usd(routing_number="091000019", account_number="123456789"), "USD") is None
    assert rail.check_payee(usd(routing_number="021000021", account_number="1234-5678", account_type="Savings",
                                entry_class="ppd"), "USD") is None


@pytest.mark.parametrize(("details", "expected"), [
    ({}, "has no iban (payee file column iban)"),
    ({"iban": "DE89370400440532013001"}, "IBAN DE89…3001 is invalid: Invalid checksum digits"),
    ({"iban": "DE8937040044053201300"}, "is invalid: Invalid IBAN length"),
    ({"iban": "XX89370400440532013000"}, "is invalid"),
    ({"iban": "BR1800360305000010009795493C1"}, "IBAN is from BR, which is not in the SEPA zone"),
    ({"iban": "FR1420041010050500013M02606", "bic": "COBADEFFXXX"},
     "BIC COBADEFFXXX is from DE but the IBAN is from FR"),
    ({"iban": "DE89370400440532013000", "bic": "DEUTDEFFXXX"},
     "BIC DEUTDEFFXXX does not match the bank of the IBAN (bank code 37040044 is COBADEFF)"),
    ({"iban": "DE89370400440532013000", "bic": "COBADEF"}, "BIC 'COBADEF' is invalid"),
    ({"iban": "CH9300762011623852957"}, "has no bic, which SEPA needs for accounts in CH"),
])
def test_sepa_payee_problems(rail, details: dict[str, str], expected: str) -> None:
    reason = rail.check_payee(eur(**details), "EUR")
    assert reason is not None and expected in reason, reason
    assert "370400440532013" not in reason  # account numbers never appear in full in reasons (they are audited)


def test_payees_outside_the_eea_need_the_payer_address(make_rail) -> None:
    rail = make_rail(sepa={"debtor_country": None, "debtor_address": None})
    reason = rail.check_payee(eur(iban="CH9300762011623852957", bic="UBSWCHZH80A"), "EUR")
    assert reason is not None and "must carry the payer's address: set sepa.debtor_country" in reason
    assert rail.check_payee(eur(iban="DE89370400440532013000"), "EUR") is None


def test_bic_rules_follow_the_settings(make_rail) -> None:
    loose = make_rail(sepa={"bic_must_match_bank": False, "require_bic": "never"})
    assert loose.check_payee(eur(iban="DE89370400440532013000", bic="DEUTDEFFXXX"), "EUR") is None
    assert loose.check_payee(eur(iban="CH9300762011623852957"), "EUR") is None
    strict = make_rail(sepa={"require_bic": "always"})
    assert "has no bic" in strict.check_payee(eur(iban="DE89370400440532013000"), "EUR")
    # French overseas territories and Monaco bank with French BICs.
    assert loose.check_payee(eur(iban="MC5811222000010123456789030", bic="BNPAFRPPXXX"), "EUR") is None


@pytest.mark.parametrize(("details", "expected"), [
    ({"account_number": "123456789"}, "has no routing_number"),
    ({"routing_number": "091000019"}, "has no account_number"),
    ({"routing_number": "091000018", "account_number": "123456789"},
     "routing number '091000018' is invalid: routing number check digit is wrong"),
    ({"routing_number": "09100001", "account_number": "123456789"}, "a routing number has 9 digits"),
    ({"routing_number": with_check_digit("99100001"), "account_number": "123456789"},
     "routing number prefix 99 is not one ACH accepts"),
    ({"routing_number": "091000019", "account_number": "12AB5678"}, "is not 4 to 17 digits"),
    ({"routing_number": "091000019", "account_number": "123"}, "is not 4 to 17 digits"),
    ({"routing_number": "091000019", "account_number": "123456789012345678"}, "is not 4 to 17 digits"),
    ({"routing_number": "091000019", "account_number": "123456789", "account_type": "brokerage"},
     "account_type 'brokerage' is not checking or savings"),
    ({"routing_number": "091000019", "account_number": "123456789", "entry_class": "WEB"},
     "entry_class 'WEB' is not CCD (business) or PPD (individual)"),
])
def test_ach_payee_problems(rail, details: dict[str, str], expected: str) -> None:
    reason = rail.check_payee(usd(**details), "USD")
    assert reason is not None and expected in reason, reason


def test_ach_pays_us_payees_only(rail) -> None:
    payee = Payee("p3", "Partner Three", country="DE", details={"routing_number": "091000019",
                                                                 "account_number": "123456789"})
    assert "ACH pays US accounts only" in rail.check_payee(payee, "USD")


def test_currencies_not_served(rail, make_rail) -> None:
    assert rail.capabilities.currencies == frozenset({"EUR", "USD"})
    assert "EUR (SEPA) and USD (ACH) only, not GBP" in rail.check_payee(eur(iban="GB33BUKB20201555555555"), "GBP")
    euro_only = make_rail(ach=None)
    assert euro_only.capabilities.currencies == frozenset({"EUR"}) and "US" not in euro_only.capabilities.countries
    assert "does not pay USD" in euro_only.check_payee(usd(routing_number="091000019", account_number="1234"), "USD")
    countries = rail.capabilities.countries
    assert {"DE", "FR", "CH", "GB", "NO", "GP", "US"} <= countries and "BR" not in countries


def test_send_rejects_what_it_cannot_write_and_writes_the_rest(rail, payout, outbox: Path) -> None:
    results = rail.send([
        payout(1, "GBP", "10.00", iban="GB33BUKB20201555555555"),
        payout(2, "EUR", "100000.01"),  # over the per-payout limit (settings changed after routing)
        payout(3, "EUR", "10.00", iban="DE89370400440532013001"),
        payout(4, "USD", "10.00", routing_number="091000018"),
        payout(5, "EUR", "0.00"),
        payout(6, "EUR", "10.00"),
    ])
    outcomes = {r.idempotency_key[-1]: (r.outcome, r.reason) for r in results}
    assert {k for k, (o, _) in outcomes.items() if o == Outcome.REJECTED} == {"1", "2", "3", "4", "5"}
    assert "over this rail's per-payout limit of 100000 EUR" in outcomes["2"][1]
    assert "not a positive amount" in outcomes["5"][1]
    assert outcomes["6"][0] == Outcome.ACCEPTED
    assert len(list(outbox.glob("*.xml"))) == 1 and not list(outbox.glob("*.ach"))
    assert "ph-" + f"{2:032x}" not in next(outbox.glob("*.xml")).read_text()


@pytest.mark.slow  # a whole pipeline run
@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_routing_refuses_over_the_limit_and_falls_back(payhub_harness: HarnessFactory, tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    harness = payhub_harness("""
        [rails.bank]
        plugin = "bank_transfer"
        outbox = "outbox"
        [rails.bank.sepa]
        debtor_name = "Acme GmbH"
        debtor_iban = "DE89370400440532013000"
        max_amount = "5000"
        [rails.export]
        plugin = "csv_export"
        directory = "exports"
        [routing]
        default_rail = "export"
        [[routing.rules]]
        countries = ["DE"]
        rails = ["bank"]
    """, directory=tmp_path)
    assert harness.rail("bank").capabilities.max_amounts == {"EUR": Decimal("5000")}
    good = eur(iban="DE89370400440532013000")
    assert harness.route(good, Decimal("5000.00"), "EUR")[0] == "bank"
    rail, why = harness.route(good, Decimal("5000.01"), "EUR")
    assert rail == "export" and "rail bank pays at most 5000 EUR per payout, this one is 5000.01 EUR" in why
    rail, why = harness.route(eur(iban="DE89370400440532013001"), Decimal("1.00"), "EUR")
    assert rail == "export" and "Invalid checksum digits" in why
    rail, why = harness.route(good, Decimal("1.00"), "GBP")
    assert rail == "export" and "rail bank does not pay GBP" in why


@pytest.mark.parametrize(("changes", "expected"), [
    ({"sepa": None, "ach": None}, "configure [sepa] (EUR), [ach] (USD) or both"),
    ({"sepa": {"debtor_iban": "DE89370400440532013001"}}, "sepa.debtor_iban"),
    ({"sepa": {"debtor_iban": "BR1800360305000010009795493C1"}}, "not in the SEPA zone"),
    ({"sepa": {"debtor_bic": "NOPE"}}, "sepa.debtor_bic"),
    ({"sepa": {"max_amount": "1000000000"}}, "sepa.max_amount"),
    ({"sepa": {"max_amount": 12.5}}, "float is not exact"),
    ({"sepa": {"remittance": "{nope}"}}, "sepa.remittance"),
    ({"sepa": {"debtor_country": "Germany"}}, "sepa.debtor_country"),
    ({"sepa": {"debtor_address": ["a", "b", "c"]}}, "sepa.debtor_address"),
    ({"ach": {"immediate_destination": "091000018"}}, "check digit is wrong"),
    ({"ach": {"originating_dfi": "0910"}}, "ach.originating_dfi"),
    ({"ach": {"company_id": "toolongcompanyid"}}, "ach.company_id"),
    ({"ach": {"entry_class": "WEB"}}, "ach.entry_class"),
    ({"prefix": "bad_prefix!"}, "prefix"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_settings_name_the_key(make_rail, changes: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_rail(**changes)
    assert expected in str(caught.value)


def test_settings_normalise_values(tmp_path: Path) -> None:
    settings = BankSettings.model_validate({
        "outbox": "out", "sepa": {"debtor_name": "A", "debtor_iban": "de89 3704 0044 0532 0130 00",
                                  "debtor_bic": "cobadeffxxx"},
        "ach": {"immediate_destination": "091000019", "immediate_origin": "091000019", "immediate_origin_name": "A",
                "company_id": "1234567890", "company_name": "A", "originating_dfi": "091000019"},
    }, context={"base_dir": tmp_path})
    assert settings.outbox == tmp_path / "out"
    assert settings.sepa is not None and settings.sepa.debtor_iban == "DE89370400440532013000"
    assert settings.sepa.debtor_bic == "COBADEFFXXX"
    assert settings.ach is not None and settings.ach.originating_dfi == "09100001"
    assert settings.ach.immediate_origin == " 091000019"
