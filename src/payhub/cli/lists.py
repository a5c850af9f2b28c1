"""``payhub events|rewards|payouts list``, ``payhub rewards approve|hold|release|cancel`` and ``payhub explain``
(whose text is :mod:`payhub.cli.provenance_text`)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import click

from payhub import provenance, reports
from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, console, plain, render, shown, to_json
from payhub.cli.params import LIMIT, MAX_ID, ROW_ID, row_id
from payhub.cli.provenance_text import print_explanation
from payhub.clock import parse_instant
from payhub.errors import InvalidRecord, PayhubError
from payhub.pipeline import payout_actions, reward_actions
from payhub.pipeline.calculate import retry_failed
from payhub.states import EventStatus, PayoutHold, PayoutStatus, RewardStatus, values

AFTER = click.IntRange(0, MAX_ID)
TABLE_LIMIT = 100
"""Rows a table shows when no ``--limit`` is given."""

limit_option = click.option("--limit", type=LIMIT, help=f"At most this many rows [default: {TABLE_LIMIT} in a table, "
                            "all in JSON and CSV].")
after_option = click.option("--after", type=AFTER, metavar="ID",
                            help="Rows with an id above ID, oldest first [default: the newest rows first].")
format_option = click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)


def _page(fmt: str, limit: int | None, after: int | None) -> dict[str, Any]:
    """The paging arguments of a listing: newest first without ``--after``; a table shows ``TABLE_LIMIT`` rows by
    default, JSON and CSV every row (streamed)."""
    return {"after": after, "limit": limit if limit is not None or fmt != "table" else TABLE_LIMIT,
            "newest_first": after is None}


@main.group()
def events() -> None:
    """Trigger events read from the sources."""


@events.command("list")
@click.option("--status", type=click.Choice(values(EventStatus)))
@click.option("--source")
@limit_option
@after_option
@format_option
@pass_ctx
@fail_cleanly
def events_list(ctx: Context, status: str | None, source: str | None, limit: int | None, after: int | None,
                fmt: str) -> None:
    """List events; waiting and quarantined ones show their reason."""
    columns = reports.EVENT_COLUMNS if fmt != "table" else ["id", "source", "object", "type", "payee", "amount",
                                                            "currency", "status", "reason"]
    with ctx.runtime().engine.connect() as conn:
        render(reports.events(conn, status=status, source=source, **_page(fmt, limit, after)), fmt, columns,
               title="events")


@main.group()
def rewards() -> None:
    """Rewards calculated from events."""


reward_ids_argument = click.argument("reward_ids", nargs=-1, type=ROW_ID, required=True)


@rewards.command("list")
@click.option("--status", type=click.Choice(values(RewardStatus)))
@click.option("--payee", help="Rewards of this payee (with --not-eligible: events whose payee it is).")
@click.option("--program")
@click.option("--not-eligible", "unrewarded", is_flag=True,
              help="Instead of rewards, list the calculations that paid nothing (not_eligible or failed) and why.")
@limit_option
@after_option
@format_option
@pass_ctx
@fail_cleanly
def rewards_list(ctx: Context, status: str | None, payee: str | None, program: str | None, unrewarded: bool,
                 limit: int | None, after: int | None, fmt: str) -> None:
    """List rewards; awaiting ones show their approvals, held and carried ones why. --not-eligible lists the
    calculations that paid nothing instead, with their reason (--after is then a calculation id)."""
    if unrewarded and status:
        raise click.UsageError("--status filters rewards; --not-eligible lists calculations without one")
    page = _page(fmt, limit, after)
    with ctx.runtime().engine.connect() as conn:
        if unrewarded:
            render(reports.unrewarded(conn, payee=payee, program=program, **page), fmt, reports.UNREWARDED_COLUMNS,
                   title="calculations that paid nothing")
            return
        columns = reports.REWARD_COLUMNS if fmt != "table" else ["id", "event", "program", "payee", "amount",
                                                                 "currency", "status", "approvals", "payout",
                                                                 "reason"]
        render(reports.rewards(conn, status=status, payee=payee, program=program, **page), fmt, columns,
               title="rewards")


@rewards.command("approve")
@reward_ids_argument
@click.option("--note", help="A note recorded with the approval in the audit log.")
@pass_ctx
@fail_cleanly
def rewards_approve(ctx: Context, reward_ids: tuple[int, ...], note: str | None) -> None:
    """Approve rewards awaiting approval, as the --actor; one needing two approvals needs two different people."""
    rt = ctx.runtime()
    for done in reward_actions.approve(rt, reward_ids, note):
        then = "now pending" if done.pending else f"needs {done.needed - done.approvals} more approver(s)"
        console.print(f"reward {done.reward_id} approved by {plain(rt.writer.actor)} ({done.approvals}/{done.needed}); "
                      f"{then}", markup=False, highlight=False)


@rewards.command("hold")
@reward_ids_argument
@click.option("--reason", required=True, help="Why the rewards must not be paid for now (recorded in the audit log).")
@pass_ctx
@fail_cleanly
def rewards_hold(ctx: Context, reward_ids: tuple[int, ...], reason: str) -> None:
    """Hold rewards that are not yet scheduled, so they are not paid until released."""
    count = reward_actions.hold(ctx.runtime(), reward_ids, reason)
    console.print(f"held {count} reward(s)")


@rewards.command("release")
@reward_ids_argument
@click.option("--reason", required=True, help="Why the hold no longer applies (recorded in the audit log).")
@pass_ctx
@fail_cleanly
def rewards_release(ctx: Context, reward_ids: tuple[int, ...], reason: str) -> None:
    """Release held rewards: back to pending, or to awaiting_approval while approvals are missing."""
    moved = reward_actions.release(ctx.runtime(), reward_ids, reason)
    statuses = list(moved.values())
    summary = ", ".join(f"{statuses.count(s)} {s}" for s in ("pending", "awaiting_approval") if s in statuses)
    console.print(f"released {len(moved)} reward(s): {summary}", highlight=False)


@rewards.command("cancel")
@reward_ids_argument
@click.option("--reason", required=True, help="Why the rewards will never be paid (recorded in the audit log).")
@pass_ctx
@fail_cleanly
def rewards_cancel(ctx: Context, reward_ids: tuple[int, ...], reason: str) -> None:
    """Cancel rewards that are not yet scheduled: they are never paid and no longer count against budgets."""
    count = reward_actions.cancel(ctx.runtime(), reward_ids, reason)
    console.print(f"cancelled {count} reward(s)")


@main.group()
def funds() -> None:
    """Funds programs keep for their holders: co-op accruals, MDF allocations, loyalty points."""


@funds.command("list")
@click.option("--program")
@click.option("--holder", help="A payee or partner id (MDF allocations are held as <partner>:<period>).")
@click.option("--at", "at_text", help="ISO 8601 date or time to show the funds at (default: now, UTC).")
@format_option
@pass_ctx
@fail_cleanly
def funds_list(ctx: Context, program: str | None, holder: str | None, at_text: str | None, fmt: str) -> None:
    """Each fund's credits, spending, what expired unspent and its balance (oldest credits are spent first)."""
    try:
        at = parse_instant(at_text, default_tz=UTC) if at_text else None
    except InvalidRecord as exc:
        raise PayhubError(f"--at: {exc}") from None
    with ctx.runtime().engine.connect() as conn:
        render(reports.funds(conn, program=program, holder=holder, at=at), fmt, reports.FUND_COLUMNS, title="funds")


@main.group()
def calculations() -> None:
    """Calculations of programs over events."""


@calculations.command("retry")
@click.option("--program", help="Only this program's failed calculations.")
@click.option("--event", "event_id", type=ROW_ID, help="Only this event's failed calculations.")
@pass_ctx
@fail_cleanly
def calculations_retry(ctx: Context, program: str | None, event_id: int | None) -> None:
    """Run failed calculations again on the next pass (e.g. after fixing a calculator plugin)."""
    count = retry_failed(ctx.runtime(), program, event_id)
    console.print(f"{count} failed calculation(s) will run again on the next pass")


@main.group()
def payouts() -> None:
    """Payouts sent through the rails."""


@payouts.command("list")
@click.option("--status", type=click.Choice(values(PayoutStatus)))
@click.option("--rail")
@click.option("--payee")
@limit_option
@after_option
@format_option
@pass_ctx
@fail_cleanly
def payouts_list(ctx: Context, status: str | None, rail: str | None, payee: str | None, limit: int | None,
                 after: int | None, fmt: str) -> None:
    """List payouts with their state, attempts and last reason."""
    columns = reports.PAYOUT_COLUMNS if fmt != "table" else ["id", "payee", "rail", "amount", "currency", "items",
                                                             "status", "hold_code", "attempts", "provider_ref",
                                                             "reason"]
    with ctx.runtime().engine.connect() as conn:
        render(reports.payouts(conn, status=status, rail=rail, payee=payee, **_page(fmt, limit, after)), fmt,
               columns, title="payouts")


@payouts.command("resolve")
@click.argument("payout_id", type=ROW_ID)
@click.option("--outcome", type=click.Choice(payout_actions.MANUAL_OUTCOMES), required=True,
              help="What the provider says: it has the payout (sent/paid), or never received it (not-sent).")
@click.option("--reason", required=True, help="How this was established (recorded in the audit log).")
@click.option("--provider-ref", help="The provider's reference for the payout, if it has one.")
@pass_ctx
@fail_cleanly
def payouts_resolve(ctx: Context, payout_id: int, outcome: str, reason: str, provider_ref: str | None) -> None:
    """Decide a payout whose outcome the rail cannot tell; not-sent sends it again with the same key."""
    status = payout_actions.resolve(ctx.runtime(), payout_id, outcome, reason, provider_ref)
    console.print(f"payout {payout_id} is now {status}")


@payouts.command("release")
@click.argument("payout_id", type=ROW_ID)
@click.option("--reason", required=True,
              help="Why the hold does not apply (recorded in the audit log); for a screening hold, a written "
                   f"justification of at least {payout_actions.MIN_JUSTIFICATION} characters.")
@pass_ctx
@fail_cleanly
def payouts_release(ctx: Context, payout_id: int, reason: str) -> None:
    """Release a held payout.

    A screening hold needs two different operators (--actor), each with a justification: the first one's release
    is recorded and the payout stays held until a second operator releases it. It is still screened before each
    send: it goes on if screening denies it only for the reasons of the hold released, and any other denial (a
    renamed payee, another list entry) holds it again. A payout released from an audit_trail hold is screened
    and checked again before it is sent."""
    done = payout_actions.release(ctx.runtime(), payout_id, reason)
    if done.released:
        then = ("it is screened again before it is sent: the reasons of this hold no longer stop it, any other "
                "holds it again" if done.hold_code == PayoutHold.SCREENING
                else "it is screened and checked again before it is sent")
        console.print(f"payout {payout_id} released ({done.hold_code} hold) by {shown(' and '.join(done.operators))}; "
                      f"{then}", highlight=False)
    else:
        console.print(f"payout {payout_id}: release recorded for {shown(done.operators[0])}; the screening hold stays "
                      "until a second, different operator releases it", highlight=False)


@payouts.command("cancel")
@click.argument("payout_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why the payout is cancelled (recorded in the audit log).")
@pass_ctx
@fail_cleanly
def payouts_cancel(ctx: Context, payout_id: int, reason: str) -> None:
    """Cancel a payout the rail never accepted; its rewards are held as owed (see `rewards release`)."""
    payout_actions.cancel(ctx.runtime(), payout_id, reason)
    console.print(f"payout {payout_id} cancelled; its rewards are held")


class ExplainRef(click.ParamType[str]):
    """``payout:N``, ``reward:N``, ``event:N`` (the kind in any case), a reward id, ``record:ID``, an event key or a
    CRM object id. A bare number, and whatever follows ``payout:``, ``reward:`` or ``event:`` when it holds no
    further ``:`` (every event key does), must be a row id (1 to 2^63 - 1)."""

    name = "REF"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        kind, sep, number = text.partition(":")
        if sep and kind.lower() in ("payout", "reward", "event") and ":" not in number:
            if row_id(number) is None:
                self.fail(f"{text!r}: a {kind.lower()} id is a whole number from 1 to {MAX_ID} (2^63 - 1); for a "
                          "CRM id use record:ID", param, ctx)
        elif text.isascii() and text.isdigit():
            ROW_ID.convert(int(text), param, ctx)
        return text


@main.command()
@click.argument("ref", type=ExplainRef())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
@fail_cleanly
def explain(ctx: Context, ref: str, fmt: str) -> None:
    """Why a payout, reward or event paid what it did: REF is payout:N, reward:N (or N), event:N, or a CRM record
    (record:ID, an event key or a CRM object id)."""
    rt = ctx.runtime()
    rails = {name: section.plugin_name(name) for name, section in rt.settings.rails.items()}
    with rt.engine.connect() as conn:
        data = provenance.explain(conn, ref, rails)
    if data is None:
        parsed = provenance.parse_ref(ref, "reward")
        raise PayhubError(f"nothing found for {ref!r}" if parsed.kind == "record"
                          else f"{parsed.kind} {parsed.number} does not exist")
    if fmt == "json":
        click.echo(to_json(data))
    else:
        print_explanation(data)
