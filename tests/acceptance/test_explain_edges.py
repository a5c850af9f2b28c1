"""``payhub explain`` at its edges: literal brackets, one time format, the reference each attempt itself got,
reference bounds, checked ``--actor`` names, and output that ends its lines before anything else is written."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cli_helpers import invoke, write_config
from click.testing import Result
from test_disburse import BASE, drain, schedule

from payhub import provenance
from payhub.cli import output
from payhub.db.engine import make_engine
from payhub.runtime import Runtime
from payhub.testing import FakeRail

SETTINGS = """\
[payees]
file = "payees.csv"
[sources.deals]
plugin = "file"
path = "deals.csv"
settle_seconds = 0
[programs.pct]
calculator = "percentage"
percent = "10"
event_types = ["deal_won"]
clawback_event_types = ["deal_lost"]
[rails.export]
plugin = "csv_export"
directory = "out"
[routing]
default_rail = "export"
"""
HEADER = ("id", "type", "occurred_at", "payee_id", "amount", "currency")
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
ANY_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[^\s,):\"]*")


class Site:
    def __init__(self, root: Path, db_url: str) -> None:
        self.root, self.db_url, self.config = root, db_url, root / "payhub.toml"

    def cli(self, *args: str) -> Result:
        return invoke("-c", str(self.config), *args)

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        return result

    def add(self, *rows: tuple[str, ...]) -> None:
        with (self.root / "deals.csv").open("a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)

    def one(self, query: str) -> Any:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(query)).scalar_one()
        finally:
            engine.dispose()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 400)
    monkeypatch.setattr(output.err_console, "width", 400)


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """p2 is paid 25.00 for a won deal; the deal is lost, so an adjustment of -25.00 is carried."""
    root = tmp_path_factory.mktemp("site")
    write_config(root, module_db_url, SETTINGS)
    (root / "payees.csv").write_text("id,name,country\np2,Partner Two,US\n")
    s = Site(root, module_db_url)
    (root / "deals.csv").write_text(",".join(HEADER) + "\n")
    s.add(("D-1", "deal_won", "2026-10-01T00:00:00Z", "p2", "250.00", "USD"))
    s.ok("db", "upgrade")
    s.ok("run", "--once")
    s.add(("D-1", "deal_lost", "2026-10-20T00:00:00Z", "p2", "", ""))
    s.ok("run", "--once")
    return s


def test_an_adjustment_is_marked_in_the_text(site: Site) -> None:
    adjustment = site.one("SELECT id FROM rewards WHERE amount_minor < 0")
    first = site.ok("explain", str(adjustment)).stdout.splitlines()[0]
    assert first == f"Reward {adjustment}: -25.00 USD to p2 (carried) [adjustment]"
    record = site.ok("explain", "record:D-1").stdout
    assert f"Reward {adjustment}: -25.00 USD to p2 (carried) [adjustment]" in record


def test_explain_writes_every_time_in_one_format(site: Site) -> None:
    payout_id = site.one("SELECT id FROM payouts")
    for ref in (f"payout:{payout_id}", "record:D-1"):
        text = site.ok("explain", ref).stdout
        times = ANY_TIME.findall(text)
        assert times and all(re.fullmatch(ISO, t) for t in times), [t for t in times if not re.fullmatch(ISO, t)]
        assert "+00:00" not in text
        data = json.loads(site.ok("explain", ref, "--format", "json").stdout)
        found = ANY_TIME.findall(json.dumps(data))
        assert found and all(re.fullmatch(ISO, t) for t in found), [t for t in found if not re.fullmatch(ISO, t)]


@pytest.mark.parametrize("ref", ["payout:0", "reward:9223372036854775808", "event:-1", "event:abc", "payout:",
                                 "EVENT:x", "reward:1.5", "payout:\u0661", "0", "9223372036854775808"])
def test_a_reference_with_a_bad_id_is_a_usage_error(site: Site, ref: str) -> None:
    result = site.cli("explain", ref)
    assert result.exit_code == 2, result.output
    assert "1 to 9223372036854775807" in result.stderr or "1<=x<=9223372036854775807" in result.stderr


def test_reference_kinds_are_case_insensitive_and_unknown_ids_exit_1(site: Site) -> None:
    payout_id = site.one("SELECT id FROM payouts")
    lower = json.loads(site.ok("explain", f"payout:{payout_id}", "--format", "json").stdout)
    upper = json.loads(site.ok("explain", f"PAYOUT:{payout_id}", "--format", "json").stdout)
    assert upper["payout"] == lower["payout"] and upper["items"] == lower["items"]
    assert site.ok("explain", "Reward:1").stdout.startswith("Reward 1: 25.00 USD to p2")
    missing = site.cli("explain", "payout:9223372036854775807")
    assert missing.exit_code == 1 and missing.stderr.strip() == "error: payout 9223372036854775807 does not exist"
    assert site.cli("explain", "deals:record:D-404:deal_won").exit_code == 1
    assert site.cli("explain", "--", "-1").exit_code == 1  # a CRM id, not a reference with a kind


@pytest.mark.parametrize("actor", ["finance:\x1b[31mbob\u202e", "finance:bob\u202e", " bob", "bob ", "bob\t",
                                   "bo\u200bb", "\ufeffbob", "", "bob\u2028"])
def test_an_actor_that_does_not_print_as_itself_is_refused(site: Site, actor: str) -> None:
    before = site.one("SELECT count(*) FROM audit_log")
    result = site.cli("--actor", actor, "audit", "query", "--limit", "1")
    assert result.exit_code == 2, result.output
    assert "--actor" in result.stderr
    assert site.one("SELECT count(*) FROM audit_log") == before
    assert site.cli("audit", "query", "--actor", actor).exit_code == 2


def test_an_actor_is_recorded_in_nfc(site: Site) -> None:
    decomposed = "finance:jose\u0301"
    site.ok("--actor", decomposed, "audit", "query", "--limit", "1")
    recorded = site.one("SELECT actor FROM audit_log ORDER BY seq DESC LIMIT 1")
    assert recorded == unicodedata.normalize("NFC", decomposed) != decomposed


@pytest.fixture
def fake_rail(make_runtime: Any, tmp_path: Path) -> tuple[Runtime, FakeRail]:
    """A runtime whose rail ``r`` is a FakeRail that can look payouts up."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\n")
    rt = make_runtime(BASE + '\n[rails.r]\nplugin = "fake"\nretry_initial_seconds = 0\nretry_max_seconds = 0\n')
    return rt, rt.plugins.rails["r"]


def test_each_attempt_shows_only_the_reference_it_got(fake_rail: tuple[Runtime, FakeRail]) -> None:
    """A send whose answer never came returned nothing; the lookup that followed found the rail's reference."""
    rt, rail = fake_rail
    [p] = schedule(rt, ("p1", "100"))
    rail.plan("timeout_after_accept")
    drain(rt)
    with rt.engine.connect() as conn:
        answer = provenance.explain(conn, f"payout:{p.id}", {"r": "fake"})
    assert answer is not None and answer["kind"] == "payout"
    ref = answer["payout"]["provider_ref"]
    assert ref and ref.startswith("fake-")
    assert [(a["kind"], a["number"], a["outcome"], a["provider_ref"]) for a in answer["payout"]["attempts"]] == [
        ("send", 1, "unknown", None), ("lookup", 1, "accepted", ref)]


def test_an_accepted_send_keeps_its_reference(fake_rail: tuple[Runtime, FakeRail]) -> None:
    rt, _rail = fake_rail
    [p] = schedule(rt, ("p1", "100"))
    drain(rt)
    with rt.engine.connect() as conn:
        answer = provenance.explain(conn, f"payout:{p.id}", {"r": "fake"})
    assert answer is not None and answer["kind"] == "payout"
    assert [(a["kind"], a["provider_ref"]) for a in answer["payout"]["attempts"]] == [
        ("send", answer["payout"]["provider_ref"])]


def test_the_table_ends_its_line_before_a_message_on_standard_error(tmp_path: Path, db_url: str,
                                                                    subprocess_env: dict[str, str]) -> None:
    """Both streams into one pipe, as with ``2>&1 | cat``: the table is whole and ends with a newline before the
    error written after it."""
    write_config(tmp_path, db_url, BASE.replace('plugin = "fake"', 'plugin = "file"\npath = "deals.csv"')
                 + '\n[rails.r]\nplugin = "fake"\n[rails.bad]\nplugin = "broken_rail"\n')
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\n")
    (tmp_path / "deals.csv").write_text(",".join(HEADER) + "\n")
    env = {**subprocess_env, "PAYHUB_CONFIG": str(tmp_path / "payhub.toml"), "COLUMNS": "100"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from payhub.cli import main; main()", *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False)

    assert run("db", "upgrade").returncode == 0
    done = run("run", "--once")
    assert done.returncode == 4, done.stdout
    lines = done.stdout.splitlines(keepends=True)
    bottom = max(i for i, line in enumerate(lines) if line.startswith("└"))
    error = next(i for i, line in enumerate(lines) if line.startswith("error: plugin rails.bad"))
    assert lines[bottom].rstrip("\n").endswith("┘") and lines[bottom].endswith("\n")
    assert bottom < error and done.stdout.endswith("\n")


@pytest.mark.parametrize("actor", ["token:alice", "TOKEN:alice", "webhook:orders"])
def test_a_command_cannot_sign_as_an_api_token_or_a_webhook_sender(site: Site, actor: str) -> None:
    before = site.one("SELECT count(*) FROM audit_log")
    result = site.cli("--actor", actor, "audit", "query", "--limit", "1")
    assert result.exit_code == 2 and "HTTP face" in result.stderr, result.output
    assert site.one("SELECT count(*) FROM audit_log") == before
    assert site.cli("audit", "query", "--actor", actor, "--limit", "1").exit_code == 0  # looking for them is fine
