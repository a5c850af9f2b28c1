"""The console's held page (docs/console.md, Approvals and holds), on SQLite and PostgreSQL: held rewards released
or cancelled; held payouts with their screening hits, a screening hold released only by two different tokens with
written justifications (the first request shown as pending); payouts of unknown outcome resolved; filters by code,
paging, roles, CSRF, hostile text and malformed parameters.

Rewards and payouts are seeded by :class:`test_reward_actions.World` (a payout's hold recorded in its ``payout.held``
entry, as disbursing records it); one test runs the pipeline through the harness, as
``test_screening_release`` does, and releases the screening hold it made through the console.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_client import Console
from markupsafe import escape
from sqlalchemy import select, update
from test_http_actions import payout_of, payout_row
from test_reward_actions import World
from test_screening_release import HIT, row, screened_world

from payhub.audit import Entry
from payhub.compliance import personal
from payhub.db.schema import audit_log, payouts, release_requests, rewards
from payhub.runtime import Runtime
from payhub.store.audit import AuditWriter
from payhub.testing.pytest_plugin import HarnessFactory

NOTICE = re.compile(r'<p class="notice" role="status">(.*?)</p>', re.S)
SDN = "sanctions: 1 hit: OFAC SDN of 2026-01-02: entry 36 'IVAN LISTED', score 97.0, country matches"
WHY = "date of birth and nationality differ from the SDN entry"


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Iterator[World]:
    w = World(make_runtime(""), tmp_path / "payhub.toml")
    yield w
    w.close()


def signed_in(rt: Runtime, name: str, role: Any = "operator", app: Any = None) -> Console:
    console = Console(rt, app)
    console.sign_in(name, role)
    return console


@pytest.fixture
def ann(world: World) -> Console:
    return signed_in(world.rt, "ann")


@pytest.fixture
def bob(world: World, ann: Console) -> Console:
    return signed_in(world.rt, "bob", app=ann.app)


def act(console: Console, path: str, data: dict[str, Any] | None = None, back: str = "/console/held") -> str:
    """Post a form of the held page (read first, for its CSRF token), follow the 303 and return the notice."""
    console.get("/console/held")
    answer = console.post(path, {"back": back, **(data or {})})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == back
    found = NOTICE.search(console.get(back).text)
    assert found is not None
    return html.unescape(found.group(1))


def shown(text: str) -> str:
    """``text`` as the page shows it (escaped by the templates)."""
    return str(escape(text))


def held_payout(world: World, hold_code: str = "screening", denials: tuple[str, ...] = (SDN,)) -> int:
    """A held payout whose ``payout.held`` entry records ``hold_code`` and the screening ``denials``."""
    payout = payout_of(world, world.reward("scheduled", payout_status="held"))
    reason = "; ".join(denials) or "does not match its audit trail: amount"
    detail: dict[str, Any] = {"reason": reason, "hold_code": hold_code}
    if denials:
        detail["denials"] = list(denials)
    else:
        detail["check"] = "audit trail"
    with world.rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == payout).values(hold_code=hold_code, reason=reason))
        AuditWriter("payhub", "seed").append(conn, [Entry("payout.held", "payout", payout, detail, "held")])
    return payout


def payout_entries(world: World, payout: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(actor, action, detail) of the payout's entries signed by tokens."""
    with world.rt.engine.connect() as conn:
        return [(r.actor, r.action, json.loads(r.detail)) for r in conn.execute(
            select(audit_log).where(audit_log.c.subject_type == "payout", audit_log.c.subject_id == str(payout),
                                    audit_log.c.actor.like("token:%")).order_by(audit_log.c.seq))]


def pending(world: World, payout: int) -> list[str]:
    with world.rt.engine.connect() as conn:
        return list(conn.execute(select(release_requests.c.operator)
                                 .where(release_requests.c.payout_id == payout)).scalars())


def section(page: str, heading_id: str) -> str:
    """The part of the page in the section headed ``heading_id``."""
    start = page.index(f'aria-labelledby="{heading_id}"')
    end = page.find("<section", start)
    return page[start:end if end > 0 else None]


def ids_in(part: str) -> list[int]:
    return [int(n) for n in re.findall(r'<th scope="row">#(\d+)</th>', part)]


# ------------------------------------------------------------------------------------------- held rewards


def test_a_held_reward_is_released_or_cancelled_with_a_reason(world: World, ann: Console) -> None:
    released = world.reward("held", needed=1, hold_code="operator", hold_reason="partner under review")
    cancelled = world.reward("held", hold_code="payout_failed", hold_reason="payout 9 failed")
    page = ann.get("/console/held").text
    rewards = section(page, "held-rewards")
    assert ids_in(rewards) == [released, cancelled]
    assert "partner under review" in rewards and "payout_failed" in rewards

    assert act(ann, f"/console/rewards/{released}/release", {"reason": ""}) == (
        f"Releasing reward {released} refused: a reason is required (it is recorded in the audit log)")
    assert world.state(released)[0] == "held"
    assert act(ann, f"/console/rewards/{released}/release", {"reason": "review done"}) == (
        f"Reward {released} released by token:ann: it is back in the approvals queue.")
    assert world.state(released) == ("awaiting_approval", None, None)  # it still lacks its approval
    assert act(ann, f"/console/rewards/{cancelled}/cancel", {"reason": "partner left the program"}) == (
        f"Reward {cancelled} cancelled by token:ann: it will never be paid.")
    assert world.state(cancelled)[0] == "cancelled"
    assert ids_in(section(ann.get("/console/held").text, "held-rewards")) == []
    assert [(a, action) for a, action, _o, _d in world.audit(released) if a.startswith("token:")] == [
        ("token:ann", "reward.released")]
    assert world.verified()


def test_held_rewards_filter_by_code_and_page(world: World, ann: Console) -> None:
    operator_held = [world.reward("held", hold_code="operator", hold_reason=f"review {n}") for n in range(3)]
    budget = world.reward("held", hold_code="budget", hold_reason="budget spiff:2026 is spent", budget_key="k")
    page = ann.get("/console/held?reward_code=budget").text
    assert ids_in(section(page, "held-rewards")) == [budget]
    assert "overrides the program's budget" in page
    seen: list[int] = []
    path: str | None = "/console/held?reward_code=operator&limit=2"
    while path:
        part = section(ann.get(path).text, "held-rewards")
        seen += ids_in(part)
        found = re.search(r'<a href="([^"]+)" rel="next">', part)
        path = html.unescape(found.group(1)) if found else None
        assert path is None or "reward_code=operator" in path
    assert seen == operator_held


# ------------------------------------------------------------------------------------------- held payouts


def test_a_screening_hold_is_released_only_by_two_different_tokens(world: World, ann: Console,
                                                                    bob: Console) -> None:
    payout = held_payout(world)
    part = section(ann.get("/console/held").text, "held-payouts")
    assert ids_in(part) == [payout]
    assert shown(SDN) in part and "none yet" in part  # the list, entry and score of the hit
    assert "Request release (first of two)" in part and 'minlength="20"' in part
    assert "5000.00 EUR<br><small>1 reward</small>" in part

    assert act(ann, f"/console/payouts/{payout}/release", {"reason": "false positive"}) == (
        f"Releasing payout {payout} refused: the justification is too short: releasing a screening hold needs at "
        "least 20 characters saying why the hit does not apply")
    assert act(ann, f"/console/payouts/{payout}/release", {"reason": "\u200b" * 25 + "short"}).startswith(
        f"Releasing payout {payout} refused: the justification is too short")
    assert pending(world, payout) == []

    assert act(ann, f"/console/payouts/{payout}/release", {"reason": WHY}) == (
        f"Payout {payout}: the release requested by token:ann is recorded; a screening hold is released by a "
        "second, different operator.")
    assert (payout_row(world, payout).status, pending(world, payout)) == ("held", ["token:ann"])
    mine = section(ann.get("/console/held").text, "held-payouts")
    assert "Release requested by you" in mine and "<button type=\"button\" disabled>" in mine
    assert "Requested by <bdi>token:ann</bdi>" in mine and WHY in mine and "Pending:" in mine
    assert act(ann, f"/console/payouts/{payout}/release", {"reason": WHY + ", again"}).startswith(
        f"Releasing payout {payout} refused: payout {payout}: token:ann already asked to release it")

    theirs = section(bob.get("/console/held").text, "held-payouts")
    assert "Release (second operator)" in theirs and "Requested by <bdi>token:ann</bdi>" in theirs
    assert act(bob, f"/console/payouts/{payout}/release", {"reason": "passport copy on file shows another person"}) == (
        f"Payout {payout} released from its screening hold by token:ann and token:bob: it is scheduled, and "
        "screened and checked again before it is sent.")
    released = payout_row(world, payout)
    assert (released.status, released.hold_code, released.released_by) == ("scheduled", None, "token:ann and token:bob")
    assert [(actor, action) for actor, action, _d in payout_entries(world, payout)] == [
        ("token:ann", "payout.release_requested"), ("token:bob", "payout.released")]
    assert payout_entries(world, payout)[-1][2]["operators"] == ["token:ann", "token:bob"]
    assert payout_entries(world, payout)[-1][2]["covers"] == [SDN]
    assert ids_in(section(ann.get("/console/held").text, "held-payouts")) == []
    assert world.verified()


def test_an_audit_trail_hold_is_released_by_one_token_and_a_payout_cancelled(world: World, ann: Console) -> None:
    trail, screened = held_payout(world, "audit_trail", ()), held_payout(world)
    page = ann.get("/console/held?payout_code=audit_trail").text
    assert ids_in(section(page, "held-payouts")) == [trail]
    assert "does not match its audit trail" in page
    assert act(ann, f"/console/payouts/{trail}/release", {"reason": "amount restored"},
               back="/console/held?payout_code=audit_trail") == (
        f"Payout {trail} released from its audit_trail hold by token:ann: it is scheduled, and screened and checked "
        "again before it is sent.")
    assert payout_row(world, trail).status == "scheduled"

    act(ann, f"/console/payouts/{screened}/release", {"reason": WHY})
    assert act(ann, f"/console/payouts/{screened}/cancel", {"reason": "paid next quarter instead"}) == (
        f"Payout {screened} cancelled by token:ann: its rewards are held as owed (release them to pay them in a new "
        "payout).")
    assert (payout_row(world, screened).status, pending(world, screened)) == ("cancelled", [])
    assert act(ann, f"/console/payouts/{screened}/cancel", {"reason": "again"}) == (
        f"Cancelling payout {screened} refused: payout {screened} is cancelled; only scheduled or held or retrying "
        "payouts can be cancelled")
    rewards = section(ann.get("/console/held?reward_code=payout_failed").text, "held-rewards")
    assert len(ids_in(rewards)) == 1  # its reward, held as owed
    assert world.verified()


def test_the_harness_screening_hold_is_paid_once_after_two_console_operators(
        payhub_harness: HarnessFactory) -> None:
    harness, rail, screen, held = screened_world(payhub_harness)
    rt = Runtime.for_cli(harness.settings, "console")
    try:
        ann = signed_in(rt, "ann")
        bob = signed_in(rt, "bob", app=ann.app)
        assert shown(HIT) in section(ann.get("/console/held").text, "held-payouts")
        act(ann, f"/console/payouts/{held}/release", {"reason": WHY})
        harness.run_until_idle(skip_waits=True)
        assert row(rt, held).status == "held"  # one operator is not enough
        act(bob, f"/console/payouts/{held}/release", {"reason": "passport copy on file shows another person"})
        harness.run_until_idle(skip_waits=True)
        assert row(rt, held).status == "sent"
        key = row(rt, held).idempotency_key
        assert [call for call in rail.calls if key in call] == [[key]]
        assert screen.screened.count(held) == 2
        harness.assert_exactly_once()
        assert harness.audit_problem() is None
    finally:
        rt.close()


# ------------------------------------------------------------------------------- payouts of unknown outcome


def test_payouts_of_unknown_outcome_are_resolved(world: World, ann: Console) -> None:
    unresolved = payout_of(world, world.reward("scheduled", payout_status="unresolved"))
    unknown = payout_of(world, world.reward("scheduled", payout_status="unknown"))
    part = section(ann.get("/console/held").text, "open-payouts")
    assert ids_in(part) == [unresolved, unknown]
    assert ids_in(section(ann.get("/console/held?state=unknown").text, "open-payouts")) == [unknown]
    assert act(ann, f"/console/payouts/{unresolved}/resolve",
               {"outcome": "paid", "provider_ref": "prov-42", "reason": "seen in the provider's portal"}) == (
        f"Payout {unresolved} resolved by token:ann as paid: it is paid, without being sent again.")
    done = payout_row(world, unresolved)
    assert (done.status, done.provider_ref) == ("paid", "prov-42")
    assert payout_entries(world, unresolved)[-1] == ("token:ann", "payout.resolved", {
        "from": "unresolved", "to": "paid", "reason": "seen in the provider's portal", "provider_ref": "prov-42"})
    assert act(ann, f"/console/payouts/{unknown}/resolve", {"outcome": "not-sent", "reason": "no trace of it"}) == (
        f"Payout {unknown} resolved by token:ann as not-sent: it is sent again with the same idempotency key.")
    assert payout_row(world, unknown).status == "retrying"
    assert act(ann, f"/console/payouts/{unknown}/resolve", {"outcome": "paid", "reason": "x"}) == (
        f"Resolving payout {unknown} refused: payout {unknown} is retrying; only unresolved or unknown payouts can "
        "be resolved")
    ann.get("/console/held")
    bad = ann.post(f"/console/payouts/{unknown}/resolve", {"outcome": "failed", "reason": "x"})
    assert bad.status_code == 422 and "<h1>Refused</h1>" in bad.text
    assert world.verified()


# ----------------------------------------------------------------------------------- roles, CSRF, hostile


def test_an_auditor_sees_holds_but_is_refused_every_action(world: World, ann: Console) -> None:
    payout = held_payout(world)
    reward = world.reward("held", hold_code="operator", hold_reason="review")
    audrey = signed_in(world.rt, "audrey", "auditor", app=ann.app)
    page = audrey.get("/console/held")
    assert page.status_code == 200 and shown(SDN) in page.text
    assert "/release" not in page.text and "/cancel" not in page.text
    for path in (f"/console/payouts/{payout}/release", f"/console/payouts/{payout}/cancel",
                 f"/console/rewards/{reward}/release", f"/console/payouts/{payout}/resolve"):
        answer = audrey.post(path, {"reason": WHY, "outcome": "paid"})
        assert answer.status_code == 403, path
    assert (payout_row(world, payout).status, pending(world, payout), world.state(reward)[0]) == ("held", [], "held")


def test_payout_forms_without_csrf_change_nothing(world: World, ann: Console) -> None:
    payout = held_payout(world)
    ann.get("/console/held")
    assert ann.post(f"/console/payouts/{payout}/release", {"reason": WHY}, csrf=False).status_code == 403
    assert ann.post(f"/console/payouts/{payout}/cancel", {"reason": WHY, "csrf": "x" * 43}).status_code == 403
    assert (payout_row(world, payout).status, pending(world, payout)) == ("held", [])


def test_hostile_hold_text_is_escaped(world: World, ann: Console) -> None:
    hostile = '<script>alert(1)</script>\u202e"><svg onload=alert(2)>'
    world.reward("held", hold_code="operator", hold_reason=hostile)
    payout = held_payout(world, denials=(hostile,))
    act(ann, f"/console/payouts/{payout}/release", {"reason": hostile + " is not the listed person at all"})
    page = ann.get("/console/held").text
    assert "<script>alert" not in page and "<svg" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3  # reward reason, hit, justification


MALFORMED_QUERIES = ["reward_code=nope", "payout_code=screening2", "state=paid", "limit=-5", "rewards_after=x",
                     "open_after=1.5", "payee=" + "x" * 201, "payee=%00", "stat=unknown", "limit=1001"]
MALFORMED_IDS = [("/console/payouts/x/release", 422), ("/console/payouts/0/cancel", 404),
                 ("/console/payouts/%20/resolve", 422), ("/console/payouts/99999999999999999999/release", 404)]


def test_malformed_parameters_and_ids_are_a_422_page_and_impossible_ids_a_404_page(ann: Console) -> None:
    for query in MALFORMED_QUERIES:
        answer = ann.get(f"/console/held?{query}")
        assert answer.status_code == 422 and "<h1>Refused</h1>" in answer.text, query
    ann.get("/console/held")
    for path, status in MALFORMED_IDS:
        answer = ann.post(path, {"reason": WHY, "outcome": "paid"})
        assert answer.status_code == status and answer.headers["content-type"].startswith("text/html"), path


def test_an_unknown_payout_is_refused_with_a_notice(ann: Console) -> None:
    assert act(ann, "/console/payouts/777/release", {"reason": WHY}) == (
        "Releasing payout 777 refused: payout 777 does not exist")


def test_sealed_personal_values_in_reasons_are_shown_per_role(world: World, ann: Console) -> None:
    """A reason holding a sealed payee name (``pii:v1:...``) is opened for operators and ``[sealed]`` for auditors,
    on the held page and in the search listings, never shown as ciphertext."""
    with world.rt.engine.begin() as conn:
        key = personal.keys(conn, ["p1"], create=True)["p1"]
    sealed = personal.seal_with(key, "p1", "Zoë Payee")
    reward = world.reward("held", hold_code="operator", hold_reason=sealed)
    held = payout_of(world, world.reward("scheduled", payout_status="held"))  # no payout.held entry: its reason
    unknown = payout_of(world, world.reward("scheduled", payout_status="unknown"))
    with world.rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id.in_([held, unknown])).values(reason=sealed))
        conn.execute(update(payouts).where(payouts.c.id == held).values(hold_code="audit_trail"))
    audrey = signed_in(world.rt, "audrey", "auditor", app=ann.app)
    for console, shown, hidden in ((ann, "Zoë Payee", "[sealed]"), (audrey, "[sealed]", "Zoë")):
        page = console.get("/console/held").text
        assert sealed not in page and hidden not in page
        assert [section(page, part).count(shown) for part in ("held-rewards", "held-payouts", "open-payouts")] == [
            1, 1, 1]
        for kind, ids in (("payouts", [held, unknown]), ("rewards", [reward])):
            listing = console.get(f"/console/search?kind={kind}&payee=p1").text
            assert sealed not in listing and hidden not in listing and listing.count(shown) == len(ids), kind
    with world.rt.engine.connect() as conn:  # the stored text stays sealed
        assert conn.execute(select(rewards.c.hold_reason).where(rewards.c.id == reward)).scalar_one() == sealed
