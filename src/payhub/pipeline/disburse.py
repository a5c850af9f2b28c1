"""Disburse: send payouts through their rail, paid at most once and never lost.

* A payout's idempotency key is fixed when it is scheduled and sent on every attempt.
* Before each send the attempt is committed (status ``sending``); a crash after that point leaves a payout whose
  outcome is unknown, exactly like a timeout.
* An unknown outcome is resolved by looking the key up on the rail before any new attempt. A rail that cannot look
  up is only re-sent to inside its declared dedup window; otherwise the payout becomes ``unresolved`` for an
  operator (``payhub payouts resolve``).
* A lookup's "not found" is trusted as "never received" only once the rail's ``lookup_settle_seconds`` have passed
  since the payout's last send started: until then that send may still be on its way to the provider, so the
  payout stays ``unknown`` and is looked up again then, never sent.
* Retries are bounded (``max_attempts`` sends per payout) and only for results the rail marks retryable; a
  rejection stops at once and the reason is shown. Between attempts a payout waits in ``retrying`` until its
  ``next_attempt_at`` (exponential backoff with jitter, computed by tenacity), so one rail's backoff never holds up
  other rails or sources.
* Every send attempt (the first, each retry, a resend after ``payhub payouts resolve --outcome not-sent``) is
  screened first (``payhub_screen_payout``); lookups are not. A denial holds the payout (``screening``), or makes it
  ``unresolved`` when an earlier send may have reached the rail; two operators' release of a screening hold lets it
  go on only while screening denies it for exactly what they released (:mod:`payhub.pipeline.holds`).

Each call of :func:`disburse_rail` works one claimed batch through one round: look up unknown outcomes, then screen
and send.

Rail calls run under the rail's call guard (:mod:`payhub.guard`): a call that runs past ``timeout_seconds`` is
abandoned and keeps running in its thread, and the rail gets no other call until it returns. The payouts of an
abandoned send may reach the rail, so they become ``unknown`` (a WARNING names each payout and its key) and are
looked up first. A payout that was never handed to the rail (in a round whose lookup was abandoned) is left as it
was, ``scheduled`` or ``retrying``, with no attempt counted, and is sent in a later round.

Every write to a claimed payout is fenced by the claim's lease (:mod:`payhub.store.leases`): a worker whose lease
expired or was taken over meanwhile writes nothing for that payout (no status, attempt, reward or audit change),
and says so in the log at WARNING. The lease is renewed when the attempt is committed, before the rail is called,
so a send or lookup (at most ``timeout_seconds``) always fits in it. Every status change is also checked against the
state machine of :mod:`payhub.states` in its SQL (:mod:`payhub.store.payouts` holds the SQL).

Payout states: scheduled → sending → sent → paid, or rejected / returned / failed (rewards held as owed again),
with retrying, unknown (looked up next), unresolved (needs an operator), held (screening denied it) and cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from payhub import metrics
from payhub.api import Outcome, Rail, RailResult
from payhub.clock import isoformat, utcnow
from payhub.errors import PermanentRailError, PluginTimeout, RailError, RetryableRailError, UnknownOutcomeError
from payhub.pipeline import holds
from payhub.pipeline.blocked import sends_blocked
from payhub.pipeline.presend import hold_mismatched
from payhub.pipeline.rail_results import STATE_OF, apply_results, backoff_seconds, notify_failed
from payhub.runtime import Runtime
from payhub.settings import RailSection
from payhub.states import AttemptOutcome, PayoutHold, PayoutStatus
from payhub.store import payouts as store
from payhub.store.payouts import Work

log = logging.getLogger(__name__)

LOOKUP_MIN_WAIT = 1.0  # seconds before asking again a rail whose lookup failed or did not know, whatever the backoff


def disburse_rail(rt: Runtime, rail_name: str) -> int:
    """Claim one batch of this rail's payouts that are due and work it one round; return how many were claimed."""
    rail = rt.plugins.rails[rail_name]
    section = rt.settings.rails[rail_name]
    if rt.guard(f"rail {rail.name}", section.timeout_seconds).busy:
        return 0  # an abandoned call has not returned: leave its payouts alone until it does
    if rt.plugins.failed_hooks():  # fail closed (the worker logs it, at most every logs.REMIND_SECONDS)
        return 0
    if sends_blocked(rt.plugins.hooks):  # a hook says no payout may be sent now: they stay due (logged there)
        return 0
    claimed = store.claim_due(rt, rail_name, rail.capabilities.max_batch)
    if not claimed:
        return 0
    released = False
    try:
        lookups = [w for w in claimed if w.needs_lookup]
        if lookups:  # lookups are not sends: they are not screened
            _resolve(rt, rail, section, lookups)
        ready = [w for w in claimed if not w.done and not w.needs_lookup]
        exhausted = [w for w in ready if w.attempts >= section.max_attempts]
        if exhausted:
            _exhaust(rt, exhausted)
        # Screened before every send attempt; then only as the audit chain recorded them (a payout edited in the
        # database is held, not sent).
        screened = _screen(rt, [w for w in ready if w.attempts < section.max_attempts])
        sendable = hold_mismatched(rt, rail_name, screened)
        if sendable:  # the send's results are the round's last write: the claim is released with them
            released = _send(rt, rail, sendable, section, release=claimed)
    finally:
        if not released:
            store.release(rt, claimed)
    return len(claimed)


def _screen(rt: Runtime, batch: list[Work]) -> list[Work]:
    """Run the screening hooks on payouts about to be sent (every attempt, retries and resends included); return
    those allowed. A denial is overridden only by two operators' release of a screening hold that covers every
    denial given now (:func:`payhub.pipeline.holds.covered`, read from the audit chain, never from ``released_by``
    or ``hold_code``); a hook that raises is never overridden. A denied payout is held (``screening``), or, when its
    row says an earlier send may have reached the rail (``sending``, ``unknown``), made ``unresolved``: never sent."""
    hook = rt.plugins.hooks.hook.payhub_screen_payout
    if not hook.get_hookimpls() or not batch:
        return batch
    screens = tuple(sorted(impl.plugin_name for impl in hook.get_hookimpls()))
    with rt.engine.connect() as conn:
        recorded = holds.payout_entries(conn, [w.id for w in batch], holds.SCREENING_ACTIONS)
    keep: list[Work] = []
    denied: list[tuple[Work, list[str], holds.Override | None]] = []
    for w in batch:
        override = holds.screening_override(recorded.get(w.id, []))
        try:
            reasons = [d.reason or "denied" for d in hook(payout=w.instruction) if d is not None and not d.allow]
        except Exception as exc:  # noqa: BLE001 - fail closed: a broken screen holds the payout, whatever a release
            reasons, override = [f"screening hook error: {type(exc).__name__}: {exc}"], None
        w.screened_by, w.override = screens, None
        if reasons and override is not None and holds.covered(reasons, override):
            w.override = override.entry
        elif reasons:
            denied.append((w, reasons, override))
            continue
        keep.append(w)
    if denied:
        _deny(rt, denied)
    return keep


def _deny(rt: Runtime, denied: list[tuple[Work, list[str], holds.Override | None]]) -> None:
    """Hold the denied payouts (or make unresolved those an earlier send may have reached), audited."""
    done: list[tuple[Work, PayoutStatus, str]] = []
    with rt.transaction() as tx:
        current = store.statuses(tx, [w for w, _reasons, _override in denied])
        target = {w.id: PayoutStatus.UNRESOLVED if current.get(w.id) in (PayoutStatus.SENDING, PayoutStatus.UNKNOWN)
                  else PayoutStatus.HELD for w, _reasons, _override in denied}
        live = store.fence(tx, [(w, target[w.id]) for w, _reasons, _override in denied])
        for w, reasons, override in denied:
            if w.id not in live:
                continue
            reason = holds.DENIALS_JOINED.join(reasons)
            detail: dict[str, Any] = {"reason": reason, "denials": reasons}
            if override is not None:  # a release stood, but not for these denials
                detail["not_covered_by"] = override.entry
            if target[w.id] == PayoutStatus.HELD:
                moved = store.set_status(tx, w.id, PayoutStatus.HELD, w.lease, hold_code=PayoutHold.SCREENING,
                                         reason=reason)
                detail["hold_code"] = PayoutHold.SCREENING
            else:
                reason = (f"screening denied a new send ({reason}); an earlier send may have reached the rail: check "
                          "with the provider, then `payhub payouts resolve`")
                moved = store.set_status(tx, w.id, PayoutStatus.UNRESOLVED, w.lease, reason=reason)
                detail["reason"] = reason
            if moved:
                tx.audit(f"payout.{target[w.id]}", "payout", w.id, detail, outcome=target[w.id])
                done.append((w, target[w.id], reason))
    for w, status, reason in done:
        notify_failed(rt, w, status, reason)


def _send(rt: Runtime, rail: Rail, batch: list[Work], section: RailSection, *, release: Sequence[Work] = ()
          ) -> bool:
    """Record the attempts (committed before the call), send, and record the results; return whether ``release``
    (the round's claim) was released with them."""
    guard = rt.guard(f"rail {rail.name}", section.timeout_seconds)
    if guard.busy:  # a lookup of this round was abandoned and runs on: nothing is handed to the rail before it ends
        log.info("rail %s: payouts %s not sent in this round: an abandoned call has not returned yet; they stay "
                 "due and are sent once it has", rail.name, _ids(batch))
        return False
    now = utcnow()
    with rt.transaction() as tx:
        live = store.fence(tx, [(w, PayoutStatus.SENDING) for w in batch])
        batch = [w for w in batch if w.id in live]
        for w in batch:
            w.attempts += 1
            detail: dict[str, Any] = {"attempt": w.attempts, "key": w.instruction.idempotency_key}
            if w.screened_by:  # the screening decision travels with the send it allowed
                detail["screened_by"] = list(w.screened_by)
            if w.override is not None:  # denied as before: two operators' release (this entry) covers it
                detail["screening_override"] = w.override
            tx.audit("payout.sending", "payout", w.id, detail)
        # the lease is renewed with the attempt, so the call (at most timeout_seconds) fits in it
        attempt_of = store.start_sends(tx, batch, now, rt.settings.database.lease_seconds)
    if not batch:
        return False
    keys = [w.instruction.idempotency_key for w in batch]
    metrics.PAYOUT_ATTEMPTS.labels(rail.name, "send").inc(len(batch))
    metrics.PAYOUT_RETRIES.labels(rail.name).inc(sum(1 for w in batch if w.attempts > 1))
    try:
        with metrics.RAIL_CALL_SECONDS.labels(rail.name, "send").time():
            sent = guard.call(rail.send, [w.instruction for w in batch], doing=f"send of payouts {_ids(batch)}",
                              sending=True)
        answered = {r.idempotency_key: r for r in sent}
        results = {k: answered.get(k) or RailResult(k, Outcome.UNKNOWN, reason="the rail returned no result")
                   for k in keys}
    except RetryableRailError as exc:
        results = {k: RailResult(k, Outcome.RETRY, reason=exc.reason) for k in keys}
    except PermanentRailError as exc:
        results = {k: RailResult(k, Outcome.REJECTED, reason=exc.reason) for k in keys}
    except PluginTimeout as exc:  # abandoned: the call runs on, so the rail may still take every payout of it
        metrics.plugin_failed("rail", rail.name, "timeout")
        for w in batch:
            log.warning("payout %s (idempotency key %s): send abandoned: %s; its outcome is unknown and it is looked "
                        "up on the rail by its key before any new attempt", w.id, w.instruction.idempotency_key, exc)
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=str(exc)) for k in keys}
    except UnknownOutcomeError as exc:
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=str(exc)) for k in keys}
    except Exception as exc:  # noqa: BLE001 - a rail bug: it may have sent, so the outcome is unknown
        log.exception("rail %s raised while sending", rail.name)
        metrics.plugin_failed("rail", rail.name, "error")
        results = {k: RailResult(k, Outcome.UNKNOWN, reason=f"rail error: {type(exc).__name__}: {exc}")
                   for k in keys}
    apply_results(rt, section, [(w, results[w.instruction.idempotency_key]) for w in batch], attempt_of,
                  release=release)
    return bool(release)


def _resolve(rt: Runtime, rail: Rail, section: RailSection, batch: list[Work]) -> None:
    """Settle unknown outcomes by asking the rail before any new attempt."""
    caps = rail.capabilities
    now = utcnow()
    if not caps.lookup:
        unresolved: list[tuple[Work, str]] = []
        with rt.transaction() as tx:
            unsafe = []
            for w in batch:
                window = caps.dedup_window
                if (window is not None and w.instruction.created_at + window > now
                        and w.attempts < section.max_attempts):
                    w.needs_lookup = False  # the provider drops a repeat of this key: re-sending is safe
                    continue
                w.done = True
                unsafe.append(w)
            live = store.fence(tx, [(w, PayoutStatus.UNRESOLVED) for w in unsafe])
            for w in unsafe:
                if w.id not in live:
                    continue
                # Out of window or out of attempts: the outcome stays unknown, so it must not be called a failure.
                reason = (f"outcome unknown ({w.last_reason}); rail {rail.name} cannot look payouts up: check with "
                          "the provider, then `payhub payouts resolve`")
                if store.set_status(tx, w.id, PayoutStatus.UNRESOLVED, w.lease, reason=reason):
                    tx.audit("payout.unresolved", "payout", w.id, {"reason": w.last_reason}, outcome="unresolved")
                    unresolved.append((w, reason))
        for w, reason in unresolved:
            notify_failed(rt, w, PayoutStatus.UNRESOLVED, reason)
        return
    batch = _renew(rt, batch)
    if not batch:
        return
    guard = rt.guard(f"rail {rail.name}", section.timeout_seconds)
    metrics.PAYOUT_ATTEMPTS.labels(rail.name, "lookup").inc(len(batch))
    try:
        with metrics.RAIL_CALL_SECONDS.labels(rail.name, "lookup").time():
            found = guard.call(rail.lookup, [w.instruction.idempotency_key for w in batch],
                               doing=f"lookup of payouts {_ids(batch)}")
    except Exception as exc:  # noqa: BLE001 - the payouts stay unknown and are looked up again after a wait
        log.warning("rail %s: lookup failed: %s", rail.name, exc)
        if not isinstance(exc, RailError):
            metrics.plugin_failed("rail", rail.name, "timeout" if isinstance(exc, PluginTimeout) else "error")
        wait = max(LOOKUP_MIN_WAIT, backoff_seconds(section, max(w.attempts for w in batch)))
        later = now + timedelta(seconds=wait)
        store.defer(rt, batch, later, f"lookup failed: {type(exc).__name__}: {exc}")
        for w in batch:
            w.done = True
        return
    resolved = []
    with rt.transaction() as tx:
        answers = {}
        in_flight = store.sends_in_flight(tx.conn, [w.id for w in batch], now, section.in_flight_seconds)
        for w in batch:
            key = w.instruction.idempotency_key
            answered = key in found
            result = found.get(key) if answered else RailResult(key, Outcome.UNKNOWN, reason="not in the answer")
            answers[w.id] = (answered, result)
            w.done = True
        live = store.fence(tx, [(w, PayoutStatus.UNKNOWN if answers[w.id][1] is None and w.id in in_flight
                           else _lookup_target(answers[w.id][1])) for w in batch])
        for w in batch:
            if w.id not in live:
                continue
            answered, result = answers[w.id]
            settling = result is None and w.id in in_flight
            store.record_lookup(
                tx, w.id, w.attempts, now, result.outcome.value if result else AttemptOutcome.NOT_FOUND,
                result.reason if result else ("too soon after the send to be trusted" if settling else None),
                finished_at=utcnow())
            if settling:
                # Not found yet, but the last send may still reach the rail: ask again once it cannot, never send.
                again = max(in_flight[w.id], now + timedelta(seconds=LOOKUP_MIN_WAIT))
                store.set_status(tx, w.id, PayoutStatus.UNKNOWN, w.lease, next_attempt_at=again,
                                 reason=f"not found by the rail yet, but its last send may still reach it; "
                                        f"looked up again at {isoformat(again)}")
                tx.audit("payout.lookup", "payout", w.id, {"found": False, "looked_up_again_at": again},
                         outcome="unknown")
            elif result is None or result.outcome == Outcome.RETRY:
                # Never received (or received and refused as retryable): send again with the same key, after a wait.
                w.needs_lookup = False
                wait = backoff_seconds(section, w.attempts)
                store.set_status(tx, w.id, PayoutStatus.RETRYING, w.lease,
                                 next_attempt_at=now + timedelta(seconds=wait),
                                 reason="not received by the rail; will send again with the same key")
                tx.audit("payout.lookup", "payout", w.id, {"found": False}, outcome="not_found")
            elif result.outcome == Outcome.UNKNOWN:
                wait = max(LOOKUP_MIN_WAIT, backoff_seconds(section, w.attempts))
                store.set_status(tx, w.id, PayoutStatus.UNKNOWN, w.lease, next_attempt_at=now + timedelta(seconds=wait))
                tx.audit("payout.lookup", "payout", w.id, {"found": True if answered else None, "state": "unknown"},
                         outcome="unknown")
            else:
                tx.audit("payout.lookup", "payout", w.id, {"found": True, "state": result.outcome.value})
                resolved.append((w, result))
    if resolved:
        apply_results(rt, section, resolved, {})


def _ids(batch: Sequence[Work]) -> str:
    return ", ".join(str(w.id) for w in batch)


def _lookup_target(result: RailResult | None) -> PayoutStatus:
    """The status a lookup's answer moves a payout to."""
    if result is None or result.outcome == Outcome.RETRY:
        return PayoutStatus.RETRYING
    return STATE_OF.get(result.outcome, PayoutStatus.UNKNOWN)


def _renew(rt: Runtime, batch: list[Work]) -> list[Work]:
    """Renew the lease of the batch before a rail call; return the payouts still held (the others are dropped)."""
    live = store.renew(rt, batch)
    for w in batch:
        if w.id not in live:
            w.done = True
            log.warning("payout %s: stale work dropped (lookup): this worker's lease on it expired or was taken over "
                        "by another worker", w.id)
    return [w for w in batch if w.id in live]


def _exhaust(rt: Runtime, batch: list[Work]) -> None:
    with rt.transaction() as tx:
        live = store.fence(tx, [(w, PayoutStatus.FAILED) for w in batch])
        batch = [w for w in batch if w.id in live]
        last_send = store.last_send_details(tx, [w.id for w in batch])  # its failure is the cause to show
        reasons = {w.id: f"retries exhausted after {w.attempts} attempts: {last_send.get(w.id) or w.last_reason}"
                   for w in batch}
        batch = [w for w in batch
                 if store.fail(tx, w.id, PayoutStatus.FAILED, reasons[w.id], {"attempt": w.attempts}, w.lease)]
    for w in batch:
        notify_failed(rt, w, PayoutStatus.FAILED, reasons[w.id])
