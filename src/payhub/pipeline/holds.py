"""A payout's holds and releases as the audit chain records them, never as its editable columns say.

* The hold a held payout is under (:func:`hold_recorded`): the ``hold_code`` of its last ``payout.held`` entry;
  for an entry written before hold codes were recorded, ``audit_trail`` when it names the pre-send check
  (``"check": "audit trail"``), else ``screening``. When the chain's last status entry is not a ``payout.held``, or
  its code is unknown: ``screening``, the stricter release.
* A screening override (:func:`screening_overridden`): a ``payout.released`` of a ``screening`` hold naming two
  different operators (:func:`payhub.pipeline.operator.operator_key`), with no ``payout.held`` after it. Only such a
  release lets a payout be sent without being screened.
* A send before (:func:`sent_before`): a ``payout.sending`` entry, written only for a payout that screening allowed
  (or two operators released) before its first send.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from payhub.audited import AuditRow, recorded_status
from payhub.db.schema import audit_log
from payhub.pipeline.operator import operator_key
from payhub.states import PayoutHold

PRESEND_CHECK = "audit trail"
"""The ``check`` the pre-send check's ``payout.held`` entries name (:mod:`payhub.pipeline.presend`)."""

SCREENING_ACTIONS = ("payout.held", "payout.released", "payout.sending")
"""The entries :func:`screening_overridden` and :func:`sent_before` read."""


def payout_entries(conn: Connection, payout_ids: Sequence[int],
                   actions: Sequence[str] | None = None) -> dict[int, list[AuditRow]]:
    """The audit entries of each payout of ``payout_ids`` (only ``actions`` when given), in chain order."""
    found: dict[int, list[AuditRow]] = {}
    ids = sorted({str(i) for i in payout_ids})
    if not ids:
        return found
    query = (select(audit_log.c.seq, audit_log.c.subject_id, audit_log.c.action, audit_log.c.outcome,
                    audit_log.c.detail)
             .where(audit_log.c.subject_type == "payout", audit_log.c.subject_id.in_(ids))
             .order_by(audit_log.c.seq))
    if actions is not None:
        query = query.where(audit_log.c.action.in_(list(actions)))
    for seq, subject, action, outcome, detail in conn.execute(query):
        found.setdefault(int(subject), []).append(AuditRow(seq, subject, action, outcome, detail))
    return found


def hold_recorded(rows: Iterable[AuditRow]) -> PayoutHold:
    """The hold a payout is under, from its entries in chain order (see the module's docstring)."""
    last: AuditRow | None = None
    for row in rows:
        if recorded_status(row) is not None:
            last = row
    if last is None or last.action != "payout.held":
        return PayoutHold.SCREENING
    detail = _detail(last)
    code = detail.get("hold_code")
    if code is None:
        return PayoutHold.AUDIT_TRAIL if detail.get("check") == PRESEND_CHECK else PayoutHold.SCREENING
    try:
        return PayoutHold(code)
    except ValueError:
        return PayoutHold.SCREENING


def screening_overridden(rows: Iterable[AuditRow]) -> bool:
    """Whether two different operators released the payout from a screening hold, with no hold since."""
    overridden = False
    for row in rows:
        if row.action == "payout.held":
            overridden = False
        elif row.action == "payout.released":
            detail = _detail(row)
            operators = detail.get("operators")
            overridden = (detail.get("hold_code") == PayoutHold.SCREENING and isinstance(operators, list)
                          and len({operator_key(str(name)) for name in operators} - {""}) >= 2)
    return overridden


def sent_before(rows: Iterable[AuditRow]) -> bool:
    """Whether the chain records a send attempt of the payout."""
    return any(row.action == "payout.sending" for row in rows)


def _detail(row: AuditRow) -> dict[str, Any]:
    try:
        value = json.loads(row.detail) if isinstance(row.detail, str | bytes) else row.detail
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
