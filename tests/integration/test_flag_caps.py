"""Flag caps of ``[compliance.gifts]``: yearly caps on what flagged payees receive, per payee across programs, per
payee and program, or one pool per flag; applied at calculation like the program caps, each cut on the record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from payhub.api import SourceRecord
from payhub.audit import verify
from payhub.db.schema import audit_log, calculations, events, rewards
from payhub.money import from_minor
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.ingest import poll
from payhub.runtime import Runtime

PAYEES = ("id,name,country,flags\n"
          "gov,Gov Official,DE,government_official\n"
          "hcp1,Doctor One,FR,healthcare_professional;speaker\n"
          "hcp2,Doctor Two,IT,Healthcare_Professional\n"
          "ana,Ana Rep,DE,\n")
PROGRAMS = """
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.deals]
    calculator = "percentage"
    percent = "100"
    event_types = ["deal_won"]
    clawback_event_types = ["deal_lost"]
    {deals}
    [programs.training]
    calculator = "flat"
    amount = "100"
    currency = "USD"
    event_types = ["course_done"]
"""


def won(object_id: str, payee: str, amount: str = "100.00", when: str = "2026-03-01T00:00:00Z",
        currency: str = "USD") -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", when, payee, amount, currency, "acme", {})


def lost(object_id: str, payee: str, when: str = "2026-03-05T00:00:00Z") -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "lost", "deal_lost", when, payee, None, None, "acme", {})


def course(object_id: str, payee: str, when: str = "2026-03-01T00:00:00Z") -> SourceRecord:
    return SourceRecord("Course", object_id, "done", "course_done", when, payee, None, None, None, {})


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Any:
    """``world(gifts, deals="")``: a runtime with the payees registry synced, ``gifts`` as ``[compliance.gifts]``
    and ``deals`` added to the ``deals`` program's section."""

    def factory(gifts: str, deals: str = "") -> Runtime:
        (tmp_path / "payees.csv").write_text(PAYEES)
        rt = make_runtime(PROGRAMS.replace("{deals}", deals) + "\n[compliance.gifts]\n" + gifts)
        sync_payees(rt)
        return rt

    return factory


def run(rt: Runtime, *records: SourceRecord, limit: int | None = None) -> None:
    """Ingest ``records`` and calculate them, ``limit`` events per batch."""
    rt.plugins.sources["s"].push(*records)
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions, limit=limit):
        pass
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def outcome(rt: Runtime) -> dict[tuple[str, str], Any]:
    """(program, object id) -> {status, reason, rewards: [(payee, amount, reward status, details)]}."""
    with rt.engine.connect() as conn:
        found: dict[tuple[str, str], Any] = {
            (c.program, c.object_id): {"status": c.status, "reason": c.reason, "rewards": []}
            for c in conn.execute(select(calculations.c.program, events.c.object_id, calculations.c.status,
                                         calculations.c.reason).join(events, events.c.id == calculations.c.event_id))}
        for r in conn.execute(select(rewards, events.c.object_id).join(events, events.c.id == rewards.c.event_id)
                              .order_by(rewards.c.id)):
            found[(r.program, r.object_id)]["rewards"].append(
                (r.payee_id, str(from_minor(r.amount_minor, r.currency)), r.status, json.loads(r.details)))
    return found


def amounts(found: dict[tuple[str, str], Any], program: str, object_id: str) -> list[str]:
    return [amount for _payee, amount, status, _details in found[(program, object_id)]["rewards"]
            if status != "cancelled"]


PER_PAYEE = '[[compliance.gifts.flag_caps]]\nflag = "government_official"\namount = "250"\ncurrency = "USD"\n'


@pytest.mark.parametrize("limit", [1, 3, None], ids=["one-per-batch", "three-per-batch", "one-batch"])
def test_per_payee_cap_counts_every_program_and_leaves_others_alone(world: Any, limit: int | None) -> None:
    rt = world(PER_PAYEE)
    run(rt, won("d1", "gov"), course("c1", "gov"), won("d2", "gov"), course("c2", "gov"),
        won("d3", "ana"), course("c3", "ana"), won("d4", "ana"),  # not flagged: paid in full
        won("d5", "ghost"), won("d6", "ghost"), won("d7", "ghost"),  # not in the registry: they wait for it
        limit=limit)
    found = outcome(rt)
    assert amounts(found, "deals", "d1") == amounts(found, "training", "c1") == ["100.00"]
    assert amounts(found, "deals", "d2") == ["50.00"]  # 200 used of 250
    assert found[("training", "c2")]["status"] == "not_eligible"  # cut to nothing: no reward
    assert found[("training", "c2")]["rewards"] == []
    assert found[("training", "c2")]["reason"] == ("flag cap flag government_official per payee gov 2026 of "
                                                  "250.00 USD cut 100.00 USD of gov's reward")
    [(_payee, _amount, _status, details)] = found[("deals", "d2")]["rewards"]
    assert details["earned"] == "100.00"
    assert details["capped"] == [{"cap": "flag government_official per payee gov 2026",
                                  "flag": "government_official", "limit": "250.00", "used": "200.00",
                                  "cut": "50.00"}]
    assert found[("deals", "d2")]["status"] == "rewarded"
    assert "cut 50.00 USD of gov's reward" in found[("deals", "d2")]["reason"]
    for key in (("deals", "d3"), ("training", "c3"), ("deals", "d4")):
        assert amounts(found, *key) == ["100.00"], key
        assert "capped" not in found[key]["rewards"][0][3]
    assert not {("deals", "d5"), ("deals", "d6"), ("deals", "d7")} & set(found)  # never calculated without flags
    with rt.engine.connect() as conn:  # the cut is in the audit log, with the event's calculation
        entries = [json.loads(d) for d in conn.execute(
            select(audit_log.c.detail).where(audit_log.c.action == "event.calculated")).scalars()]
    assert any(e["programs"].get("deals", "").startswith("rewarded: flag cap flag government_official per payee "
                                                         "gov 2026 of 250.00 USD cut 50.00 USD") for e in entries)
    assert any(e["programs"].get("training") == "not_eligible: flag cap flag government_official per payee gov "
               "2026 of 250.00 USD cut 100.00 USD of gov's reward" for e in entries)


def test_per_program_cap_counts_each_program_apart(world: Any) -> None:
    rt = world(PER_PAYEE.replace('"250"', '"150"') + 'per = "program"\n')
    run(rt, won("d1", "gov"), won("d2", "gov"), course("c1", "gov"), course("c2", "gov"), limit=2)
    found = outcome(rt)
    assert [amounts(found, "deals", d) for d in ("d1", "d2")] == [["100.00"], ["50.00"]]
    assert [amounts(found, "training", c) for c in ("c1", "c2")] == [["100.00"], ["50.00"]]
    assert found[("training", "c2")]["rewards"][0][3]["capped"][0]["cap"] == \
        "flag government_official per payee gov in program training 2026"


def test_flag_pool_is_shared_by_every_payee_with_the_flag_and_only_for_its_programs(world: Any) -> None:
    rt = world('[[compliance.gifts.flag_caps]]\nflag = "healthcare_professional"\namount = "250"\n'
               'currency = "USD"\nper = "flag"\nprograms = ["deals"]\n')
    # hcp2's flag is written in another case: flags are compared without regard to case
    run(rt, won("d1", "hcp1"), won("d2", "hcp2"), won("d3", "hcp2"), won("d4", "hcp1"),
        course("c1", "hcp1"), course("c2", "hcp2"), course("c3", "hcp1"), limit=2)
    found = outcome(rt)
    assert [amounts(found, "deals", d) for d in ("d1", "d2", "d3")] == [["100.00"], ["100.00"], ["50.00"]]
    assert found[("deals", "d4")]["status"] == "not_eligible"
    assert found[("deals", "d3")]["rewards"][0][3]["capped"] == [{
        "cap": "flag healthcare_professional pool 2026", "flag": "healthcare_professional", "limit": "250.00",
        "used": "200.00", "cut": "50.00"}]
    assert [amounts(found, "training", c) for c in ("c1", "c2", "c3")] == [["100.00"]] * 3  # not its program


def test_two_lines_of_one_calculation_share_the_pool(world: Any) -> None:
    """Lines of the same event are counted as they are granted (a split deal paying two flagged payees)."""
    rt = world('[[compliance.gifts.flag_caps]]\nflag = "healthcare_professional"\namount = "150"\n'
               'currency = "USD"\nper = "flag"\n', deals="splits = true")
    split = SourceRecord("Opportunity", "s1", "won", "deal_won", "2026-03-01T00:00:00Z", "hcp1", "200.00", "USD",
                         "acme", {"splits": [{"payee_id": "hcp1", "percent": "50"},
                                             {"payee_id": "hcp2", "percent": "50"}]})
    run(rt, split)
    found = outcome(rt)
    assert [(payee, amount) for payee, amount, _s, _d in found[("deals", "s1")]["rewards"]] == [
        ("hcp1", "100.00"), ("hcp2", "50.00")]


def test_a_new_year_starts_the_cap_again(world: Any) -> None:
    rt = world(PER_PAYEE)
    run(rt, won("d1", "gov", "200.00", "2025-12-30T00:00:00Z"), won("d2", "gov", "200.00", "2025-12-31T23:59:59Z"),
        won("d3", "gov", "200.00", "2026-01-01T00:00:00Z"), won("d4", "gov", "200.00", "2026-06-01T00:00:00Z"))
    found = outcome(rt)
    assert [amounts(found, "deals", d) for d in ("d1", "d2", "d3", "d4")] == [
        ["200.00"], ["50.00"], ["200.00"], ["50.00"]]
    assert [found[("deals", d)]["rewards"][0][3]["capped"][0]["cap"] for d in ("d2", "d4")] == [
        "flag government_official per payee gov 2025", "flag government_official per payee gov 2026"]


@pytest.mark.parametrize("limit", [1, None], ids=["batch-by-batch", "one-batch"])
def test_a_cancelled_reward_gives_its_room_back_as_for_program_caps(world: Any, limit: int | None) -> None:
    """d1 is lost before it is paid: its reward is cancelled and no longer counts, in this program or another; the
    answer is the same whether the loss came in the same batch or an earlier one, as for the program caps."""
    rt = world(PER_PAYEE)
    run(rt, won("d1", "gov", "200.00"), lost("d1", "gov"), won("d2", "gov", "200.00", "2026-03-06T00:00:00Z"),
        course("c1", "gov", "2026-03-07T00:00:00Z"), limit=limit)
    found = outcome(rt)
    assert [status for _p, _a, status, _d in found[("deals", "d1")]["rewards"]] == ["cancelled"]
    assert amounts(found, "deals", "d2") == ["200.00"]  # d1's 200 was given back
    assert amounts(found, "training", "c1") == ["50.00"]  # across programs: 200 used of 250
    assert found[("training", "c1")]["rewards"][0][3]["capped"][0]["used"] == "200.00"


def test_program_caps_cut_first_and_both_cuts_are_recorded(world: Any) -> None:
    rt = world(PER_PAYEE, deals='caps = [{per = "payee", amount = "180", currency = "USD"}]')
    run(rt, won("d1", "gov", "100.00"), course("c1", "gov"), won("d2", "gov", "100.00"))
    found = outcome(rt)
    [(_p, amount, _s, details)] = found[("deals", "d2")]["rewards"]
    assert amount == "50.00"
    assert details["earned"] == "100.00"
    assert [(c["cap"], c["cut"]) for c in details["capped"]] == [
        ("per payee gov all", "20.00"), ("flag government_official per payee gov 2026", "30.00")]


def test_a_flagged_payee_paid_in_a_currency_without_a_cap_fails_the_calculation(world: Any) -> None:
    rt = world(PER_PAYEE)
    run(rt, won("d1", "gov", "100.00", currency="EUR"), won("d2", "ana", "100.00", currency="EUR"))
    found = outcome(rt)
    assert found[("deals", "d1")]["status"] == "failed"
    assert found[("deals", "d1")]["reason"] == (
        "compliance.gifts.flag_caps: payee gov carries flag government_official, capped in USD, and the reward is "
        "in EUR: amounts in different currencies are not compared (add a cap of the flag in EUR)")
    assert amounts(found, "deals", "d2") == ["100.00"]  # one bad record does not stop the others


def test_caps_in_several_currencies_each_cap_their_own(world: Any) -> None:
    rt = world(PER_PAYEE + PER_PAYEE.replace('"250"', '"120"').replace("USD", "EUR"))
    run(rt, won("d1", "gov", "100.00", currency="EUR"), won("d2", "gov", "100.00", currency="EUR"),
        won("d3", "gov", "100.00"))
    found = outcome(rt)
    assert [amounts(found, "deals", d) for d in ("d1", "d2", "d3")] == [["100.00"], ["20.00"], ["100.00"]]


def test_a_clawback_after_payment_nets_its_adjustment_into_the_total(world: Any) -> None:
    """d1 was paid, then lost: the clawback's adjustment (-200.00) counts against the 200.00 granted, as a program
    cap counts it, so d2 has room again."""
    rt = world(PER_PAYEE)
    run(rt, won("d1", "gov", "200.00"))
    with rt.engine.begin() as conn:  # as if its payout was paid: the clawback then writes an adjustment
        conn.execute(update(rewards).values(status="paid"))
    run(rt, lost("d1", "gov"), won("d2", "gov", "200.00", "2026-03-06T00:00:00Z"))
    found = outcome(rt)
    assert amounts(found, "deals", "d1") == ["200.00", "-200.00"]
    assert amounts(found, "deals", "d2") == ["200.00"]
    run(rt, won("d3", "gov", "200.00", "2026-03-07T00:00:00Z"))
    assert amounts(outcome(rt), "deals", "d3") == ["50.00"]
