"""Releasing held payouts through the faces, on SQLite and PostgreSQL: ``POST /api/v1/payouts/{id}/release``
answers 202 for a recorded first release of a screening hold and 200 once released, refuses the same token twice
and an auditor; ``payhub payouts release`` says which it did; the payout listings show the hold code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cli_helpers import invoke
from sqlalchemy import update
from test_http_actions import Api, payout_of, payout_row, verified
from test_reward_actions import World

from payhub.audit import Entry
from payhub.cli import output
from payhub.db.schema import payouts
from payhub.store.audit import AuditWriter

WHY = "false positive: different date of birth"


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Iterator[World]:
    w = World(make_runtime(""), tmp_path / "payhub.toml")
    yield w
    w.close()


@pytest.fixture
def api(world: World) -> Api:
    return Api(world)


def held(world: World, hold_code: str | None = "screening") -> int:
    """A held payout; with ``hold_code`` its ``payout.held`` entry records it, as disbursing does (a release reads the
    hold from the audit log)."""
    payout = payout_of(world, world.reward("scheduled", payout_status="held"))
    with world.rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == payout).values(hold_code=hold_code, reason="a hold"))
        if hold_code is not None:
            AuditWriter("payhub", "seed").append(conn, [Entry("payout.held", "payout", payout,
                                                              {"reason": "a hold", "hold_code": hold_code}, "held")])
    return payout


def test_api_first_release_is_202_the_second_tokens_is_200(world: World, api: Api) -> None:
    payout = held(world)
    first = api.post(f"/payouts/{payout}/release", {"reason": WHY})
    assert first.status_code == 202
    assert first.json()["release"] == "awaiting_second_operator"
    again = api.post(f"/payouts/{payout}/release", {"reason": WHY + ", again"})
    assert again.status_code == 409
    assert "token:ann already asked to release it" in again.json()["error"]
    short = api.post(f"/payouts/{payout}/release", {"reason": "ok"}, as_="bob")
    assert (short.status_code, payout_row(world, payout).status) == (409, "held")
    assert "too short" in short.json()["error"]
    denied = api.post(f"/payouts/{payout}/release", {"reason": WHY}, as_="audrey", role="auditor")
    assert denied.status_code == 403
    done = api.post(f"/payouts/{payout}/release", {"reason": "name and country differ from entry"}, as_="bob")
    assert (done.status_code, done.json()["status"], done.json()["operators"]) == (
        200, "scheduled", ["token:ann", "token:bob"])
    assert (done.json()["hold_code"], done.json()["released_hold"]) == (None, "screening")  # as listings say
    assert verified(world)


def test_api_audit_trail_hold_is_released_by_one_token(world: World, api: Api) -> None:
    payout = held(world, "audit_trail")
    answer = api.post(f"/payouts/{payout}/release", {"reason": "amount restored"})
    assert (answer.status_code, answer.json()) == (200, {
        "actor": "token:ann", "id": payout, "status": "scheduled", "hold_code": None, "released_hold": "audit_trail",
        "release": "released", "operators": ["token:ann"]})


def test_api_an_edited_hold_code_does_not_make_a_screening_hold_one_tokens(world: World, api: Api) -> None:
    payout = held(world)
    with world.rt.engine.begin() as conn:  # an insider rewrites the copy in the row
        conn.execute(update(payouts).where(payouts.c.id == payout).values(hold_code="audit_trail"))
    answer = api.post(f"/payouts/{payout}/release", {"reason": WHY})
    assert (answer.status_code, answer.json()["hold_code"], answer.json()["release"]) == (
        202, "screening", "awaiting_second_operator")
    assert payout_row(world, payout).status == "held"


def test_cli_audit_trail_release_says_it_is_checked_and_screened_again(world: World,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 400)
    payout = held(world, "audit_trail")
    done = invoke("-c", str(world.config), "--actor", "ops:alice", "payouts", "release", str(payout), "--reason",
                  "amount restored")
    assert done.exit_code == 0, done.output
    assert " ".join(done.stdout.split()) == (f"payout {payout} released (audit_trail hold) by ops:alice; it is "
                                             "screened and checked again before it is sent")


def test_api_cancel_voids_a_pending_request(world: World, api: Api) -> None:
    payout = held(world)
    assert api.post(f"/payouts/{payout}/release", {"reason": WHY}).status_code == 202
    assert api.post(f"/payouts/{payout}/cancel", {"reason": "not paid this quarter"}).status_code == 200
    late = api.post(f"/payouts/{payout}/release", {"reason": WHY}, as_="bob")
    assert (late.status_code, late.json()) == (
        409, {"error": f"payout {payout} is cancelled; only held payouts can be released"})


def test_api_listing_shows_the_hold_code(world: World, api: Api) -> None:
    payout = held(world)
    token = api.token("ann")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=api.app, client=("203.0.113.7", 51000))
        async with httpx.AsyncClient(transport=transport, base_url="http://payhub") as client:
            return await client.get("/api/v1/payouts?status=held", headers={"Authorization": f"Bearer {token}"})

    answer = anyio.run(call)
    assert answer.status_code == 200, answer.text
    assert [(p["id"], p["hold_code"]) for p in answer.json()["items"]] == [(payout, "screening")]


def test_cli_release_says_recorded_then_released_and_lists_the_hold_code(world: World,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 400)
    monkeypatch.setattr(output.err_console, "width", 400)
    payout = held(world)
    listed = invoke("-c", str(world.config), "payouts", "list", "--status", "held", "--format", "json")
    assert '"hold_code": "screening"' in listed.stdout
    table = invoke("-c", str(world.config), "payouts", "list", "--status", "held")
    assert "hold_code" in table.stdout and "screening" in table.stdout

    def release(actor: str, reason: str) -> Any:
        return invoke("-c", str(world.config), "--actor", actor, "payouts", "release", str(payout), "--reason", reason)

    first = release("ops:alice", WHY)
    assert first.exit_code == 0, first.output
    assert " ".join(first.stdout.split()) == (f"payout {payout}: release recorded for ops:alice; the screening hold "
                                              "stays until a second, different operator releases it")
    twice = release("ops:alice", WHY)
    assert twice.exit_code != 0
    assert "ops:alice already asked to release it" in " ".join(twice.output.split())
    short = release("ops:bob", "fine")
    assert short.exit_code != 0 and "too short" in short.output
    done = release("ops:bob", "reviewed the match: not the party")
    assert done.exit_code == 0, done.output
    assert " ".join(done.stdout.split()) == (f"payout {payout} released (screening hold) by ops:alice and ops:bob; "
                                             "it is screened again before it is sent: the reasons of this hold no "
                                             "longer stop it, any other holds it again")
    assert payout_row(world, payout).status == "scheduled"
