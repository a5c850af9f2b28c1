"""Fixtures for the payhub-salesforce tests (all named ``sf_*``, so they never shadow payhub's own fixtures).

* ``sf_payloads``: JSON bodies shaped like Salesforce's documented responses (token, query result, errors).
* ``sf_sim``: a started :class:`~payhub_simulators.salesforce.SalesforceSimulator` on 127.0.0.1.
* ``sf_settings``: settings for a source, fast retries; ``sf_source``: a source on the simulator.
* ``sf_harness``: payhub's in-process harness on ``payhub_db_url`` from a settings body, a new one (after closing
  the last) at each call, as a restarted process on the same database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from payhub_simulators.salesforce import SalesforceSimulator

from payhub.api import SourceRecord
from payhub.testing import Harness
from payhub.testing.pytest_plugin import HarnessFactory
from payhub_salesforce import SalesforceSettings, SalesforceSource

LOGIN = "https://login.example.test"
INSTANCE = "https://acme.my.example.test"
DATA = "/services/data/v62.0"
WON_AT = "2026-05-01T10:00:00.000+0000"  # LastStageChangeDate of _record's won deals, as Salesforce returns it
WON_KEY = "won:2026-05-01T10:00:00Z"  # the transition the source makes of it (UTC, to the second)


def _token_body(instance_url: str = INSTANCE, issued_at: int = 1_780_000_000_000, **extra: Any) -> dict[str, Any]:
    return {"access_token": "00D000000000001!AQ0AQ.token", "signature": "c2lnbmF0dXJl",
            "scope": "api refresh_token", "instance_url": instance_url,
            "id": f"{LOGIN}/id/00D000000000001AAA/005000000000001AAA", "token_type": "Bearer",
            "issued_at": str(issued_at), **extra}


def _record(object_id: str, modstamp: str, sobject: str = "Opportunity", **fields: Any) -> dict[str, Any]:
    """A record as queryAll returns it (attributes first)."""
    base: dict[str, Any] = {"attributes": {"type": sobject, "url": f"{DATA}/sobjects/{sobject}/{object_id}"},
                            "Id": object_id, "IsDeleted": False, "SystemModstamp": modstamp}
    if sobject == "Opportunity":
        base.update(IsWon=True, IsClosed=True, StageName="Closed Won", CloseDate="2026-05-01",
                    LastStageChangeDate=WON_AT, Amount=1000.0, OwnerId="005000000000001AAA",
                    PartnerAccountId="001000000000001AAA", AccountId="001000000000009AAA")
    base.update(fields)
    return base


def _query_body(records: list[dict[str, Any]], next_url: str | None = None, total: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"totalSize": total if total is not None else len(records), "done": next_url is None,
                            "records": records}
    if next_url:
        body["nextRecordsUrl"] = next_url
    return body


def _errors(code: str, message: str) -> list[dict[str, str]]:
    return [{"message": message, "errorCode": code}]


@pytest.fixture
def sf_payloads() -> SimpleNamespace:
    return SimpleNamespace(token=_token_body, record=_record, query=_query_body, errors=_errors, LOGIN=LOGIN,
                           INSTANCE=INSTANCE, DATA=DATA, WON_AT=WON_AT, WON_KEY=WON_KEY)


@pytest.fixture
def sf_settings() -> Callable[..., SalesforceSettings]:
    """``sf_settings(**overrides)``: client-credentials settings against LOGIN, with retries that do not wait."""

    def make(**overrides: Any) -> SalesforceSettings:
        values: dict[str, Any] = {"auth": "client_credentials", "login_url": LOGIN, "client_id": "3MVG9client",
                                  "client_secret": "s3cret-value", "org_currency": "USD", "page_size": 200,
                                  "retry_backoff_seconds": 0, "retry_backoff_max_seconds": 0,
                                  "opportunity": {"reversals": False}}
        values.update(overrides)
        return SalesforceSettings.model_validate(values)

    return make


@pytest.fixture
def sf_sim() -> Iterator[SalesforceSimulator]:
    sim = SalesforceSimulator()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sf_source(sf_sim: SalesforceSimulator) -> Iterator[Callable[..., SalesforceSource]]:
    """``sf_source(**overrides)``: a source logged in to ``sf_sim`` by client credentials."""
    made: list[SalesforceSource] = []

    def make(**overrides: Any) -> SalesforceSource:
        values: dict[str, Any] = {"auth": "client_credentials", "login_url": sf_sim.url, "client_id": sf_sim.client_id,
                                  "client_secret": sf_sim.client_secret, "org_currency": "USD", "page_size": 200,
                                  "retry_backoff_seconds": 0, "retry_backoff_max_seconds": 0}
        values.update(overrides)
        source = SalesforceSource("sf", SalesforceSettings.model_validate(values))
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


@dataclass
class Drained:
    records: list[SourceRecord]
    cursor: str | None
    fetches: int


@pytest.fixture
def sf_drain() -> Callable[..., Drained]:
    """``sf_drain(source, cursor=None, limit=100, max_fetches=1000)``: fetch until ``more`` is false."""

    def drain(source: SalesforceSource, cursor: str | None = None, limit: int = 100,
              max_fetches: int = 1000) -> Drained:
        records: list[SourceRecord] = []
        for n in range(1, max_fetches + 1):
            result = source.fetch(cursor, limit)
            records.extend(result.records)
            cursor = result.cursor
            if not result.more:
                return Drained(records, cursor, n)
        return Drained(records, cursor, max_fetches)

    return drain


@pytest.fixture(scope="session")
def sf_rsa_key() -> tuple[bytes, bytes]:
    """A throw-away RSA key pair made for the test run: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture
def sf_harness(payhub_harness: HarnessFactory) -> Callable[[str], Harness]:
    """``sf_harness(body)``: a Harness on ``payhub_db_url`` with the settings ``body`` (TOML text; the plugin loads
    by its entry point). Each call closes the harness made before, as a process stopped and started again on the
    same database."""
    made: list[Harness] = []

    def make(body: str) -> Harness:
        if made:
            made[-1].close()
        harness = payhub_harness(body)
        assert harness.plugin_failures() == {}
        made.append(harness)
        return harness

    return make

