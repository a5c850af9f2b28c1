"""A send that did not answer may still reach the provider: a lookup's "not found" is trusted only once
``lookup_settle_seconds`` have passed since that send started, and ``run --once`` waits for an abandoned call before
it ends, then works what is due in the same run."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from test_disburse import BASE, assert_audited, attempt_rows, drain, history, make_due, payout, schedule

from payhub.clock import utcnow
from payhub.db.schema import attempts, payouts
from payhub.pipeline.disburse import disburse_rail
from payhub.runtime import Runtime
from payhub.testing import FakeRail
from payhub.worker import Worker

pytestmark = pytest.mark.slow  # rail calls left running past their bounds are waited out

TIMEOUT = 0.2


@pytest.fixture
def setup(make_runtime, tmp_path: Path):
    """``setup(**rail_settings)``: a runtime whose rail ``r`` is a FakeRail with a short call timeout."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\np3,Three,IT\n")

    def factory(**rail_settings: Any) -> tuple[Runtime, FakeRail]:
        values = {"timeout_seconds": TIMEOUT, "retry_initial_seconds": 0, "retry_max_seconds": 0, **rail_settings}
        rail = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
        rt = make_runtime(BASE + '\n[rails.r]\nplugin = "fake"\n' + rail)
        return rt, rt.plugins.rails["r"]

    return factory


def send_started_earlier(rt: Runtime, payout_id: int, seconds: float) -> None:
    """Let ``seconds`` pass since the payout's sends started."""
    with rt.engine.begin() as conn:
        conn.execute(update(attempts).where(attempts.c.payout_id == payout_id, attempts.c.kind == "send").values(
            started_at=utcnow() - timedelta(seconds=seconds)))


def test_the_default_is_ten_times_the_call_timeout(setup) -> None:
    rt, _rail = setup()
    assert rt.settings.rails["r"].lookup_settle_seconds is None
    assert rt.settings.rails["r"].in_flight_seconds == 10 * TIMEOUT


def test_not_found_right_after_a_send_that_timed_out_is_looked_up_again_not_sent(setup) -> None:
    rt, rail = setup(lookup_settle_seconds=600)
    [p] = schedule(rt, ("p1", "100"))
    key = p.idempotency_key
    rail.plan("timeout_before_accept")
    assert disburse_rail(rt, "r") == 1
    assert payout(rt, p.id).status == "unknown"
    before = utcnow()
    assert disburse_rail(rt, "r") == 1  # the lookup answers "not found": too soon to trust
    row = payout(rt, p.id)
    assert (row.status, row.attempts) == ("unknown", 1)
    assert before + timedelta(seconds=590) <= row.next_attempt_at <= utcnow() + timedelta(seconds=600)
    assert row.reason.startswith("not found by the rail yet, but its last send may still reach it")
    assert rail.calls == [[key]]
    assert disburse_rail(rt, "r") == 0  # not due again before the send has settled
    assert attempt_rows(rt, p.id) == [("send", 1, "unknown"), ("lookup", 1, "not_found")]
    assert history(rt, p.id) == ["payout.created", "payout.sending", "payout.unknown", "payout.lookup"]
    # Once the send can no longer be on its way, "not found" means never received: sent again with the same key.
    send_started_earlier(rt, p.id, 601)
    make_due(rt, p.id)
    assert drain(rt) == 2
    assert rail.calls == [[key], [key]]
    assert rail.accepted == {key: 1}
    assert (payout(rt, p.id).status, payout(rt, p.id).attempts) == ("sent", 2)
    assert attempt_rows(rt, p.id)[-2:] == [("lookup", 1, "not_found"), ("send", 2, "accepted")]
    assert_audited(rt)


def test_not_found_right_after_a_crash_mid_send_is_looked_up_again_not_sent(setup) -> None:
    rt, rail = setup(lookup_settle_seconds=600)
    [p] = schedule(rt, ("p1", "100"))
    with rt.transaction() as tx:  # the attempt was committed, then the process died during the call
        tx.conn.execute(update(payouts).where(payouts.c.id == p.id).values(status="sending", attempts=1))
        tx.conn.execute(attempts.insert().values(payout_id=p.id, kind="send", number=1, started_at=utcnow()))
        tx.audit("payout.sending", "payout", p.id, {"attempt": 1, "key": p.idempotency_key})
    assert disburse_rail(rt, "r") == 1
    assert (payout(rt, p.id).status, payout(rt, p.id).attempts) == ("unknown", 1)
    assert rail.calls == []
    send_started_earlier(rt, p.id, 601)
    make_due(rt, p.id)
    assert drain(rt) == 2
    assert rail.accepted == {p.idempotency_key: 1}
    assert payout(rt, p.id).status == "sent"
    assert_audited(rt)


def test_a_restart_does_not_send_again_while_the_abandoned_send_is_on_its_way(setup) -> None:
    """Run 1 abandons a send that reaches the provider late and ends; run 2 (a new process, its call guard free)
    looks the payout up before it arrived. Its "not found" must not lead to a second send."""
    rt, rail = setup()  # the default lookup_settle_seconds
    [p] = schedule(rt, ("p1", "100"))
    key = p.idempotency_key
    rail.plan("hang")
    try:
        assert disburse_rail(rt, "r") == 1
        assert payout(rt, p.id).status == "unknown"
        second = Runtime(rt.settings, plugins=rt.plugins)  # the next run, with the same provider
        try:
            for _ in range(3):
                make_due(second, p.id)
                disburse_rail(second, "r")
        finally:
            second.engine.dispose()
        assert rail.calls == [[key]]  # looked up, never sent again
        assert payout(rt, p.id).status == "unknown"
    finally:
        rail.release.set()  # the first send reaches the provider now
    while rt.guard("rail r", TIMEOUT).busy:
        rt.guard("rail r", TIMEOUT).wait(5)
    make_due(rt, p.id)
    drain(rt)
    assert rail.accepted == {key: 1}
    assert rail.calls == [[key]]
    assert payout(rt, p.id).status == "sent"
    assert_audited(rt)


def test_run_once_waits_for_the_abandoned_call_then_sends_what_is_due(setup, caplog) -> None:
    rt, rail = setup(max_batch=1)
    first, second, third = schedule(rt, ("p1", "10"), ("p2", "20"), ("p3", "30"))
    rail.plan("hang")
    timer = threading.Timer(1.0, rail.release.set)  # the provider answers late, well within the wait
    timer.start()
    worker = Worker(rt)
    worker.start()
    try:
        with caplog.at_level(logging.WARNING, logger="payhub.worker"):
            summary = worker.run_once()
    finally:
        worker.stop()
        rail.release.set()
        timer.cancel()
    keys = [p.idempotency_key for p in (first, second, third)]
    assert rail.accepted == dict.fromkeys(keys, 1)
    assert rail.calls == [[k] for k in keys]
    assert summary.running_calls == {}
    assert [r.getMessage() for r in caplog.records if r.name == "payhub.worker"] == [
        f"rail r: waiting up to 2s for its abandoned call (send of payouts {first.id}) to return before working its "
        "payouts again"]
    assert [payout(rt, p.id).status for p in (first, second, third)] == ["sent", "sent", "sent"]
    assert summary.counts["disbursed"] >= 3
    assert_audited(rt)


def test_run_once_reports_a_call_still_running_past_its_bound(setup, caplog) -> None:
    rt, rail = setup(lookup_settle_seconds=0.5)
    [p] = schedule(rt, ("p1", "10"))
    rail.plan("hang")
    worker = Worker(rt)
    worker.start()
    try:
        with caplog.at_level(logging.WARNING, logger="payhub.worker"):
            summary = worker.run_once()
    finally:
        worker.stop()
        rail.release.set()
    assert summary.running_calls == {"r": f"send of payouts {p.id}"}
    assert f"rail r: its abandoned call (send of payouts {p.id}) is still running after" in caplog.text
    assert payout(rt, p.id).status == "unknown"
    assert rail.calls == [[p.idempotency_key]]


def test_run_once_ends_when_every_lookup_is_too_slow(setup, monkeypatch) -> None:
    """Every call of this provider outlasts the timeout: after the abandoned send has returned, its lookup is
    abandoned too; the run ends (no endless waiting) with the payout unknown and nothing sent twice."""
    rt, rail = setup()
    [p] = schedule(rt, ("p1", "10"))
    rail.plan("hang")
    original = rail.lookup

    def slow_lookup(keys: Any) -> Any:
        threading.Event().wait(3 * TIMEOUT)
        return original(keys)

    monkeypatch.setattr(rail, "lookup", slow_lookup)
    timer = threading.Timer(3 * TIMEOUT, rail.release.set)
    timer.start()
    worker = Worker(rt)
    worker.start()
    try:
        summary = worker.run_once()
    finally:
        worker.stop()
        rail.release.set()
        timer.cancel()
    assert summary.running_calls == {}
    assert rail.calls == [[p.idempotency_key]]
    assert rail.accepted == {p.idempotency_key: 1}
    assert payout(rt, p.id).status == "unknown"
