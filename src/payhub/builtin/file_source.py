"""The ``file`` source: trigger events from a CSV or JSON Lines file that grows or is replaced.

Columns (CSV header or JSON keys, trimmed and case-insensitive): ``id`` (required, the CRM object id), ``type``
(required, the event type such as ``deal_won``), ``transition`` (default: the type), ``object_type`` (default: the
``object_type`` setting), ``occurred_at`` (required, ISO 8601 date or date-time), ``payee_id`` (required),
``partner_id``, ``amount`` (decimal text), ``currency`` (ISO 4217). Every other column is kept as an attribute for
calculators (``quantity``, ``product``…).

The file is read with the standard ``csv`` and ``json`` modules (see :mod:`payhub.builtin.file_formats`), in UTF-8
with or without a BOM, in the ``encoding`` setting, or in UTF-16/UTF-32 as its BOM says; lines end with LF, CRLF or
CR. A record that cannot be read (bytes that do not decode, broken quoting, invalid JSON, duplicate columns or keys,
a record or field over its size limit…) is passed on with a ``problem`` naming the file, the line and what is
wrong, so that the core quarantines it alone; every record before and after it is read.

The cursor is the byte offset after the last complete record, the number of the line there, the file's identity and
a fingerprint of the bytes before the offset: appended records are read on the next poll; a replaced, truncated or
rewritten file is read again from the start (dedup keys make that harmless). A last line without a line break is
read only once the file has been left unchanged for ``settle_seconds``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from payhub.api import (
    ConfigPath,
    FetchResult,
    InvalidRecord,
    PluginSettings,
    Source,
    SourceRecord,
    TransientSourceError,
)
from payhub.builtin.file_formats import (
    PROBLEM_CHARS,
    Limits,
    Parsed,
    csv_header,
    csv_records,
    csv_row,
    has_text_only,
    jsonl_records,
)
from payhub.builtin.file_lines import Encoding, LineReader, check_encoding
from payhub.clock import parse_instant
from payhub.money import check_currency, parse_amount
from payhub.pipeline.identity import normalise_id

CHECK_BYTES = 4096
KIB, MIB = 1024, 1024 * 1024

FIELDS = ("id", "type", "transition", "object_type", "occurred_at", "payee_id", "partner_id", "amount", "currency")
REQUIRED = ("id", "type", "occurred_at", "payee_id")
IDENTITY = ("id", "type", "transition", "object_type")
MAX_ID_CHARS = 200
"""An identity value longer than this is not used to key a quarantined record (it is not a plausible id)."""


class FileSourceSettings(PluginSettings):
    path: ConfigPath
    format: Literal["csv", "jsonl"] | None = None
    encoding: str = "utf-8"
    object_type: str = Field("record", min_length=1, max_length=MAX_ID_CHARS)
    timezone: str = "UTC"
    settle_seconds: float = Field(2.0, ge=0, le=86_400, allow_inf_nan=False)
    max_field_bytes: int = Field(64 * KIB, ge=64, le=16 * MIB)
    max_record_bytes: int = Field(MIB, ge=KIB, le=64 * MIB)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):  # not found is a KeyError, which pydantic would not report
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return check_encoding(value)

    @field_validator("object_type")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        """The id rule of every event's identity (payhub.pipeline.identity): normalised, and refused when it holds
        a control or format character, which would quarantine every record."""
        try:
            text = normalise_id(value, "object_type")
        except InvalidRecord as exc:
            raise ValueError(str(exc)) from None
        if not text:
            raise ValueError("object_type is empty once white space and invisible characters are removed")
        return text


@dataclass(frozen=True, slots=True)
class _Header:
    names: list[str]
    twice: dict[str, str]
    end: int
    next_line: int


@dataclass(frozen=True, slots=True)
class _Position:
    offset: int
    line: int
    open: bool


class FileSource(Source):
    """Reads the records after a byte-offset cursor in a CSV or JSON Lines file."""

    settings_model = FileSourceSettings
    settings: FileSourceSettings

    def __init__(self, name: str, settings: FileSourceSettings) -> None:
        super().__init__(name, settings)
        path = settings.path
        self.format = settings.format or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv")
        self.tz = ZoneInfo(settings.timezone)
        self.limits = Limits(settings.max_field_bytes, settings.max_record_bytes)

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        path = self.settings.path
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise TransientSourceError(f"{path} does not exist (yet)") from None
        except OSError as exc:
            raise TransientSourceError(f"cannot open {path}: {exc}") from exc
        with fh:
            try:
                return self._fetch_from(fh, cursor, limit)
            except OSError as exc:  # a read error (a network share gone, a disk fault): try again later
                raise TransientSourceError(f"cannot read {path}: {exc}") from exc

    def _fetch_from(self, fh: BinaryIO, cursor: str | None, limit: int) -> FetchResult:
        stat = os.fstat(fh.fileno())  # of the file opened, even if it is replaced meanwhile
        size = stat.st_size  # read no further: what is appended meanwhile is read on the next poll
        settled = time.time() - stat.st_mtime >= self.settings.settle_seconds
        encoding = Encoding.detect(fh.read(4), self.settings.encoding)
        at = self._resume(fh, cursor, stat.st_ino, size, encoding)
        header = None
        if self.format == "csv":
            header = self._header(fh, encoding, size, settled)
            if header is None:
                return FetchResult([], cursor, False)
            if at.offset < header.end:
                at = _Position(header.end, header.next_line, False)
        reader = LineReader(fh, encoding, at.offset, at.line, size, self.limits.record, settled=settled,
                            continues=at.open)
        parsed_records: Iterator[Parsed] = (csv_records(reader, encoding, self.limits) if header is not None
                                            else jsonl_records(reader, encoding, self.limits))
        records: list[SourceRecord] = []
        more = False
        last = None
        for parsed in parsed_records:
            if not parsed.blank:
                if len(records) >= limit:
                    more = True
                    break
                records.append(self._record(parsed, header))
            last = parsed
        if last is not None:
            at = _Position(last.end, last.last + 1, last.open)
        new_cursor = json.dumps({"inode": stat.st_ino, "offset": at.offset, "line": at.line, "open": at.open,
                                 "check": _check(fh, at.offset)})
        return FetchResult(records, new_cursor, more)

    def _resume(self, fh: BinaryIO, cursor: str | None, inode: int, size: int, encoding: Encoding) -> _Position:
        """Where to read on from: the cursor's position, or the start of the data if the file is not the same."""
        state = json.loads(cursor) if cursor else {}
        offset = state.get("offset", 0)
        if (state.get("inode") != inode or not encoding.bom <= offset <= size
                or ("check" in state and _check(fh, offset) != state["check"])):
            return _Position(encoding.bom, 1, False)  # a new, truncated or rewritten file: read it again
        if "line" not in state:  # a cursor written before line numbers were kept: count them once
            counter = LineReader(fh, encoding, encoding.bom, 1, offset, self.limits.record, settled=True)
            for _line in counter:
                pass
            return _Position(offset, counter.number, False)
        return _Position(offset, int(state["line"]), bool(state.get("open", False)))

    def _header(self, fh: BinaryIO, encoding: Encoding, size: int, settled: bool) -> _Header | None:
        """The CSV header (the first non-blank record), None while it is not complete; a broken one is an error."""
        path = self.settings.path
        reader = LineReader(fh, encoding, encoding.bom, 1, size, self.limits.record, settled=settled)
        for parsed in csv_records(reader, encoding, self.limits):
            if parsed.blank:
                continue
            if parsed.open:
                return None  # no line break after the header yet: no row either
            where = f"{path} line {parsed.first}"
            if parsed.problem is not None or parsed.values is None:
                raise TransientSourceError(f"{where}: the header cannot be read: {parsed.problem}")
            names, twice = csv_header(parsed.values)
            bad = [name for name in names if "\x00" in name or len(name) > PROBLEM_CHARS]
            if bad:
                raise TransientSourceError(
                    f"{where}: the header cannot be read: a column name holds a NUL character or is over "
                    f"{PROBLEM_CHARS} characters (a UTF-16 file without a BOM? set the source's encoding)")
            missing = [name for name in REQUIRED if name not in names]
            if missing:
                raise TransientSourceError(
                    f"{where}: the header has no {', '.join(repr(name) for name in missing)} column "
                    f"(it has {', '.join(repr(name) for name in names)[:PROBLEM_CHARS]})")
            return _Header(names, twice, parsed.end, parsed.last + 1)
        return None

    # ------------------------------------------------------------------------------------------ records

    def _record(self, parsed: Parsed, header: _Header | None) -> SourceRecord:
        if header is not None and parsed.problem is None:
            parsed = csv_row(parsed, header.names, header.twice, self.limits)
        raw = parsed.raw or ""
        fields = parsed.fields or {}
        if parsed.problem is not None:
            return self._quarantined(fields, parsed.ambiguous, raw, f"{self._where(parsed)}: {parsed.problem}")
        try:
            return self._valid(fields, raw)
        except InvalidRecord as exc:
            return self._quarantined(fields, frozenset(), raw, f"{self._where(parsed)}: {str(exc)[:PROBLEM_CHARS]}")

    def _where(self, parsed: Parsed) -> str:
        """The file and line(s) of a record, to begin its problem with."""
        lines = f"line {parsed.first}" if parsed.first == parsed.last else f"lines {parsed.first}-{parsed.last}"
        return f"{self.settings.path.name} {lines}"

    def _valid(self, data: dict[str, Any], raw: str) -> SourceRecord:
        """The record of ``data``, or InvalidRecord naming the first missing or malformed documented field."""
        event_type = _text(data, "type")
        object_id = _text(data, "id")
        occurred = parse_instant(_text(data, "occurred_at"), default_tz=self.tz)
        payee_id = _text(data, "payee_id")
        amount, currency = _text(data, "amount"), _text(data, "currency")
        if amount is not None:
            if not _PLAIN_AMOUNT.fullmatch(amount):  # else it is plain decimal text already
                parse_amount(amount)
            check_currency(currency)
        elif currency is not None:
            check_currency(currency)
        return SourceRecord(  # by position: much quicker than by keyword for a frozen dataclass of twelve fields
            _text(data, "object_type") or self.settings.object_type,  # object_type
            object_id or "",  # object_id
            _text(data, "transition") or event_type or "",  # transition
            event_type or "",  # event_type
            occurred,  # occurred_at
            payee_id,  # payee_id
            amount,  # amount
            currency,  # currency
            _text(data, "partner_id"),  # partner_id
            {k: v for k, v in data.items() if k not in _FIELD_SET and v not in (None, "")},  # attributes
            raw,  # raw
        )

    def _quarantined(self, data: dict[str, Any], ambiguous: frozenset[str], raw: str, problem: str) -> SourceRecord:
        """A record for the core to quarantine, keyed by its identity when that is known for sure."""
        identity: dict[str, str] = {}
        for name in IDENTITY:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, str | int) or name in ambiguous:
                continue
            value = str(value).strip()
            if value and len(value) <= MAX_ID_CHARS and has_text_only(value):
                identity[name] = value
        if "id" not in identity or "type" not in identity or ambiguous & set(IDENTITY):
            identity = {}  # keyed by its raw text instead
        shown = {name: _plain(data.get(name)) if name not in ambiguous else None
                 for name in ("payee_id", "partner_id", "occurred_at")}
        return SourceRecord(
            object_type=identity.get("object_type", self.settings.object_type if identity else ""),
            object_id=identity.get("id", ""),
            transition=identity.get("transition", identity.get("type", "")),
            event_type=identity.get("type", ""),
            occurred_at=self._instant_or_none(shown["occurred_at"]),
            payee_id=shown["payee_id"],
            partner_id=shown["partner_id"],
            raw=raw,
            problem=problem,
        )

    def _instant_or_none(self, text: str | None) -> datetime | None:
        """The instant ``text`` names, to show with a quarantined record; None when it names none."""
        if text is None:
            return None
        try:
            return parse_instant(text, default_tz=self.tz)
        except (InvalidRecord, OverflowError, ValueError):
            return None


_FIELD_SET = frozenset(FIELDS)
_PLAIN_AMOUNT = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")
"""Amount text that :func:`payhub.money.parse_amount` takes as it is (the common case, checked quicker)."""


def _text(data: dict[str, Any], name: str) -> str | None:
    """The documented field ``name`` of ``data`` as text, None when it is absent or blank; InvalidRecord when it is
    required and missing, or of a type it cannot have."""
    value = data.get(name)
    if type(value) is str and value.strip():  # the common case first
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        if name in REQUIRED:
            raise InvalidRecord(f"{name} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        if name == "amount" and isinstance(value, float):
            raise InvalidRecord("amount is a JSON float; write it as a string to keep it exact")
        shown = "integer" if name == "amount" else "string"
        raise InvalidRecord(f"{name} must be a {shown}, not {_json_type(value)}")
    if isinstance(value, int) and name == "occurred_at":
        raise InvalidRecord("occurred_at must be an ISO 8601 string, not a number")
    return str(value)


def _plain(value: object) -> str | None:
    """``value`` if it is plain text (or a whole number) short enough to show as an id or a date, else None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if text and len(text) <= MAX_ID_CHARS and has_text_only(text) else None


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", float: "a number with a fraction", bool: "true or false"}
    return names.get(type(value), type(value).__name__)


def _check(fh: BinaryIO, offset: int) -> str:
    """A fingerprint of the bytes just before ``offset``: if they change, the file was rewritten in place."""
    start = max(0, offset - CHECK_BYTES)
    fh.seek(start)
    return hashlib.sha256(fh.read(offset - start)).hexdigest()
