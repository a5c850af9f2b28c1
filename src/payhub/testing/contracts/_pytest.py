"""Running a check as a pytest test: a violation fails the test with its message, a skip skips it."""

from __future__ import annotations

from typing import TypeVar

import pytest

from payhub.testing.contracts.checks import Check, run_check

S = TypeVar("S")


def run_in_pytest(check: Check[S], subject: S) -> None:
    result = run_check(check, subject)
    if result.status == "skipped":
        pytest.skip(result.detail)
    if result.status == "failed":
        pytest.fail(f"{check.name}: {result.detail}", pytrace=False)
