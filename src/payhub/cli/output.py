"""Rendering for the CLI: Rich tables for people, JSON or CSV for scripts.

Text that came from outside payhub is never interpreted on the way out: table cells, titles and messages go through
:func:`shown` (terminal control characters made visible by :func:`payhub.termsafe.visible`, Rich markup escaped, no
emoji codes), CSV through :mod:`payhub.csvsafe` (formulas neutralised), JSON through :func:`to_json` (exact text,
non-ASCII and control characters as ``\\u`` escapes).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import islice
from json.encoder import encode_basestring_ascii as _ascii
from typing import Any, TextIO

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from payhub import csvsafe
from payhub.clock import isoformat
from payhub.termsafe import visible

FORMATS = click.Choice(["table", "json", "csv"])
TABLE_PAGE = 1000
"""Rows per table when a table is printed page by page (:func:`render`)."""
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


def _key(key: Any) -> str:
    """A dict key as :mod:`json` writes it."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | float):
        return json.dumps(key)
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _indented(value: Any, pad: str) -> str:
    """``value`` as :func:`to_json` writes it at the indentation ``pad``: the same text, built without the pure-Python
    encoder that ``json`` uses whenever ``indent`` is set (several times slower, and a listing may hold millions)."""
    kind = type(value)
    if kind is str:  # the common types first, by identity (a subclass takes the general path below)
        return _ascii(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = pad + "  "
        return "{\n" + ",\n".join([f"{inner}{_ascii(k if type(k) is str else _key(k))}: {_indented(v, inner)}"
                                    for k, v in value.items()]) + "\n" + pad + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        inner = pad + "  "
        return "[\n" + ",\n".join([inner + _indented(v, inner) for v in value]) + "\n" + pad + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _ascii(value)
    if isinstance(value, int | float):
        return json.dumps(value)
    return _indented(_text(value), pad)


def _json_array(items: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write ``items`` as :func:`to_json` writes a list of them, one item at a time; return how many."""
    count = 0
    for item in items:
        out.write(("[\n  " if count == 0 else ",\n  ") + _indented(item, "  "))
        count += 1
    out.write("\n]\n" if count else "[]\n")
    return count


def render(rows: Iterable[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None,
           title: str | None = None) -> int:
    """Print ``rows`` as a table, a JSON array, or CSV with a header (cells neutralised, see :mod:`payhub.csvsafe`);
    return how many rows were printed.

    With ``columns`` given, rows are printed as ``rows`` yields them, so an iterator costs flat memory: JSON and CSV
    row by row, a table in pages of :data:`TABLE_PAGE` rows (each page a table of its own; the title heads the
    first). Without ``columns``, the first row's keys are the columns (``rows`` is read whole first)."""
    if columns is None:
        held = list(rows)
        rows, columns = held, list(held[0].keys() if held else [])
    out = sys.stdout
    if fmt == "json":
        return _json_array(({c: row.get(c) for c in columns} for row in rows), out)
    count = 0
    if fmt == "csv":
        writer = csvsafe.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(row.get(c)) for c in columns])
            count += 1
        return count
    rows = iter(rows)
    while page := list(islice(rows, TABLE_PAGE)):
        table = Table(title=cell(title) if title is not None and count == 0 else None, show_lines=False)
        for column in columns:
            table.add_column(cell(column), overflow="fold")
        for row in page:
            table.add_row(*[cell(row.get(c)) for c in columns])
        console.print(table)
        count += len(page)
    if not count:
        console.print("[dim](none)[/dim]")
    return count
