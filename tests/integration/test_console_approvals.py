"""The console's approvals queue (docs/console.md, Approvals and holds), on SQLite and PostgreSQL: four-eyes approval
by two different tokens, refusals shown as notices, roles and CSRF, hold and cancel from the queue, bulk approval,
paging and filters, hostile CRM text, and malformed ids and parameters.

Rewards are seeded by :class:`test_reward_actions.World`, as the API's and the CLI's tests of the same decisions
seed them; every decision is then asked through the console's forms, signed in with real tokens.
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
from sqlalchemy import select, update
from test_reward_actions import World

from payhub import reports
from payhub.clock import utcnow
from payhub.db.schema import audit_log, calculations, events, rewards

NOTICE = re.compile(r'<p class="notice" role="status">(.*?)</p>', re.S)


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path) -> Iterator[World]:
    w = World(make_runtime(""), tmp_path / "payhub.toml")
    yield w
    w.close()


@pytest.fixture
def ann(world: World) -> Console:
    console = Console(world.rt)
    console.sign_in("ann", "operator")
    return console


def browser(world: World, ann: Console, name: str, role: Any = "operator") -> Console:
    """Another person's browser on the same app, signed in as a new token ``name``."""
    console = Console(world.rt, ann.app)
    console.sign_in(name, role)
    return console


def act(console: Console, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """Post a form from the queue (reading it first for its CSRF token), follow the 303 and return the notice."""
    console.get("/console/approvals")
    answer = console.post(path, {"back": "/console/approvals", **(data or {})}, **kwargs)
    assert answer.status_code == 303, answer.text
    page = console.get(answer.headers["location"])
    found = NOTICE.search(page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def token_entries(world: World, reward_id: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(actor, action, outcome, detail) of the reward's entries signed by tokens."""
    with world.rt.engine.connect() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.subject_type == "reward",
                                                    audit_log.c.subject_id == str(reward_id),
                                                    audit_log.c.actor.like("token:%")).order_by(audit_log.c.seq))
        return [(r.actor, r.action, r.outcome, json.loads(r.detail)) for r in rows]


def rows_of(page: str) -> list[int]:
    """The reward ids of the queue's rows (an operator's page: each row has its checkbox), in order."""
    return [int(n) for n in re.findall(r'<th scope="row">\s*<label class="pick"><input[^>]*value="(\d+)"', page)]


def move(world: World, reward_id: int, *, program: str | None = None, payee: str | None = None) -> None:
    """Give a seeded reward another program (with the calculation its row points to) or payee."""
    with world.rt.engine.begin() as conn:
        row = conn.execute(select(rewards).where(rewards.c.id == reward_id)).one()
        if program is not None:
            conn.execute(calculations.insert().values(event_id=row.event_id, program=program,
                                                      program_version_id=world.version, status="rewarded",
                                                      calculated_at=utcnow()))
        conn.execute(update(rewards).where(rewards.c.id == reward_id).values(
            program=program or row.program, payee_id=payee or row.payee_id))


def test_two_different_operators_approve_and_the_audit_names_both_tokens(world: World, ann: Console) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    page = ann.get("/console/approvals")
    assert page.status_code == 200 and f"/console/rewards/{reward}/approve" in page.text
    assert "0 of 2" in page.text and "crm:Opportunity:1:won" in page.text

    notice = act(ann, f"/console/rewards/{reward}/approve")
    assert notice == (f"Reward {reward} approved by token:ann (1 of 2 approvals): it needs another approval by a "
                      "different operator.")
    assert world.state(reward)[0] == "awaiting_approval"
    page = ann.get("/console/approvals").text
    assert "1 of 2" in page and "token:ann" in page
    assert '<button type="button" disabled>Approved by you</button>' in page
    assert f"/console/rewards/{reward}/approve" not in page  # no approve form for her any more

    bob = browser(world, ann, "bob")
    page = bob.get("/console/approvals").text
    assert f"/console/rewards/{reward}/approve" in page and "Approved by you" not in page
    notice = act(bob, f"/console/rewards/{reward}/approve")
    assert notice == (f"Reward {reward} approved by token:bob (2 of 2 approvals): it is now pending and will be "
                      "scheduled.")
    assert world.state(reward) == ("pending", None, None)
    assert world.approvers(reward) == ["token:ann", "token:bob"]
    assert [(actor, action, detail["approvals"], detail["pending"])
            for actor, action, _outcome, detail in token_entries(world, reward)] == [
        ("token:ann", "reward.approved", 1, False), ("token:bob", "reward.approved", 2, True)]
    assert f"/console/rewards/{reward}/approve" not in bob.get("/console/approvals").text  # left the queue
    assert world.verified()


def test_the_same_operator_twice_is_refused_with_a_notice(world: World, ann: Console) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    act(ann, f"/console/rewards/{reward}/approve")
    before = world.snapshot()
    notice = act(ann, f"/console/rewards/{reward}/approve")
    assert notice == (f"Approving reward {reward} refused: reward {reward} is already approved by token:ann; it needs "
                      "a different second approver")
    after = world.snapshot()
    assert after[:2] == before[:2]  # no approval, no status change
    assert token_entries(world, reward)[-1][:3] == ("token:ann", "reward.approval_refused", "refused")
    assert world.approvers(reward) == ["token:ann"]


def test_an_auditor_sees_the_queue_without_actions_and_is_refused_them(world: World, ann: Console) -> None:
    reward = world.reward("awaiting_approval", needed=1)
    audrey = browser(world, ann, "audrey", "auditor")
    page = audrey.get("/console/approvals")
    assert page.status_code == 200 and f"#{reward}" in page.text
    assert f"/console/rewards/{reward}/approve" not in page.text and "may look but not decide" in page.text
    before = world.snapshot()
    for path, data in ((f"/console/rewards/{reward}/approve", {}), (f"/console/rewards/{reward}/hold",
                                                                  {"reason": "looks odd to me"}),
                       (f"/console/rewards/{reward}/cancel", {"reason": "not ours"}),
                       ("/console/rewards/approve", {"id": str(reward)})):
        answer = audrey.post(path, data)
        assert answer.status_code == 403, path
        assert "needs the operator role" in html.unescape(answer.text)
    assert world.snapshot()[:2] == before[:2]
    assert world.state(reward)[0] == "awaiting_approval"


@pytest.mark.parametrize("forged", [{"csrf": False}, {"csrf": True, "data": {"csrf": "not-the-token"}},
                                    {"csrf": True, "headers": {"Origin": "https://evil.example"}}])
def test_a_form_without_the_sessions_csrf_token_changes_nothing(world: World, ann: Console,
                                                                 forged: dict[str, Any]) -> None:
    reward = world.reward("awaiting_approval", needed=1)
    ann.get("/console/approvals")
    before = world.snapshot()
    answer = ann.post(f"/console/rewards/{reward}/approve", forged.get("data"), csrf=forged["csrf"],
                      headers=forged.get("headers"))
    assert answer.status_code == 403 and "CSRF" in answer.text
    answer = ann.post(f"/console/rewards/{reward}/hold", {"reason": "forged", **forged.get("data", {})},
                      csrf=forged["csrf"], headers=forged.get("headers"))
    assert answer.status_code == 403
    assert world.snapshot()[:2] == before[:2]
    assert world.state(reward)[0] == "awaiting_approval"


def test_hold_and_cancel_from_the_queue_need_a_reason(world: World, ann: Console) -> None:
    held, cancelled = world.reward("awaiting_approval", needed=2), world.reward("awaiting_approval", needed=1)
    before = world.snapshot()
    assert act(ann, f"/console/rewards/{held}/hold", {"reason": "   "}) == (
        f"Holding reward {held} refused: a reason is required (it is recorded in the audit log)")
    assert act(ann, f"/console/rewards/{held}/hold", {"reason": "x" * 2001}) == (
        f"Holding reward {held} refused: the reason is longer than 2000 characters")
    assert act(ann, f"/console/rewards/{held}/hold", {"reason": "see phk_" + "A" * 43}) == (
        f"Holding reward {held} refused: the reason holds something shaped like an API token (phk_...); tokens are "
        "never recorded")
    assert world.snapshot()[:2] == before[:2]

    assert act(ann, f"/console/rewards/{held}/hold", {"reason": "  partner under review  "}) == (
        f"Reward {held} held by token:ann (hold code operator).")
    assert world.state(held) == ("held", "operator", "partner under review")
    assert act(ann, f"/console/rewards/{cancelled}/cancel", {"reason": "duplicate deal"}) == (
        f"Reward {cancelled} cancelled by token:ann: it will never be paid.")
    assert world.state(cancelled)[0] == "cancelled"
    assert act(ann, f"/console/rewards/{cancelled}/cancel", {"reason": "again"}) == (
        f"Cancelling reward {cancelled} refused: reward {cancelled} is already cancelled")
    assert [(a, action, d.get("reason")) for a, action, _o, d in token_entries(world, held)] == [
        ("token:ann", "reward.held", "partner under review")]
    assert "#" + str(held) not in ann.get("/console/approvals").text
    assert world.verified()


def test_bulk_approval_of_checked_rewards(world: World, ann: Console) -> None:
    one, two, three = (world.reward("awaiting_approval", needed=n) for n in (1, 2, 2))
    page = ann.get("/console/approvals").text
    assert 'form="approve-checked"' in page and 'id="approve-checked"' in page
    assert act(ann, "/console/rewards/approve", {"id": [str(one), str(two)]}) == (
        f"2 rewards approved by token:ann: {one} (pending), {two} (1 of 2).")
    assert (world.state(one)[0], world.state(two)[0]) == ("pending", "awaiting_approval")

    before = world.snapshot()  # two is approved by ann already: nothing of this command is approved
    notice = act(ann, "/console/rewards/approve", {"id": [str(three), str(two)]})
    assert notice.startswith("Approving the checked rewards refused: reward ") and "already approved" in notice
    assert world.snapshot()[:2] == before[:2]
    assert act(ann, "/console/rewards/approve", {}) == "Approving the checked rewards refused: no reward was checked"
    too_many = ann.post("/console/rewards/approve", {"id": [str(i) for i in range(1, 1003)]})
    assert too_many.status_code == 422 and "at most 1000" in too_many.text
    bad = ann.post("/console/rewards/approve", {"id": ["1", "x"]})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")


def test_paging_oldest_and_newest_first_with_filters(world: World, ann: Console) -> None:
    made = [world.reward("awaiting_approval", needed=1) for _ in range(5)]
    other = world.reward("awaiting_approval", needed=1)
    move(world, other, program="rebate", payee="p2")
    seen: list[int] = []
    path: str | None = "/console/approvals?payee=p1&limit=2"
    while path:
        page = ann.get(path)
        assert page.status_code == 200
        seen += rows_of(page.text)
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        path = html.unescape(found.group(1)) if found else None
        assert path is None or "payee=p1" in path
    assert seen == made
    seen = []
    path = "/console/approvals?payee=p1&limit=2&order=newest"
    while path:
        page = ann.get(path)
        seen += rows_of(page.text)
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        path = html.unescape(found.group(1)) if found else None
    assert seen == made[::-1]
    assert rows_of(ann.get("/console/approvals?program=rebate").text) == [other]
    assert rows_of(ann.get("/console/approvals?program=spiff&payee=p2").text) == []
    assert "with these filters" in ann.get("/console/approvals?program=spiff&payee=p2").text
    page = ann.get("/console/approvals?program=rebate").text  # the forms come back to the filtered queue
    assert 'name="back" value="/console/approvals?program=rebate"' in page


def test_the_redirect_keeps_the_filters_and_never_leaves_the_console(world: World, ann: Console) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    ann.get("/console/approvals")
    answer = ann.post(f"/console/rewards/{reward}/approve", {"back": "/console/approvals?payee=p1&order=newest"})
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/approvals?payee=p1&order=newest")
    for back in ("https://evil.example/", "//evil.example/console/", "/console\\..\\x", "/api/v1/rewards"):
        answer = ann.post(f"/console/rewards/{reward}/hold", {"back": back, "reason": "r"})
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/approvals"), back
        ann.post(f"/console/rewards/{reward}/release", {"back": "/console/held", "reason": "r"})


def test_hostile_crm_text_is_escaped(world: World, ann: Console) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    hostile = '<script>alert("x")</script>\u202eevil\u200b"\'><img src=x onerror=alert(1)>'
    move(world, reward, program="<b>spiff</b>", payee=hostile[:200])
    with world.rt.engine.begin() as conn:
        conn.execute(update(events).values(key=hostile, object_id="<i>006</i>"))
    page = ann.get("/console/approvals").text
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>spiff" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page and "&lt;b&gt;spiff&lt;/b&gt;" in page
    assert "<bdi>&lt;script&gt;" in page  # right-to-left overrides stay inside their own <bdi>
    assert act(ann, f"/console/rewards/{reward}/hold", {"reason": "<script>alert(2)</script>"}).endswith(
        "(hold code operator).")
    held = ann.get("/console/held").text
    assert "<script>alert(2)" not in held and "&lt;script&gt;alert(2)&lt;/script&gt;" in held


MALFORMED_QUERIES = ["limit=0", "limit=1001", "limit=abc", "after=-1", "after=99999999999999999999", "order=sideways",
                     "program=" + "p" * 201, "payee=a%00b", "after=1&order=newest", "before=3", "payee=a&payee=b",
                     "limit=%EF%BC%91", "programme=spiff", "payee=p1&stauts=held"]
MALFORMED_IDS = [("/console/rewards/abc/approve", 422), ("/console/rewards/0/approve", 404),
                 ("/console/rewards/-1/hold", 422), ("/console/rewards/9223372036854775808/cancel", 404),
                 ("/console/rewards/%EF%BC%91/approve", 422), ("/console/rewards/1e3/approve", 422),
                 ("/console/rewards/" + "9" * 30 + "/approve", 422)]


def test_malformed_parameters_and_ids_are_a_422_page_and_impossible_ids_a_404_page(world: World,
                                                                                   ann: Console) -> None:
    world.reward("awaiting_approval", needed=1)
    for query in MALFORMED_QUERIES:
        answer = ann.get(f"/console/approvals?{query}")
        assert answer.status_code == 422, query
        assert answer.headers["content-type"].startswith("text/html") and "<h1>Refused</h1>" in answer.text
    ann.get("/console/approvals")
    before = world.snapshot()
    for path, status in MALFORMED_IDS:
        answer = ann.post(path, {"reason": "because"})
        assert answer.status_code == status and answer.headers["content-type"].startswith("text/html"), path
    assert world.snapshot()[:2] == before[:2]


def test_a_misspelt_filter_is_refused_not_ignored(world: World, ann: Console) -> None:
    world.reward("awaiting_approval", needed=1)
    answer = ann.get("/console/approvals?programme=rebate")
    assert answer.status_code == 422 and "#1" not in answer.text
    assert "unknown parameter &#39;programme&#39;" in answer.text and "program" in answer.text
    assert request_entries(world, "/console/approvals")[-1][0] == "refused"


def test_an_unknown_reward_is_refused_with_a_notice(world: World, ann: Console) -> None:
    assert act(ann, "/console/rewards/424242/approve") == (
        "Approving reward 424242 refused: reward 424242 does not exist")


def request_entries(world: World, path: str) -> list[tuple[str, dict[str, Any]]]:
    """(outcome, detail) of the ``api.request`` entries of ``path``, in order."""
    with world.rt.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.outcome, audit_log.c.detail).where(
            audit_log.c.action == "api.request", audit_log.c.subject_id == path).order_by(audit_log.c.seq))
        return [(outcome, json.loads(detail)) for outcome, detail in rows]


def test_a_refused_action_is_audited_as_refused_with_its_reason(world: World, ann: Console) -> None:
    reward = world.reward("awaiting_approval", needed=2)
    approve, hold = f"/console/rewards/{reward}/approve", f"/console/rewards/{reward}/hold"
    act(ann, approve)
    act(ann, approve)  # the same operator again: the pipeline refuses
    act(ann, hold, {"reason": "  "})  # a blank reason: the form refuses
    act(ann, hold, {"reason": "x" * 2001})
    act(ann, "/console/rewards/424242/approve")
    approvals = request_entries(world, approve)
    assert [(outcome, detail["status"]) for outcome, detail in approvals] == [("ok", 303), ("refused", 303)]
    assert "reason" not in approvals[0][1]
    assert approvals[1][1]["reason"] == (f"reward {reward} is already approved by token:ann; it needs a different "
                                         "second approver")
    assert [(outcome, detail["status"], detail["reason"]) for outcome, detail in request_entries(world, hold)] == [
        ("refused", 303, "a reason is required (it is recorded in the audit log)"),
        ("refused", 303, "the reason is longer than 2000 characters")]
    assert [(o, d["reason"]) for o, d in request_entries(world, "/console/rewards/424242/approve")] == [
        ("refused", "reward 424242 does not exist")]


def test_the_queue_reads_how_many_approvals_a_reward_needs_as_a_number(world: World, ann: Console) -> None:
    one, three = world.reward("awaiting_approval", needed=1), world.reward("awaiting_approval", needed=3)
    with world.rt.engine.connect() as conn:
        rows = {r["id"]: r for r in reports.rewards(conn, status="awaiting_approval", needed=True)}
        assert "approvals_needed" not in next(reports.rewards(conn))  # the listing's columns alone by default
    assert {n: (rows[n]["approvals"], rows[n]["approvals_needed"]) for n in (one, three)} == {
        one: ("0/1", 1), three: ("0/3", 3)}
    assert list(rows[one]) == [*reports.REWARD_COLUMNS, "approvals_needed"]
    act(ann, f"/console/rewards/{three}/approve")
    page = ann.get("/console/approvals").text
    assert re.search(rf'value="{one}".*?<strong>0 of 1</strong>', page, re.S)
    assert "<strong>1 of 3</strong>" in page
