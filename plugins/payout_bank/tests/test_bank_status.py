"""Bank status reports: pain.002 (transaction, payment and group status with reasons) and NACHA return files
(addenda 99) become lookup outcomes; report files move to processed/, unreadable ones to failed/."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from payhub.api import Outcome, utcnow

import payhub_bank.rail as rail_module


def sepa_file(rail, payout, outbox: Path, count: int = 3) -> tuple[str, list[str]]:
    instructions = [payout(n, "EUR", f"{n}.00") for n in range(1, count + 1)]
    rail.send(instructions)
    manifest = json.loads(next(outbox.glob("*.xml.manifest.json")).read_text())
    return manifest["message_id"], [i.idempotency_key for i in instructions]


def ach_traces(outbox: Path) -> dict[str, str]:
    return {e["key"]: e["trace_number"] for p in outbox.glob("*.ach.manifest.json")
            for e in json.loads(p.read_text())["entries"]}


def test_pain002_transaction_statuses(rail, make_rail, payout, outbox: Path, inbox: Path, make_pain002) -> None:
    msg_id, (paid, rejected, pending) = sepa_file(rail, payout, outbox)
    (inbox / "pain002-0001.xml").write_text(make_pain002(msg_id, group="PART", transactions=[
        (paid, "ACSC", None), (rejected, "RJCT", "AC01"), (pending, "ACCP", None)]))
    found = rail.lookup([paid, rejected, pending])
    assert found[paid].outcome == Outcome.PAID
    assert found[rejected].outcome == Outcome.REJECTED
    assert found[rejected].reason == ("RJCT AC01 incorrect account number: Account unknown at creditor bank "
                                      "(bank status report pain002-0001.xml)")
    assert found[pending].outcome == Outcome.ACCEPTED and found[pending].reason is None
    assert found[paid].provider_ref.startswith(msg_id + ".xml:")
    assert not list(inbox.glob("*.xml")) and (inbox / "processed" / "pain002-0001.xml").exists()

    # A later report never turns a final status back; a restarted process reads processed/ again.
    (inbox / "pain002-0002.xml").write_text(make_pain002(msg_id, transactions=[(paid, "ACSP", None)]))
    restarted = make_rail()
    assert {k: r.outcome for k, r in restarted.lookup([paid, rejected, pending]).items()} == {
        paid: Outcome.PAID, rejected: Outcome.REJECTED, pending: Outcome.ACCEPTED}
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["pain002-0001.xml", "pain002-0002.xml"]


def test_pain002_group_and_payment_statuses(rail, payout, outbox: Path, inbox: Path, make_pain002) -> None:
    msg_id, keys = sepa_file(rail, payout, outbox)
    (inbox / "accepted.xml").write_text(make_pain002(msg_id, group="ACCP"))
    assert {r.outcome for r in rail.lookup(keys).values()} == {Outcome.ACCEPTED}
    (inbox / "settled.xml").write_text(make_pain002(msg_id, payment=(msg_id, "ACSC"),
                                                    transactions=[(keys[0], "RJCT", "AC04")]))
    found = rail.lookup(keys)
    assert found[keys[0]].outcome == Outcome.REJECTED and "AC04 closed account number" in found[keys[0]].reason
    assert {found[k].outcome for k in keys[1:]} == {Outcome.PAID}


def test_pain002_whole_file_rejected(rail, payout, outbox: Path, inbox: Path, make_pain002) -> None:
    msg_id, keys = sepa_file(rail, payout, outbox)
    (inbox / "rejected.xml").write_text(make_pain002(msg_id, group="RJCT", group_reason="FF01"))
    found = rail.lookup(keys)
    assert {r.outcome for r in found.values()} == {Outcome.REJECTED}
    assert found[keys[0]].reason == "RJCT FF01 invalid file format: file refused (bank status report rejected.xml)"


def test_pain002_about_other_messages_changes_nothing(rail, payout, outbox: Path, inbox: Path, make_pain002) -> None:
    _, keys = sepa_file(rail, payout, outbox)
    (inbox / "other.xml").write_text(make_pain002("SOMEONE-ELSES-MSG", group="RJCT", group_reason="FF01",
                                                  transactions=[("not-ours", "RJCT", "AC01")]))
    assert {r.outcome for r in rail.lookup(keys).values()} == {Outcome.ACCEPTED}
    assert (inbox / "processed" / "other.xml").exists()


def test_nacha_returns(rail, make_rail, payout, outbox: Path, inbox: Path, make_return) -> None:
    instructions = [payout(n, "USD", f"{n}.25") for n in range(1, 4)]
    rail.send(instructions)
    traces = ach_traces(outbox)
    first, second, third = (i.idempotency_key for i in instructions)
    (inbox / "RETURNS-20261005.ach").write_text(make_return([
        (traces[first], "R03", 125, first[3:18].upper()),
        (traces[second], "R99", 225, second[3:18].upper()),  # a code payhub has no text for
    ]))
    found = rail.lookup([first, second, third])
    assert found[first].outcome == Outcome.RETURNED
    assert found[first].reason == ("R03 no account / unable to locate account: RETURNED BY RDFI "
                                   "(ACH return file RETURNS-20261005.ach)")
    assert found[second].outcome == Outcome.RETURNED and found[second].reason.startswith("R99 return reason not known")
    assert found[third].outcome == Outcome.ACCEPTED
    assert (inbox / "processed" / "RETURNS-20261005.ach").exists()
    assert make_rail().lookup([first])[first] == found[first]


def test_entries_without_a_return_become_paid_when_configured(make_rail, payout, outbox: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rail = make_rail(ach={"paid_after_business_days": 3})
    key = payout(1, "USD", "5.00").idempotency_key
    rail.send([payout(1, "USD", "5.00")])
    assert rail.lookup([key])[key].outcome == Outcome.ACCEPTED
    later = utcnow() + timedelta(days=10)
    monkeypatch.setattr(rail_module, "utcnow", lambda: later)
    result = rail.lookup([key])[key]
    assert result.outcome == Outcome.PAID and "no return within 3 business days" in result.reason


def test_unreadable_reports_are_set_aside(rail, payout, outbox: Path, inbox: Path, make_pain002,
                                          caplog: pytest.LogCaptureFixture) -> None:
    msg_id, keys = sepa_file(rail, payout, outbox, count=1)
    (inbox / "broken.xml").write_text("<Document><CstmrPmtStsRpt>")
    (inbox / "statement.xml").write_text("<Document><BkToCstmrStmt/></Document>")
    (inbox / "notes.txt").write_text("hello\n")
    (inbox / ".partial-upload").write_text("ignored: dot files are being written")
    (inbox / "good.xml").write_text(make_pain002(msg_id, transactions=[(keys[0], "ACSC", None)]))
    with caplog.at_level(logging.ERROR):
        assert rail.lookup(keys)[keys[0]].outcome == Outcome.PAID
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == [
        "broken.xml", "broken.xml.error.txt", "notes.txt", "notes.txt.error.txt", "statement.xml",
        "statement.xml.error.txt"]
    assert "not well-formed XML" in (inbox / "failed" / "broken.xml.error.txt").read_text()
    assert "not a pain.002" in (inbox / "failed" / "statement.xml.error.txt").read_text()
    assert "broken.xml" in caplog.text
    assert (inbox / ".partial-upload").exists()


def test_reports_still_being_written_wait(make_rail, payout, outbox: Path, inbox: Path, make_pain002) -> None:
    rail = make_rail(inbox_settle_seconds=60)
    msg_id, keys = sepa_file(rail, payout, outbox, count=1)
    (inbox / "fresh.xml").write_text(make_pain002(msg_id, transactions=[(keys[0], "ACSC", None)]))
    assert rail.lookup(keys)[keys[0]].outcome == Outcome.ACCEPTED
    assert (inbox / "fresh.xml").exists()


def test_a_missing_inbox_does_not_stop_lookups(make_rail, payout, inbox: Path, outbox: Path) -> None:
    inbox.rmdir()
    rail = make_rail()
    _, keys = sepa_file(rail, payout, outbox, count=1)
    assert rail.lookup(keys)[keys[0]].outcome == Outcome.ACCEPTED


def test_without_an_inbox_the_rail_does_not_report_status(make_rail) -> None:
    assert make_rail().capabilities.reports_status
    assert not make_rail(inbox=None).capabilities.reports_status
