"""The funds store: the entries of funds (co-op accruals, loyalty points), credits and spending.

What a fund's entries add up to is :mod:`payhub.funds`' arithmetic; this module reads and writes the entries.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, select

from payhub.db.schema import fund_entries
from payhub.funds import Entry

_ENTRIES = select(fund_entries.c.occurred_at, fund_entries.c.amount, fund_entries.c.expires_at).where(
    fund_entries.c.program == bindparam("program"), fund_entries.c.holder_id == bindparam("holder"),
    fund_entries.c.unit == bindparam("unit")).order_by(fund_entries.c.id)


def entries(conn: Connection, program: str, holder_id: str, unit: str) -> list[Entry]:
    """The stored entries of one fund, in the order they were written."""
    return [(at, Decimal(amount), expires) for at, amount, expires in (
        conn.execute(_ENTRIES, {"program": program, "holder": holder_id, "unit": unit}))]


def insert(conn: Connection, rows: list[dict[str, Any]]) -> list[Any]:
    """Write fund entries; return ``(id, event_id, program, holder_id, unit, amount, expires_at)`` of each, by id."""
    written = conn.execute(fund_entries.insert().returning(
        fund_entries.c.id, fund_entries.c.event_id, fund_entries.c.program, fund_entries.c.holder_id,
        fund_entries.c.unit, fund_entries.c.amount, fund_entries.c.expires_at), rows)
    return sorted(written)
