"""What the API refuses before it answers: a misspelt or repeated query parameter, a JSON object that repeats a
key, parameters of a request without a valid token (401 before 422), and a database that is away (503, not 500)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import APIRouter
from sqlalchemy import exc as sa_exc
from test_http_auth import HTTP, Api, runtime  # noqa: F401  (runtime is a fixture)

from payhub.db import migrate
from payhub.db.engine import sqlite_file
from payhub.http.limits import client_address
from payhub.runtime import Runtime
from payhub.tokens import redact


def locked_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/test")

    @router.get("/locked")
    def locked() -> None:
        busy = sqlite3.OperationalError("database is locked")
        busy.sqlite_errorcode = 5  # SQLITE_BUSY, as the driver sets it
        raise sa_exc.OperationalError("BEGIN IMMEDIATE", {}, busy)

    return router


@pytest.fixture
def api(runtime: Callable[[str], Runtime]) -> Api:  # noqa: F811
    return Api(runtime(HTTP), locked_router())


def test_an_unknown_query_parameter_is_refused_not_ignored(api: Api) -> None:
    token = api.token("reader", "auditor")
    for path in ("/api/v1/rewards/export?stauts=held&format=csv", "/api/v1/rewards?stauts=held",
                 "/api/v1/audit?acter=bob"):
        answer = api.call("GET", path, token=token)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["problems"][0]["problem"] == "unknown query parameter"
    assert api.call("GET", "/api/v1/rewards?status=held", token=token).status_code == 200


def test_a_single_valued_parameter_given_twice_is_refused(api: Api) -> None:
    token = api.token("reader", "auditor")
    answer = api.call("GET", "/api/v1/rewards?payee=p1&payee=p2", token=token)
    assert answer.status_code == 422 and answer.json()["problems"][0]["problem"] == "given more than once"
    assert api.last()["outcome"] == "refused"


def test_a_json_object_that_repeats_a_key_is_refused(api: Api) -> None:
    admin = api.token("root", "admin")
    body = b'{"name": "ci-job", "role": "auditor", "role": "admin"}'
    answer = api.call("POST", "/api/v1/tokens", token=admin, content=body,
                      headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "'role' is given more than once" in answer.text
    assert "ci-job" not in api.call("GET", "/api/v1/tokens", token=admin).text
    operator = api.call("POST", "/api/v1/rewards/approve", token=api.token("op", "operator"),
                        content=b'{"ids": [3], "ids": [4]}', headers={"content-type": "application/json"})
    assert operator.status_code == 422


def test_without_a_valid_token_an_invalid_request_is_401_not_422(api: Api) -> None:
    for n, token in enumerate((None, "phk_" + "x" * 43)):
        answer = api.call("POST", "/api/v1/rewards/approve", token=token, content=b'{"ids": "nonsense"}',
                          headers={"content-type": "application/json"}, client=f"192.0.2.{n}")
        assert answer.status_code == 401, answer.text
        assert api.call("GET", "/api/v1/rewards?limit=-5", token=token, client=f"192.0.2.{n}").status_code == 401
    assert api.call("GET", "/api/v1/rewards?limit=-5", token=api.token("reader", "auditor")).status_code == 422


def test_a_database_that_is_away_is_503_with_retry_after(api: Api) -> None:
    answer = api.call("GET", "/api/v1/test/locked", raise_errors=False)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json() == {"error": "the database is unavailable; try again"}


@pytest.mark.parametrize(("client", "recorded"), [
    (("203.0.113.9", 1), "203.0.113.9"), (("2001:DB8::1", 1), "2001:db8::1"), (None, "unknown"),
    (('=HYPERLINK("http://e")', 0), "invalid"), (("phk_" + "a" * 43, 0), "invalid"), (("9" * 5000, 0), "invalid")])
def test_the_recorded_origin_is_an_address_or_says_it_is_not(client: tuple[str, int] | None, recorded: str) -> None:
    assert client_address({"client": client}) == recorded


@pytest.mark.parametrize("text", ["phk_" + "a" * 16 + "\x00" + "b" * 27, "phk_" + "a" * 16 + "\u200b" + "b" * 27,
                                  "PHK_" + "a" * 43, "x=phk_" + "a" * 20 + "%2F" + "b" * 23])
def test_no_part_of_a_token_shaped_text_is_recorded(text: str) -> None:
    assert "b" * 5 not in redact(text) and "a" * 5 not in redact(text)


def test_a_token_request_with_a_field_it_does_not_have_is_refused(api: Api) -> None:
    admin = api.token("root", "admin")
    answer = api.call("POST", "/api/v1/tokens", token=admin,
                      json={"name": "ci-job", "role": "admin", "expires": "2027-01-01"})
    assert answer.status_code == 422 and answer.json()["problems"][0]["where"] == "body.expires"
    assert "ci-job" not in api.call("GET", "/api/v1/tokens", token=admin).text


def test_a_deleted_sqlite_file_is_neither_written_nor_made_again(api: Api) -> None:
    database = sqlite_file(api.rt.settings.database_url)
    if database is None:
        pytest.skip("a SQLite file database only")
    token = api.token("reader", "auditor")
    assert api.call("GET", "/api/v1/events", token=token).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(database + suffix).unlink(missing_ok=True)
    answer = api.call("GET", "/api/v1/events", token=token)
    assert answer.status_code == 503 and "database file is missing" in answer.text
    assert api.call("POST", "/webhooks/anything", content=b"{}").status_code == 503
    assert not Path(database).exists()
    ready = api.call("GET", "/readyz")
    assert ready.status_code == 503 and not Path(database).exists()


@pytest.mark.parametrize("revision", ["0005", "0099"])
def test_a_schema_at_another_revision_stops_reads_and_webhooks_but_not_the_probes(api: Api, revision: str) -> None:
    token = api.token("reader", "auditor")
    with api.rt.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{revision}'")
    answer = api.call("GET", "/api/v1/events", token=token)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == (f"the database schema is at revision {revision}, but this payhub needs "
                                      f"revision {migrate.head_revision()}")
    assert api.call("POST", "/webhooks/anything", content=b"{}").status_code == 503
    assert api.call("GET", "/readyz").status_code == 503 and api.call("GET", "/healthz").status_code == 200
