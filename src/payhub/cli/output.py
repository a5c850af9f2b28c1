"""Rendering for the CLI: Rich tables for people, JSON or CSV for scripts."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from payhub.clock import isoformat

FORMATS = click.Choice(["table", "json", "csv"])
console = Console()
err_console = Console(stderr=True)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=_text)
    return str(value)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=_text)


def render(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None,
           title: str | None = None) -> None:
    """Print ``rows`` as a table, a JSON array, or CSV with a header."""
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        click.echo(to_json([{c: row.get(c) for c in columns} for row in rows]))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(row.get(c)) for c in columns])
    else:
        table = Table(title=title, show_lines=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*[_text(row.get(c)) for c in columns])
        console.print(table)
        if not rows:
            console.print("[dim](none)[/dim]")
