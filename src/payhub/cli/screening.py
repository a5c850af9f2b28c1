"""``payhub screening refresh|check|status``: the sanctions lists payhub screens against (docs/compliance.md)."""

from __future__ import annotations

import sys
from typing import Any

import click
import pycountry

from payhub.builtin.sanctions import Sanctions
from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, err_console, plain, render, say, shown, to_json
from payhub.clock import utcnow
from payhub.compliance.sanctions.checks import date_problem
from payhub.compliance.sanctions.payee_screening import payee_hits
from payhub.compliance.sanctions.refresh import refresh
from payhub.compliance.sanctions.screener import NoListsLoaded
from payhub.errors import ConfigError
from payhub.runtime import Runtime

EXIT_CLEAR, EXIT_HIT, EXIT_ERROR = 0, 1, 2
EXTRA_COUNTRIES = frozenset({"XK"})
"""Codes taken besides ISO 3166 alpha-2: ``XK`` (Kosovo), user-assigned but used by the lists."""


class CountryCode(click.ParamType[str]):
    """An ISO 3166 alpha-2 country code (any case), returned upper-case."""

    name = "country"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        code = str(value).strip().upper()
        if code in EXTRA_COUNTRIES or (len(code) == 2 and pycountry.countries.get(alpha_2=code) is not None):
            return code
        self.fail(f"{value!r} is not an ISO 3166 alpha-2 country code (such as DE, US, RU)", param, ctx)


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """NAME, refused when empty or only white space (it would match nothing and say so)."""
    if not value.strip():
        raise click.BadParameter("give a name to screen (it is empty)", ctx, param)
    return value


def _plugin(rt: Runtime) -> Sanctions:
    """The enabled ``sanctions`` hook plugin; ConfigError when there is none (or it failed to start)."""
    found = [p for p in rt.plugins.hooks.get_plugins() if isinstance(p, Sanctions)]
    if not found:
        failed = [s.reason for s in rt.plugins.statuses if s.kind == "hook" and s.plugin == "sanctions" and s.reason]
        raise ConfigError([("hooks.sanctions", failed[0] if failed else
                            "the sanctions hook plugin is not enabled (add a [hooks.sanctions] section)")])
    return found[0]


@main.group()
def screening() -> None:
    """Sanctions screening: load the lists, check a name, see the lists' state and the payees with hits."""


@screening.command("refresh")
@click.option("--accept-drop", "accept_drop", metavar="LIST", multiple=True,
              help="Load LIST even though it has more than max_drop_share fewer entries than its current version "
                   "(audited). Repeat for several lists.")
@pass_ctx
@fail_cleanly
def screening_refresh(ctx: Context, accept_drop: tuple[str, ...]) -> None:
    """Load the configured list files (and the lists provider plugins give); each new version that passes the
    checks is stored and audited with its date and SHA-256; lists no longer configured are retired. Exit code 1
    when a list failed to load or was refused (its previous version stays current)."""
    rt = ctx.runtime()
    plugin = _plugin(rt)
    results = refresh(rt, plugin.settings, set(accept_drop))
    if not results:
        say("no sanctions list is configured ([hooks.sanctions] lists)")
    failed = False
    for item in results:
        if item.outcome in ("failed", "refused"):
            failed = True
            kept = ("" if item.outcome == "failed" else
                    f"; its version of {item.version.published_on} ({item.version.entries} entries) stays current"
                    if item.version else "; no version of it is loaded")
            say(f"[bold red]{item.outcome}[/bold red] {shown(item.name)} ({shown(item.format)}): "
                f"{shown(item.reason)}{shown(kept)}")
            for problem in item.problems[:20]:
                say(f"  skipped: {shown(problem)}")
            continue
        version = item.version
        assert version is not None
        if item.outcome == "retired":
            say(f"retired {shown(item.name)} ({shown(item.format)}): no longer configured nor provided; its "
                f"version of {version.published_on} is no longer screened against")
            continue
        confirmed = (f", confirmed current on {version.confirmed_on} (its files fetched again, the same content)"
                      if item.outcome == "confirmed" else "")
        say(f"{item.outcome} {shown(item.name)} ({shown(item.format)}): published {version.published_on}"
            f"{confirmed}, {version.entries} entries, sha256 {version.sha256}"
            + (f", {item.skipped} records skipped" if item.skipped else ""))
        for problem in item.problems[:20]:
            say(f"  skipped: {shown(problem)}")
    unknown = sorted(set(accept_drop) - {item.name for item in results})
    if unknown:
        say(f"--accept-drop names no list refreshed: {shown(', '.join(unknown))}")
    if failed:
        sys.exit(1)


@screening.command("check")
@click.argument("name", callback=_name)
@click.option("--country", type=CountryCode(), help="The person's or company's country (ISO 3166 alpha-2).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def screening_check(ctx: Context, name: str, country: str | None, fmt: str) -> None:
    """Screen NAME against the loaded lists. Exit code 0: no hit; 1: a hit; 2: no list loaded, an empty NAME, a
    country that is not an ISO 3166 alpha-2 code, or another error."""
    try:
        rt = ctx.runtime()
        plugin = _plugin(rt)
        hits = plugin.screener.screen([name], country)
    except NoListsLoaded as exc:
        err_console.print(f"error: {plain(exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except ConfigError as exc:
        err_console.print("configuration error", style="bold red")
        for key, message in exc.problems:
            err_console.print(f"  {plain(key)}: {plain(message)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - a script reads the exit code: 2 is "could not tell"
        err_console.print(f"error: {plain(type(exc).__name__)}: {plain(exc)}", markup=False, highlight=False,
                          soft_wrap=True)
        sys.exit(EXIT_ERROR)
    rows = [hit.as_dict() for hit in hits]
    if fmt == "json":
        click.echo(to_json({"name": name, "country": country, "threshold": plugin.settings.threshold,
                            "hit": bool(hits), "hits": rows}))
    elif hits:
        say(f"{len(hits)} possible {'match' if len(hits) == 1 else 'matches'} at threshold "
            f"{plugin.settings.threshold}:")
        for hit in hits:
            say(f"  {plain(hit.describe())}", markup=False)
    else:
        say(f"no match at threshold {plugin.settings.threshold}")
    sys.exit(EXIT_HIT if hits else EXIT_CLEAR)


@screening.command("status")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_ctx
@fail_cleanly
def screening_status(ctx: Context, fmt: str) -> None:
    """The loaded lists (date, last confirmation, age, stale or not, SHA-256, entries) and the payees whose screening
    was a hit (their names opened, or [erased])."""
    rt = ctx.runtime()
    plugin = _plugin(rt)
    today = utcnow().date()
    current = {version.name: version for version in plugin.screener.lists()}
    limit = plugin.settings.max_list_age_days
    lists: list[dict[str, Any]] = []
    for name in sorted({*current, *(item.name for item in plugin.settings.lists)}):
        version = current.get(name)
        age = version.age_days(today) if version else None
        lists.append({"list": name, "format": version.format if version else None,
                      "published_on": version.published_on if version else None,
                      "confirmed_on": version.confirmed_on if version else None, "age_days": age,
                      "stale": (version is None or age is None or age > limit
                                or date_problem(version.published_on, today) is not None),
                      "entries": version.entries if version else 0, "sha256": version.sha256 if version else None,
                      "loaded_at": version.loaded_at if version else None})
    hits = payee_hits(rt)
    blocked = plugin.screener.blocked(today)
    if fmt == "json":
        click.echo(to_json({"lists": lists, "payouts_blocked": blocked, "payee_hits": hits}))
        return
    if fmt == "csv":
        render(lists, "csv")
        return
    render(lists, "table", ["list", "format", "published_on", "confirmed_on", "age_days", "stale", "entries",
                            "sha256", "loaded_at"], title=f"sanctions lists (max_list_age_days {limit})")
    say(f"payouts blocked: {shown(blocked)}" if blocked else "payouts: not blocked by the sanctions lists")
    render([{**hit, "reasons": "; ".join(hit["reasons"])} for hit in hits], "table",
           ["payee", "screened_at", "reasons"], title="payees with hits")
