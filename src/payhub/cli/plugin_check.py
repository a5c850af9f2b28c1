"""``payhub plugins check NAME``: run a configured plugin's contract checks against the system it is configured for.

The checks are those of the contract suites (:mod:`payhub.testing.contracts`), one place for each rule. Only checks
that are safe against a configured system run by default: a rail's capabilities, its timeouts, lookups of keys
never sent, settings models, hook specifications, a source's first fetches. Checks that send money run only with
``--send`` (meant for a provider's sandbox) and a payee from the payees file; checks that need a fault-injecting
provider, an upstream to add records to, or sample events are skipped with that reason (they run in the plugin's
own tests). Each check runs under a bound (the rail's ``timeout_seconds``, or ``daemon.plugin_timeout_seconds`` for
other plugins, plus a margin); a check still running then is abandoned, as the core abandons a plugin call, and
fails. Text output prints each result as it completes; on Ctrl-C the results so far are printed (exit 130). Exit 0
when every check that ran passed, 1 when one failed (or the plugin failed to load), 2 for usage and configuration
errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from decimal import Decimal
from typing import Any

import click
from pydantic import BaseModel

from payhub.api import Payee, PayoutInstruction
from payhub.cli import Context, fail_cleanly, pass_ctx
from payhub.cli.admin import plugins
from payhub.cli.output import plain, to_json
from payhub.clock import utcnow
from payhub.errors import ConfigError, InvalidRecord, PluginTimeout
from payhub.guard import Guard
from payhub.money import check_currency, parse_amount, quantize
from payhub.plugins import Plugins, load_plugins
from payhub.settings import Settings
from payhub.testing.contracts.calculator_checks import CALCULATOR_CHECKS, CalculatorSubject
from payhub.testing.contracts.checks import Check, CheckResult, run_check
from payhub.testing.contracts.hook_checks import HOOK_CHECKS, HookSubject
from payhub.testing.contracts.rail_checks import RAIL_CHECKS, RailSubject
from payhub.testing.contracts.settings_checks import SETTINGS_CHECKS, PluginKind, SettingsSubject
from payhub.testing.contracts.source_checks import SOURCE_CHECKS, SourceSubject

TABLES: dict[PluginKind, str] = {"source": "sources", "calculator": "programs", "rail": "rails", "hook": "hooks"}
NO_FAULTS = "needs a fault-injecting test set-up: runs in the plugin's contract tests (payhub.testing.contracts)"


def check_bound(timeout: float) -> float:
    """How long one check may run before it is abandoned: the plugin's call timeout plus a margin (half of it, at
    least 1 s and at most 30 s) for the work around the calls."""
    return timeout + min(max(timeout / 2, 1.0), 30.0)


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
    one line per check as it completes: passed, failed or skipped with the reason. A check running past its bound
    (timeout_seconds plus a margin) is abandoned and fails. Exit 0 all passed, 1 any failed, 2 usage or
    configuration errors, 130 interrupted."""
    settings = ctx.settings
    kind = _kind(settings, name, kind)
    key = f"{TABLES[kind]}.{name}"
    if not getattr(settings, TABLES[kind])[name].enabled:
        raise click.UsageError(f"{key} is disabled (enabled = false)")
    if not send and (payee_id is not None or currency is not None):
        raise click.UsageError("--payee and --currency go with --send (they choose where the test payouts go)")
    make_payout = _payouts(settings, payee_id, amount, currency) if send else None
    loaded = load_plugins(settings, kinds={kind})
    results: list[CheckResult] = []

    def emit(result: CheckResult) -> None:
        results.append(result)
        if fmt == "text":
            click.echo(_line(result))

    interrupted = False
    try:
        failure = loaded.failed(kind, name)
        if failure is not None:
            emit(CheckResult("load", "failed", failure))
        else:
            for result in _run(settings, loaded, kind, name, make_payout):
                emit(result)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        loaded.close()
    _summary(results, key, fmt, interrupted)
    sys.exit(130 if interrupted else 1 if any(r.status == "failed" for r in results) else 0)


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
    path = settings.resolve(settings.payees.file)
    if not path.exists():
        raise ConfigError([("payees.file", f"{path} does not exist")])
    try:
        rows, _problems = read_payees(path)
    except UnicodeDecodeError as exc:
        raise ConfigError([("payees.file", f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    except OSError as exc:
        raise ConfigError([("payees.file", f"{path} cannot be read: {exc.strerror or exc}")]) from None
    row = next((r for r in rows if r["id"] == payee_id), None)
    if row is None:
        raise click.UsageError(f"payee {payee_id!r} is not in {settings.payees.file}")
    payee = Payee(row["id"], row["name"], country=row["country"], currency=row["currency"], email=row["email"],
                  rail=row["rail"], details=json.loads(row["details"]))
    if not (currency or payee.currency):
        raise click.UsageError(f"payee {payee_id!r} has no currency in {settings.payees.file}: pass --currency")
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
        return PayoutInstruction(number, key, payee, value, code, f"payhub plugins check {number}", utcnow())

    return make_payout


def _bounded(checks: Iterable[Check[Any]], subject: Any, timeout: float,
             skip: Callable[[Check[Any]], str | None] | None = None) -> Iterator[CheckResult]:
    """Run each check in a thread of its own, abandoning it after :func:`check_bound` seconds (a failure)."""
    bound = check_bound(timeout)
    for check in checks:
        reason = skip(check) if skip is not None else None
        if reason:
            yield CheckResult(check.name, "skipped", reason)
            continue
        try:
            yield Guard(f"check {check.name}", bound).call(run_check, check, subject)
        except PluginTimeout:
            yield CheckResult(check.name, "failed", f"did not finish within {bound:g} s (a call timeout of "
                              f"{timeout:g} s plus a margin): a plugin call blocks without a timeout of its own; the "
                              "check was abandoned", bound)


def _run(settings: Settings, loaded: Plugins, kind: PluginKind, name: str,
         make_payout: Callable[[str], PayoutInstruction] | None) -> Iterator[CheckResult]:
    key = f"{TABLES[kind]}.{name}"
    validated: Any = loaded.validated.get(key)
    model: type[BaseModel] | None
    timeout = settings.daemon.plugin_timeout_seconds
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

        timeout = settings.rails[name].timeout_seconds
        subject = RailSubject(lambda: cls(name, validated), timeout_seconds=timeout)
        if make_payout is not None:
            subject.make_payout = make_payout
        yield from _bounded(RAIL_CHECKS, subject, timeout, skip)
    elif kind == "source":
        source = loaded.sources[name]
        model, source_cls = type(source).settings_model, type(source)
        limit = min(2, settings.sources[name].batch_size)
        yield from _bounded(SOURCE_CHECKS, SourceSubject(lambda: source_cls(name, validated), limit=limit, live=True),
                            timeout, lambda c: NO_FAULTS if c.faults else None)
    elif kind == "calculator":
        calculator = loaded.calculators[name]
        model, calc_cls = type(calculator).params_model, type(calculator)
        yield from _bounded(CALCULATOR_CHECKS, CalculatorSubject(lambda: calc_cls(name, validated), events=()),
                            timeout)
    else:
        hook = loaded.hooks.get_plugin(name)
        found = getattr(hook if isinstance(hook, type) else type(hook), "settings_model", None)
        model = found if isinstance(found, type) and issubclass(found, BaseModel) else None
        yield from _bounded(HOOK_CHECKS, HookSubject(lambda: hook), timeout)
    if model is not None:
        yield from _bounded(SETTINGS_CHECKS, SettingsSubject(model, kind), timeout)


def _line(result: CheckResult) -> str:
    """One result as a line; the detail (a plugin's or a provider's text) with control characters made visible."""
    line = f"{result.status:<8}{result.name}"
    return f"{line}: {plain(result.detail)}" if result.detail else line


def _summary(results: Sequence[CheckResult], key: str, fmt: str, interrupted: bool) -> None:
    """The json document (every result), or the text summary line (the results were printed as they came)."""
    if fmt == "json":
        click.echo(to_json({"plugin": key, "interrupted": interrupted, "checks": [asdict(r) for r in results]}))
        return
    counts = {status: sum(1 for r in results if r.status == status) for status in ("passed", "failed", "skipped")}
    ending = " (interrupted)" if interrupted else ""
    click.echo(f"{key}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped{ending}")

