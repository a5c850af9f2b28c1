"""The ``payhub`` command line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from sqlalchemy import exc as sa_exc

from payhub import __version__
from payhub.cli.output import err_console, plain, shown
from payhub.cli.params import SIGNING_ACTOR
from payhub.db.faults import describe, is_transient
from payhub.errors import ConfigError, PayhubError, SchemaOutOfDateError
from payhub.plugins import load_plugins
from payhub.runtime import Runtime
from payhub.settings import Settings, load_settings
from payhub.termsafe import VisibleFormatter


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
            self._settings = load_settings(self.config)
        return self._settings

    def runtime(self, *, plugins: bool = False, schema: bool = True) -> Runtime:
        if self._rt is None:
            self._rt = Runtime.for_cli(self.settings, self.actor)
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
            err_console.print("[bold red]configuration error[/bold red]")
            for key, message in exc.problems:
                err_console.print(f"  {plain(key or '(file)')}: {plain(message)}", markup=False, highlight=False,
                                  soft_wrap=True)
            sys.exit(2)
        except SchemaOutOfDateError as exc:
            err_console.print(f"[bold red]database not ready:[/bold red] {shown(exc)}", highlight=False, soft_wrap=True)
            sys.exit(3)
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            if not isinstance(exc, sa_exc.OperationalError) and not is_transient(exc):
                raise
            err_console.print(f"database unavailable: {plain(describe(exc))}", style="bold red", highlight=False,
                              soft_wrap=True, markup=False)
            sys.exit(1)
        except PayhubError as exc:
            err_console.print(f"[bold red]error:[/bold red] {shown(exc)}", highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", envvar="PAYHUB_CONFIG", type=click.Path(dir_okay=False),
              help="Settings file (default: $PAYHUB_CONFIG, then ./payhub.toml).")
@click.option("--actor", type=SIGNING_ACTOR,
              help="Name recorded in the audit log for this command (default: user:<login>).")
@click.version_option(__version__, prog_name="payhub")
@click.pass_context
def main(ctx: click.Context, config: str | None, actor: str | None) -> None:
    """payhub: pay channel-partner incentives from CRM triggers, exactly once, with an audit trail."""
    ctx.obj = Context(config, actor)
    if logging.lastResort is not None:  # warnings before (or without) `run`'s logging set-up: shown visible
        logging.lastResort.setFormatter(VisibleFormatter())


pass_ctx = click.make_pass_decorator(Context)

from payhub.cli import (  # noqa: E402,F401  (registers the subcommands)
    admin,
    audit,
    daemon,
    lists,
    payees,
    plugin_new,
    report,
    retention,
    screening,
    serve,
    statements,
    tax,
    tokens,
)
