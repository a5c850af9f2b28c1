"""``payhub_payout_settled`` is called once the change is committed, for every payout the rail accepted or paid, with
``accepted`` or ``paid`` and the provider's reference: at the send, and again when a rail that reports status says an
accepted payout was paid. Never for a payout that did not pay, nor for an operator's ``payouts resolve``. The hook and
the rail are real plugins, loaded by entry point from the settings; the hook reads the payout's status from the
database through its own connection, so it sees only what was committed."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from test_disburse import BASE, drain, payout, schedule

from payhub.api import UnknownOutcomeError
from payhub.pipeline import payout_actions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.testing import write_distribution

MODULE = '''
import json
import sqlalchemy as sa
from payhub.api import ConfigPath, Outcome, PluginSettings, Rail, RailCapabilities, RailResult, hookimpl


class StatusRail(Rail):
    """Pays payees named in ``paid_now`` at once, refuses those in ``refused``, accepts the others; a later lookup
    answers PAID for the keys the test put in ``paid``."""

    def __init__(self, name, settings):
        super().__init__(name, settings)
        self.refs, self.paid, self.paid_now, self.refused = {}, set(), set(), set()

    @property
    def capabilities(self):
        return RailCapabilities(lookup=True, reports_status=True)

    def send(self, instructions):
        results = []
        for i in instructions:
            if i.payee.id in self.refused:
                results.append(RailResult(i.idempotency_key, Outcome.REJECTED, reason="account closed"))
                continue
            self.refs[i.idempotency_key] = f"st-{i.payout_id}"
            outcome = Outcome.PAID if i.payee.id in self.paid_now else Outcome.ACCEPTED
            results.append(RailResult(i.idempotency_key, outcome, self.refs[i.idempotency_key]))
        return results

    def lookup(self, keys):
        return {k: RailResult(k, Outcome.PAID if k in self.paid else Outcome.ACCEPTED, self.refs[k])
                if k in self.refs else None for k in keys}


class SettledLogSettings(PluginSettings):
    path: ConfigPath
    database: str


class SettledLog:
    """Appends each payhub_payout_settled call, with the payout's committed status, to a JSON-lines file."""
    settings_model = SettledLogSettings

    def __init__(self, settings):
        self.path = settings.path
        self.engine = sa.create_engine(settings.database, poolclass=sa.pool.NullPool)

    @hookimpl
    def payhub_payout_settled(self, payout, outcome, provider_ref):
        with self.engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM payouts WHERE id = :id"),
                                  {"id": payout.payout_id}).scalar()
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"payout": payout.payout_id, "key": payout.idempotency_key, "outcome": outcome,
                                 "provider_ref": provider_ref, "status": status}) + "\\n")
'''

RAILS = """
[routing]
default_rail = "st"
[rails.st]
plugin = "status_rail"
retry_initial_seconds = 0
retry_max_seconds = 0
settle_interval_seconds = 0.01
[hooks.settled_log]
path = "settled.jsonl"
database = "{url}"
"""


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    site = write_distribution(tmp_path / "site", "payhub-settled-log",
                              "[payhub.rails]\nstatus_rail = payhub_settled_log:StatusRail\n"
                              "[payhub.hooks]\nsettled_log = payhub_settled_log:SettledLog\n",
                              modules={"payhub_settled_log": MODULE})
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "payees.csv").write_text("id,name,country\np1,One,DE\np2,Two,FR\np3,Three,IT\np4,Four,DE\n")
    body = BASE.replace('default_rail = "r"', "").replace("[routing]", "")
    rt: Runtime = make_runtime(body + textwrap.dedent(RAILS).replace("{url}", db_url))
    assert [(s.section, s.state) for s in rt.plugins.statuses if s.state != "loaded"] == []
    return rt


def calls(rt: Runtime) -> list[dict[str, Any]]:
    path = rt.settings.base_dir / "settled.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_accepted_and_paid_payouts_call_payout_settled_after_commit(world: Runtime) -> None:
    rt = world
    rail: Any = rt.plugins.rails["st"]
    rail.paid_now.add("p2")
    rail.refused.add("p3")
    p1, p2, p3 = schedule(rt, ("p1", "100"), ("p2", "200"), ("p3", "300"))
    drain(rt, "st")
    assert [payout(rt, p.id).status for p in (p1, p2, p3)] == ["sent", "paid", "rejected"]
    expected = [
        {"payout": p1.id, "key": p1.idempotency_key, "outcome": "accepted", "provider_ref": f"st-{p1.id}",
         "status": "sent"},
        {"payout": p2.id, "key": p2.idempotency_key, "outcome": "paid", "provider_ref": f"st-{p2.id}",
         "status": "paid"},
    ]
    assert sorted(calls(rt), key=lambda c: c["payout"]) == expected

    # The rail reports the accepted payout paid: a second call, for the same payout, with ``paid``.
    rail.paid.add(p1.idempotency_key)
    time.sleep(0.05)  # past settle_interval_seconds
    assert settle_rail(rt, "st") >= 1
    assert payout(rt, p1.id).status == "paid"
    assert calls(rt)[len(expected):] == [
        {"payout": p1.id, "key": p1.idempotency_key, "outcome": "paid", "provider_ref": f"st-{p1.id}",
         "status": "paid"}]
    # Asking again changes nothing, and calls nothing.
    time.sleep(0.05)
    settle_rail(rt, "st")
    assert len(calls(rt)) == len(expected) + 1


def test_an_operators_resolve_does_not_call_payout_settled(world: Runtime) -> None:
    rt = world
    rail: Any = rt.plugins.rails["st"]
    [p4] = schedule(rt, ("p4", "40"))

    def times_out(instructions: Any) -> Any:
        raise UnknownOutcomeError("read timeout")

    rail.send = times_out
    disburse_rail(rt, "st")
    assert payout(rt, p4.id).status == "unknown"
    ops = Runtime.for_cli(rt.settings, "ops:alice")
    try:
        payout_actions.resolve(ops, p4.id, "paid", "the provider's portal shows it paid", "st-manual")
    finally:
        ops.close()
    assert payout(rt, p4.id).status == "paid"
    assert calls(rt) == []
