"""The payee registry: who gets paid and their payout details, synced from a CSV file.

Columns: ``id`` and ``name`` (required), ``country`` (ISO 3166 alpha-2), ``currency``, ``email``, ``rail`` (a
preferred rail), ``min_payout`` (the smallest payout in ``currency``; smaller balances carry forward); any other
non-empty column (``iban``, ``bic``, ``account_number``…) is a payout detail. The file is re-read each pass; only
changed payees are written, each change audited.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from payhub.api import Payee
from payhub.audit import canonical_json
from payhub.clock import utcnow
from payhub.db.queries import insert_ignore
from payhub.db.schema import payees
from payhub.errors import InvalidRecord
from payhub.money import parse_amount
from payhub.runtime import Runtime

log = logging.getLogger(__name__)
CORE_COLUMNS = ("id", "name", "country", "currency", "email", "rail", "min_payout")


def read_payees(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the payees table and a list of problems (one per bad line)."""
    rows, problems, seen = [], [], set()
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for line_no, record in enumerate(csv.DictReader(fh), start=2):
            values = {k.strip().lower(): (v or "").strip() for k, v in record.items() if k}
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
                    continue
            seen.add(values["id"])
            details = {k: v for k, v in values.items() if k not in CORE_COLUMNS and v}
            row = {c: values.get(c) or None for c in CORE_COLUMNS}
            row["name"] = values["name"]
            row["country"] = row["country"].upper() if row["country"] else None
            row["currency"] = row["currency"].upper() if row["currency"] else None
            row["details"] = canonical_json(details)
            row["fingerprint"] = hashlib.sha256(canonical_json(row).encode()).hexdigest()
            rows.append(row)
    return rows, problems


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
    rows, problems = read_payees(file)
    for problem in problems:
        log.warning("payees: %s", problem)
    with rt.transaction() as tx:
        known = dict(tx.conn.execute(select(payees.c.id, payees.c.fingerprint)).all())
        # In id order, so that replicas writing the same payees lock their rows in the same order (no deadlock).
        changed = sorted((row for row in rows if known.get(row["id"]) != row["fingerprint"]), key=lambda r: r["id"])
        now = utcnow()
        for row in changed:
            row["updated_at"] = now
        added = {payee_id for (payee_id,) in insert_ignore(
            tx.conn, payees, [row for row in changed if row["id"] not in known], "id", payees.c.id)}
        # Known payees, and new ones another replica inserted first (its content may differ from this file's).
        updated = {payee_id for row in changed if row["id"] not in added for payee_id in tx.conn.execute(
            update(payees).where(payees.c.id == row["id"], payees.c.fingerprint != row["fingerprint"])
            .values({name: row[name] for name in (*CORE_COLUMNS[1:], "details", "fingerprint", "updated_at")})
            .returning(payees.c.id)).scalars()}
        for row in changed:
            if row["id"] not in added and row["id"] not in updated:
                continue  # another replica wrote this very change
            # Details may be account numbers: the audit entry records which fields changed, not their values.
            tx.audit("payee.added" if row["id"] in added else "payee.updated", "payee", row["id"], {
                "name": row["name"], "country": row["country"], "rail": row["rail"],
                "detail_fields": sorted(json.loads(row["details"])),
            })
    rt.payees_seen = signature
    return len(added) + len(updated)


def load_payees(conn: Connection, ids: list[str]) -> dict[str, Payee]:
    """Payees by id (unknown ids are absent)."""
    found: dict[str, Payee] = {}
    for start in range(0, len(ids), 500):
        for row in conn.execute(select(payees).where(payees.c.id.in_(ids[start : start + 500]))):
            found[row.id] = Payee(id=row.id, name=row.name, country=row.country, currency=row.currency,
                                  email=row.email, rail=row.rail, details=json.loads(row.details),
                                  min_payout=Decimal(row.min_payout) if row.min_payout else None)
    return found
