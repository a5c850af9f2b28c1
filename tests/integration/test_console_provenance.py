"""Console pages of a payout, reward and event (docs/console.md, Search and provenance), on SQLite and PostgreSQL:
every link of the chain with its exact values, the rails' documents, hostile CRM text escaped and clipped, sealed
personal values shown per role as the API shows them, and bad ids.

The site (one per database, read by every test; :func:`build_site`, also used by test_console_search): deals read
from a CSV file by three programs (10 % of USD deals with two approvals above 5000 USD and a full clawback on
refunds; 10 % of EUR deals; 1 % of "intl" deals capped at 5 USD per payee and paid in the payee's currency at the
ECB rate of the deal's date), a screening hook holding payouts above 1000, USD paid through csv_export and EUR
through bank_transfer (SEPA). Three passes of ``payhub run --once``: the deals; then two approvals, a refund netted
against a new deal, the approved reward's payout held; then its release by two operators.
"""

from __future__ import annotations

import csv
import html
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cli_helpers import CliSite, sql, write_config
from console_client import Console
from sqlalchemy import event

from payhub import provenance, reports
from payhub.compliance import personal
from payhub.console.routes_payouts import payout_rows
from payhub.console.web import TEMPLATES
from payhub.http.app import create_app
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.tokens import create

pytest.importorskip("payhub_bank")  # the bank_transfer rail (plugins/payout_bank) writes the SEPA file

SETTINGS = """\
[daemon]
idle_seconds = 0.1

[payees]
file = "payees.csv"

[sources.deals]
plugin = "file"
path = "deals.csv"
settle_seconds = 0
max_field_bytes = 262144

[programs.pct]
calculator = "percentage"
percent = "10"
event_types = ["deal_won"]
clawback_event_types = ["deal_refunded"]
clawback = "full"
approval = {currency = "USD", threshold = "5000", dual_threshold = "5000"}

[programs.eu]
calculator = "percentage"
percent = "10"
event_types = ["deal_won_eu"]

[programs.intl]
calculator = "percentage"
percent = "1"
event_types = ["deal_won_intl"]
payout_currency = "payee"
fx_date = "event"
caps = [{per = "payee", amount = "5", currency = "USD"}]

[hooks.deny_big]

[hooks.fx]
plugin = "ecb_rates"
path = "eurofxref-hist.csv"

[rails.export]
plugin = "csv_export"
directory = "out"

[rails.bank]
plugin = "bank_transfer"
outbox = "outbox"

[rails.bank.sepa]
debtor_name = "Vendor GmbH"
debtor_iban = "DE89370400440532013000"

[routing]
default_rail = "export"

[[routing.rules]]
currencies = ["EUR"]
rails = ["bank"]
"""
RATES = "Date,USD,JPY,\n2026-11-30,1.0498,163.02,\n2026-11-27,1.0487,162.80,\n"
PAYEES = ("id,name,country,currency,iban\np1,One,US,USD,\np2,Two,US,USD,\np3,Three,US,USD,\n"
          "p4,Four,US,USD,\npe1,Eins GmbH,DE,EUR,DE89370400440532013000\n")
HOSTILE_NOTE = "<script>alert('x')</script> \"quoted\" & 'single' \u202eevil\u202c zero\u200bwidth"
BIG = "B" * 100_000
HEADER = ("id", "type", "occurred_at", "payee_id", "partner_id", "amount", "currency", "note", "big")
FIRST = [
    ("D-1", "deal_won", "2026-10-01T00:00:00Z", "p1", "", "1000.00", "USD", "", ""),  # 100.00 USD to p1
    ("D-2", "deal_won", "2026-10-02T00:00:00Z", "p2", "", "2000.00", "USD", "", ""),  # 200.00 USD to p2
    ("D-3", "deal_won", "2026-10-03T00:00:00Z", "p3", "", "60000.00", "USD", "", ""),  # 6000.00: two approvals
    ("E-1", "deal_won_eu", "2026-10-04T00:00:00Z", "pe1", "", "5000.00", "EUR", "", ""),  # 500.00 EUR, SEPA
    ("I-1", "deal_won_intl", "2026-11-27T00:00:00Z", "pe1", "", "1000.00", "USD", "", ""),  # 10 USD capped to 5
    ("H-<b>1</b>", "deal_won", "2026-10-05T00:00:00Z", "p4", "", "100.00", "USD", HOSTILE_NOTE, BIG),  # 10.00
    ("Q-1", "deal_won", "2026-10-06T00:00:00Z", "p1", "", "ten", "USD", "", ""),  # quarantined
]
SECOND = [
    ("D-2", "deal_refunded", "2026-10-20T00:00:00Z", "p2", "", "2000.00", "USD", "", ""),  # -200.00 netted
    ("D-5", "deal_won", "2026-10-21T00:00:00Z", "p2", "", "3000.00", "USD", "", ""),  # 300.00: payout of 100.00
]
JUSTIFICATION = "checked by hand against the signed contract"


class Site(CliSite):
    """The site on one database: its runtime and app, and ids of what the tests read."""

    def __init__(self, root: Path, db_url: str) -> None:
        super().__init__(root)
        self.db_url = db_url
        self.rt: Runtime | None = None
        self.ids: dict[str, int] = {}

    @property
    def runtime(self) -> Runtime:
        assert self.rt is not None
        return self.rt

    def sql(self, query: str, **params: Any) -> list[Any]:
        return sql(self.db_url, query, **params)

    def one(self, query: str, **params: Any) -> Any:
        [(value,)] = self.sql(query, **params)
        return value

    def console(self, role: str = "auditor", name: str | None = None) -> Console:
        console = Console(self.runtime)
        console.sign_in(name or f"{role}-{len(self.sql('SELECT id FROM api_tokens'))}", role)  # type: ignore[arg-type]
        return console

    def explain(self, ref: str) -> Any:
        rails = {name: s.plugin_name(name) for name, s in self.runtime.settings.rails.items()}
        with self.runtime.engine.connect() as conn:
            return provenance.explain(conn, ref, rails)


def write_deals(path: Path, rows: list[tuple[str, ...]], *, header: bool) -> None:
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(HEADER)
        writer.writerows(rows)


def build_site(root: Path, db_url: str) -> Site:
    """The site described in the module's docstring, after its three passes."""
    write_config(root, db_url, SETTINGS)
    (root / "payees.csv").write_text(PAYEES)
    (root / "eurofxref-hist.csv").write_text(RATES)
    (root / "out").mkdir()
    (root / "outbox").mkdir()
    write_deals(root / "deals.csv", FIRST, header=True)
    s = Site(root, db_url)
    s.ok("db", "upgrade")
    s.ok("run", "--once")
    s.ids["approved"] = s.one("SELECT r.id FROM rewards r JOIN events e ON e.id = r.event_id WHERE e.object_id = 'D-3'")
    s.ok("rewards", "approve", str(s.ids["approved"]), "--note", "big deal, checked", actor="finance:ann")
    s.ok("rewards", "approve", str(s.ids["approved"]), actor="finance:bob")
    write_deals(root / "deals.csv", SECOND, header=False)
    s.ok("run", "--once")
    s.ids["held"] = s.one("SELECT id FROM payouts WHERE payee_id = 'p3'")
    s.ok("payouts", "release", str(s.ids["held"]), "--reason", JUSTIFICATION, actor="ops:carol")
    s.ok("payouts", "release", str(s.ids["held"]), "--reason", JUSTIFICATION + " again", actor="ops:dave")
    s.ok("run", "--once")
    s.ids["netted"] = s.one("SELECT id FROM payouts WHERE payee_id = 'p2' AND item_count = 2")
    s.ids["first_p2"] = s.one("SELECT id FROM payouts WHERE payee_id = 'p2' AND item_count = 1")
    s.ids["bank"] = s.one("SELECT id FROM payouts WHERE payee_id = 'pe1'")
    s.ids["hostile"] = s.one("SELECT id FROM payouts WHERE payee_id = 'p4'")
    s.ids["hostile_event"] = s.one("SELECT id FROM events WHERE object_id = 'H-<b>1</b>'")
    s.ids["quarantined"] = s.one("SELECT id FROM events WHERE status = 'quarantined'")
    s.rt = Runtime(load_settings(s.config))
    s.rt.load_plugins()
    return s


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, plugin_path: Path) -> Iterator[Site]:
    s = build_site(tmp_path_factory.mktemp("site"), module_db_url)
    yield s
    s.runtime.close()


@pytest.fixture(scope="module")
def auditor(site: Site) -> Console:
    return site.console("auditor", "ann-auditor")


def page(console: Console, path: str) -> str:
    answer = console.get(path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:2000])
    return answer.text


INLINE_TAGS = re.compile(r"</?(?:a|span|code|strong|q|small|em)\b[^>]*>")


def text_of(body: str) -> str:
    """The page's text as a reader sees it: tags dropped (a block's as a space), entities decoded, white space
    collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", INLINE_TAGS.sub("", body))).split())


def hrefs(body: str) -> set[str]:
    return {html.unescape(h) for h in re.findall(r'href="([^"]+)"', body)}


# ---------------------------------------------------------------------------------------------------- the site


def test_the_site_has_what_the_pages_show(site: Site) -> None:
    statuses = dict(site.sql("SELECT id, status FROM payouts"))
    assert statuses[site.ids["held"]] == "sent"  # held by screening, released by two operators, then sent
    assert statuses[site.ids["bank"]] == "sent" and statuses[site.ids["netted"]] == "sent"
    assert site.sql("SELECT amount_minor, currency FROM payouts WHERE id = :i", i=site.ids["netted"]) == [
        (10000, "USD")]
    assert site.one("SELECT count(*) FROM rewards WHERE amount_minor < 0") == 1


# ---------------------------------------------------------------------------------------------------- payouts


def test_the_payout_page_shows_every_link_of_the_chain_with_exact_values(site: Site, auditor: Console) -> None:
    number = site.ids["netted"]
    body = page(auditor, f"/console/payouts/{number}")
    shown = text_of(body)
    data = site.explain(f"payout:{number}")
    p = data["payout"]
    # the two items: a reward and the refund's adjustment netted against the first payout's reward
    assert "2 item(s): rewards 300.00, adjustments netted -200.00, net 100.00 USD = the payout's amount" in shown
    refund, won = data["items"]  # in reward order: the refund was calculated before the new deal
    assert (refund["reward"]["amount"], won["reward"]["amount"]) == ("-200.00", "300.00")
    assert f"Item 1 of 2: -200.00 USD (reward {refund['reward']['id']}, adjustment)" in shown
    assert f"Item 2 of 2: 300.00 USD (reward {won['reward']['id']})" in shown
    for item in (won, refund):
        e = item["event"]
        assert f"Event key {e['key']}" in shown
        assert f"CRM object record {e['object_id']}" in shown and "Source deals" in shown
        assert f"/console/events/{e['id']}" in hrefs(body)
        assert f"/console/rewards/{item['reward']['id']}" in hrefs(body)
        assert f"Calculated calculation {item['calculation']['id']}, rewarded at" in shown
        assert item["reward"]["description"] in shown
    assert f"Occurred at {won['event']['occurred_at'].strftime('%Y-%m-%d %H:%M:%S')} UTC" in shown
    assert "/console/programs/pct" in hrefs(body)
    assert f"Version {won['program']['version']} (since" in shown and "Calculator percentage" in shown
    assert body.count("Parameters of version") == 1 and "Parameters: as shown above." in shown  # one program version
    # the clawback nets against the reward of the first payout
    first = site.ids["first_p2"]
    first_reward = site.one("SELECT reward_id FROM payout_items WHERE payout_id = :p", p=first)
    assert "Clawback already_taken_back 0.00, clawback full, fraction 1.000000, granted 200.00" in shown
    assert f"Nets against reward {first_reward} 200.00 USD to p2 (sent in payout {first})" in shown
    assert f"/console/payouts/{first}" in hrefs(body)
    assert "No approval needed." in shown
    # screening, the payout, its attempt and the rail's document
    assert "screening passed deny_big" in shown
    assert f"Route {p['route']}" in shown and f"Idempotency key {p['key']}" in shown
    assert "Amount 100.00 USD = the sum of its 2 item(s)" in shown and "Rail export (plugin csv_export)" in shown
    [attempt] = p["attempts"]
    assert attempt["outcome"] == "accepted" and f"send #1 {attempt['started_at'].strftime('%Y-%m-%d %H:%M:%S')} UTC" \
        in shown
    ref = p["provider_ref"]
    assert ref and ref.endswith(".csv") and (site.root / "out" / ref).is_file()
    assert f"Document export file File {ref}" in shown and p["key"] in (site.root / "out" / ref).read_text()
    assert "the payout's row is the one holding its idempotency key" in shown
    # where to go next
    assert {f"/console/audit?subject=payout%3A{number}", f"/console/payouts/{number}/statement"} <= hrefs(body)
    assert "payout.created" in shown and "payout.sent" in shown  # its audit entries


def test_a_bank_payout_shows_its_file_and_line_and_the_fx_of_a_converted_item(site: Site, auditor: Console) -> None:
    number = site.ids["bank"]
    body = page(auditor, f"/console/payouts/{number}")
    shown = text_of(body)
    p = site.explain(f"payout:{number}")["payout"]
    doc = p["document"]
    assert doc["kind"] == "bank payment file" and doc["line"] is not None and doc["file"].endswith(".xml")
    assert p["provider_ref"] == f"{doc['file']}:{doc['line']}"
    assert (site.root / "outbox" / doc["file"]).is_file()
    assert f"Document bank payment file File {doc['file']} Line {doc['line']} Reference {p['provider_ref']}" in shown
    assert "Rail bank (plugin bank_transfer)" in shown and "Route " + p["route"] in shown
    # 500.00 EUR from the EU deal, and 5.00 USD (10 USD capped at 5 per payee) converted at 1 / 1.0487
    [(converted,)] = site.sql("SELECT amount_minor FROM payout_items WHERE payout_id = :p AND fx IS NOT NULL",
                              p=number)
    assert converted == 477  # 5.00 USD x 0.9535615524 = 4.77 EUR
    assert site.one("SELECT amount_minor FROM payouts WHERE id = :p", p=number) == 50000 + 477
    assert "Amount 504.77 EUR = the sum of its 2 item(s)" in shown
    assert "Item 2 of 2: 4.77 EUR (reward" in shown
    assert re.search(r"In this payout 4\.77 EUR: 5\.00 USD converted at 0\.95356\d* \(reference rate of "
                     r"2026-11-27, event date, source ECB", shown), shown
    assert "Cap per payee pe1 all: limit 5.00, used 0.00, cut 5.00" in shown
    assert "/console/programs/intl" in hrefs(body) and "/console/programs/eu" in hrefs(body)


def test_approvals_screening_hold_and_two_operators_release(site: Site, auditor: Console) -> None:
    number = site.ids["held"]
    shown = text_of(page(auditor, f"/console/payouts/{number}"))
    data = site.explain(f"payout:{number}")
    [item] = data["items"]
    ann, bob = item["approvals"]
    assert (ann["approver"], bob["approver"]) == ("finance:ann", "finance:bob")
    assert "2 of 2 approval(s) given." in shown
    assert f"finance:ann {ann['at'].strftime('%Y-%m-%d %H:%M:%S')} UTC approved big deal, checked" in shown
    assert f"finance:bob {bob['at'].strftime('%Y-%m-%d %H:%M:%S')} UTC approved" in shown
    held, released, passed = data["payout"]["screening"]
    assert (held["decision"], released["decision"], passed["decision"]) == ("held", "released", "passed")
    assert f"held screening {held['reason']}" in shown and "over screening limit 1000" in shown
    assert "released ops:carol and ops:dave" in shown
    assert "screening passed deny_big denied as before; two operators' release" in shown
    assert "Released by" in shown and "Amount 6000.00 USD = the sum of its 1 item(s)" in shown


def test_the_reward_page_links_its_event_program_and_payout(site: Site, auditor: Console) -> None:
    data = site.explain(f"payout:{site.ids['netted']}")
    refund = data["items"][0]["reward"]["id"]  # the adjustment, calculated before the new deal
    body = page(auditor, f"/console/rewards/{refund}")
    shown = text_of(body)
    assert f"Reward {refund}: -200.00 USD to p2 (sent)" in shown
    assert {f"/console/payouts/{site.ids['netted']}", f"/console/payouts/{site.ids['first_p2']}",
            "/console/programs/pct", f"/console/audit?subject=reward%3A{refund}"} <= hrefs(body)
    assert "This reward in it: -200.00 USD" in shown and "Nets against" in shown
    [(reward, payout)] = site.sql(
        "SELECT r.id, r.payout_id FROM rewards r JOIN events e ON e.id = r.event_id WHERE e.object_id = 'D-1'")
    plain = text_of(page(auditor, f"/console/rewards/{reward}"))
    assert f"Payout {payout}: 100.00 USD (sent)" in plain and "Not in any payout" not in plain


def test_the_event_page_lists_calculations_rewards_and_payouts(site: Site, auditor: Console) -> None:
    event = site.one("SELECT id FROM events WHERE object_id = 'D-2' AND event_type = 'deal_won'")
    body = page(auditor, f"/console/events/{event}")
    shown = text_of(body)
    [reward] = site.sql("SELECT id, payout_id FROM rewards WHERE event_id = :e", e=event)
    assert f"/console/rewards/{reward[0]}" in hrefs(body) and f"/console/payouts/{reward[1]}" in hrefs(body)
    assert "pct 1 percentage rewarded" in shown
    assert "/console/search?q=record%3AD-2" in hrefs(body)
    quarantined = text_of(page(auditor, f"/console/events/{site.ids['quarantined']}"))
    reason = site.one("SELECT reason FROM events WHERE id = :i", i=site.ids["quarantined"])
    assert "quarantined" in quarantined and reason in quarantined and "No program has calculated this event" in \
        quarantined


# ---------------------------------------------------------------------------------------------------- hostile text


def test_hostile_crm_text_is_escaped_visible_and_clipped(site: Site, auditor: Console) -> None:
    for path in (f"/console/payouts/{site.ids['hostile']}", f"/console/events/{site.ids['hostile_event']}"):
        body = page(auditor, path)
        assert "<script>alert" not in body and "<b>1</b>" not in body
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in body  # the note, escaped
        assert "H-&lt;b&gt;1&lt;/b&gt;" in body  # the CRM object id, escaped
        assert "\u202e" not in body and "\u200b" not in body  # bidi override and zero-width space shown as escapes
        assert "\\u202eevil\\u202c" in body and "zero\\u200bwidth" in body
        assert "B" * 1000 + "… (99,000 more characters)" in body  # the 100 KB attribute, clipped
        assert len(body) < 60_000


def test_an_unknown_or_malformed_id_is_a_page_not_an_error(site: Site, auditor: Console) -> None:
    for kind in ("payouts", "rewards", "events"):
        for bad, status in (("0", 404), ("987654321", 404), (str(2**63), 404), ("abc", 422), ("-1", 422),
                            ("1.5", 422), ("%D9%A1", 422), ("9" * 30, 422), ("1%01", 422),
                            (f"{site.ids['bank']}?x=1", 422), (f"{site.ids['bank']}?limit=5", 422)):
            answer = auditor.get(f"/console/{kind}/{bad}")
            assert answer.status_code == status, (kind, bad, answer.status_code)
            assert answer.headers["content-type"].startswith("text/html")
            assert "<h1>" in answer.text and "Sign out" in answer.text
    assert "There is no payout 987654321." in text_of(auditor.get("/console/payouts/987654321").text)


def test_pages_need_a_session(site: Site) -> None:
    answer = Console(site.runtime).get(f"/console/payouts/{site.ids['bank']}")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login?next=")


# ---------------------------------------------------------------------------------------------------- personal values


def api_audit(site: Site, role: str, subject: str) -> list[Any]:
    token = create(site.runtime, f"api-{role}-{len(site.sql('SELECT id FROM api_tokens'))}", role)  # type: ignore

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(site.runtime), client=("198.51.100.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
            return await client.get(f"/api/v1/audit?subject={subject}", headers={"Authorization": f"Bearer {token}"})

    answer = anyio.run(call)
    assert answer.status_code == 200, answer.text
    return [e["detail"] for e in answer.json()["items"] if e["action"] == "payout.annotated"]


def test_sealed_personal_values_are_shown_per_role_as_the_api_shows_them(site: Site) -> None:
    number = site.ids["first_p2"]
    with site.runtime.transaction() as tx:
        key = personal.keys(tx.conn, ["p2"], create=True)["p2"]
        sealed = personal.seal_with(key, "p2", "Zoë Two-Secret")
        tx.audit("payout.annotated", "payout", number, {"payee_name": sealed})
    assert api_audit(site, "auditor", f"payout:{number}") == [{"payee_name": "[sealed]"}]
    assert api_audit(site, "operator", f"payout:{number}") == [{"payee_name": "Zoë Two-Secret"}]
    auditor_page = page(site.console("auditor"), f"/console/payouts/{number}")
    operator_page = page(site.console("operator"), f"/console/payouts/{number}")
    assert '"payee_name": "[sealed]"' in html.unescape(auditor_page) and "Zoë" not in auditor_page
    assert sealed not in auditor_page
    assert '"payee_name": "Zoë Two-Secret"' in html.unescape(operator_page)
    with site.runtime.engine.begin() as conn:  # the payee's key erased: nobody can open it any more
        personal.erase_key(conn, "p2")
    assert '"payee_name": "[erased]"' in html.unescape(page(site.console("operator"), f"/console/payouts/{number}"))


def test_every_filter_is_registered_where_the_templates_are_made() -> None:
    """The templates' filters come with ``payhub.console.web`` alone, whichever page module is imported or not."""
    script = ("from payhub.console.web import TEMPLATES\n"
              "print(TEMPLATES.from_string("
              "'{{ t | clip(5) }}|{{ n | path_part }}|{{ c | cap_text }}|{{ j | json_text }}')"
              ".render(t='\u202eabcdefgh', n='a/b c', c={'cap': 'x', 'earned': 1, 'capped': 2}, j={'k': [1]}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("\\u202eabcd… (4 more characters)|a%2Fb%20c|x: earned 1, cut 2|"
                           "{\n &#34;k&#34;: [\n  1\n ]\n}\n")


def test_amounts_are_shown_exactly_in_their_currencys_minor_units_and_never_cut() -> None:
    minor, number = TEMPLATES.filters["minor"], TEMPLATES.filters["number"]
    assert [minor(123456, c) for c in ("JPY", "EUR", "BHD")] == ["123456", "1234.56", "123.456"]
    assert minor(Decimal(1250), "EUR") == "12.50" and minor(None, "EUR") == ""
    for fraction in (Decimal("12.5"), Decimal("NaN")):
        with pytest.raises(ValueError, match="whole number"):
            minor(fraction, "EUR")
    for wrong in (12.5, "1250", True):
        with pytest.raises(TypeError, match="whole number"):
            minor(wrong, "EUR")
    # number groups counts; it never rounds a decimal (money goes through minor, in its currency's units)
    assert [number(v) for v in (1234567, Decimal("0.125"), Decimal("1234.5"), None, "3.5")] == [
        "1,234,567", "0.125", "1234.5", "", "3.5"]


def test_payout_rows_are_read_in_one_query(site: Site) -> None:
    ids = [n for (n,) in site.sql("SELECT id FROM payouts ORDER BY id")]
    assert len(ids) >= 4
    seen: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    engine = site.runtime.engine
    with engine.connect() as conn:
        event.listen(engine, "before_cursor_execute", capture)
        try:
            rows = payout_rows(conn, [*ids, 987654321])
            assert payout_rows(conn, []) == {}
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        expected = {row["id"]: row for row in reports.payouts(conn)}
    assert len(seen) == 1 and rows == expected
