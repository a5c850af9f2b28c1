"""Insider edits: someone who can write the database changes payouts, rewards or the audit chain.

Each case runs the real pipeline (ingest, calculate, schedule, disburse with the FakeRail) on SQLite and PostgreSQL,
edits the database behind payhub's back, then shows that the next send does not pay the edit (the pre-send check
holds the payout) and that ``payhub audit verify`` reports every difference, with and without the checkpoint key.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from click.testing import Result
from sqlalchemy import delete, select, text, update

from payhub import checkpoints, signing
from payhub.api import PayoutInstruction, SourceRecord, hookimpl
from payhub.audit import entry_hash
from payhub.audited import AuditRow, reached
from payhub.clock import utcnow
from payhub.db.schema import audit_head, audit_log, payouts, rewards
from payhub.errors import ConfigError
from payhub.payees import load_payees, sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.presend import hold_mismatched
from payhub.pipeline.schedule import schedule_batch
from payhub.runtime import Runtime
from payhub.store.payouts import instruction_for
from payhub.testing import FakeRail
from payhub.worker import Worker

pytestmark = pytest.mark.slow  # each case runs the whole pipeline, edits the database, then sends and verifies

BASE = """
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [routing]
    default_rail = "r"
    [rails.r]
    plugin = "fake"
    max_attempts = 3
    retry_initial_seconds = 0
    retry_max_seconds = 0
"""
KEYED = """
    [audit]
    checkpoint_key_file = "checkpoint.pem"
    checkpoint_dir = "checkpoints"
    checkpoint_every_entries = 1
"""


@dataclass
class Site:
    rt: Runtime
    rail: FakeRail
    root: Path
    keyed: bool

    @property
    def config(self) -> Path:
        return self.root / "payhub.toml"

    def verify(self, *args: str) -> Result:
        return invoke("-c", str(self.config), "audit", "verify", *args)

    def sql(self, statement: Any) -> None:
        with self.rt.engine.begin() as conn:
            conn.execute(statement)

    def payouts(self) -> list[Any]:
        with self.rt.engine.connect() as conn:
            return conn.execute(select(payouts).order_by(payouts.c.id)).all()

    def rewards(self) -> list[Any]:
        with self.rt.engine.connect() as conn:
            return conn.execute(select(rewards).order_by(rewards.c.id)).all()

    def entries(self) -> list[dict[str, Any]]:
        with self.rt.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(audit_log).order_by(audit_log.c.seq)).mappings()]

    def push(self, *amounts: tuple[str, str]) -> None:
        """Ingest one deal per (payee, amount) and calculate it."""
        source = self.rt.plugins.sources["s"]
        start = len(source.records)
        source.push(*(SourceRecord("Opportunity", f"o{start + i}", "won", "deal_won", "2026-10-01T00:00:00Z", payee,
                                   amount, "EUR") for i, (payee, amount) in enumerate(amounts)))
        poll(self.rt, "s")
        versions = register_program_versions(self.rt)
        while calculate_batch(self.rt, versions):
            pass

    def schedule(self, *amounts: tuple[str, str]) -> list[Any]:
        self.push(*amounts)
        sync_payees(self.rt)
        while schedule_batch(self.rt):
            pass
        return self.payouts()

    def drain(self) -> None:
        for _ in range(20):
            if not disburse_rail(self.rt, "r"):
                return
        pytest.fail("payouts still due after 20 rounds")


@pytest.fixture(params=[False, True], ids=["no-key", "key"])
def site(request: pytest.FixtureRequest, make_runtime: Callable[[str], Runtime], tmp_path: Path) -> Site:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\np2,Partner Two,FR\np3,Three,IT\n")
    pem, _key = signing.new_private_key()
    (tmp_path / "checkpoint.pem").write_text(pem)
    rt = make_runtime(BASE + (KEYED if request.param else ""))
    rail = rt.plugins.rails["r"]
    assert isinstance(rail, FakeRail)
    return Site(rt, rail, tmp_path, request.param)


def assert_fails(result: Result, *lines: str) -> None:
    assert result.exit_code == 1, result.output
    for line in lines:
        assert line in result.stdout, result.stdout


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("audit log OK")


# ------------------------------------------------------------------------------------- edits of payouts


def test_payout_amount_times_1000_is_held_before_send_and_reported(site: Site) -> None:
    edited, other = site.schedule(("p1", "120.50"), ("p2", "30.00"))
    site.sql(update(payouts).where(payouts.c.id == edited.id).values(amount_minor=edited.amount_minor * 1000))
    site.drain()
    assert site.rail.accepted == {other.idempotency_key: 1}  # the edited payout never reached the rail
    held = {p.id: p for p in site.payouts()}[edited.id]
    assert held.status == "held"
    assert "does not match its audit trail" in held.reason
    assert "amount 120500.00 EUR differs from the audited 120.50 EUR" in held.reason
    assert "its items add up to 120.50 EUR, not its amount 120500.00 EUR" in held.reason
    entry = [e for e in site.entries() if e["action"] == "payout.held"][-1]
    assert (entry["subject_id"], entry["outcome"]) == (str(edited.id), "held")
    assert json.loads(entry["detail"])["check"] == "audit trail"
    assert_fails(site.verify(), f"payout {edited.id}: amount is 120500.00 EUR in the table, 120.50 EUR as audited",
                 f"payout {edited.id}: its items add up to 120.50 EUR, not its amount 120500.00 EUR")
    # Releasing the hold does not skip the check: it is held again, still unsent.
    invoke("-c", str(site.config), "payouts", "release", str(edited.id), "--reason", "looks fine")
    site.drain()
    assert edited.idempotency_key not in site.rail.accepted
    # Restoring the row lets it go out, once.
    site.sql(update(payouts).where(payouts.c.id == edited.id).values(amount_minor=edited.amount_minor))
    invoke("-c", str(site.config), "payouts", "release", str(edited.id), "--reason", "amount restored")
    site.drain()
    assert site.rail.accepted == {other.idempotency_key: 1, edited.idempotency_key: 1}
    assert_ok(site.verify())


def test_payout_and_its_items_edited_together_are_held(site: Site) -> None:
    """A careful insider keeps the items' sum equal to the amount: the items no longer match the audited rewards."""
    [edited] = site.schedule(("p1", "10.00"))
    site.sql(update(payouts).values(amount_minor=1_000_000))
    site.sql(text("UPDATE payout_items SET amount_minor = 1000000"))
    site.drain()
    assert not site.rail.accepted
    [held] = site.payouts()
    assert held.status == "held"
    assert "the item of reward 1 is 10000.00 EUR, audited 10.00 EUR" in held.reason
    assert_fails(site.verify(), "payout 1: amount is 10000.00 EUR in the table, 10.00 EUR as audited")


@pytest.mark.parametrize(("column", "value", "field"), [
    ("currency", "USD", "currency"), ("payee_id", "p3", "payee"), ("idempotency_key", "ph-forged", "key"),
], ids=["currency", "payee", "key"])
def test_payout_field_edits_are_held_and_reported(site: Site, column: str, value: str, field: str) -> None:
    [edited] = site.schedule(("p1", "10.00"))
    site.sql(update(payouts).values({column: value}))
    site.drain()
    assert not site.rail.accepted
    [held] = site.payouts()
    assert held.status == "held"
    assert f"{field} {value!r} differs from the audited" in held.reason
    assert_fails(site.verify(), f"payout 1: {field} is {value!r} in the table, {getattr(edited, column)!r} as "
                 "audited")


@dataclass
class Claimed:
    """A claimed payout as the disburse stage hands it to the pre-send check."""

    id: int
    instruction: PayoutInstruction
    attempts: int
    lease: str


def test_payout_rail_edit_is_held_and_reported(site: Site) -> None:
    """A payout moved to another rail: that rail's check holds it, and verify reports it."""
    site.schedule(("p1", "10.00"))
    site.sql(update(payouts).values(rail="other", lease_owner=site.rt.worker_id, lease_token="t1",  # claimed
                                    lease_until=utcnow() + timedelta(minutes=5)))  # by a worker of rail "other"
    [row] = site.payouts()
    with site.rt.engine.connect() as conn:
        payee = load_payees(conn, ["p1"])["p1"]
    claimed = Claimed(row.id, instruction_for(row, payee), 0, "t1")
    assert hold_mismatched(site.rt, "other", [claimed]) == []
    [held] = site.payouts()
    assert held.status == "held" and "rail 'other' differs from the audited 'r'" in held.reason
    assert_fails(site.verify(), "payout 1: rail is 'other' in the table, 'r' as audited")


def test_paid_payout_set_back_to_scheduled_is_not_sent_again(site: Site) -> None:
    [paid] = site.schedule(("p1", "10.00"))
    site.drain()
    assert site.rail.accepted == {paid.idempotency_key: 1}
    site.sql(update(payouts).values(status="scheduled"))
    site.drain()
    assert site.rail.accepted == {paid.idempotency_key: 1}
    [held] = site.payouts()
    assert held.status == "held"
    assert "the audit log last records it as sent (entry" in held.reason
    site.sql(update(payouts).values(status="sent"))
    assert_fails(site.verify(), "payout 1: status is 'sent' in the table, 'held' as audited")


def test_sent_reward_set_back_to_pending_is_not_paid_again(site: Site) -> None:
    [first] = site.schedule(("p1", "10.00"))
    site.drain()
    site.sql(update(rewards).values(status="pending", payout_id=None))
    while schedule_batch(site.rt):
        pass
    site.drain()
    assert site.rail.accepted == {first.idempotency_key: 1}  # the rail took one payout only
    second = [p for p in site.payouts() if p.id != first.id]
    assert [p.status for p in second] == ["held"]
    assert (f"reward 1 was scheduled before into payout {first.id}, which the audit log records as sent (entry"
            in second[0].reason)


def test_payout_status_edit_is_reported(site: Site) -> None:
    site.schedule(("p1", "10.00"))
    site.drain()
    site.sql(update(payouts).values(status="paid"))
    site.sql(update(rewards).values(status="paid"))
    assert_fails(site.verify(), "payout 1: status is 'paid' in the table, 'sent' as audited",
                 "reward 1: status is 'paid' in the table, 'sent' as audited")


# ------------------------------------------------------------------------------------- edits of rewards


def test_pending_reward_amount_edit_is_held_before_send(site: Site) -> None:
    """The reward is inflated before it is scheduled: the payout is built from it and the check catches it."""
    site.push(("p1", "10.00"), ("p2", "20.00"))
    site.sql(update(rewards).where(rewards.c.id == 1).values(amount_minor=1_000_000))
    sync_payees(site.rt)
    while schedule_batch(site.rt):
        pass
    site.drain()
    by_payee = {p.payee_id: p for p in site.payouts()}
    assert site.rail.accepted == {by_payee["p2"].idempotency_key: 1}
    assert by_payee["p1"].status == "held"
    assert "the item of reward 1 is 10000.00 EUR, audited 10.00 EUR" in by_payee["p1"].reason
    assert_fails(site.verify(), "reward 1: amount is 10000.00 EUR in the table, 10.00 EUR as audited")


@pytest.mark.parametrize(("column", "value", "shown"), [
    ("amount_minor", 99_900, "amount is 999.00 EUR in the table, 10.00 EUR as audited"),
    ("currency", "USD", "currency is 'USD' in the table, 'EUR' as audited"),
    ("payee_id", "p3", "payee is 'p3' in the table, 'p1' as audited"),
    ("status", "pending", "status is 'pending' in the table, 'sent' as audited"),
], ids=["amount", "currency", "payee", "status"])
def test_reward_edits_after_payment_are_reported(site: Site, column: str, value: Any, shown: str) -> None:
    site.schedule(("p1", "10.00"))
    site.drain()
    assert_ok(site.verify())
    site.sql(update(rewards).values({column: value}))
    assert_fails(site.verify(), f"reward 1: {shown}")


def test_every_difference_is_reported_not_only_the_first(site: Site) -> None:
    site.schedule(("p1", "10.00"), ("p2", "20.00"))
    site.drain()
    site.sql(update(payouts).values(amount_minor=payouts.c.amount_minor * 1000, currency="GBP"))
    site.sql(update(rewards).values(payee_id="p3"))
    site.sql(delete(rewards).where(rewards.c.id == 99))
    result = site.verify()
    assert_fails(result, "difference(s) between the payouts and rewards tables")
    lines = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    for payout_id in (1, 2):
        assert any(line.startswith(f"payout {payout_id}: amount is") for line in lines)
        assert any(line.startswith(f"payout {payout_id}: currency is 'GBP'") for line in lines)
    assert sum(line.endswith("as audited (entry 3)") or "payee is 'p3'" in line for line in lines) >= 2


def test_rows_inserted_or_deleted_outside_payhub_are_reported(site: Site) -> None:
    [paid] = site.schedule(("p1", "10.00"))
    site.drain()
    row = {k: v for k, v in paid._mapping.items() if k != "id"}
    site.sql(payouts.insert().values({**row, "id": 7, "idempotency_key": "ph-inserted"}))
    assert_fails(site.verify(), "payout 7: is in the table but no audit entry records it (inserted outside payhub)")
    site.sql(delete(payouts).where(payouts.c.id == 7))
    with site.rt.engine.begin() as conn:  # the reward row goes; its payout keeps pointing at nothing
        conn.execute(text("DELETE FROM payout_items WHERE reward_id = 1"))
        conn.execute(text("DELETE FROM rewards WHERE id = 1"))
    assert_fails(site.verify(), "reward 1: is in the audit log (entry", "but not in the table (deleted outside payhub)",
                 "payout 1: has 0 items, the audit recorded 1")


def refused(site: Site, *args: str) -> str:
    result = invoke("-c", str(site.config), *args)
    assert result.exit_code == 1, result.output
    return result.output


def test_cancel_and_rewards_release_refuse_a_payout_the_chain_records_as_sent(site: Site) -> None:
    """A sent payout set back to scheduled is held; cancelling it, or releasing its rewards, would pay twice."""
    [sent] = site.schedule(("p1", "10.00"))
    site.drain()
    sent_seq = [e["seq"] for e in site.entries() if e["action"] == "payout.sent"][-1]
    site.sql(update(payouts).values(status="scheduled"))
    site.drain()
    assert site.payouts()[0].status == "held"
    out = refused(site, "payouts", "cancel", str(sent.id), "--reason", "x")
    assert f"the audit log records payout {sent.id} as sent (entry {sent_seq}): it may have reached the rail; " \
        "resolve it instead" in out
    assert site.payouts()[0].status == "held"
    # The insider cancels it in the table and holds its reward as owed: the chain still refuses the release.
    site.sql(update(payouts).values(status="cancelled"))
    site.sql(update(rewards).values(status="held", hold_code="payout_failed", hold_reason="x"))
    out = refused(site, "rewards", "release", "1", "--reason", "owed")
    assert f"reward 1: the audit log records payout {sent.id} as sent (entry {sent_seq})" in out
    site.schedule()
    site.drain()
    assert site.rail.accepted == {sent.idempotency_key: 1}
    assert len(site.payouts()) == 1


def test_release_refuses_and_presend_never_resends_a_payout_the_chain_records_as_sent(site: Site) -> None:
    [sent] = site.schedule(("p1", "10.00"))
    site.drain()
    sent_seq = [e["seq"] for e in site.entries() if e["action"] == "payout.sent"][-1]
    site.sql(update(payouts).values(status="retrying", next_attempt_at=None))
    site.drain()
    [held] = site.payouts()
    assert held.status == "held" and "the audit log last records it as sent" in held.reason
    out = refused(site, "payouts", "release", str(sent.id), "--reason", "x")
    assert f"the audit log records payout {sent.id} as sent (entry {sent_seq})" in out
    # Even with a payout.released after the send (as an older payhub wrote it), the next send is refused.
    with site.rt.transaction() as tx:
        tx.audit("payout.released", "payout", sent.id, {"reason": "x"})
    site.sql(update(payouts).values(status="scheduled"))
    site.drain()
    assert site.rail.accepted == {sent.idempotency_key: 1}
    [held] = site.payouts()
    assert held.status == "held"
    assert f"the audit log records it as sent (entry {sent_seq}): it is never sent again" in held.reason


def test_resolve_not_sent_refuses_a_payout_the_chain_records_as_sent(site: Site) -> None:
    [sent] = site.schedule(("p1", "10.00"))
    site.drain()
    site.sql(update(payouts).values(status="unresolved"))
    out = refused(site, "payouts", "resolve", str(sent.id), "--outcome", "not-sent", "--reason", "x")
    assert f"the audit log records payout {sent.id} as sent (entry" in out
    assert site.payouts()[0].status == "unresolved"


def row(seq: int, action: str, outcome: str = "ok", **detail: Any) -> AuditRow:
    return AuditRow(seq, "1", action, outcome, json.dumps(detail))


@pytest.mark.parametrize(("actions", "expected"), [
    (["payout.created"], None),
    (["payout.created", "payout.sending"], ("unknown", 2)),
    (["payout.created", "payout.sending", "payout.retrying"], None),
    (["payout.created", "payout.sending", "payout.unknown", ("payout.lookup", "not_found")], None),
    (["payout.created", "payout.sending", "payout.unresolved", ("payout.resolved", {"to": "retrying"})], None),
    (["payout.created", "payout.sending", "payout.unknown", "payout.held", "payout.cancelled"], ("unknown", 3)),
    (["payout.created", "payout.sending", "payout.sent"], ("sent", 3)),
    (["payout.created", "payout.sending", "payout.sent", "payout.held", "payout.released", "payout.cancelled"],
     ("sent", 3)),
    (["payout.created", "payout.sending", "payout.sent", "payout.rejected"], None),
    (["payout.created", "payout.sending", "payout.paid", "payout.rejected"], ("paid", 3)),
    (["payout.created", "payout.sending", "payout.paid", "payout.returned"], None),
    (["payout.created", "payout.sending", "payout.failed"], None),
    (["payout.created", "payout.sending", "payout.unresolved", ("payout.resolved", {"to": "sent"})], ("sent", 4)),
])
def test_what_the_chain_records_of_a_payout_reaching_the_rail(actions: list[Any], expected: Any) -> None:
    rows = []
    for seq, action in enumerate(actions, 1):
        if isinstance(action, tuple) and isinstance(action[1], dict):
            rows.append(row(seq, action[0], **action[1]))
        elif isinstance(action, tuple):
            rows.append(row(seq, action[0], action[1]))
        else:
            rows.append(row(seq, action))
    hit = reached(rows)
    assert (tuple(hit) if hit else None) == expected


# ------------------------------------------------------------------------------------- the chain itself


def run_and_verify(site: Site, times: int = 3) -> None:
    site.schedule(("p1", "10.00"), ("p2", "20.00"))
    site.drain()
    for _ in range(times):
        assert_ok(site.verify())


def test_cut_tail_and_head_moved_back(site: Site) -> None:
    run_and_verify(site)
    entries = site.entries()
    keep = entries[-3]  # the last two entries (two audit.verify reads) are cut and the head moved back
    site.sql(delete(audit_log).where(audit_log.c.seq > keep["seq"]))
    site.sql(update(audit_head).values(seq=keep["seq"], hash=keep["hash"]))
    result = site.verify()
    if not site.keyed:
        assert_ok(result)  # a consistent, shorter chain: nothing in the database shows the cut
        assert "a chain rewritten consistently, or cut back with its head moved back, is not detected" in \
            result.stderr
        return
    assert_fails(result, f"is past the end of the log (entry {keep['seq']}): entries {keep['seq'] + 1} to",
                 "were cut off and the head moved back")


def checkpoint_lines(site: Site) -> list[str]:
    return [line for path in sorted((site.root / "checkpoints").glob("checkpoints-*.jsonl"))
            for line in path.read_text().splitlines()]


def test_verify_without_checkpoints_signs_nothing_over_a_cut_chain(site: Site) -> None:
    """--no-checkpoints has not checked the chain against the checkpoints, so it must not vouch for a cut chain."""
    if not site.keyed:
        pytest.skip("checkpoints need the key")
    run_and_verify(site)
    before = checkpoint_lines(site)
    keep = site.entries()[-3]
    site.sql(delete(audit_log).where(audit_log.c.seq > keep["seq"]))
    site.sql(update(audit_head).values(seq=keep["seq"], hash=keep["hash"]))
    result = site.verify("--no-checkpoints")
    assert_ok(result)  # the shorter chain is consistent on its own
    assert "signed checkpoints not checked (--no-checkpoints), so no new checkpoint is signed" in result.stderr
    assert "signed a checkpoint" not in result.stderr
    assert checkpoint_lines(site) == before
    # The cut stays visible to a verification with the checkpoints (as a cut, or as a rewrite once the
    # --no-checkpoints run appended its own audit.verify entry in place of a cut one).
    assert_fails(site.verify(), "audit log FAILED verification")


def rewrite_from(site: Site, seq: int, change: dict[str, Any]) -> None:
    """Edit entry ``seq`` and rehash it and every later entry, then move the head: a consistent rewrite."""
    rows = site.entries()
    prev = None
    with site.rt.engine.begin() as conn:
        for row in rows:
            if row["seq"] < seq:
                continue
            if row["seq"] == seq:
                row.update(change)
            if prev is not None:
                row["prev_hash"] = prev
            row["hash"] = entry_hash(row)
            prev = row["hash"]
            conn.execute(update(audit_log).where(audit_log.c.seq == row["seq"]).values(
                {k: v for k, v in row.items() if k != "seq"}))
        conn.execute(update(audit_head).values(seq=rows[-1]["seq"], hash=prev))


def test_consistent_rewrite_of_the_chain(site: Site) -> None:
    """The insider changes a paid amount in the table and in the chain, rehashing everything after it."""
    run_and_verify(site)
    created = next(e for e in site.entries() if e["action"] == "payout.created")
    detail = json.loads(created["detail"])
    detail["amount"] = "10000.00"
    site.sql(update(payouts).where(payouts.c.id == int(created["subject_id"])).values(amount_minor=1_000_000))
    site.sql(text(f"UPDATE payout_items SET amount_minor = 1000000 WHERE payout_id = {created['subject_id']}"))
    rewrite_from(site, created["seq"], {"detail": json.dumps(detail, sort_keys=True, separators=(",", ":"))})
    result = site.verify()
    if not site.keyed:
        # The chain and the payout agree with each other; only the rewards still tell (their audited amounts).
        assert "audit log FAILED verification at" not in result.stdout
        assert "is not detected" in result.stderr
        return
    assert_fails(result, "but the checkpoint of entry", "the chain was rewritten at or before entry")


def test_consistent_rewrite_of_a_read_entry_is_caught_only_with_the_key(site: Site) -> None:
    run_and_verify(site)
    read = [e for e in site.entries() if e["action"] == "audit.verify"][0]
    rewrite_from(site, read["seq"], {"actor": "auditor:someone-else"})
    result = site.verify()
    if not site.keyed:
        assert_ok(result)
        return
    assert_fails(result, f"entry {read['seq']} hashes to", "the chain was rewritten")


def test_forged_checkpoints_are_refused(site: Site) -> None:
    if not site.keyed:
        pytest.skip("checkpoints need the key")
    run_and_verify(site, times=1)
    directory = site.root / "checkpoints"
    [path] = directory.glob("checkpoints-*.jsonl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    good = json.loads(path.read_text().splitlines()[-1])
    _pem, other = signing.new_private_key()
    by_other = checkpoints.sign(other, good["seq"] + 50, "a" * 64)
    with path.open("a") as fh:
        fh.write(json.dumps({**good, "seq": good["seq"] + 100}) + "\n")  # the signature no longer fits
        fh.write(json.dumps(by_other.as_dict()) + "\n")  # signed, with a key payhub does not know
        fh.write("not json\n")
    result = site.verify()
    assert_fails(result, f"the checkpoint of entry {good['seq'] + 100} signed at", "has a bad signature: it was "
                 "forged or altered", "was made with another key", "line 4 is not a checkpoint (not JSON)")


def test_verify_with_checkpoints_needs_a_key(site: Site) -> None:
    result = site.verify("--checkpoints")
    if site.keyed:
        assert_ok(result)
        assert "no signed checkpoints in" in result.stderr
        assert "signed a checkpoint of entry" in result.stderr
    else:
        assert result.exit_code == 2
        assert "audit.checkpoint_key: --checkpoints needs" in result.stderr


def test_public_key_alone_checks_but_does_not_sign(site: Site, tmp_path: Path) -> None:
    if not site.keyed:
        pytest.skip("checkpoints need the key")
    run_and_verify(site, times=2)
    key = signing.parse_private((tmp_path / "checkpoint.pem").read_text())
    public_only = tmp_path / "auditor.toml"
    public_only.write_text(site.config.read_text().replace(
        'checkpoint_key_file = "checkpoint.pem"', f'checkpoint_public_key = "{key.public_text}"'))
    before = len(list((tmp_path / "checkpoints").glob("*.jsonl")))
    result = invoke("-c", str(public_only), "audit", "verify")
    assert_ok(result)
    assert "checked against 2 signed checkpoint(s)" in result.stderr
    assert "signed a checkpoint" not in result.stderr
    assert len(list((tmp_path / "checkpoints").glob("*.jsonl"))) == before


# ------------------------------------------------------------------------------------- the daemon's checkpoints


class CheckpointSink:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def payhub_audit_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.seen.append(checkpoint)


def test_daemon_signs_checkpoints_and_publishes_them(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    if not site.keyed:
        assert Checkpointer_for(site) is None
        return
    sink = CheckpointSink()
    site.rt.plugins.hooks.register(sink)
    site.push(("p1", "10.00"))
    worker = Worker(site.rt)
    worker.start()
    try:
        worker.run_once()
    finally:
        worker.stop()
    assert sink.seen, "no checkpoint published"
    head = site.entries()[-1]
    assert (sink.seen[-1]["seq"], sink.seen[-1]["hash"]) == (head["seq"], head["hash"])
    saved, problems = checkpoints.read(site.root / "checkpoints")
    assert not problems and saved[-1].as_dict() == sink.seen[-1]
    assert_ok(site.verify())
    # The chain is rewritten behind the daemon's back: it refuses to sign, and says why.
    assert worker.checkpointer is not None
    rewrite_from(site, 2, {"actor": "someone-else"})
    site.push(("p2", "5.00"))
    count = len(sink.seen)
    assert worker.checkpointer.tick() is None
    assert len(sink.seen) == count
    assert "audit checkpoint not signed: the audit chain does not continue from the checkpoint of entry" in \
        caplog.text


def Checkpointer_for(site: Site) -> Any:  # noqa: N802 - reads as the class it builds
    return checkpoints.Checkpointer.for_daemon(site.rt)


def test_an_unreadable_checkpoint_key_stops_with_the_key_named(site: Site, tmp_path: Path) -> None:
    if not site.keyed:
        pytest.skip("needs a key setting")
    (tmp_path / "checkpoint.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    result = site.verify()
    assert result.exit_code == 2
    assert "audit.checkpoint_key_file" in result.stderr and "not a readable unencrypted PEM private key" in \
        result.stderr
    (tmp_path / "checkpoint.pem").unlink()
    worker = Worker(site.rt)
    with pytest.raises(ConfigError) as raised:
        worker.start()
    worker.stop()
    assert raised.value.problems[0][0] == "audit.checkpoint_key_file"
