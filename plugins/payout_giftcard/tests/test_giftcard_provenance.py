"""``payhub explain payout:N`` names the gift-card provider's order of each payout the giftcard rail placed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from giftcard_helpers import API_KEY
from payhub.testing import PayoutView, invoke_cli
from payhub.testing.pytest_plugin import HarnessFactory
from payhub_simulators.giftcard import GiftCardSimulator
from test_giftcard_core import SETTINGS, write_backlog


@pytest.mark.parametrize("payhub_db_url", ["sqlite"], indirect=True)
def test_explain_names_the_provider_order(payhub_harness: HarnessFactory, tmp_path: Path) -> None:
    sim = GiftCardSimulator(api_key=API_KEY).start()
    try:
        write_backlog(tmp_path, 3, 5, seed=5)
        harness = payhub_harness(SETTINGS.format(url=sim.url, key=API_KEY), directory=tmp_path)
        harness.run_until_idle()
        rows = harness.payouts()
        assert rows and all(row.provider_ref for row in rows)
        _explained(str(harness.settings_file), rows, sim)
    finally:
        sim.stop()


def _explained(config: str, rows: list[PayoutView], sim: GiftCardSimulator) -> None:
    for row in rows:
        [order] = sim.orders(row.idempotency_key)
        result = invoke_cli("-c", config, "explain", f"payout:{row.id}", "--format", "json")
        assert result.exit_code == 0, result.output
        payout = json.loads(result.stdout)["payout"]
        assert payout["rail_plugin"] == "giftcard"
        assert payout["document"] == {"kind": "gift-card order", "reference": order["id"], "file": None, "line": None,
                                      "order_id": order["id"], "credit_note": None, "missing": None}
        text = invoke_cli("-c", config, "explain", f"payout:{row.id}").stdout
        assert f"document: gift-card order id {order['id']}" in text
