"""The ``file`` source: trigger events from a CSV or JSON Lines file that grows or is replaced.

Columns (CSV header or JSON keys): ``id`` (required, the CRM object id), ``type`` (required, the event type such as
``deal_won``), ``transition`` (default: the type), ``object_type`` (default: the ``object_type`` setting),
``occurred_at`` (ISO 8601 date or date-time), ``payee_id`` (required), ``partner_id``, ``amount`` (decimal text),
``currency`` (ISO 4217). Every other column is kept as an attribute for calculators (``quantity``, ``product``…).

The cursor is the byte offset after the last complete line read, plus the file's identity and a fingerprint of the
bytes before the offset: appended lines are read on the next poll; a replaced, truncated or rewritten file is read
again from the start (dedup keys make that harmless).
A last line without a newline is read only once the file has been left unchanged for ``settle_seconds``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from payhub.api import (
    ConfigPath,
    FetchResult,
    InvalidRecord,
    PluginSettings,
    Source,
    SourceRecord,
    TransientSourceError,
)
from payhub.clock import parse_instant

CHECK_BYTES = 4096

FIELDS = ("id", "type", "transition", "object_type", "occurred_at", "payee_id", "partner_id", "amount", "currency")


class FileSourceSettings(PluginSettings):
    path: ConfigPath
    format: Literal["csv", "jsonl"] | None = None
    object_type: str = "record"
    timezone: str = "UTC"
    settle_seconds: float = 2.0

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):  # not found is a KeyError, which pydantic would not report
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class FileSource(Source):
    """Reads new lines of a CSV or JSONL file from a byte-offset cursor."""

    settings_model = FileSourceSettings
    settings: FileSourceSettings

    def __init__(self, name: str, settings: FileSourceSettings) -> None:
        super().__init__(name, settings)
        path = settings.path
        self.format = settings.format or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv")
        self.tz = ZoneInfo(settings.timezone)

    def fetch(self, cursor: str | None, limit: int) -> FetchResult:
        path = self.settings.path
        try:
            fh = path.open("rb")
            stat = os.fstat(fh.fileno())  # of the file opened, even if it is replaced meanwhile
        except FileNotFoundError:
            raise TransientSourceError(f"{path} does not exist (yet)") from None
        except OSError as exc:
            raise TransientSourceError(f"cannot open {path}: {exc}") from exc
        state = json.loads(cursor) if cursor else {}
        offset = state.get("offset", 0)
        if (state.get("inode") != stat.st_ino or offset > stat.st_size
                or ("check" in state and _check(fh, offset) != state["check"])):
            offset = 0  # a new, truncated or rewritten file: read it again, keys dedup what was seen
        settled = time.time() - stat.st_mtime >= self.settings.settle_seconds
        with fh:
            fh.seek(0)
            header = self._header(fh) if self.format == "csv" else None
            if header is None and self.format == "csv":
                return FetchResult([], cursor, False)
            if offset == 0 and self.format == "csv":
                offset = fh.tell()
            fh.seek(offset)
            records, offset, more = self._read(fh, header, offset, limit, settled)
            new_cursor = json.dumps({"inode": stat.st_ino, "offset": offset, "check": _check(fh, offset)})
        return FetchResult(records, new_cursor, more)

    @staticmethod
    def _header(fh: Any) -> list[str] | None:
        line = fh.readline()
        if not line.endswith(b"\n"):
            return None
        return [name.strip().lower() for name in next(csv.reader([line.decode("utf-8-sig")]))]

    def _read(self, fh: Any, header: list[str] | None, offset: int, limit: int, settled: bool
              ) -> tuple[list[SourceRecord], int, bool]:
        records: list[SourceRecord] = []
        for text, end in _lines(fh, offset, settled):
            if not text.strip():
                offset = end
                continue
            if len(records) >= limit:
                return records, offset, True
            records.append(self._csv_record(header, text, end) if header is not None else self._json_record(text))
            offset = end
        return records, offset, False

    def _csv_record(self, header: list[str], text: str, end: int) -> SourceRecord:
        values = next(csv.reader(io.StringIO(text)))
        if len(values) != len(header):
            return SourceRecord("", "", "", "", None, None, raw=text.rstrip("\r\n"),
                                problem=f"row has {len(values)} columns, the header has {len(header)}")
        return self._record(dict(zip(header, values, strict=True)), text.rstrip("\r\n"))

    def _json_record(self, text: str) -> SourceRecord:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return SourceRecord("", "", "", "", None, None, raw=text.rstrip("\n"), problem=f"invalid JSON: {exc}")
        return self._record({str(k).lower(): v for k, v in data.items()}, text.rstrip("\r\n"))

    def _record(self, data: dict[str, Any], raw: str) -> SourceRecord:
        def get(name: str) -> Any:
            value = data.get(name)
            return None if value is None or (isinstance(value, str) and not value.strip()) else value

        event_type = str(get("type") or "")
        occurred = get("occurred_at")
        problem = None
        if occurred is not None:
            try:
                occurred = parse_instant(occurred, default_tz=self.tz)
            except InvalidRecord as exc:
                problem, occurred = str(exc), None
        amount = get("amount")
        if isinstance(amount, float):
            problem = "amount is a JSON float; write it as a string to keep it exact"
        return SourceRecord(
            object_type=str(get("object_type") or self.settings.object_type),
            object_id=str(get("id") or ""),
            transition=str(get("transition") or event_type),
            event_type=event_type,
            occurred_at=occurred,
            payee_id=None if get("payee_id") is None else str(get("payee_id")),
            partner_id=None if get("partner_id") is None else str(get("partner_id")),
            amount=None if amount is None else str(amount),
            currency=get("currency"),
            attributes={k: v for k, v in data.items() if k not in FIELDS and v not in (None, "")},
            raw=raw,
            problem=problem,
        )


def _check(fh: Any, offset: int) -> str:
    """A fingerprint of the bytes just before ``offset``: if they change, the file was rewritten in place."""
    start = max(0, offset - CHECK_BYTES)
    fh.seek(start)
    return hashlib.sha256(fh.read(offset - start)).hexdigest()


def _lines(fh: Any, offset: int, settled: bool) -> Iterator[tuple[str, int]]:
    """Complete lines from ``offset`` with the offset after each; quoted CSV newlines stay in one record."""
    while True:
        line = fh.readline()
        if not line:
            return
        while line.count(b'"') % 2 == 1:  # an open quoted field continues on the next line
            more = fh.readline()
            if not more:
                break
            line += more
        if not line.endswith(b"\n") and not settled:
            return  # the writer may still be appending to this line
        offset += len(line)
        yield line.decode("utf-8"), offset
