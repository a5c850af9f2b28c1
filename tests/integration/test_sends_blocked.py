"""Failing closed on blocked sends, on SQLite and PostgreSQL: while a ``payhub_payouts_blocked`` hook gives a reason
(or raises), no payout is claimed or sent, ``/readyz`` is not ready with the reason, the gauge is 1 and the reason
is logged once per reminder period; when the hook answers None again, the due payouts go out."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from payhub import metrics
from payhub.api import SourceRecord, hookimpl
from payhub.testing import FakeRail, FakeSource, Harness
from payhub.testing.pytest_plugin import HarnessFactory

SETTINGS: dict[str, Any] = {
    "programs": {"full": {"calculator": "percentage", "percent": "100"}},
    "routing": {"default_rail": "bank"},
}
PAYEES = [{"id": "p1", "name": "Partner One", "country": "DE"}, {"id": "p2", "name": "Partner Two", "country": "FR"}]
STALE = "list ofac_sdn published 2026-10-01 is 67 days old (max_list_age_days 30)"


class Gate:
    """A hook plugin blocking sends while ``reason`` is set; raises ``error`` when that is set."""

    def __init__(self, reason: str | None = None, error: Exception | None = None) -> None:
        self.reason = reason
        self.error = error
        self.asked = 0

    @hookimpl
    def payhub_payouts_blocked(self) -> str | None:
        self.asked += 1
        if self.error is not None:
            raise self.error
        return self.reason


def deal(object_id: str, payee: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-01-15T10:00:00Z", payee, "100.00", "EUR")


def world(payhub_harness: HarnessFactory, gate: Gate) -> tuple[Harness, FakeRail]:
    source, rail = FakeSource("crm"), FakeRail("bank")
    harness = payhub_harness(SETTINGS, {"sources.crm": source, "rails.bank": rail, "hooks.gate": gate},
                             payees=PAYEES)
    source.push(deal("006A", "p1"), deal("006B", "p2"))
    return harness, rail


def ready(harness: Harness) -> tuple[int, dict[str, tuple[bool, str]]]:
    with harness.http_client() as http:
        answer = http.get("/readyz")
    return answer.status_code, {c["name"]: (c["ok"], c["detail"]) for c in answer.json()["checks"]}


def test_a_reason_stops_every_send_until_it_clears(payhub_harness: HarnessFactory,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate(STALE)
    harness, rail = world(payhub_harness, gate)
    with caplog.at_level(logging.WARNING, logger="payhub.pipeline.blocked"):
        harness.run_until_idle(skip_waits=True)
        harness.disburse()
        harness.disburse()
    assert [p.status for p in harness.payouts()] == ["scheduled", "scheduled"]  # still due, never claimed
    assert [p.attempts for p in harness.payouts()] == [0, 0]
    assert rail.calls == []
    assert harness.attempts() == []
    assert gate.asked >= 3
    assert metrics.PAYOUTS_BLOCKED._value.get() == 1
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in logged] == [  # once per reminder period, however many rounds
        f"no payout is sent: gate: {STALE}; they stay due and are sent once this clears (logged again every 60s "
        "while it lasts)"]
    status, checks = ready(harness)
    assert (status, checks["sends"]) == (503, (False, f"no payout is sent while blocked: gate: {STALE}"))

    gate.reason = None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="payhub.pipeline.blocked"):
        harness.run_until_idle(skip_waits=True)
    assert [p.status for p in harness.payouts()] == ["sent", "sent"]
    assert sorted(len(call) for call in rail.calls) == [2]
    assert [r.getMessage() for r in caplog.records] == ["sends are no longer blocked: due payouts are sent again"]
    assert metrics.PAYOUTS_BLOCKED._value.get() == 0
    status, checks = ready(harness)
    assert (status, checks["sends"]) == (200, (True, "no hook blocks sending"))
    harness.assert_exactly_once()


def test_a_blocked_hook_that_raises_blocks(payhub_harness: HarnessFactory) -> None:
    gate = Gate(error=ConnectionError("list store unreachable"))
    harness, rail = world(payhub_harness, gate)
    harness.run_until_idle(skip_waits=True)
    assert [p.status for p in harness.payouts()] == ["scheduled", "scheduled"]
    assert rail.calls == []
    status, checks = ready(harness)
    assert (status, checks["sends"]) == (503, (
        False, "no payout is sent while blocked: gate: its check failed: ConnectionError: list store unreachable"))

    gate.error = None
    harness.run_until_idle(skip_waits=True)
    assert [p.status for p in harness.payouts()] == ["sent", "sent"]


def test_any_answer_but_none_blocks(payhub_harness: HarnessFactory) -> None:
    gate = Gate("   ")
    harness, rail = world(payhub_harness, gate)
    harness.run_until_idle(skip_waits=True)
    assert rail.calls == []
    assert ready(harness)[1]["sends"] == (False, "no payout is sent while blocked: gate: blocked (no reason given)")
    gate.reason = 0  # type: ignore[assignment]  # a plugin bug: not text
    assert ready(harness)[1]["sends"] == (False, "no payout is sent while blocked: gate: answered int, not a reason "
                                                 "or None")
