"""Abandoned rail calls: a send that runs past the rail's timeout is logged and its payouts are unknown outcomes,
resolved by lookup; a payout of a round whose earlier call was abandoned is never handed to the rail, so it stays
due (not ``unknown``) and is sent exactly once later."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select
from test_disburse import BASE, assert_audited, attempt_rows, drain, history, make_due, payout, schedule

from payhub.api import RailResult
from payhub.audited import reached_rail
from payhub.db.schema import payouts
from payhub.guard import Guard
from payhub.pipeline.disburse import disburse_rail
from payhub.runtime import Runtime
from payhub.testing import FakeRail

pytestmark = pytest.mark.slow  # rail calls run past the rail's timeout

TIMEOUT = 0.2
LOGGER = "payhub.pipeline.disburse"


@pytest.fixture
def world(make_runtime, tmp_path: Path) -> tuple[Runtime, FakeRail]:
    """A runtime whose rail ``r`` is a FakeRail with a short call timeout and no backoff."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\n")
    rt = make_runtime(BASE + f'\n[rails.r]\nplugin = "fake"\ntimeout_seconds = {TIMEOUT}\n'
                             "retry_initial_seconds = 0\nretry_max_seconds = 0\n")
    return rt, rt.plugins.rails["r"]


def wait_returned(guard: Guard) -> None:
    """Wait until the abandoned call of ``guard`` has returned (it was released by the test)."""
    while guard.busy:
        time.sleep(0.01)


def hang_lookups(rail: FakeRail, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the rail's lookups block until the returned event is set."""
    gate = threading.Event()
    original = rail.lookup

    def lookup(keys: Sequence[str]) -> dict[str, RailResult | None]:
        gate.wait()
        return original(keys)

    monkeypatch.setattr(rail, "lookup", lookup)
    return gate


def abandon_a_send(rt: Runtime, rail: FakeRail, caplog: pytest.LogCaptureFixture) -> None:
    """One round of rail ``r`` whose only send hangs past the timeout and is abandoned; the hung call is released
    afterwards, so it returns (and is accepted) in the background."""
    rail.plan("hang")
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert disburse_rail(rt, "r") == 1
    finally:
        rail.release.set()


def test_abandoned_send_warns_with_payout_and_key(world, caplog: pytest.LogCaptureFixture) -> None:
    rt, rail = world
    [p] = schedule(rt, ("p1", "100"))
    abandon_a_send(rt, rail, caplog)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"payout {p.id} (idempotency key {p.idempotency_key}): send abandoned: rail r did not answer within "
        f"{TIMEOUT:g}s; its outcome is unknown and it is looked up on the rail by its key before any new attempt"]
    assert payout(rt, p.id).status == "unknown"


def test_a_payout_never_handed_to_the_rail_stays_due_and_is_sent_once(
        world, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    rt, rail = world
    guard = rt.guard("rail r", TIMEOUT)
    [a] = schedule(rt, ("p1", "100"))
    # Round 1: the send of A hangs past the timeout and is abandoned; A may have reached the rail.
    abandon_a_send(rt, rail, caplog)
    assert payout(rt, a.id).status == "unknown"
    assert f"payout {a.id} (idempotency key {a.idempotency_key}): send abandoned" in caplog.text
    wait_returned(guard)
    assert rail.accepted == {a.idempotency_key: 1}  # the abandoned call went through after all

    # Round 2 claims A (to look up) and B (to send). The lookup of A hangs and is abandoned, so B cannot be handed
    # to the rail in this round: B stays scheduled, with no attempt, and nothing records it as at the rail.
    [_, b] = schedule(rt, ("p2", "50"))
    make_due(rt, a.id)
    gate = hang_lookups(rail, monkeypatch)
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert disburse_rail(rt, "r") == 2
    finally:
        gate.set()
    assert payout(rt, a.id).status == "unknown"
    b_now = payout(rt, b.id)
    assert (b_now.status, b_now.attempts, b_now.next_attempt_at) == ("scheduled", 0, None)
    assert history(rt, b.id) == ["payout.created"]
    assert attempt_rows(rt, b.id) == []
    assert rail.calls == [[a.idempotency_key]]
    with rt.engine.connect() as conn:
        assert reached_rail(conn, [b.id]) == {}
    assert f"payouts {b.id} not sent in this round: an abandoned call has not returned yet" in caplog.text
    assert f"payout {b.id} " not in " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    wait_returned(guard)

    # Later rounds: B is sent once; A is resolved by lookup, never sent again.
    make_due(rt, a.id)
    drain(rt)
    assert rail.calls == [[a.idempotency_key], [b.idempotency_key]]
    assert rail.accepted == {a.idempotency_key: 1, b.idempotency_key: 1}
    assert (payout(rt, a.id).status, payout(rt, a.id).attempts) == ("sent", 1)
    assert (payout(rt, b.id).status, payout(rt, b.id).attempts) == ("sent", 1)
    assert history(rt, a.id)[-2:] == ["payout.lookup", "payout.sent"]
    assert history(rt, a.id).count("payout.sending") == 1
    assert history(rt, b.id) == ["payout.created", "payout.sending", "payout.sent"]
    with rt.engine.connect() as conn:
        assert conn.execute(select(payouts.c.status).order_by(payouts.c.id)).scalars().all() == ["sent", "sent"]
    assert_audited(rt)
