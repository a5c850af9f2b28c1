"""Rendering for the CLI: Rich tables for people, JSON or CSV for scripts.

Text that came from outside payhub is never interpreted on the way out: table cells, titles and messages go through
:func:`shown` (terminal control characters made visible by :func:`payhub.termsafe.visible`, Rich markup escaped, no
emoji codes), CSV through :mod:`payhub.csvsafe` (formulas neutralised), JSON through :func:`to_json` (exact text,
non-ASCII and control characters as ``\\u`` escapes).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from payhub import csvsafe
from payhub.clock import isoformat
from payhub.termsafe import visible

FORMATS = click.Choice(["table", "json", "csv"])
# emoji=False: ":smile:" in a CRM field stays text in every message, markup or not.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=_text)
    return str(value)


def plain(value: Any) -> str:
    """``value`` as text for a message printed without markup: control characters made visible."""
    return visible(_text(value))


def shown(value: Any) -> str:
    """``value`` as text to put inside a message with Rich markup: control characters visible, markup escaped."""
    return escape(plain(value))


def inline_json(value: Any) -> str:
    """``value`` as one line of JSON (keys sorted) inside a message with Rich markup (JSON escapes every control
    character)."""
    return escape(json.dumps(value, sort_keys=True, default=_text))


def say(line: str, *, markup: bool = True) -> None:
    """Print one line of a report, never wrapped: keys and ids stay whole on a terminal or in a pipe (where Rich
    would wrap at 80 columns). With ``markup``, values from outside payhub must be :func:`shown`, else :func:`plain`."""
    console.print(line, markup=markup, highlight=False, soft_wrap=True)


def cell(value: Any) -> Text:
    """``value`` as a table cell: control characters visible, never read as markup."""
    return Text(plain(value))


def to_json(value: Any) -> str:
    """Indented JSON; ASCII only (``ensure_ascii``), so control and bidi characters are ``\\u`` escapes."""
    return json.dumps(value, indent=2, sort_keys=False, default=_text)


def render(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None,
           title: str | None = None) -> None:
    """Print ``rows`` as a table, a JSON array, or CSV with a header (cells neutralised, see :mod:`payhub.csvsafe`)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        click.echo(to_json([{c: row.get(c) for c in columns} for row in rows]))
    elif fmt == "csv":
        writer = csvsafe.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(row.get(c)) for c in columns])
    else:
        table = Table(title=cell(title) if title is not None else None, show_lines=False)
        for column in columns:
            table.add_column(cell(column), overflow="fold")
        for row in rows:
            table.add_row(*[cell(row.get(c)) for c in columns])
        console.print(table)
        if not rows:
            console.print("[dim](none)[/dim]")
