"""The rules of the rail contract (:class:`payhub.api.Rail`), as checks over a :class:`RailSubject`.

Outcomes are judged the way the core takes them: ``RetryableRailError`` means RETRY for every payout of the call,
``PermanentRailError`` REJECTED, ``UnknownOutcomeError`` (or any other exception) UNKNOWN, and a payout without a
result UNKNOWN. "Measured on the provider" means counted by the fault controller (``payments(key)``), never taken
from what the rail says.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, cast, runtime_checkable

import httpx
from pydantic import BaseModel

from payhub.api import (
    Outcome,
    Payee,
    PayoutInstruction,
    PermanentRailError,
    Rail,
    RailCapabilities,
    RailResult,
    RetryableRailError,
)
from payhub.testing.contracts.checks import Check, CheckSkipped, ContractViolation
from payhub.testing.faults import FAULTS, ExtraFault, Fault

__all__ = ["RAIL_CHECKS", "RailFaults", "RailSubject", "default_payout", "new_key"]

SUCCESS = frozenset({Outcome.ACCEPTED, Outcome.PAID})
_payout_ids = itertools.count(1)


@runtime_checkable
class RailFaults(Protocol):
    """Controls the provider behind a rail under test.

    ``plan(*faults)`` queues faults of :data:`payhub.testing.faults.Fault`, each consumed by one provider request
    (``lookup_fails`` by one lookup). ``payments(key)`` is how many times the provider took money for ``key``
    (0: never). Optional: ``supported`` (the faults this provider can simulate; default the base vocabulary
    :data:`~payhub.testing.faults.FAULTS`, the checks needing another one skip) and ``release()`` (ends a ``hang``,
    a stall and ``unreachable``). A controller listing a word of :data:`~payhub.testing.faults.ExtraFault` in
    ``supported`` takes it in ``plan`` too, and then has ``release()``.
    """

    def plan(self, *faults: Fault) -> None: ...

    def payments(self, key: str) -> int: ...


def new_key() -> str:
    """A fresh idempotency key shaped like the core's (``ph-`` and 32 hex digits)."""
    return f"ph-{uuid.uuid4().hex}"


def default_payout(key: str) -> PayoutInstruction:
    """10.00 EUR to a payee in Germany with an email and an IBAN: what most rails can pay."""
    payee = Payee("contract-payee", "Contract Payee", country="DE", currency="EUR", email="payee@example.com",
                  details={"email": "payee@example.com", "iban": "DE89370400440532013000", "bic": "COBADEFFXXX"})
    payout_id = next(_payout_ids)
    return PayoutInstruction(payout_id, key, payee, Decimal("10.00"), "EUR", f"payhub payout {payout_id}",
                             datetime.now(UTC))


@dataclass
class RailSubject:
    """A rail under test. ``factory`` makes a new, configured instance (closed by the check that made it);
    ``make_payout(key)`` an instruction the rail can pay; ``timeout_seconds`` the core's ``rails.<name>.
    timeout_seconds``; ``faults`` the provider's controller, or None when there is none (a configured system)."""

    factory: Callable[[], Rail]
    make_payout: Callable[[str], PayoutInstruction] = default_payout
    timeout_seconds: float = 60.0
    faults: RailFaults | None = None
    max_sample: int = 1000  # the most payouts one check sends in a call (a smaller max_batch is used as is)

    def payouts(self, count: int) -> list[PayoutInstruction]:
        return [self.make_payout(new_key()) for _ in range(count)]

    def controller(self, *needed: Fault | ExtraFault) -> RailFaults:
        """The fault controller, or skip: none is given, or it cannot simulate one of ``needed``."""
        if self.faults is None:
            raise CheckSkipped("needs a fault-injecting provider (the suite's faults fixture returned None)")
        supported = getattr(self.faults, "supported", FAULTS)
        missing = [f for f in needed if f not in supported]
        if missing:
            raise CheckSkipped(f"the provider of this rail cannot simulate {', '.join(map(repr, missing))}")
        return self.faults


def _plan(faults: RailFaults, fault: Fault | ExtraFault) -> None:
    """Plan a fault the controller declared in ``supported`` (an extra word is outside ``plan``'s base type)."""
    cast(Any, faults).plan(fault)


def _release(faults: RailFaults) -> None:
    release = getattr(faults, "release", None)
    if callable(release):
        release()


def _describe(exc: BaseException) -> str:
    """``Name: message`` (``Name`` alone without one), never a nested repr."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _rail(subject: RailSubject) -> Iterator[Rail]:
    rail = subject.factory()
    try:
        yield rail
    finally:
        rail.close()


@dataclass(frozen=True, slots=True)
class Sent:
    """A send as the core takes it: each key's outcome, what the rail did (for messages), how long it took."""

    outcomes: dict[str, Outcome]
    did: str
    seconds: float
    results: list[RailResult] | None = None


def send(rail: Rail, instructions: Sequence[PayoutInstruction]) -> Sent:
    keys = [i.idempotency_key for i in instructions]
    started = time.monotonic()
    try:
        results = rail.send(list(instructions))
    except Exception as exc:  # noqa: BLE001 - every exception is an outcome for the core
        seconds = time.monotonic() - started
        outcome = (Outcome.RETRY if isinstance(exc, RetryableRailError) else Outcome.REJECTED
                   if isinstance(exc, PermanentRailError) else Outcome.UNKNOWN)
        return Sent(dict.fromkeys(keys, outcome), f"raised {_describe(exc)}", seconds)
    seconds = time.monotonic() - started
    answered = {r.idempotency_key: r.outcome for r in results if isinstance(r, RailResult)}
    outcomes = {k: answered.get(k, Outcome.UNKNOWN) for k in keys}
    shown = ", ".join(f"{r.outcome.value}" + (f" ({r.reason})" if r.reason else "") for r in results
                      if isinstance(r, RailResult))
    return Sent(outcomes, f"answered [{shown}]", seconds, results)


def _expect(sent: Sent, allowed: frozenset[Outcome], what: str, why: str) -> None:
    wrong = {k: o for k, o in sent.outcomes.items() if o not in allowed}
    if wrong:
        names = " or ".join(sorted(o.value.upper() for o in allowed))
        raise ContractViolation(f"{what}: the rail {sent.did}, which the core takes as "
                                f"{', '.join(sorted({o.value.upper() for o in wrong.values()}))}; expected {names}: "
                                f"{why}")


def _one_result_each(sent: Sent, keys: Sequence[str], what: str) -> None:
    if sent.results is None:
        raise ContractViolation(f"{what}: the rail {sent.did} instead of answering each payout")
    bad = [r for r in sent.results if not isinstance(r, RailResult)]
    if bad:
        raise ContractViolation(f"{what}: send returned {type(bad[0]).__name__}, not payhub.api.RailResult")
    counts = Counter(r.idempotency_key for r in sent.results)
    stray = sorted(set(counts) - set(keys))
    repeated = sorted(k for k, n in counts.items() if n > 1 and k in keys)
    missing = sorted(set(keys) - set(counts))
    problems = []
    if missing:
        problems.append(f"no result for {len(missing)} of {len(keys)} keys (the core takes them as UNKNOWN)")
    if repeated:
        problems.append(f"{len(repeated)} keys answered more than once ({repeated[0]} …)")
    if stray:
        problems.append(f"results for keys that were not sent ({stray[0]} …)")
    if problems:
        raise ContractViolation(f"{what}: " + "; ".join(problems) + "; send must return exactly one RailResult "
                                "per instruction")


def _paid_once(faults: RailFaults, keys: Sequence[str], what: str) -> None:
    counts = {k: faults.payments(k) for k in keys}
    twice = {k: n for k, n in counts.items() if n > 1}
    if twice:
        key, n = next(iter(twice.items()))
        raise ContractViolation(f"{what}: the provider paid {key} {n} times; a payout's idempotency key must reach "
                                "the provider on every attempt so that it never pays twice")


def _send_with_fault(subject: RailSubject, fault: Fault | ExtraFault,
                     count: int = 1) -> tuple[RailFaults, list[PayoutInstruction], Sent]:
    """Plan ``fault`` (skip when the provider cannot simulate it), then send ``count`` new payouts with a new
    instance: the controller, the payouts and what the send gave."""
    faults = subject.controller(fault)
    payouts = subject.payouts(count)
    with _rail(subject) as rail:
        _plan(faults, fault)
        sent = send(rail, payouts)
    return faults, payouts, sent


def _within_timeout(sent: Sent, subject: RailSubject, consequence: str = "") -> None:
    if sent.seconds >= subject.timeout_seconds:
        raise ContractViolation(f"the send took {sent.seconds:.1f} s, not less than timeout_seconds = "
                                f"{subject.timeout_seconds:g}{consequence}")


# ---------------------------------------------------------------------------------------------------- checks


def capabilities_stable(subject: RailSubject) -> None:
    with _rail(subject) as one, _rail(subject) as two:
        first, again, other = one.capabilities, one.capabilities, two.capabilities
    if not isinstance(first, RailCapabilities):
        raise ContractViolation(f"capabilities is {type(first).__name__}, not payhub.api.RailCapabilities")
    if first != again:
        raise ContractViolation(f"capabilities changed between two reads of one instance: {first} then {again}")
    if first != other:
        raise ContractViolation(f"two instances with the same settings declare different capabilities: {first} and "
                                f"{other}")
    if not isinstance(first.max_batch, int) or first.max_batch < 1:
        raise ContractViolation(f"capabilities.max_batch is {first.max_batch!r}; it must be a whole number >= 1")


def lookup_none_for_unknown_keys(subject: RailSubject) -> None:
    with _rail(subject) as rail:
        if not rail.capabilities.lookup:
            raise CheckSkipped("capabilities.lookup is false: the rail declares it cannot look payouts up")
        keys = [new_key(), new_key()]
        found = rail.lookup(keys)
    if not isinstance(found, dict):
        raise ContractViolation(f"lookup returned {type(found).__name__}, not a dict by key")
    for key in keys:
        if key not in found:
            raise ContractViolation(f"lookup left out {key}, a key never sent; answer None (never received) so the "
                                    "core can send it, instead of leaving it unknown for ever")
        if found[key] is not None:
            raise ContractViolation(f"lookup answered {found[key]} for {key}, a key never sent; it must answer None")


def one_result_per_key(subject: RailSubject) -> None:
    payouts = subject.payouts(3)
    keys = [p.idempotency_key for p in payouts]
    with _rail(subject) as rail:
        sent = send(rail, payouts)
    _one_result_each(sent, keys, "a send of 3 payouts")
    _expect(sent, SUCCESS, "a send of 3 payouts the provider accepts", "make_payout must give payouts the rail can "
            "pay")


def one_result_per_key_when_provider_repeats(subject: RailSubject) -> None:
    _, payouts, sent = _send_with_fault(subject, "duplicate", 2)
    _one_result_each(sent, [p.idempotency_key for p in payouts],
                     "a send whose provider answered each payout twice plus one key never sent")


def resend_never_pays_twice(subject: RailSubject) -> None:
    faults = subject.controller()
    payout = subject.make_payout(new_key())
    key = payout.idempotency_key
    with _rail(subject) as rail:
        first = send(rail, [payout])
        _expect(first, SUCCESS, "the first send of a payout", "make_payout must give a payout the rail can pay")
        again = send(rail, [payout])
    with _rail(subject) as fresh:  # a restarted daemon sends with a new instance
        third = send(fresh, [payout])
    _paid_once(faults, [key], "the same payout sent three times (twice by one instance, then by a new one)")
    for resend in (again, third):
        _expect(resend, SUCCESS | {Outcome.UNKNOWN}, "a resend of a payout the provider already has",
                "a REJECTED or RETRY answer would make the core hold or resend a payout that was paid")


def resend_after_lost_answer_never_pays_twice(subject: RailSubject) -> None:
    faults, [payout], _ = _send_with_fault(subject, "timeout_after_accept")
    with _rail(subject) as rail:
        send(rail, [payout])
    _paid_once(faults, [payout.idempotency_key], "a payout sent again after the provider accepted it and its answer "
               "was lost")


def timeout_after_sending_is_unknown(subject: RailSubject) -> None:
    _, _, sent = _send_with_fault(subject, "timeout_after_accept")
    _expect(sent, frozenset({Outcome.UNKNOWN}), "the provider accepted the payout, then its answer was lost "
            "(read timeout)", "the request was sent, so it may have been paid; raise UnknownOutcomeError (the core "
            "looks it up before any new attempt), never RetryableRailError")
    _within_timeout(sent, subject, ": the core abandons it before the rail can answer")


def refusal_before_accept_is_retryable(subject: RailSubject) -> None:
    faults, [payout], sent = _send_with_fault(subject, "retryable")
    _expect(sent, frozenset({Outcome.RETRY}), "the provider refused the request before accepting anything (busy)",
            "nothing was accepted, so raise RetryableRailError (or answer RETRY) and the core sends it again after "
            "a backoff")
    if faults.payments(payout.idempotency_key):
        raise ContractViolation("the provider was planned to refuse, yet it recorded a payment: the fault "
                                "controller does not work")


def no_answer_is_unknown_or_retry(subject: RailSubject) -> None:
    _, _, sent = _send_with_fault(subject, "timeout_before_accept")
    _expect(sent, frozenset({Outcome.UNKNOWN, Outcome.RETRY}), "the provider never answered",
            "with no answer the rail cannot claim the payout was accepted or refused")
    _within_timeout(sent, subject)


def batch_refusal_is_permanent(subject: RailSubject) -> None:
    _, _, sent = _send_with_fault(subject, "permanent", 2)
    _expect(sent, frozenset({Outcome.REJECTED}), "the provider refused the whole request for good (HTTP 400/403)",
            "raise PermanentRailError (or answer REJECTED with the reason) so the payouts stop and surface")


def rejections_answered_per_payout(subject: RailSubject) -> None:
    _, _, sent = _send_with_fault(subject, "reject", 2)
    _expect(sent, frozenset({Outcome.REJECTED}), "the provider refused each payout (invalid beneficiary)",
            "a refused payout is REJECTED, with the provider's reason")
    if sent.results is not None and any(not r.reason for r in sent.results if r.outcome == Outcome.REJECTED):
        raise ContractViolation("a REJECTED result has no reason; operators see the reason, give the provider's")


def hung_provider_is_bounded(subject: RailSubject) -> None:
    faults = subject.controller("hang")
    payout = subject.make_payout(new_key())
    box: list[Sent] = []
    with _rail(subject) as rail:
        faults.plan("hang")
        worker = threading.Thread(target=lambda: box.append(send(rail, [payout])), daemon=True)
        worker.start()
        worker.join(subject.timeout_seconds)
        _release(faults)
        worker.join(5)
    if not box:
        raise ContractViolation(f"a send to a provider that does not answer was still running after timeout_seconds "
                                f"= {subject.timeout_seconds:g}: give every request a timeout below it")
    if box[0].seconds >= subject.timeout_seconds:
        raise ContractViolation(f"a send to a provider that does not answer took {box[0].seconds:.1f} s (the rail "
                                f"{box[0].did} once the provider was released), not less than timeout_seconds = "
                                f"{subject.timeout_seconds:g}: the core abandons it first; give every request a "
                                "timeout below it")
    _expect(box[0], frozenset({Outcome.UNKNOWN}), "the provider took the request and did not answer in time",
            "the request was sent, so it may be paid later; the outcome is unknown")


def lookup_finds_accepted_payment(subject: RailSubject) -> None:
    faults = subject.controller("timeout_after_accept")
    payout = subject.make_payout(new_key())
    with _rail(subject) as rail:
        if not rail.capabilities.lookup:
            raise CheckSkipped("capabilities.lookup is false: the rail declares it cannot look payouts up")
        faults.plan("timeout_after_accept")
        send(rail, [payout])
    with _rail(subject) as rail:
        found = rail.lookup([payout.idempotency_key])
    if not isinstance(found, dict):
        raise ContractViolation(f"lookup returned {type(found).__name__}, not a dict by key")
    result = found.get(payout.idempotency_key, Outcome.UNKNOWN)
    if result is None:
        raise ContractViolation("lookup answered None (never received) for a payout the provider accepted (its "
                                "answer was lost): the core would send it again")
    if isinstance(result, RailResult) and result.outcome not in SUCCESS | {Outcome.UNKNOWN}:
        raise ContractViolation(f"lookup answered {result.outcome.value.upper()} for a payout the provider accepted")


def _lookup_must_raise(subject: RailSubject, fault: Fault | ExtraFault, what: str) -> None:
    """Pay a payout, plan ``fault``, then look the payout up with a new instance (as a restarted daemon does): the
    lookup must raise, never answer None (never received), which would have the core send it again."""
    faults = subject.controller(fault)
    payout = subject.make_payout(new_key())
    key = payout.idempotency_key
    with _rail(subject) as rail:
        if not rail.capabilities.lookup:
            raise CheckSkipped("capabilities.lookup is false: the rail declares it cannot look payouts up")
        sent = send(rail, [payout])
    _expect(sent, SUCCESS, "the send before the lookup", "make_payout must give a payout the rail can pay")
    with _rail(subject) as rail:
        _plan(faults, fault)
        try:
            found = rail.lookup([key])
        except Exception:  # noqa: BLE001 - raising is the right answer
            return
        finally:
            _release(faults)
    if not isinstance(found, dict) or key not in found:
        return  # a key left out stays unknown: asked about again
    answer = found[key]
    if answer is None:
        raise ContractViolation(f"lookup answered None (never received) for a payout the provider had accepted, "
                                f"while {what}: the core would send it again; raise (RetryableRailError) so the payout "
                                "stays unknown and is asked about again")
    if isinstance(answer, RailResult) and answer.outcome in (Outcome.REJECTED, Outcome.RETURNED, Outcome.RETRY):
        raise ContractViolation(f"lookup answered {answer.outcome.value.upper()} for a payout the provider had "
                                f"accepted, while {what}: raise instead")


def lookup_raises_when_it_cannot_tell(subject: RailSubject) -> None:
    _lookup_must_raise(subject, "lookup_fails", "the provider could not answer (HTTP 503)")


def lookup_raises_when_unreachable(subject: RailSubject) -> None:
    _lookup_must_raise(subject, "unreachable", "the provider was unreachable (connection refused or dropped)")


def lookup_raises_on_timeout(subject: RailSubject) -> None:
    _lookup_must_raise(subject, "lookup_timeout", "the provider did not answer within the rail's read timeout")


def error_after_accept_is_unknown(subject: RailSubject) -> None:
    _, _, sent = _send_with_fault(subject, "error_after_accept")
    _expect(sent, SUCCESS | {Outcome.UNKNOWN}, "the provider accepted the payout, then answered HTTP 500",
            "a server error after the request was sent may follow a payment; raise UnknownOutcomeError (the core "
            "looks it up before any new attempt), or answer what a lookup confirmed, never RetryableRailError")


def max_batch_respected(subject: RailSubject) -> None:
    with _rail(subject) as rail:
        declared = rail.capabilities.max_batch
        count = min(declared, subject.max_sample)
        payouts = subject.payouts(count)
        sent = send(rail, payouts)
    bounded = f", sent {count}: the most this check sends" if count < declared else ""
    what = (f"a send of {count} payouts (capabilities.max_batch = {declared}{bounded}; the core gives one call up "
            "to max_batch payouts, so the provider's own limit must not be lower)")
    _one_result_each(sent, [p.idempotency_key for p in payouts], what)
    _expect(sent, SUCCESS, what, "a rail must serve every batch up to the max_batch it declares")
    if subject.faults is not None:
        _paid_once(subject.faults, [p.idempotency_key for p in payouts], what)


def thread_safe_sends(subject: RailSubject, threads: int = 4, each: int = 3) -> None:
    batches = [subject.payouts(each) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    sent: dict[int, Sent] = {}
    with _rail(subject) as rail:

        def work(n: int) -> None:
            barrier.wait(10)
            sent[n] = send(rail, batches[n])

        workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(subject.timeout_seconds + 5)
    what = f"{threads} sends of {each} payouts at once from {threads} threads through one instance"
    if len(sent) < threads:
        raise ContractViolation(f"{what}: {threads - len(sent)} did not return (a deadlock?)")
    for n, batch in enumerate(batches):
        _one_result_each(sent[n], [p.idempotency_key for p in batch], what)
        _expect(sent[n], SUCCESS, what, "calls may come from any thread; keep shared state behind a lock")
    if subject.faults is not None:
        _paid_once(subject.faults, [p.idempotency_key for b in batches for p in b], what)


def _timeout_settings(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, float]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _timeout_settings(value, f"{prefix}{name}.")
        elif "timeout" in name and isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{prefix}{name}", float(value)


def _http_clients(obj: Any, depth: int = 3, seen: set[int] | None = None) -> Iterator[tuple[str, httpx.Client]]:
    seen = seen if seen is not None else set()
    if depth == 0 or id(obj) in seen or not hasattr(obj, "__dict__"):
        return
    seen.add(id(obj))
    for name, value in vars(obj).items():
        members: list[tuple[str, Any]] = [(name, value)]
        if isinstance(value, list | tuple | set | frozenset):  # containers are looked into one level
            members += [(f"{name}[{n}]", item) for n, item in enumerate(value)]
        elif isinstance(value, dict):
            members += [(f"{name}[{key!r}]", item) for key, item in value.items()]
        for label, member in members:
            if isinstance(member, httpx.Client):
                yield label, member
            elif not isinstance(member, type) and type(member).__module__.split(".")[0] not in ("builtins", "httpx"):
                yield from ((f"{label}.{inner}", client) for inner, client in _http_clients(member, depth - 1, seen))


def http_timeout_below_timeout_seconds(subject: RailSubject) -> None:
    limit = subject.timeout_seconds
    with _rail(subject) as rail:
        settings = [(f"settings.{k}", v) for k, v in _timeout_settings(rail.settings)] \
            if isinstance(rail.settings, BaseModel) else []
        clients = list(_http_clients(rail))
        timeouts = {name: client.timeout for name, client in clients}
    if not settings and not clients:
        raise CheckSkipped("the rail has no timeout setting and no httpx.Client to read a timeout from")
    for name, value in settings:
        if value >= limit:
            raise ContractViolation(f"{name} = {value:g} s is not below timeout_seconds = {limit:g}: the core "
                                    "abandons the call before the rail's own timeout can answer UNKNOWN with a reason")
    for name, timeout in timeouts.items():
        unset = [part for part in ("connect", "read", "write", "pool") if getattr(timeout, part) is None]
        if unset:
            raise ContractViolation(f"the httpx client {name} has no {', '.join(unset)} timeout: every external call "
                                    "needs one")
        total = (timeout.connect or 0) + (timeout.read or 0)
        if total >= limit:
            raise ContractViolation(f"the httpx client {name} may wait {total:g} s (connect {timeout.connect:g} + "
                                    f"read {timeout.read:g}), not below timeout_seconds = {limit:g}")


RAIL_CHECKS: tuple[Check[RailSubject], ...] = (
    Check("capabilities_stable", "capabilities are the same on every read and every instance", capabilities_stable),
    Check("http_timeout_below_timeout_seconds", "the rail's HTTP and timeout settings are below timeout_seconds",
          http_timeout_below_timeout_seconds),
    Check("lookup_none_for_unknown_keys", "lookup answers None for keys never sent", lookup_none_for_unknown_keys),
    Check("one_result_per_key", "a send answers exactly one result per key, no stray keys", one_result_per_key,
          sends=True),
    Check("max_batch_respected", "a send of max_batch payouts is served in full", max_batch_respected, sends=True),
    Check("thread_safe_sends", "concurrent sends through one instance each get their own results",
          thread_safe_sends, sends=True),
    Check("one_result_per_key_when_provider_repeats", "a provider answering twice still gives one result per key",
          one_result_per_key_when_provider_repeats, sends=True, faults=True),
    Check("resend_never_pays_twice", "the same key sent again is never paid twice (counted on the provider)",
          resend_never_pays_twice, sends=True, faults=True),
    Check("resend_after_lost_answer_never_pays_twice", "a resend after a lost answer is not paid twice",
          resend_after_lost_answer_never_pays_twice, sends=True, faults=True),
    Check("timeout_after_sending_is_unknown", "a timeout after the request was sent is UnknownOutcomeError",
          timeout_after_sending_is_unknown, sends=True, faults=True),
    Check("refusal_before_accept_is_retryable", "a refusal before anything was accepted is RetryableRailError",
          refusal_before_accept_is_retryable, sends=True, faults=True),
    Check("no_answer_is_unknown_or_retry", "no answer at all is never taken as accepted or refused",
          no_answer_is_unknown_or_retry, sends=True, faults=True),
    Check("batch_refusal_is_permanent", "a refusal for good is PermanentRailError or REJECTED",
          batch_refusal_is_permanent, sends=True, faults=True),
    Check("rejections_answered_per_payout", "refused payouts are REJECTED with a reason",
          rejections_answered_per_payout, sends=True, faults=True),
    Check("hung_provider_is_bounded", "a provider that does not answer is given up on before timeout_seconds",
          hung_provider_is_bounded, sends=True, faults=True),
    Check("lookup_finds_accepted_payment", "lookup finds a payout whose answer was lost",
          lookup_finds_accepted_payment, sends=True, faults=True),
    Check("lookup_raises_when_it_cannot_tell", "a lookup the provider cannot answer raises, never answers None",
          lookup_raises_when_it_cannot_tell, sends=True, faults=True),
    Check("lookup_raises_when_unreachable", "a lookup that cannot reach the provider raises, never answers None",
          lookup_raises_when_unreachable, sends=True, faults=True),
    Check("lookup_raises_on_timeout", "a lookup that times out raises, never answers None",
          lookup_raises_on_timeout, sends=True, faults=True),
    Check("error_after_accept_is_unknown", "a server error after the request was sent is UnknownOutcomeError",
          error_after_accept_is_unknown, sends=True, faults=True),
)
"""The rail contract, in the order it is run."""
