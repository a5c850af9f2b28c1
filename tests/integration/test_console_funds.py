"""Console funds and programs pages (docs/console.md, Funds and programs) on SQLite and PostgreSQL: the balances are
exactly ``payhub funds list``'s at the chosen time, pages follow each other, every program version is shown with its
canonical parameters and fingerprint and the one the settings select now is marked, hostile text is escaped and bad
parameters get a message page.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from console_client import Console
from markupsafe import escape
from sqlalchemy import event, select, update
from test_programs import SOURCE, run

from payhub.api import SourceRecord
from payhub.db.schema import program_versions
from payhub.pipeline.calculate import register_program_versions
from payhub.runtime import Runtime

COOP = SOURCE + """
    [programs.coop]
    calculator = "coop"
    percent = "2"
    participation_percent = "50"
    expiry_days = 90
"""
HOSTILE = '<img src=x onerror="alert(1)">'
CELLS = re.compile(r"<tr>\s*<th scope=\"row\"><bdi>(.*?)</bdi></th>(.*?)</tr>", re.DOTALL)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.DOTALL)


def purchase(partner: str, object_id: str, when: str, amount: str) -> SourceRecord:
    return SourceRecord("Order", object_id, "booked", "purchase", when, "rep1", amount, "USD", partner)


def claim(partner: str, object_id: str, when: str, amount: str) -> SourceRecord:
    return SourceRecord("Claim", object_id, "approved", "coop_claim", when, "rep1", amount, "USD", partner)


def table(page: str) -> list[dict[str, str]]:
    """The funds table of a page as the CLI's JSON keys (next expiry as the page shows it)."""
    found = []
    for program, rest in CELLS.findall(page):
        cells = [html.unescape(re.sub(r"</?(bdi|strong)>", "", c)).strip() for c in CELL.findall(rest)]
        found.append(dict(zip(["program", "holder", "unit", "credited", "spent", "expired", "balance", "next_expiry"],
                              [html.unescape(program), *cells], strict=True)))
    return found


def cli_funds(config: Path, *args: str) -> list[dict[str, str]]:
    result = invoke("-c", str(config), "funds", "list", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    for row in rows:  # as the page shows a time
        expiry = row["next_expiry"]
        row["next_expiry"] = f"{expiry[:10]} {expiry[11:19]} UTC" if expiry else ""
    return list(rows)


@pytest.fixture
def funded(make_runtime: Any, tmp_path: Path) -> tuple[Runtime, Console, Path]:
    rt = make_runtime(COOP)
    run(rt, purchase("acme", "o1", "2026-01-10T00:00:00Z", "100000"),  # +2,000.00, lapses 2026-04-10
        purchase("acme", "o2", "2026-03-01T00:00:00Z", "10000"),  # +200.00, lapses 2026-05-30
        claim("acme", "c1", "2026-02-01T00:00:00Z", "1800"),  # pays 900.00 from the oldest credit
        *[purchase(f"p{i}", f"q{i}", "2026-02-01T00:00:00Z", f"{1000 * i}") for i in range(1, 6)],
        purchase(HOSTILE, "h1", "2026-02-02T00:00:00Z", "5000"))
    console = Console(rt)
    console.sign_in("ann", "auditor")
    return rt, console, tmp_path / "payhub.toml"


def test_funds_show_exactly_the_cli_balances_at_a_time(funded: tuple[Runtime, Console, Path]) -> None:
    _rt, console, config = funded
    page = console.get("/console/funds", params={"at": "2026-03-15", "holder": "acme"})
    assert page.status_code == 200 and "Balances as of 2026-03-15 00:00:00 UTC." in page.text
    assert table(page.text) == [{"program": "coop", "holder": "acme", "unit": "USD", "credited": "2200.00",
                                 "spent": "900.00", "expired": "0.00", "balance": "1300.00",
                                 "next_expiry": "2026-04-10 00:00:00 UTC"}]
    later = table(console.get("/console/funds", params={"at": "2026-05-01", "program": "coop",
                                                        "holder": "acme"}).text)
    assert [(f["expired"], f["balance"]) for f in later] == [("1100.00", "200.00")]  # the first credit lapsed
    for at in ("2026-01-31", "2026-03-15T12:00:00Z", "2026-06-01"):
        assert table(console.get("/console/funds", params={"at": at}).text) == cli_funds(config, "--at", at)
    assert len(cli_funds(config, "--at", "2026-03-15")) == 7
    assert "No funds match these filters." in console.get("/console/funds", params={"holder": "nobody"}).text


def test_fund_pages_follow_each_other(funded: tuple[Runtime, Console, Path]) -> None:
    _rt, console, config = funded
    expected = cli_funds(config, "--at", "2026-03-15")
    seen: list[dict[str, str]] = []
    href: str | None = "/console/funds?at=2026-03-15&limit=3"
    pages = 0
    while href is not None:
        page = console.get(href).text
        rows = table(page)
        assert 0 < len(rows) <= 3
        seen += rows
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        href = html.unescape(found.group(1)) if found else None
        pages += 1
    assert seen == expected and pages == 3


def test_hostile_holders_are_escaped(funded: tuple[Runtime, Console, Path]) -> None:
    _rt, console, _config = funded
    page = console.get("/console/funds", params={"holder": HOSTILE}).text
    assert "<img src=x" not in page and page.count(str(escape(HOSTILE))) == 2  # the field and the row
    assert [row["holder"] for row in table(page)] == [HOSTILE]


@pytest.mark.parametrize(("query", "message"), [
    ("at=yesterday", "as of: timestamp"), ("limit=0", "limit: a whole number from 1 to 1000"),
    ("limit=" + "9" * 30, "limit: a whole number"), ("after_program=coop", "go together"),
    ("holder=" + "h" * 300, "holder: at most 200 characters"), ("holdr=acme", "unknown parameter 'holdr'"),
    ("program=a&program=b", "program: given more than once"), ("program=%00", "program: contains a NUL"),
    ("holder=a%07b", "holder: contains a control character (U+0007)")])
def test_bad_fund_parameters_get_a_message_page(make_runtime: Any, query: str, message: str) -> None:
    console = Console(make_runtime(""))
    console.sign_in("ann", "auditor")
    answer = console.get(f"/console/funds?{query}")
    assert answer.status_code == 422 and message in html.unescape(answer.text)
    assert '<p class="notice error" role="alert">' in answer.text


def versions_of(rt: Runtime, program: str) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(conn.execute(select(program_versions).where(program_versions.c.program == program)
                                 .order_by(program_versions.c.version)))


def test_programs_and_every_version_with_the_current_one_marked(make_runtime: Any) -> None:
    rt1 = make_runtime(COOP + f"""
    [programs.'{HOSTILE}']
    calculator = "coop"
    percent = "1"
    """)
    register_program_versions(rt1)
    rt2 = make_runtime(COOP.replace('percent = "2"', 'percent = "3"'))  # the coop percent changed; the other gone
    register_program_versions(rt2)
    console = Console(rt2)
    console.sign_in("ann", "auditor")
    listing = console.get("/console/programs").text
    rows = {html.unescape(name): re.findall(r"<td[^>]*>(.*?)</td>", rest, re.DOTALL)
            for name, rest in re.findall(r'<th scope="row"><a href="[^"]+"><bdi>(.*?)</bdi></a></th>(.*?)</tr>',
                                         listing, re.DOTALL)}
    created = {v.version: v.created_at for v in versions_of(rt2, "coop")}
    assert rows["coop"][:2] == ["enabled", "<bdi>coop</bdi>"] and rows["coop"][2] == "2"
    assert rows["coop"][4:] == ["2", "2"]
    assert rows[HOSTILE][:3] == ["not in the settings", "<bdi>coop</bdi>", "none"]
    assert "<img src=x" not in listing
    assert 'href="/console/programs/%3Cimg%20src%3Dx%20onerror%3D%22alert%281%29%22%3E"' in listing

    page = console.get("/console/programs/coop").text
    stored = versions_of(rt2, "coop")
    assert [v.version for v in stored] == [1, 2]
    for version in stored:
        assert f"<h2 id=\"version-{version.id}\">Version {version.version}" in page
        assert f"<code><bdi>{escape(version.params)}</bdi></code>" in page  # the canonical JSON as stored
        assert f"<code>{version.fingerprint}</code></dd>" in page
        assert hashlib.sha256(version.params.encode()).hexdigest() == version.fingerprint
    assert "Version 2 (current)</h2>" in page and "Version 1 (current)" not in page
    assert str(escape('"percent":"3"')) in page and "does not match" not in page
    assert created[1].strftime("%Y-%m-%d %H:%M:%S UTC") in page

    # The settings back as they were: the daemon uses version 1 again, and the page says so.
    rt3 = make_runtime(COOP)
    register_program_versions(rt3)
    assert len(versions_of(rt3, "coop")) == 2
    console = Console(rt3)
    console.sign_in("bob", "auditor")
    page = console.get("/console/programs/coop").text
    assert "Version 1 (current)</h2>" in page and "Version 2 (current)" not in page
    listing = console.get("/console/programs").text
    assert re.search(r"<bdi>coop</bdi></a></th>\s*<td>enabled</td>\s*<td><bdi>coop</bdi></td>\s*"
                     r'<td class="num">1</td>', listing)
    hostile = console.get("/console/programs/" + "%3Cimg%20src%3Dx%20onerror%3D%22alert%281%29%22%3E")
    assert hostile.status_code == 200 and "<img src=x" not in hostile.text
    assert str(escape('"percent":"1"')) in hostile.text


def test_programs_not_yet_registered_and_missing_ones(make_runtime: Any) -> None:
    rt = make_runtime(COOP)
    console = Console(rt)
    console.sign_in("ann", "auditor")
    assert "not registered yet" in console.get("/console/programs").text
    page = console.get("/console/programs/coop")
    assert page.status_code == 200 and "No versions are recorded for this program yet." in page.text
    missing = console.get("/console/programs/nothing")
    assert missing.status_code == 404 and "no program is named &#39;nothing&#39;" in missing.text
    assert console.get("/console/programs/" + "x" * 300).status_code == 404
    bad = console.get("/console/programs/coop?limit=abc")
    assert bad.status_code == 422 and "limit: a whole number" in bad.text
    assert console.get("/console/programs?x=1").status_code == 422


def test_a_version_whose_parameters_were_changed_is_marked(make_runtime: Any) -> None:
    rt = make_runtime(COOP)
    register_program_versions(rt)
    with rt.engine.begin() as conn:
        conn.execute(update(program_versions).values(params='{"calculator":"coop","percent":"20"}'))
    console = Console(rt)
    console.sign_in("ann", "auditor")
    page = console.get("/console/programs/coop").text
    assert "Version 1 (current)</h2>" in page  # the fingerprint still matches the settings
    assert '<strong class="error">does not match these parameters</strong>' in page
    assert str(escape('{"calculator":"coop","percent":"20"}')) in page


def statements_of(rt: Runtime, console: Console, path: str) -> list[str]:
    """The SQL statements reading ``program_versions`` while the console answers ``path``."""
    seen: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool) -> None:
        if "program_versions" in statement:
            seen.append(" ".join(statement.split()))

    event.listen(rt.engine, "before_cursor_execute", capture)
    try:
        assert console.get(path).status_code == 200
    finally:
        event.remove(rt.engine, "before_cursor_execute", capture)
    return seen


def test_program_pages_read_only_the_versions_they_show(make_runtime: Any) -> None:
    rt = make_runtime(COOP)
    register_program_versions(rt)
    created = versions_of(rt, "coop")[0].created_at
    with rt.engine.begin() as conn:  # many other versions of the program
        conn.execute(program_versions.insert(), [
            {"program": "coop", "version": n + 10, "calculator": "coop", "params": json.dumps({"n": n}),
             "fingerprint": f"{n:064x}", "created_at": created} for n in range(40)])
    console = Console(rt)
    console.sign_in("ann", "auditor")
    listing = statements_of(rt, console, "/console/programs")
    assert listing and not any("program_versions.params" in sql for sql in listing), listing
    assert re.search(r"<bdi>coop</bdi></a></th>\s*<td>enabled</td>\s*<td><bdi>coop</bdi></td>\s*"
                     r'<td class="num">1</td>.*?<td class="num">49</td>\s*<td class="num">41</td>',
                     console.get("/console/programs").text, re.S)
    one = statements_of(rt, console, "/console/programs/coop?limit=2")
    assert any("program_versions.fingerprint =" in sql for sql in one), one  # the current one found in SQL
    assert all(re.search(r"\bLIMIT\b|fingerprint =", sql) for sql in one), one  # no read of every version
    page = console.get("/console/programs/coop?limit=2").text
    assert "Version 1 (current)</h2>" in page and "Version 10</h2>" in page and "Version 11" not in page
