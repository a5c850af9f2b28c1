"""``payhub config``, ``payhub plugins`` and ``payhub db``."""

from __future__ import annotations

import json

import click

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import FORMATS, console, render
from payhub.db import migrate
from payhub.db.engine import make_engine, shown_url
from payhub.plugins import load_plugins
from payhub.settings import retention_key_problems


@main.group()
def config() -> None:
    """Check or show the settings."""


@config.command("check")
@pass_ctx
@fail_cleanly
def config_check(ctx: Context) -> None:
    """Validate the settings file, every plugin section included; exit 2 naming each problem."""
    settings = ctx.settings
    plugins = load_plugins(settings)
    problems = retention_key_problems(settings)
    if settings.payees.file and not settings.resolve(settings.payees.file).exists():
        problems.append(("payees.file", f"{settings.resolve(settings.payees.file)} does not exist"))
    for status in plugins.statuses:
        if status.state == "failed":
            table = {"source": "sources", "calculator": "programs", "rail": "rails", "hook": "hooks"}[status.kind]
            problems.append((f"{table}.{status.section}", status.reason or "failed"))
    plugins.close()
    if problems:
        from payhub.errors import ConfigError
        raise ConfigError(problems)
    console.print(f"[green]settings OK[/green]: {len(settings.sources)} sources, {len(settings.programs)} programs, "
                  f"{len(settings.rails)} rails, {len(settings.hooks)} hooks")


@config.command("show")
@pass_ctx
@fail_cleanly
def config_show(ctx: Context) -> None:
    """Print the effective settings (file plus environment) as JSON; secrets are masked."""
    settings = ctx.settings
    loaded = load_plugins(settings)
    loaded.close()
    data = settings.model_dump(mode="json")
    # A database URL may carry a password: show it masked, like every other secret.
    data["database"]["url"] = shown_url(settings.database.url)
    for table in ("sources", "programs", "rails", "hooks"):
        for name, section in getattr(settings, table).items():
            extra = set(section.plugin_settings())
            model = loaded.validated.get(f"{table}.{name}")
            shown = model.model_dump(mode="json") if model is not None else {}
            for key in extra:  # values the plugin could not vouch for are never echoed
                data[table][name][key] = shown.get(key, "**********")
            for key, value in shown.items():
                data[table][name][key] = value
    click.echo(json.dumps(data, indent=2, default=str))


@main.group()
def plugins() -> None:
    """Inspect plugins."""


@plugins.command("list")
@click.option("--format", "fmt", type=FORMATS, default="table")
@pass_ctx
@fail_cleanly
def plugins_list(ctx: Context, fmt: str) -> None:
    """Each configured plugin: section, kind, entry point, distribution, version, loaded or failed and why."""
    loaded = load_plugins(ctx.settings)
    rows = [{"section": s.section, "kind": s.kind, "plugin": s.plugin, "distribution": s.distribution,
             "version": s.version, "state": s.state, "reason": s.reason} for s in loaded.statuses]
    loaded.close()
    render(rows, fmt, title="plugins")


from payhub.cli import plugin_check, plugin_new  # noqa: E402,F401  (register `payhub plugins check` and `new`)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_ctx
@fail_cleanly
def db_upgrade(ctx: Context) -> None:
    """Create or migrate the database schema to this version of payhub."""
    settings = ctx.settings
    engine = make_engine(settings.database_url)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    after = migrate.current_revision(engine)
    engine.dispose()
    console.print(f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


@db.command("status")
@pass_ctx
@fail_cleanly
def db_status(ctx: Context) -> None:
    """Show the schema revision of the database and the one this payhub needs."""
    engine = make_engine(ctx.settings.database_url)
    current, head = migrate.current_revision(engine), migrate.head_revision()
    engine.dispose()
    state = "up to date" if current == head else "needs `payhub db upgrade`"
    console.print(f"database revision {current or '(empty)'}, required {head}: {state}")
