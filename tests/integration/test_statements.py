"""Partner statements through the real pipeline, on SQLite and PostgreSQL: the lines of a payout with caps, a
clawback, backup withholding and FX add up to its amount; a payout that does not add up gets no statement; the
outbox delivery (files, modes, rows, audit), erased payees, the daemon's stage and the CLI (docs/console.md,
Partner statements)."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliSite, sql
from pypdf import PdfReader
from sqlalchemy import func, select, update
from test_program_rules import BASE, CLAWBACK, Rates, deal, refund, verified
from test_tax_report import pay_on

from payhub.compliance import erasure
from payhub.db.schema import audit_log, payout_items, payouts, statement_deliveries
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.statements import content, delivery, render, stage
from payhub.testing import ManualClock
from payhub.worker import Worker

HOSTILE_NAME = '<script>alert("x")</script> Acme & \u202eSons "Ltd"'
HOSTILE_OBJECT = '"><img src=x onerror=alert(1)>'
PROGRAMS = ('\n[programs.p]\n' + CLAWBACK + 'event_types = ["deal_won"]\npayout_currency = "payee"\n'
            '[[programs.p.caps]]\nper = "payee"\namount = "1500"\ncurrency = "USD"\n'
            '\n[rails.r]\nplugin = "fake"\nsettle_interval_seconds = 0.001\n'
            '[compliance.tax]\nenabled = true\nus_without_w9 = "withhold"\n')
AFTER = "2026-04-01T00:00:00Z"
"""A time after every payment of :func:`paid_world`, for the clocks of the tests."""


def payees_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["id", "name", "country", "currency", "email", "tax_form", "form_date"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


PAYEES = [
    {"id": "us", "name": HOSTILE_NAME, "country": "US", "currency": "EUR", "email": "ap@acme.example"},
    {"id": "de", "name": "Deutsche Partner GmbH", "country": "DE", "currency": "EUR", "email": "billing@de.example",
     "tax_form": "W-8BEN-E", "form_date": "2026-01-05"},
    {"id": "nomail", "name": "No Mail Ltd", "country": "FR", "currency": "EUR", "email": "", "tax_form": "W-8BEN-E",
     "form_date": "2026-01-05"},
]


def paid_world(make_runtime: Any, tmp_path: Path, notify: str = "", payees: list[dict[str, str]] | None = None
               ) -> Runtime:
    """Payouts 1 (us: a reward and its withholding), 2 (us: a clawback of 1, a reward, a capped reward, their
    withholding), 3 (de, with a hostile CRM id) and 4 (nomail), all paid, in EUR converted from USD at 0.9123."""
    (tmp_path / "payees.csv").write_text(payees_csv(payees or PAYEES))
    rt: Runtime = make_runtime(BASE + PROGRAMS + notify)
    rt.plugins.hooks.register(Rates({("USD", "EUR", "reference"): Decimal("0.9123")}), name="rates")
    statements = rt.settings.notify.statements
    rt.settings.notify.statements = "off"  # the test delivers when it wants to
    with ManualClock("2026-02-01T00:00:00Z") as clock:
        pay_on(rt, clock, "2026-02-02", deal("a", "1000.00", payee="us", when="2026-02-01T00:00:00Z"))
        pay_on(rt, clock, "2026-03-02", refund("a", "2026-03-01T00:00:00Z", payee="us"),
               deal("b", "900.00", payee="us", when="2026-03-01T00:00:00Z"),
               deal("c", "900.00", payee="us", when="2026-03-01T00:00:00Z"))
        pay_on(rt, clock, "2026-03-10", deal(HOSTILE_OBJECT, "100.00", payee="de", when="2026-03-09T00:00:00Z"))
        pay_on(rt, clock, "2026-03-11", deal("e", "50.00", payee="nomail", when="2026-03-10T00:00:00Z"))
    rt.settings.notify.statements = statements
    with rt.engine.connect() as conn:
        assert conn.execute(select(payouts.c.id, payouts.c.status).order_by(payouts.c.id)).all() == [
            (1, "paid"), (2, "paid"), (3, "paid"), (4, "paid")]
    return rt


def deliveries(rt: Runtime) -> dict[int, Any]:
    with rt.engine.connect() as conn:
        return {row.payout_id: row for row in conn.execute(select(statement_deliveries))}


def statement_entries(rt: Runtime) -> list[tuple[str, str, str]]:
    with rt.engine.connect() as conn:
        return [(row.action, row.subject_id, row.outcome) for row in conn.execute(
            select(audit_log).where(audit_log.c.action.startswith("statement.")).order_by(audit_log.c.seq))]


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


# ---------------------------------------------------------------------------------------------------- content


def test_caps_clawback_withholding_and_fx_lines_add_up_to_the_payout(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path)
    with rt.engine.connect() as conn:
        s = content.build(conn, 2)
        amount = conn.execute(select(payouts.c.amount_minor).where(payouts.c.id == 2)).scalar_one()
    assert (s.payout_id, s.status, s.currency, s.payee_id, s.total) == (2, "paid", "EUR", "us", "127.72")
    assert [(x.reward_id, x.kind, x.gross, x.gross_currency, x.amount) for x in s.lines] == [
        (3, "clawback", "-1000.00", "USD", "-912.30"),
        (4, "reward", "900.00", "USD", "821.07"),
        (5, "reward", "600.00", "USD", "547.38"),  # capped: 900.00 earned, 300.00 cut
        (6, "withholding", "-216.00", "USD", "-197.06"),
        (7, "withholding", "-144.00", "USD", "-131.37"),
    ]
    assert s.total_minor == amount == sum(x.amount_minor for x in s.lines) == 12772
    assert (s.rewards, s.clawbacks, s.withholding) == ("1368.45", "-912.30", "-328.43")
    assert s.rewards_minor + s.clawbacks_minor + s.withholding_minor == s.total_minor
    claw, _plain, capped, held, _held2 = s.lines
    assert (capped.earned, [(c.name, c.limit, c.used, c.cut) for c in capped.caps]) == (
        "900.00", [("per payee us all", "1500.00", "900.00", "300.00")])
    # The clawback nets against the reward it takes back, not against the tax withheld from it (not given back).
    assert [(n.reward_id, n.amount) for n in claw.nets_against] == [(1, "1000.00")]
    assert (claw.granted, claw.source, claw.object_type, claw.object_id, claw.event_key) == (
        "1000.00", "s", "Opportunity", "a", "s:Opportunity:a:refunded")
    assert (held.withholds, held.withholding_rate, held.withheld_from) == (4, "24%", "900.00")
    assert claw.fx is not None and (claw.fx.from_amount, claw.fx.from_currency, claw.fx.rate, claw.fx.rate_date,
                                    claw.fx.source) == ("-1000.00", "USD", "0.9123", "2026-03-01", "test rates")
    assert s.sent_at is not None and s.paid_at is not None and s.paid_at > s.sent_at
    assert s.provider_ref is not None and s.provider_ref.startswith("fake-")
    assert s.payee_name == '<script>alert("x")</script> Acme & \\u202eSons "Ltd"'
    assert not hasattr(s, "payee_email")  # the address is read for delivery only, never part of the statement
    verified(rt)


@pytest.mark.slow  # a payout paid through the pipeline, then altered and rendered
def test_a_payout_that_does_not_add_up_gets_no_statement(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    with rt.engine.begin() as conn:  # an insider adds a cent to payout 1, and changes an FX rate of payout 2
        conn.execute(update(payouts).where(payouts.c.id == 1).values(amount_minor=payouts.c.amount_minor + 1))
        conn.execute(update(payout_items).where(payout_items.c.payout_id == 2, payout_items.c.reward_id == 4)
                     .values(fx=func.replace(payout_items.c.fx, "0.9123", "0.9500")))
    with rt.engine.connect() as conn:
        with pytest.raises(content.StatementMismatch, match="lines add up to 693.35 EUR, not the payout's 693.36"):
            content.build(conn, 1)
        with pytest.raises(content.StatementMismatch, match=r"900.00 USD at 0.9500 is 855.00 EUR, not the "
                                                            r"line's 821.07"):
            content.build(conn, 2)
        with pytest.raises(content.StatementNotFound):
            content.build(conn, 99)
    with ManualClock(AFTER):
        results = {r.payout_id: r for r in stage.deliver_batch(rt)}
    assert results[1].status == "failed" and "does not add up" in (results[1].reason or "")
    assert results[2].status == "failed" and not results[2].server
    assert (results[3].status, results[4].status) == ("delivered", "delivered")  # the others go on
    out = tmp_path / "statements"
    assert sorted(p.name for p in out.iterdir()) == ["statement-3.html", "statement-3.pdf", "statement-4.html",
                                                     "statement-4.pdf"]
    assert ("statement.failed", "1", "failed") in statement_entries(rt)


# ----------------------------------------------------------------------------------------------------- outbox


@pytest.mark.parametrize("group_readable", [False, True])
def test_outbox_statements_written_once_with_private_modes_and_audited(make_runtime: Any, tmp_path: Path,
                                                                       group_readable: bool) -> None:
    files = "[files]\ngroup_readable = true\n" if group_readable else ""
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\noutbox_dir = "out/statements"\n'
                    + files)
    worker = Worker(rt)
    worker.start()
    try:
        with ManualClock(AFTER):
            summary = worker.run_once()
            assert summary.counts["statements"] == 4
            out = tmp_path / "out" / "statements"
            mode = 0o640 if group_readable else 0o600
            names = sorted(os.listdir(out))
            assert names == [f"statement-{n}.{ext}" for n in (1, 2, 3, 4) for ext in ("html", "pdf")]
            for name in names:
                assert stat.S_IMODE((out / name).stat().st_mode) == mode, name
            rows = deliveries(rt)
            for n in (1, 2, 3, 4):
                pdf = (out / f"statement-{n}.pdf").read_bytes()
                assert (rows[n].channel, rows[n].status, rows[n].attempts, rows[n].reason) == (
                    "outbox", "delivered", 1, None)
                assert rows[n].sha256 == hashlib.sha256(pdf).hexdigest()
                assert rows[n].destination == str(out / f"statement-{n}.pdf")
            assert "127.72" in pdf_text((out / "statement-2.pdf").read_bytes())
            html = (out / "statement-2.html").read_text()
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Acme &amp; \\u202eSons &#34;Ltd&#34;" in html
            assert "<script" not in html
            stamp = (out / "statement-1.pdf").stat().st_mtime_ns
            again = Worker(rt)
            assert again.run_once().counts["statements"] == 0  # delivered once: nothing more
            assert (out / "statement-1.pdf").stat().st_mtime_ns == stamp
    finally:
        worker.stop()
    entries = statement_entries(rt)
    assert entries == [(action, str(n), "ok") for n in (1, 2, 3, 4)
                       for action in ("statement.sending", "statement.delivered")]
    verified(rt)


def test_two_workers_deliver_each_statement_once(make_runtime: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    other = Runtime(load_settings(tmp_path / "payhub.toml"))
    written: list[int] = []
    write = delivery.write_outbox

    def slow_write(doc: delivery.Rendered, directory: Path) -> Path:
        written.append(doc.statement.payout_id)
        time.sleep(0.2)  # both workers are inside a delivery at once
        return write(doc, directory)

    monkeypatch.setattr(delivery, "write_outbox", slow_write)
    done: dict[str, list[int]] = {}

    def work(name: str, runtime: Runtime) -> None:
        found: list[int] = []
        while batch := stage.deliver_batch(runtime, limit=2):
            found += [r.payout_id for r in batch]
        done[name] = found

    try:
        with ManualClock(AFTER):
            threads = [threading.Thread(target=work, args=(name, r)) for name, r in (("a", rt), ("b", other))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    finally:
        other.close()
    assert sorted(written) == [1, 2, 3, 4]  # each statement written once, by one of the two
    assert sorted(done["a"] + done["b"]) == [1, 2, 3, 4]
    assert {n: (row.status, row.attempts) for n, row in deliveries(rt).items()} == dict.fromkeys(
        (1, 2, 3, 4), ("delivered", 1))
    verified(rt)


def test_erased_payee_gets_no_statement(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    erasure.erase(rt, "de", "request 42", compact=False)
    with ManualClock(AFTER):
        results = {r.payout_id: (r.status, r.reason) for r in stage.deliver_batch(rt)}
    status, reason = results.pop(3)
    assert status == "skipped" and reason is not None and reason.startswith("the payee was erased at ")
    assert set(results.values()) == {("delivered", None)}
    assert not (tmp_path / "statements" / "statement-3.pdf").exists()
    assert deliveries(rt)[3].status == "skipped"
    assert ("statement.skipped", "3", "skipped") in statement_entries(rt)
    with ManualClock(AFTER):
        assert stage.deliver_batch(rt) == []  # skipped is final for the daemon


def test_statements_off_delivers_nothing(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path)
    assert "statements" not in Worker(rt).summary.counts  # run --once's table is unchanged
    assert stage.deliver_batch(rt) == []
    assert deliveries(rt) == {}


# -------------------------------------------------------------------------------------------------------- CLI


def test_cli_show_writes_html_and_pdf(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    site = CliSite(tmp_path)
    html = site.ok("statements", "show", "2").stdout
    assert "Payout statement" in html and "127.72 EUR" in html and "&lt;script&gt;" in html
    with rt.engine.connect() as conn:
        assert html == render.html(content.build(conn, 2))
    result = site.ok("statements", "show", "2", "--format", "pdf", "--output", str(tmp_path / "s2.pdf"))
    pdf = (tmp_path / "s2.pdf").read_bytes()
    assert hashlib.sha256(pdf).hexdigest() in result.stdout
    assert stat.S_IMODE((tmp_path / "s2.pdf").stat().st_mode) == 0o600
    text = pdf_text(pdf)
    assert "127.72" in text and "-912.30" in text and "0.9123" in text
    assert site.cli("statements", "show", "99").exit_code == 1
    assert site.cli("statements", "show", "0").exit_code == 2


def test_cli_send_delivers_and_retries_failed(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    site = CliSite(tmp_path)
    result = site.cli("statements", "send", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "delivered" in result.stdout and "│ 4 " in result.stdout
    assert {n: row.status for n, row in deliveries(rt).items()} == dict.fromkeys((1, 2, 3, 4), "delivered")
    again = site.cli("statements", "send", "--payout", "2")
    assert again.exit_code == 1 and "was delivered at" in again.stderr
    assert site.cli("statements", "send", "--payout", "2", "--retry-failed").exit_code == 2
    sql(rt.settings.database_url, "UPDATE statement_deliveries SET status = 'failed', attempts = 5, "
        "reason = 'server down' WHERE payout_id = 2")
    retried = site.cli("statements", "send", "--retry-failed", "--no-progress")
    assert retried.exit_code == 0, retried.output
    assert (deliveries(rt)[2].status, deliveries(rt)[2].attempts) == ("delivered", 6)


def test_cli_send_refuses_when_statements_are_off(make_runtime: Any, tmp_path: Path) -> None:
    paid_world(make_runtime, tmp_path)
    result = CliSite(tmp_path).cli("statements", "send")
    assert result.exit_code == 1 and "[notify] statements is off" in result.stderr


@pytest.mark.slow  # four payouts paid through the pipeline, then PDFs rendered
def test_since_leaves_payouts_paid_before_it_without_a_statement(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\noutbox_dir = "st"\nsince = 2026-03-10\n')
    worker = Worker(rt)
    worker.start()
    try:
        with ManualClock(AFTER):
            assert worker.run_once().counts["statements"] == 2
    finally:
        worker.stop()
    assert sorted(deliveries(rt)) == [3, 4]  # payouts 1 and 2 were paid in February and on 2 March
    assert sorted(os.listdir(tmp_path / "st")) == [f"statement-{n}.{ext}" for n in (3, 4) for ext in ("html", "pdf")]


def test_a_slow_render_never_lets_a_statement_be_delivered_twice(make_runtime: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering outlasts a claim's lease: a second worker delivers meanwhile, the first then delivers nothing."""
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    other = Runtime(load_settings(tmp_path / "payhub.toml"))
    monkeypatch.setattr(stage, "lease", lambda settings: timedelta(seconds=1))
    monkeypatch.setattr(stage, "retry_delay", lambda settings, attempts: timedelta(seconds=1))
    written: list[int] = []
    write, rendered = delivery.write_outbox, delivery.rendered
    slow = threading.Event()

    def counted_write(doc: delivery.Rendered, directory: Path) -> Path:
        written.append(doc.statement.payout_id)
        return write(doc, directory)

    def slow_render(statement: content.Statement) -> delivery.Rendered:
        if threading.current_thread().name == "slow":
            slow.set()
            time.sleep(3)  # far past the lease
        return rendered(statement)

    monkeypatch.setattr(delivery, "write_outbox", counted_write)
    monkeypatch.setattr(delivery, "rendered", slow_render)
    results: list[stage.Result | None] = []
    try:
        thread = threading.Thread(target=lambda: results.append(stage.deliver(rt, 1)), name="slow")
        thread.start()
        assert slow.wait(30)
        time.sleep(1.5)  # any claim the slow worker holds has passed its lease
        second = stage.deliver(other, 1)
        thread.join(60)
    finally:
        other.close()
    assert written == [1]  # once, by the second worker
    assert second is not None and (second.status, second.attempt) == ("delivered", 1)
    assert results == [None]  # the slow worker found it delivered: it claimed and sent nothing
    row = deliveries(rt)[1]
    assert (row.status, row.attempts) == ("delivered", 1)
    assert statement_entries(rt) == [("statement.sending", "1", "ok"), ("statement.delivered", "1", "ok")]
    verified(rt)


def test_a_claim_taken_over_before_sending_is_not_sent(make_runtime: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    written: list[int] = []
    monkeypatch.setattr(delivery, "write_outbox", lambda doc, directory: written.append(1) or directory)
    renew = stage._renew

    def taken_over(runtime: Runtime, payout_id: int, attempt: int) -> bool:
        with runtime.engine.begin() as conn:  # another worker claimed attempt 2 meanwhile
            conn.execute(update(statement_deliveries).where(statement_deliveries.c.payout_id == payout_id)
                         .values(attempts=attempt + 1))
        return renew(runtime, payout_id, attempt)

    monkeypatch.setattr(stage, "_renew", taken_over)
    assert stage.deliver(rt, 1) is None
    assert written == []
    assert (deliveries(rt)[1].attempts, deliveries(rt)[1].reason[:11]) == (2, "in progress")


def test_the_daemon_pass_takes_no_new_statement_after_its_time_budget(make_runtime: Any, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    monkeypatch.setattr(stage, "PASS_SECONDS", 0.3)
    rendered = delivery.rendered
    timings: list[float] = []

    def slow_render(statement: content.Statement) -> delivery.Rendered:
        started = time.monotonic()
        time.sleep(0.5)  # one statement outlasts the budget
        done = rendered(statement)
        timings.append(time.monotonic() - started - 0.5)
        return done

    monkeypatch.setattr(delivery, "rendered", slow_render)
    worker = Worker(rt)
    worker.start()
    try:
        with ManualClock(AFTER):
            assert worker._pass(force=True)  # busy: the budget passed after the first statement
            assert sorted(deliveries(rt)) == [1]
            assert worker._pass(force=False)  # the next pass goes on
            assert sorted(deliveries(rt)) == [1, 2]
            assert worker.summary.counts["statements"] == 2
    finally:
        worker.stop()
    print(f"render seconds per statement: {timings}")


def test_a_last_attempt_abandoned_is_closed_as_a_failed_attempt(make_runtime: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\nmax_attempts = 1\n')
    finish = stage._finish

    def crash(tx: Any, payout_id: int, attempt: int, status: str, **kwargs: Any) -> bool:
        if status == "delivered":
            raise KeyboardInterrupt("killed after the files were written")
        return finish(tx, payout_id, attempt, status, **kwargs)  # type: ignore[arg-type]

    with ManualClock(AFTER) as clock:
        monkeypatch.setattr(stage, "_finish", crash)
        with pytest.raises(KeyboardInterrupt):
            stage.deliver(rt, 1)
        monkeypatch.setattr(stage, "_finish", finish)
        assert deliveries(rt)[1].reason.startswith("in progress: attempt 1")
        assert stage.deliver(rt, 1) is None  # its claim holds until the lease passes
        clock.advance(stage.lease(rt.settings) + timedelta(seconds=1))
        results = {r.payout_id: r for r in stage.deliver_batch(rt)}
        assert (results[1].status, results[1].attempt) == ("failed", 1)
        row = deliveries(rt)[1]
        assert (row.status, row.attempts) == ("failed", 1) and row.reason.startswith("abandoned: attempt 1")
        assert stage.deliver_batch(rt) == []  # the last attempt: nothing more until sent by hand
    with rt.engine.connect() as conn:
        failed = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "statement.failed",
                                                               audit_log.c.subject_id == "1")).scalars().all()
    assert len(failed) == 1 and '"last":true' in failed[0].replace(" ", "") and "abandoned" in failed[0]
    assert [a for a, subject, _ in statement_entries(rt) if subject == "1"] == [
        "statement.sending", "statement.failed"]
    with ManualClock(AFTER) as clock:
        clock.advance(timedelta(days=1))
        assert stage.deliver_one(rt, 1).status == "delivered"
    verified(rt)
