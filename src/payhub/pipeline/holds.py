"""A payout's holds and releases as the audit chain records them, never as its editable columns say.

* The hold a held payout is under (:func:`hold_recorded`): the ``hold_code`` of its last ``payout.held`` entry;
  for an entry written before hold codes were recorded, ``audit_trail`` when it names the pre-send check
  (``"check": "audit trail"``), else ``screening``. When the chain's last status entry is not a ``payout.held``, or
  its code is unknown: ``screening``, the stricter release.
* The denials a hold records (:func:`hold_denials`): each screening hook's reason (``denials`` of the last
  ``payout.held`` entry; its ``reason`` for an entry written before denials were listed).
* A screening override (:func:`screening_override`): a ``payout.released`` of a ``screening`` hold naming two
  different operators (:func:`payhub.pipeline.operator.operator_key`), with no ``payout.held`` after it. It covers
  only the denials of the hold the operators released (``covers`` of the entry; for an entry written before that
  was recorded, the denials of the last ``payout.held`` before it): a payout is sent under it only while every
  denial screening gives is one of those (:func:`covered`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from payhub.audited import AuditRow, recorded_status
from payhub.db.schema import audit_log
from payhub.pipeline.operator import operator_key
from payhub.states import PayoutHold

PRESEND_CHECK = "audit trail"
"""The ``check`` the pre-send check's ``payout.held`` entries name (:mod:`payhub.pipeline.presend`)."""

SCREENING_ACTIONS = ("payout.held", "payout.released")
"""The entries :func:`screening_override` reads."""


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


def hold_denials(rows: Iterable[AuditRow]) -> list[str]:
    """The denials the payout's last ``payout.held`` entry records (see the module's docstring); [] without one."""
    last: AuditRow | None = None
    for row in rows:
        if row.action == "payout.held":
            last = row
    return [] if last is None else _denials(_detail(last))


@dataclass(frozen=True, slots=True)
class Override:
    """Two operators' release of a screening hold: its entry's ``seq`` and the denials it covers, normalised."""

    entry: int
    covers: frozenset[str]


def screening_override(rows: Iterable[AuditRow]) -> Override | None:
    """Two different operators' release of the payout from a screening hold, with no hold since; None without one."""
    override: Override | None = None
    held: list[str] = []
    for row in rows:
        if row.action == "payout.held":
            override, held = None, _denials(_detail(row))
        elif row.action == "payout.released":
            detail = _detail(row)
            operators = detail.get("operators")
            two = (detail.get("hold_code") == PayoutHold.SCREENING and isinstance(operators, list)
                   and len({operator_key(str(name)) for name in operators} - {""}) >= 2)
            covers = detail.get("covers")
            listed = ([str(text) for text in covers] if isinstance(covers, list) and covers else held)
            override = Override(row.seq, frozenset(map(normal_denial, listed))) if two else None
    return override


def covered(denials: Sequence[str], override: Override | None) -> bool:
    """Whether ``override`` covers every one of ``denials`` (compared by :func:`normal_denial`); a list of denials
    recorded as one joined reason (before denials were listed) is covered by that reason."""
    if override is None or not denials:
        return False
    texts = {normal_denial(text) for text in denials}
    return texts <= override.covers or normal_denial(DENIALS_JOINED.join(denials)) in override.covers


DENIALS_JOINED = "; "
"""How the denials of several screening hooks are joined into a held payout's ``reason``."""


def normal_denial(text: str) -> str:
    """A denial's text as overrides compare it: surrounding white space removed, each run of it as one space."""
    return " ".join(text.split())


def _denials(detail: dict[str, Any]) -> list[str]:
    listed = detail.get("denials")
    if isinstance(listed, list) and listed:
        return [str(text) for text in listed]
    reason = detail.get("reason")
    return [reason] if isinstance(reason, str) and reason else []


def _detail(row: AuditRow) -> dict[str, Any]:
    try:
        value = json.loads(row.detail) if isinstance(row.detail, str | bytes) else row.detail
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
