"""``payhub explain payout:N`` names the gift-card provider's order of each payout the giftcard rail placed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from giftcard_helpers import API_KEY, write_settings
from payhub.cli import main
from payhub.db.engine import make_engine
from payhub.db.schema import payouts
from sqlalchemy import select
from test_giftcard_core import SETTINGS, write_backlog

from payhub_simulators.giftcard import GiftCardSimulator


def test_explain_names_the_provider_order(tmp_path: Path) -> None:
    sim = GiftCardSimulator(api_key=API_KEY).start()
    try:
        write_backlog(tmp_path, 3, 5, seed=5)
        config = str(write_settings(tmp_path, SETTINGS.format(url=sim.url, key=API_KEY)))
        assert CliRunner().invoke(main, ["-c", config, "db", "upgrade"]).exit_code == 0
        result = CliRunner().invoke(main, ["-c", config, "run", "--once"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        engine = make_engine(f"sqlite:///{tmp_path / 'payhub.db'}")
        with engine.connect() as conn:
            rows = conn.execute(select(payouts).order_by(payouts.c.id)).all()
        engine.dispose()
        assert rows and all(row.provider_ref for row in rows)
        _explained(config, rows, sim)
    finally:
        sim.stop()


def _explained(config: str, rows: list[Any], sim: GiftCardSimulator) -> None:
    for row in rows:
        [order] = sim.orders(row.idempotency_key)
        result = CliRunner().invoke(main, ["-c", config, "explain", f"payout:{row.id}", "--format", "json"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        payout = json.loads(result.stdout)["payout"]
        assert payout["rail_plugin"] == "giftcard"
        assert payout["document"] == {"kind": "gift-card order", "reference": order["id"], "file": None, "line": None,
                                      "order_id": order["id"], "credit_note": None, "missing": None}
        text = CliRunner().invoke(main, ["-c", config, "explain", f"payout:{row.id}"], catch_exceptions=False).stdout
        assert f"document: gift-card order id {order['id']}" in text
