"""Fixtures for the gift-card rail tests: the provider simulator, rails pointed at it, and a payhub runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from giftcard_helpers import API_KEY
from payhub_simulators.giftcard import GiftCardSimulator
from pydantic import SecretStr

from payhub_giftcard import GiftCardRail, GiftCardSettings


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., GiftCardSimulator]]:
    """``sim_factory(**options)``: a started simulator, stopped after the test."""
    made: list[GiftCardSimulator] = []

    def factory(**options: Any) -> GiftCardSimulator:
        sim = GiftCardSimulator(api_key=API_KEY, **options).start()
        made.append(sim)
        return sim

    yield factory
    for sim in made:
        sim.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., GiftCardSimulator]) -> GiftCardSimulator:
    return sim_factory()


@pytest.fixture
def rail_for() -> Iterator[Callable[..., GiftCardRail]]:
    """``rail_for(base_url, **settings)``: a GiftCardRail with the test key and no real sleeping on 429."""
    made: list[GiftCardRail] = []

    def factory(base_url: str, *, sleeps: list[float] | None = None, **settings: Any) -> GiftCardRail:
        values: dict[str, Any] = {"base_url": base_url, "api_key": SecretStr(API_KEY), "http_timeout_seconds": 2.0}
        values.update(settings)
        rail = GiftCardRail("gift", GiftCardSettings(**values),
                            sleep=(sleeps.append if sleeps is not None else lambda _s: None))
        made.append(rail)
        return rail

    yield factory
    for rail in made:
        rail.close()
