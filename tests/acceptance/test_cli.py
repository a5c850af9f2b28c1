"""The ``payhub`` command line on a small site: listings, explain, audit query/export/verify/trace, daemon signals."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import PAYHUB, CliSite, invoke

from payhub.audit import GENESIS, canonical_json, entry_hash
from payhub.cli import output
from payhub.db import migrate

COLUMNS = ["seq", "at", "actor", "action", "subject_type", "subject_id", "outcome", "origin", "detail"]

CONFIG = """\
[database]
url = "sqlite:///payhub.db"

[daemon]
idle_seconds = 0.1

[payees]
file = "payees.csv"

[sources.deals]
plugin = "file"
path = "deals.csv"
settle_seconds = 0
poll_interval_seconds = 0.2

[programs.pct]
calculator = "percentage"
percent = "10"

[rails.export]
plugin = "csv_export"
directory = "out"

[routing]
default_rail = "export"
"""
DEALS = """\
id,type,occurred_at,payee_id,amount,currency,product
D-1,deal_won,2026-10-01T00:00:00Z,p1,1000.00,USD,widget
D-2,deal_won,2026-10-02T00:00:00Z,p2,200.00,EUR,gadget
D-3,deal_won,2026-10-03T00:00:00Z,p3,300.00,USD,gizmo
D-4,deal_won,2026-10-04T00:00:00Z,p1,-5.00,USD,refund
D-5,deal_won
"""
PAYEES = "id,name,country\np1,Partner One,US\np2,Partner Zwei,DE\n"


class Site(CliSite):
    """A settings directory with its SQLite database ``payhub.db``."""

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.root / "payhub.db")
        try:
            rows = db.execute(query, params).fetchall()
            db.commit()
            return rows
        finally:
            db.close()

    def audit(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(self.root / "payhub.db")
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM audit_log ORDER BY seq")]
        finally:
            db.close()


def build(root: Path) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    (root / "payhub.toml").write_text(CONFIG)
    (root / "deals.csv").write_text(DEALS)
    (root / "payees.csv").write_text(PAYEES)
    return Site(root)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables and messages on one line each, whatever the terminal."""
    monkeypatch.setattr(output.console, "width", 400)
    monkeypatch.setattr(output.err_console, "width", 400)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small site after `db upgrade` and one `run --once`; tests work on copies of it."""
    site = build(tmp_path_factory.mktemp("world") / "site")
    assert invoke("-c", str(site.config), "db", "upgrade").exit_code == 0
    result = invoke("-c", str(site.config), "run", "--once")
    assert result.exit_code == 0, result.output
    return site.root


@pytest.fixture
def site(world: Path, tmp_path: Path) -> Site:
    return Site(Path(shutil.copytree(world, tmp_path / "site")))


# ----------------------------------------------------------------------------------------------- db and run


def test_db_upgrade_then_run_once(tmp_path: Path) -> None:
    site = build(tmp_path)
    head = migrate.head_revision()
    assert site.ok("db", "upgrade").stdout.strip() == f"database at revision {head} (was empty)"
    assert site.ok("db", "upgrade").stdout.strip() == f"database at revision {head}"
    result = site.ok("run", "--once")
    counts = {line.split("│")[1].strip(): int(line.split("│")[2]) for line in result.stdout.splitlines()
              if line.startswith("│")}
    assert counts == {"ingested": 5, "calculated": 3, "scheduled": 3, "disbursed": 2, "settled": 0}
    exported = list((tmp_path / "out").glob("payouts-*.csv"))
    assert len(exported) == 1  # one batch, one file
    assert [r["amount"] for r in csv.DictReader(exported[0].open(newline=""))] == ["100.00", "20.00"]
    assert site.sql("SELECT payee_id, currency, amount_minor, status FROM payouts ORDER BY id") == [
        ("p1", "USD", 10000, "sent"), ("p2", "EUR", 2000, "sent")]
    # A second pass finds nothing new to do.
    result = site.ok("run", "--once")
    assert all(line.split("│")[2].strip() == "0" for line in result.stdout.splitlines() if line.startswith("│"))
    assert len(list((tmp_path / "out").glob("payouts-*.csv"))) == 1


@pytest.mark.parametrize("state", ["empty", "out_of_date"])
def test_commands_refuse_a_database_that_is_not_upgraded(tmp_path: Path, state: str) -> None:
    site = build(tmp_path)
    if state == "out_of_date":
        site.ok("db", "upgrade")
        site.sql("UPDATE alembic_version SET version_num = '0000'")
    for command in (["run", "--once"], ["run"], ["events", "list"], ["audit", "verify"]):
        result = site.cli(*command)
        assert result.exit_code == 3, (command, result.output)
        assert "run `payhub db upgrade`" in result.stderr
        assert ("an empty database" if state == "empty" else "revision 0000") in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_daemon_works_and_stops_cleanly_on_signal(site: Site, subprocess_env: dict[str, str],
                                                  signum: signal.Signals) -> None:
    log = site.root / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen([*PAYHUB, "-c", str(site.config), "run"], env=subprocess_env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "payhub started" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with (site.root / "deals.csv").open("a") as fh:  # new work while it runs is picked up
            fh.write("D-9,deal_won,2026-10-09T00:00:00Z,p1,90.00,USD,widget\n")
        while site.sql("SELECT r.status FROM rewards r JOIN events e ON e.id = r.event_id "
                       "WHERE e.object_id = 'D-9'") != [("sent",)]:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        stopped_at = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - stopped_at < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"received {signum.name}" in text and "payhub stopped" in text
    assert "Traceback" not in text
    assert "audit log OK" in site.ok("audit", "verify").stdout


# ------------------------------------------------------------------------------------------------- listings


def test_events_list_shows_quarantined_rows_with_reasons(site: Site) -> None:
    rows = site.json("events", "list")
    assert [(r["id"], r["status"]) for r in rows] == [
        (5, "quarantined"), (4, "quarantined"), (3, "calculated"), (2, "calculated"), (1, "calculated")]
    reasons = {r["id"]: r["reason"] for r in rows}
    assert reasons[4] == "amount -5.00 is negative"
    assert reasons[5] == "deals.csv line 6: row has 2 columns, the header has 7"
    assert reasons[1] is None
    assert rows[4]["object"] == "record:D-1" and rows[4]["amount"] == "1000.00" and rows[4]["payee"] == "p1"

    table = site.ok("events", "list").stdout
    lines = {line.split("│")[1].strip(): line for line in table.splitlines() if line.startswith("│")}
    assert "quarantined" in lines["4"] and "amount -5.00 is negative" in lines["4"]
    assert "row has 2 columns, the header has 7" in lines["5"]
    assert "reason" in table and "record:D-1" in lines["1"]

    parsed = list(csv.DictReader(io.StringIO(site.ok("events", "list", "--format", "csv").stdout)))
    assert [(r["id"], r["status"], r["reason"]) for r in parsed[:2]] == [
        ("5", "quarantined", "deals.csv line 6: row has 2 columns, the header has 7"),
        ("4", "quarantined", "amount -5.00 is negative")]

    only = site.json("events", "list", "--status", "quarantined")
    assert [r["id"] for r in only] == [5, 4]
    assert [r["id"] for r in site.json("events", "list", "--limit", "2")] == [5, 4]


def test_rewards_and_payouts_list(site: Site) -> None:
    rewards = site.json("rewards", "list")
    assert [(r["id"], r["event"], r["program"], r["payee"], r["amount"], r["currency"], r["status"], r["payout"])
            for r in rewards] == [
        (3, 3, "pct", "p3", "30.00", "USD", "held", None),
        (2, 2, "pct", "p2", "20.00", "EUR", "sent", 2),
        (1, 1, "pct", "p1", "100.00", "USD", "sent", 1)]
    assert rewards[0]["reason"] == "payee p3 has no payout details in the registry"
    assert [r["id"] for r in site.json("rewards", "list", "--status", "held")] == [3]
    assert [r["id"] for r in site.json("rewards", "list", "--payee", "p2")] == [2]

    payouts = site.json("payouts", "list")
    assert [(p["id"], p["payee"], p["rail"], p["amount"], p["currency"], p["items"], p["status"], p["attempts"])
            for p in payouts] == [
        (2, "p2", "export", "20.00", "EUR", 1, "sent", 1), (1, "p1", "export", "100.00", "USD", 1, "sent", 1)]
    assert all(p["key"].startswith("ph-") and p["provider_ref"].startswith("payouts-") for p in payouts)
    table = site.ok("payouts", "list").stdout
    assert "provider_ref" in table and "100.00" in table
    parsed = list(csv.DictReader(io.StringIO(site.ok("payouts", "list", "--format", "csv").stdout)))
    assert [r["amount"] for r in parsed] == ["20.00", "100.00"]


def test_explain_shows_program_calculator_parameters_and_inputs(site: Site) -> None:
    text = site.ok("explain", "1").stdout
    assert "Reward 1: 100.00 USD to p1 (sent)" in text
    assert "Program pct version 1, calculator percentage" in text
    assert '"percent": "10"' in text
    assert "Event 1 deals:record:D-1:deal_won" in text
    assert "deal_won at 2026-10-01T00:00:00.000000Z, amount 1000.00 USD, payee p1" in text
    assert '"product": "widget"' in text
    assert "Payout 1" in text

    data = site.json("explain", "3")
    assert data["program"]["name"] == "pct" and data["program"]["version"] == 1
    assert data["program"]["calculator"] == "percentage" and data["program"]["parameters"]["percent"] == "10"
    assert data["event"]["key"] == "deals:record:D-3:deal_won" and data["event"]["amount"] == "300.00"
    assert data["event"]["attributes"] == {"product": "gizmo"}
    assert data["reward"]["hold_reason"] == "payee p3 has no payout details in the registry"
    assert "Held" in site.ok("explain", "3").stdout

    missing = site.cli("explain", "99")
    assert missing.exit_code == 1 and "reward 99 does not exist" in missing.stderr


def test_rewards_release_moves_held_to_pending_and_audits_the_actor(site: Site) -> None:
    before = len(site.audit())
    result = site.ok("rewards", "release", "3", "--reason", "payee onboarded", actor="finance:bob")
    assert "released 1 reward(s): 1 pending" in result.stdout
    assert site.sql("SELECT status, hold_code, hold_reason FROM rewards WHERE id = 3") == [("pending", None, None)]
    entries = site.audit()[before:]
    assert [(e["actor"], e["action"], e["subject_type"], e["subject_id"], e["outcome"], json.loads(e["detail"]))
            for e in entries] == [("finance:bob", "reward.released", "reward", "3", "ok", {
                "reason": "payee onboarded", "hold_code": "no_payee", "to": "pending",
                "hold_reason": "payee p3 has no payout details in the registry"})]
    assert entries[0]["origin"].startswith("cli@")

    # Rewards that are not held are refused, and nothing is changed or audited.
    for ids, message in ((["1"], "reward 1 is sent in payout 1, not held"), (["3"], "reward 3 is pending, not held"),
                         (["99"], "reward 99 does not exist")):
        refused = site.cli("rewards", "release", *ids, "--reason", "x", actor="finance:bob")
        assert refused.exit_code == 1 and message in refused.stderr
    assert len(site.audit()) == before + 1
    assert site.cli("rewards", "release", "3").exit_code == 2  # --reason is required


# ------------------------------------------------------------------------------------------------- audit


def test_audit_query_filters_and_formats(site: Site) -> None:
    snapshot = site.audit()

    def query(*args: str) -> list[dict[str, Any]]:
        before = len(site.audit())
        rows = site.json("audit", "query", *args)
        assert site.audit()[before]["action"] == "audit.query"  # the read itself is recorded
        return rows

    quarantined = query("--action", "event.quarantined")
    assert [(r["subject_type"], r["subject_id"], r["outcome"]) for r in quarantined] == [
        ("event", "4", "quarantined"), ("event", "5", "quarantined")]
    assert quarantined[0]["detail"] == {"key": quarantined[0]["detail"]["key"], "reason": "amount -5.00 is negative"}

    payout_actions = [r["action"] for r in query("--action", "payout.*")]
    assert set(payout_actions) == {"payout.created", "payout.sending", "payout.sent"}
    assert payout_actions == [e["action"] for e in snapshot if e["action"].startswith("payout.")]

    payout_1 = query("--subject", "payout:1")
    assert [r["action"] for r in payout_1] == ["payout.created", "payout.sending", "payout.sent"]
    assert {r["subject_id"] for r in query("--subject", "3")} == {"3"}
    assert {r["subject_type"] for r in query("--subject", "3")} >= {"event", "reward"}
    assert [r["subject_id"] for r in query("--subject", "reward:3", "--action", "reward.held")] == ["3"]

    site.ok("audit", "query", "--limit", "1", actor="auditor:alice")
    by_alice = query("--actor", "auditor:alice")
    assert [(r["actor"], r["action"]) for r in by_alice] == [("auditor:alice", "audit.query")]
    assert by_alice[0]["detail"] == {"filters": {}, "rows": 1}
    assert all(r["actor"] == "payhub" for r in query("--actor", "payhub"))
    assert len(query("--limit", "3")) == 3

    times = sorted({e["at"] for e in snapshot})
    middle = times[len(times) // 2]
    since = query("--since", middle)
    assert [r["seq"] for r in since] == [e["seq"] for e in site.audit() if e["at"] >= middle][:len(since)]
    assert since[0]["at"] == middle and len(since) > 1
    until = query("--until", middle)
    assert [r["seq"] for r in until] == [e["seq"] for e in snapshot if e["at"] < middle]
    assert query("--since", "2999-01-01") == []
    assert len(query("--until", "2000-01-01T00:00:00Z")) == 0
    bad = site.cli("audit", "query", "--since", "last tuesday")
    assert bad.exit_code == 2 and "ISO 8601" in bad.stderr

    text = site.ok("audit", "query", "--action", "event.quarantined", "--format", "csv").stdout
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == COLUMNS
    assert [r["subject_id"] for r in parsed] == ["4", "5"]
    assert json.loads(parsed[0]["detail"])["reason"] == "amount -5.00 is negative"
    table = site.ok("audit", "query", "--action", "event.quarantined").stdout
    assert "audit log" in table and "event.quarantined" in table and "amount -5.00 is negative" in table


def _check_chain(rows: list[dict[str, Any]]) -> None:
    """Recompute an exported chain independently of the database."""
    prev = GENESIS
    for n, row in enumerate(rows, start=1):
        assert int(row["seq"]) == n and row["prev_hash"] == prev
        fields = {**row, "seq": int(row["seq"]), "detail": canonical_json(row["detail"])}
        assert entry_hash(fields) == row["hash"]
        prev = row["hash"]


def test_audit_export_jsonl_and_csv(site: Site, tmp_path: Path) -> None:
    count = len(site.audit())
    lines = site.ok("audit", "export").stdout.splitlines()
    exported = [json.loads(line) for line in lines]
    assert len(exported) == count
    assert list(exported[0]) == [*COLUMNS, "prev_hash", "hash"]
    _check_chain(exported)
    assert site.audit()[count]["action"] == "audit.export"

    target = tmp_path / "audit.csv"
    result = site.ok("audit", "export", "--format", "csv", "--output", str(target))
    assert f"exported {count + 1} entries to {target}" in result.stderr
    with target.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == count + 1
    _check_chain([{**r, "detail": json.loads(r["detail"])} for r in rows])
    assert rows[-1]["action"] == "audit.export"

    filtered = site.ok("audit", "export", "--action", "reward.*").stdout.splitlines()
    actions = [json.loads(line)["action"] for line in filtered]
    assert sorted(actions) == ["reward.calculated"] * 3 + ["reward.held"] + ["reward.scheduled"] * 2
    assert actions == [e["action"] for e in site.audit() if e["action"].startswith("reward.")]


def test_audit_verify_passes_and_anchors_to_an_earlier_head(site: Site) -> None:
    entries = site.audit()
    result = site.ok("audit", "verify")
    assert result.stdout.strip() == f"audit log OK: {len(entries)} entries, head {entries[-1]['hash']}"
    # The head printed earlier is still accepted after the log grew (this verify appended to it).
    assert "audit log OK" in site.ok("audit", "verify", "--expect-head", entries[-1]["hash"]).stdout
    other = site.cli("audit", "verify", "--expect-head", "f" * 64)
    assert other.exit_code == 1 and "does not contain the expected head" in other.stdout


TAMPERING = {
    "edit": (["UPDATE audit_log SET detail = '{\"reason\":\"nothing to see\"}' WHERE seq = 5"], 5,
             "entry 5 was altered"),
    "edit_actor": (["UPDATE audit_log SET actor = 'someone-else' WHERE seq = 9"], 9, "entry 9 was altered"),
    "delete": (["DELETE FROM audit_log WHERE seq = 7"], 7, "entry 7 is missing"),
    "swap": (["UPDATE audit_log SET seq = -1 WHERE seq = 6", "UPDATE audit_log SET seq = 6 WHERE seq = 8",
              "UPDATE audit_log SET seq = 8 WHERE seq = -1"], 6, "entry 6 does not link to entry 5"),
    "swap_details": (["UPDATE audit_log SET detail = CASE seq WHEN 6 THEN (SELECT detail FROM audit_log "
                      "WHERE seq = 7) ELSE (SELECT detail FROM audit_log WHERE seq = 6) END "
                      "WHERE seq IN (6, 7)"], 6, "entry 6 was altered"),
}


@pytest.mark.parametrize("how", list(TAMPERING), ids=list(TAMPERING))
def test_audit_verify_names_the_first_tampered_entry(site: Site, how: str) -> None:
    statements, first_bad, problem = TAMPERING[how]
    assert len(site.audit()) > 12
    for statement in statements:
        site.sql(statement)
    result = site.cli("audit", "verify")
    assert result.exit_code == 1
    assert f"audit log FAILED verification at entry {first_bad}: {problem}" in result.stdout
    recorded = site.audit()[-1]  # the failed verification is itself on the record
    assert recorded["action"] == "audit.verify"
    assert json.loads(recorded["detail"])["ok"] is False
    assert json.loads(recorded["detail"])["first_bad"] == first_bad


def test_audit_verify_detects_a_cut_off_end(site: Site) -> None:
    last = site.audit()[-1]["seq"]
    site.sql("DELETE FROM audit_log WHERE seq = ?", last)
    result = site.cli("audit", "verify")
    assert result.exit_code == 1 and f"at entry {last}:" in result.stdout


@pytest.mark.parametrize("command", [["query"], ["export"], ["verify"], ["trace", "D-1"], ["trace", "nothing"]],
                         ids=["query", "export", "verify", "trace", "trace-missing"])
def test_every_audit_read_is_audited(site: Site, command: list[str]) -> None:
    before = site.audit()
    result = site.cli("audit", *command, actor="auditor:carol")
    assert result.exit_code == (1 if command[-1] == "nothing" else 0), result.output
    after = site.audit()
    assert len(after) == len(before) + 1
    entry = after[-1]
    assert (entry["actor"], entry["action"], entry["subject_type"]) == (
        "auditor:carol", f"audit.{command[0]}", "audit_log")
    assert entry["prev_hash"] == before[-1]["hash"]
    if command[0] == "trace":
        assert json.loads(entry["detail"])["ref"] == command[1]
    assert "audit log OK" in site.ok("audit", "verify").stdout


def test_audit_trace_follows_a_crm_record_to_its_attempts(site: Site) -> None:
    lines = site.ok("audit", "trace", "D-1").stdout.splitlines()
    assert lines[0] == "event 1 deals:record:D-1:deal_won [calculated]"
    assert lines[1] == "  program pct: rewarded (version 1)"
    assert lines[2] == "  reward 1 100.00 USD to p1 [sent]"
    assert lines[3].startswith("    payout 1 100.00 USD via export [sent] key ph-")
    assert " ref payouts-" in lines[3]
    assert lines[4] == "      send #1 accepted"
    assert len(lines) == 5

    chain = json.loads(site.ok("audit", "trace", "D-1", "--format", "json").stdout)
    assert len(chain) == 1
    node = chain[0]
    assert node["event"]["key"] == "deals:record:D-1:deal_won"
    payout = node["rewards"][0]["payouts"][0]
    assert (payout["id"], payout["rail"], payout["status"]) == (1, "export", "sent")
    assert [(a["kind"], a["number"], a["outcome"]) for a in payout["attempts"]] == [("send", 1, "accepted")]
    key = payout["key"]
    # The same chain from the event key, the reward and the payout.
    for ref in ("deals:record:D-1:deal_won", "reward:1", "payout:1", "event:1"):
        other = json.loads(site.ok("audit", "trace", ref, "--format", "json").stdout)
        assert other[0]["rewards"][0]["payouts"][0]["key"] == key

    held = site.ok("audit", "trace", "D-3").stdout
    assert "reward 3 30.00 USD to p3 [held] no_payee: payee p3 has no payout details" in held
    assert "    payout " not in held
    quarantined = site.ok("audit", "trace", "D-4").stdout
    assert "[quarantined] amount -5.00 is negative" in quarantined
    missing = site.cli("audit", "trace", "D-404")
    assert missing.exit_code == 1 and "nothing found for 'D-404'" in missing.stderr
