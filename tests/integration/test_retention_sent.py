"""Retention on rails that never report ``paid`` (``csv_export``, credit notes): a payout that stays ``sent`` past
the periods counts as done, so its events lose their payloads and the audit log is cut past it; ``audit verify``
passes and the tax report is unchanged. A ``sent`` payout returned after its entries were archived is not sent
again: its rewards' next payout is held by the pre-send check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from click.testing import Result
from sqlalchemy import select

from payhub import signing
from payhub.api import Outcome, SourceRecord
from payhub.compliance import retention
from payhub.db.schema import audit_cut, events, payouts, rewards
from payhub.payees import sync_payees
from payhub.pipeline.calculate import calculate_batch, register_program_versions
from payhub.pipeline.disburse import disburse_rail
from payhub.pipeline.ingest import poll
from payhub.pipeline.schedule import schedule_batch
from payhub.pipeline.settle import settle_rail
from payhub.runtime import Runtime
from payhub.testing import ManualClock

pytestmark = pytest.mark.slow  # the pipeline, then the CLI several times

SETTINGS = """
    [payees]
    file = "payees.csv"
    [sources.s]
    plugin = "fake"
    [programs.full]
    calculator = "percentage"
    percent = "100"
    [routing]
    default_rail = "{rail}"
    [rails.export]
    plugin = "csv_export"
    directory = "out"
    [rails.r]
    plugin = "fake"
    settle_interval_seconds = 1
    [compliance.retention]
    events_days = 30
    audit_days = 30
    archive_dir = "archive"
    [compliance.tax.boxes]
    full = "1099-NEC-1"
    [audit]
    checkpoint_key_file = "checkpoint.pem"
    checkpoint_dir = "checkpoints"
"""
PAYEES = "id,name,country,currency,tax_form,form_date,tin\np1,Partner One,US,USD,W-9,2026-01-02,12-3456789\n"


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    with ManualClock("2026-01-05T09:00:00Z") as manual:
        yield manual


def cli(root: Path, *args: str) -> Result:
    result = invoke("-c", str(root / "payhub.toml"), *args)
    assert result.exit_code == 0, result.output
    return result


def rows(rt: Runtime, table: Any) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(table).order_by(*table.primary_key.columns)).all()


def start(make_runtime: Callable[[str], Runtime], root: Path, rail: str) -> Runtime:
    (root / "payees.csv").write_text(PAYEES)
    (root / "checkpoint.pem").write_text(signing.new_private_key()[0])
    rt = make_runtime(SETTINGS.replace("{rail}", rail))
    rt.plugins.sources["s"].push(SourceRecord(  # type: ignore[attr-defined]
        "Opportunity", "o1", "won", "deal_won", "2026-01-04T00:00:00Z", "p1", "2500", "USD",
        attributes={"contact_email": "contact@example.com"}))
    poll(rt, "s")
    versions = register_program_versions(rt)
    while calculate_batch(rt, versions):
        pass
    sync_payees(rt)
    while schedule_batch(rt):
        pass
    while disburse_rail(rt, rail):
        pass
    assert [p.status for p in rows(rt, payouts)] == ["sent"]
    return rt


def test_a_payout_that_stays_sent_is_archived_past_the_periods(make_runtime: Callable[[str], Runtime],
                                                                tmp_path: Path, clock: ManualClock) -> None:
    rt = start(make_runtime, tmp_path, "export")
    report = cli(tmp_path, "tax", "report", "--year", "2026", "--format", "json").stdout
    assert "p1" in report
    clock.advance(timedelta(days=40))
    plan = retention.plan(rt)
    assert plan.events == 1 and plan.audit_floor is None  # nothing live: the sent payout is done for retention

    cli(tmp_path, "retention", "apply", "--yes")
    (event,) = rows(rt, events)
    assert (event.raw, event.attributes, event.amount) == (None, "{}", "2500")
    (cut,) = rows(rt, audit_cut)
    assert cut.seq >= 1 and (tmp_path / "archive" / cut.archive).exists()
    with rt.engine.connect() as conn:
        assert retention.needed_floor(conn) is None
    verified = invoke("-c", str(tmp_path / "payhub.toml"), "audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert cli(tmp_path, "tax", "report", "--year", "2026", "--format", "json").stdout == report
    assert [(p.status, p.amount_minor) for p in rows(rt, payouts)] == [("sent", 250000)]


def test_a_sent_payout_returned_after_the_cut_is_not_sent_again(make_runtime: Callable[[str], Runtime],
                                                                  tmp_path: Path, clock: ManualClock) -> None:
    rt = start(make_runtime, tmp_path, "r")
    clock.advance(timedelta(days=40))
    cli(tmp_path, "retention", "apply", "--yes")
    first = rows(rt, payouts)[0]
    rt.plugins.rails["r"].ledger.set_outcome(first.idempotency_key, Outcome.RETURNED)  # type: ignore[attr-defined]
    clock.advance(2)
    settle_rail(rt, "r")
    assert rows(rt, payouts)[0].status == "returned"
    (reward,) = rows(rt, rewards)
    assert (reward.status, reward.hold_code) == ("held", "payout_failed")
    cli(tmp_path, "rewards", "release", str(reward.id), "--reason", "bank details fixed")
    while schedule_batch(rt):
        pass
    for _ in range(5):
        disburse_rail(rt, "r")
    returned, again = rows(rt, payouts)
    # The reward's entries are archived: the pre-send check cannot vouch for it, so the new payout is held.
    assert (returned.status, again.status, again.amount_minor) == ("returned", "held", 250000)
    assert "reward.calculated" in again.reason
    assert rt.plugins.rails["r"].ledger.received[again.idempotency_key] == 0  # type: ignore[attr-defined]
    verified = invoke("-c", str(tmp_path / "payhub.toml"), "audit", "verify")
    assert verified.exit_code == 0, verified.output
