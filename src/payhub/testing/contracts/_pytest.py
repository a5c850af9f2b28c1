"""Running a check as a pytest test: a violation fails the test with its message, a skip skips it."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, TypeVar

import pytest

from payhub.testing.contracts.checks import Check, run_check

S = TypeVar("S")


def run_in_pytest(check: Check[S], subject: S) -> None:
    result = run_check(check, subject)
    if result.status == "skipped":
        pytest.skip(result.detail)
    if result.status == "failed":
        pytest.fail(f"{check.name}: {result.detail}", pytrace=False)


def add_check_tests(suite: type, checks: Iterable[Check[S]], fixture: str) -> None:
    """Give ``suite`` a method ``test_<name>`` per check, running it on the subject the fixture ``fixture`` makes
    (named by the check, documented by its summary)."""
    for check in checks:
        setattr(suite, f"test_{check.name}", _check_test(check, fixture))


def _check_test(check: Check[S], fixture: str) -> Any:
    def test(self: object, **fixtures: Any) -> None:
        run_in_pytest(check, fixtures[fixture])

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    test.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # pytest asks for the fixture by name
        [inspect.Parameter("self", positional), inspect.Parameter(fixture, positional)])
    test.__name__ = test.__qualname__ = f"test_{check.name}"
    test.__doc__ = check.summary
    return test
