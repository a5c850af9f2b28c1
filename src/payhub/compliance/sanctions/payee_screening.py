"""Screening payees when the payees file adds or changes them (``payhub_screen_payee``), recorded and audited.

Each implementation is called on its own: one that raises counts as a hit (fails closed) with the error as its
reason, and the others are still asked. The result is stored in ``payee_screenings`` (one row per payee: ``hit``
when any implementation denied, else ``clear``; ``fingerprint`` is the payee row's, so a row whose fingerprint
differs from the payee's was screened on older data) and audited ``payee.screened``. The payee's name and aliases
never appear in clear in the record: any occurrence of them in a reason is sealed with the payee's personal key,
except in the reasons of a plugin that declares :data:`LIST_DATA_ONLY` (the built-in ``sanctions``): those quote
list entries only (an entry's name is public list data, even when it equals the payee's name) and are stored as
written, unless the plugin raised. :func:`payee_hits` shows the reasons with the sealed values opened (``[erased]``
once the payee's key is gone). A hit holds nothing by itself; the payee's payouts are screened again before their
first send.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from payhub import metrics
from payhub.api import Payee, ScreenDecision
from payhub.clock import utcnow
from payhub.compliance import personal
from payhub.db.schema import payee_screenings, payees

if TYPE_CHECKING:
    from payhub.runtime import Runtime

log = logging.getLogger(__name__)

LIST_DATA_ONLY = "reasons_quote_list_data_only"
"""A screening plugin with this attribute set to True promises that its denial reasons quote list data only (never
a value of the payee's): they are stored without sealing."""
HOOK_ERROR = "screening hook error: "


def ask(rt: Runtime, payee: Payee) -> list[dict[str, Any]]:
    """Each ``payhub_screen_payee`` implementation's answer for ``payee``: plugin, allow, reason."""
    hook = rt.plugins.hooks.hook.payhub_screen_payee
    answers: list[dict[str, Any]] = []
    for impl in reversed(hook.get_hookimpls()):
        try:
            decision = impl.function(payee=payee)
        except Exception as exc:  # noqa: BLE001 - fail closed, and the other screens still answer
            log.exception("plugin hooks.%s: payhub_screen_payee failed", impl.plugin_name)
            metrics.plugin_failed("hook", impl.plugin_name, "error")
            answers.append({"plugin": impl.plugin_name, "allow": False,
                            "reason": f"{HOOK_ERROR}{type(exc).__name__}: {exc}"})
            continue
        if isinstance(decision, ScreenDecision) and not decision.allow:
            answers.append({"plugin": impl.plugin_name, "allow": False, "reason": decision.reason or "denied"})
        elif decision is None or isinstance(decision, ScreenDecision):
            answers.append({"plugin": impl.plugin_name, "allow": True, "reason": None})
        else:
            answers.append({"plugin": impl.plugin_name, "allow": False,
                            "reason": f"screening hook returned a {type(decision).__name__}, not a ScreenDecision"})
    return answers


def _sealed_names(text: str, payee: Payee, key: bytes) -> str:
    """``text`` with each of the payee's names (case-insensitive) replaced by its sealed form."""
    def sealed(match: re.Match[str]) -> str:
        return personal.seal_with(key, payee.id, match.group(0))

    for name in sorted({payee.name, *payee.aliases}, key=len, reverse=True):
        if name.strip():
            text = re.sub(re.escape(name), sealed, text, flags=re.IGNORECASE)
    return text


def _opened_in(text: str, subject: str, key: bytes | None) -> str:
    """``text`` with each value sealed for ``subject`` inside it opened (``[erased]`` without ``key``). A sealed
    value may run into letters that followed the name it replaced: the longest prefix that opens is the value."""
    prefix = f"{personal.PREFIX}{subject}:"

    def opened(match: re.Match[str]) -> str:
        box = match.group(0)[len(prefix):]
        if key is not None:
            for end in range(len(box) - len(box) % 4, 39, -4):  # base64 of >= 29 bytes: at least 40 characters
                value = personal.open_with({subject: key}, prefix + box[:end])
                if value != personal.ERASED:
                    return value + box[end:]
        return personal.ERASED

    return re.sub(re.escape(prefix) + r"[A-Za-z0-9_-]+=*", opened, text)


def _list_data_only(rt: Runtime) -> set[str]:
    """The names of the ``payhub_screen_payee`` plugins whose reasons quote list data only (:data:`LIST_DATA_ONLY`)."""
    return {impl.plugin_name for impl in rt.plugins.hooks.hook.payhub_screen_payee.get_hookimpls()
            if getattr(impl.plugin, LIST_DATA_ONLY, False) is True}


def screen_payees(rt: Runtime, payee_ids: Iterable[str]) -> dict[str, str]:
    """Screen the payees ``payee_ids`` with every ``payhub_screen_payee`` implementation; store and audit each
    result. Return payee id -> ``hit`` or ``clear`` (empty when no plugin screens payees)."""
    from payhub.payees import load_payees  # payhub.payees calls this module

    ids = sorted(set(payee_ids))
    if not ids or not rt.plugins.hooks.hook.payhub_screen_payee.get_hookimpls():
        return {}
    with rt.engine.connect() as conn:
        found = load_payees(conn, ids)
    outcome: dict[str, str] = {}
    list_only = _list_data_only(rt)
    for payee_id in ids:
        payee = found.get(payee_id)
        if payee is None:
            continue
        answers = ask(rt, payee)
        status = "hit" if any(not a["allow"] for a in answers) else "clear"
        now = utcnow()
        with rt.transaction() as tx:
            key = personal.keys(tx.conn, [payee_id], create=True)[payee_id]
            for answer in answers:
                quotes_lists_only = answer["plugin"] in list_only and not answer["reason"].startswith(HOOK_ERROR) \
                    if answer["reason"] else True
                if answer["reason"] and not quotes_lists_only:
                    answer["reason"] = _sealed_names(answer["reason"], payee, key)
            fingerprint = tx.conn.execute(select(payees.c.fingerprint).where(payees.c.id == payee_id)).scalar()
            tx.conn.execute(delete(payee_screenings).where(payee_screenings.c.payee_id == payee_id))
            tx.conn.execute(payee_screenings.insert().values(
                payee_id=payee_id, fingerprint=fingerprint or "", status=status,
                detail=json.dumps({"results": answers}, sort_keys=True), screened_at=now))
            tx.audit("payee.screened", "payee", payee_id, {"status": status, "results": answers},
                     outcome=status)
        outcome[payee_id] = status
    return outcome


def payee_hits(rt: Runtime) -> list[dict[str, Any]]:
    """The payees whose latest screening was a hit: id, when, and each denial (sealed values opened, those inside
    a reason's text too, or ``[erased]``)."""
    with rt.engine.connect() as conn:
        rows = conn.execute(select(payee_screenings).where(payee_screenings.c.status == "hit")
                            .order_by(payee_screenings.c.payee_id)).all()
        found = personal.keys(conn, [row.payee_id for row in rows])
        shown = []
        for row in rows:
            detail = personal.reveal(conn, json.loads(row.detail))
            key = found.get(row.payee_id)
            shown.append({"payee": row.payee_id, "screened_at": row.screened_at,
                          "reasons": [_opened_in(str(r["reason"]), row.payee_id, key)
                                      for r in detail.get("results", []) if not r.get("allow")]})
    return shown
