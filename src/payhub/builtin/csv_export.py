"""The ``csv_export`` rail: payout instructions written to CSV files for upload to a bank portal.

Each send call writes one file ``<prefix>-<UTC time>-<n>.csv`` into ``directory`` atomically (temporary file,
fsync, rename), one row per payout with its idempotency key. A payout counts as accepted once its row is in a
file; what the bank does next is outside payhub (``reports_status`` is false). ``lookup`` reads the files back,
so a crash between writing and recording is resolved without writing the payout twice, and a key already
exported is never written again. Cells are neutralised against spreadsheet formulas (:mod:`payhub.csvsafe`: a
payee name ``=HYPERLINK(…)`` is written ``'=HYPERLINK(…)``; amounts, being plain numbers, are written as they are).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from payhub import csvsafe
from payhub.api import (
    ConfigPath,
    FileNamePart,
    Outcome,
    PayoutInstruction,
    PluginSettings,
    Rail,
    RailCapabilities,
    RailResult,
    RetryableRailError,
)
from payhub.clock import utcnow
from payhub.files import write_atomic

COLUMNS = ("idempotency_key", "payout_id", "payee_id", "payee_name", "country", "email", "currency", "amount",
           "reference", "payout_details")


class CsvExportSettings(PluginSettings):
    directory: ConfigPath
    prefix: FileNamePart = "payouts"


class CsvExportRail(Rail):
    """Writes payout instructions to files; looks keys up in the files already written."""

    settings_model = CsvExportSettings
    settings: CsvExportSettings

    def __init__(self, name: str, settings: CsvExportSettings) -> None:
        super().__init__(name, settings)
        self._index: dict[str, str] = {}  # key -> file name, for files already read
        self._read_files: set[str] = set()

    @property
    def capabilities(self) -> RailCapabilities:
        return RailCapabilities(lookup=True, reports_status=False, dedup_field="idempotency_key", max_batch=500)

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        directory = self.settings.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RetryableRailError(f"cannot create export directory {directory}: {exc}") from exc
        self._refresh()
        results = [RailResult(i.idempotency_key, Outcome.ACCEPTED, self._index[i.idempotency_key])
                   for i in instructions if i.idempotency_key in self._index]
        fresh = [i for i in instructions if i.idempotency_key not in self._index]
        if fresh:
            name = self._write(directory, fresh)
            results += [RailResult(i.idempotency_key, Outcome.ACCEPTED, name) for i in fresh]
        return results

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        self._refresh()
        return {k: RailResult(k, Outcome.ACCEPTED, self._index[k]) if k in self._index else None for k in keys}

    def _write(self, directory: Path, instructions: Sequence[PayoutInstruction]) -> str:
        buffer = io.StringIO()
        writer = csvsafe.writer(buffer)  # formulas neutralised: the file is opened in spreadsheets and portals
        writer.writerow(COLUMNS)
        for i in instructions:
            writer.writerow([i.idempotency_key, i.payout_id, i.payee.id, i.payee.name, i.payee.country or "",
                             i.payee.email or "", i.currency, str(i.amount), i.reference,
                             json.dumps(dict(i.payee.details), sort_keys=True)])
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{self.settings.prefix}-{stamp}-{instructions[0].payout_id}.csv"
        try:
            write_atomic(directory / name, buffer.getvalue().encode("utf-8"))  # 0600 (0640), any umask
        except OSError as exc:
            raise RetryableRailError(f"cannot write to export directory {directory}: {exc}") from exc
        for i in instructions:
            self._index[i.idempotency_key] = name
        self._read_files.add(name)
        return name

    def _refresh(self) -> None:
        """Index the keys of export files not read yet (files are never rewritten)."""
        directory = self.settings.directory
        if not directory.is_dir():
            return
        for path in sorted(directory.glob(f"{self.settings.prefix}-*.csv")):
            if path.name in self._read_files:
                continue
            with path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    self._index[csvsafe.restore_cell(row["idempotency_key"])] = path.name
            self._read_files.add(path.name)
