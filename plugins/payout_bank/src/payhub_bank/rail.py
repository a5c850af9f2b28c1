"""The ``bank_transfer`` rail: payment files in an outbox for the bank connection, status reports from an inbox.

Writing (``send``), for each currency of the call, under a lock on the outbox:

1. the payment file is written to a temporary name (``.payhub-partial-*.tmp``) and fsynced;
2. its manifest ``<file>.manifest.json`` (every payout's key, line, end-to-end id or trace number) is written to a
   temporary name, fsynced and renamed into place: **this rename is the commit point**;
3. the payment file is renamed to its final name and the directory fsynced.

A crash before step 2 leaves only temporary files, removed at the next call: nothing was written, and the payouts
are sent again. A crash after step 2 is completed at the next call (the temporary payment file is renamed), and
``lookup`` finds the keys in the manifest, so the core records them instead of sending again. The bank connection
only ever sees complete files, each with its manifest already next to it. A key found in a manifest is never
written again.

Reading (``lookup``) answers from the manifests (``None`` only for a key no manifest holds, after every manifest
was read) and from the status reports imported from the inbox (moved to ``processed/`` once read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout
from payhub.api import (
    Outcome,
    Payee,
    PayoutInstruction,
    Rail,
    RailCapabilities,
    RailResult,
    RetryableRailError,
    isoformat,
    private_file_mode,
    utcnow,
)
from schwifty import BIC, IBAN

from payhub_bank import nacha, sepa
from payhub_bank.bizdays import business_day, business_days_between
from payhub_bank.checks import (
    ach_account,
    ach_entry_class,
    ach_payee_problem,
    detail,
    sepa_countries,
    sepa_payee_problem,
)
from payhub_bank.settings import BankSettings
from payhub_bank.status import OUTCOME, Rank, ReportError, Status, is_pain002, read_pain002, read_report, strongest
from payhub_bank.text import ach_individual_id, ach_text, end_to_end_id

log = logging.getLogger(__name__)

MANIFEST = ".manifest.json"
MANIFEST_FORMAT = "payhub-bank-manifest/1"
PARTIAL = ".payhub-partial-"
LOCK = ".payhub-bank.lock"
CENT = Decimal("0.01")

Scheme = Literal["sepa", "ach"]


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a payout was written: file, physical line, and the identifiers the bank reports back."""

    key: str
    file: str
    line: int
    scheme: Scheme
    day: date  # requested execution date (SEPA) or effective entry date (ACH)
    message_id: str = ""
    payment_id: str = ""
    end_to_end_id: str = ""
    trace_number: str = ""

    @property
    def ref(self) -> str:
        return f"{self.file}:{self.line}"


class _NotWritten(Exception):
    """Nothing of the file was committed: the payouts may be sent again."""


class _MaybeWritten(Exception):
    """The manifest was committed but finishing failed: the next refresh completes it."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BankTransferRail(Rail):
    """SEPA credit transfers (EUR, pain.001.001.03) and ACH credits (USD, NACHA) written as files to an outbox."""

    settings_model = BankSettings
    settings: BankSettings

    def __init__(self, name: str, settings: BankSettings) -> None:
        super().__init__(name, settings)
        self._placed: dict[str, Placed] = {}
        self._manifests: set[str] = set()
        self._ach_files: Counter[date] = Counter()  # ACH files per creation day, for the file id modifier
        self._next_trace = 1  # the sequence of the next NACHA trace number: from the newest ACH manifest
        self._newest_ach = datetime.min.replace(tzinfo=UTC)
        self._groups: dict[str, Status] = {}
        self._payments: dict[str, Status] = {}
        self._transactions: dict[str, Status] = {}
        self._returns: dict[str, Status] = {}
        self._reports: set[str] = set()  # names in inbox/processed already read
        self._inbox_missing_logged = False
        self._mutex = threading.Lock()
        self._lock = FileLock(str(settings.outbox / LOCK))
        countries: set[str] = set()
        currencies: set[str] = set()
        limits: dict[str, Decimal] = {}
        if settings.sepa is not None:
            countries |= sepa_countries()
            currencies.add("EUR")
            limits["EUR"] = settings.sepa.max_amount
        if settings.ach is not None:
            countries.add("US")
            currencies.add("USD")
            limits["USD"] = settings.ach.max_amount
        self._capabilities = RailCapabilities(
            lookup=True, reports_status=settings.inbox is not None, dedup_field="EndToEndId",
            countries=frozenset(countries), currencies=frozenset(currencies), max_batch=settings.max_batch,
            max_amounts=limits, return_window=(timedelta(days=settings.ach.return_window_days)
                                               if settings.ach is not None and settings.ach.paid_after_business_days
                                               and settings.ach.return_window_days else None))

    @property
    def capabilities(self) -> RailCapabilities:
        return self._capabilities

    # ------------------------------------------------------------------------------------------ contract

    def check_payee(self, payee: Payee, currency: str) -> str | None:
        s = self.settings
        if currency == "EUR":
            return "no [sepa] settings: this rail does not pay EUR" if s.sepa is None else sepa_payee_problem(
                payee, s.sepa)
        if currency == "USD":
            return "no [ach] settings: this rail does not pay USD" if s.ach is None else ach_payee_problem(
                payee, s.ach)
        return f"bank transfers are made in EUR (SEPA) and USD (ACH) only, not {currency}"

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        unique = list({i.idempotency_key: i for i in instructions}.values())
        results: dict[str, RailResult] = {}
        failures: list[str] = []
        with self._locked():
            self._refresh()
            fresh: dict[str, list[PayoutInstruction]] = {"EUR": [], "USD": []}
            for ins in unique:
                key = ins.idempotency_key
                if key in self._placed:  # already in a file: never written twice
                    results[key] = self._result(key)
                    continue
                problem = self._problem(ins)
                if problem is not None:
                    results[key] = RailResult(key, Outcome.REJECTED, reason=problem)
                    continue
                fresh[ins.currency].append(ins)
            for currency, group in fresh.items():
                if not group:
                    continue
                try:
                    placed = self._write_sepa(group) if currency == "EUR" else self._write_ach(group)
                except _NotWritten as exc:
                    failures.append(str(exc))
                    results.update({i.idempotency_key: RailResult(i.idempotency_key, Outcome.RETRY, reason=str(exc))
                                    for i in group})
                    continue
                except _MaybeWritten as exc:
                    results.update({i.idempotency_key: RailResult(i.idempotency_key, Outcome.UNKNOWN,
                                                                  reason=str(exc)) for i in group})
                    continue
                except (sepa.SchemaError, nacha.NachaError) as exc:  # a bug: nothing written, surface it
                    log.error("rail %s: %s", self.name, exc)
                    results.update({i.idempotency_key: RailResult(i.idempotency_key, Outcome.REJECTED,
                                                                  reason=f"file not written: {exc}") for i in group})
                    continue
                results.update({p.key: RailResult(p.key, Outcome.ACCEPTED, p.ref) for p in placed})
        if failures and all(r.outcome == Outcome.RETRY for r in results.values()):
            raise RetryableRailError("; ".join(failures))
        return [results[i.idempotency_key] for i in unique]

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        with self._locked():
            self._refresh()
            return {k: self._result(k) if k in self._placed else None for k in keys}

    # ------------------------------------------------------------------------------------------ results

    def _result(self, key: str) -> RailResult:
        placed = self._placed[key]
        if placed.scheme == "sepa":
            status = strongest(self._transactions.get(placed.end_to_end_id), self._payments.get(placed.payment_id),
                               self._groups.get(placed.message_id))
        else:
            status = self._returns.get(placed.trace_number)
            ach = self.settings.ach
            wait = ach.paid_after_business_days if ach is not None else None
            if status is None and wait and business_days_between(placed.day, utcnow().date(), "USD") >= wait:
                status = Status(Rank.PAID, f"no return within {wait} business days of the effective date", "")
        if status is None or status.rank == Rank.ACCEPTED:
            return RailResult(key, Outcome.ACCEPTED, placed.ref)
        return RailResult(key, OUTCOME[status.rank], placed.ref, status.reason)

    def _problem(self, ins: PayoutInstruction) -> str | None:
        """Why this instruction cannot go into a file (details changed since routing, amount out of range)."""
        amount, currency = ins.amount, ins.currency
        problem = self.check_payee(ins.payee, currency)
        if problem is not None:
            return problem
        if amount <= 0 or amount != amount.quantize(CENT):
            return f"amount {amount} {currency} is not a positive amount in cents"
        limit = self._capabilities.max_amounts.get(currency)
        if limit is not None and amount > limit:
            return f"amount {amount} {currency} is over this rail's per-payout limit of {limit} {currency}"
        return None

    # ------------------------------------------------------------------------------------------ writing

    def _write_sepa(self, group: list[PayoutInstruction]) -> list[Placed]:
        s = self.settings
        assert s.sepa is not None
        now = utcnow()
        execution = business_day(now.date(), s.execution_offset_days, "EUR")
        name = self._new_name("sct", "xml", now)
        msg_id = name.rsplit(".", 1)[0]
        items = []
        for ins in group:
            bic = detail(ins.payee.details, "bic")
            items.append(sepa.SepaItem(
                key=ins.idempotency_key, end_to_end_id=end_to_end_id(ins.idempotency_key), amount=ins.amount,
                name=ins.payee.name, iban=str(IBAN(detail(ins.payee.details, "iban")).compact),
                bic=str(BIC(bic).compact) if bic else None,
                remittance=s.sepa.remittance.format(reference=ins.reference, payout_id=ins.payout_id,
                                                    key=ins.idempotency_key, payee_id=ins.payee.id)))
        body, lines = sepa.build(msg_id, now, execution, s.sepa, items)
        total = sum((i.amount for i in items), Decimal(0))
        placed = [Placed(i.key, name, lines[i.end_to_end_id], "sepa", execution, msg_id, msg_id, i.end_to_end_id)
                  for i in items]
        manifest = {
            "scheme": "sepa", "message": sepa.MESSAGE, "created_at": isoformat(now), "currency": "EUR",
            "execution_date": execution.isoformat(), "debtor_account": s.sepa.debtor_iban, "message_id": msg_id,
            "payment_information_id": msg_id, "count": len(items), "control_sum": str(total.quantize(CENT)),
            "entries": [{"key": ins.idempotency_key, "payout_id": ins.payout_id, "payee_id": ins.payee.id,
                         "line": p.line, "end_to_end_id": p.end_to_end_id, "instr_id": p.end_to_end_id,
                         "amount": str(ins.amount), "currency": "EUR"} for ins, p in zip(group, placed, strict=True)],
        }
        self._commit(name, body, manifest)
        log.info("rail %s: wrote %s: %d SEPA credit transfers, %s EUR, execution date %s", self.name, name,
                 len(items), total, execution)
        return placed

    def _write_ach(self, group: list[PayoutInstruction]) -> list[Placed]:
        s = self.settings
        assert s.ach is not None
        now = utcnow()
        effective = business_day(now.date(), s.execution_offset_days, "USD")
        used = self._ach_files[now.date()]
        if used >= len(nacha.MODIFIERS):
            raise _NotWritten(f"{used} ACH files were already written today (file id modifiers A-Z and 0-9 are all "
                              "used); the payouts wait for tomorrow")
        name = self._new_name("ach", "ach", now)
        items = []
        for ins in group:
            routing, account, code = ach_account(ins.payee)
            addenda = ach_text(f"{ins.idempotency_key} {ins.reference}", 80) if s.ach.addenda else None
            items.append(nacha.AchItem(
                key=ins.idempotency_key, individual_id=ach_individual_id(ins.idempotency_key),
                amount_cents=int(ins.amount * 100), name=ins.payee.name, routing=routing, account=account,
                transaction_code=code, entry_class=ach_entry_class(ins.payee, s.ach), addenda=addenda))
        text, entries, next_trace = nacha.build(s.ach, now, nacha.MODIFIERS[used], effective, items,
                                                self._next_trace)
        where = {e.key: e for e in entries}
        by_key = {i.key: i for i in items}
        placed = [Placed(i.key, name, where[i.key].line, "ach", effective, trace_number=where[i.key].trace_number)
                  for i in items]
        total = sum((i.amount for i in group), Decimal(0))
        manifest = {
            "scheme": "ach", "message": "NACHA", "created_at": isoformat(now), "currency": "USD",
            "effective_date": effective.isoformat(), "file_id_modifier": nacha.MODIFIERS[used],
            "immediate_destination": s.ach.immediate_destination, "immediate_origin": s.ach.immediate_origin.strip(),
            "company_id": s.ach.company_id, "originating_dfi": s.ach.originating_dfi,
            "debtor_account": f"{s.ach.company_id.strip()}@{s.ach.originating_dfi}", "count": len(items),
            "control_sum": str(total.quantize(CENT)), "next_trace_sequence": next_trace,
            "entries": [{"key": ins.idempotency_key, "payout_id": ins.payout_id, "payee_id": ins.payee.id,
                         "line": where[ins.idempotency_key].line,
                         "trace_number": where[ins.idempotency_key].trace_number,
                         "individual_id": by_key[ins.idempotency_key].individual_id,
                         "batch_number": where[ins.idempotency_key].batch_number,
                         "entry_class": by_key[ins.idempotency_key].entry_class,
                         "amount": str(ins.amount), "currency": "USD"} for ins in group],
        }
        self._commit(name, text.encode("ascii"), manifest)
        log.info("rail %s: wrote %s: %d ACH credits, %s USD, effective %s", self.name, name, len(items), total,
                 effective)
        return placed

    def _new_name(self, kind: str, ext: str, now: datetime) -> str:
        """A file name no file or manifest in the outbox has (its stem, at most 35 characters, is the MsgId)."""
        outbox = self.settings.outbox
        while True:
            name = f"{self.settings.prefix}-{kind}-{now.strftime('%Y%m%d%H%M%S%f')}.{ext}"
            if not (outbox / name).exists() and name + MANIFEST not in self._manifests and not (
                    outbox / (name + MANIFEST)).exists():
                return name
            time.sleep(0.001)
            now = utcnow()

    def _commit(self, name: str, body: bytes, manifest: dict[str, Any]) -> None:
        """Write the payment file and its manifest (see the module docstring for the order)."""
        outbox = self.settings.outbox
        mode = self.settings.file_mode if self.settings.file_mode is not None else private_file_mode()
        temps: list[str] = []
        committed = False
        try:
            fd, temp = tempfile.mkstemp(dir=outbox, prefix=PARTIAL, suffix=".tmp")
            temps.append(temp)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(temp, mode)
            record = {"format": MANIFEST_FORMAT, "file": name, "temp": os.path.basename(temp),
                      "sha256": hashlib.sha256(body).hexdigest(), "rail": self.name, **manifest}
            fd, manifest_temp = tempfile.mkstemp(dir=outbox, prefix=PARTIAL, suffix=".json.tmp")
            temps.append(manifest_temp)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=1, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(manifest_temp, mode)
            os.replace(manifest_temp, outbox / (name + MANIFEST))
            committed = True
            os.replace(temp, outbox / name)
            _fsync_dir(outbox)
        except OSError as exc:
            if not committed:
                for path in temps:
                    with suppress(OSError):
                        os.unlink(path)
                raise _NotWritten(f"cannot write to outbox {outbox}: {exc}") from exc
            raise _MaybeWritten(f"manifest of {name} written but the file could not be finished ({exc}); it is "
                                "completed at the next call") from exc
        self._manifests.add(name + MANIFEST)
        self._index(name + MANIFEST, record)

    # ------------------------------------------------------------------------------------------ reading

    @contextmanager
    def _locked(self) -> Iterator[None]:
        outbox = self.settings.outbox
        if not outbox.is_dir():
            raise RetryableRailError(f"outbox {outbox} is not a directory (is the bank connection's share "
                                     "mounted?); nothing was written")
        with self._mutex:
            try:
                self._lock.acquire(timeout=self.settings.lock_timeout_seconds)
            except Timeout:
                raise RetryableRailError(f"outbox {outbox} is locked by another process (lock file {LOCK})") from None
            except OSError as exc:
                raise RetryableRailError(f"cannot lock outbox {outbox}: {exc}; nothing was written") from exc
            try:
                yield
            finally:
                self._lock.release()

    def _refresh(self) -> None:
        """Read manifests not read yet (completing interrupted writes), drop leftovers, import status reports."""
        outbox = self.settings.outbox
        try:
            names = sorted(os.listdir(outbox))
        except OSError as exc:
            raise RetryableRailError(f"cannot list outbox {outbox}: {exc}") from exc
        for name in names:
            if name.endswith(MANIFEST) and not name.startswith(".") and name not in self._manifests:
                path = outbox / name
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                    if record.get("format") != MANIFEST_FORMAT:
                        raise ValueError(f"format is {record.get('format')!r}, not {MANIFEST_FORMAT!r}")
                    self._finish(record)
                    self._index(name, record)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    # Which keys this file holds is unknown: answering "never received" could pay twice.
                    raise RetryableRailError(f"cannot read manifest {path}: {exc}") from exc
                self._manifests.add(name)
        for name in names:  # left by a write that never reached its commit point: nothing refers to them
            if name.startswith(PARTIAL) and (outbox / name).exists():
                log.warning("rail %s: removing %s left by an interrupted write (its payouts were not written)",
                            self.name, name)
                with suppress(OSError):
                    os.unlink(outbox / name)
        self._import_reports()

    def _finish(self, record: dict[str, Any]) -> None:
        """Complete a write interrupted after its manifest was committed."""
        outbox = self.settings.outbox
        final, temp = outbox / record["file"], outbox / record["temp"]
        if not final.exists() and temp.exists():
            os.replace(temp, final)
            _fsync_dir(outbox)
            log.warning("rail %s: completed %s, interrupted after its manifest was written", self.name, final.name)

    def _index(self, manifest: str, record: dict[str, Any]) -> None:
        scheme: Scheme = record["scheme"]
        if scheme == "sepa":
            day = date.fromisoformat(record["execution_date"])
        else:
            day = date.fromisoformat(record["effective_date"])
            created = datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
            self._ach_files[created.date()] += 1
            if created >= self._newest_ach:  # the sequence wraps after 9999999, so the newest file decides
                self._newest_ach = created
                self._next_trace = int(record["next_trace_sequence"])
        for entry in record["entries"]:
            key = entry["key"]
            placed = Placed(key, record["file"], int(entry["line"]), scheme, day,
                            message_id=record.get("message_id", ""),
                            payment_id=record.get("payment_information_id", ""),
                            end_to_end_id=entry.get("end_to_end_id", ""), trace_number=entry.get("trace_number", ""))
            known = self._placed.get(key)
            if known is not None and known.file != placed.file:
                log.error("rail %s: payout key %s is in two files, %s and %s: check with the bank", self.name, key,
                          known.file, placed.file)
                continue
            self._placed[key] = placed

    # ------------------------------------------------------------------------------------------ reports

    def _import_reports(self) -> None:
        inbox = self.settings.inbox
        if inbox is None:
            return
        if not inbox.is_dir():
            if not self._inbox_missing_logged:
                log.warning("rail %s: inbox %s is not a directory; no status reports are read", self.name, inbox)
                self._inbox_missing_logged = True
            return
        processed = inbox / "processed"
        if processed.is_dir():
            for path in sorted(processed.iterdir()):
                if path.name not in self._reports and path.is_file() and not path.name.startswith("."):
                    try:
                        self._absorb(path.name, read_report(path))
                    except ReportError as exc:
                        log.error("rail %s: processed report %s cannot be read: %s", self.name, path, exc)
                    self._reports.add(path.name)
        now = time.time()
        for path in sorted(inbox.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                if now - path.stat().st_mtime < self.settings.inbox_settle_seconds:
                    continue  # may still be being written
                self._absorb(path.name, read_report(path))
            except (ReportError, OSError) as exc:
                self._set_aside(path, str(exc))
                continue
            target = self._free_name(processed, path.name)
            try:
                processed.mkdir(exist_ok=True)
                os.replace(path, target)
                _fsync_dir(inbox)
            except OSError as exc:  # its statuses are known now; moving it is tried again next time
                log.warning("rail %s: cannot move %s to %s: %s", self.name, path, processed, exc)
                continue
            self._reports.add(target.name)
            log.info("rail %s: imported status report %s", self.name, path.name)

    def _absorb(self, name: str, data: bytes) -> None:
        if is_pain002(data):
            report = read_pain002(data, name)
            for target, found in ((self._groups, report.groups), (self._payments, report.payments),
                                  (self._transactions, report.transactions)):
                for ident, status in found.items():
                    target[ident] = strongest(target.get(ident), status) or status
            return
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ReportError("neither a pain.002 (XML) nor a NACHA file (ASCII)") from None
        try:
            returns, changes = nacha.read_returns(text)
        except nacha.NachaError as exc:
            raise ReportError(f"not a NACHA return file: {exc}") from None
        for r in returns:
            reason = f"{r.code} {r.description}"
            if r.information:
                reason += f": {r.information}"
            status = Status(Rank.RETURNED, f"{reason} (ACH return file {name})", name)
            self._returns[r.original_trace] = strongest(self._returns.get(r.original_trace), status) or status
        for change in changes:
            log.warning("rail %s: notification of change %s for the entry with trace number %s: corrected data %r "
                        "(update the payee file; %s)", self.name, change.code, change.original_trace,
                        change.corrected_data, name)

    def _set_aside(self, path: Path, reason: str) -> None:
        failed = path.parent / "failed"
        log.error("rail %s: status report %s cannot be read (%s); moved to %s", self.name, path.name, reason, failed)
        try:
            failed.mkdir(exist_ok=True)
            target = self._free_name(failed, path.name)
            os.replace(path, target)
            target.with_name(target.name + ".error.txt").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            log.error("rail %s: cannot move %s to %s: %s", self.name, path, failed, exc)

    @staticmethod
    def _free_name(directory: Path, name: str) -> Path:
        target = directory / name
        n = 1
        while target.exists():
            stem, dot, ext = name.partition(".")
            target = directory / f"{stem}-{n}{dot}{ext}"
            n += 1
        return target
