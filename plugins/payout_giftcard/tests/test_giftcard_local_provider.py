"""The gift-card rail against a provider on this machine (the simulator of ``payhub-simulators``): it is pointed at
like any provider (base_url and api_key, no mode of its own), reached without the environment's proxy, configured
by ``payhub-simulator giftcard --rail NAME -- …``, and its orders can be read back from the simulator's state file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from giftcard_helpers import API_KEY, instruction, payee
from payhub.api import Outcome
from payhub_simulators.giftcard import GiftCardSimulator
from pydantic import SecretStr, ValidationError

from payhub_giftcard import GiftCardRail, GiftCardSettings

REAL = "https://api.giftprovider.example/api/v2"


def problems(exc: ValidationError) -> dict[str, str]:
    return {".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()}


def test_a_provider_is_required_and_there_is_no_simulator_mode(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as neither:
        GiftCardSettings()
    assert sorted(problems(neither.value)) == ["api_key", "base_url"]
    with pytest.raises(ValidationError) as old:
        GiftCardSettings(simulator=tmp_path / "sim.db", base_url=REAL, api_key=SecretStr("k"))
    assert list(problems(old.value)) == ["simulator"]  # an unknown key, like any other


def test_a_loopback_provider_is_reached_without_the_proxy(sim: GiftCardSimulator, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for url in (sim.url, sim.url.replace("127.0.0.1", "localhost")):
        rail = GiftCardRail("gift", GiftCardSettings(base_url=url, api_key=SecretStr(API_KEY)))
        try:
            assert not rail.client.http.trust_env
            [paid] = rail.send([instruction(1, "40.00", "EUR", payee("p1", country="DE"))])
            assert paid.outcome == Outcome.PAID and paid.provider_ref
        finally:
            rail.close()
    remote = GiftCardRail("gift", GiftCardSettings(base_url=REAL, api_key=SecretStr("k")))
    assert remote.client.http.trust_env  # a real provider: the environment's proxy applies
    remote.close()


PAY = """
import sys
from pathlib import Path
from payhub.testing import Harness
sys.path.insert(0, {tests!r})
from giftcard_helpers import instruction
with Harness(Path({config!r}).read_text()) as harness:
    rail = harness.rail("gift")
    [result] = rail.send([instruction(7)])
    print(result.outcome.value, rail.settings.base_url)
"""


@pytest.mark.slow
def test_the_simulator_command_points_payhub_settings_at_itself(tmp_path: Path) -> None:
    config = tmp_path / "payhub.toml"
    config.write_text(textwrap.dedent("""
        [rails.gift]
        plugin = "giftcard"
        base_url = "http://127.0.0.1:9/api/v2"
        api_key = "not-the-simulator-key"
    """))
    state = tmp_path / "sim.db"
    script = textwrap.dedent(PAY.format(tests=str(Path(__file__).parent), config=str(config)))
    done = subprocess.run([sys.executable, "-m", "payhub_simulators", "giftcard", "--state", str(state),
                           "--api-key", "k2", "--rail", "gift", "--", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    outcome, url = done.stdout.split()
    assert outcome == "paid" and url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:9/")
    assert "SIMULATOR listening on" in done.stderr

    listed = subprocess.run([sys.executable, "-m", "payhub_simulators", "giftcard", "--state", str(state),
                             "--orders"], capture_output=True, text=True, timeout=30, check=True)
    [order] = json.loads(listed.stdout)
    assert order["external_id"] == instruction(7).idempotency_key and order["status"] == "EXECUTED"
    assert '"denomination": 25.00' in listed.stdout  # amounts as stored, not through a float


@pytest.mark.slow  # runs commands in subprocesses
def test_the_command_exits_with_the_status_of_what_it_ran(tmp_path: Path) -> None:
    failed = subprocess.run([sys.executable, "-m", "payhub_simulators", "giftcard", "--", sys.executable, "-c",
                             "import sys; sys.exit(3)"], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 3
    missing = subprocess.run([sys.executable, "-m", "payhub_simulators", "giftcard", "--state",
                              str(tmp_path / "none.db"), "--orders"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no simulator state file" in missing.stderr
    assert not (tmp_path / "none.db").exists()
