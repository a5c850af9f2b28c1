"""Records of CSV and JSON Lines files, parsed from physical lines by the standard ``csv`` and ``json`` modules.

Each parser yields one :class:`Parsed` per record (or per blank line, so that the cursor can pass it), in file
order. A record that cannot be read yields its extent and a ``problem`` instead of its fields; the parser then goes
on with the next record, so one bad record never hides another.

CSV: a record is one line, or several when a quoted field holds line breaks. The ``csv`` module parses it in strict
mode: a quote inside an unquoted field is a literal character (``Monitor 27" 4K``), a quoted field must be closed
before the next comma. A quoted field still open at the end of the file, or after ``max_record_bytes``, is a broken
record start: its first line is reported alone and parsing resumes on the next line. Line breaks inside quoted
fields are read as ``\\n`` whatever the file uses. A line without any quote is split at its commas, which is what
the ``csv`` module makes of it, without the module's per-line cost.

JSON Lines: each line is one JSON object, parsed alone (lines are never joined). Duplicate keys are refused at
every level, NaN and Infinity are refused, floats are kept as ``float`` (the caller refuses them where exactness
matters) and nesting deeper than :data:`MAX_DEPTH` is refused.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from payhub.builtin.file_lines import Encoding, Line, LineReader

MAX_DEPTH = 64
"""JSON values nested deeper than this (objects in arrays in objects…) are refused."""
RAW_CHARS = 1000
"""How much of an over-long record or field is kept as its raw text."""
PROBLEM_CHARS = 300
"""Reasons quote values up to this length."""

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_UTF16_HINT = " (a UTF-16 file without a BOM? set the source's encoding)"


@dataclass(slots=True)
class Parsed:
    """One record (or blank line) of a file.

    ``first`` and ``last`` are its physical line numbers, ``end`` the byte offset after it and ``open`` whether its
    last line had no terminator. ``raw`` is its text (None for a blank line; NUL and lone surrogates escaped and
    over-long text cut when there is a problem). ``values`` are a CSV row's cells, ``fields`` a record's named
    values, ``problem`` says why it cannot be used as it is (without its location), and ``ambiguous`` names keys
    whose value is not known for sure (duplicates), left out of ``fields``.
    """

    first: int
    last: int
    end: int
    open: bool
    raw: str | None
    values: list[str] | None = None
    fields: dict[str, Any] | None = None
    problem: str | None = None
    ambiguous: frozenset[str] = frozenset()

    @property
    def blank(self) -> bool:
        return self.raw is None


class Limits:
    """The size limits a parser applies."""

    def __init__(self, max_field_bytes: int, max_record_bytes: int) -> None:
        self.field = max_field_bytes
        self.record = max_record_bytes
        # The csv module's own limit (characters per field) is process-wide: raise it, never lower it.
        if csv.field_size_limit() < max_record_bytes:
            csv.field_size_limit(max_record_bytes)


# ------------------------------------------------------------------------------------------------ helpers


def bounded_raw(text: str, *, cut: bool = False, size: int | None = None, digest: str | None = None) -> str:
    """``text`` as stored with a quarantined record: NUL and lone surrogates escaped; with ``cut``, its start only.

    A cut text ends with the size and SHA-256 of the whole record, so two records that start alike stay apart.
    """
    if _NOT_TEXT.search(text):
        text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if not cut:
        return text
    if digest is None:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"{text[:RAW_CHARS]}… [cut: {size if size is not None else len(text.encode())} bytes, sha256 {digest}]"


def _decode(line: Line, encoding: Encoding) -> tuple[str, str | None]:
    """The line's text and, if some bytes do not decode, the problem (with the file offset of the first one)."""
    try:
        return line.data.decode(encoding.name), None
    except UnicodeDecodeError as exc:
        bad = line.data[exc.start:exc.end][:8].hex(" ")
        problem = (f"bytes that are not valid {encoding.name} at byte offset {line.start + exc.start} ({bad}: "
                   f"{exc.reason}); set the source's encoding if the file is not {encoding.name}")
        return line.data.decode(encoding.name, "backslashreplace"), problem


def _oversize(line: Line, encoding: Encoding, limits: Limits) -> Parsed:
    preview = line.data.decode(encoding.name, "replace")
    return Parsed(line.number, line.number, line.end, not line.terminated,
                  bounded_raw(preview, cut=True, size=line.size, digest=line.digest),
                  problem=f"record of {line.size} bytes exceeds max_record_bytes ({limits.record})")


def _oversize_value(name: str, value: str, limits: Limits) -> str | None:
    """The problem of a value longer than max_field_bytes (in UTF-8), if it is."""
    if len(value) * 4 > limits.field:  # only then can it be too long: a character is at most 4 bytes
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limits.field:
            return f"field {name[:100]!r} is {size} bytes, more than max_field_bytes ({limits.field})"
    return None


def has_text_only(text: str) -> bool:
    """Whether ``text`` is free of NUL characters and lone surrogates (which no database stores as text)."""
    return _NOT_TEXT.search(text) is None


def _string_problem(text: str, what: str, nul_hint: str = "") -> str | None:
    """A NUL character or a lone surrogate in ``text`` (``what`` names it), if there is one."""
    found = _NOT_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"{what} holds a NUL character{nul_hint}"
    return f"{what} holds a lone surrogate (\\u{ord(found.group()):04x}), which is not text"


# -------------------------------------------------------------------------------------------------- CSV


class _NeedMore(Exception):
    """The record goes on past the data there is."""


class _TooLong(Exception):
    """The record grew past max_record_bytes before it ended."""


class _PushBack:
    """Lines from a reader, with lines given back to be read again."""

    def __init__(self, reader: LineReader) -> None:
        self.reader = reader
        self.back: list[Line] = []

    def next(self) -> Line | None:
        if self.back:
            return self.back.pop()
        return next(self.reader, None)

    def give_back(self, lines: list[Line]) -> None:
        self.back.extend(reversed(lines))


class _Feed:
    """The decoded lines of one record after another, for one long-lived ``csv.reader``.

    :meth:`start` gives the first line of the next record; the reader then takes lines as it needs them. Line
    breaks are given as ``\\n`` whatever the file uses.
    """

    def __init__(self, lines: _PushBack, encoding: Encoding, limits: Limits) -> None:
        self.lines = lines
        self.encoding = encoding
        self.limits = limits
        self.taken: list[Line] = []
        self.texts: list[str] = []
        self.problems: list[str] = []
        self._first: str | None = None

    def start(self, line: Line, text: str, problem: str | None) -> None:
        self.taken = [line]
        self.texts = [text]
        self.problems = [problem] if problem else []
        self._first = text + "\n" if line.terminated else text

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        line = self.lines.next()
        if line is None:
            raise _NeedMore
        self.taken.append(line)
        if line.oversize or line.start + line.size - self.taken[0].start > self.limits.record:
            raise _TooLong
        text, problem = _decode(line, self.encoding)
        if problem:
            self.problems.append(problem)
        self.texts.append(text)
        return text + "\n" if line.terminated else text


def csv_records(reader: LineReader, encoding: Encoding, limits: Limits) -> Iterator[Parsed]:
    """The CSV records read from ``reader``, each with its cells in ``values`` (or its problem)."""
    lines = _PushBack(reader)
    feed = _Feed(lines, encoding, limits)
    rows = csv.reader(feed, strict=True)
    while True:
        first = lines.next()
        if first is None:
            return
        if first.oversize:
            yield _oversize(first, encoding, limits)
            continue
        text, undecodable = _decode(first, encoding)
        if undecodable is None and not text.strip():
            yield Parsed(first.number, first.number, first.end, not first.terminated, None)
            continue
        if undecodable is None and '"' not in text:  # no quote: one line, whose cells are what the commas part
            yield Parsed(first.number, first.number, first.end, not first.terminated, text, text.split(","))
            continue
        feed.start(first, text, undecodable)
        try:
            values = next(rows)
        except _NeedMore:
            if reader.incomplete or not reader.settled:  # the writer may still be writing it: wait for it
                lines.give_back(feed.taken)
                return
            yield _broken_start(feed.taken, text, lines, "a quoted field is not closed before the end of the file")
            continue
        except _TooLong:
            yield _broken_start(feed.taken, text, lines,
                                f"a quoted field is not closed within max_record_bytes ({limits.record})")
            continue
        except csv.Error as exc:
            if len(feed.taken) > 1:
                yield _broken_start(feed.taken, text, lines, f"a quoted field is not closed ({exc})")
                continue
            yield Parsed(first.number, first.number, first.end, not first.terminated, bounded_raw(text),
                         problem=f"not valid CSV: {exc}")
            continue
        last = feed.taken[-1]
        raw = "\n".join(feed.texts) if len(feed.texts) > 1 else text
        if feed.problems:
            yield Parsed(first.number, last.number, last.end, not last.terminated, bounded_raw(raw),
                         problem=feed.problems[0])
            continue
        yield Parsed(first.number, last.number, last.end, not last.terminated, raw, values)


def _broken_start(taken: list[Line], text: str, lines: _PushBack, problem: str) -> Parsed:
    """Report the first line of a record that never ends, and read on from the line after it."""
    first = taken[0]
    lines.give_back(taken[1:])
    return Parsed(first.number, first.number, first.end, not first.terminated, bounded_raw(text),
                  problem=f"{problem}; the line is skipped and reading resumes on the next line")


def csv_header(values: list[str]) -> tuple[list[str], dict[str, str]]:
    """Column keys of a header (trimmed, lower-cased) and, for each key given twice, the columns that hold it."""
    names = [value.strip().lower() for value in values]
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(names, 1):
        if name:
            positions.setdefault(name, []).append(index)
    twice = {name: " and ".join(map(str, where)) for name, where in positions.items() if len(where) > 1}
    return names, twice


def csv_row(parsed: Parsed, names: list[str], twice: dict[str, str], limits: Limits) -> Parsed:
    """A parsed CSV row with its cells named by the header's columns, or its problem."""
    values = parsed.values or []
    if len(values) != len(names):
        return _with(parsed, None, f"row has {len(values)} columns, the header has {len(names)}")
    if twice or "" in names:
        fields = {name: value for name, value in zip(names, values, strict=True) if name and name not in twice}
    else:
        fields = dict(zip(names, values, strict=True))
    raw = parsed.raw or ""
    if len(raw) * 4 > limits.field or "\x00" in raw or (not raw.isascii() and _NOT_TEXT.search(raw)):
        # else no cell can be too long or hold NUL or a lone surrogate
        for index, (name, value) in enumerate(zip(names, values, strict=True), 1):
            label = name or f"column {index}"
            problem = _oversize_value(label, value, limits)
            if problem:
                return _with(parsed, fields, problem, cut=True)
            problem = _string_problem(value, f"field {label[:100]!r}", _UTF16_HINT)
            if problem:
                return _with(parsed, fields, problem)
    for index, (name, value) in enumerate(zip(names, values, strict=True), 1) if "" in names else ():
        if not name and value.strip():
            return _with(parsed, fields, f"column {index} has no name in the header but holds "
                                         f"{value[:PROBLEM_CHARS]!r}")
    if twice:
        name = sorted(twice)[0]
        return _with(parsed, fields, f"ambiguous: column {name[:100]!r} appears more than once in the header "
                                     f"(columns {twice[name]})", ambiguous=frozenset(twice))
    return Parsed(parsed.first, parsed.last, parsed.end, parsed.open, raw, None, fields)


def _with(parsed: Parsed, fields: dict[str, Any] | None, problem: str | None, *, cut: bool = False,
          ambiguous: frozenset[str] = frozenset()) -> Parsed:
    """``parsed`` with its fields or problem; the raw text of a problem record is bounded for storage."""
    raw = parsed.raw or ""
    if problem is not None:
        raw = bounded_raw(raw, cut=cut)
    return Parsed(parsed.first, parsed.last, parsed.end, parsed.open, raw, None, fields, problem, ambiguous)


# ------------------------------------------------------------------------------------------------- JSONL


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _BadNumber(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return result


def _constant(text: str) -> Any:
    raise _BadNumber(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(text)
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)


def jsonl_records(reader: LineReader, encoding: Encoding, limits: Limits) -> Iterator[Parsed]:
    """The JSON Lines records read from ``reader``: one object per line, top-level keys trimmed and lower-cased."""
    for line in reader:
        if line.oversize:
            yield _oversize(line, encoding, limits)
            continue
        text, undecodable = _decode(line, encoding)
        if not text.strip() and undecodable is None:
            yield Parsed(line.number, line.number, line.end, not line.terminated, None)
            continue
        parsed = Parsed(line.number, line.number, line.end, not line.terminated, text)
        yield _with(parsed, None, undecodable) if undecodable else _json_record(parsed, text, limits)


def _json_record(parsed: Parsed, text: str, limits: Limits) -> Parsed:
    try:
        data = _DECODER.decode(text)
    except _Duplicate as exc:
        return _with(parsed, None, f"ambiguous: key {exc.key[:100]!r} appears more than once in an object")
    except _BadNumber as exc:
        return _with(parsed, None, f"invalid JSON: {exc.text[:40]} is not a finite number")
    except RecursionError:
        return _with(parsed, None, f"invalid JSON: nested more than {MAX_DEPTH} levels deep")
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python converts
        return _with(parsed, None, f"invalid JSON: {str(exc)[:PROBLEM_CHARS]}")
    if not isinstance(data, dict):
        return _with(parsed, None, "invalid JSON: not a JSON object")
    # NUL and lone surrogates can only come from \u escapes; deep nesting needs many brackets.
    problem = None
    if "\\u" in text or text.count("[") + text.count("{") > MAX_DEPTH:
        problem = _nested_problem(data)
        if problem:
            return _with(parsed, None, problem)
    fields = {key.strip().lower(): value for key, value in data.items()}
    ambiguous: set[str] = set()
    if len(fields) != len(data):  # two keys differ only in case or spaces
        spelt: dict[str, str] = {}
        for key in data:
            name = key.strip().lower()
            if name in spelt:
                ambiguous.add(name)
                problem = problem or (f"ambiguous: keys {spelt[name][:100]!r} and {key[:100]!r} both mean "
                                      f"{name[:100]!r}")
            spelt[name] = key
    if len(text) * 4 > limits.field:
        size_problem = _field_sizes(fields, limits)
        if size_problem:
            return _with(parsed, fields, size_problem, cut=True, ambiguous=frozenset(ambiguous))
    if problem:
        return _with(parsed, {k: v for k, v in fields.items() if k not in ambiguous}, problem,
                     ambiguous=frozenset(ambiguous))
    return _with(parsed, fields, None)


def _nested_problem(data: dict[str, Any]) -> str | None:
    """Lone surrogates or NUL characters in any key or string, or nesting deeper than MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"invalid JSON: nested more than {MAX_DEPTH} levels deep"
        if isinstance(value, dict):
            for key, item in value.items():
                problem = _string_problem(key, f"key {key[:100]!r}")
                if problem:
                    return problem
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            problem = _string_problem(value, "a string")
            if problem:
                return problem
    return None


def _field_sizes(fields: dict[str, Any], limits: Limits) -> str | None:
    """The problem of the first key or value longer than max_field_bytes (a nested value as JSON text)."""
    for name, value in fields.items():
        size = len(name.encode("utf-8"))
        if size > limits.field:
            return f"a key is {size} bytes, more than max_field_bytes ({limits.field})"
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        if isinstance(value, str):
            problem = _oversize_value(name, value, limits)
            if problem:
                return problem
    return None
