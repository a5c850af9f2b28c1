"""Operator decisions on rewards (approve, hold, release, cancel), on SQLite and PostgreSQL.

Rewards are put into the state each test needs by inserting their event, program version, calculation and (for
scheduled ones) payout rows directly, as the calculation and scheduling stages would have written them. Approvals
are always given through :func:`reward_actions.approve`, as an operator would.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from sqlalchemy import bindparam, func, select, text

from payhub.api import SourceRecord
from payhub.audit import Entry, verify
from payhub.cli import output
from payhub.clock import utcnow
from payhub.db.schema import (
    approvals,
    audit_log,
    calculations,
    events,
    payout_items,
    payouts,
    program_versions,
    rewards,
)
from payhub.errors import PayhubError
from payhub.money import from_minor
from payhub.pipeline import reward_actions
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll
from payhub.runtime import Runtime
from payhub.store.audit import AuditWriter


class World:
    """A migrated database with rewards seeded in chosen states, and runtimes acting as named operators."""

    def __init__(self, rt: Runtime, config: Path) -> None:
        self.rt = rt
        self.config = config
        self._actors: dict[str, Runtime] = {}
        self._n = 0
        now = utcnow()
        with rt.engine.begin() as conn:
            self.version = conn.execute(program_versions.insert().returning(program_versions.c.id).values(
                program="spiff", version=1, calculator="flat", params="{}", fingerprint="f" * 64,
                created_at=now)).scalar_one()

    def as_(self, actor: str) -> Runtime:
        """A CLI-like runtime whose audit entries are signed ``actor``."""
        if actor not in self._actors:
            self._actors[actor] = Runtime.for_cli(self.rt.settings, actor)
        return self._actors[actor]

    def close(self) -> None:
        for rt in self._actors.values():
            rt.close()

    def reward(self, status: str, *, needed: int = 0, hold_code: str | None = None, hold_reason: str | None = None,
               budget_key: str | None = None, amount_minor: int = 500_000, payout_status: str | None = None) -> int:
        """Insert one reward (with the event and calculation behind it); return its id."""
        self._n += 1
        now = utcnow()
        with self.rt.engine.begin() as conn:
            event_id = conn.execute(events.insert().returning(events.c.id).values(
                key=f"crm:Opportunity:{self._n}:won", source="crm", object_type="Opportunity",
                object_id=str(self._n), transition="won", event_type="deal_won", payee_id="p1", amount="50000.00",
                currency="EUR", status="calculated", ingested_at=now, calculated_at=now)).scalar_one()
            conn.execute(calculations.insert().values(event_id=event_id, program="spiff",
                                                      program_version_id=self.version, status="rewarded",
                                                      calculated_at=now))
            payout_id = None
            if status in ("scheduled", "sent", "paid"):
                payout_id = conn.execute(payouts.insert().returning(payouts.c.id).values(
                    idempotency_key=f"ph-test-{self._n}", payee_id="p1", rail="fake", route_reason="default rail",
                    currency="EUR", amount_minor=amount_minor, item_count=1, status=payout_status or status,
                    attempts=0, created_at=now, updated_at=now)).scalar_one()
            reward_id = conn.execute(rewards.insert().returning(rewards.c.id).values(
                event_id=event_id, program="spiff", payee_id="p1", amount_minor=amount_minor, currency="EUR",
                description="SPIFF", status=status, hold_code=hold_code, hold_reason=hold_reason,
                approvals_needed=needed, budget_key=budget_key, payout_id=payout_id, created_at=now,
                updated_at=now)).scalar_one()
            if payout_id is not None:
                conn.execute(payout_items.insert().values(payout_id=payout_id, reward_id=reward_id,
                                                          amount_minor=amount_minor))
            # The entries the calculation and scheduling stages would have written, so `audit verify` finds the rows
            # as audited (World.audit leaves them out: it lists the operators' entries).
            amount = str(from_minor(amount_minor, "EUR"))
            seeded = [Entry("reward.calculated", "reward", reward_id, {
                "payee": "p1", "amount": amount, "currency": "EUR",
                "status": status if payout_id is None else "pending"})]
            if payout_id is not None:
                seeded += [Entry("payout.created", "payout", payout_id, {
                    "key": f"ph-test-{self._n}", "payee": "p1", "rail": "fake", "currency": "EUR", "amount": amount,
                    "rewards": 1}), Entry("reward.scheduled", "reward", reward_id, {"payout": payout_id})]
                if (payout_status or status) != "scheduled":
                    seeded.append(Entry(f"payout.{payout_status or status}", "payout", payout_id))
            AuditWriter("payhub", "seed").append(conn, seeded)
        return int(reward_id)

    def state(self, reward_id: int) -> tuple[str, str | None, str | None]:
        with self.rt.engine.connect() as conn:
            row = conn.execute(select(rewards.c.status, rewards.c.hold_code, rewards.c.hold_reason)
                               .where(rewards.c.id == reward_id)).one()
        return row.status, row.hold_code, row.hold_reason

    def approvers(self, reward_id: int) -> list[str]:
        with self.rt.engine.connect() as conn:
            return sorted(conn.execute(select(approvals.c.approver)
                                       .where(approvals.c.reward_id == reward_id)).scalars())

    def snapshot(self) -> tuple[Any, ...]:
        """Everything an operator action may change: rewards, approvals, the audit log."""
        with self.rt.engine.connect() as conn:
            return (conn.execute(select(rewards).order_by(rewards.c.id)).all(),
                    conn.execute(select(approvals).order_by(approvals.c.reward_id, approvals.c.approver)).all(),
                    conn.execute(select(func.count()).select_from(audit_log)).scalar_one())

    def audit(self, reward_id: int | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(actor, action, outcome, detail) of the reward entries, oldest first."""
        query = select(audit_log).where(audit_log.c.subject_type == "reward", audit_log.c.origin != "seed"
                                        ).order_by(audit_log.c.seq)
        if reward_id is not None:
            query = query.where(audit_log.c.subject_id == str(reward_id))
        with self.rt.engine.connect() as conn:
            return [(r.actor, r.action, r.outcome, json.loads(r.detail)) for r in conn.execute(query)]

    def verified(self) -> bool:
        with self.rt.engine.connect() as conn:
            return verify(conn).ok


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Iterator[World]:
    w = World(make_runtime(""), tmp_path / "payhub.toml")
    yield w
    w.close()


def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(PayhubError) as info:
        fn(*args)
    return str(info.value)


# ------------------------------------------------------------------------------------------------- approve


def test_a_single_approval_makes_the_reward_pending(world: World) -> None:
    reward = world.reward("awaiting_approval", needed=1)
    [result] = reward_actions.approve(world.as_("finance:ann"), [reward], note="checked the contract")
    assert (result.approvals, result.needed, result.pending) == (1, 1, True)
    assert world.state(reward) == ("pending", None, None)
    assert world.approvers(reward) == ["finance:ann"]
    assert world.audit(reward) == [("finance:ann", "reward.approved", "ok", {
        "approver": "finance:ann", "approvals": 1, "needed": 1, "pending": True, "note": "checked the contract"})]
    assert world.verified()


def test_dual_approval_needs_two_different_approvers(world: World) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    [first] = reward_actions.approve(world.as_("finance:ann"), [reward])
    assert (first.approvals, first.needed, first.pending) == (1, 2, False)
    assert world.state(reward)[0] == "awaiting_approval"

    before = world.snapshot()
    message = refused(reward_actions.approve, world.as_("finance:ann"), [reward])
    assert message == (f"reward {reward} is already approved by finance:ann; "
                       "it needs a different second approver")
    after = world.snapshot()
    assert after[:2] == before[:2] and after[2] == before[2] + 1  # nothing changed; the refusal is audited
    assert world.audit(reward)[-1] == ("finance:ann", "reward.approval_refused", "refused", {
        "approver": "finance:ann", "reason": message})

    [second] = reward_actions.approve(world.as_("finance:bob"), [reward])
    assert (second.approvals, second.needed, second.pending) == (2, 2, True)
    assert world.state(reward)[0] == "pending"
    assert world.approvers(reward) == ["finance:ann", "finance:bob"]
    assert world.audit(reward) == [
        ("finance:ann", "reward.approved", "ok", {"approver": "finance:ann", "approvals": 1, "needed": 2,
                                                 "pending": False}),
        ("finance:ann", "reward.approval_refused", "refused", {"approver": "finance:ann", "reason": (
            f"reward {reward} is already approved by finance:ann; it needs a different second approver")}),
        ("finance:bob", "reward.approved", "ok", {"approver": "finance:bob", "approvals": 2, "needed": 2,
                                                 "pending": True}),
    ]
    # Once pending, it takes no more approvals.
    message = refused(reward_actions.approve, world.as_("finance:cy"), [reward])
    assert message == f"reward {reward} is pending, not awaiting approval"
    assert world.verified()


def test_approving_several_rewards_at_once(world: World) -> None:
    one, two = world.reward("awaiting_approval", needed=1), world.reward("awaiting_approval", needed=2)
    results = reward_actions.approve(world.as_("finance:ann"), [one, two, one])  # a repeated id counts once
    assert [(r.reward_id, r.approvals, r.needed, r.pending) for r in results] == [(one, 1, 1, True),
                                                                                   (two, 1, 2, False)]
    assert world.state(one)[0] == "pending" and world.state(two)[0] == "awaiting_approval"


# ------------------------------------------------------------------------------------------- hold and release


def test_hold_then_release_returns_to_awaiting_approval_while_approvals_are_missing(world: World) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    reward_actions.approve(world.as_("finance:ann"), [reward])

    assert reward_actions.hold(world.as_("ops:dan"), [reward], "partner under review") == 1
    assert world.state(reward) == ("held", "operator", "partner under review")
    message = refused(reward_actions.approve, world.as_("finance:bob"), [reward])
    assert message == (f"reward {reward} is held (operator: partner under review), not awaiting approval; "
                       "release it first")
    message = refused(reward_actions.hold, world.as_("ops:dan"), [reward], "again")
    assert message == f"reward {reward} is already held by an operator (partner under review)"

    assert reward_actions.release(world.as_("ops:dan"), [reward], "review done") == {reward: "awaiting_approval"}
    assert world.state(reward) == ("awaiting_approval", None, None)
    assert world.approvers(reward) == ["finance:ann"]  # the approval given before the hold still counts

    [result] = reward_actions.approve(world.as_("finance:bob"), [reward])
    assert result.pending and world.state(reward)[0] == "pending"
    assert [(a, action, outcome) for a, action, outcome, _ in world.audit(reward)] == [
        ("finance:ann", "reward.approved", "ok"), ("ops:dan", "reward.held", "held"),
        ("finance:bob", "reward.approval_refused", "refused"),
        ("ops:dan", "reward.released", "ok"), ("finance:bob", "reward.approved", "ok")]
    details = [d for _, _, _, d in world.audit(reward) if d.get("approver") != "finance:bob"]
    assert details[1] == {"code": "operator", "reason": "partner under review", "from": "awaiting_approval"}
    assert details[2] == {"reason": "review done", "hold_code": "operator", "hold_reason": "partner under review",
                          "to": "awaiting_approval"}
    assert world.verified()


def test_hold_and_release_of_approved_and_carried_rewards(world: World) -> None:
    approved = world.reward("awaiting_approval", needed=1)
    reward_actions.approve(world.as_("finance:ann"), [approved])
    plain, carried = world.reward("pending"), world.reward("carried")

    assert reward_actions.hold(world.as_("ops:dan"), [approved, plain, carried], "fraud check") == 3
    assert {world.state(i) for i in (approved, plain, carried)} == {("held", "operator", "fraud check")}
    assert [world.audit(i)[-1][3]["from"] for i in (approved, plain, carried)] == ["pending", "pending", "carried"]

    moved = reward_actions.release(world.as_("ops:dan"), [approved, plain, carried], "cleared")
    assert moved == {approved: "pending", plain: "pending", carried: "pending"}


def test_an_operator_hold_replaces_another_hold_and_records_it(world: World) -> None:
    reward = world.reward("held", hold_code="payout_failed", hold_reason="payout 7 rejected: account closed")
    reward_actions.hold(world.as_("ops:dan"), [reward], "waiting for new bank details")
    assert world.state(reward) == ("held", "operator", "waiting for new bank details")
    assert world.audit(reward) == [("ops:dan", "reward.held", "held", {
        "code": "operator", "reason": "waiting for new bank details", "from": "held",
        "replaces": {"code": "payout_failed", "reason": "payout 7 rejected: account closed"}})]


def test_a_budget_hold_is_not_replaced_by_an_operator_hold(world: World) -> None:
    # Held for its budget, a reward does not use the budget; an operator hold would silently make it count.
    reward = world.reward("held", hold_code="budget", hold_reason="budget spiff:all would be overdrawn",
                          budget_key="spiff:all")
    before = world.snapshot()
    assert refused(reward_actions.hold, world.as_("ops:dan"), [reward], "x") == (
        f"reward {reward} is already held for its budget (budget spiff:all would be overdrawn); release it to "
        "override the budget, or cancel it")
    assert world.snapshot() == before


def test_releasing_a_budget_hold_is_an_audited_override(world: World) -> None:
    over = world.reward("held", hold_code="budget", hold_reason="budget spiff:2026-Q4 exhausted",
                        budget_key="spiff:2026-Q4")
    big = world.reward("held", needed=1, hold_code="budget", hold_reason="budget spiff:2026-Q4 exhausted",
                       budget_key="spiff:2026-Q4")
    moved = reward_actions.release(world.as_("finance:ann"), [over, big], "CFO approved the overspend")
    assert moved == {over: "pending", big: "awaiting_approval"}
    assert world.audit(over) == [("finance:ann", "reward.released", "override", {
        "reason": "CFO approved the overspend", "hold_code": "budget",
        "hold_reason": "budget spiff:2026-Q4 exhausted", "budget_key": "spiff:2026-Q4", "to": "pending"})]
    assert world.audit(big)[0][3]["to"] == "awaiting_approval"
    assert world.verified()


def test_release_and_hold_refuse_rewards_in_other_states(world: World) -> None:
    pending, scheduled = world.reward("pending"), world.reward("scheduled")
    with world.rt.engine.connect() as conn:
        payout = conn.execute(select(rewards.c.payout_id).where(rewards.c.id == scheduled)).scalar_one()
    before = world.snapshot()
    assert refused(reward_actions.release, world.as_("ops:dan"), [pending], "x") == \
        f"reward {pending} is pending, not held"
    assert refused(reward_actions.hold, world.as_("ops:dan"), [scheduled], "x") == \
        f"reward {scheduled} is scheduled in payout {payout}, not holdable; cancel the payout first"
    for blank in ("  ", "\u200b\u200b\u202e", "\ufeff \u2060"):
        assert refused(reward_actions.hold, world.as_("ops:dan"), [pending], blank) == \
            "a reason is required (it is recorded in the audit log)"
    assert world.snapshot() == before


# --------------------------------------------------------------------------------------------------- cancel


def test_cancel_rewards_not_yet_scheduled(world: World) -> None:
    ids = {status: world.reward(status, needed=1 if status == "awaiting_approval" else 0,
                                hold_code="budget" if status == "held" else None, budget_key="spiff:2026-Q4")
           for status in ("pending", "awaiting_approval", "held", "carried")}
    assert reward_actions.cancel(world.as_("finance:ann"), list(ids.values()), "deal reversed") == 4
    assert {world.state(i)[0] for i in ids.values()} == {"cancelled"}
    assert world.audit(ids["held"]) == [("finance:ann", "reward.cancelled", "cancelled", {
        "reason": "deal reversed", "from": "held", "hold_code": "budget", "amount": "5000.00", "currency": "EUR",
        "budget_key": "spiff:2026-Q4"})]
    assert [d["from"] for i in ids.values() for *_, d in world.audit(i)] == list(ids)
    # A cancelled reward is final.
    assert refused(reward_actions.cancel, world.as_("finance:ann"), [ids["pending"]], "again") == \
        f"reward {ids['pending']} is already cancelled"
    assert refused(reward_actions.release, world.as_("finance:ann"), [ids["held"]], "oops") == \
        f"reward {ids['held']} is cancelled, not held"
    assert refused(reward_actions.approve, world.as_("finance:ann"), [ids["awaiting_approval"]]) == \
        f"reward {ids['awaiting_approval']} is cancelled, not awaiting approval"
    assert world.verified()


def test_cancel_refuses_rewards_in_a_payout_naming_it(world: World) -> None:
    scheduled, sent, paid = world.reward("scheduled"), world.reward("sent"), world.reward("paid")
    with world.rt.engine.connect() as conn:
        payout = dict(conn.execute(select(rewards.c.id, rewards.c.payout_id)
                                   .where(rewards.c.id.in_([scheduled, sent, paid]))).all())
    before = world.snapshot()
    message = refused(reward_actions.cancel, world.as_("finance:ann"), [scheduled, sent, paid], "x")
    assert message == "; ".join([
        f"reward {scheduled} is scheduled in payout {payout[scheduled]}; cancel the payout first",
        f"reward {sent} is sent in payout {payout[sent]}; it cannot be cancelled",
        f"reward {paid} is paid in payout {payout[paid]}; it cannot be cancelled"])
    assert world.snapshot() == before


# ------------------------------------------------------------------------------------------ all or nothing


@pytest.mark.parametrize("action", ["approve", "hold", "release", "cancel"])
def test_one_bad_id_refuses_the_whole_command_naming_every_problem(world: World, action: str) -> None:
    good = world.reward("held" if action == "release" else "awaiting_approval", needed=1, hold_code="operator",
                        hold_reason="r")
    paid = world.reward("paid")
    before = world.snapshot()
    fn = getattr(reward_actions, action)
    args = () if action == "approve" else ("reason",)
    message = refused(fn, world.as_("finance:ann"), [good, 999, paid], *args)
    parts = message.split("; ")
    assert parts[0] == "reward 999 does not exist"
    assert parts[1].startswith(f"reward {paid} is paid in payout ")
    assert not any(part.startswith(f"reward {good} ") for part in parts)
    after = world.snapshot()
    # Nothing changed; a refused approval is audited on each named reward that exists.
    assert after[:2] == before[:2] and after[2] == before[2] + (2 if action == "approve" else 0)
    assert refused(fn, world.as_("finance:ann"), [], *args) == "no reward ids given"


@pytest.mark.postgres
def test_a_reward_locked_by_a_worker_is_reported_busy(world: World) -> None:
    if world.rt.engine.dialect.name != "postgresql":
        pytest.skip("row locks that other transactions skip exist on PostgreSQL only")
    reward = world.reward("pending")
    with world.rt.engine.connect() as worker:
        worker.execute(text("SELECT id FROM rewards WHERE id = :id FOR UPDATE"), {"id": reward})
        message = refused(reward_actions.hold, world.as_("ops:dan"), [reward], "x")
        worker.rollback()
    assert message == (f"reward {reward} is being changed by another transaction (a worker or another operator); "
                       "try again")
    assert reward_actions.hold(world.as_("ops:dan"), [reward], "x") == 1


# ------------------------------------------------------------------------------ with the calculation's rules

RULED = """
    [sources.s]
    plugin = "fake"

    [programs.pct]
    calculator = "percentage"
    percent = "10"

    [programs.pct.approval]
    currency = "EUR"
    threshold = "100"
    dual_threshold = "1000"

    [programs.pct.budget]
    amount = "3000"
    currency = "EUR"
"""


def test_decisions_on_rewards_written_by_the_calculation(make_runtime: Any) -> None:
    """Approval and budget rules start the rewards; operators decide; a cancelled reward frees its budget."""
    rt = make_runtime(RULED)
    ann, bob = Runtime.for_cli(rt.settings, "finance:ann"), Runtime.for_cli(rt.settings, "finance:bob")
    try:
        def calculate(*deals: tuple[str, str]) -> dict[str, tuple[int, str, str | None, int]]:
            rt.plugins.sources["s"].push(*(SourceRecord("Opportunity", oid, "won", "deal_won",
                                                        "2026-10-01T00:00:00Z", "p1", amount, "EUR")
                                           for oid, amount in deals))
            poll(rt, "s")
            versions = register_program_versions(rt)
            while calculate_batch(rt, versions):
                pass
            with rt.engine.connect() as conn:
                return {r.object_id: (r.id, r.status, r.hold_code, r.approvals_needed) for r in conn.execute(
                    select(events.c.object_id, rewards.c.id, rewards.c.status, rewards.c.hold_code,
                           rewards.c.approvals_needed).join(events, events.c.id == rewards.c.event_id))}

        got = calculate(("small", "500.00"), ("big", "5000.00"), ("huge", "20000.00"), ("over", "10000.00"))
        assert {k: v[1:] for k, v in got.items()} == {
            "small": ("pending", None, 0), "big": ("awaiting_approval", None, 1),
            "huge": ("awaiting_approval", None, 2), "over": ("held", "budget", 1)}  # 50 + 500 + 2000 + 1000 > 3000
        big, huge, over = got["big"][0], got["huge"][0], got["over"][0]

        assert reward_actions.approve(ann, [big])[0].pending
        assert not reward_actions.approve(ann, [huge])[0].pending
        assert "needs a different second approver" in refused(reward_actions.approve, ann, [huge])
        assert reward_actions.approve(bob, [huge])[0].pending

        # Cancelling the 2000 EUR reward gives its budget back: a new 1000 EUR reward fits again.
        assert reward_actions.cancel(ann, [huge], "deal unwound") == 1
        assert calculate(("later", "10000.00"))["later"][1:] == ("awaiting_approval", None, 1)

        # Releasing the budget hold overrides the budget; the reward still needs its approval.
        assert reward_actions.release(bob, [over], "budget raised by the CFO") == {over: "awaiting_approval"}
        with rt.engine.connect() as conn:
            entry = conn.execute(select(audit_log.c.outcome, audit_log.c.detail).where(
                audit_log.c.action == "reward.released", audit_log.c.subject_id == str(over))).one()
        assert entry.outcome == "override"
        assert json.loads(entry.detail)["budget_key"] == "pct:all"
        assert reward_actions.approve(ann, [over])[0].pending
        with rt.engine.connect() as conn:
            assert verify(conn).ok
    finally:
        ann.close()
        bob.close()


# ------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 400)
    monkeypatch.setattr(output.err_console, "width", 400)


def test_cli_approve_hold_release_cancel_signed_by_the_actor(world: World, wide_console: None) -> None:
    def cli(actor: str, *args: str) -> Any:
        return invoke("-c", str(world.config), "--actor", actor, "rewards", *args)

    dual, single, spare = (world.reward("awaiting_approval", needed=2), world.reward("awaiting_approval", needed=1),
                           world.reward("pending"))

    result = cli("finance:ann", "approve", str(dual), str(single), "--note", "ok per policy")
    assert result.exit_code == 0, result.output
    assert f"reward {dual} approved by finance:ann (1/2); needs 1 more approver(s)" in result.stdout
    assert f"reward {single} approved by finance:ann (1/1); now pending" in result.stdout

    listed = json.loads(cli("finance:ann", "list", "--status", "awaiting_approval", "--format", "json").stdout)
    assert [(r["id"], r["status"], r["approvals"]) for r in listed] == [(dual, "awaiting_approval", "1/2")]
    table = cli("finance:ann", "list").stdout
    assert "approvals" in table and "1/2" in table and "1/1" in table

    again = cli("finance:ann", "approve", str(dual))
    assert again.exit_code == 1
    assert f"reward {dual} is already approved by finance:ann; it needs a different second approver" in again.stderr

    assert cli("ops:dan", "hold", str(dual), "--reason", "partner audit").exit_code == 0
    held = json.loads(cli("ops:dan", "list", "--status", "held", "--format", "json").stdout)
    assert [(r["id"], r["hold_code"], r["reason"], r["approvals"]) for r in held] == [
        (dual, "operator", "partner audit", "1/2")]
    explained = invoke("-c", str(world.config), "explain", str(dual)).stdout
    assert "Approvals 1/2 (finance:ann)" in explained and "Held (operator): partner audit" in explained

    result = cli("ops:dan", "release", str(dual), "--reason", "audit passed")
    assert result.exit_code == 0 and "released 1 reward(s): 1 awaiting_approval" in result.stdout
    assert cli("finance:bob", "approve", str(dual)).exit_code == 0
    assert world.state(dual)[0] == "pending"

    bad = cli("finance:bob", "cancel", str(spare), "999", "--reason", "duplicate deal")
    assert bad.exit_code == 1 and "reward 999 does not exist" in bad.stderr
    assert world.state(spare)[0] == "pending"
    result = cli("finance:bob", "cancel", str(spare), "--reason", "duplicate deal")
    assert result.exit_code == 0 and "cancelled 1 reward(s)" in result.stdout
    assert [r["id"] for r in json.loads(cli("x", "list", "--status", "cancelled", "--format", "json").stdout)] == [
        spare]

    assert cli("ops:dan", "hold", str(single)).exit_code == 2  # --reason is required
    assert cli("ops:dan", "cancel").exit_code == 2  # at least one id

    assert [(actor, action) for actor, action, _, _ in world.audit()] == [
        ("finance:ann", "reward.approved"), ("finance:ann", "reward.approved"),
        ("finance:ann", "reward.approval_refused"), ("ops:dan", "reward.held"), ("ops:dan", "reward.released"),
        ("finance:bob", "reward.approved"), ("finance:bob", "reward.cancelled")]
    assert world.audit(dual)[0][3]["note"] == "ok per policy"
    verified = invoke("-c", str(world.config), "audit", "verify")
    assert verified.exit_code == 0 and "audit log OK" in verified.stdout


@pytest.mark.postgres
def test_two_operators_approving_at_once_leave_no_reward_short_of_pending(world: World) -> None:
    """Each approval counts the approvals committed before it locked the reward: two at the same moment never
    leave a reward with all its approvals still awaiting approval."""
    if world.rt.engine.dialect.name != "postgresql":
        pytest.skip("concurrent transactions under READ COMMITTED: PostgreSQL")
    rewards_made = [world.reward("awaiting_approval", needed=2) for _ in range(12)]
    for reward in rewards_made:
        start = threading.Barrier(2)

        def approve(actor: str, reward: int = reward, start: threading.Barrier = start) -> None:
            start.wait()
            with contextlib.suppress(reward_actions.Refused):  # the other held the row: this one is told to retry
                reward_actions.approve(world.as_(actor), [reward])

        threads = [threading.Thread(target=approve, args=(actor,)) for actor in ("ops:ann", "ops:bob")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with world.rt.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT r.id, r.status, count(a.approver) FROM rewards r LEFT JOIN approvals a ON a.reward_id = r.id "
            "WHERE r.id IN :ids GROUP BY r.id, r.status").bindparams(bindparam("ids", expanding=True)),
            {"ids": rewards_made}).all()
    assert all(status == ("pending" if count >= 2 else "awaiting_approval") for _id, status, count in rows), rows
