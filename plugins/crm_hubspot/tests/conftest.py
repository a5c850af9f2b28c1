"""Fixtures for the hubspot source tests: the HubSpot simulator, sources on it, and payhub harnesses.

Nothing here leaves 127.0.0.1: the simulator listens on an ephemeral local port, respx mocks the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from payhub_simulators.hubspot import HubSpotSimulator

from payhub.api import SourceRecord
from payhub.testing import Harness, throwaway_database
from payhub_hubspot import HubSpotSettings, HubSpotSource

FAST = {"search_requests_per_second": 1000, "requests_per_second": 1000, "index_lag_seconds": 0,
        "retry_initial_seconds": 0.01, "retry_max_seconds": 0.05}


@pytest.fixture
def sim() -> Iterator[HubSpotSimulator]:
    """A started simulator without HubSpot's search rate limit (tests of the limiter set it back)."""
    with HubSpotSimulator(search_per_second=10_000) as simulator:
        yield simulator


@pytest.fixture
def make_settings(sim: HubSpotSimulator) -> Callable[..., HubSpotSettings]:
    """``make_settings(**overrides)``: settings for the simulator (private app token, fast limits)."""

    def factory(**overrides: Any) -> HubSpotSettings:
        values: dict[str, Any] = {"base_url": sim.url, "access_token": sim.private_token,
                                  "start_date": "2020-01-01", "company_currency": "USD", **FAST}
        if "refresh_token" in overrides:
            values.pop("access_token")
        values.update(overrides)
        return HubSpotSettings.model_validate({k: v for k, v in values.items() if v is not None})

    return factory


@pytest.fixture
def make_source(make_settings: Callable[..., HubSpotSettings]) -> Iterator[Callable[..., HubSpotSource]]:
    """``make_source(**overrides)``: a HubSpotSource named ``hs`` on the simulator; closed after the test."""
    made: list[HubSpotSource] = []

    def factory(**overrides: Any) -> HubSpotSource:
        kwargs = {k: overrides.pop(k) for k in ("sleep", "clock", "wall_clock", "transport") if k in overrides}
        source = HubSpotSource("hs", make_settings(**overrides), **kwargs)
        made.append(source)
        return source

    yield factory
    for source in made:
        source.close()


def drain_source(source: HubSpotSource, cursor: str | None = None, limit: int = 1000,
                 max_fetches: int = 500) -> tuple[list[SourceRecord], str | None]:
    """Fetch until the source says nothing more is ready; return every record and the last cursor."""
    records: list[SourceRecord] = []
    for _ in range(max_fetches):
        result = source.fetch(cursor, limit)
        records += result.records
        cursor = result.cursor
        if not result.more:
            return records, cursor
    raise AssertionError("the source never caught up")


@pytest.fixture
def drain() -> Callable[..., tuple[list[SourceRecord], str | None]]:
    return drain_source


def keys(records: list[SourceRecord]) -> list[tuple[str, str]]:
    return [(r.object_id, r.transition) for r in records]


@pytest.fixture
def record_keys() -> Callable[[list[SourceRecord]], list[tuple[str, str]]]:
    return keys


def toml_value(value: Any) -> str:
    """TOML text of a simple value (strings, numbers, booleans, lists, tables of strings)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@pytest.fixture
def runtime_db_url(tmp_path: Path) -> Iterator[str]:
    """The database of ``hs_harness``: a SQLite file. A module that must run on PostgreSQL too overrides this
    with ``both_databases``."""
    with throwaway_database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def both_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite, then PostgreSQL, database URL (skipped when the PostgreSQL server cannot be reached)."""
    with throwaway_database(request.param, tmp_path, pytest.skip) as url:
        yield url


@pytest.fixture
def hs_harness(tmp_path: Path, sim: HubSpotSimulator, runtime_db_url: str) -> Iterator[Callable[..., Harness]]:
    """``hs_harness(source=..., programs=...)``: payhub's in-process harness on ``runtime_db_url`` whose settings
    enable ``[sources.hs] plugin = "hubspot"`` on the simulator (the installed entry point, as in production), with
    ``source`` keys over the defaults and ``programs`` as TOML text. Each call closes the harness made before, as a
    process stopped and started again on the same database."""
    made: list[Harness] = []

    def factory(source: dict[str, Any] | None = None, programs: str = "") -> Harness:
        if made:
            made[-1].close()
        values: dict[str, Any] = {"plugin": "hubspot", "base_url": sim.url, "access_token": sim.private_token,
                                  "start_date": "2020-01-01", "company_currency": "USD", **FAST, **(source or {})}
        lines = [f"{key} = {toml_value(value)}" for key, value in values.items()]
        directory = tmp_path / f"harness-{len(made) + 1}"
        directory.mkdir()
        harness = Harness("[sources.hs]\n" + "\n".join(lines) + "\n" + programs, database_url=runtime_db_url,
                          directory=directory)
        made.append(harness)
        assert harness.plugin_failures() == {}
        return harness

    yield factory
    for harness in made:
        harness.close()

