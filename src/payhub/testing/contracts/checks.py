"""The machinery shared by the contract suites and ``payhub plugins check``: a check is a named function over a
subject (the plugin under test and what drives it) that returns when the plugin keeps the contract, raises
:class:`ContractViolation` saying what the plugin did wrong, or :class:`CheckSkipped` saying why it cannot run.

The pytest suites (``RailContract`` …) and the command line run the same :class:`Check` objects, so each rule is
written once. Nothing here imports pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

__all__ = ["Check", "CheckResult", "CheckSkipped", "ContractViolation", "Status", "run_check", "run_checks"]

S = TypeVar("S")
Status = Literal["passed", "failed", "skipped"]


class ContractViolation(AssertionError):
    """The plugin broke a rule of its contract; the message says what it did and why that matters."""


class CheckSkipped(Exception):
    """A check cannot run against this plugin or set-up (no lookup, no fault controller, sends not allowed)."""


@dataclass(frozen=True, slots=True)
class Check(Generic[S]):
    """One rule of a contract.

    ``name`` is stable (the pytest test is ``test_<name>``, the command line prints it). ``sends``: the check moves
    money through the plugin (a rail's ``send``), so ``payhub plugins check`` runs it only with ``--send``.
    ``faults``: it needs a fault controller (only a test provider has one).
    """

    name: str
    summary: str
    run: Callable[[S], None]
    sends: bool = False
    faults: bool = False


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What running one check gave: ``status`` with the violation or skip reason, and how long it took."""

    name: str
    status: Status
    detail: str = ""
    seconds: float = 0.0


def run_check(check: Check[S], subject: S) -> CheckResult:
    """Run ``check``; a violation or skip becomes the result, any other exception a failure naming it."""
    started = time.monotonic()
    try:
        check.run(subject)
    except ContractViolation as exc:
        return CheckResult(check.name, "failed", str(exc), time.monotonic() - started)
    except CheckSkipped as exc:
        return CheckResult(check.name, "skipped", str(exc), time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - a plugin raising where the contract does not allow it is a failure
        return CheckResult(check.name, "failed", f"raised {type(exc).__name__}: {exc}", time.monotonic() - started)
    return CheckResult(check.name, "passed", "", time.monotonic() - started)


def run_checks(checks: Iterable[Check[S]], subject: S, *, skip: Callable[[Check[S]], str | None] | None = None
               ) -> list[CheckResult]:
    """Run each check in order; ``skip(check)`` may return a reason not to run it."""
    results = []
    for check in checks:
        reason = skip(check) if skip is not None else None
        results.append(CheckResult(check.name, "skipped", reason) if reason else run_check(check, subject))
    return results


def by_name(checks: Sequence[Check[Any]]) -> dict[str, Check[Any]]:
    """The checks keyed by name (names are unique within a contract)."""
    named = {check.name: check for check in checks}
    if len(named) != len(checks):
        raise ValueError("two checks share a name")
    return named
