"""``payhub tokens create|list|revoke``: the API tokens of the HTTP face (docs/api.md#tokens-and-roles)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from payhub import tokens as token_store
from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, console, err_console, render, shown
from payhub.clock import isoformat, utcnow
from payhub.errors import InvalidRecord

COLUMNS = ["name", "role", "state", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at"]


class Expiry(click.ParamType[datetime]):
    """A future ISO 8601 date-time with an offset, or a date (the end of that day, UTC)."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return token_store.parse_expiry(str(value))
        except InvalidRecord as exc:
            self.fail(f"{exc} (use a date such as 2027-01-31, valid to the end of that day UTC, or a date-time "
                      "with an offset such as 2027-01-31T18:00:00Z)", param, ctx)


def _name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        token_store.check_name(value)
    except InvalidRecord as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@main.group("tokens")
def tokens_group() -> None:
    """API tokens of the HTTP face: create, list, revoke."""


@tokens_group.command("create")
@click.option("--name", required=True, callback=_name, help="Unique name; audit entries name it token:NAME.")
@click.option("--role", required=True, type=click.Choice(token_store.ROLES),
              help="auditor: every read; operator: also actions; admin: also tokens.")
@click.option("--expires", type=Expiry(), help="When it stops working (default: never, until revoked).")
@pass_ctx
@fail_cleanly
def tokens_create(ctx: Context, name: str, role: token_store.Role, expires: datetime | None) -> None:
    """Create a token and print it once: its last line is the token alone. Only its hash is stored."""
    token = token_store.create(ctx.runtime(), name, role, expires)
    until = f"until {isoformat(expires)}" if expires else "until revoked"
    err_console.print(f"token {shown(name)} created, role {role}, {until}. It is printed once, below; payhub keeps "
                      "only its hash.", highlight=False, soft_wrap=True)
    click.echo(token)


@tokens_group.command("list")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_ctx
@fail_cleanly
def tokens_list(ctx: Context, fmt: str) -> None:
    """Every token: role, state (active, expired, revoked), creator and times. Never the token or its hash."""
    rt = ctx.runtime()
    with rt.engine.connect() as conn:
        found = token_store.listed(conn)
    now = utcnow()
    with rt.transaction() as tx:
        tx.audit("token.listed", "token", "*", {"rows": len(found)})
    render([info.shown(now) for info in found], fmt, COLUMNS, title="API tokens")


@tokens_group.command("revoke")
@click.argument("name")
@pass_ctx
@fail_cleanly
def tokens_revoke(ctx: Context, name: str) -> None:
    """Revoke the token NAME at once: its next request is refused. Its name stays taken."""
    token_store.revoke(ctx.runtime(), name)
    console.print(f"token {shown(name)} revoked", highlight=False, soft_wrap=True)
