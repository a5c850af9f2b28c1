"""The payee registry: who gets paid and their payout details, synced from a CSV file.

Columns: ``id`` and ``name`` (required), ``country`` (ISO 3166 alpha-2), ``currency``, ``email``, ``rail`` (a
preferred rail), ``min_payout`` (the smallest payout in ``currency``; smaller balances carry forward); compliance
columns (docs/compliance.md): ``aliases`` (other names, separated by ``;``), ``flags`` (``;``-separated, e.g.
``government_official;healthcare_professional``), ``tax_form`` (``W-9``, ``W-8BEN``, ``W-8BEN-E`` or empty),
``form_date`` (the day the form was signed, ``YYYY-MM-DD``) and ``tin`` (kept sealed; only its kind and validity
are shown); any other non-empty column (``iban``, ``bic``, ``account_number``…) is a payout detail. The file is
re-read each pass; only changed payees are written, each change audited, with the payee's name and aliases sealed
with their personal key (:mod:`payhub.compliance.personal`). A payee erased by ``payhub payees erase`` is not
written again, whatever the file says.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import logging
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from payhub.api import Payee
from payhub.audit import canonical_json
from payhub.clock import utcnow
from payhub.compliance import personal, tin
from payhub.compliance.flags import clean_flag, flag_key
from payhub.compliance.sanctions.payee_screening import screen_payees
from payhub.db.queries import in_chunks, insert_ignore
from payhub.db.schema import payees
from payhub.errors import InvalidRecord
from payhub.money import parse_amount
from payhub.pipeline.identity import normalise_id
from payhub.runtime import Runtime
from payhub.states import TaxForm

log = logging.getLogger(__name__)
CORE_COLUMNS = ("id", "name", "country", "currency", "email", "rail", "min_payout")
COMPLIANCE_COLUMNS = ("aliases", "flags", "tax_form", "form_date", "tin")
STORED = (*CORE_COLUMNS[1:], "details", "aliases", "flags", "tax_form", "form_signed_on", "tin_kind", "tin_status")
"""The columns a sync writes besides the id (plus ``tin_sealed``, ``fingerprint`` and ``updated_at``)."""
_FORMS = {form.value.replace("-", "").upper(): form.value for form in TaxForm}


def _listed(text: str) -> list[str]:
    """A ``;``-separated cell as a sorted list of distinct non-empty items."""
    return sorted({item.strip() for item in text.split(";") if item.strip()})


def _flags(text: str) -> list[str]:
    """A ``flags`` cell as sorted flags, each cleaned (:func:`payhub.compliance.flags.clean_flag`), one per key."""
    found: dict[str, str] = {}
    for item in sorted(clean_flag(item) for item in text.split(";")):
        if item:
            found.setdefault(flag_key(item), item)
    return sorted(found.values())


def _compliance(values: dict[str, str]) -> dict[str, Any]:
    """The compliance columns of a file row, checked; raises InvalidRecord naming the column at fault."""
    form_text = values.get("tax_form", "")
    form = _FORMS.get(form_text.replace("-", "").replace(" ", "").upper()) if form_text else None
    if form_text and form is None and form_text.lower() != "none":
        raise InvalidRecord(f"tax_form: {form_text!r} is not one of {', '.join(_FORMS.values())} or none")
    signed: date | None = None
    if values.get("form_date"):
        try:
            signed = date.fromisoformat(values["form_date"])
        except ValueError:
            raise InvalidRecord(f"form_date: {values['form_date']!r} is not a date (YYYY-MM-DD)") from None
    country = values["country"].upper() if values.get("country") else None
    kind, status = tin.classify(country, values.get("tin"))
    return {"aliases": _listed(values.get("aliases", "")), "flags": _flags(values.get("flags", "")),
            "tax_form": form, "form_signed_on": signed, "tin_kind": kind, "tin_status": status.value,
            "_tin": values.get("tin") or None}


def read_payees(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the payees table and a list of problems (one per bad line)."""
    rows, problems, _skipped = read_payees_and_skips(path)
    return rows, problems


def read_payees_and_skips(path: Path) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """:func:`read_payees`, and for each payee id whose every line was skipped, why its last one was (``the payees
    file's line 5 was skipped: form_date: '2023-02-30' is not a date (YYYY-MM-DD)``)."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    skipped: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for line_no, record in enumerate(csv.DictReader(fh), start=2):
            values = {k.strip().lower(): (v or "").strip() for k, v in record.items() if k}
            try:  # the rule of event ids: invisible characters removed, control and format characters refused
                values["id"] = normalise_id(values.get("id", ""), "id")
            except InvalidRecord as exc:
                problems.append(f"{path.name} line {line_no}: {exc}")
                continue
            if not values.get("id") or not values.get("name"):
                problems.append(f"{path.name} line {line_no}: id and name are required")
                continue
            if values["id"] in seen:
                problems.append(f"{path.name} line {line_no}: payee {values['id']!r} appears twice")
                continue
            if values.get("min_payout"):
                try:
                    if parse_amount(values["min_payout"]) < 0:
                        raise InvalidRecord(f"{values['min_payout']} is negative")
                except InvalidRecord as exc:
                    problems.append(f"{path.name} line {line_no}: min_payout: {exc}")
                    skipped[values["id"]] = f"the payees file's line {line_no} was skipped: min_payout: {exc}"
                    continue
            try:
                extra = _compliance(values)
            except InvalidRecord as exc:
                problems.append(f"{path.name} line {line_no}: {exc}")
                skipped[values["id"]] = f"the payees file's line {line_no} was skipped: {exc}"
                continue
            seen.add(values["id"])
            details = {k: v for k, v in values.items() if k not in CORE_COLUMNS + COMPLIANCE_COLUMNS and v}
            row = {c: values.get(c) or None for c in CORE_COLUMNS}
            row["name"] = values["name"]
            row["country"] = row["country"].upper() if row["country"] else None
            row["currency"] = row["currency"].upper() if row["currency"] else None
            row["details"] = canonical_json(details)
            row.update(extra)
            rows.append(row)
    return rows, problems, {payee_id: why for payee_id, why in skipped.items() if payee_id not in seen}


def _fingerprint(key: bytes, row: dict[str, Any]) -> str:
    """HMAC-SHA256 with the payee's personal key over the row as read, TIN included: a change of any value shows,
    and the TIN cannot be guessed from the stored fingerprint."""
    return hmac.new(key, canonical_json({k: row[k] for k in sorted(row) if k != "fingerprint"}).encode(),
                    hashlib.sha256).hexdigest()


def _stored(row: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The values a payee row stores: lists as JSON, the TIN sealed."""
    stored = {name: row[name] for name in STORED}
    stored["aliases"], stored["flags"] = json.dumps(row["aliases"]), json.dumps(row["flags"])
    stored["tin_sealed"] = personal.seal_with(key, row["id"], row["_tin"]) if row["_tin"] else None
    stored["fingerprint"] = row["fingerprint"]
    return stored


def sync_payees(rt: Runtime) -> int:
    """Bring the payees table in line with the payees file; return how many payees this call changed.

    Safe with replicas syncing the same file at the same moment: a new payee is inserted by whichever gets there
    first (the others skip it) and a changed one updated only where the stored fingerprint still differs, so each
    real change is written and audited exactly once, by the replica whose write won.
    """
    path = rt.settings.payees.file
    if path is None:
        return 0
    file = rt.settings.resolve(path)
    try:
        signature = hashlib.sha256(file.read_bytes()).hexdigest()
    except FileNotFoundError:
        log.warning("payees file %s does not exist", file)
        return 0
    if rt.payees_seen == signature:
        return 0  # the same content this process synced last time
    rows, problems, rt.payees_skipped = read_payees_and_skips(file)
    for problem in problems:
        log.warning("payees: %s", problem)
    with rt.transaction() as tx:
        known = {payee_id: (fingerprint, erased) for payee_id, fingerprint, erased in tx.conn.execute(
            select(payees.c.id, payees.c.fingerprint, payees.c.erased_at)).all()}
        erased = sorted(row["id"] for row in rows if row["id"] in known and known[row["id"]][1] is not None)
        for payee_id in erased:
            log.warning("payees: payee %r was erased and is not written again; remove them from the payees file",
                        payee_id)
        rows = [row for row in rows if row["id"] not in erased]
        found = personal.keys(tx.conn, [row["id"] for row in rows], create=True)
        for row in rows:
            row["fingerprint"] = _fingerprint(found[row["id"]], row)
        # In id order, so that replicas writing the same payees lock their rows in the same order (no deadlock).
        changed = sorted((row for row in rows if known.get(row["id"], (None,))[0] != row["fingerprint"]),
                         key=lambda r: r["id"])
        now = utcnow()
        values = {row["id"]: {**_stored(row, found[row["id"]]), "updated_at": now} for row in changed}
        added = {payee_id for (payee_id,) in insert_ignore(
            tx.conn, payees, [{"id": row["id"], **values[row["id"]]} for row in changed if row["id"] not in known],
            "id", payees.c.id)}
        # Known payees, and new ones another replica inserted first (its content may differ from this file's).
        updated = {payee_id for row in changed if row["id"] not in added for payee_id in tx.conn.execute(
            update(payees).where(payees.c.id == row["id"], payees.c.fingerprint != row["fingerprint"],
                                 payees.c.erased_at.is_(None))
            .values(values[row["id"]]).returning(payees.c.id)).scalars()}
        for row in changed:
            if row["id"] not in added and row["id"] not in updated:
                continue  # another replica wrote this very change
            key = found[row["id"]]
            # Details may be account numbers: the audit entry records which fields changed, not their values; the
            # name and aliases are sealed (erasure destroys them without breaking the chain); the TIN is not there.
            tx.audit("payee.added" if row["id"] in added else "payee.updated", "payee", row["id"], {
                "name": personal.seal_with(key, row["id"], row["name"]), "country": row["country"],
                "rail": row["rail"], "detail_fields": sorted(json.loads(row["details"])),
                "aliases": [personal.seal_with(key, row["id"], alias) for alias in row["aliases"]],
                "flags": row["flags"], "tax_form": row["tax_form"], "form_signed_on": row["form_signed_on"],
                "tin_kind": row["tin_kind"], "tin_status": row["tin_status"],
            })
    rt.payees_seen = signature
    # After the commit: the screening hooks (sanctions) see the payees as stored; each result is recorded apart.
    screen_payees(rt, added | updated)
    return len(added) + len(updated)


def load_payees(conn: Connection, ids: list[str]) -> dict[str, Payee]:
    """Payees by id (unknown ids are absent)."""
    found: dict[str, Payee] = {}
    for chunk in in_chunks(ids):
        for row in conn.execute(select(payees).where(payees.c.id.in_(chunk))):
            found[row.id] = Payee(id=row.id, name=row.name, country=row.country, currency=row.currency,
                                  email=row.email, rail=row.rail, details=json.loads(row.details),
                                  min_payout=Decimal(row.min_payout) if row.min_payout else None,
                                  aliases=tuple(json.loads(row.aliases)), flags=frozenset(json.loads(row.flags)))
    return found


def erased_since(conn: Connection, ids: list[str]) -> dict[str, datetime]:
    """When each of the payees ``ids`` that ``payhub payees erase`` erased was erased (others are absent).

    Asked of every batch that ingest and schedule write, and nearly always answered "none": the ids are looked up
    by a statement sent to the driver as it is, and only the erased ones, if any, are read again for their dates.
    """
    erased: list[str] = []
    if conn.dialect.name == "postgresql":  # one array: the driver parses long lists of placeholders on every call
        erased.extend(conn.exec_driver_sql("SELECT id FROM payees WHERE erased_at IS NOT NULL AND id = ANY(%s)",
                                           (list(ids),)).scalars())
    else:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        for chunk in in_chunks(ids):
            erased.extend(conn.exec_driver_sql(
                f"SELECT id FROM payees WHERE erased_at IS NOT NULL AND id IN ({', '.join([mark] * len(chunk))})",
                tuple(chunk)).scalars())
    found: dict[str, datetime] = {}
    for chunk in in_chunks(erased):
        found.update((payee_id, erased_at) for payee_id, erased_at in conn.execute(
            select(payees.c.id, payees.c.erased_at).where(payees.c.id.in_(chunk), payees.c.erased_at.is_not(None))))
    return found
