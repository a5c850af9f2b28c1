"""``payhub plugins check NAME``: run a configured plugin's contract checks against the system it is configured for.

The checks are those of the contract suites (:mod:`payhub.testing.contracts`), one place for each rule. Only checks
that are safe against a configured system run by default: a rail's capabilities, its timeouts, lookups of keys
never sent, settings models, hook specifications, a source's first fetches. Checks that send money run only with
``--send`` (meant for a provider's sandbox) and a payee from the payees file; checks that need a fault-injecting
provider, an upstream to add records to, or sample events are skipped with that reason (they run in the plugin's
own tests). Exit 0 when every check that ran passed, 1 when one failed (or the plugin failed to load), 2 for usage
and configuration errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click
from pydantic import BaseModel

from payhub.api import Payee, PayoutInstruction
from payhub.cli import Context, fail_cleanly, pass_ctx
from payhub.cli.admin import plugins
from payhub.errors import ConfigError, InvalidRecord
from payhub.money import check_currency, parse_amount, quantize
from payhub.plugins import Plugins, load_plugins
from payhub.settings import Settings
from payhub.testing.contracts.calculator_checks import CALCULATOR_CHECKS, CalculatorSubject
from payhub.testing.contracts.checks import Check, CheckResult, run_checks
from payhub.testing.contracts.hook_checks import HOOK_CHECKS, HookSubject
from payhub.testing.contracts.rail_checks import RAIL_CHECKS, RailSubject
from payhub.testing.contracts.settings_checks import SETTINGS_CHECKS, PluginKind, SettingsSubject
from payhub.testing.contracts.source_checks import SOURCE_CHECKS, SourceSubject

TABLES: dict[PluginKind, str] = {"source": "sources", "calculator": "programs", "rail": "rails", "hook": "hooks"}
NO_FAULTS = "needs a fault-injecting test set-up: runs in the plugin's contract tests (payhub.testing.contracts)"


@plugins.command("check")
@click.argument("name")
@click.option("--kind", type=click.Choice(list(TABLES)), help="The section's kind, when NAME names several.")
@click.option("--send", is_flag=True, help="Also run the checks that send money (a sandbox only: they pay --payee).")
@click.option("--payee", "payee_id", help="With --send: the payee (from the payees file) the payouts go to.")
@click.option("--amount", default="1.00", show_default=True, help="With --send: the amount of each payout.")
@click.option("--currency", help="With --send: the payouts' currency (default: the payee's).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
@fail_cleanly
def plugins_check(ctx: Context, name: str, kind: PluginKind | None, send: bool, payee_id: str | None, amount: str,
                  currency: str | None, fmt: str) -> None:
    """Run the contract checks of the configured plugin NAME (a rail, source, program or hook section) and print
    one line per check: passed, failed or skipped with the reason. Exit 0 all passed, 1 any failed, 2 usage or
    configuration errors."""
    settings = ctx.settings
    kind = _kind(settings, name, kind)
    key = f"{TABLES[kind]}.{name}"
    if not getattr(settings, TABLES[kind])[name].enabled:
        raise click.UsageError(f"{key} is disabled (enabled = false)")
    make_payout = _payouts(settings, payee_id, amount, currency) if send else None
    loaded = load_plugins(settings, kinds={kind})
    try:
        failure = loaded.failed(kind, name)
        if failure is not None:
            _print([CheckResult("load", "failed", failure)], key, fmt)
            sys.exit(1)
        results = _run(settings, loaded, kind, name, make_payout)
    finally:
        loaded.close()
    _print(results, key, fmt)
    sys.exit(1 if any(r.status == "failed" for r in results) else 0)


def _kind(settings: Settings, name: str, kind: PluginKind | None) -> PluginKind:
    found = [k for k, table in TABLES.items() if name in getattr(settings, table) and kind in (None, k)]
    if not found:
        where = f"[{TABLES[kind]}.{name}]" if kind else f"a [sources|programs|rails|hooks.{name}] section"
        raise click.UsageError(f"no plugin section {name!r} is configured (looked for {where})")
    if len(found) > 1:
        raise click.UsageError(f"{name!r} names a {' and a '.join(found)} section: choose one with --kind")
    return found[0]


def _payouts(settings: Settings, payee_id: str | None, amount: str, currency: str | None
             ) -> Callable[[str], PayoutInstruction]:
    """``make_payout(key)`` for --send: the payee's row of the payees file, the amount, the currency."""
    from payhub.payees import read_payees

    if not payee_id:
        raise click.UsageError("--send needs --payee: the payee (in the payees file) the test payouts are sent to")
    if settings.payees.file is None:
        raise ConfigError([("payees.file", "--send needs the payees file to find the payee")])
    rows, _problems = read_payees(settings.resolve(settings.payees.file))
    row = next((r for r in rows if r["id"] == payee_id), None)
    if row is None:
        raise click.UsageError(f"payee {payee_id!r} is not in {settings.payees.file}")
    payee = Payee(row["id"], row["name"], country=row["country"], currency=row["currency"], email=row["email"],
                  rail=row["rail"], details=json.loads(row["details"]))
    try:
        code = check_currency(currency or payee.currency)
        value = quantize(parse_amount(amount), code)
    except InvalidRecord as exc:
        raise click.UsageError(f"--amount/--currency: {exc}") from None
    if value <= Decimal(0):
        raise click.UsageError("--amount must be positive")
    counter = iter(range(1, 1_000_000))

    def make_payout(key: str) -> PayoutInstruction:
        number = next(counter)
        return PayoutInstruction(number, key, payee, value, code, f"payhub plugins check {number}", datetime.now(UTC))

    return make_payout


def _run(settings: Settings, loaded: Plugins, kind: PluginKind, name: str,
         make_payout: Callable[[str], PayoutInstruction] | None) -> list[CheckResult]:
    key = f"{TABLES[kind]}.{name}"
    validated: Any = loaded.validated.get(key)
    model: type[BaseModel] | None
    results: list[CheckResult] = []
    if kind == "rail":
        rail = loaded.rails[name]
        model = type(rail).settings_model
        cls = type(rail)

        def skip(check: Check[RailSubject]) -> str | None:
            if check.faults:
                return NO_FAULTS
            if check.sends and make_payout is None:
                return "sends money: run with --send against a sandbox"
            return None

        subject = RailSubject(lambda: cls(name, validated), timeout_seconds=settings.rails[name].timeout_seconds)
        if make_payout is not None:
            subject.make_payout = make_payout
        results += run_checks(RAIL_CHECKS, subject, skip=skip)
    elif kind == "source":
        source = loaded.sources[name]
        model, source_cls = type(source).settings_model, type(source)
        limit = min(2, settings.sources[name].batch_size)
        results += run_checks(SOURCE_CHECKS, SourceSubject(lambda: source_cls(name, validated), limit=limit,
                                                           live=True),
                              skip=lambda c: NO_FAULTS if c.faults else None)
    elif kind == "calculator":
        calculator = loaded.calculators[name]
        model, calc_cls = type(calculator).params_model, type(calculator)
        results += run_checks(CALCULATOR_CHECKS, CalculatorSubject(lambda: calc_cls(name, validated), events=()))
    else:
        hook = loaded.hooks.get_plugin(name)
        found = getattr(hook if isinstance(hook, type) else type(hook), "settings_model", None)
        model = found if isinstance(found, type) and issubclass(found, BaseModel) else None
        results += run_checks(HOOK_CHECKS, HookSubject(lambda: hook))
    if model is not None:
        results += run_checks(SETTINGS_CHECKS, SettingsSubject(model, kind))
    return results


def _print(results: Sequence[CheckResult], key: str, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({"plugin": key, "checks": [asdict(r) for r in results]}, indent=2, default=_plain))
        return
    for result in results:
        line = f"{result.status:<8}{result.name}"
        click.echo(f"{line}: {result.detail}" if result.detail else line)
    counts = {status: sum(1 for r in results if r.status == status) for status in ("passed", "failed", "skipped")}
    click.echo(f"{key}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")


def _plain(value: Any) -> str:
    return str(value)
