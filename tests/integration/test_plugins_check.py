"""``payhub plugins check NAME`` on SQLite with test plugins: the safe checks run against the configured system, the
money-moving ones only with --send, and a broken plugin fails the check for what it breaks."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from payhub.testing import invoke_cli, write_distribution
from payhub.testing.provider import FaultProvider

ENTRY_POINTS = """\
[payhub.rails]
provider = payhub.testing.provider:ProviderRail
leaky = check_plugins:LeakyRail
blocking = check_plugins:BlockingRail
interrupted = check_plugins:InterruptedRail
[payhub.sources]
check_fake = payhub.testing:FakeSource
[payhub.hooks]
screen = check_plugins:Screen
shouting = check_plugins:Shouting
check_misspelt = check_plugins:Misspelt
"""
MODULE = textwrap.dedent("""
    import signal
    import sys
    import threading

    from payhub.api import hookimpl
    from payhub.testing.provider import ProviderRail, ProviderRailSettings

    RELEASE = threading.Event()
    SEEN = []  # what the command had printed when a send began


    class BlockingRail(ProviderRail):
        def send(self, instructions):
            SEEN.append(sys.stdout.buffer.getvalue().decode())
            RELEASE.wait(30)
            return super().send(instructions)


    class InterruptedRail(ProviderRail):
        def send(self, instructions):
            # Ctrl-C: a SIGINT, which wakes the main thread where it waits (_thread.interrupt_main would not)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            RELEASE.wait(30)
            return super().send(instructions)


    class LeakySettings(ProviderRailSettings):
        api_token: str = "plain"


    class LeakyRail(ProviderRail):
        settings_model = LeakySettings


    class Shouting:
        def __init__(self, settings):
            raise RuntimeError("\x1b[2J\x1b[31mall payouts wiped")


    class Screen:
        def __init__(self, settings):
            self.settings = settings

        @hookimpl
        def payhub_screen_payout(self, payout):
            return None


    class Misspelt:
        def __init__(self, settings):
            self.settings = settings

        @hookimpl
        def payhub_screen_payouts(self, payout):
            return None
""")


@pytest.fixture
def provider() -> Iterator[FaultProvider]:
    with FaultProvider() as provider:
        yield provider


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: FaultProvider) -> Path:
    site = write_distribution(tmp_path / "site", "payhub-check-plugins", ENTRY_POINTS,
                              modules={"check_plugins": MODULE})
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "payees.csv").write_text("id,name,country,currency,email\np1,Ada Lovelace,DE,EUR,ada@example.com\n")
    path = tmp_path / "payhub.toml"
    path.write_text(textwrap.dedent(f"""\
        [database]
        url = "sqlite:///{tmp_path / 'payhub.db'}"
        [payees]
        file = "payees.csv"
        [rails.ref]
        plugin = "provider"
        base_url = "{provider.url}"
        http_timeout_seconds = 1
        [rails.leaky]
        base_url = "{provider.url}"
        timeout_seconds = 5
        [rails.blocking]
        base_url = "{provider.url}"
        http_timeout_seconds = 0.1
        connect_timeout_seconds = 0.1
        timeout_seconds = 0.3
        [rails.interrupted]
        base_url = "{provider.url}"
        http_timeout_seconds = 1
        [sources.crm]
        plugin = "check_fake"
        path = "records.jsonl"
        [programs.bonus]
        calculator = "flat"
        amount = "10"
        currency = "EUR"
        [hooks.screen]
        [hooks.shouting]
        enabled = false
        [hooks.misspelt]
        plugin = "check_misspelt"
        enabled = false
    """))
    return path


def lines(output: str) -> dict[str, str]:
    """check name → its line."""
    found = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("passed", "failed", "skipped"):
            found[rest.strip().split(":")[0]] = status + " " + rest.strip()
    return found


def test_a_rail_passes_the_safe_checks_and_skips_those_that_send(config: Path, provider: FaultProvider) -> None:
    result = invoke_cli("-c", str(config), "plugins", "check", "ref")
    assert result.exit_code == 0, result.output
    seen = lines(result.stdout)
    for name in ("capabilities_stable", "http_timeout_below_timeout_seconds", "lookup_none_for_unknown_keys",
                 "secrets_are_secretstr", "no_core_key_collision"):
        assert seen[name].startswith("passed"), seen[name]
    assert seen["one_result_per_key"] == "skipped one_result_per_key: sends money: run with --send against a sandbox"
    assert seen["resend_never_pays_twice"].startswith("skipped resend_never_pays_twice: needs a fault-injecting")
    assert "rails.ref: 5 passed, 0 failed, 17 skipped" in result.stdout
    assert not provider.ledger.acceptances  # nothing was paid


def test_send_pays_the_payee_through_the_rail(config: Path, provider: FaultProvider) -> None:
    result = invoke_cli("-c", str(config), "plugins", "check", "ref", "--send", "--payee", "p1", "--amount", "0.01",
                        "--format", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
    assert checks["one_result_per_key"] == checks["max_batch_respected"] == checks["thread_safe_sends"] == "passed"
    paid = provider.ledger.acceptances
    assert len(paid) == 3 + 100 + 12 and {(a.amount, a.currency) for a in paid} == {(Decimal("0.01"), "EUR")}


def test_a_broken_rail_fails_the_checks_for_what_it_breaks(config: Path) -> None:
    result = invoke_cli("-c", str(config), "plugins", "check", "leaky")
    assert result.exit_code == 1, result.output
    seen = lines(result.stdout)
    assert seen["secrets_are_secretstr"] == ("failed secrets_are_secretstr: LeakySettings: api_token looks like a "
                                             "secret but is not pydantic.SecretStr, so `payhub config show`, logs "
                                             "and errors could print it")
    assert seen["http_timeout_below_timeout_seconds"].startswith(
        "failed http_timeout_below_timeout_seconds: settings.http_timeout_seconds = 10 s is not below "
        "timeout_seconds = 5")
    assert seen["capabilities_stable"].startswith("passed")


def test_a_source_runs_its_read_only_checks(config: Path) -> None:
    result = invoke_cli("-c", str(config), "plugins", "check", "crm")
    assert result.exit_code == 0, result.output
    seen = lines(result.stdout)
    assert seen["limit_respected"].startswith("passed") and seen["repeatable_from_cursor"].startswith("passed")
    assert seen["cursor_moves_forward"].startswith("skipped cursor_moves_forward: needs an upstream")


def test_a_calculator_and_a_hook(config: Path) -> None:
    calculator = invoke_cli("-c", str(config), "plugins", "check", "bonus")
    assert calculator.exit_code == 0, calculator.output
    assert lines(calculator.stdout)["deterministic"].startswith("skipped deterministic: needs sample events")
    hook = invoke_cli("-c", str(config), "plugins", "check", "screen")
    assert hook.exit_code == 0, hook.output
    assert lines(hook.stdout)["hookimpls_match_specs"].startswith("passed")


def test_a_plugin_s_text_reaches_the_terminal_with_its_control_characters_made_visible(config: Path) -> None:
    config.write_text(config.read_text().replace("[hooks.shouting]\nenabled = false\n", "[hooks.shouting]\n"))
    result = invoke_cli("-c", str(config), "plugins", "check", "shouting")
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.stdout
    assert "all payouts wiped" in lines(result.stdout)["load"]


def test_a_hook_that_does_not_load_fails(config: Path) -> None:
    config.write_text(config.read_text().replace("enabled = false\n", ""))
    result = invoke_cli("-c", str(config), "plugins", "check", "misspelt")
    assert result.exit_code == 1, result.output
    assert "failed  load: failed to register: PluginValidationError" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("nosuch",), "no plugin section 'nosuch' is configured"),
    (("ref", "--send"), "--send needs --payee"),
    (("ref", "--send", "--payee", "nobody"), "payee 'nobody' is not in payees.csv"),
    (("ref", "--payee", "p1"), "--payee and --currency go with --send"),
])
def test_usage_errors_exit_2(config: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke_cli("-c", str(config), "plugins", "check", *args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.fixture
def released(config: Path) -> Iterator[None]:
    """The check plugins' state cleared, and Ctrl-C raising KeyboardInterrupt as in a new process (whatever an
    earlier test in this worker left as the SIGINT handler)."""
    import check_plugins

    check_plugins.SEEN.clear()
    check_plugins.RELEASE.clear()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        check_plugins.RELEASE.set()
        signal.signal(signal.SIGINT, previous)


def test_a_check_that_blocks_is_abandoned_and_fails(config: Path, released: None) -> None:
    import check_plugins

    result = invoke_cli("-c", str(config), "plugins", "check", "blocking", "--send", "--payee", "p1")
    assert result.exit_code == 1, result.output
    seen = lines(result.stdout)
    for name in ("one_result_per_key", "max_batch_respected", "thread_safe_sends"):
        assert seen[name] == (f"failed {name}: did not finish within 1.3 s (a call timeout of 0.3 s plus a margin): a "
                              "plugin call blocks without a timeout of its own; the check was abandoned")
    assert seen["lookup_none_for_unknown_keys"].startswith("passed")
    assert "rails.blocking: 5 passed, 3 failed, 14 skipped" in result.stdout
    # each result is printed as it completes: the safe checks were on the screen before the first send began
    assert "passed  capabilities_stable" in check_plugins.SEEN[0]
    assert "max_batch_respected" not in check_plugins.SEEN[0]


def test_ctrl_c_prints_the_results_so_far(config: Path, released: None) -> None:
    result = invoke_cli("-c", str(config), "plugins", "check", "interrupted", "--send", "--payee", "p1")
    assert result.exit_code == 130, result.output
    assert lines(result.stdout)["capabilities_stable"].startswith("passed")
    assert "rails.interrupted: 3 passed, 0 failed, 0 skipped (interrupted)" in result.stdout


@pytest.mark.parametrize(("payees", "message"), [
    (None, "payees.file: {path} does not exist"),
    ("directory", "payees.file: {path} cannot be read: Is a directory"),
    (b"id,name,currency\np1,Ad\xe9,EUR\n", "payees.file: {path} is not UTF-8 text: invalid continuation byte"),
])
def test_an_unreadable_payees_file_is_a_configuration_error(config: Path, payees: bytes | str | None,
                                                           message: str) -> None:
    path = config.parent / "payees.csv"
    path.unlink()
    if payees == "directory":
        path.mkdir()
    elif isinstance(payees, bytes):
        path.write_bytes(payees)
    result = invoke_cli("-c", str(config), "plugins", "check", "ref", "--send", "--payee", "p1")
    assert result.exit_code == 2, result.output
    assert message.format(path=path) in " ".join(result.stderr.split())


def test_a_payee_without_a_currency_needs_currency(config: Path) -> None:
    (config.parent / "payees.csv").write_text("id,name,country\np1,Ada Lovelace,DE\n")
    result = invoke_cli("-c", str(config), "plugins", "check", "ref", "--send", "--payee", "p1")
    assert result.exit_code == 2
    assert "payee 'p1' has no currency in payees.csv: pass --currency" in result.output
