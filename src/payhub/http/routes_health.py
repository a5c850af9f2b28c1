"""``GET /healthz``: the process answers. ``GET /readyz``: payhub can do its work, check by check.

Readiness lists each check with ``name``, ``ok`` and ``detail``, and answers 200 when every check is ok, else 503:

- ``database``: a connection and a statement succeed within :data:`~payhub.http.probes.PROBE_TIMEOUT_SECONDS`;
- ``schema``: the database is at the schema revision this payhub needs;
- ``hooks``: no configured hook plugin failed in this process (no payout is sent while one has);
- ``sends``: no ``payhub_payouts_blocked`` hook gives a reason to send nothing now (e.g. a sanctions list too old);
- ``sources``: no configured source failed permanently (as the ``sources`` table records it);
- ``database_outage``: under ``payhub run``, the worker is not waiting for the database.

Neither probe is audited nor needs a token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from payhub.db.faults import describe
from payhub.http.probes import PROBE_TIMEOUT_SECONDS, Probes, probes, reading
from payhub.http.state import Face, face
from payhub.pipeline.blocked import blocked_reasons
from payhub.store.events import failed_sources

router = APIRouter(tags=["health"])

MAX_DETAIL = 300  # characters of a reason quoted in a check's detail


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check and its outcome."""

    name: str
    ok: bool
    detail: str


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    """Alive: answers as long as the process serves HTTP, whatever the database does."""
    return {"status": "alive"}


@router.get("/readyz", summary="Ready to work: each check, 503 when one fails",
            responses={503: {"description": "At least one check failed; each check says why."}})
def readyz(request: Request) -> JSONResponse:
    """The checks of the module docstring, each with ``name``, ``ok`` and ``detail``."""
    checks = readiness(face(request), probes(request))
    ready = all(check.ok for check in checks)
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": [asdict(c) for c in checks]},
                        status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})


def readiness(state: Face, found: Probes) -> list[Check]:
    """Run every readiness check."""
    configured = sorted(name for name, section in state.rt.settings.sources.items() if section.enabled)
    return [*_database(found, configured), _hooks(state), _sends(state), _outage(state)]


def _database(found: Probes, configured: list[str]) -> list[Check]:
    """The database, the schema and the sources, read through one connection."""
    try:
        with reading(found.engine, PROBE_TIMEOUT_SECONDS) as conn:
            conn.exec_driver_sql("SELECT 1")
            return [Check("database", True, "reachable"),
                    _guarded("schema", conn, lambda: _schema(conn, found.head)),
                    _guarded("sources", conn, lambda: _sources(conn, configured))]
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is the answer
        return [Check("database", False, f"unreachable: {_short(describe(exc))}"),
                Check("schema", False, "not checked: the database is unreachable"),
                Check("sources", False, "not checked: the database is unreachable")]


def _guarded(name: str, conn: Connection, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a check that cannot be read fails alone
        conn.rollback()  # PostgreSQL refuses further statements in a failed transaction
        return Check(name, False, f"cannot be checked: {_short(describe(exc))}")


def _schema(conn: Connection, head: str) -> Check:
    try:
        current = tuple(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    except DBAPIError:  # no such table, most likely: alembic tells (and raises for anything else)
        conn.rollback()
        current = MigrationContext.configure(conn).get_current_heads()
    if current == (head,):
        return Check("schema", True, f"at revision {head}")
    where = "empty (no payhub tables)" if not current else f"at revision {', '.join(current)}"
    return Check("schema", False, f"the database is {where} but this payhub needs revision {head}; run `payhub db "
                 "upgrade`")


def _sources(conn: Connection, configured: list[str]) -> Check:
    failed = failed_sources(conn, configured).items()
    if not failed:
        return Check("sources", True, f"{len(configured)} configured, none failed permanently")
    named = "; ".join(f"{name}: {_short(reason)}" for name, reason in failed)
    return Check("sources", False, f"failed permanently (polled again after a restart, once fixed): {named}")


def _hooks(state: Face) -> Check:
    plugins = state.rt.plugins
    failed = plugins.failed_hooks()
    if not failed:
        return Check("hooks", True, "no hook plugin failed")
    named = "; ".join(f"{section}: {_short(plugins.failed('hook', section) or 'failed')}" for section in failed)
    return Check("hooks", False, f"no payout is sent while a hook plugin has failed: {named}")


def _sends(state: Face) -> Check:
    reasons = blocked_reasons(state.rt.plugins.hooks)
    if not reasons:
        return Check("sends", True, "no hook blocks sending")
    return Check("sends", False, f"no payout is sent while blocked: {_short('; '.join(reasons))}")


def _outage(state: Face) -> Check:
    worker = state.worker
    if worker is None:
        return Check("database_outage", True, "no worker in this process (payhub serve)")
    began = worker.outage.began
    if began is None:
        return Check("database_outage", True, "the worker reaches the database")
    return Check("database_outage", False, f"the worker has been waiting for the database for "
                 f"{time.monotonic() - began:.0f}s ({worker.outage.tries} failed tries)")


def _short(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
