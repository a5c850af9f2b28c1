"""The year-end tax report dates each payment by the payout's ``first_sent_at``, which retention never removes: the
report is the same after ``payhub retention apply`` archived the ``payout.sent`` and ``payout.paid`` entries, on
SQLite and PostgreSQL. A payout sent before that column existed (NULL) is dated by its audit entries."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from test_program_rules import BASE, PCT, deal
from test_tax_report import EIN, HEADER, SSN, pay_on, rows

from payhub import signing
from payhub.audit import verify
from payhub.compliance import retention
from payhub.db.schema import audit_log, payouts
from payhub.runtime import Runtime
from payhub.testing import ManualClock

pytestmark = pytest.mark.slow  # the pipeline, then a retention run

SETTINGS = """
[compliance.tax]
enabled = true
us_without_w9 = "withhold"

[compliance.tax.boxes]
p = "1099-NEC-1"

[compliance.retention]
events_days = 30
audit_days = 30
archive_dir = "archive"

[audit]
checkpoint_key_file = "checkpoint.pem"
checkpoint_dir = "checkpoints"
"""


@pytest.fixture
def taxed_site(make_runtime: Any, tmp_path: Path) -> Runtime:
    (tmp_path / "payees.csv").write_text(HEADER + f"a,Ann,US,,W-9,2024-01-02,{SSN}\nb,Bob,US,,W-9,2024-01-02,{EIN}\n"
                                         "c,Cy,US,,,,\n")
    pem, _key = signing.new_private_key()
    (tmp_path / "checkpoint.pem").write_text(pem)
    body = (BASE + f"\n[programs.p]\n{PCT}\n[rails.r]\nplugin = \"fake\"\nsettle_interval_seconds = 0.001\n"
            + textwrap.dedent(SETTINGS))
    rt: Runtime = make_runtime(body)
    return rt


def paid_entries(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action.in_(("payout.sent", "payout.paid")))).scalar_one())


def test_the_report_is_the_same_after_retention_archives_the_payment_entries(taxed_site: Runtime) -> None:
    rt = taxed_site
    with ManualClock("2026-01-01T00:00:00Z") as clock:
        pay_on(rt, clock, "2026-02-02", deal("x", "2500.00", payee="a"), deal("y", "1999.99", payee="b"),
               deal("z", "100.00", payee="c"))
        before = rows(rt, 2026)
        assert set(before) == {"a", "c"} and before["a"]["nec_box1"] == "2500.00"
        assert before["c"]["nec_box4"] == "24.00"
        clock.advance(timedelta(days=90))
        outcome = retention.apply(rt)
        assert outcome.plan is not None
        assert paid_entries(rt) == 0  # the audit log no longer says when these payouts were sent
        assert rows(rt, 2026) == before
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def test_a_payout_sent_before_first_sent_at_existed_is_dated_by_its_audit_entries(taxed_site: Runtime) -> None:
    rt = taxed_site
    with ManualClock("2025-01-01T00:00:00Z") as clock:
        pay_on(rt, clock, "2025-12-31", deal("x", "2500.00", payee="a", when="2025-12-01T00:00:00Z"))
        with rt.engine.begin() as conn:
            conn.execute(update(payouts).values(first_sent_at=None))
        assert rows(rt, 2025)["a"]["nec_box1"] == "2500.00"  # sent 31 December, paid 1 January: a 2025 payment
        assert rows(rt, 2026) == {}
