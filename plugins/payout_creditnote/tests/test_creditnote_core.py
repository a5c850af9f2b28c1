"""Through payhub's own pipeline: a settings file with ``[rails.cn] plugin = "credit_note"``, CRM events, rewards,
payouts, and one credit note per payout in the outbox, each conforming to EN 16931 with the VAT category chosen for
its buyer; payees whose credit note could not conform are held by routing with the reason, before any number."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from creditnote_en16931 import En16931
from creditnote_helpers import text
from lxml import etree
from payhub.testing.pytest_plugin import HarnessFactory

from payhub_creditnote import CreditNoteRail, ubl

SETTINGS = """\
[payees]
file = "payees.csv"

[sources.crm]
plugin = "file"
path = "events.csv"

[programs.rebate]
calculator = "percentage"
percent = "5"

[rails.cn]
plugin = "credit_note"
outbox = "outbox"
series = "CN-2026-"
currencies = ["EUR"]
max_attempts = 3
retry_initial_seconds = 0
retry_max_seconds = 0

[rails.cn.seller]
name = "Vendor Software GmbH"
country = "DE"
vat_id = "DE123456789"
registration_id = "HRB 12345"
endpoint_id = "DE123456789"
endpoint_scheme = "9930"
city = "Berlin"

[rails.cn.tax]
category = "auto"
rate = "19"

[routing]
default_rail = "cn"
"""


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_one_credit_note_per_payout_through_the_pipeline(payhub_harness: HarnessFactory, tmp_path: Path,
                                                         en16931: En16931) -> None:
    (tmp_path / "payees.csv").write_text(
        "id,name,country,email,vat_id,city,peppol_id\n"
        "r1,Reseller One B.V.,NL,ap@one.example,NL123456789B01,Amsterdam,0106:12345678\n"
        "r2,Reseller Two BV,BE,ap@two.example,BE0123456789,Brussels,\n"
        "r3,No Country Ltd,,ap@three.example,,,\n"
        "r4,Greek Reseller AE,EL,ap@four.example,EL123456789,Athens,\n"
        "r5,Reseller Five BV,NL,ap@five.example,NL123456789B01,Utrecht,9999:abc\n")
    (tmp_path / "events.csv").write_text(
        "id,type,occurred_at,payee_id,amount,currency,object_type\n"
        "0061,deal_won,2026-10-01T12:00:00Z,r1,10000.00,EUR,opp\n"
        "0062,deal_won,2026-10-02T12:00:00Z,r1,3333.33,EUR,opp\n"
        "0063,deal_won,2026-10-02T12:00:00Z,r2,999.99,EUR,opp\n"
        "0064,deal_won,2026-10-03T12:00:00Z,r3,500.00,EUR,opp\n"
        "0065,deal_won,2026-10-03T12:00:00Z,r4,500.00,EUR,opp\n"
        "0066,deal_won,2026-10-03T12:00:00Z,r5,500.00,EUR,opp\n")
    harness = payhub_harness(SETTINGS, directory=tmp_path)
    rail = harness.rail("cn")
    assert isinstance(rail, CreditNoteRail)
    harness.run_until_idle()
    harness.run_until_idle()  # a second run issues nothing new
    rows = harness.payouts()
    held = {r.payee_id: r.hold_reason for r in harness.rewards("held") if r.payee_id in ("r4", "r5")}
    assert harness.audit_problem() is None
    assert [(r.payee_id, r.status) for r in rows] == [("r1", "sent"), ("r2", "sent")]  # r3: no country, held
    assert "rail cn: payee r4: country EL is not an ISO 3166-1 country code: Greece is GR" in held["r4"]
    assert "rail cn: payee r5: the scheme of peppol_id '9999' is not a code of the EAS list" in held["r5"]
    numbers = rail.ledger.numbers("CN-2026-")
    assert [n for _, n, _ in numbers] == [1, 2]
    assert {k for _, _, k in numbers} == {r.idempotency_key for r in rows}
    for row in rows:
        path = tmp_path / "outbox" / f"{row.provider_ref}.xml"
        document = path.read_bytes()
        assert ubl.validate(document) == []
        assert en16931.fatal(document) == []
        category = "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/cbc:ID"
        assert text(etree.fromstring(document), category) == "AE"  # DE seller, NL and BE buyers with VAT ids
        fields = ubl.read(document)
        assert fields["id"] == row.provider_ref
        assert Decimal(fields["payable"]) == row.amount
        assert fields["currency"] == "EUR"
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["CN-2026-000001.xml", "CN-2026-000002.xml"]
