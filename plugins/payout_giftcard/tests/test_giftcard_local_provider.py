"""SIMULATOR mode of the gift-card rail (``simulator = "<state file>"``): the shipped simulator runs inside the
process on 127.0.0.1 with an ephemeral port, its orders kept in the SQLite file so that later runs find earlier
orders; a WARNING says no real gift cards are issued; it is refused together with a real provider's settings."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from giftcard_helpers import instruction, payee, write_settings
from payhub.api import Outcome
from payhub.errors import ConfigError
from payhub.plugins import load_plugins
from payhub.settings import load_settings
from pydantic import SecretStr, ValidationError

from payhub_giftcard import GiftCardRail, GiftCardSettings
from payhub_giftcard.simulator import stored_orders

REAL = "https://api.giftprovider.example/api/v2"


def problems(exc: ValidationError) -> dict[str, str]:
    return {".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()}


def test_settings_simulator_or_a_real_provider_never_both(tmp_path: Path) -> None:
    assert GiftCardSettings(simulator=tmp_path / "sim.db").simulator == tmp_path / "sim.db"
    with pytest.raises(ValidationError) as both:
        GiftCardSettings(simulator=tmp_path / "sim.db", base_url=REAL)
    assert list(problems(both.value)) == ["base_url"]
    assert "not allowed together with simulator" in problems(both.value)["base_url"]
    with pytest.raises(ValidationError) as keyed:
        GiftCardSettings(simulator=tmp_path / "sim.db", base_url=REAL, api_key=SecretStr("real-key"))
    assert sorted(problems(keyed.value)) == ["api_key", "base_url"]
    assert "real-key" not in str(keyed.value)
    with pytest.raises(ValidationError) as neither:
        GiftCardSettings()
    assert sorted(problems(neither.value)) == ["api_key", "base_url"]
    assert all(m.startswith("Field required") and "simulator" in m for m in problems(neither.value).values())
    relative = GiftCardSettings.model_validate({"simulator": "state/sim.db"}, context={"base_dir": tmp_path})
    assert relative.simulator == tmp_path / "state" / "sim.db"


def test_payhub_refuses_simulator_with_a_real_base_url(tmp_path: Path) -> None:
    config = write_settings(tmp_path, f"""
        [rails.gift]
        plugin = "giftcard"
        simulator = "sim.db"
        base_url = "{REAL}"
    """)
    with pytest.raises(ConfigError) as refused:
        load_plugins(load_settings(config))
    [(key, message)] = refused.value.problems
    assert key == "rails.gift.base_url" and "not allowed together with simulator" in message
    assert not (tmp_path / "sim.db").exists()  # refused before anything started


def test_starts_on_loopback_warns_and_pays(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy in the environment must not see loopback traffic to the simulator.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    state = tmp_path / "nested" / "sim.db"
    with caplog.at_level(logging.WARNING, logger="payhub_giftcard"):
        rail = GiftCardRail("gift", GiftCardSettings(simulator=state))
    try:
        assert rail.simulator is not None
        url = urlsplit(rail.simulator.url)
        assert url.hostname == "127.0.0.1" and url.port not in (None, 0)
        assert str(rail.client.http.base_url).startswith(rail.simulator.url)
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert "SIMULATOR" in warning.getMessage() and "no real gift cards are issued" in warning.getMessage()
        assert str(state) in warning.getMessage()
        [paid] = rail.send([instruction(1, "40.00", "EUR", payee("p1", country="DE"))])
        assert paid.outcome == Outcome.PAID and paid.provider_ref
        assert state.is_file()
    finally:
        rail.close()
    assert rail.simulator is None
    with pytest.raises(httpx.ConnectError):  # stopped with the rail
        httpx.get(f"http://127.0.0.1:{url.port}/api/v2/products", timeout=2, trust_env=False)


def test_later_runs_find_earlier_orders(tmp_path: Path) -> None:
    state = tmp_path / "sim.db"
    first = GiftCardRail("gift", GiftCardSettings(simulator=state))
    try:
        sent, _ = first.send([instruction(1), instruction(2, "48000", "JPY", payee("jp", country="JP"))])
    finally:
        first.close()
    second = GiftCardRail("gift", GiftCardSettings(simulator=state))  # as a later `payhub run --once` would
    try:
        keys = [instruction(1).idempotency_key, instruction(2).idempotency_key, instruction(3).idempotency_key]
        found = second.lookup(keys)
        assert found[keys[0]] == sent
        assert found[keys[1]] is not None and found[keys[1]].outcome == Outcome.PAID
        assert found[keys[2]] is None  # never sent
        [again] = second.send([instruction(1)])  # the same key again: the stored order, not a second one
        assert again.provider_ref == sent.provider_ref
    finally:
        second.close()
    orders = stored_orders(state)
    assert [o["external_id"] for o in orders] == keys[:2]


def test_through_payhub_settings_with_a_relative_state_file(tmp_path: Path) -> None:
    config = write_settings(tmp_path, """
        [rails.gift]
        plugin = "giftcard"
        simulator = "demo/giftcard-sim.db"
    """)
    plugins = load_plugins(load_settings(config))
    try:
        rail = plugins.rails["gift"]
        assert isinstance(rail, GiftCardRail) and rail.simulator is not None
        assert rail.simulator.state_path == tmp_path / "demo" / "giftcard-sim.db"
        assert rail.send([instruction(7)])[0].outcome == Outcome.PAID
    finally:
        plugins.close()
    assert len(stored_orders(tmp_path / "demo" / "giftcard-sim.db")) == 1


def test_orders_command_prints_the_stored_orders(tmp_path: Path) -> None:
    state = tmp_path / "sim.db"
    rail = GiftCardRail("gift", GiftCardSettings(simulator=state))
    try:
        rail.send([instruction(1, "25.00")])
    finally:
        rail.close()
    done = subprocess.run([sys.executable, "-m", "payhub_giftcard.simulator", "--state", str(state), "--orders"],
                          capture_output=True, text=True, timeout=30, check=True)
    [order] = json.loads(done.stdout)
    assert order["external_id"] == instruction(1).idempotency_key and order["status"] == "EXECUTED"
    assert '"denomination": 25.00' in done.stdout  # amounts as stored, not through a float
    assert "RuntimeWarning" not in done.stderr
    missing = subprocess.run([sys.executable, "-m", "payhub_giftcard.simulator", "--state",
                              str(tmp_path / "none.db"), "--orders"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no simulator state file" in missing.stderr
    assert not (tmp_path / "none.db").exists()
