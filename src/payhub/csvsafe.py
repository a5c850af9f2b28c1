"""Spreadsheet-safe CSV: every CSV file payhub writes goes through :func:`writer`.

The rule (OWASP, "CSV injection"), applied to each cell's text:

- a cell that starts with ``=``, ``+``, ``-``, ``@``, TAB or CR, or that starts with whitespace followed by one of
  ``=``, ``+``, ``-``, ``@``, is written with a leading ``'``, which spreadsheets read as "this cell is text";
- except a plain negative decimal number (``-`` then ASCII digits, optionally ``.`` and digits, e.g. ``-12.50``):
  spreadsheets read it as a number and it cannot run as a formula, so amounts stay numbers;
- a cell that starts with ``'`` followed by text the rule would change gets one more ``'`` (``'=1`` is written
  ``''=1``; a spreadsheet shows ``'=1``), so :func:`restore_cell` undoes the rule exactly.

Everything else is written as it is. Quoting is the :mod:`csv` module's (a cell holding the separator, a quote, CR or
LF is quoted, quotes doubled), so embedded newlines stay inside their cell.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO, Any

TRIGGERS = frozenset("=+-@\t\r")
_AFTER_SPACE = frozenset("=+-@")
_PLAIN_NEGATIVE = re.compile(r"-[0-9]+(?:\.[0-9]+)?")


def _would_run(text: str) -> bool:
    """True if the rule changes ``text``: leading ``'`` are looked through, so the rule can be undone."""
    first = text[:1]
    if not (first in TRIGGERS or first == "'" or first.isspace()):  # the common case, decided by one character
        return False
    text = text.lstrip("'")
    if not text or _PLAIN_NEGATIVE.fullmatch(text):
        return False
    return text[0] in TRIGGERS or text.lstrip()[:1] in _AFTER_SPACE


def neutralise_cell(text: str) -> str:
    """``text`` as a spreadsheet reads it as text: with a leading ``'`` if the rule above says so."""
    return "'" + text if _would_run(text) else text


def restore_cell(cell: str) -> str:
    """The text that :func:`neutralise_cell` turned into ``cell`` (the exact inverse)."""
    return cell[1:] if cell[:1] == "'" and _would_run(cell[1:]) else cell


class SafeWriter:
    """A :func:`csv.writer` whose cells are neutralised; ``None`` is written as an empty cell."""

    def __init__(self, fh: IO[str], **fmtparams: Any) -> None:
        self._writer = csv.writer(fh, **fmtparams)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow(["" if value is None else neutralise_cell(str(value)) for value in row])


def writer(fh: IO[str], **fmtparams: Any) -> SafeWriter:
    """A CSV writer on ``fh`` (opened with ``newline=""``) that applies the rule above to every cell."""
    return SafeWriter(fh, **fmtparams)
