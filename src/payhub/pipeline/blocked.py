"""Sends blocked as a whole: the ``payhub_payouts_blocked`` hook, asked at the start of every disbursement round
(:func:`payhub.pipeline.disburse.disburse_rail`) and by ``/readyz``.

Every implementation is asked, each on its own, so one that raises hides no other's answer. Fails closed: an
implementation that raises blocks with its error, and one that answers anything but None or a non-blank text blocks
too. While any reason stands no payout is claimed or sent (they stay due), the gauge ``payhub_payouts_blocked`` is
1, and the reasons are logged at ERROR when they begin or change and again every :data:`payhub.logs.REMIND_SECONDS`
while they last; the end is logged once at WARNING. Cheap by contract: the hook is asked every round.
"""

from __future__ import annotations

import logging
from weakref import WeakKeyDictionary

import pluggy

from payhub import metrics
from payhub.logs import Reminder

log = logging.getLogger(__name__)


class _Watch:
    """What was last logged about one plugin manager's blocked sends."""

    def __init__(self) -> None:
        self.reminder = Reminder()
        self.blocked = False


_watches: WeakKeyDictionary[pluggy.PluginManager, _Watch] = WeakKeyDictionary()  # per runtime's hooks


def blocked_reasons(hooks: pluggy.PluginManager) -> list[str]:
    """Why no payout may be sent now, one ``<plugin>: <reason>`` per implementation that says so (empty: sends
    may go). Sets the ``payhub_payouts_blocked`` gauge; logs nothing."""
    reasons = []
    for impl in reversed(hooks.hook.payhub_payouts_blocked.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            answer = impl.function()
        except Exception as exc:  # noqa: BLE001 - fail closed: a check that cannot answer blocks
            metrics.plugin_failed("hook", impl.plugin_name, "error")
            reasons.append(f"{impl.plugin_name}: its check failed: {type(exc).__name__}: {exc}")
            continue
        if answer is None:
            continue
        if not isinstance(answer, str):
            reasons.append(f"{impl.plugin_name}: answered {type(answer).__name__}, not a reason or None")
        else:
            reasons.append(f"{impl.plugin_name}: {answer.strip() or 'blocked (no reason given)'}")
    metrics.set_payouts_blocked(bool(reasons))
    return reasons


def sends_blocked(hooks: pluggy.PluginManager) -> list[str]:
    """:func:`blocked_reasons`, logged as the module docstring says (for the disbursement rounds)."""
    reasons = blocked_reasons(hooks)
    watch = _watches.get(hooks)
    if watch is None:
        watch = _watches[hooks] = _Watch()
    if reasons:
        if watch.reminder.due(tuple(reasons)):
            log.error("no payout is sent: %s; they stay due and are sent once this clears (logged again every %.0fs "
                      "while it lasts)", "; ".join(reasons), watch.reminder.every)
    elif watch.blocked:
        log.warning("sends are no longer blocked: due payouts are sent again")
    watch.blocked = bool(reasons)
    return reasons
