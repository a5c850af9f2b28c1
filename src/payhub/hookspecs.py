"""Hook specifications: cross-cutting behaviour plugins add with ``@payhub.api.hookimpl``.

Hooks run in the process that does the work: the daemon, and also CLI commands for ``payhub_audit_entry`` (the
entries they write) and ``payhub_payout_failed`` (``payhub payouts cancel``; a cancel through the HTTP API calls it
in the process serving the API). A hook that raises is isolated: for
``payhub_screen_payout`` the payout is held (fail closed) with the error as reason; for the observers the error is
logged and work goes on. While a configured hook plugin has failed to load, no payout is sent (its screening might
be missing). Observers are called after the change they observe has been committed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pluggy

from payhub.api import FxRate, Payee, PayoutInstruction, PayoutStatus, SanctionsList, ScreenDecision

hookspec = pluggy.HookspecMarker("payhub")


@hookspec
def payhub_screen_payout(payout: PayoutInstruction) -> ScreenDecision | None:
    """Screen a payout before each send attempt (sanctions, tax forms, caps); any denial holds it."""


@hookspec
def payhub_screen_payee(payee: Payee) -> ScreenDecision | None:
    """Screen a payee the payees file added or changed; a denial is recorded (audited) and shown to operators, and
    the payee's payouts are screened again before they are sent."""


@hookspec
def payhub_payouts_blocked() -> str | None:
    """Why no payout may be sent now (e.g. a sanctions list older than allowed), or None. Asked before every
    disbursement round and by ``/readyz``; any answer stops all sends (they stay due) until it is None again."""


@hookspec
def payhub_sanctions_lists() -> list[SanctionsList] | None:
    """Sanctions lists this plugin provides, read when ``payhub screening refresh`` runs (besides the list files
    the ``sanctions`` plugin is configured with). A list without entries, or with more than ``max_drop_share``
    fewer than its current version, is refused; a list no provider gives any more is retired."""


@hookspec
def payhub_payee_erased(payee_id: str) -> None:
    """Observe a payee whose personal data ``payhub payees erase`` removed: forget what this plugin keeps about
    them (files, caches) and keep only what the law requires."""


@hookspec(firstresult=True)
def payhub_fx_rate(base: str, quote: str, on: date, rate_type: str) -> FxRate | None:
    """Return the ``rate_type`` rate (e.g. ``reference``) to convert ``base`` into ``quote`` that applies on ``on``,
    or None to let others answer. Answer only with the rate published for ``on`` or, when ``on`` is a closing day of
    the provider's calendar, the last rate published before it; a business day without a rate has none. A payout whose
    rate nobody knows is held, never converted at another rate."""


@hookspec
def payhub_payout_settled(payout: PayoutInstruction, outcome: str, provider_ref: str | None) -> None:
    """Observe a payout the rail accepted or paid (``outcome`` is ``accepted`` or ``paid``)."""


@hookspec
def payhub_payout_failed(payout: PayoutInstruction, outcome: PayoutStatus, reason: str) -> None:
    """Observe a payout that stopped without being paid; ``outcome`` is its new status, a
    :class:`~payhub.api.PayoutStatus` (equal to its text, so an implementation may take it as ``str``): ``rejected``,
    ``returned``, ``failed`` (retries exhausted), ``cancelled`` (by an operator, from the CLI or the HTTP API),
    ``held`` (by screening, or by the check against its audit trail) or ``unresolved`` (an unknown outcome that needs
    an operator). Called once the change is committed; never for ``unknown`` or ``retrying``."""


@hookspec
def payhub_audit_entry(entry: dict[str, Any]) -> None:
    """Observe each committed audit entry (all fields, including ``seq`` and ``hash``), e.g. to stream it off-host."""


@hookspec
def payhub_audit_checkpoint(checkpoint: dict[str, Any]) -> None:
    """Observe each signed checkpoint of the audit chain's head (``seq``, ``hash``, ``at``, ``key_id``,
    ``signature``) after it was written to the checkpoint directory, e.g. to keep a copy off-host."""
