"""The ``payhub`` command line.

``payhub --help`` and each command import only what they use: the commands are registered by name in
:data:`COMMANDS` and their module is imported when one of them runs (see :class:`LazyGroup`), and the settings,
the database, Rich and the plugins are imported when a command first needs them.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

import click

from payhub.cli.params import SIGNING_ACTOR
from payhub.collector import paused
from payhub.errors import ConfigError, PayhubError, SchemaOutOfDateError
from payhub.termsafe import VisibleFormatter

if TYPE_CHECKING:
    from payhub.runtime import Runtime
    from payhub.settings import Settings

COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("payhub.cli.audit", "Query, export, verify and trace the audit log."),
    "calculations": ("payhub.cli.lists", "Calculations of programs over events."),
    "config": ("payhub.cli.admin", "Check or show the settings."),
    "db": ("payhub.cli.admin", "Database schema."),
    "events": ("payhub.cli.lists", "Trigger events read from the sources."),
    "explain": ("payhub.cli.lists", "Why a payout, reward or event paid what it did: REF is payout:N, reward:N (or N), "
                "event:N, or a CRM record (record:ID, an event key or a CRM object id)."),
    "funds": ("payhub.cli.lists", "Funds programs keep for their holders: co-op accruals, MDF allocations, loyalty "
              "points."),
    "payees": ("payhub.cli.payees", "The payee registry (payees come from the payees file)."),
    "payouts": ("payhub.cli.lists", "Payouts sent through the rails."),
    "plugins": ("payhub.cli.admin", "Inspect plugins."),
    "report": ("payhub.cli.report", "Reports as files: the KPIs of a period."),
    "retention": ("payhub.cli.retention", "Retention periods of events' payloads and audit entries "
                  "(docs/compliance.md#retention)."),
    "rewards": ("payhub.cli.lists", "Rewards calculated from events."),
    "run": ("payhub.cli.daemon", "Poll sources and work the pipeline until SIGTERM or SIGINT (or, with --once, until "
            "nothing is due)."),
    "screening": ("payhub.cli.screening", "Sanctions screening: load the lists, check a name, see the lists' state "
                  "and the payees with hits."),
    "serve": ("payhub.cli.serve", "Serve the HTTP face (health, metrics, webhooks, API v1) without working the "
              "pipeline, until SIGTERM or SIGINT."),
    "statements": ("payhub.cli.statements", "Partner statements (remittance advice), one per sent or paid payout."),
    "tax": ("payhub.cli.tax", "US information-return figures: totals by form and box, withholding, missing forms."),
    "tokens": ("payhub.cli.tokens", "API tokens of the HTTP face: create, list, revoke."),
}
"""Every command of ``payhub``: name -> (the module that registers it on :data:`main` when imported, its short
help as ``payhub --help`` lists it, the first sentence of its docstring; a test holds both to the real command)."""


class Context:
    """Lazily loaded settings and runtime shared by subcommands."""

    def __init__(self, config: str | None, actor: str | None) -> None:
        self.config = config
        self.actor = actor
        self._settings: Settings | None = None
        self._rt: Runtime | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from payhub.settings import load_settings

            self._settings = load_settings(self.config)
        return self._settings

    def runtime(self, *, plugins: bool = False, schema: bool = True) -> Runtime:
        if self._rt is None:
            from payhub.plugins import load_plugins
            from payhub.runtime import Runtime

            self._rt = Runtime.for_cli(self.settings, self.actor)
            click_ctx = click.get_current_context(silent=True)
            if click_ctx is not None:  # closed with the command: its connections closed, SQLite's log checkpointed
                click_ctx.call_on_close(self._rt.close)
            if schema:
                self._rt.require_schema()
            # Hook plugins observe the audit entries that commands write; the others load only when needed.
            self._rt.plugins = load_plugins(self.settings, kinds=None if plugins else {"hook"})
        return self._rt


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn payhub's own errors into a clear message and an exit code instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            from payhub.cli.output import err_console, plain

            err_console.print("[bold red]configuration error[/bold red]")
            for key, message in exc.problems:
                err_console.print(f"  {plain(key or '(file)')}: {plain(message)}", markup=False, highlight=False,
                                  soft_wrap=True)
            sys.exit(2)
        except SchemaOutOfDateError as exc:
            from payhub.cli.output import err_console, shown

            err_console.print(f"[bold red]database not ready:[/bold red] {shown(exc)}", highlight=False, soft_wrap=True)
            sys.exit(3)
        except PayhubError as exc:
            from payhub.cli.output import err_console, shown

            err_console.print(f"[bold red]error:[/bold red] {shown(exc)}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except Exception as exc:
            if not _database_unavailable(exc):
                raise
            from payhub.cli.output import err_console, plain
            from payhub.db.faults import describe

            err_console.print(f"database unavailable: {plain(describe(exc))}", style="bold red", highlight=False,
                              soft_wrap=True, markup=False)
            sys.exit(1)

    return wrapper


def _database_unavailable(exc: Exception) -> bool:
    """Whether ``exc`` says the database is unavailable: any SQLAlchemy OperationalError, or a transient
    InterfaceError or TimeoutError (a command that never imported SQLAlchemy cannot have raised one)."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None:
        return False
    if isinstance(exc, sa_exc.OperationalError):
        return True
    if not isinstance(exc, sa_exc.InterfaceError | sa_exc.TimeoutError):
        return False
    from payhub.db.faults import is_transient

    return is_transient(exc)


def _import(module: str) -> None:
    """Import ``module`` with the collector paused (:func:`payhub.collector.paused`)."""
    with paused():
        importlib.import_module(module)


class LazyGroup(click.Group):
    """A group whose commands (:data:`COMMANDS`) are imported when used: listing them in its help reads their short
    help from the table, running or asking for the help of one imports its module."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            _import(COMMANDS[cmd_name][0])  # its decorators register it on this group
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.NoSuchCommand as exc:  # suggest from every command, not only those imported so far
            raise click.NoSuchCommand(exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = [(name, self.commands.get(name) or click.Command(name, help=COMMANDS[name][1]))
                  for name in self.list_commands(ctx)]
        rows = [(name, cmd) for name, cmd in listed if not cmd.hidden]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``, as click's ``version_option`` prints it, with the version read only when asked for."""
    if not value or ctx.resilient_parsing:
        return
    from payhub import __version__

    click.echo(f"payhub, version {__version__}", color=ctx.color)
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", envvar="PAYHUB_CONFIG", type=click.Path(dir_okay=False),
              help="Settings file (default: $PAYHUB_CONFIG, then ./payhub.toml).")
@click.option("--actor", type=SIGNING_ACTOR,
              help="Name recorded in the audit log for this command (default: user:<login>).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="Show the version and exit.")
@click.pass_context
def main(ctx: click.Context, config: str | None, actor: str | None) -> None:
    """payhub: pay channel-partner incentives from CRM triggers, exactly once, with an audit trail."""
    ctx.obj = Context(config, actor)
    if logging.lastResort is not None:  # warnings before (or without) `run`'s logging set-up: shown visible
        logging.lastResort.setFormatter(VisibleFormatter())


pass_ctx = click.make_pass_decorator(Context)


def entry() -> None:
    """The ``payhub`` console script: :data:`main`, then an exit that skips tearing the interpreter down.

    After the command has returned or raised :class:`SystemExit`, the exit handlers run (:mod:`atexit`: logging's
    flush, child processes' clean-up), standard output and error are flushed, and the process ends with
    :func:`os._exit` and the command's exit code, as :func:`sys.exit` gives it. What is skipped is only the freeing of
    every module and object, which took longer than a short command's own work (about 0.12 s); what must be closed
    is closed by the command (a command's runtime closes with its click context: plugins, then the database
    connections, so SQLite checkpoints its write-ahead log as on an ordinary exit). If another non-daemon thread is
    still alive, the exit is the ordinary one, which waits for it.
    """
    try:
        main()
    except SystemExit as stop:
        code = stop.code
    else:
        code = 0
    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with the descriptor closed: nothing to flush
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: what sys.exit would report as status 120
            status = status or 120
    os._exit(status)
