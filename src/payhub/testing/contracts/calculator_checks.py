"""The rules of the calculator contract (:class:`payhub.api.Calculator`), as checks over a
:class:`CalculatorSubject`: valid lines, deterministic, no I/O.

Deterministic means each event gives the same answer on five calls: twice from one instance, from a new instance,
a few milliseconds later, and with payhub's clock (:func:`payhub.clock.utcnow`, the one ``payhub.api`` offers) set
to two far-apart times with a :class:`~payhub.testing.ManualClock`. A calculator that reads the system clock itself
(``datetime.now()``) is caught only when its answer changes within those milliseconds: read times from the event.

No I/O is watched with a Python audit hook (:func:`sys.addaudithook`, installed once, active only inside
:func:`no_io`): opening a file, any socket call, starting a process. Each event is calculated once before the
watched run, so that modules imported lazily on the first call do not count as I/O.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from payhub.api import MAX_AMOUNT, Calculator, Event, FundMovement, History, NotEligible, RewardLine
from payhub.errors import InvalidRecord
from payhub.money import check_currency, quantize
from payhub.testing.clock import ManualClock
from payhub.testing.contracts.checks import Check, CheckSkipped, ContractViolation

__all__ = ["CALCULATOR_CHECKS", "CalculatorSubject", "EmptyHistory", "IOAttempted", "no_io"]

WATCHED = ("open", "os.system", "subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork", "shutil.", "socket.",
           "urllib.Request", "http.client.connect", "sqlite3.connect")


class IOAttempted(RuntimeError):
    """Raised inside a watched block when the code under watch tries I/O."""


class EmptyHistory:
    """A :class:`payhub.api.History` with nothing rewarded yet: every sum is 0."""

    def total_rewarded(self, program: str, payee_id: str, currency: str, since: datetime | None = None) -> Decimal:
        return Decimal(0)

    def rewarded_between(self, program: str, payee_id: str, currency: str, since: datetime,
                         until: datetime) -> Decimal:
        return Decimal(0)

    def total_volume(self, program: str, partner_id: str, currency: str, since: datetime, until: datetime,
                     returns: Any = ()) -> Decimal:
        return Decimal(0)

    def fund_balance(self, program: str, holder_id: str, unit: str, at: datetime) -> Decimal:
        return Decimal(0)

    def fund_credited(self, program: str, holder_id: str, unit: str, since: datetime, until: datetime) -> Decimal:
        return Decimal(0)


_watch = threading.local()
_installed = False
_install_lock = threading.Lock()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    seen: list[str] | None = getattr(_watch, "seen", None)
    if seen is None or not event.startswith(WATCHED):
        return
    detail = f"{event}{args[:2]!r}"
    seen.append(detail)
    _watch.seen = None  # the exception below may itself do I/O (formatting a traceback)
    try:
        raise IOAttempted(f"I/O attempted: {detail}")
    finally:
        _watch.seen = seen


@contextmanager
def no_io() -> Iterator[list[str]]:
    """Watch this thread: every I/O attempt raises :class:`IOAttempted` and is listed in the yielded list (so an
    attempt the code caught is still seen)."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed = True
    seen: list[str] = []
    _watch.seen = seen
    try:
        yield seen
    finally:
        _watch.seen = None


@dataclass
class CalculatorSubject:
    """A calculator under test: ``factory`` makes a new instance with the program's params; ``events`` are events it
    is meant for; ``history`` answers its history questions (default: nothing rewarded yet)."""

    factory: Callable[[], Calculator]
    events: Sequence[Event]
    history: History = field(default_factory=EmptyHistory)

    def need_events(self) -> Sequence[Event]:
        if not self.events:
            raise CheckSkipped("needs sample events (the suite's sample_events fixture returned none)")
        return self.events


Answer = tuple[str, Any]


def _answer(calculator: Calculator, event: Event, history: History) -> Answer:
    try:
        return ("lines", list(calculator.calculate(event, history)))
    except NotEligible as exc:
        return ("not eligible", exc.reason)
    except Exception as exc:  # noqa: BLE001 - compared like any other answer
        return ("raised", f"{type(exc).__name__}: {exc}")


CLOCK_TIMES = (datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2091, 10, 11, 12, 13, 14, tzinfo=UTC))
"""The times payhub's clock is set to for two of the calls of :func:`deterministic`."""


def _same(one: Answer, two: Answer) -> bool:
    """Equal, or written alike (a ``Decimal('NaN')`` is never equal to itself; valid_lines reports it)."""
    return one == two or repr(one) == repr(two)


def _call(calculator: Calculator, event: Event, history: History, *, pause: float = 0.0,
          at: datetime | None = None) -> Answer:
    """One call of :func:`deterministic`: after ``pause`` seconds, with payhub's clock at ``at`` when given."""
    if pause:
        time.sleep(pause)
    if at is None:
        return _answer(calculator, event, history)
    with ManualClock(at):
        return _answer(calculator, event, history)


def deterministic(subject: CalculatorSubject) -> None:
    events = subject.need_events()
    one, two = subject.factory(), subject.factory()
    calls: list[tuple[str, Calculator, dict[str, Any]]] = [
        ("a second call", one, {}), ("a new instance", two, {}), ("a call 20 ms later", one, {"pause": 0.02}),
        *((f"a call with payhub's clock at {at:%Y-%m-%d %H:%M} UTC", two, {"at": at}) for at in CLOCK_TIMES)]
    for event in events:
        first = _answer(one, event, subject.history)
        for who, calculator, how in calls:
            answer = _call(calculator, event, subject.history, **how)
            if not _same(answer, first):
                raise ContractViolation(f"event {event.key}: the first call gave {first[0]} {first[1]!r}, {who} gave "
                                        f"{answer[0]} {answer[1]!r}; the same event and history must give the same "
                                        "answer (no clock, randomness or state between calls)")


def no_io_during_calculate(subject: CalculatorSubject) -> None:
    events = subject.need_events()
    calculator = subject.factory()
    for event in events:
        _answer(calculator, event, subject.history)  # warm up: lazy imports read files once
    for event in events:
        with no_io() as seen:
            _answer(calculator, event, subject.history)
        if seen:
            raise ContractViolation(f"event {event.key}: calculate attempted I/O ({seen[0]}); a calculator reads only "
                                    "the event, its params and the history it is given")


def _line_problem(line: Any) -> str | None:
    if not isinstance(line, RewardLine | FundMovement):
        return f"{type(line).__name__} is neither payhub.api.RewardLine nor FundMovement"
    who = line.payee_id if isinstance(line, RewardLine) else line.holder_id
    if not isinstance(who, str) or not who.strip():
        return f"{line!r} names no payee"
    if not isinstance(line.amount, Decimal) or isinstance(line.amount, bool):
        return f"amount {line.amount!r} is {type(line.amount).__name__}, not Decimal"
    if not line.amount.is_finite():
        return f"amount {line.amount} is not finite"
    if abs(line.amount) > MAX_AMOUNT:
        return f"amount {line.amount} is beyond ±{MAX_AMOUNT}"
    unit = line.currency if isinstance(line, RewardLine) else line.unit
    if isinstance(line, FundMovement) and unit == "points":
        return None
    try:
        code = check_currency(unit)
    except InvalidRecord as exc:
        return f"currency {unit!r}: {exc}"
    if code != unit:
        return f"currency {unit!r} is not written as its ISO 4217 code {code!r}"
    if line.amount and not quantize(line.amount, code):
        return f"amount {line.amount} {code} rounds to 0 in the currency's minor units"
    return None


def valid_lines(subject: CalculatorSubject) -> None:
    events = subject.need_events()
    calculator = subject.factory()
    for event in events:
        kind, lines = _answer(calculator, event, subject.history)
        if kind != "lines":
            continue
        for line in lines:
            problem = _line_problem(line)
            if problem:
                raise ContractViolation(f"event {event.key}: {problem}")


CALCULATOR_CHECKS: tuple[Check[CalculatorSubject], ...] = (
    Check("valid_lines", "lines are RewardLine or FundMovement with a payee, a Decimal amount and a known currency",
          valid_lines),
    Check("deterministic", "the same event and history give the same answer on five calls", deterministic),
    Check("no_io_during_calculate", "calculate opens no file or socket and starts no process",
          no_io_during_calculate),
)
"""The calculator contract, in the order it is run."""
