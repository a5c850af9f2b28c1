"""``payhub plugins new``: write a new plugin package whose tests pass as written."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from payhub.cli import fail_cleanly
from payhub.cli.admin import plugins
from payhub.cli.output import plain
from payhub.scaffold import (
    KINDS,
    Kind,
    blueprint,
    check_name,
    check_package,
    installed_as,
    payhub_install_command,
    write,
)


def _name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _package(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else check_package(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@plugins.command("new")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("name", callback=_name)
@click.option("--directory", "-d", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the package (default: ./payhub-NAME, with '-' for '_'); it must not exist, or "
                   "be empty.")
@click.option("--package", callback=_package,
              help="The Python package of the plugin (default: payhub_NAME).")
@fail_cleanly
def plugins_new(kind: Kind, name: str, directory: Path | None, package: str | None) -> None:
    """Write a new plugin package: pyproject.toml, a settings model, the plugin, its tests and a README.

    KIND is rail, source, calculator or hook; NAME is the plugin's entry-point name (lower-case letters, digits
    and '_', starting with a letter). The tests run payhub's contract suite for the kind and pass as written.
    """
    try:
        bp = blueprint(kind, name, package)
    except ValueError as exc:  # the package derived from NAME
        raise click.UsageError(str(exc)) from None
    target = directory if directory is not None else Path(bp.distribution)
    written = write(bp, target)
    for other in installed_as(bp):
        click.echo(f"warning: a {kind} plugin named {name!r} is already installed ({plain(other)}); an admin "
                   "with both installed gets a configuration error", err=True)
    click.echo(f"wrote the {kind} plugin {name!r} ({bp.distribution}, package {bp.package}) in "
               f"{plain(str(target))}:")
    for path in written:
        click.echo(f"  {path}")
    click.echo("next:")
    for step in (f"cd {shlex.quote(str(target))}", "python -m venv .venv && . .venv/bin/activate",
                 f"{payhub_install_command()}    # payhub first, as installed here; not the unrelated PyPI project "
                 "named payhub", "pip install -e '.[test]'", "pytest", "ruff check . && mypy src tests"):
        click.echo(f"  {plain(step)}")
