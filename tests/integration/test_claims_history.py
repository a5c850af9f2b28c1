"""A rail's claims cost what it has to do now, not what it did before: the disburse claim (``claim_due``) and the
settle claim (``claim_to_settle``) read the same number of rows whether the rail has paid a hundred payouts or
twenty thousand, and claim the same payouts in the same order.

The work of a claim is measured by the database itself: on SQLite, the virtual machine instructions the claim's
statements execute (a progress handler); on PostgreSQL, the rows each statement's plan reads (``EXPLAIN ANALYZE``
of the statements the claim ran, with their parameters, in a transaction rolled back).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, update

from payhub.clock import utcnow
from payhub.db.schema import payouts
from payhub.payees import sync_payees
from payhub.runtime import Runtime
from payhub.store.payouts import claim_due, claim_rows, claim_to_settle, due

BASE = """
    [payees]
    file = "payees.csv"
    [routing]
    default_rail = "r"
    [rails.r]
    plugin = "fake"
    [rails.other]
    plugin = "fake"
"""
SMALL, LARGE = 100, 20_000


@pytest.fixture
def runtime(make_runtime: Any, tmp_path: Path) -> Runtime:
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\n")
    rt: Runtime = make_runtime(BASE)
    sync_payees(rt)
    return rt


def _add(rt: Runtime, status: str, count: int, *, rail: str = "r", updated: datetime | None = None) -> list[int]:
    """Insert ``count`` payouts of ``status`` on ``rail``; return their ids in order."""
    now = utcnow()
    with rt.engine.begin() as conn:
        first = conn.execute(payouts.select().with_only_columns(payouts.c.id).order_by(payouts.c.id.desc())
                             .limit(1)).scalar() or 0
        conn.execute(insert(payouts), [
            {"idempotency_key": f"k-{status}-{rail}-{first + n}", "payee_id": "p1", "rail": rail,
             "route_reason": "test", "currency": "EUR", "amount_minor": 100, "item_count": 1, "status": status,
             "attempts": 0, "created_at": now, "updated_at": updated or now} for n in range(count)])
        return [row.id for row in conn.execute(payouts.select().where(payouts.c.id > first).order_by(payouts.c.id))]


class Work:
    """The work the statements run on ``rt``'s database cost while the block runs (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt, self.steps, self.statements, self.counted = rt, 0, list[tuple[str, Any]](), list[Any]()

    def __enter__(self) -> Work:
        self.pg = self.rt.engine.dialect.name == "postgresql"
        event.listen(self.rt.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.rt.engine, "before_cursor_execute", self._seen)
        for driver in self.counted:
            driver.set_progress_handler(None, 0)

    def _seen(self, conn: Any, cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if self.pg:
            if statement.lstrip().upper().startswith("SELECT") and "FROM payouts" in statement:
                self.statements.append((statement, parameters))
            return
        driver = conn.connection.driver_connection
        if driver not in self.counted:  # every statement from here on, fetching its rows included

            def count() -> int:
                self.steps += 1
                return 0

            driver.set_progress_handler(count, 100)
            self.counted.append(driver)

    def rows_read(self) -> int:
        """PostgreSQL: the rows the plans of the statements seen read (returned by scans plus removed by filters)."""
        total = 0
        with self.rt.engine.connect() as conn:
            driver = conn.connection.driver_connection
            for statement, parameters in self.statements:
                with driver.cursor() as cursor:
                    cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
                    plan = cursor.fetchone()[0]
                    total += sum(_scanned(node) for node in _nodes(plan[0]["Plan"]))
            conn.rollback()
        return total

    def cost(self) -> int:
        return self.rows_read() if self.pg else self.steps


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _scanned(node: dict[str, Any]) -> int:
    if "Scan" not in node["Node Type"]:
        return 0
    loops = node.get("Actual Loops", 1)
    return int((node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops)


def _claim_cost(rt: Runtime, claim: Any) -> tuple[int, list[int]]:
    with Work(rt) as work:
        claimed = claim()
    if isinstance(claimed, tuple):  # claim_to_settle: (claimed, ids of the paid)
        claimed = claimed[0]
    cost = work.cost()
    with rt.engine.begin() as conn:  # give the claim back, so the next one finds the same payouts
        conn.execute(update(payouts).values(lease_owner=None, lease_token=None, lease_until=None))
    return cost, [w.id for w in claimed]


def test_the_disburse_claim_does_not_read_the_rails_history(runtime: Runtime) -> None:
    rt = runtime
    _add(rt, "paid", SMALL)
    waiting = _add(rt, "scheduled", 30) + _add(rt, "retrying", 10) + _add(rt, "unknown", 5)
    _add(rt, "scheduled", 20, rail="other")
    small, first = _claim_cost(rt, lambda: claim_due(rt, "r", 25))
    assert first == sorted(waiting)[:25]

    _add(rt, "paid", LARGE - SMALL)
    _add(rt, "sent", 500)
    _add(rt, "scheduled", 3, rail="other")
    later = _add(rt, "sending", 2)  # newer than the rest: claimed after them, in id order
    large, second = _claim_cost(rt, lambda: claim_due(rt, "r", 100))
    assert second == sorted(waiting + later)
    assert large < 3 * small + 50, (small, large)  # the old plan read every payout of the rail: about 200x


def test_the_settle_claim_reads_only_the_sent_and_the_return_window(runtime: Runtime) -> None:
    rt = runtime
    now = utcnow()
    long_ago = now - timedelta(days=400)
    _add(rt, "paid", SMALL, updated=long_ago)
    sent = _add(rt, "sent", 4)
    recent = _add(rt, "paid", 6, updated=now - timedelta(days=3))
    _add(rt, "sent", 5, rail="other")
    claim = lambda: claim_to_settle(rt, "r", now + timedelta(seconds=1), now - timedelta(days=30), 50)  # noqa: E731
    with Work(rt) as work:
        claimed, paid = claim()
    small = work.cost()
    assert [w.id for w in claimed] == sent + recent
    assert paid == set(recent)
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).values(lease_owner=None, lease_token=None, lease_until=None))

    _add(rt, "paid", LARGE - SMALL, updated=long_ago)
    large, ids = _claim_cost(rt, claim)
    assert ids == sent + recent
    assert large < 3 * small + 50, (small, large)

    # The sent come first; the paid ones fill what the limit leaves, oldest change first.
    _, limited = _claim_cost(rt, lambda: claim_to_settle(rt, "r", now + timedelta(seconds=1),
                                                         now - timedelta(days=30), 6))
    assert limited == sent + recent[:2]
    # Without a return window no paid payout is claimed; checked ones wait for their interval.
    _, unwatched = _claim_cost(rt, lambda: claim_to_settle(rt, "r", now + timedelta(seconds=1), None, 50))
    assert unwatched == sent
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id.in_(sent[:3])).values(checked_at=now + timedelta(seconds=5)))
    _, unchecked = _claim_cost(rt, lambda: claim_to_settle(rt, "r", now + timedelta(seconds=1), None, 50))
    assert unchecked == sent[3:]


def test_a_leased_payout_is_not_claimed_twice(runtime: Runtime) -> None:
    rt = runtime
    ids = _add(rt, "scheduled", 5)
    first = claim_due(rt, "r", 3)
    second = claim_due(rt, "r", 3)
    assert [w.id for w in first] == ids[:3]
    assert [w.id for w in second] == ids[3:]
    assert len({w.lease for w in first}) == len({w.lease for w in second}) == 1  # one lease per claim
    assert first[0].lease != second[0].lease


@pytest.mark.postgres
def test_a_replica_claims_while_another_holds_its_claim_open(make_runtime: Any, tmp_path: Path) -> None:
    """PostgreSQL: a claim locks exactly the payouts it returns, so another replica claiming at the same moment
    takes the next ones instead of skipping more than were claimed."""
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\n")
    a: Runtime = make_runtime(BASE)
    if a.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: no two claims are open at once")
    sync_payees(a)
    b: Runtime = make_runtime(BASE, migrate_db=False)
    ids = [*_add(a, "scheduled", 10), *_add(a, "retrying", 10), *_add(a, "unknown", 10), *_add(a, "sending", 10)]
    with a.engine.begin() as conn:
        held = claim_rows(conn, a, due(conn, "r", 10))
        taken = claim_due(b, "r", 10)  # while the first claim's transaction is still open
    assert [w.id for w in held] == sorted(ids)[:10]
    assert [w.id for w in taken] == sorted(ids)[10:20]
