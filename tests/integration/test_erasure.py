"""``payhub payees erase``: a paid payee's name, email, IBAN, alias, TIN and personal event attribute leave the
database (the SQLite file and its -wal and -shm searched byte by byte, as UTF-8, UTF-16 and JSON text), the audit
chain and the checkpoints signed before still verify, the payees file cannot bring the data back (look-alike ids
included), the observers are told; the values are found in any case, Unicode form or escape while JSON keeps its
numbers; a payee with money still moving is refused with the rewards named, a second erasure finishes the steps
after the commit."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from cli_helpers import CliSite, sql, write_site

from payhub import signing
from payhub.compliance import erasure
from payhub.db.engine import sqlite_file
from payhub.http.app import create_app
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.testing import write_distribution
from payhub.tokens import create

NAME = "Zoë Quixote-Marchetti"
EMAIL = "zoe.quixote@example.org"
IBAN = "FR7630006000011234567890189"
ALIAS = "Zeldina Marchetti-Q"
TIN = "12-3456789"
CONTACT = "Yannick Brautigam-Oduya"
VALUES = [NAME, EMAIL, IBAN, ALIAS, TIN, "123456789", CONTACT]

PAYEES = (
    "id,name,country,currency,email,iban,aliases,tin,tax_form,form_date,min_payout\n"
    f"p1,{NAME},US,USD,{EMAIL},{IBAN},{ALIAS},{TIN},W-9,2026-01-15,\n"
    "p2,Second Partner,US,USD,second@example.org,,,,,,100000\n"
)
DEALS = (
    "id,type,occurred_at,payee_id,amount,currency,contact_name,region\n"
    f"D-1,deal_won,2026-10-01T00:00:00Z,p1,1000.00,USD,{CONTACT},west\n"
    f"D-2,deal_won,2026-10-02T00:00:00Z,p1,2000.00,USD,{CONTACT},west\n"
    "D-3,deal_won,2026-10-03T00:00:00Z,p2,500.00,USD,Other Contact,east\n"
)
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

[audit]
checkpoint_key_file = "checkpoint.pem"
checkpoint_dir = "checkpoints"

[hooks.erased_log]
path = "erased.jsonl"
"""
HOOK = '''
import json
from payhub.api import ConfigPath, PluginSettings, hookimpl


class ErasedLogSettings(PluginSettings):
    path: ConfigPath


class ErasedLog:
    """Appends each payhub_payee_erased call to a JSON-lines file."""
    settings_model = ErasedLogSettings

    def __init__(self, settings):
        self.path = settings.path

    @hookimpl
    def payhub_payee_erased(self, payee_id):
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"payee_id": payee_id}) + "\\n")
'''


class Site(CliSite):
    def __init__(self, root: Path, db_url: str) -> None:
        super().__init__(root)
        self.db_url = db_url

    def rows(self, query: str, **params: Any) -> list[Any]:
        return sql(self.db_url, query, **params)


@pytest.fixture
def site(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    dist = write_distribution(tmp_path / "dist", "payhub-erased-log",
                              "[payhub.hooks]\nerased_log = erased_log:ErasedLog\n", modules={"erased_log": HOOK})
    monkeypatch.syspath_prepend(str(dist))
    root = tmp_path / "site"
    root.mkdir()
    pem, _key = signing.new_private_key()
    (root / "checkpoint.pem").write_text(pem)
    write_site(root, db_url, SETTINGS, deals=DEALS, payees=PAYEES)
    s = Site(root, db_url)
    s.ok("db", "upgrade")
    s.ok("run", "--once")
    assert s.rows("SELECT status FROM payouts WHERE payee_id = 'p1'") == [("sent",)]
    assert s.rows("SELECT status FROM rewards WHERE payee_id = 'p2'") == [("carried",)]
    return s


def forms(value: str) -> list[bytes]:
    """How ``value`` may sit in a database file: UTF-8 (plain and JSON-escaped) and UTF-16 (either byte order)."""
    texts = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return sorted({t.encode(codec) for t in texts for codec in ("utf-8", "utf-16-le", "utf-16-be")})


def left_in_files(db_url: str, values: list[str]) -> list[str]:
    path = sqlite_file(db_url)
    assert path is not None
    found = []
    for name in (path, f"{path}-wal", f"{path}-shm"):
        if not Path(name).exists():
            continue
        data = Path(name).read_bytes()
        found += [f"{value!r} in {Path(name).name}" for value in values for form in forms(value) if form in data]
    return found


def audit_details(site: Site) -> str:
    return "\n".join(d for (d,) in site.rows("SELECT detail FROM audit_log ORDER BY seq"))


@pytest.mark.slow  # the command line runs the pipeline, verifies twice and vacuums
def test_erasure_removes_every_value_and_the_chain_still_verifies(site: Site) -> None:
    if site.db_url.startswith("sqlite"):
        assert left_in_files(site.db_url, VALUES)  # the search finds the values while they are there
    verified = site.ok("audit", "verify")
    assert "signed a checkpoint" in verified.stderr
    checkpoints_before = sorted((site.root / "checkpoints").glob("*.jsonl"))
    assert checkpoints_before

    result = site.ok("payees", "erase", "p1", "--reason", "erasure request ER-1", "--yes", actor="user:dpo")
    assert "payee p1 erased: now erased-" in result.stdout

    (name, email, details, aliases, tin_sealed, erased_at, tax_form, tin_status, country), = site.rows(
        "SELECT name, email, details, aliases, tin_sealed, erased_at, tax_form, tin_status, country FROM payees "
        "WHERE id = 'p1'")
    assert name.startswith("erased-") and (email, details, aliases, tin_sealed) == (None, "{}", "[]", None)
    assert erased_at is not None and (tax_form, tin_status, country) == ("W-9", "valid", "US")  # kept
    assert site.rows("SELECT count(*) FROM personal_keys WHERE subject = 'p1'") == [(0,)]
    events = site.rows("SELECT raw, attributes, amount FROM events WHERE payee_id = 'p1' ORDER BY id")
    assert [(raw, json.loads(attributes), amount) for raw, attributes, amount in events] == [
        (None, {"region": "west"}, "1000.00"), (None, {"region": "west"}, "2000.00")]
    # amounts, currencies and statuses are kept
    assert site.rows("SELECT amount_minor, currency, status FROM payouts WHERE payee_id = 'p1'") == [
        (30000, "USD", "sent")]
    # the other payee is untouched
    assert site.rows("SELECT name, email FROM payees WHERE id = 'p2'") == [("Second Partner", "second@example.org")]

    (entry,) = site.rows("SELECT actor, detail FROM audit_log WHERE action = 'payee.erased'")
    assert entry[0] == "user:dpo"
    detail = json.loads(entry[1])
    assert detail["reason"] == "erasure request ER-1"
    assert detail["counts"]["events"] == 2 and detail["counts"]["keys"] == 1

    verified = site.ok("audit", "verify")
    assert "checked against" in verified.stderr and "signed checkpoint" in verified.stderr
    assert not any(value in audit_details(site) for value in VALUES)
    if site.db_url.startswith("sqlite"):
        assert left_in_files(site.db_url, VALUES) == []
    assert (site.root / "erased.jsonl").read_text().splitlines() == ['{"payee_id": "p1"}']


def test_shown_audit_entries_open_sealed_values_until_the_erasure(site: Site) -> None:
    before = json.loads(site.ok("audit", "query", "--subject", "payee:p1", "--format", "json").stdout)
    assert before[0]["detail"]["name"] == NAME and before[0]["detail"]["aliases"] == [ALIAS]
    site.ok("payees", "erase", "p1", "--reason", "request", "--yes")
    after = json.loads(site.ok("audit", "query", "--subject", "payee:p1", "--format", "json").stdout)
    assert after[0]["detail"]["name"] == "[erased]" and after[0]["detail"]["aliases"] == ["[erased]"]
    # the export keeps the stored text, so each entry still matches its hash
    exported = [json.loads(line) for line in site.ok("audit", "export", "--subject", "payee:p1").stdout.splitlines()]
    assert exported[0]["detail"]["name"].startswith("pii:v1:p1:")


@pytest.mark.slow  # the command line runs the pipeline, verifies twice and vacuums
def test_unpaid_rewards_refuse_the_erasure_and_name_them(site: Site) -> None:
    (reward_id,) = [r for (r,) in site.rows("SELECT id FROM rewards WHERE payee_id = 'p2'")]
    result = site.cli("payees", "erase", "p2", "--reason", "request", "--yes")
    assert result.exit_code == 1
    assert f"reward {reward_id} (carried)" in result.output and "Settle or cancel" in result.output
    assert site.rows("SELECT name, erased_at FROM payees WHERE id = 'p2'") == [("Second Partner", None)]
    assert site.rows("SELECT count(*) FROM audit_log WHERE action = 'payee.erased'") == [(0,)]
    site.ok("rewards", "cancel", str(reward_id), "--reason", "owed nothing after the request")
    site.ok("payees", "erase", "p2", "--reason", "request", "--yes")


def test_an_unknown_payee_is_an_error(site: Site) -> None:
    unknown = site.cli("payees", "erase", "nobody", "--reason", "request", "--yes")
    assert unknown.exit_code == 1 and "payee 'nobody' does not exist" in unknown.output


@pytest.mark.slow  # the command line runs the pipeline and vacuums twice
def test_a_second_erasure_finishes_what_a_crash_after_the_commit_cut_short(site: Site,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt  # the process dies between the commit and the observers

    with monkeypatch.context() as patch:
        patch.setattr(erasure, "notify", killed)
        crashed = site.cli("payees", "erase", "p1", "--reason", "request", "--yes")
    assert crashed.exit_code != 0
    assert site.rows("SELECT erased_at IS NOT NULL FROM payees WHERE id = 'p1'") == [(1,)]  # committed
    assert not (site.root / "erased.jsonl").exists()  # the observers were never told

    again = site.ok("payees", "erase", "p1", "--reason", "request", "--yes")
    assert "was already erased at" in again.stdout and "no data changed" in again.stdout
    assert "database compacted" in again.stdout
    assert (site.root / "erased.jsonl").read_text().splitlines() == ['{"payee_id": "p1"}']
    assert site.rows("SELECT action FROM audit_log WHERE subject_id = 'p1' AND action LIKE 'payee.eras%' "
                     "ORDER BY seq") == [("payee.erased",), ("payee.erasure_finished",)]
    site.ok("payees", "erase", "p1", "--reason", "request", "--yes")  # as often as needed
    assert len((site.root / "erased.jsonl").read_text().splitlines()) == 2
    site.ok("audit", "verify")
    if site.db_url.startswith("sqlite"):
        assert left_in_files(site.db_url, VALUES) == []


def test_the_payees_file_does_not_bring_an_erased_payee_back(site: Site) -> None:
    site.ok("payees", "erase", "p1", "--reason", "request", "--yes")
    (site.root / "payees.csv").write_text(PAYEES.replace("p2,Second Partner", "p2,Second Partner Ltd"))
    site.ok("run", "--once")
    (name, email), = site.rows("SELECT name, email FROM payees WHERE id = 'p1'")
    assert name.startswith("erased-") and email is None
    assert site.rows("SELECT count(*) FROM personal_keys WHERE subject = 'p1'") == [(0,)]
    assert site.rows("SELECT count(*) FROM audit_log WHERE subject_type = 'payee' AND subject_id = 'p1' AND "
                     "action = 'payee.updated'") == [(0,)]
    assert not any(value in audit_details(site) for value in VALUES)
    site.ok("audit", "verify")


def test_without_yes_the_erasure_asks_first(site: Site) -> None:
    result = site.cli("payees", "erase", "p1", "--reason", "request")  # no input: the prompt aborts
    assert result.exit_code == 1 and "This cannot be undone" in result.output
    assert site.rows("SELECT erased_at FROM payees WHERE id = 'p1'") == [(None,)]


def test_no_audit_writer_records_a_payee_value_in_plain(site: Site) -> None:
    """The flow above (payees added, events ingested, rewards calculated, payouts scheduled and sent, the chain
    verified) leaves none of the payees' names, emails, aliases or payout details in the audit log unsealed."""
    (site.root / "payees.csv").write_text(PAYEES.replace("zoe.quixote@", "zoe.q@"))  # an update is audited too
    site.ok("run", "--once")
    site.ok("audit", "verify")
    details = audit_details(site)
    assert "pii:v1:p1:" in details
    for value in [*VALUES, "Second Partner", "second@example.org", "zoe.q@example.org"]:
        for form in {value, json.dumps(value)[1:-1]}:
            assert form not in details, value




@pytest.mark.slow  # the command line runs the pipeline, verifies twice and vacuums
def test_the_api_opens_sealed_values_for_operators_only(site: Site) -> None:
    rt = Runtime(load_settings(site.config))
    try:
        tokens = {role: create(rt, role, role) for role in ("auditor", "operator")}
        app = create_app(rt)

        def names(role: str) -> list[Any]:
            async def call() -> httpx.Response:
                transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
                async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
                    return await client.get("/api/v1/audit?subject=payee:p1",
                                            headers={"Authorization": f"Bearer {tokens[role]}"})

            response = anyio.run(call)
            assert response.status_code == 200, response.text
            return [item["detail"].get("name") for item in response.json()["items"]]

        assert names("operator")[0] == NAME
        assert names("auditor")[0] == "[sealed]"
        site.ok("payees", "erase", "p1", "--reason", "request", "--yes")
        assert names("operator")[0] == "[erased]"
    finally:
        rt.close()


FEED = """\
[sources.feed]
plugin = "file"
path = "feed.jsonl"
settle_seconds = 0
"""


def escaped(value: str, *, upper: bool = False) -> str:
    """Every character of ``value`` as a JSON ``\\uXXXX`` escape."""
    return "".join(f"\\u{ord(c):04X}" if upper else f"\\u{ord(c):04x}" for c in value)


@pytest.mark.slow  # the command line runs the pipeline twice and vacuums
def test_json_keeps_its_numbers_and_escaped_values_are_found(site: Site) -> None:
    """A bank code ``004`` does not touch the amount ``1004.00``; names and emails escaped as Python's json and
    Jackson write them are found inside quarantined records, which stay valid JSON."""
    (site.root / "payees.csv").write_text(PAYEES.replace("aliases,tin", "aliases,bank_code,tin").replace(
        f"{ALIAS},{TIN}", f"{ALIAS},004,{TIN}").replace(",,,,,,100000", ",,,,,,,100000"))
    common = '"type":"deal_won","occurred_at":"2026-10-05T00:00:00Z","payee_id":"p2","currency":"USD"'
    lines = [  # amounts as JSON numbers with a decimal point: quarantined as inexact, kept as written
        '{"id":"J-1",' + common + ',"amount":1004.00,"contact_name":' + json.dumps(NAME) + '}',
        '{"id":"J-2",' + common + ',"amount":2004.50,"contact_name":"' + json.dumps(NAME)[1:-1].upper()
        .replace("\\U00EB", "\\u00EB") + '","email":"zoe.quixote\\u0040example.org"}',
        '{"id":"J-3",' + common + ',"amount":7.25,"contact_name":"' + escaped(ALIAS, upper=True) + '","email":"'
        + escaped(EMAIL) + '"}',
    ]
    (site.root / "feed.jsonl").write_text("\n".join(lines) + "\n")
    site.config.write_text(site.config.read_text() + FEED)
    site.ok("run", "--once")
    stored = dict(site.rows("SELECT object_id, raw FROM events WHERE source = 'feed' AND status = 'quarantined'"))
    assert sorted(stored) == ["J-1", "J-2", "J-3"] and stored["J-1"] == lines[0]
    site.rows("UPDATE rewards SET details = :details WHERE payee_id = 'p1'",
              details=json.dumps({"base": "1004.00", "for": NAME, "n": 1004}, separators=(",", ":"))
              .replace('"n":1004', '"n":1004.00'))

    site.ok("payees", "erase", "p1", "--reason", "request", "--yes")
    after = dict(site.rows("SELECT object_id, raw FROM events WHERE source = 'feed'"))
    for object_id, amount in (("J-1", "1004.00"), ("J-2", "2004.50"), ("J-3", "7.25")):
        raw = after[object_id]
        assert f'"amount":{amount},' in raw  # the number as written
        record = json.loads(raw)  # still JSON
        assert record["contact_name"] == "[erased]" and record.get("email", "[erased]") == "[erased]"
        assert record["region" if "region" in record else "payee_id"] == "p2"
    assert {d for (d,) in site.rows("SELECT details FROM rewards WHERE payee_id = 'p1'")} == {
        '{"base":"1004.00","for":"[erased]","n":1004.00}'}
    site.ok("audit", "verify")


@pytest.mark.slow  # the command line runs the pipeline and vacuums
def test_other_spellings_of_the_values_are_found_in_free_text(site: Site) -> None:
    spellings = [unicodedata.normalize("NFD", NAME), NAME.upper(), EMAIL.upper(), IBAN.lower(),
                 "FR76 3000 6000 0112 3456 7890 189", "fr76-3000-6000-0112-3456-7890-189", "123456789", "12 345 6789",
                 "Zeldina  marchetti q"]
    text = "; ".join(f"refused {spelling} at 1004.00" for spelling in spellings)
    site.rows("UPDATE payouts SET reason = :text WHERE payee_id = 'p1'", text=text)
    site.ok("payees", "erase", "p1", "--reason", "request", "--yes")
    (reason,) = [r for (r,) in site.rows("SELECT reason FROM payouts WHERE payee_id = 'p1'")]
    assert reason == "; ".join(["refused [erased] at 1004.00"] * len(spellings))


@pytest.mark.slow  # the command line runs the pipeline twice
def test_look_alike_ids_in_the_payees_file_do_not_bring_an_erased_payee_back(site: Site) -> None:
    site.ok("payees", "erase", "p1", "--reason", "request", "--yes", "--no-compact")
    row = PAYEES.splitlines()[1]
    (site.root / "payees.csv").write_text("\n".join([
        PAYEES.splitlines()[0], row.replace("p1,", "p1\u200b,", 1), row.replace("p1,", "\ufeffp1,", 1),
        row.replace("p1,", "p\x1b1,", 1), PAYEES.splitlines()[2]]) + "\n")
    synced = site.ok("run", "--once")
    assert sorted(i for (i,) in site.rows("SELECT id FROM payees")) == ["p1", "p2"]
    (name, email), = site.rows("SELECT name, email FROM payees WHERE id = 'p1'")
    assert name.startswith("erased-") and email is None
    assert site.rows("SELECT count(*) FROM personal_keys WHERE subject = 'p1'") == [(0,)]
    assert "payees.csv line 4: id 'p\\x1b1' holds U+001B" in synced.output


def test_statement_deliveries_and_console_notices_lose_the_values(site: Site) -> None:
    tokens = site.rows("SELECT count(*) FROM api_tokens")
    assert tokens == [(0,)]
    (payout_id,), = site.rows("SELECT id FROM payouts WHERE payee_id = 'p1'")
    with sa.create_engine(site.db_url).begin() as conn:
        conn.execute(sa.text("INSERT INTO api_tokens (name, role, token_hash, created_at, created_by) VALUES "
                             "('ann', 'operator', :h, CURRENT_TIMESTAMP, 'test')"), {"h": "0" * 64})
        conn.execute(sa.text("INSERT INTO console_sessions (id_hash, token_id, csrf, created_at, last_seen_at, notice) "
                             "SELECT :h, id, 'c', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :n FROM api_tokens"),
                     {"h": "1" * 64, "n": f"Reward of {NAME} approved"})
        conn.execute(sa.text("INSERT INTO statement_deliveries (payout_id, channel, status, destination, attempts, "
                             "reason, updated_at) VALUES (:p, 'smtp', 'failed', :e, 1, :r, CURRENT_TIMESTAMP)"),
                     {"p": payout_id, "e": EMAIL, "r": f"550 mailbox {EMAIL} unknown"})
    site.ok("payees", "erase", "p1", "--reason", "request", "--yes")
    assert site.rows("SELECT destination, reason, status FROM statement_deliveries") == [(None, None, "failed")]
    assert site.rows("SELECT notice FROM console_sessions") == [(None,)]
    if site.db_url.startswith("sqlite"):
        assert left_in_files(site.db_url, VALUES) == []
