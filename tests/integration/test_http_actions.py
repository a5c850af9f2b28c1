"""API v1 operator actions (approve, hold, release, cancel rewards; resolve, release, cancel payouts; retry
calculations) through httpx's ASGI transport, on SQLite and PostgreSQL.

Rewards and payouts are seeded in the states each test needs by :class:`test_reward_actions.World`, as the CLI's
tests of the same decisions seed them; each action is then asked over HTTP with a real token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select
from test_reward_actions import World

from payhub.audit import verify
from payhub.clock import utcnow
from payhub.db.schema import approvals, audit_log, calculations, events, payouts, rewards
from payhub.http.app import create_app
from payhub.pipeline import reward_actions
from payhub.tokens import Role, create

CLIENT = "203.0.113.7"
ORIGIN = f"http@{CLIENT}"


class Api:
    """The app over the world's runtime, called from ``CLIENT`` with named tokens of chosen roles."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.app = create_app(world.rt)
        self.tokens: dict[str, str] = {}

    def token(self, name: str, role: Role = "operator") -> str:
        if name not in self.tokens:
            self.tokens[name] = create(self.world.rt, name, role)
        return self.tokens[name]

    def post(self, path: str, body: Any = None, *, as_: str | None = "ann", role: Role = "operator") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(as_, role)}"} if as_ else {}
        # ASCII JSON, so that a lone surrogate travels as the \ud800 escape any client may send.
        content = None if body is None else json.dumps(body).encode()
        headers |= {"Content-Type": "application/json"} if content is not None else {}

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(CLIENT, 51000))
            async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
                return await client.post(f"/api/v1{path}", content=content, headers=headers)

        return anyio.run(call)

    def get(self, path: str) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(CLIENT, 51000))
            async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
                return await client.get(path)

        return anyio.run(call)


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Iterator[World]:
    w = World(make_runtime(""), tmp_path / "payhub.toml")
    yield w
    w.close()


@pytest.fixture
def api(world: World) -> Api:
    return Api(world)


def entries(world: World, action: str | None = None) -> list[tuple[str, str, str, str, str, dict[str, Any]]]:
    """(actor, action, subject id, outcome, origin, detail) of the entries tokens wrote, oldest first."""
    query = select(audit_log).where(audit_log.c.actor.like("token:%")).order_by(audit_log.c.seq)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    with world.rt.engine.connect() as conn:
        return [(r.actor, r.action, r.subject_id, r.outcome, r.origin, json.loads(r.detail))
                for r in conn.execute(query)]


def decisions(world: World) -> list[tuple[str, str, str, str, str, dict[str, Any]]]:
    """The entries tokens wrote, without the request entries."""
    return [e for e in entries(world) if e[1] != "api.request"]


def state(world: World) -> tuple[Any, ...]:
    """Every row an action may change (the audit log aside)."""
    with world.rt.engine.connect() as conn:
        return tuple(conn.execute(select(table).order_by(*table.primary_key.columns)).all()
                     for table in (rewards, approvals, payouts, calculations, events))


def payout_of(world: World, reward_id: int) -> int:
    with world.rt.engine.connect() as conn:
        return int(conn.execute(select(rewards.c.payout_id).where(rewards.c.id == reward_id)).scalar_one())


def payout_row(world: World, payout_id: int) -> Any:
    with world.rt.engine.connect() as conn:
        return conn.execute(select(payouts).where(payouts.c.id == payout_id)).one()


def failed_calculation(world: World, n: int) -> int:
    """An event whose calculation by program ``spiff`` failed; return the event's id."""
    now = utcnow()
    with world.rt.engine.begin() as conn:
        event_id = conn.execute(events.insert().returning(events.c.id).values(
            key=f"crm:Opportunity:f{n}:won", source="crm", object_type="Opportunity", object_id=f"f{n}",
            transition="won", event_type="deal_won", payee_id="p1", amount="100.00", currency="EUR",
            status="calculated", ingested_at=now, calculated_at=now)).scalar_one()
        conn.execute(calculations.insert().values(event_id=event_id, program="spiff", status="failed",
                                                  program_version_id=world.version, reason="bug in calculator",
                                                  calculated_at=now))
    return int(event_id)


def verified(world: World) -> bool:
    with world.rt.engine.connect() as conn:
        return verify(conn).ok


# --------------------------------------------------------------------------------------------- approvals


def test_an_approval_by_a_token_makes_the_reward_pending_and_is_signed_by_it(world: World, api: Api) -> None:
    reward = world.reward("awaiting_approval", needed=1)
    answer = api.post("/rewards/approve", {"ids": [reward, reward], "note": "checked the contract"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"actor": "token:ann", "rewards": [
        {"id": reward, "status": "pending", "approvals": 1, "needed": 1}]}
    assert world.state(reward) == ("pending", None, None)
    assert world.approvers(reward) == ["token:ann"]
    assert entries(world) == [
        ("token:ann", "reward.approved", str(reward), "ok", ORIGIN, {
            "approver": "token:ann", "approvals": 1, "needed": 1, "pending": True, "note": "checked the contract"}),
        ("token:ann", "api.request", "/api/v1/rewards/approve", "ok", ORIGIN, {
            "method": "POST", "status": 200, "asked": {"ids": [reward, reward], "note": "checked the contract"}})]
    assert verified(world)


def test_dual_approval_needs_two_tokens_and_the_same_token_twice_is_refused(world: World, api: Api) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    first = api.post("/rewards/approve", {"ids": [reward]}, as_="ann")
    assert first.json()["rewards"] == [{"id": reward, "status": "awaiting_approval", "approvals": 1, "needed": 2}]

    before = state(world)
    again = api.post("/rewards/approve", {"ids": [reward], "note": "me again"}, as_="ann")
    message = f"reward {reward} is already approved by token:ann; it needs a different second approver"
    assert (again.status_code, again.json()) == (409, {"error": message})
    assert state(world) == before
    assert entries(world)[-2:] == [
        ("token:ann", "reward.approval_refused", str(reward), "refused", ORIGIN,
         {"approver": "token:ann", "reason": message, "note": "me again"}),
        ("token:ann", "api.request", "/api/v1/rewards/approve", "refused", ORIGIN,
         {"method": "POST", "status": 409, "reason": message, "asked": {"ids": [reward], "note": "me again"}})]

    second = api.post("/rewards/approve", {"ids": [reward]}, as_="bob")
    assert second.json() == {"actor": "token:bob", "rewards": [
        {"id": reward, "status": "pending", "approvals": 2, "needed": 2}]}
    assert world.state(reward)[0] == "pending"
    assert world.approvers(reward) == ["token:ann", "token:bob"]
    assert [(e[0], e[1], e[3]) for e in decisions(world)] == [
        ("token:ann", "reward.approved", "ok"), ("token:ann", "reward.approval_refused", "refused"),
        ("token:bob", "reward.approved", "ok")]
    assert verified(world)


def test_a_cli_user_and_a_token_are_two_approvers(world: World, api: Api) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    reward_actions.approve(world.as_("user:ann"), [reward])  # `payhub rewards approve` as the login ann
    answer = api.post("/rewards/approve", {"ids": [reward]}, as_="ann")
    assert answer.json()["rewards"] == [{"id": reward, "status": "pending", "approvals": 2, "needed": 2}]
    assert world.approvers(reward) == ["token:ann", "user:ann"]


def test_an_admin_token_may_act_as_an_operator(world: World, api: Api) -> None:
    reward = world.reward("awaiting_approval", needed=1)
    answer = api.post("/rewards/approve", {"ids": [reward]}, as_="root", role="admin")
    assert answer.status_code == 200 and world.approvers(reward) == ["token:root"]


# ------------------------------------------------------------------------------------ hold, release, cancel


def test_hold_release_and_cancel_rewards_signed_by_the_token(world: World, api: Api) -> None:
    waiting, pending = world.reward("awaiting_approval", needed=2), world.reward("pending")
    api.post("/rewards/approve", {"ids": [waiting]}, as_="bob")

    held = api.post("/rewards/hold", {"ids": [waiting, pending], "reason": "  partner under review "})
    assert held.json() == {"actor": "token:ann", "rewards": [{"id": waiting, "status": "held"},
                                                             {"id": pending, "status": "held"}]}
    assert world.state(waiting) == world.state(pending) == ("held", "operator", "partner under review")

    released = api.post("/rewards/release", {"ids": [waiting, pending], "reason": "review done"})
    assert released.json() == {"actor": "token:ann", "rewards": [{"id": waiting, "status": "awaiting_approval"},
                                                                 {"id": pending, "status": "pending"}]}
    assert world.approvers(waiting) == ["token:bob"]  # the approval given before the hold still counts

    cancelled = api.post("/rewards/cancel", {"ids": [pending], "reason": "deal reversed"})
    assert cancelled.json() == {"actor": "token:ann", "rewards": [{"id": pending, "status": "cancelled"}]}
    assert world.state(pending)[0] == "cancelled"

    assert [(e[0], e[1], e[2], e[3], e[4]) for e in decisions(world) if e[0] == "token:ann"] == [
        ("token:ann", "reward.held", str(waiting), "held", ORIGIN),
        ("token:ann", "reward.held", str(pending), "held", ORIGIN),
        ("token:ann", "reward.released", str(waiting), "ok", ORIGIN),
        ("token:ann", "reward.released", str(pending), "ok", ORIGIN),
        ("token:ann", "reward.cancelled", str(pending), "cancelled", ORIGIN)]
    assert decisions(world)[-1][5] == {"reason": "deal reversed", "from": "pending", "amount": "5000.00",
                                       "currency": "EUR", "budget_key": None}
    assert [e[5]["asked"] for e in entries(world, "api.request")][1:] == [
        {"ids": [waiting, pending], "reason": "partner under review"},
        {"ids": [waiting, pending], "reason": "review done"}, {"ids": [pending], "reason": "deal reversed"}]
    assert verified(world)


# ----------------------------------------------------------------------------------------------- payouts


def test_resolve_a_payout_as_sent_settles_its_rewards(world: World, api: Api) -> None:
    reward = world.reward("scheduled", payout_status="unresolved")
    payout = payout_of(world, reward)
    answer = api.post(f"/payouts/{payout}/resolve",
                      {"outcome": "sent", "reason": "seen in the provider's portal", "provider_ref": "prov-42"})
    assert answer.json() == {"actor": "token:ann", "id": payout, "status": "sent"}
    row = payout_row(world, payout)
    assert (row.status, row.provider_ref) == ("sent", "prov-42")
    assert world.state(reward)[0] == "sent"
    assert decisions(world) == [("token:ann", "payout.resolved", str(payout), "ok", ORIGIN, {
        "from": "unresolved", "to": "sent", "reason": "seen in the provider's portal", "provider_ref": "prov-42"})]
    assert entries(world, "api.request")[-1][5]["asked"] == {
        "payout": payout, "outcome": "sent", "reason": "seen in the provider's portal", "provider_ref": "prov-42"}
    assert verified(world)


def test_resolve_not_sent_sends_again(world: World, api: Api) -> None:
    payout = payout_of(world, world.reward("scheduled", payout_status="unresolved"))
    answer = api.post(f"/payouts/{payout}/resolve", {"outcome": "not-sent", "reason": "provider has no record"})
    assert answer.json() == {"actor": "token:ann", "id": payout, "status": "retrying"}
    assert payout_row(world, payout).status == "retrying"


def test_release_a_held_payout_records_both_tokens(world: World, api: Api) -> None:
    payout = payout_of(world, world.reward("scheduled", payout_status="held"))  # no hold code: a screening hold
    first = api.post(f"/payouts/{payout}/release", {"reason": "false positive on the sanctions list"})
    assert (first.status_code, first.json()) == (202, {
        "actor": "token:ann", "id": payout, "status": "held", "hold_code": "screening", "released_hold": "screening",
        "release": "awaiting_second_operator", "operators": ["token:ann"]})
    second = api.post(f"/payouts/{payout}/release", {"reason": "date of birth differs from the entry"}, as_="bob")
    assert (second.status_code, second.json()) == (200, {
        "actor": "token:bob", "id": payout, "status": "scheduled", "hold_code": None, "released_hold": "screening",
        "release": "released", "operators": ["token:ann", "token:bob"]})
    row = payout_row(world, payout)
    assert (row.status, row.released_by) == ("scheduled", "token:ann and token:bob")
    assert [(e[0], e[1], e[2], e[3], e[4]) for e in decisions(world)] == [
        ("token:ann", "payout.release_requested", str(payout), "requested", ORIGIN),
        ("token:bob", "payout.released", str(payout), "ok", ORIGIN)]
    assert decisions(world)[1][5]["justifications"] == ["false positive on the sanctions list",
                                                        "date of birth differs from the entry"]


def test_cancel_a_payout_holds_its_rewards(world: World, api: Api) -> None:
    reward = world.reward("scheduled")
    payout = payout_of(world, reward)
    answer = api.post(f"/payouts/{payout}/cancel", {"reason": "wrong bank details"})
    assert answer.json() == {"actor": "token:ann", "id": payout, "status": "cancelled"}
    assert payout_row(world, payout).status == "cancelled"
    assert world.state(reward) == ("held", "payout_failed",
                                   f"payout {payout} cancelled: cancelled by operator: wrong bank details")
    assert decisions(world) == [("token:ann", "payout.cancelled", str(payout), "failed", ORIGIN, {
        "from": "scheduled", "reason": "cancelled by operator: wrong bank details"})]
    assert verified(world)


# ---------------------------------------------------------------------------------------------- calculations


def test_retry_failed_calculations_of_one_event(world: World, api: Api) -> None:
    one, two = failed_calculation(world, 1), failed_calculation(world, 2)
    answer = api.post("/calculations/retry", {"event_id": one})
    assert answer.json() == {"actor": "token:ann", "retried": 1}
    assert decisions(world) == [("token:ann", "calculation.retried", str(one), "ok", ORIGIN,
                                 {"program": "spiff", "previous_reason": "bug in calculator"})]
    assert api.post("/calculations/retry", {"program": "other"}).json()["retried"] == 0
    assert api.post("/calculations/retry", {}).json()["retried"] == 1  # the rest: event two
    with world.rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(calculations)).scalar_one() == 0
        assert set(conn.execute(select(events.c.status).where(events.c.id.in_([one, two]))).scalars()) == {"ingested"}


# ---------------------------------------------------------------------------------------------- refusals


def every_action(world: World) -> list[tuple[str, dict[str, Any]]]:
    """One call of each action that an operator's token would be allowed to make."""
    waiting, held = world.reward("awaiting_approval", needed=1), world.reward("held", hold_code="operator",
                                                                              hold_reason="r")
    pending, carried = world.reward("pending"), world.reward("carried")
    unresolved = payout_of(world, world.reward("scheduled", payout_status="unresolved"))
    on_hold = payout_of(world, world.reward("scheduled", payout_status="held"))
    scheduled = payout_of(world, world.reward("scheduled"))
    event = failed_calculation(world, 1)
    return [("/rewards/approve", {"ids": [waiting]}), ("/rewards/hold", {"ids": [pending], "reason": "x"}),
            ("/rewards/release", {"ids": [held], "reason": "x"}),
            ("/rewards/cancel", {"ids": [carried], "reason": "x"}),
            (f"/payouts/{unresolved}/resolve", {"outcome": "paid", "reason": "x"}),
            (f"/payouts/{on_hold}/release", {"reason": "false positive on the sanctions list"}),
            (f"/payouts/{scheduled}/cancel", {"reason": "x"}),
            ("/calculations/retry", {"event_id": event})]


def test_an_auditor_token_may_do_no_action_and_nothing_changes(world: World, api: Api) -> None:
    calls = every_action(world)
    api.token("audrey", "auditor")
    before = state(world)
    for path, body in calls:
        answer = api.post(path, body, as_="audrey")
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json() == {"detail": "the auditor role may not do this; it needs the operator role"}
        unsigned = api.post(path, body, as_=None)
        assert unsigned.status_code == 401, path
    assert state(world) == before
    assert [(e[0], e[1], e[2], e[3]) for e in entries(world)] == [
        ("token:audrey", "api.request", f"/api/v1{path}", "denied") for path, _ in calls]
    # The same calls by an operator are all accepted: the refusals were the role's.
    assert [api.post(path, body).status_code for path, body in calls] == [
        202 if path.endswith("/release") and path.startswith("/payouts") else 200 for path, _ in calls]


def test_unknown_ids_are_refused_naming_them(world: World, api: Api) -> None:
    reward = world.reward("awaiting_approval", needed=1)
    before = state(world)
    answer = api.post("/rewards/approve", {"ids": [reward, 987654321]})
    assert (answer.status_code, answer.json()) == (409, {"error": "reward 987654321 does not exist"})
    # The refusal is audited on the named reward that exists (an audited subject must have a row).
    assert decisions(world) == [("token:ann", "reward.approval_refused", str(reward), "refused", ORIGIN, {
        "approver": "token:ann", "reason": "not approved: the command also named reward 987654321, which was refused"})]
    for path, body in [("/rewards/hold", {"ids": [987654321], "reason": "x"}),
                       ("/rewards/release", {"ids": [987654321], "reason": "x"}),
                       ("/rewards/cancel", {"ids": [987654321], "reason": "x"})]:
        answer = api.post(path, body)
        assert (answer.status_code, answer.json()) == (409, {"error": "reward 987654321 does not exist"}), path
    for verb, asked in [("resolve", {"outcome": "sent", "reason": "x"}), ("release", {"reason": "x"}),
                        ("cancel", {"reason": "x"})]:
        answer = api.post(f"/payouts/987654321/{verb}", asked)
        assert (answer.status_code, answer.json()) == (409, {"error": "payout 987654321 does not exist"}), verb
    assert state(world) == before
    assert [e[3] for e in entries(world, "api.request")] == ["refused"] * 7


def test_actions_in_a_state_that_does_not_allow_them_are_refused(world: World, api: Api) -> None:
    cancelled, paid = world.reward("cancelled"), world.reward("paid")
    scheduled = payout_of(world, world.reward("scheduled"))
    before = state(world)
    refusals: dict[str, tuple[dict[str, Any], str]] = {
        "/rewards/hold": ({"ids": [cancelled], "reason": "x"}, f"reward {cancelled} is cancelled, not holdable"),
        "/rewards/release": ({"ids": [cancelled], "reason": "x"}, f"reward {cancelled} is cancelled, not held"),
        "/rewards/cancel": ({"ids": [paid], "reason": "x"},
                            f"reward {paid} is paid in payout {payout_of(world, paid)}; it cannot be cancelled"),
        "/rewards/approve": ({"ids": [cancelled]}, f"reward {cancelled} is cancelled, not awaiting approval"),
        f"/payouts/{scheduled}/resolve": ({"outcome": "paid", "reason": "x"},
                                          f"payout {scheduled} is scheduled; only unresolved or unknown payouts can "
                                          "be resolved"),
        f"/payouts/{scheduled}/release": ({"reason": "x"},
                                          f"payout {scheduled} is scheduled; only held payouts can be released"),
    }
    for path, (body, message) in refusals.items():
        answer = api.post(path, body)
        assert (answer.status_code, answer.json()) == (409, {"error": message}), path
    assert state(world) == before
    assert [e[5]["reason"] for e in entries(world, "api.request")] == [m for _, m in refusals.values()]


HUGE = 2**63


@pytest.mark.parametrize(("path", "body"), [
    ("/rewards/approve", {"ids": []}),
    ("/rewards/approve", {"ids": [0]}),
    ("/rewards/approve", {"ids": [HUGE]}),
    ("/rewards/approve", {"ids": ["1"]}),
    ("/rewards/approve", {"ids": [True]}),
    ("/rewards/approve", {"ids": [1.0]}),
    ("/rewards/approve", {"ids": list(range(1, 1002))}),
    ("/rewards/approve", {"ids": "1"}),
    ("/rewards/approve", {"ids": [1], "note": "a\u0000b"}),
    ("/rewards/approve", {"ids": [1], "note": "x" * 2001}),
    ("/rewards/approve", {"ids": [1], "approver": "token:someone"}),
    ("/rewards/approve", None),
    ("/rewards/hold", {"ids": [1]}),
    ("/rewards/hold", {"ids": [1], "reason": ""}),
    ("/rewards/release", {"ids": [1], "reason": " \t "}),
    ("/rewards/cancel", {"ids": [1], "reason": "lone \ud800 surrogate"}),
    ("/rewards/cancel", {"ids": [1], "reason": "pasted phk_" + "A" * 43 + " by mistake"}),
    ("/payouts/1/resolve", {"outcome": "sent", "reason": "x", "provider_ref": "phk_x"}),
    ("/payouts/0/cancel", {"reason": "x"}),
    (f"/payouts/{HUGE}/release", {"reason": "x"}),
    ("/payouts/one/cancel", {"reason": "x"}),
    ("/payouts/1/resolve", {"outcome": "lost", "reason": "x"}),
    ("/payouts/1/resolve", {"outcome": "sent", "reason": "x", "provider_ref": "r" * 201}),
    ("/payouts/1/resolve", {"outcome": "sent"}),
    ("/calculations/retry", {"event_id": 0}),
    ("/calculations/retry", {"program": ""}),
    ("/calculations/retry", None),
])
def test_bodies_and_ids_out_of_bounds_are_refused_before_anything_is_decided(
        world: World, api: Api, path: str, body: Any) -> None:
    world.reward("awaiting_approval", needed=1)  # reward 1
    payout_of(world, world.reward("scheduled", payout_status="unresolved"))
    before = state(world)
    answer = api.post(path, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid request"
    assert state(world) == before
    assert decisions(world) == []
    assert [(e[1], e[3]) for e in entries(world)] == [("api.request", "refused")]


def test_the_openapi_document_describes_the_actions(api: Api) -> None:
    spec = api.get("/api/v1/openapi.json").json()
    for path in ("/rewards/approve", "/rewards/hold", "/rewards/release", "/rewards/cancel",
                 "/payouts/{payout_id}/resolve", "/payouts/{payout_id}/release", "/payouts/{payout_id}/cancel",
                 "/calculations/retry"):
        post = spec["paths"][f"/api/v1{path}"]["post"]
        assert post["requestBody"]["required"] is True, path
        assert set(post["responses"]) >= {"200", "401", "403", "409", "422"}, path
    schemas = spec["components"]["schemas"]
    ids = schemas["Decide"]["properties"]["ids"]
    assert (ids["minItems"], ids["maxItems"], ids["items"]["minimum"], ids["items"]["exclusiveMaximum"]) == (
        1, 1000, 1, 2**63)
    assert schemas["Resolve"]["properties"]["outcome"]["enum"] == ["sent", "paid", "not-sent"]
    assert set(schemas["Approved"]["properties"]["rewards"]["items"]["$ref"].split("/")[-1:]) == {"ApprovedReward"}
