"""API tokens (payhub.tokens) and ``payhub tokens create|list|revoke``, on SQLite and PostgreSQL: a token is shown
once, stored as its SHA-256 only, never audited; names are identities for good; expiry and revocation refuse it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cli_helpers import CliSite, migrated, write_config

from payhub import tokens
from payhub.audit import verify
from payhub.clock import utcnow
from payhub.db.schema import api_tokens, audit_log
from payhub.errors import InvalidRecord, PayhubError
from payhub.runtime import Runtime
from payhub.settings import load_settings


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> CliSite:
    write_config(tmp_path, db_url, "")
    migrated(db_url)
    return CliSite(tmp_path)


@pytest.fixture
def rt(site: CliSite) -> Iterator[Runtime]:
    runtime = Runtime.for_cli(load_settings(site.config), "user:ops")
    yield runtime
    runtime.close()


def stored(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(api_tokens).order_by(api_tokens.c.id)).mappings()]


def audit_rows(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).mappings()]


def assert_nowhere(rt: Runtime, *secrets: str) -> None:
    """None of ``secrets`` is in any column of any audit entry."""
    rows = audit_rows(rt)
    assert rows
    for row in rows:
        text = json.dumps(row, default=str)
        for secret in secrets:
            assert secret not in text


def test_a_token_is_returned_once_and_stored_as_its_hash_only(rt: Runtime) -> None:
    token = tokens.create(rt, "ci", "auditor")
    assert tokens._TOKEN.fullmatch(token)
    (row,) = stored(rt)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(row, default=str)
    assert (row["name"], row["role"], row["created_by"], row["expires_at"]) == ("ci", "auditor", "user:ops", None)
    (entry,) = [r for r in audit_rows(rt) if r["action"] == "token.created"]
    assert (entry["actor"], entry["subject_type"], entry["subject_id"]) == ("user:ops", "token", "ci")
    assert json.loads(entry["detail"]) == {"id": row["id"], "role": "auditor", "expires_at": None}
    assert_nowhere(rt, token, row["token_hash"])
    assert tokens.create(rt, "ci2", "auditor") != token


def test_each_token_is_its_own_stable_identity(rt: Runtime) -> None:
    first, second = tokens.create(rt, "ann", "operator"), tokens.create(rt, "bob", "operator")
    with rt.engine.connect() as conn:
        a1, a2, b = (tokens.authenticate(conn, t) for t in (first, first, second))
    assert isinstance(a1, tokens.Principal) and isinstance(a2, tokens.Principal) and isinstance(b, tokens.Principal)
    assert a1 == a2 and a1.actor == a2.actor == "token:ann"
    assert b.actor == "token:bob" != a1.actor
    tokens.revoke(rt, "ann")
    with pytest.raises(tokens.TokenExists, match="keeps its name"):
        tokens.create(rt, "ann", "operator")  # the identity token:ann never passes to another token


@pytest.mark.parametrize(("role", "may"), [("auditor", ["auditor"]), ("operator", ["auditor", "operator"]),
                                           ("admin", ["auditor", "operator", "admin"])])
def test_roles_are_ordered(role: tokens.Role, may: list[str]) -> None:
    principal = tokens.Principal(1, "x", role)
    assert [r for r in tokens.ROLES if principal.may(r)] == may


def test_authenticate_refuses_malformed_unknown_revoked_and_expired(rt: Runtime) -> None:
    good = tokens.create(rt, "good", "admin")
    old = tokens.create(rt, "old", "admin", utcnow() + timedelta(hours=1))
    gone = tokens.create(rt, "gone", "admin")
    tokens.revoke(rt, "gone")
    with rt.engine.begin() as conn:
        conn.execute(sa.update(api_tokens).where(api_tokens.c.name == "old")
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    with rt.engine.connect() as conn:
        results = {t: tokens.authenticate(conn, t) for t in
                   (good, old, gone, good[:-1], good + "x", "", "phk_" + "A" * 43, good.upper(), f" {good}")}
    assert results[good] == tokens.Principal(1, "good", "admin")
    assert results[old] == tokens.Refused("expired", "old")
    assert results[gone] == tokens.Refused("revoked", "gone")
    assert results["phk_" + "A" * 43] == tokens.Refused("unknown")
    for bad in (good[:-1], good + "x", "", f" {good}"):
        assert results[bad] == tokens.Refused("malformed")
    assert results[good.upper()] in (tokens.Refused("unknown"), tokens.Refused("malformed"))


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a/b", "x" * 101, "é", "a\u202eb", "phk_abc", "PHK_x",
                                  "a\n"])
def test_bad_names_are_refused(rt: Runtime, name: str) -> None:
    with pytest.raises(InvalidRecord, match="token name"):
        tokens.create(rt, name, "auditor")
    assert stored(rt) == []


def test_bad_roles_and_expiries_are_refused(rt: Runtime) -> None:
    with pytest.raises(InvalidRecord, match="role"):
        tokens.create(rt, "x", "root")  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord, match="not in the future"):
        tokens.create(rt, "x", "auditor", utcnow())
    with pytest.raises(InvalidRecord, match="no timezone"):
        tokens.create(rt, "x", "auditor", datetime(2999, 1, 1))  # noqa: DTZ001 - naive on purpose
    assert stored(rt) == []
    tokens.create(rt, "x", "auditor", datetime(2999, 1, 1, 14, tzinfo=timezone(timedelta(hours=2))))
    assert stored(rt)[0]["expires_at"] == datetime(2999, 1, 1, 12, tzinfo=UTC)


def test_parse_expiry() -> None:
    now = datetime(2026, 12, 7, 10, tzinfo=UTC)
    assert tokens.parse_expiry("2026-12-07", now) == datetime(2026, 12, 8, tzinfo=UTC)  # through the 7th, UTC
    assert tokens.parse_expiry("2026-12-07T12:00:01+02:00", now) == datetime(2026, 12, 7, 10, 0, 1, tzinfo=UTC)
    assert tokens.parse_expiry("2026-12-07T11:00:00Z", now) == datetime(2026, 12, 7, 11, tzinfo=UTC)
    for text, problem in [("2026-12-06", "not in the future"), ("2026-12-07T10:00:00Z", "not in the future"),
                          ("2026-12-07T12:00:00+02:00", "not in the future"), ("2027-01-01T00:00", "no timezone"),
                          ("tomorrow", "not ISO 8601"), ("2026-13-01", "not an ISO 8601 date"),
                          ("9999-12-31", "not an ISO 8601 date"), ("", "missing")]:
        with pytest.raises(InvalidRecord, match=problem):
            tokens.parse_expiry(text, now)


def test_revoke(rt: Runtime) -> None:
    tokens.create(rt, "ci", "operator")
    info = tokens.revoke(rt, "ci")
    assert info.state(utcnow()) == "revoked" and info.revoked_at is not None
    assert stored(rt)[0]["revoked_at"] == info.revoked_at
    with pytest.raises(PayhubError, match="already revoked"):
        tokens.revoke(rt, "ci")
    with pytest.raises(tokens.TokenNotFound, match="no token named 'nope'"):
        tokens.revoke(rt, "nope")
    revoked = [r for r in audit_rows(rt) if r["action"] == "token.revoked"]
    assert [(r["actor"], r["subject_id"], json.loads(r["detail"])) for r in revoked] == [
        ("user:ops", "ci", {"id": 1, "role": "operator"})]


def test_touch_writes_last_used_at_at_most_once_a_minute(rt: Runtime) -> None:
    token = tokens.create(rt, "ci", "auditor")
    now = utcnow()
    with rt.engine.begin() as conn:
        principal = tokens.authenticate(conn, token)
        assert isinstance(principal, tokens.Principal) and principal.last_used_at is None
        tokens.touch(conn, principal, now)
    assert stored(rt)[0]["last_used_at"] == now
    with rt.engine.begin() as conn:
        fresh = tokens.authenticate(conn, token)
        assert isinstance(fresh, tokens.Principal) and fresh.last_used_at == now
        tokens.touch(conn, fresh, now + timedelta(seconds=59))  # within the minute: no write
        tokens.touch(conn, principal, now + timedelta(seconds=30))  # a stale view: the row's own time decides
    assert stored(rt)[0]["last_used_at"] == now
    with rt.engine.begin() as conn:
        tokens.touch(conn, fresh, now + timedelta(seconds=61))
    assert stored(rt)[0]["last_used_at"] == now + timedelta(seconds=61)


def test_redact_masks_anything_shaped_like_a_token() -> None:
    token = "phk_" + "a-b_C" * 8 + "xyz"
    assert tokens.redact(f"/api/v1/tokens/{token}?x={token}") == "/api/v1/tokens/phk_**********?x=phk_**********"
    assert tokens.redact("phk_ab%2Dcd and more") == "phk_********** and more"
    assert tokens.redact("no secret") == "no secret"


# --- the command line -------------------------------------------------------------------------------------------


def test_cli_create_prints_the_token_alone_as_its_last_line(site: CliSite, rt: Runtime) -> None:
    result = site.ok("tokens", "create", "--name", "ci", "--role", "auditor", "--expires", "2999-01-31",
                     actor="alice@finance")
    token = result.stdout.splitlines()[-1]
    assert result.stdout == token + "\n"
    assert "created, role auditor, until 2999-02-01T00:00:00.000000Z" in result.stderr
    assert "printed once" in result.stderr and token not in result.stderr
    (row,) = stored(rt)
    assert row["token_hash"] == tokens.digest(token) and row["created_by"] == "alice@finance"
    assert row["expires_at"] == datetime(2999, 2, 1, tzinfo=UTC)
    with rt.engine.connect() as conn:
        assert tokens.authenticate(conn, token) == tokens.Principal(row["id"], "ci", "auditor")
    assert_nowhere(rt, token, row["token_hash"])


def test_cli_list_shows_states_never_secrets(site: CliSite, rt: Runtime) -> None:
    made = {name: site.ok("tokens", "create", "--name", name, "--role", role).stdout.strip()
            for name, role in (("a", "auditor"), ("o", "operator"), ("x", "admin"))}
    site.ok("tokens", "revoke", "o")
    with rt.engine.begin() as conn:
        conn.execute(sa.update(api_tokens).where(api_tokens.c.name == "x")
                     .values(expires_at=utcnow() - timedelta(days=1), last_used_at=utcnow() - timedelta(days=2)))
    listed = site.json("tokens", "list")
    assert [(t["name"], t["role"], t["state"]) for t in listed] == [
        ("a", "auditor", "active"), ("o", "operator", "revoked"), ("x", "admin", "expired")]
    assert list(listed[0]) == ["name", "role", "state", "created_at", "created_by", "expires_at", "revoked_at",
                               "last_used_at"]
    assert listed[1]["revoked_at"] and listed[2]["last_used_at"] and listed[2]["expires_at"]
    table = site.ok("tokens", "list").stdout
    text = site.ok("tokens", "list", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["state"] for r in rows] == ["active", "revoked", "expired"]
    hashes = [r["token_hash"] for r in stored(rt)]
    for output in (json.dumps(listed), table, text):
        for secret in [*made.values(), *hashes]:
            assert secret not in output
    assert "active" in table and "revoked" in table
    entries = [(r["action"], r["subject_id"]) for r in audit_rows(rt)]
    assert entries == [("token.created", "a"), ("token.created", "o"), ("token.created", "x"),
                       ("token.revoked", "o"), ("token.listed", "*"), ("token.listed", "*"), ("token.listed", "*")]
    assert_nowhere(rt, *made.values(), *hashes)
    with rt.engine.connect() as conn:
        assert verify(conn).ok


@pytest.mark.parametrize(("args", "problem"), [
    (["--name", "a b", "--role", "auditor"], "Invalid value for '--name'"),
    (["--name", "phk_x", "--role", "auditor"], "must not look like a token"),
    (["--name", "ci", "--role", "root"], "Invalid value for '--role'"),
    (["--name", "ci", "--role", "auditor", "--expires", "2020-01-01"], "not in the future"),
    (["--name", "ci", "--role", "auditor", "--expires", "2999-01-01T10:00"], "no timezone offset"),
    (["--name", "ci", "--role", "auditor", "--expires", "soon"], "Invalid value for '--expires'"),
    (["--role", "auditor"], "Missing option '--name'"),
])
def test_cli_create_refuses_bad_input(site: CliSite, rt: Runtime, args: list[str], problem: str) -> None:
    result = site.cli("tokens", "create", *args)
    assert result.exit_code == 2, result.output
    assert problem in result.stderr
    assert result.stdout == "" and stored(rt) == []


def test_cli_revoke_and_name_reuse(site: CliSite, rt: Runtime) -> None:
    site.ok("tokens", "create", "--name", "ci", "--role", "admin")
    assert site.ok("tokens", "revoke", "ci").stdout.strip() == "token ci revoked"
    again = site.cli("tokens", "revoke", "ci")
    assert again.exit_code == 1 and "already revoked" in again.stderr
    missing = site.cli("tokens", "revoke", "nope")
    assert missing.exit_code == 1 and "no token named 'nope'" in missing.stderr
    reuse = site.cli("tokens", "create", "--name", "ci", "--role", "admin")
    assert reuse.exit_code == 1 and "exists already" in reuse.stderr and reuse.stdout == ""
    assert len(stored(rt)) == 1
