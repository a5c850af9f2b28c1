"""``payhub explain`` and ``payhub audit trace`` answer "why was this partner paid this amount?" in one command, on
SQLite and PostgreSQL, for people (text, never wrapped when piped) and scripts (JSON), in a fixed number of queries.

The site: a percentage program with splits, a per-payee cap, dual approval and clawbacks; a once-per-record bonus;
a calculator that returns nothing or raises; a screening hook that holds payouts over 1000; the csv_export rail.
``payhub run --once`` pays p1 (a split share and a capped reward; the cap takes all of a third), p2 (its split share)
and holds p3's big bonus at screening. A reward awaiting two approvers is approved (one approver is refused trying
twice). The first deal is lost, so its rewards are clawed back: p1's adjustment is netted into the payout of the
approved reward, p2's balance goes negative and is carried.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliSite, run_payhub, sql, write_site
from sqlalchemy import event

from payhub import provenance
from payhub.cli import output
from payhub.db.engine import make_engine

SETTINGS = """\
[daemon]
idle_seconds = 0.1

[programs.pct]
calculator = "percentage"
percent = "10"
event_types = ["deal_won"]
clawback_event_types = ["deal_lost"]
splits = true
caps = [{per = "payee", amount = "200", currency = "USD"}]
approval = {currency = "USD", threshold = "80", dual_threshold = "90"}

[programs.bonus]
calculator = "percentage"
percent = "10"
event_types = ["big_deal", "big_deal_upsell"]
once_per_object = true

[programs.boom]
calculator = "raising"
event_types = ["deal_won"]

[hooks.deny_big]

[rails.export]
plugin = "csv_export"
directory = "out"
{rail_extra}
[routing]
default_rail = "export"
"""
PAYEES = "id,name,country\np1,Partner One,US\np2,Partner Two,US\np3,Partner Three,US\n"
HEADER = ("id", "type", "occurred_at", "payee_id", "amount", "currency", "splits")
SPLIT = json.dumps([{"payee_id": "p1", "percent": "60"}, {"payee_id": "p2", "percent": "40"}])
DEALS = [
    ("D-1", "deal_won", "2026-10-01T00:00:00Z", "p1", "1000.00", "USD", SPLIT),  # 60 to p1, 40 to p2
    ("D-2", "deal_won", "2026-10-02T00:00:00Z", "p1", "950.00", "USD", ""),  # 95: two approvers
    ("D-3", "deal_won", "2026-10-03T00:00:00Z", "p1", "900.00", "USD", ""),  # 90, capped to 45
    # 1.00, all cut by the cap (not eligible); the raising calculator fails on it
    ("X-boom", "deal_won", "2026-10-04T00:00:00Z", "p1", "10.00", "USD", ""),
    ("B-1", "big_deal", "2026-10-05T00:00:00Z", "p3", "12000.00", "USD", ""),  # 1200: held by screening
    ("B-1", "big_deal_upsell", "2026-10-06T00:00:00Z", "p3", "500.00", "USD", ""),  # not eligible: once per record
]
LOST = ("D-1", "deal_lost", "2026-10-20T00:00:00Z", "p1", "", "", "")


class Site(CliSite):
    """The settings directory of a site on the database at ``db_url``."""

    def __init__(self, root: Path, db_url: str) -> None:
        super().__init__(root)
        self.db_url = db_url

    def add(self, *rows: tuple[str, ...]) -> None:
        with (self.root / "deals.csv").open("a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)

    def sql(self, query: str, **params: Any) -> list[Any]:
        return sql(self.db_url, query, **params)

    def reward_of(self, object_id: str, payee: str, event_type: str = "deal_won", program: str = "pct") -> int:
        [(reward_id,)] = self.sql("SELECT r.id FROM rewards r JOIN events e ON e.id = r.event_id WHERE "
                                  "e.object_id = :o AND r.payee_id = :p AND e.event_type = :t AND r.program = :g",
                                  o=object_id, p=payee, t=event_type, g=program)
        return int(reward_id)

    def payout_of(self, reward_id: int) -> int:
        [(payout_id,)] = self.sql("SELECT payout_id FROM rewards WHERE id = :r", r=reward_id)
        return int(payout_id)


def new_site(root: Path, db_url: str, rail_extra: str = "", deals: list[tuple[str, ...]] = DEALS) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    write_site(root, db_url, SETTINGS.replace("{rail_extra}", rail_extra), deals="", payees=PAYEES)
    site = Site(root, db_url)
    site.add(HEADER, *deals)
    site.ok("db", "upgrade")
    return site


@pytest.fixture(autouse=True)
def narrow_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """An 80-column console: report lines are longer, and must not be wrapped (tables are widened where read)."""
    monkeypatch.setattr(output.console, "width", 80)
    monkeypatch.setattr(output.err_console, "width", 400)


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, plugin_path: Path) -> Site:
    """The story of the module docstring, told once per database; tests only read it (reads add audit entries)."""
    s = new_site(tmp_path_factory.mktemp("site"), module_db_url)
    s.ok("run", "--once")
    dual = s.reward_of("D-2", "p1")
    s.ok("rewards", "approve", str(dual), "--note", "contract checked", actor="finance:ann")
    refused = s.cli("rewards", "approve", str(dual), actor="finance:ann")
    assert refused.exit_code == 1 and "already approved by finance:ann" in refused.stderr
    s.ok("rewards", "approve", str(dual), actor="finance:bob")
    s.add(LOST)
    s.ok("run", "--once")
    return s


# ------------------------------------------------------------------------------------------------- a payout


def test_explain_payout_json_lists_every_item_with_its_whole_provenance(site: Site) -> None:
    dual, lost = site.reward_of("D-2", "p1"), site.reward_of("D-1", "p1", "deal_lost")
    original = site.reward_of("D-1", "p1")
    payout_id = site.payout_of(dual)
    assert site.payout_of(lost) == payout_id
    data = site.json("explain", f"payout:{payout_id}")
    assert (data["kind"], data["ref"]) == ("payout", f"payout:{payout_id}")
    p = data["payout"]
    assert (p["payee"], p["amount"], p["currency"], p["items"], p["status"]) == ("p1", "35.00", "USD", 2, "sent")
    assert p["rail"] == "export" and p["rail_plugin"] == "csv_export" and p["key"].startswith("ph-")
    assert p["document"]["kind"] == "export file" and p["document"]["file"] == p["provider_ref"]
    assert "not the line" in p["document"]["missing"]
    assert [(a["kind"], a["number"], a["outcome"], a["provider_ref"]) for a in p["attempts"]] == [
        ("send", 1, "accepted", p["provider_ref"])]
    assert [e["action"] for e in p["history"]] == ["payout.created", "payout.sending", "payout.sent"]
    assert [(s["decision"], s["by"], s["reason"]) for s in p["screening"]] == [("passed", "deny_big", None)]
    assert p["history"][1]["detail"]["screened_by"] == ["deny_big"]
    assert "screening passed by deny_big at " in site.ok("explain", f"payout:{payout_id}").stdout
    assert data["net"] == {"items": 2, "rewards": "95.00", "adjustments": "-60.00", "total": "35.00",
                           "amount": "35.00", "currency": "USD", "adds_up": True}

    approved, adjustment = data["items"]
    assert approved["item"] == {"amount": "95.00", "currency": "USD", "fx": None}
    assert (approved["reward"]["id"], approved["reward"]["kind"], approved["reward"]["amount"]) == (dual, "reward",
                                                                                                     "95.00")
    assert approved["event"]["key"] == "deals:record:D-2:deal_won" and approved["event"]["source"] == "deals"
    assert (approved["event"]["object_type"], approved["event"]["object_id"]) == ("record", "D-2")
    assert approved["program"]["name"] == "pct" and approved["program"]["version"] == 1
    assert approved["program"]["parameters"]["approval"]["dual_threshold"] == "90"
    assert approved["calculation"]["status"] == "rewarded"
    assert [(a["approver"], a["note"]) for a in approved["approvals"]] == [("finance:ann", "contract checked"),
                                                                           ("finance:bob", None)]
    assert approved["reward"]["approvers"] == ["finance:ann", "finance:bob"]
    refused = [e for e in approved["history"] if e["action"] == "reward.approval_refused"]
    assert [(e["actor"], e["outcome"]) for e in refused] == [("finance:ann", "refused")]
    assert "already approved by finance:ann" in refused[0]["detail"]["reason"]
    assert [link["id"] for link in approved["in_payouts"]] == [payout_id]

    assert adjustment["reward"]["id"] == lost and adjustment["reward"]["kind"] == "adjustment"
    assert adjustment["item"]["amount"] == "-60.00"
    assert adjustment["rules"]["clawback"]["clawback"] == "full"
    assert adjustment["rules"]["clawback"]["granted"] == "60.00"
    # What the adjustment takes back: p1's share of D-1 (not p2's), paid in an earlier payout.
    assert [(r["id"], r["amount"], r["payee"], r["payout"]) for r in adjustment["takes_back"]] == [
        (original, "60.00", "p1", site.payout_of(original))]
    assert adjustment["event"]["type"] == "deal_lost"


def test_explain_payout_text_shows_caps_splits_and_later_clawbacks(site: Site) -> None:
    original, capped = site.reward_of("D-1", "p1"), site.reward_of("D-3", "p1")
    lost = site.reward_of("D-1", "p1", "deal_lost")
    payout_id = site.payout_of(original)
    text = site.ok("explain", f"payout:{payout_id}").stdout
    assert f"Payout {payout_id}: 105.00 USD to p1 via export (sent)" in text
    assert "2 item(s): rewards 105.00, adjustments 0.00, net 105.00 USD" in text
    assert "split: 60% of 100.00 USD (primary payee p1)" in text
    assert "cap per payee p1 all: limit 200.00, used 155.00, cut 45.00" in text
    assert f"Reward {capped}: 45.00 USD to p1 (sent)" in text
    assert f"later on this record: reward {lost} -60.00 USD to p1 (scheduled" in text or \
        f"later on this record: reward {lost} -60.00 USD to p1 (sent" in text
    assert "document: export file payouts-" in text
    assert "Program pct version 1, calculator percentage" in text


def test_explain_reward_keeps_its_shape_and_adds_its_payouts(site: Site) -> None:
    original = site.reward_of("D-1", "p1")
    for ref in (str(original), f"reward:{original}"):
        data = site.json("explain", ref)
        assert data["kind"] == "reward" and data["reward"]["id"] == original
        assert data["program"]["name"] == "pct" and data["event"]["key"] == "deals:record:D-1:deal_won"
        assert data["rules"]["split"] == {"of": "100.00", "percent": "60", "primary": "p1"}
        assert [p["id"] for p in data["payouts"]] == [site.payout_of(original)]
        assert [a["amount"] for a in data["adjustments"]] == ["-60.00"]
    assert site.cli("explain", "reward:999999").stderr.strip() == "error: reward 999999 does not exist"
    assert site.cli("explain", "payout:999999").stderr.strip() == "error: payout 999999 does not exist"
    assert site.cli("explain", "nothing-such").stderr.strip() == "error: nothing found for 'nothing-such'"


def test_explain_a_payout_held_by_screening(site: Site) -> None:
    bonus = site.reward_of("B-1", "p3", "big_deal", "bonus")
    payout_id = site.payout_of(bonus)
    data = site.json("explain", f"payout:{payout_id}")
    p = data["payout"]
    assert (p["status"], p["reason"]) == ("held", "over screening limit 1000")
    assert [(s["decision"], s["by"], s["reason"]) for s in p["screening"]] == [
        ("held", "screening", "over screening limit 1000")]
    assert p["document"]["kind"] is None and p["attempts"] == []
    text = site.ok("explain", f"payout:{payout_id}").stdout
    assert "held by screening at " in text and ": over screening limit 1000" in text

    trace = site.ok("audit", "trace", f"payout:{payout_id}").stdout.splitlines()
    assert any(line.startswith(f"    payout {payout_id} 1200.00 USD via export [held] key ph-") for line in trace)
    assert "      held: over screening limit 1000" in trace


# ------------------------------------------------------------------------------------------------- events


def test_explain_event_lists_every_programs_calculation_with_its_reason(site: Site) -> None:
    [(boom_event,)] = site.sql("SELECT id FROM events WHERE object_id = 'X-boom'")
    data = site.json("explain", f"event:{boom_event}")
    assert data["kind"] == "events"
    [view] = data["events"]
    calcs = {c["program"]: (c["status"], c["version"], c["reason"]) for c in view["calculations"]}
    cut = "cap per payee p1 all of 200.00 USD cut 1.00 USD of p1's reward"
    assert calcs == {"pct": ("not_eligible", 1, cut),
                     "boom": ("failed", 1, "calculator error: ZeroDivisionError: bug in calculator")}
    assert view["rewards"] == []
    text = site.ok("explain", f"event:{boom_event}").stdout
    assert "program boom version 1 (raising): failed: calculator error: ZeroDivisionError: bug in calculator" in text
    assert f"program pct version 1 (percentage): not_eligible: {cut}" in text

    [(upsell,)] = site.sql("SELECT id FROM events WHERE event_type = 'big_deal_upsell'")
    [view] = site.json("explain", f"event:{upsell}")["events"]
    [calc] = view["calculations"]
    assert (calc["program"], calc["status"]) == ("bonus", "not_eligible") and view["rewards"] == []
    assert calc["reason"].startswith("record B-1 is already rewarded by this program (1200.00 USD)")
    assert f"program bonus version 1 (percentage): not_eligible: {calc['reason']}" in \
        site.ok("explain", f"event:{upsell}").stdout


def test_explain_a_crm_record_shows_all_its_events(site: Site) -> None:
    for ref in ("D-1", "record:D-1"):
        data = site.json("explain", ref)
        assert [v["event"]["type"] for v in data["events"]] == ["deal_won", "deal_lost"]
        won, lost = data["events"]
        assert sorted((r["reward"]["payee"], r["reward"]["amount"]) for r in won["rewards"]) == [
            ("p1", "60.00"), ("p2", "40.00")]
        assert sorted((r["reward"]["payee"], r["reward"]["amount"]) for r in lost["rewards"]) == [
            ("p1", "-60.00"), ("p2", "-40.00")]
        assert {p["payee"] for p in data["payouts"]} == {"p1", "p2"}
    key = site.json("explain", "deals:record:D-3:deal_won")
    assert [v["event"]["object_id"] for v in key["events"]] == ["D-3"]


def test_rewards_list_not_eligible_shows_the_calculations_that_paid_nothing(site: Site) -> None:
    rows = site.json("rewards", "list", "--not-eligible")
    assert {(r["object"], r["program"], r["status"]) for r in rows} >= {
        ("record:X-boom", "boom", "failed"), ("record:X-boom", "pct", "not_eligible"),
        ("record:B-1", "bonus", "not_eligible")}
    assert all(r["status"] in ("not_eligible", "failed") for r in rows)
    assert list(rows[0]) == ["calculation", "event", "object", "program", "version", "payee", "status", "reason",
                             "calculated_at"]
    by_object = {(r["object"], r["program"]): r for r in rows}
    assert by_object[("record:X-boom", "boom")]["reason"] == "calculator error: ZeroDivisionError: bug in calculator"
    assert by_object[("record:B-1", "bonus")]["payee"] == "p3"
    assert [r["program"] for r in site.json("rewards", "list", "--not-eligible", "--program", "bonus")] == ["bonus"]
    assert {r["payee"] for r in site.json("rewards", "list", "--not-eligible", "--payee", "p3")} == {"p3"}
    output.console.width = 400
    table = site.ok("rewards", "list", "--not-eligible").stdout
    assert "calculations that paid nothing" in table and "not_eligible" in table
    both = site.cli("rewards", "list", "--not-eligible", "--status", "held")
    assert both.exit_code == 2 and "--not-eligible" in both.stderr


# ------------------------------------------------------------------------------------------------- trace


def test_audit_trace_shows_program_versions_and_later_clawbacks(site: Site) -> None:
    original, lost = site.reward_of("D-1", "p1"), site.reward_of("D-1", "p1", "deal_lost")
    lines = site.ok("audit", "trace", "D-1").stdout.splitlines()
    assert "  program pct: rewarded (version 1)" in lines
    assert "  program boom: not_eligible (version 1)" in lines or any(
        line.startswith("  program boom: not_eligible (") and line.endswith(" (version 1)") for line in lines)
    start = lines.index(next(line for line in lines if line.startswith(f"  reward {original} 60.00 USD to p1")))
    later = [line for line in lines[start:] if line.startswith("    later: ")]
    assert later and later[0].startswith(f"    later: reward {lost} -60.00 USD to p1 (")
    chain = site.json("audit", "trace", f"reward:{original}")
    [node] = chain
    assert node["calculations"][0]["version"] == 1
    [reward] = node["rewards"]
    assert [(a["id"], a["amount"]) for a in reward["adjustments"]] == [(lost, "-60.00")]


def test_keys_are_not_wrapped_when_piped(site: Site, subprocess_env: dict[str, str]) -> None:
    """Run in a subprocess whose standard output is a pipe (Rich would wrap at 80 columns)."""
    payout_id = site.payout_of(site.reward_of("D-1", "p1"))
    [(key,)] = site.sql("SELECT idempotency_key FROM payouts WHERE id = :p", p=payout_id)
    env = {**subprocess_env, "COLUMNS": "40", "PAYHUB_CONFIG": str(site.config)}
    env.pop("FORCE_COLOR", None)

    def run(*args: str) -> str:
        done = run_payhub(*args, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    explained = run("explain", f"payout:{payout_id}").splitlines()
    assert any(line.startswith(f"  key {key}, 2 item(s), created at ") for line in explained), explained
    assert "Event 1 deals:record:D-1:deal_won" in [line.strip() for line in explained]
    traced = run("audit", "trace", "D-1").splitlines()
    assert any(line.startswith(f"    payout {payout_id} 105.00 USD via export [sent] key {key} ref payouts-")
               for line in traced), traced
    assert json.loads(run("explain", f"payout:{payout_id}", "--format", "json"))["payout"]["key"] == key


# ------------------------------------------------------------------------------------------------- queries


def test_a_payout_is_explained_in_a_fixed_number_of_queries(tmp_path: Path, db_url: str,
                                                          plugin_path: Path) -> None:
    """Thousands of items cost the same number of queries as three: counted for a payout of 3 and one of 120."""
    deals = [(f"S-{n}", "deal_won", "2026-10-01T00:00:00Z", "p1" if n < 3 else "p2", "10.00", "USD", "")
             for n in range(123)]
    site = new_site(tmp_path, db_url, deals=deals)
    site.ok("run", "--once")
    small, big = site.payout_of(site.reward_of("S-0", "p1")), site.payout_of(site.reward_of("S-3", "p2"))
    engine = make_engine(db_url)
    with engine.connect():  # the dialect's first-connection queries are not the answer's
        pass
    counted: list[str] = []

    def count(*args: Any) -> None:
        counted.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        sizes = {}
        for payout_id in (small, big):
            counted.clear()
            with engine.connect() as conn:
                answer = provenance.explain(conn, f"payout:{payout_id}", {"export": "csv_export"})
            assert answer is not None and answer["kind"] == "payout"
            sizes[len(answer["items"])] = len(counted)
            counted.clear()
            with engine.connect() as conn:
                assert provenance.trace(conn, f"payout:{payout_id}")
            sizes[-len(answer["items"])] = len(counted)
    finally:
        engine.dispose()
    assert set(sizes) == {3, 120, -3, -120}
    assert sizes[3] == sizes[120] and sizes[-3] == sizes[-120]
    assert sizes[120] <= 15


def test_explain_shows_the_fx_rate_and_date_of_a_converted_item(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "rates.csv").write_text("Date,USD,\n2026-11-27,1.0487,\n2026-11-26,1.0455,\n")
    write_site(tmp_path, db_url, """\
        [programs.pct]
        calculator = "percentage"
        percent = "10"
        payout_currency = "payee"
        [hooks.fx]
        plugin = "ecb_rates"
        path = "rates.csv"
        [rails.export]
        plugin = "csv_export"
        directory = "out"
        [routing]
        default_rail = "export"
        """, payees="id,name,country,currency\np1,Partner One,DE,EUR\n",
               deals="id,type,occurred_at,payee_id,amount,currency\nF-1,deal_won,2026-11-26T12:00:00Z,p1,1045.50,USD\n")
    site = Site(tmp_path, db_url)
    site.ok("db", "upgrade")
    site.ok("run", "--once")
    reward = site.reward_of("F-1", "p1")
    data = site.json("explain", f"payout:{site.payout_of(reward)}")
    [item] = data["items"]
    assert (item["reward"]["amount"], item["reward"]["currency"]) == ("104.55", "USD")
    assert (item["item"]["amount"], item["item"]["currency"]) == ("100.00", "EUR")
    fx = item["item"]["fx"]
    assert (fx["rate_date"], fx["date_used"], fx["from_amount"], fx["from_currency"]) == (
        "2026-11-26", "event", "104.55", "USD")
    assert item["reward"]["fx"] == fx and item["in_payouts"][0]["fx"] == fx
    text = site.ok("explain", f"payout:{site.payout_of(reward)}").stdout
    assert f"paid in the payee's currency at {fx['rate']} (reference rate of 2026-11-26, event date, " in text


def test_explain_shows_the_fund_movements_and_limit_of_a_coop_claim(tmp_path: Path, db_url: str) -> None:
    write_site(tmp_path, db_url, """\
        [programs.coop]
        calculator = "coop"
        percent = "2"
        expiry_days = 365
        participation_percent = "50"
        [rails.export]
        plugin = "csv_export"
        directory = "out"
        [routing]
        default_rail = "export"
        """, payees="id,name,country\nacme,Acme Reseller,US\n",
               deals="id,type,occurred_at,payee_id,partner_id,amount,currency\n"
                     "O-1,purchase,2026-10-01T00:00:00Z,rep1,acme,1000.00,USD\n"
                     "C-1,coop_claim,2026-10-10T00:00:00Z,rep1,acme,100.00,USD\n")
    site = Site(tmp_path, db_url)
    site.ok("db", "upgrade")
    site.ok("run", "--once")
    [(purchase,)] = site.sql("SELECT id FROM events WHERE object_id = 'O-1'")
    [view] = site.json("explain", f"event:{purchase}")["events"]
    assert view["rewards"] == [] and [(c["program"], c["status"]) for c in view["calculations"]] == [
        ("coop", "rewarded")]
    assert [(f["holder"], f["amount"], f["unit"]) for f in view["funds"]] == [("acme", "20.00", "USD")]
    assert view["funds"][0]["expires_at"].startswith("2027-10-01")
    assert "fund of coop for acme: 20.00 USD, expires 2027-10-01" in site.ok("explain", f"event:{purchase}").stdout

    claim = site.reward_of("C-1", "acme", "coop_claim", "coop")
    [item] = site.json("explain", f"payout:{site.payout_of(claim)}")["items"]
    assert item["reward"]["amount"] == "20.00"  # half the claim is 50.00; the fund held 20.00
    assert (item["reward"]["details"]["limit"], item["reward"]["details"]["balance"]) == ("balance", "20.00")
    assert [(f["holder"], f["amount"]) for f in item["funds"]] == [("acme", "-20.00")]
    text = site.ok("explain", f"payout:{site.payout_of(claim)}").stdout
    assert '"limit": "balance"' in text and "fund of coop for acme: -20.00 USD (coop: co-op claim 50% of 100.00 USD)" \
        in text
