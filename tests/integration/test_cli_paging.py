"""``events|rewards|payouts list`` page by keyset: a table shows the newest 100 rows by default, ``--after ID`` the
rows above ID oldest first, ``--limit`` caps either; JSON and CSV list every row unless limited, written as the
database streams them (``render`` never holds the rows of JSON or CSV).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliSite, sql, write_site

from payhub import reports
from payhub.cli import output
from payhub.db.engine import make_engine

SETTINGS = """\
[programs.pct]
calculator = "percentage"
percent = "10"
event_types = ["deal_won"]

[programs.boom]
calculator = "raising"
event_types = ["deal_won"]

[rails.export]
plugin = "csv_export"
directory = "out"

[routing]
default_rail = "export"
"""
VISITS = 104  # events no program takes: with the deals, more than a table shows by default
PAYEES = "id,name,country\n" + "".join(f"p{n},Partner {n},US\n" for n in range(1, 5))


class Site(CliSite):
    def __init__(self, root: Path, db_url: str) -> None:
        super().__init__(root)
        self.db_url = db_url

    def ids(self, query: str) -> list[int]:
        return [int(row[0]) for row in sql(self.db_url, query)]


@pytest.fixture(scope="module")
def site(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, plugin_path: Path) -> Site:
    root = tmp_path_factory.mktemp("site")
    deals = ["id,type,occurred_at,payee_id,amount,currency"]
    deals += [f"D-{n},deal_won,2026-10-0{n}T00:00:00Z,p{n},{n}000.00,USD" for n in range(1, 5)]
    deals += [f"V-{n},visit,2026-10-01T00:00:00Z,p1,," for n in range(VISITS)]
    deals += ["X-boom,deal_won,2026-10-09T00:00:00Z,p1,5.00,USD"]  # boom fails on it
    write_site(root, module_db_url, SETTINGS, deals="\n".join(deals) + "\n", payees=PAYEES)
    s = Site(root, module_db_url)
    s.ok("db", "upgrade")
    s.ok("run", "--once")
    return s


def table_ids(text: str) -> list[int]:
    """The first column of each row of a Rich table."""
    found = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 2 and cells[1].isdigit():
            found.append(int(cells[1]))
    return found


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 400)


@pytest.mark.slow  # seeds more rows than a page
def test_a_table_shows_the_newest_100_rows_by_default(site: Site) -> None:
    every = site.ids("SELECT id FROM events ORDER BY id DESC")
    assert len(every) > 100
    assert table_ids(site.ok("events", "list").stdout) == every[:100]
    assert table_ids(site.ok("events", "list", "--limit", "3").stdout) == every[:3]


def test_after_lists_the_rows_above_it_oldest_first(site: Site) -> None:
    every = site.ids("SELECT id FROM events ORDER BY id")
    assert [e["id"] for e in site.json("events", "list", "--after", str(every[9]))] == every[10:]
    assert [e["id"] for e in site.json("events", "list", "--after", str(every[9]), "--limit", "2")] == every[10:12]
    assert table_ids(site.ok("events", "list", "--after", str(every[-3])).stdout) == every[-2:]
    assert table_ids(site.ok("events", "list", "--after", "0", "--limit", "2").stdout) == every[:2]
    assert site.json("events", "list", "--after", str(every[-1])) == []


def test_json_and_csv_list_every_row_unless_limited(site: Site) -> None:
    every = site.ids("SELECT id FROM events ORDER BY id DESC")
    rows = site.json("events", "list")
    assert [e["id"] for e in rows] == every and list(rows[0]) == reports.EVENT_COLUMNS
    lines = list(csv.reader(io.StringIO(site.ok("events", "list", "--format", "csv").stdout)))
    assert lines[0] == reports.EVENT_COLUMNS and [int(line[0]) for line in lines[1:]] == every
    assert [e["id"] for e in site.json("events", "list", "--limit", "5")] == every[:5]
    assert [e["id"] for e in site.json("events", "list", "--status", "ingested")] == []
    empty = site.ok("events", "list", "--status", "quarantined", "--format", "csv").stdout
    assert empty.splitlines() == [",".join(reports.EVENT_COLUMNS)]


def test_every_listing_takes_after_and_limit(site: Site) -> None:
    rewards = site.ids("SELECT id FROM rewards ORDER BY id")
    assert len(rewards) == 5
    assert [r["id"] for r in site.json("rewards", "list", "--after", str(rewards[1]), "--limit", "2")] == rewards[2:4]
    assert [r["id"] for r in site.json("rewards", "list", "--limit", "2")] == rewards[::-1][:2]
    assert [r["id"] for r in site.json("rewards", "list", "--payee", "p2", "--after", "0")] == site.ids(
        "SELECT id FROM rewards WHERE payee_id = 'p2'")
    payouts = site.ids("SELECT id FROM payouts ORDER BY id")
    assert len(payouts) == 4
    assert [p["id"] for p in site.json("payouts", "list", "--after", str(payouts[0]))] == payouts[1:]
    assert [p["id"] for p in site.json("payouts", "list", "--payee", "p3")] == site.ids(
        "SELECT id FROM payouts WHERE payee_id = 'p3'")
    assert table_ids(site.ok("payouts", "list", "--limit", "1").stdout) == payouts[-1:]


def test_not_eligible_pages_by_calculation_id(site: Site) -> None:
    calculations = site.ids("SELECT id FROM calculations WHERE status IN ('not_eligible', 'failed') ORDER BY id")
    assert len(calculations) == 5
    listed = site.json("rewards", "list", "--not-eligible", "--after", "0")
    assert [c["calculation"] for c in listed] == calculations
    assert [c["calculation"] for c in site.json("rewards", "list", "--not-eligible", "--limit", "1")] == \
        calculations[::-1][:1]


@pytest.mark.parametrize("args", [("--after", "-1"), ("--after", str(2**63)), ("--limit", "0"), ("--after", "x")])
@pytest.mark.parametrize("listing", ["events", "rewards", "payouts"])
def test_bad_paging_options_are_usage_errors(site: Site, listing: str, args: tuple[str, str]) -> None:
    result = site.cli(listing, "list", *args)
    assert result.exit_code == 2 and args[0] in result.output


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_render_writes_each_row_before_reading_the_next(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    written: list[str] = []

    def rows() -> Any:
        for n in range(3):
            yield {"id": n, "name": f"=cell {n}"}
            written.append(capsys.readouterr().out)

    output.render(rows(), fmt, ["id", "name"])
    written.append(capsys.readouterr().out)
    assert all(f"cell {n}" in written[n] for n in range(3))
    text = "".join(written)
    if fmt == "json":  # the same text as the whole list printed at once
        assert text == json.dumps([{"id": n, "name": f"=cell {n}"} for n in range(3)], indent=2) + "\n"
    else:
        assert text.splitlines() == ["id,name", "0,'=cell 0", "1,'=cell 1", "2,'=cell 2"]


def test_render_of_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    output.render(iter([]), "json", ["id"])
    assert capsys.readouterr().out == "[]\n"


def test_newest_first_takes_no_after(site: Site) -> None:
    engine = make_engine(site.db_url)
    try:
        with engine.connect() as conn, pytest.raises(ValueError, match="newest_first"):
            reports.events(conn, after=1, newest_first=True)
    finally:
        engine.dispose()
