"""A new CRM event for an erased payee: its reward is calculated and held (``no_payee``) with a reason naming the
erasure, nothing is sent through the rail, and the event is stored without its raw record or the configured
personal attributes; later passes leave the hold alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliSite, sql, write_site

CONTACT = "Ana Souza-Villanueva"
PAYEES = ("id,name,country,currency,email,iban\n"
          "p1,Zak Representative,FR,EUR,zak@example.org,FR7630006000011234567890189\n")
DEALS = "id,type,occurred_at,payee_id,amount,currency,contact_name,region\n" \
        f"D-1,deal_won,2026-10-01T00:00:00Z,p1,1000.00,EUR,{CONTACT},west\n"
LATER = f"D-2,deal_won,2026-11-01T00:00:00Z,p1,3000.00,EUR,{CONTACT},west\n"
SETTINGS = """\
[programs.pct]
calculator = "percentage"
percent = "10"

[rails.export]
plugin = "csv_export"
directory = "out"

[routing]
default_rail = "export"

[compliance.erasure]
event_attributes = ["contact_name"]
"""


class Site(CliSite):
    def __init__(self, root: Path, db_url: str) -> None:
        super().__init__(root)
        self.db_url = db_url

    def rows(self, query: str, **params: Any) -> list[Any]:
        return sql(self.db_url, query, **params)


def exported(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "out").rglob("*") if p.is_file())


@pytest.mark.slow  # the command line runs the pipeline three times and vacuums
def test_an_erased_payee_is_never_paid_again_nor_its_new_event_kept_whole(db_url: str, tmp_path: Path) -> None:
    write_site(tmp_path, db_url, SETTINGS, deals=DEALS, payees=PAYEES)
    site = Site(tmp_path, db_url)
    site.ok("db", "upgrade")
    site.ok("run", "--once")
    assert site.rows("SELECT status FROM payouts WHERE payee_id = 'p1'") == [("sent",)]
    files = exported(tmp_path)
    assert files
    site.ok("payees", "erase", "p1", "--reason", "erasure request ER-7", "--yes")
    (erased_on,) = [str(when)[:10] for (when,) in site.rows("SELECT erased_at FROM payees WHERE id = 'p1'")]

    (tmp_path / "deals.csv").write_text(DEALS + LATER)
    ran = site.ok("run", "--once")

    assert site.rows("SELECT count(*), min(status) FROM payouts WHERE payee_id = 'p1'") == [(1, "sent")]
    assert exported(tmp_path) == files  # nothing new handed to the rail
    (reward_id, status, code, reason), = site.rows(
        "SELECT r.id, r.status, r.hold_code, r.hold_reason FROM rewards r JOIN events e ON e.id = r.event_id "
        "WHERE e.object_id = 'D-2'")
    assert (status, code) == ("held", "no_payee")
    assert reason.startswith(f"payee p1 was erased on {erased_on}: its payout details and identity are gone")
    assert "payhub rewards cancel" in reason
    (raw, attributes), = site.rows("SELECT raw, attributes FROM events WHERE object_id = 'D-2'")
    assert raw is None and json.loads(attributes) == {"region": "west"}
    assert f"payee p1, erased on {erased_on}: stored without their raw record" in ran.output
    for (text,) in site.rows("SELECT raw FROM events UNION ALL SELECT attributes FROM events "
                             "UNION ALL SELECT detail FROM audit_log"):
        assert CONTACT not in (text or "")

    held = site.rows("SELECT count(*) FROM audit_log WHERE action = 'reward.held' AND subject_id = :rid",
                     rid=str(reward_id))
    site.ok("run", "--once")  # the hold is not rechecked into a payout, nor written again
    assert site.rows("SELECT status, hold_code FROM rewards WHERE id = :rid", rid=reward_id) == [("held", "no_payee")]
    assert site.rows("SELECT count(*) FROM audit_log WHERE action = 'reward.held' AND subject_id = :rid",
                     rid=str(reward_id)) == held == [(1,)]
    assert site.rows("SELECT count(*) FROM payouts WHERE payee_id = 'p1'") == [(1,)]
    site.ok("rewards", "cancel", str(reward_id), "--reason", "payee erased")
    site.ok("audit", "verify")
